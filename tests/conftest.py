"""Shared pytest setup: every test runs with Keras 2 (TFRS refuses Keras 3); the expensive fixtures several
modules use are defined here once, so that a session builds each only once (a fixture imported into another
module is a second definition there, built again)."""

import os

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A tiny model exported by run_fn (tests/test_export.py)."""
    from tests.test_export import build_trained

    return build_trained(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A tiny BERT folder over MiniLM's vocabulary (tests/test_pipeline_e2e.py)."""
    from tests.test_pipeline_e2e import build_tiny_bert

    return build_tiny_bert(tmp_path_factory)


@pytest.fixture(scope="session")
def first_run(tmp_path_factory, tiny_bert):
    """The end-to-end pipeline run on small synthetic data (tests/test_pipeline_e2e.py)."""
    from tests.test_pipeline_e2e import build_first_run

    return build_first_run(tmp_path_factory, tiny_bert)
