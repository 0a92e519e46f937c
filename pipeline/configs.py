"""Pipeline constants: names, module paths and the defaults every runner starts from.

As in the TFX template, model code is referenced by dotted path, so the pipeline never imports TensorFlow
model code; runners turn these constants into component arguments.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from components.example_gen import ExampleGenConfig

PIPELINE_NAME = "tailtower"
MODEL_NAME = "tailtower"

# User code, referenced by dotted path (resolved on the workers, where the package is installed).
PREPROCESSING_FN = "trainer.preprocessing.preprocessing_fn"
RUN_FN = "trainer.train.run_fn"
METRICS_MODULE = "trainer.metrics"

# The curated raw schema of the interaction examples.
SCHEMA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema", "schema.pbtxt")

# The default BERT tower: MiniLM-L6-H384-uncased, fetched from PyPI into the cache (see trainer/bert.py).
DEFAULT_BERT = "all-minilm-l6-v2"

# Layout of a run folder (`make demo` writes ./demo-run/).
PIPELINE_ROOT_DIRNAME = "pipeline-root"
METADATA_FILENAME = "metadata.sqlite"
SERVING_DIRNAME = "serving"


def run_paths(output_dir: str) -> dict[str, str]:
    """Pipeline root, SQLite ML Metadata and the serving model base path inside one run folder."""
    return {
        "pipeline_root": os.path.join(output_dir, PIPELINE_ROOT_DIRNAME),
        "metadata_path": os.path.join(output_dir, METADATA_FILENAME),
        "serving_model_dir": os.path.join(output_dir, SERVING_DIRNAME, MODEL_NAME),
    }


@dataclass
class EvalGateConfig:
    """What the Evaluator requires before the Pusher may push (TFMA thresholds)."""

    top_k: int = 10
    min_auc: float = 0.6
    min_tail_coverage: float = 0.05
    # No regression beyond this against the latest blessed model (absolute change in AUC / Recall@K).
    regression_tolerance: float = 0.02


@dataclass
class PipelineConfig:
    """Everything `pipeline.pipeline.create_pipeline` needs; runners fill it from flags."""

    data_dir: str
    output_dir: str
    bert: str = DEFAULT_BERT
    example_gen: ExampleGenConfig = field(default_factory=ExampleGenConfig)
    eval_gate: EvalGateConfig = field(default_factory=EvalGateConfig)
    # Keyword arguments of trainer.config.TrainerConfig (epochs, logq_beta, ...); empty = its defaults.
    trainer: dict = field(default_factory=dict)
    beam_pipeline_args: list[str] = field(default_factory=lambda: ["--direct_num_workers=1"])
    # Off by default: ExampleGen reads files whose changes TFX's cache cannot see.
    enable_cache: bool = False
    # The splits the model learns from: Transform analyzes them (vocabularies, popularity), the Trainer fits
    # on them. The offline harness adds "eval", whose items the harness's own test split already excludes.
    train_splits: list[str] = field(default_factory=lambda: ["train"])
