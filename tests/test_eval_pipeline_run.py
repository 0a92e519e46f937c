"""evaluation.pipeline_run: the derived dataset holds each user's fit rows, and the pipeline's own per-user
split then makes the validation item its eval example."""

import json
from types import SimpleNamespace

import numpy as np

from components import interactions
from evaluation import data, pipeline_run, split
from trainer.config import TrainerConfig

ROWS = [
    ("a", "x", 0),
    ("a", "y", 1),
    ("a", "z", 2),
    ("a", "w", 3),
    ("b", "y", 0),
    ("c", "w", 4),
    ("c", "x", 5),
]
ITEMS = ["w", "x", "y", "z"]


def _write(folder, rows):
    folder.mkdir()
    lines = ["user_id\titem_id\trating\ttime"] + [f"{u}\t{i}\t5\t{t}" for u, i, t in rows]
    (folder / "interactions.tsv").write_text("\n".join(lines) + "\n")
    items = [json.dumps({"item_id": i, "title": f"item {i}", "brand": "acme", "price": 2.5}) for i in ITEMS]
    (folder / "items.jsonl").write_text("\n".join(items) + "\n")
    return str(folder)


def test_derived_dataset_drops_test_targets_and_keeps_the_catalog(tmp_path):
    dataset = data.load_dataset(_write(tmp_path / "src", ROWS))
    s = split.leave_last_out(dataset)
    derived = data.load_dataset(str(pipeline_run.write_training_dataset(dataset, s, tmp_path / "derived")))
    assert {u: [p.item_id for p in rows] for u, rows in derived.positives.items()} == {
        "a": ["x", "y", "z"],
        "c": ["w"],
    }  # b had only its test target
    assert derived.items == dataset.items
    assert all(p.rating is None for rows in derived.positives.values() for p in rows)


def test_pipeline_split_of_the_derived_data_puts_the_validation_item_in_eval(tmp_path):
    dataset = data.load_dataset(_write(tmp_path / "src", ROWS))
    s = split.leave_last_out(dataset)
    derived = data.load_dataset(str(pipeline_run.write_training_dataset(dataset, s, tmp_path / "derived")))
    for u, user in enumerate(s.users):
        if user not in derived.positives:
            assert s.validation[u] == -1
            continue
        assigned = interactions.assign_splits(derived.positives[user], interactions.LAST_PER_USER)
        eval_items = [p.item_id for p, which in assigned if which == interactions.EVAL]
        assert eval_items == [s.item_ids[s.validation[u]]]


def test_cold_items_are_absent_from_the_derived_data(tmp_path):
    dataset = data.load_dataset(_write(tmp_path / "src", ROWS))
    s = split.leave_last_out(dataset, split.COLD_ITEMS, seed=0, cold_share=0.5)
    derived = data.load_dataset(str(pipeline_run.write_training_dataset(dataset, s, tmp_path / "derived")))
    cold = {s.item_ids[i] for i in np.flatnonzero(s.made_cold)}
    assert len(cold) == 2  # round(0.5 × 4 items with fit rows: x, y, z, w)
    assert not cold & {p.item_id for rows in derived.positives.values() for p in rows}


def test_derived_dataset_keeps_the_fit_negatives_with_their_ratings(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    rows = [("a", "x", 5, 0), ("a", "w", 2, 1), ("a", "y", 4, 2), ("a", "z", 3.5, 3), ("a", "z", 5, 4)]
    lines = ["user_id\titem_id\trating\ttime"] + ["\t".join(map(str, r)) for r in rows]
    (folder / "interactions.tsv").write_text("\n".join(lines) + "\n")
    (folder / "items.jsonl").write_text("".join(json.dumps({"item_id": i, "title": i}) + "\n" for i in ITEMS))
    dataset = data.load_dataset(str(folder))
    s = split.leave_last_out(dataset)  # a's target: z at time 4
    out = pipeline_run.write_training_dataset(dataset, s, tmp_path / "derived")
    derived = data.load_dataset(str(out))
    assert [p.item_id for p in derived.positives["a"]] == ["x", "y"]
    assert [(n.item_id, n.rating) for n in derived.negatives["a"]] == [("w", 2.0), ("z", 3.5)]


def test_train_gives_the_pipeline_the_harness_rating_threshold(tmp_path, monkeypatch):
    from pipeline import local_runner
    from pipeline.runs import results

    ran = []
    monkeypatch.setattr(local_runner, "run", ran.append)
    pushed = SimpleNamespace(pushed_model_dir=lambda: "pushed")
    monkeypatch.setattr(results, "RunResults", lambda run_dir: pushed)
    trainer = TrainerConfig()
    assert pipeline_run.train(tmp_path / "data", tmp_path / "run", trainer, rating_threshold=3.5) == "pushed"
    assert ran[0].example_gen.rating_threshold == 3.5
