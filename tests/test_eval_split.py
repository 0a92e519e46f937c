"""evaluation.data + evaluation.split on a toy dataset: leave-last-out, ties, ratings, cold items, head."""

import json

import numpy as np
import pytest

from components import data_files
from evaluation import data, split

# user, item, rating, time. Rated: rows below 4 are not positives. Unknown item "q" is dropped.
ROWS = [
    ("a", "x", 5, 0),
    ("a", "y", 4, 1),
    ("a", "v", 2, 2),
    ("a", "z", 5, 3),
    ("a", "w", 4, 4),
    ("b", "y", 5, 7),
    ("c", "z", 4, 5),
    ("c", "x", 5, 5),  # equal times: line order puts z first, item order x first
    ("c", "q", 5, 9),
]
ITEMS = ["w", "x", "y", "z", "v"]


@pytest.fixture()
def toy_dir(tmp_path):
    lines = ["user_id\titem_id\trating\ttime"] + ["\t".join(map(str, r)) for r in ROWS]
    (tmp_path / "interactions.tsv").write_text("\n".join(lines) + "\n")
    items = [json.dumps({"item_id": i, "title": f"item {i}"}) for i in ITEMS]
    (tmp_path / "items.jsonl").write_text("\n".join(items) + "\n")
    return str(tmp_path)


def test_load_dataset_keeps_positives_in_time_then_line_order(toy_dir):
    dataset = data.load_dataset(toy_dir)
    assert dataset.item_ids == tuple(ITEMS)
    assert [p.item_id for p in dataset.positives["a"]] == ["x", "y", "z", "w"]
    assert [p.item_id for p in dataset.positives["c"]] == ["z", "x"]
    assert dataset.dropped == {data_files.BELOW_RATING_THRESHOLD: 1, data_files.UNKNOWN_ITEM: 1}


def test_time_ties_by_item_id_and_rating_threshold_zero(toy_dir):
    dataset = data.load_dataset(toy_dir, rating_threshold=0.0, time_ties="item_id")
    assert [p.item_id for p in dataset.positives["c"]] == ["x", "z"]
    assert [p.item_id for p in dataset.positives["a"]] == ["x", "y", "v", "z", "w"]
    with pytest.raises(ValueError, match="time_ties"):
        data.load_dataset(toy_dir, time_ties="random")


def test_standard_split_last_is_test_previous_is_validation(toy_dir):
    s = split.leave_last_out(data.load_dataset(toy_dir))
    index = {item: i for i, item in enumerate(ITEMS)}
    assert s.users == ("a", "b", "c")
    assert s.test.tolist() == [index["w"], index["y"], index["x"]]
    assert s.validation.tolist() == [index["z"], -1, index["z"]]  # b has one positive: no validation
    # Fit data = train + validation, oldest first; b's history is empty.
    assert [h.tolist() for h in s.history] == [[index["x"], index["y"], index["z"]], [], [index["z"]]]
    assert s.counts.tolist() == [0, 1, 1, 2, 0]  # w x y z v
    assert s.is_cold.tolist() == [True, False, False, False, True]
    assert s.fit_matrix().toarray().tolist() == [[0, 1, 1, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 1, 0]]
    # The most recent fit item only (a: z, the newest of x y z); b has none.
    assert s.last_item_matrix().toarray().tolist() == [[0, 0, 0, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 1, 0]]
    assert not s.made_cold.any()


def test_fit_matrix_counts_a_repeated_interaction_once():
    s = split.Split(
        split.STANDARD,
        ("i", "j"),
        ("u",),
        (np.array([0, 0, 1]),),
        np.array([1]),
        np.array([0]),
        {},
        np.zeros(2, bool),
    )
    assert s.fit_matrix().toarray().tolist() == [[1.0, 1.0]]
    assert s.counts.tolist() == [2, 1]


def test_cold_items_protocol_strips_a_seeded_share_of_items(toy_dir):
    dataset = data.load_dataset(toy_dir)
    s = split.leave_last_out(dataset, split.COLD_ITEMS, seed=3, cold_share=0.5)
    standard = split.leave_last_out(dataset)
    # Items with fit interactions: x, y, z → round(0.5 · 3) = 2 made cold.
    assert s.made_cold.sum() == 2
    assert set(np.flatnonzero(s.made_cold)) <= {1, 2, 3}
    assert (s.counts[s.made_cold] == 0).all()
    assert s.test.tolist() == standard.test.tolist()  # test targets stay
    for history in s.history:
        assert not s.made_cold[history].any()
    again = split.leave_last_out(dataset, split.COLD_ITEMS, seed=3, cold_share=0.5)
    assert again.made_cold.tolist() == s.made_cold.tolist()
    for user in s.users:
        assert all(not s.made_cold[ITEMS.index(p.item_id)] for p in s.fit_rows[user])


def test_unknown_protocol_is_refused(toy_dir):
    with pytest.raises(ValueError, match="protocol"):
        split.leave_last_out(data.load_dataset(toy_dir), "random")


def test_tail_items_head_first_reaches_the_share():
    # Total 10: 4 + 3 = 70% < 80%, + 2 = 90% → head {1, 3, 2}.
    assert split.tail_items(np.array([1, 4, 2, 3])).tolist() == [True, False, False, False]
    # Ties at the boundary: counts 4, 2, 2, 2 (total 10): 4 + 2 = 60%, + 2 = 80% → head of 3; among the
    # equal counts the higher index enters the head first.
    assert split.tail_items(np.array([4, 2, 2, 2])).tolist() == [False, True, False, False]
    assert split.tail_items(np.zeros(3)).tolist() == [True, True, True]


def test_negatives_before_the_test_target_are_fit_data_and_a_made_cold_item_loses_them(tmp_path):
    rows = [
        ("a", "x", 5, 0),
        ("a", "v", 2, 1),
        ("a", "y", 4, 2),
        ("a", "z", 1, 3),  # a's target y: z is later
        ("b", "v", 5, 0),
        ("b", "x", 5, 1),
        ("b", "w", 4, 2),
        ("d", "w", 1, 0),  # no positive at all: every negative is fit data
    ]
    lines = ["user_id\titem_id\trating\ttime"] + ["\t".join(map(str, r)) for r in rows]
    (tmp_path / "interactions.tsv").write_text("\n".join(lines) + "\n")
    (tmp_path / "items.jsonl").write_text("\n".join(json.dumps({"item_id": i, "title": i}) for i in ITEMS))
    dataset = data.load_dataset(str(tmp_path))
    negatives = {u: [n.item_id for n in ns] for u, ns in dataset.negatives.items()}
    assert negatives == {"a": ["v", "z"], "d": ["w"]}
    s = split.leave_last_out(dataset)
    assert {u: [n.item_id for n in ns] for u, ns in s.fit_negatives.items()} == {"a": ["v"], "d": ["w"]}
    # Every item with fit positives made cold (x and v): v loses a's rating too; w (b's target) keeps d's.
    cold = split.leave_last_out(dataset, split.COLD_ITEMS, seed=0, cold_share=1.0)
    assert sorted(ITEMS[i] for i in np.flatnonzero(cold.made_cold)) == ["v", "x"]
    assert {u: [n.item_id for n in ns] for u, ns in cold.fit_negatives.items()} == {"d": ["w"]}
