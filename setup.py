"""tailtower: a long-tail-aware TFX recommender with a BERT item tower.

The pinned stack below is the one `scripts/env` installs (tfx 1.21 is the only tfx for Python >= 3.11).
"""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "tfx==1.21.0",
    "tensorflow==2.21.*",
    "tf-keras==2.21.*",
    "tensorflow-text==2.21.*",
    "tensorboard==2.21.*",  # the Trainer's summaries (tf.summary needs it; TF no longer pulls it in)
    "tensorflow-recommenders==0.7.7",
    # transformers 5 dropped the TensorFlow models.
    "transformers>=4.57,<5",
    "safetensors",
    "kfp==2.16.*",
    "pyarrow",
    "matplotlib",
    "tabulate>=0.9,<1",
    # serving/: a TF-Serving-compatible local server and its clients.
    "tensorflow-serving-api>=2.19,<2.22",
    "grpcio>=1.60,<2",
    "aiohttp>=3.9,<4",
    "prometheus-client>=0.20,<1",
    "orjson>=3.9,<4",
    # serving/history_store.py: the Redis history backend (redis-server itself comes from scripts/env).
    "redis>=5.0,<9",
    "requests>=2.31,<3",
    "urllib3>=1.26,<3",
    "pyyaml>=6,<7",  # serving/rules.py: the rules file
    "psutil>=5.9,<8",  # evaluation/scale_bench.py: the pipeline's process-tree RSS
]

EXTRAS_REQUIRE = {
    # selenium: tests/test_explorer.py and `make screenshots` drive Debian's chromium (from scripts/env).
    "test": ["pytest", "ruff", "selenium>=4.20,<5"],
    # ann: serving/ann_bench.py (`make bench-ann`): faiss's ANN indexes; threadpoolctl: one BLAS thread.
    "ann": ["faiss-cpu>=1.8,<2", "threadpoolctl>=3,<4"],
}

setup(
    name="tailtower",
    version="0.1.0",
    description="Long-tail-aware TFX recommender with a BERT item tower (TFRS retrieval + ranking).",
    python_requires=">=3.10,<3.14",
    packages=find_packages(include=["pipeline*", "components*", "trainer*", "serving*", "evaluation*"]),
    package_data={"serving.explorer": ["*.html", "*.js", "*.css"]},  # the web explorer's static page
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    license="Apache-2.0",
)
