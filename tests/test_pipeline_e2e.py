"""The whole pipeline on small synthetic data, a tiny BERT and two epochs (slow: a few minutes).

Checks that every component ran (ML Metadata), that a blessed model is pushed and works from a copy in
another folder after the original is deleted, and that an unreachable threshold pushes nothing.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import ml_metadata as mlmd
import pytest
from tfx import v1 as tfx

from pipeline import configs, local_runner, run_results, synthetic_data
from tests.test_pipeline import COMPONENT_IDS
from trainer import bert

pytestmark = pytest.mark.slow

TRAINER_CONFIG = {"epochs": 2, "batch_size": 128, "embedding_dim": 16}
# A tiny random BERT and two epochs learn little: gate only on the mechanics here.
LENIENT_GATE = configs.EvalGateConfig(min_auc=0.0, min_tail_coverage=0.0)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    vocab = bert.fetch_minilm(bert.default_cache_dir()) / "vocab.txt"
    return str(bert.write_tiny_bert(tmp_path_factory.mktemp("bert"), vocab))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_bert):
    root = tmp_path_factory.mktemp("e2e")
    data_dir = root / "data"
    synthetic_data.generate(str(data_dir), num_users=80, num_items=120, seed=1)
    config = configs.PipelineConfig(
        data_dir=str(data_dir),
        output_dir=str(root / "run"),
        bert=tiny_bert,
        trainer=TRAINER_CONFIG,
        eval_gate=LENIENT_GATE,
        enable_cache=True,
    )
    local_runner.run(config)
    return config


def _executions(config: configs.PipelineConfig) -> dict[str, list[int]]:
    """Component id → the states of its executions, oldest first (from the run's ML Metadata)."""
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(
        configs.run_paths(config.output_dir)["metadata_path"]
    )
    store = mlmd.MetadataStore(connection)
    states = {}
    for context in store.get_contexts_by_type("node"):
        executions = sorted(store.get_executions_by_context(context.id), key=lambda e: e.id)
        states[context.name.split(".", 1)[-1]] = [e.last_known_state for e in executions]
    return states


def test_every_component_ran(first_run):
    states = _executions(first_run)
    for component in COMPONENT_IDS - {"latest_blessed_model_resolver"}:
        assert states.get(component) == [mlmd.proto.Execution.COMPLETE], component


def test_blessed_model_is_pushed_and_relocatable(first_run, tmp_path):
    results = run_results.RunResults(first_run.output_dir)
    assert results.blessed()
    pushed = results.pushed_model_dir()
    assert os.path.dirname(pushed) == configs.run_paths(first_run.output_dir)["serving_model_dir"]
    assert os.path.basename(pushed).isdigit()

    # Copy the pushed model away, delete the original, and ask the copy from a fresh process.
    copy = tmp_path / "copied-model"
    shutil.copytree(pushed, copy)
    moved = pushed + ".moved"
    os.rename(pushed, moved)
    try:
        user = results.eval_positives(1)[0]
        script = textwrap.dedent(
            f"""
            import json, tensorflow as tf, tensorflow_text  # noqa: F401  (what TF Serving links)
            recommend = tf.saved_model.load({str(copy)!r}).signatures["recommend"]
            out = recommend(user_id=tf.constant([{user["user_id"]!r}]),
                            history=tf.constant([{user["history"] or [""]!r}]), k=tf.constant(5),
                            mmr_lambda=tf.constant(0.2), xquad_lambda=tf.constant(0.3))
            print(json.dumps([v.decode() for v in out["item_ids"].numpy()[0]]))
            """
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        items = json.loads(done.stdout.strip().splitlines()[-1])
        assert len(items) == 5 and len(set(items)) == 5
        assert not set(items) & set(user["history"])
    finally:
        os.rename(moved, pushed)


def test_evaluation_has_retrieval_metrics_by_head_and_tail(first_run):
    rows = dict(run_results.RunResults(first_run.output_dir).evaluation())
    assert set(rows) >= {"overall", "item_is_tail=0", "item_is_tail=1"}
    overall = rows["overall"]
    for metric in ("auc", "recall@10", "aplt@10", "tail_coverage@10"):
        assert 0.0 <= overall[metric] <= 1.0, metric


def test_unreachable_threshold_pushes_nothing(first_run):
    serving_dir = configs.run_paths(first_run.output_dir)["serving_model_dir"]
    versions_before = sorted(os.listdir(serving_dir))
    strict = configs.PipelineConfig(
        **{**first_run.__dict__, "eval_gate": configs.EvalGateConfig(min_auc=1.01)}
    )
    local_runner.run(strict)
    results = run_results.RunResults(first_run.output_dir)
    assert not results.blessed()
    assert sorted(os.listdir(serving_dir)) == versions_before
