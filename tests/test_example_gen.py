"""Tests of the example generator: per-user logic (components/interactions.py), the summary and bad-share
check (components/data_report.py), and the component's executor end to end on a tiny folder."""

import json
import random
from pathlib import Path

import pytest
import tensorflow as tf
from tfx.types import artifact_utils, standard_artifacts

from components import data_report
from components import example_gen as eg
from components import interactions as it
from components.data_files import Interaction
from components.example_gen_config import ExampleGenConfig
from serving.event_log import EVENTS, SERVED, EventLog
from trainer import features

TRAIN, EVAL = it.TRAIN, it.EVAL


def _p(user: str, item: str, time: int, line: int) -> Interaction:
    return Interaction(user, item, None, time, line)


# u1: a, b, c in order. u2: b and c at the same time (file order b, c), then d. u3: a single positive.
U1 = [_p("u1", "c", 2, 4), _p("u1", "a", 0, 2), _p("u1", "b", 1, 3)]
U2 = [_p("u2", "b", 0, 5), _p("u2", "c", 0, 6), _p("u2", "d", 1, 7)]
U3 = [_p("u3", "a", 5, 8)]


# --- splits and histories -------------------------------------------------------------------------
def test_last_per_user_split_orders_by_time_then_line():
    assert [(p.item_id, s) for p, s in it.assign_splits(U1, it.LAST_PER_USER)] == [
        ("a", TRAIN), ("b", TRAIN), ("c", EVAL)]
    assert [(p.item_id, s) for p, s in it.assign_splits(U2, it.LAST_PER_USER)] == [
        ("b", TRAIN), ("c", TRAIN), ("d", EVAL)]
    assert [s for _, s in it.assign_splits(U3, it.LAST_PER_USER)] == [EVAL]


def test_global_time_split():
    times = [p.time for p in U1 + U2 + U3]  # sorted: 0 0 0 1 1 2 5
    cut = it.time_cut(times, 0.5)  # index floor(0.5 * 6) = 3 -> time 1
    assert cut == 1
    assert [s for _, s in it.assign_splits(U1, it.GLOBAL_TIME, cut)] == [TRAIN, TRAIN, EVAL]
    assert [s for _, s in it.assign_splits(U2, it.GLOBAL_TIME, cut)] == [TRAIN, TRAIN, TRAIN]
    assert it.time_cut([], 0.9) is None
    with pytest.raises(ValueError, match="needs a time cut"):
        it.assign_splits(U1, it.GLOBAL_TIME, None)


def test_histories_are_strictly_earlier_oldest_first_and_truncated():
    u1 = [p for p, _ in it.assign_splits(U1, it.LAST_PER_USER)]
    assert it.histories(u1, 20) == [(), ("a",), ("a", "b")]
    assert it.histories(u1, 1) == [(), ("a",), ("b",)]
    assert it.histories(u1, 0) == [(), (), ()]
    u2 = [p for p, _ in it.assign_splits(U2, it.LAST_PER_USER)]
    assert it.histories(u2, 20) == [(), (), ("b", "c")]  # b and c share a time: neither precedes the other


# --- negatives -------------------------------------------------------------------------------------
def test_negatives_exclude_own_items_and_fall_short_only_when_the_pool_is_exhausted():
    sampler = it.NegativeSampler.from_counts({"a": 2, "b": 2, "c": 1, "d": 1, "e": 1}, it.UNIFORM)
    rng = random.Random(0)
    for _ in range(50):
        drawn = sampler.sample(rng, {"a", "b"}, 2)
        assert len(drawn) == 2 == len(set(drawn)) and not set(drawn) & {"a", "b"}
    assert sorted(sampler.sample(rng, {"a", "b"}, 5)) == ["c", "d", "e"]
    assert it.NegativeSampler.from_counts({}, it.UNIFORM).sample(rng, set(), 3) == []


def test_popularity_sampling_follows_train_counts():
    sampler = it.NegativeSampler.from_counts({"head": 99, "tail": 1}, it.POPULARITY)
    assert sampler.cdf == (99.0, 100.0)  # sorted items: head, tail
    rng = random.Random(1)
    draws = [sampler.sample(rng, set(), 1)[0] for _ in range(2000)]
    assert 0.97 < draws.count("head") / 2000 < 1.0  # expected 0.99
    with pytest.raises(ValueError, match="negative_sampling"):
        it.NegativeSampler.from_counts({"a": 1}, "loudest")


def test_user_examples_exact_stubs():
    # Pool a..e; u1 owns a, b, c, so d and e are its only possible negatives.
    sampler = it.NegativeSampler.from_counts({i: 1 for i in "abcde"}, it.UNIFORM)
    stubs = it.user_examples("u1", it.assign_splits(U1, it.LAST_PER_USER), sampler, 20, 2, seed=0)
    positives = [s for s in stubs if s.label == 1.0]
    assert positives == [
        it.ExampleStub(TRAIN, "u1", "a", (), 0, 1.0),
        it.ExampleStub(TRAIN, "u1", "b", ("a",), 1, 1.0),
        it.ExampleStub(EVAL, "u1", "c", ("a", "b"), 2, 1.0),
    ]
    for positive_index in range(3):  # each positive is followed by its 2 negatives, same context
        positive, *negatives = stubs[3 * positive_index : 3 * positive_index + 3]
        assert sorted(n.item_id for n in negatives) == ["d", "e"]
        assert {(n.split, n.history, n.timestamp, n.label) for n in negatives} == {
            (positive.split, positive.history, positive.timestamp, 0.0)}


def test_negatives_are_deterministic_per_seed():
    sampler = it.NegativeSampler.from_counts({f"i{n}": 1 for n in range(200)}, it.UNIFORM)
    sequence = it.assign_splits(U1, it.LAST_PER_USER)
    first = it.user_examples("u1", sequence, sampler, 20, 4, seed=7)
    assert first == it.user_examples("u1", sequence, sampler, 20, 4, seed=7)
    assert first != it.user_examples("u1", sequence, sampler, 20, 4, seed=8)


def test_config_rejects_bad_parameters():
    with pytest.raises(ValueError, match="num_negatives must be >= 0; split_mode must be one of"):
        ExampleGenConfig(num_negatives=-1, split_mode="random")
    with pytest.raises(ValueError, match="eval_time_quantile must be in"):
        ExampleGenConfig(eval_time_quantile=1.0)


def test_config_json_round_trip_and_errors():
    config = ExampleGenConfig(num_negatives=2, split_mode=it.GLOBAL_TIME, rating_threshold=3.5, seed=7)
    assert ExampleGenConfig.from_json(config.to_json()) == config
    assert json.loads(config.to_json())["num_negatives"] == 2
    assert ExampleGenConfig.from_json("{}") == ExampleGenConfig()
    assert ExampleGenConfig.from_json('{"num_negatives": 3.0}').num_negatives == 3  # JSON numbers
    with pytest.raises(ValueError, match=r"Unknown example gen config keys \['negatives'\]; known keys: "
                       r"\['eval_time_quantile', 'history_length', 'log_shown', 'log_spans', "
                       r"'max_bad_share', 'negative_sampling', 'num_negatives', 'rating_threshold', 'seed', "
                       r"'split_mode'\]"):
        ExampleGenConfig.from_json('{"negatives": 3}')
    with pytest.raises(ValueError, match="ExampleGenConfig.num_negatives must be an integer, got 2.5"):
        ExampleGenConfig.from_json('{"num_negatives": 2.5}')
    with pytest.raises(ValueError, match="ExampleGenConfig.split_mode must be a string"):
        ExampleGenConfig.from_json('{"split_mode": 1}')
    with pytest.raises(ValueError, match="must be a JSON object"):
        ExampleGenConfig.from_json("[1]")


# --- summary and bad-share check -----------------------------------------------------------------
def _counts() -> dict:
    return {
        ("rows_read", "items.jsonl"): 4, ("rows_read", "interactions.tsv"): 10,
        ("rejected", "interactions.tsv", "malformed_row"): 2,
        ("rejected", "interactions.tsv", "unknown_item"): 1,
        ("below_rating_threshold", "interactions.tsv"): 1,
        ("positives", TRAIN): 4, ("positives", EVAL): 2, ("negatives", TRAIN): 8, ("negatives", EVAL): 3,
        ("examples", TRAIN): 12, ("examples", EVAL): 5, ("examples", "catalog"): 4, ("users",): 2,
    }


SOURCES = ["items.jsonl", "interactions.tsv"]


def test_summary_counts_per_file_and_reason():
    summary = data_report.build_summary(_counts(), SOURCES, 2, "/r/rejected.jsonl")
    inter = summary["files"]["interactions.tsv"]
    assert (inter["rows_read"], inter["rows_rejected"], inter["rows_kept"]) == (10, 3, 7)
    assert inter["bad_share"] == pytest.approx(0.3)
    assert summary["rejected"]["unknown_item"] == 1 and summary["rejected"]["empty_text"] == 0
    assert summary["negatives_short"] == {TRAIN: 0, EVAL: 1}  # 2 eval positives x 2 - 3 drawn
    data_report.check_summary(summary, max_bad_share=0.3)  # 30% is not above 30%


def test_check_summary_lists_reasons_and_the_rejected_path():
    summary = data_report.build_summary(_counts(), SOURCES, 2, "/r/rejected.jsonl")
    with pytest.raises(data_report.BadInputError) as error:
        data_report.check_summary(summary, max_bad_share=0.05)
    message = str(error.value)
    assert "interactions.tsv: 3 of 10 rows rejected (30.0% > max_bad_share 5.0%)" in message
    assert "malformed_row=2, unknown_item=1" in message and "/r/rejected.jsonl" in message
    assert "items.jsonl" not in message


# --- the component end to end ----------------------------------------------------------------------
TOY_INTERACTIONS = [("u1", "a", 0), ("u1", "b", 1), ("u1", "c", 2), ("u2", "b", 0), ("u2", "c", 1),
                    ("u3", "a", 5)]
TOY_ITEMS = [
    {"item_id": "a", "title": "Red pen", "brand": "Acme", "categories": ["Pens"], "price": 1.5},
    {"item_id": "b", "title": "Blue ink", "text": "Blue ink for pens"},
    {"item_id": "c", "title": "Stapler", "categories": "Office, Staplers"},
    {"item_id": "d", "title": "Cold notebook"},  # no interactions, still in the catalog
]


def _write_dataset(folder: Path, bad_interactions: list[str] = (), bad_items: list[str] = ()) -> str:
    folder.mkdir(parents=True)
    lines = [f"{u}\t{i}\t\t{t}" for u, i, t in TOY_INTERACTIONS] + list(bad_interactions)
    (folder / "interactions.tsv").write_text("user_id\titem_id\trating\ttime\n" + "\n".join(lines) + "\n")
    items = [json.dumps(item) for item in TOY_ITEMS] + list(bad_items)
    (folder / "items.jsonl").write_text("\n".join(items) + "\n")
    return str(folder)


def _run(data_dir: str, out: Path, logs_dir: str = "", **params) -> dict:
    outputs = {"examples": standard_artifacts.Examples(), "catalog": standard_artifacts.Examples(),
               "rejected": eg.RejectedRows()}
    for key, artifact in outputs.items():
        artifact.uri = str(out / key)
    executor = eg.InteractionsExampleGen.EXECUTOR_SPEC.executor_class()
    exec_properties = {"data_dir": data_dir, "config": ExampleGenConfig(**params).to_json()}
    if logs_dir:
        exec_properties["logs_dir"] = logs_dir
    executor.Do({}, {k: [v] for k, v in outputs.items()}, exec_properties)
    return outputs


def _read_split(artifact, split: str) -> list[dict]:
    files = tf.io.gfile.glob(str(Path(artifact_utils.get_split_uri([artifact], split)) / "*.gz"))
    examples = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        examples.append({k: list(getattr(v, v.WhichOneof("kind")).value) for k, v in feature.items()})
    return examples


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("toy")
    bad = ["u1\tzzz\t\t9", "u2\tb\t\tlater"]  # unknown_item, malformed_row
    duplicate = '{"item_id": "a", "title": "dup"}'
    data_dir = _write_dataset(tmp / "data", bad_interactions=bad, bad_items=[duplicate])
    return _run(data_dir, tmp / "out", num_negatives=2, max_bad_share=0.25, seed=3)


def test_component_writes_splits_catalog_and_split_names(toy_run):
    assert artifact_utils.decode_split_names(toy_run["examples"].split_names) == [TRAIN, EVAL]
    assert artifact_utils.decode_split_names(toy_run["catalog"].split_names) == ["catalog"]
    catalog = _read_split(toy_run["catalog"], "catalog")
    assert sorted(e[features.ITEM_ID][0] for e in catalog) == [b"a", b"b", b"c", b"d"]
    assert all(set(e) == set(features.ITEM_FEATURES) for e in catalog)
    # Train positives: u1 a, b and u2 b; eval: u1 c, u2 c, u3 a. Train pool = {a, b}: u1 owns both (no
    # negatives), u2 can only draw a (1 per positive), u3 can only draw b.
    train, evals = _read_split(toy_run["examples"], TRAIN), _read_split(toy_run["examples"], EVAL)
    assert (len(train), len(evals)) == (3 + 1, 3 + 2)
    # No item text in a train example (the catalog carries it); an eval example has it (a baseline model
    # scores an item outside its catalog by it). Position: logged displays only.
    dataset_features = {*features.EXAMPLE_ITEM_FEATURES, *features.INTERACTION_FEATURES} - {features.SLOT}
    assert all(set(e) == dataset_features for e in train)
    assert all(set(e) == dataset_features | set(features.CATALOG_ONLY_FEATURES) for e in evals)
    u1_eval = [e for e in evals if e[features.USER_ID] == [b"u1"]]
    assert len(u1_eval) == 1
    assert u1_eval[0][features.HISTORY] == [b"a", b"b"]
    assert u1_eval[0][features.LABEL] == [1.0] and u1_eval[0][features.TIMESTAMP] == [2]
    assert u1_eval[0][features.CATEGORIES] == [b"Office", b"Staplers"] and u1_eval[0][features.PRICE] == [0.0]
    u3_negative = [e for e in evals if e[features.USER_ID] == [b"u3"] and e[features.LABEL] == [0.0]]
    assert [(e[features.ITEM_ID], e[features.TEXT], e[features.HISTORY]) for e in u3_negative] == [
        ([b"b"], [b"Blue ink for pens"], [])]


def test_component_writes_rejected_rows_and_summary(toy_run):
    folder = Path(toy_run["rejected"].uri)
    rejected = [json.loads(line) for line in (folder / "rejected.jsonl").read_text().splitlines()]
    assert sorted((r["source"], r["line"], r["reason"]) for r in rejected) == [
        ("interactions.tsv", 8, "unknown_item"), ("interactions.tsv", 9, "malformed_row"),
        ("items.jsonl", 5, "duplicate_item_id")]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["files"]["interactions.tsv"]["rows_read"] == 8
    assert summary["files"]["items.jsonl"]["rows_kept"] == 4
    assert summary["examples"] == {TRAIN: 4, EVAL: 5, "catalog": 4}


def test_component_fails_when_the_bad_share_is_too_high(tmp_path):
    data_dir = _write_dataset(tmp_path / "data", bad_interactions=["u1\tzzz\t\t9", "garbage"])
    with pytest.raises(data_report.BadInputError, match=r"interactions.tsv: 2 of 8 rows rejected.*"
                       r"malformed_row=1, unknown_item=1.*rejected\.jsonl"):
        _run(data_dir, tmp_path / "out")


def test_component_global_time_split(tmp_path):
    # Positive times 0 0 1 1 2 5; quantile 0.5 -> sorted index floor(0.5 * 5) = 2 -> cut 1: u1's c (time 2)
    # and u3's a (time 5) are after it.
    data_dir = _write_dataset(tmp_path / "data")
    outputs = _run(data_dir, tmp_path / "out", split_mode="global_time", eval_time_quantile=0.5,
                   num_negatives=0)
    evals = _read_split(outputs["examples"], EVAL)
    assert len(_read_split(outputs["examples"], TRAIN)) == 4
    assert sorted((e[features.USER_ID][0], e[features.ITEM_ID][0]) for e in evals) == [
        (b"u1", b"c"), (b"u3", b"a")]


# --- the service's logs as training data ---------------------------------------------------------------
def _served(request_id: str, items: list[str], ts: float) -> dict:
    return {
        "request_id": request_id, "user_pseudonym": "p1", "ts": ts, "model_name": "m", "model_version": 1,
        "surface": "default", "knobs": "{}", "history": ["c"], "item_ids": items,
        "positions": list(range(len(items))), "scores": [0.0] * len(items), "is_tail": [False] * len(items),
        "is_new": [False] * len(items), "sponsored": [False] * len(items),
        "reasons": [""] * len(items), "because": [""] * len(items), "rules_fired": [],
    }


def _event(request_id: str, item: str, kind: str, ts: float) -> dict:
    return {"request_id": request_id, "user_pseudonym": "p1", "item_id": item, "type": kind, "ts": ts}


def _write_logs(folder: Path) -> str:
    """Span 1: r0 (its click lands in span 2); span 2: r1, r2 and orphan events; span 3: open, not read."""
    log = EventLog(str(folder), span=1)
    try:
        log.append(SERVED, [_served("r0", ["a", "b"], 10.0)])
        log.append(EVENTS, [_event("r0", "a", "impression", 11.0), _event("r0", "b", "impression", 11.0)])
        log.rotate()
        log.append(EVENTS, [_event("r0", "b", "click", 20.0)])
        log.append(SERVED, [_served("r1", ["d", "zzz", "a"], 30.0), _served("r2", ["b"], 40.0)])
        log.append(EVENTS, [_event("r1", "zzz", "click", 31.0), _event("r1", "a", "impression", 31.0)])
        log.append(EVENTS, [_event("gone", "a", "click", 32.0), _event("gone", "b", "click", 33.0)])
        log.rotate()
        log.append(SERVED, [_served("r3", ["a"], 50.0)])  # the open span: not a complete file yet
        log.append(EVENTS, [_event("r3", "a", "click", 51.0)])
    finally:
        log.close()
    return str(folder)


def test_logs_add_train_positives_and_real_negatives_with_positions(tmp_path):
    data_dir = _write_dataset(tmp_path / "data")
    logs_dir = _write_logs(tmp_path / "logs")
    outputs = _run(data_dir, tmp_path / "out", logs_dir=logs_dir, num_negatives=0)
    logged = [e for e in _read_split(outputs["examples"], TRAIN) if features.SLOT in e]
    assert sorted(
        (e[features.ITEM_ID], e[features.LABEL], e[features.SLOT], e[features.TIMESTAMP]) for e in logged
    ) == [
        ([b"a"], [0.0], [0], [10]),  # r0: shown, not taken
        ([b"a"], [0.0], [2], [30]),  # r1: shown, not taken
        ([b"b"], [1.0], [1], [20]),  # r0: clicked in the next span
    ]
    assert all(e[features.USER_ID] == [b"p1"] and e[features.HISTORY] == [b"c"] for e in logged)
    assert [e for e in _read_split(outputs["examples"], EVAL) if features.SLOT in e] == []
    summary = json.loads((Path(outputs["rejected"].uri) / "summary.json").read_text())
    assert summary["logs"] == {
        "logs_dir": logs_dir, "served_spans": [1, 2], "events_spans": [1, 2], "requests": 3,
        "positives": 1, "negatives": 2, "unknown_items": 1, "orphan_events": 2,
    }  # r1's zzz: clicked but not in the catalog; r2: nothing displayed
    last = _run(data_dir, tmp_path / "last", logs_dir=logs_dir, num_negatives=0, log_spans=1)
    summary = json.loads((Path(last["rejected"].uri) / "summary.json").read_text())
    assert (summary["logs"]["served_spans"], summary["logs"]["negatives"]) == ([2], 1)


def test_without_logs_the_summary_says_so_and_a_missing_logs_dir_is_an_error(toy_run, tmp_path):
    summary = json.loads((Path(toy_run["rejected"].uri) / "summary.json").read_text())
    assert summary["logs"] is None
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        _run(_write_dataset(tmp_path / "data"), tmp_path / "out", logs_dir=str(tmp_path / "nope"))


def test_catalog_examples_count_ratings_below_the_threshold(tmp_path):
    # Threshold 4: u1 and u2 like a, b, c; d is only rated below it (twice), c once besides its positive.
    rows = [("u1", "a", 5, 0), ("u1", "b", 4, 1), ("u1", "d", 2, 2), ("u2", "b", 5, 0), ("u2", "d", 1, 1),
            ("u2", "c", 3, 2), ("u2", "c", 5, 3)]
    folder = tmp_path / "data"
    folder.mkdir()
    lines = [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in rows]
    (folder / "interactions.tsv").write_text("user_id\titem_id\trating\ttime\n" + "\n".join(lines) + "\n")
    (folder / "items.jsonl").write_text("\n".join(json.dumps(item) for item in TOY_ITEMS) + "\n")
    outputs = _run(str(folder), tmp_path / "out", num_negatives=1, rating_threshold=4.0)
    catalog = {e[features.ITEM_ID][0]: e for e in _read_split(outputs["catalog"], "catalog")}
    assert {item: e.get(features.NEGATIVE_RATINGS) for item, e in catalog.items()} == {
        b"a": None, b"b": None, b"c": [1], b"d": [2]}
    examples = _read_split(outputs["examples"], TRAIN) + _read_split(outputs["examples"], EVAL)
    assert examples and not any(features.NEGATIVE_RATINGS in e for e in examples)
    summary = json.loads((Path(outputs["rejected"].uri) / "summary.json").read_text())
    assert summary["files"]["interactions.tsv"]["below_rating_threshold"] == 3
