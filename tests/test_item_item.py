"""trainer.item_item (the collaborative term's tables) and its TF twin in trainer.export, on hand-computed
cases: the 3-user matrix of test_eval_baselines (item 3 has no interactions)."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from trainer import export, item_item

PAD = item_item.PAD
X = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 1, 1, 0]], np.float64))
C = 2 / math.sqrt(6)  # cos(0, 1) = cos(1, 2); cos(0, 2) = 1/2


def test_interaction_matrix_is_binary_over_user_keys():
    x = item_item.interaction_matrix(np.array([7, 7, 3, 7]), np.array([0, 0, 2, 1]), 4)
    assert x.toarray().tolist() == [[0, 0, 1, 0], [1, 1, 0, 0]]  # users sorted by key; repeats count once


def test_cosine_table_keeps_the_strongest_neighbours_first():
    table = item_item.neighbour_table(X, item_item.COSINE, 2)
    assert table.rows.tolist() == [[1, 2], [0, 2], [1, 0], [PAD, PAD]]
    np.testing.assert_allclose(table.weights, [[C, 0.5], [C, C], [C, 0.5], [0, 0]], rtol=1e-6)
    one = item_item.neighbour_table(X, item_item.COSINE, 1)
    assert one.rows.tolist() == [[1], [0], [1], [PAD]]


def test_ease_table_keeps_positive_weights_of_active_items():
    # EASE λ=1 weights (test_eval_baselines): [[0, .5, 0], [.5, 0, .5], [0, .5, 0]] over items 0..2.
    table = item_item.neighbour_table(X, "ease:1", 3)
    assert table.rows[1].tolist()[:2] in ([0, 2], [2, 0]) and table.rows[1, 2] == PAD
    assert table.rows[0].tolist() == [1, PAD, PAD] and table.rows[3].tolist() == [PAD, PAD, PAD]
    np.testing.assert_allclose(table.weights[0], [0.5, 0, 0], atol=1e-12)


def test_unknown_method_and_ease_limit():
    with pytest.raises(ValueError, match="unknown item-item method 'knn'"):
        item_item.neighbour_table(X, "knn", 2)
    assert item_item.methods(item_item.EASE_MAX_ITEMS + 1) == (item_item.COSINE,)
    assert item_item.methods(10) == (item_item.COSINE, "ease:50", "ease:200", "ease:500")


def test_cf_scores_weigh_history_slots_by_recency():
    table = item_item.neighbour_table(X, item_item.COSINE, 2)
    # Left-padded history, newest last: item 0 (age 1, weight 0.5) then item 1 (age 0, weight 1).
    scores = item_item.cf_scores(table, np.array([[PAD, 0, 1], [PAD, PAD, PAD]]), recency=0.5)
    np.testing.assert_allclose(scores, [[C, 0.5 * C, 0.25 + C, 0], [0, 0, 0, 0]], rtol=1e-6)
    np.testing.assert_allclose(item_item.scale_per_user(scores)[0], scores[0] / (0.25 + C), rtol=1e-6)
    assert item_item.position_weights(3, 0.5).tolist() == [0.25, 0.5, 1.0]


def test_text_fill_lends_cold_items_their_nearest_neighbours_scores():
    vectors = np.array([[1, 0], [0, 1], [1, 1], [1, 0.2]], np.float32)  # item 3 is nearest item 0
    fill = item_item.text_fill(vectors, np.array([True, True, True, False]), 2)
    assert fill.cold_rows.tolist() == [3] and fill.rows.tolist() == [[0, 2]]
    cos0, cos2 = 1 / math.hypot(1, 0.2), 1.2 / (math.hypot(1, 0.2) * math.sqrt(2))
    np.testing.assert_allclose(fill.weights, [[cos0 / (cos0 + cos2), cos2 / (cos0 + cos2)]], rtol=1e-5)
    filled = item_item.apply_fill(np.array([[1.0, 5.0, 3.0, 0.0]]), fill)
    np.testing.assert_allclose(filled[0, 3], (cos0 * 1 + cos2 * 3) / (cos0 + cos2), rtol=1e-5)
    np.testing.assert_allclose(filled[0, :3], [1, 5, 3])


def test_text_fill_leaves_seen_items_alone_and_lends_only_items_with_interactions():
    vectors = np.array([[1, 0], [0, 1], [1, 0.1], [1, 0.2]], np.float32)
    # Item 2 (seen, no interactions) is the nearest to item 3 but has nothing to lend; it is not filled.
    has = np.array([True, True, False, False])
    fill = item_item.text_fill(vectors, has, 1, seen=np.array([False, False, True, False]))
    assert fill.cold_rows.tolist() == [3] and fill.rows.tolist() == [[0]]
    assert item_item.text_fill(vectors, has, 1).cold_rows.tolist() == [2, 3]  # default: both filled


def _graph_scores(
    table: item_item.NeighbourTable,
    fill: item_item.TextFill,
    history: np.ndarray,
    recency: float,
    num_items: int | None = None,
) -> np.ndarray:
    """export.item_item_scores (the SavedModel's graph) on numpy inputs."""
    return export.item_item_scores(
        tf.constant(history, tf.int64),
        tf.constant(item_item.position_weights(history.shape[1], recency)),
        tf.constant(table.rows, tf.int64),
        tf.constant(table.weights),
        tf.constant(fill.cold_rows, tf.int64),
        tf.constant(fill.rows, tf.int64),
        tf.constant(fill.weights),
        num_items=num_items,
    ).numpy()


def test_graph_item_item_scores_match_numpy():
    rng = np.random.default_rng(0)
    dense = (rng.random([30, 12]) < 0.3).astype(np.float64)
    dense[:, 11] = 0  # one item without interactions: filled from its text neighbours
    x = sp.csr_matrix(dense)
    table = item_item.neighbour_table(x, "ease:5", 4)
    fill = item_item.text_fill(rng.normal(size=[12, 3]), np.asarray(x.sum(axis=0)).ravel() > 0, 3)
    history = np.array([[PAD, PAD, 3, 5], [1, 2, 11, 4], [PAD, PAD, PAD, PAD]])
    expected = item_item.scale_per_user(item_item.apply_fill(item_item.cf_scores(table, history, 0.7), fill))
    actual = _graph_scores(table, fill, history, 0.7)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-7)
    assert actual[1, 11] > 0 and not actual[2].any()


def test_without_targets_drops_neighbours_at_later_rows_and_keeps_those_rows_as_sources():
    table = item_item.NeighbourTable(
        np.array([[2, 1, -1], [0, 2, 3], [0, 1, -1], [1, 0, 2]], np.int32),
        np.array([[0.9, 0.5, 0.0], [0.8, 0.7, 0.1], [0.6, 0.4, 0.0], [0.3, 0.2, 0.1]], np.float32),
    )
    kept = item_item.without_targets(table, 2)
    assert kept.rows.tolist() == [[1, -1, -1], [0, -1, -1], [0, 1, -1], [1, 0, -1]]
    np.testing.assert_allclose(kept.weights, [[0.5, 0, 0], [0.8, 0, 0], [0.6, 0.4, 0], [0.3, 0.2, 0]])


def test_a_history_only_row_adds_its_neighbours_scores_to_the_candidates_in_numpy_and_the_graph():
    # Rows 0..2 are candidates; row 3 (an item no longer listed) is only in histories.
    table = item_item.without_targets(
        item_item.NeighbourTable(
            np.array([[1, 3], [0, 2], [3, 1], [2, 0]], np.int32),
            np.array([[0.5, 0.4], [0.5, 0.3], [0.9, 0.2], [0.8, 0.6]], np.float32),
        ),
        3,
    )
    history = np.array([[PAD, 3], [PAD, 0]])
    raw = item_item.cf_scores(table, history, 1.0, num_items=3)
    np.testing.assert_allclose(raw, [[0.6, 0, 0.8], [0, 0.5, 0]])
    no_fill = item_item.TextFill(
        np.zeros(0, np.int32), np.zeros([0, 1], np.int32), np.zeros([0, 1], np.float32)
    )
    actual = _graph_scores(table, no_fill, history, 1.0, num_items=3)
    np.testing.assert_allclose(actual, item_item.scale_per_user(raw), rtol=1e-6)
