"""The whole pipeline on small synthetic data, a tiny BERT and ten epochs (slow: a few minutes).

Checks that every component ran (ML Metadata), that a blessed model is pushed and works from a copy in
another folder after the original is deleted, that the Evaluator's metrics are what the pushed model scores
on the eval split and beat an untrained (random) ranker's, and that a second run with an unreachable
threshold reuses every cached execution up to the Trainer and pushes nothing.
"""

import dataclasses
import glob
import json
import os
import shutil
import subprocess
import sys
import textwrap

import ml_metadata as mlmd
import numpy as np
import pytest
import tensorflow as tf
from tfx import v1 as tfx

from pipeline import configs, local_runner
from pipeline.demo import synthetic_data
from pipeline.runs import results as run_results
from tests.test_pipeline import COMPONENT_IDS
from tests.tiny_bert import write_tiny_bert
from trainer import bert, features
from trainer.config import TrainerConfig

pytestmark = pytest.mark.slow

# Ten epochs: two learned too little to tell the model from a random ranker (Recall@10 0.125 against the
# random ranker's 0.098, AUC 0.49).
TRAINER_CONFIG = {"epochs": 10, "batch_size": 128, "embedding_dim": 16}
# The gate checks the mechanics only; the metrics are checked against the pushed model's own outputs and
# against a random ranker below.
LENIENT_GATE = configs.EvalGateConfig(min_auc=0.0, min_tail_coverage=0.0)
# Unreachable: AUC 1.0 means every positive scored above every negative (this model: about 0.66).
STRICT_GATE = configs.EvalGateConfig(min_auc=1.0)
# Everything upstream of the Evaluator: the second run changes only the gate, so TFX reuses these. The
# resolvers always run, and the drift gate now has the first run's statistics to compare with.
RESOLVERS = {
    "latest_blessed_model_resolver",
    "previous_statistics_resolver",
    "previous_catalog_statistics_resolver",
}
RERUN = RESOLVERS | {"DriftGate", "Evaluator", "Pusher"}
CACHED_ON_RERUN = COMPONENT_IDS - RERUN


def build_tiny_bert(tmp_path_factory) -> str:
    """tests/conftest.py's session fixture `tiny_bert`."""
    vocab = bert.fetch_minilm(bert.default_cache_dir()) / "vocab.txt"
    return str(write_tiny_bert(tmp_path_factory.mktemp("bert"), vocab))


def build_first_run(tmp_path_factory, tiny_bert: str) -> configs.PipelineConfig:
    """tests/conftest.py's session fixture `first_run` (tests/test_loop.py starts its loop from a copy)."""
    root = tmp_path_factory.mktemp("e2e")
    data_dir = root / "data"
    synthetic_data.generate(str(data_dir), num_users=80, num_items=120, seed=1)
    config = configs.PipelineConfig(
        data_dir=str(data_dir),
        output_dir=str(root / "run"),
        trainer=TrainerConfig(bert=tiny_bert, **TRAINER_CONFIG),
        eval_gate=LENIENT_GATE,
        enable_cache=True,
    )
    local_runner.run(config)
    return config


@pytest.fixture(scope="module")
def strict_run(first_run):
    """The same pipeline again with an unreachable gate (runs after the first run's tests)."""
    strict = dataclasses.replace(first_run, eval_gate=STRICT_GATE)
    local_runner.run(strict)
    return strict


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
    for component in COMPONENT_IDS - RESOLVERS:
        assert states.get(component) == [mlmd.proto.Execution.COMPLETE], component
    # A first run has no earlier statistics: TFX records those resolvers as failed (and logs why) and runs
    # on; the drift gate above completed without them.
    for resolver in ("previous_statistics_resolver", "previous_catalog_statistics_resolver"):
        assert states.get(resolver) == [mlmd.proto.Execution.FAILED], resolver


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
                            mmr_lambda=tf.constant(0.2), xquad_lambda=tf.constant(0.3),
                            keep_history=tf.constant(0), new_item_boost=tf.constant(0.0),
                            exclude_ids=tf.constant([[""]]),
                            allowed_ids=tf.constant([[""]]), categories=tf.constant([[""]]),
                            brands=tf.constant([[""]]))
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


def test_trainer_writes_tensorboard_summaries(first_run):
    """Losses and validation metrics per epoch, the learned history slot weights, the blend trials and the
    cold terms' trials."""
    root = configs.run_paths(first_run.output_dir)["pipeline_root"]
    (run_dir,) = glob.glob(os.path.join(root, "Trainer", "model_run", "*"))
    tags: dict[str, set[str]] = {}
    for path in glob.glob(os.path.join(run_dir, "**", "events.out.tfevents.*"), recursive=True):
        folder = os.path.relpath(os.path.dirname(path), run_dir)
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            tags.setdefault(folder, set()).update(value.tag for value in event.summary.value)
    assert {"epoch_loss", "epoch_retrieval_loss"} <= tags["train"]
    assert "epoch_loss" in tags["validation"]
    ages = {f"position_weight/age_{age:02d}" for age in range(features.HISTORY_LENGTH)}
    assert tags["position_weights"] == ages
    assert tags["blend"] == {"validation_trials", "cold_trials"}


def _split_examples(config: configs.PipelineConfig, output: str, split: str) -> list[bytes]:
    """Serialized tf.Examples of an ExampleGen output split, as the Evaluator reads them."""
    root = configs.run_paths(config.output_dir)["pipeline_root"]
    files = glob.glob(os.path.join(root, "InteractionsExampleGen", output, "*", f"Split-{split}", "*"))
    assert files, (output, split)
    return [record.numpy() for record in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def test_transform_tokenizes_no_example_text_and_every_catalog_text(first_run):
    # Interaction examples carry no item text: their tokens are [CLS] [SEP]; the catalog's are real text.
    root = configs.run_paths(first_run.output_dir)["pipeline_root"]
    files = glob.glob(os.path.join(root, "Transform", "transformed_examples", "*", "Split-train", "*"))
    assert files
    masks = [
        tf.train.Example.FromString(record.numpy()).features.feature[features.INPUT_MASK].int64_list.value
        for record in tf.data.TFRecordDataset(files, compression_type="GZIP")
    ]
    assert masks and all(sum(mask) == 2 for mask in masks)
    catalog = [tf.train.Example.FromString(r) for r in _split_examples(first_run, "catalog", "catalog")]
    assert all(e.features.feature[features.TEXT].bytes_list.value[0] for e in catalog)


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting 1/2 (Mann-Whitney)."""
    positive, negative = scores[labels > 0.5], scores[labels < 0.5]
    above = (positive[:, None] > negative[None, :]).sum()
    tied = (positive[:, None] == negative[None, :]).sum()
    return float((above + 0.5 * tied) / (len(positive) * len(negative)))


def test_evaluation_is_what_the_pushed_model_scores_and_beats_a_random_ranker(first_run):
    import tensorflow_text  # noqa: F401  (the WordPiece ops of the model's transform graph)

    rows = dict(run_results.RunResults(first_run.output_dir).evaluation())
    assert set(rows) >= {"overall", "item_is_tail=0", "item_is_tail=1"}
    overall = rows["overall"]
    k = first_run.eval_gate.top_k

    # The pushed model's serving_default on the eval split: what TFMA scored.
    serialized = _split_examples(first_run, "examples", "eval")
    model = tf.saved_model.load(run_results.RunResults(first_run.output_dir).pushed_model_dir())
    out = model.signatures[features.SERVING_DEFAULT_SIGNATURE](**{features.EXAMPLES: tf.constant(serialized)})
    parsed = [tf.train.Example.FromString(s).features.feature for s in serialized]
    labels = np.array([f[features.LABEL].float_list.value[0] for f in parsed])
    positives = [i for i in range(len(parsed)) if labels[i] > 0.5]
    ids, is_tail = out[features.TOP_K_IDS].numpy()[:, :k], out[features.TOP_K_IS_TAIL].numpy()[:, :k]
    hits, shares, tail_shown = [], [], set()
    for i in positives:
        listed = [j for j in range(k) if ids[i, j]]  # "" = padding
        hits.append(parsed[i][features.ITEM_ID].bytes_list.value[0] in ids[i])
        shares.append(sum(is_tail[i, j] for j in listed) / len(listed) if listed else 0.0)
        tail_shown |= {ids[i, j] for j in listed if is_tail[i, j]}
    num_tail = int(out[features.NUM_TAIL_ITEMS].numpy().reshape(-1)[0])
    assert overall["example_count"] == len(parsed)
    assert overall[f"recall@{k}"] == pytest.approx(np.mean(hits))
    assert overall[f"aplt@{k}"] == pytest.approx(np.mean(shares))
    assert overall[f"tail_coverage@{k}"] == pytest.approx(len(tail_shown) / num_tail)
    auc = _auc(labels, out[features.SCORE].numpy().reshape(-1))
    assert overall["auc"] == pytest.approx(auc, abs=0.01)  # TFMA's AUC buckets scores (10,000 thresholds)

    # An untrained model ranks at random: a positive's item is in a random K of the catalog items not in
    # its history with probability K / (that count); an untrained ranking head has AUC 1/2.
    catalog = len(_split_examples(first_run, "catalog", "catalog"))
    random_recall = np.mean(
        [min(1.0, k / (catalog - len(set(parsed[i][features.HISTORY].bytes_list.value)))) for i in positives]
    )
    print(f"e2e: recall@{k} {np.mean(hits):.4f} (random {random_recall:.4f}), AUC {auc:.4f}, {overall}")
    assert np.mean(hits) > random_recall
    assert auc > 0.5


def test_second_run_reuses_the_cache_and_an_unreachable_threshold_pushes_nothing(first_run, strict_run):
    states = _executions(strict_run)
    complete, cached = mlmd.proto.Execution.COMPLETE, mlmd.proto.Execution.CACHED
    assert {c for c, s in states.items() if s == [complete, cached]} == CACHED_ON_RERUN
    # A new gate: evaluated again, the Pusher asked again; the drift gate compared with the first run's data.
    for component in ("DriftGate", "Evaluator", "Pusher"):
        assert states[component] == [complete, complete], component

    results = run_results.RunResults(strict_run.output_dir)
    assert not results.blessed()
    serving_dir = configs.run_paths(strict_run.output_dir)["serving_model_dir"]
    assert len(os.listdir(serving_dir)) == 1  # the first run's version only


# --- catalog refresh (pipeline/refresh.py) on the first run's pushed model ------------------------------
NEW_ITEMS = 3
REMOVED_ITEMS = 2


def _copy_pushed(first_run, output: str) -> str:
    """`output`: a run folder holding only a copy of the first run's pushed model; returns its serving dir."""
    serving_dir = configs.run_paths(output)["serving_model_dir"]
    shutil.copytree(configs.run_paths(first_run.output_dir)["serving_model_dir"], serving_dir)
    return serving_dir


@pytest.fixture(scope="module")
def updated_catalog(first_run, tmp_path_factory):
    """A dataset whose catalog lost two items and gained three (new ids, each with another item's text: the
    cold-item path encodes them) → (its folder, removed ids, added ids)."""
    data = tmp_path_factory.mktemp("refresh") / "data"
    shutil.copytree(first_run.data_dir, data)
    with open(data / "items.jsonl", encoding="utf-8") as f:
        items = [json.loads(line) for line in f]
    removed = [item["item_id"] for item in items[:REMOVED_ITEMS]]
    added = [{**item, "item_id": f"new-{i}"} for i, item in enumerate(items[-NEW_ITEMS:])]
    with open(data / "items.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(item) + "\n" for item in items[REMOVED_ITEMS:] + added)
    return str(data), removed, [item["item_id"] for item in added]


def test_refresh_pushes_a_version_that_knows_new_items_forgets_removed_ones_and_is_relocatable(
    first_run, updated_catalog, tmp_path
):
    from pipeline import refresh
    from serving.local_client import LocalClient
    from trainer.refresh import base_recommend

    data, removed, added = updated_catalog
    output = str(tmp_path / "run")
    serving_dir = _copy_pushed(first_run, output)
    (before,) = os.listdir(serving_dir)
    report = refresh.run(data, output)
    print("refresh:", report)
    assert report["new_items"] == NEW_ITEMS and report["removed_items"] == REMOVED_ITEMS
    assert report["passed"] and report["pushed_version"] > int(before)
    # Relocatable: a copy answers after the run folder (and so the kit it was built from) is gone.
    moved = str(tmp_path / "moved")
    shutil.copytree(os.path.join(serving_dir, str(report["pushed_version"])), moved)
    shutil.rmtree(output)
    client = LocalClient(moved)
    embeddings = client.predict({features.ITEM_IDS: added + removed}, features.ITEM_EMBEDDINGS_SIGNATURE)
    assert embeddings[features.FOUND].tolist() == [True] * NEW_ITEMS + [False] * REMOVED_ITEMS
    new_vectors = embeddings[features.EMBEDDINGS][:NEW_ITEMS]
    assert (
        len({tuple(np.round(v, 5)) for v in new_vectors}) == NEW_ITEMS
    )  # each its own vector, not the OOV one
    only = lambda ids: base_recommend(client, ["u1"], [[]], 5, allowed_ids=[ids])[0]  # noqa: E731
    assert only(added[:1])[0] == added[0]  # a new item is recommendable
    assert set(only(removed)) == {""}  # a removed one never comes back, even when it is all that is allowed
    catalog_ids = {
        json.loads(line)[features.ITEM_ID]
        for line in open(
            os.path.join(moved, features.ASSETS_EXTRA_DIR, features.CATALOG_METADATA_FILE), encoding="utf-8"
        )
    }
    assert set(added) <= catalog_ids and not set(removed) & catalog_ids


def test_a_refresh_that_fails_validation_pushes_nothing(first_run, updated_catalog, tmp_path):
    from pipeline import refresh

    data, _, _ = updated_catalog
    copy = str(tmp_path / "run")
    _copy_pushed(first_run, copy)
    versions = sorted(os.listdir(configs.run_paths(copy)["serving_model_dir"]))
    report = refresh.run(data, copy, max_recall_drop=-1.0)  # a gain of a whole recall point is required
    assert report["pushed_version"] is None and not report["passed"]
    assert "Recall@" in report["failure"]
    assert sorted(os.listdir(configs.run_paths(copy)["serving_model_dir"])) == versions
