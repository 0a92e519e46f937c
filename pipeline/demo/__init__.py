"""The demo: `make demo` (`python -m pipeline.demo`, see __main__.py) runs the pipeline locally on a dataset
folder, or on the deterministic synthetic shop of `synthetic_data.py` (also used by tests and benchmarks)."""
