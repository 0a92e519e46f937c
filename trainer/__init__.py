"""Model code of the pipeline: features, preprocessing_fn, the TFRS model, run_fn and the serving signatures.

TensorFlow Recommenders needs Keras 2: `scripts/env`, the Dockerfile and tests/conftest.py set
TF_USE_LEGACY_KERAS=1 for every entry point; this default covers code that imports the package from
elsewhere (tf.keras reads the variable on first use, so it only has to come before that).
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
