"""evaluation.metrics on hand-computed lists: hits, ranks, empty lists, ties and zero counts."""

import math

import numpy as np
import pytest

from evaluation import metrics, report

# Three users, K = 3, catalog of 5 items; user 2 got an empty list.
RECS = np.array([[0, 1, 2], [3, 0, -1], [-1, -1, -1]])
TARGETS = np.array([1, 4, 0])
IS_TAIL = np.array([False, False, True, True, True])


def test_target_ranks_are_one_based_and_zero_when_absent():
    assert metrics.target_ranks(RECS, TARGETS).tolist() == [2, 0, 0]


def test_a_padding_slot_never_matches_a_target():
    assert metrics.target_ranks(np.array([[-1, 2]]), np.array([-1])).tolist() == [0]


def test_recall_counts_users_with_the_target_in_their_list():
    assert metrics.recall(RECS, TARGETS) == pytest.approx(1 / 3)


def test_recall_of_no_selected_users_is_nan():
    assert math.isnan(metrics.recall(RECS, TARGETS, np.zeros(3, bool)))


def test_ndcg_discounts_by_log2_of_rank_plus_one():
    # rank 2 → 1 / log2(3); the other two users score 0.
    assert metrics.ndcg(RECS, TARGETS) == pytest.approx((1 / math.log2(3)) / 3)
    assert metrics.ndcg(np.array([[5, 1]]), np.array([5])) == 1.0


def test_tail_and_cold_recall_select_users_by_their_target():
    # Targets 1 (head), 4 (tail), 0 (head): only user 1 has a tail target, and missed it.
    assert metrics.tail_recall(RECS, TARGETS, IS_TAIL) == 0.0
    is_cold = np.array([False, True, False, False, False])
    assert metrics.cold_recall(RECS, TARGETS, is_cold) == 1.0  # user 0's target 1 is cold, ranked 2nd
    assert math.isnan(metrics.cold_recall(RECS, TARGETS, np.zeros(5, bool)))


def test_aplt_is_the_mean_tail_share_per_list_with_empty_lists_as_zero():
    # [0, 1, 2]: 1/3 tail; [3, 0]: 1/2 (padding not counted: dividing by K = 3 would give 1/3); empty: 0.
    assert metrics.tail_shares(IS_TAIL[np.maximum(RECS, 0)], RECS >= 0).tolist() == [1 / 3, 1 / 2, 0.0]
    assert metrics.aplt(RECS, IS_TAIL) == pytest.approx((1 / 3 + 1 / 2 + 0) / 3)


def test_served_lists_of_ids_are_padded_with_empty_strings():
    ids = np.array([[b"a", b"b", b""], [b"", b"", b""]], dtype=object)
    assert metrics.valid_slots(ids).tolist() == [[True, True, False], [False, False, False]]
    assert metrics.valid_slots(np.array([["a", ""]])).tolist() == [[True, False]]  # str ids too
    assert metrics.hits(ids, np.array([b"b", b""], dtype=object)).tolist() == [True, False]  # "" never hits
    slot_is_tail = np.array([[True, False, True], [True, True, True]])  # flags on padding are ignored
    assert metrics.tail_shares(slot_is_tail, metrics.valid_slots(ids)).tolist() == [0.5, 0.0]


def test_coverage_and_tail_coverage():
    assert metrics.exposure(RECS, 5).tolist() == [2, 1, 1, 1, 0]
    assert metrics.coverage(RECS, 5) == pytest.approx(4 / 5)
    assert metrics.tail_coverage(RECS, IS_TAIL) == pytest.approx(2 / 3)  # items 2, 3 of {2, 3, 4}
    assert math.isnan(metrics.tail_coverage(RECS, np.zeros(5, bool)))


def test_gini_of_even_and_concentrated_exposure():
    assert metrics.gini(np.array([3, 3, 3])) == 0.0
    # One item holds everything among 4: Σ(2i − n − 1)x / (n Σx) = (8 − 5) · 6 / (4 · 6) = 0.75.
    assert metrics.gini(np.array([0, 6, 0, 0])) == pytest.approx(0.75)
    # [0, 1, 1, 2] ascending: (−3·0 − 1·1 + 1·1 + 3·2) / (4 · 4) = 6 / 16.
    assert metrics.gini(np.array([2, 1, 0, 1])) == pytest.approx(6 / 16)
    assert math.isnan(metrics.gini(np.zeros(3)))


def test_novelty_uses_training_share_and_counts_unseen_items_as_seen_once():
    counts = np.array([4, 2, 1, 1, 0])  # total 8
    # item 0: −log2(4/8) = 1; item 1: 2; item 4 (count 0 → 1): 3.
    recs = np.array([[0, 1], [4, -1], [-1, -1]])
    assert metrics.novelty(recs, counts) == pytest.approx(((1 + 2) / 2 + 3) / 2)  # empty list skipped
    assert math.isnan(metrics.novelty(recs, np.zeros(5)))


def test_ild_is_one_minus_mean_pairwise_cosine():
    vectors = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [0.0, 0.0]])
    # List [0, 1, 2]: cos(0,1) = 0, cos(0,2) = cos(1,2) = 1/√2 → mean √2/3 → ILD 1 − √2/3.
    # List [0, 3]: a zero vector has cosine 0 → ILD 1. List [2]: fewer than 2 items, skipped.
    recs = np.array([[0, 1, 2], [0, 3, -1], [2, -1, -1]])
    expected = ((1 - math.sqrt(2) / 3) + 1.0) / 2
    assert metrics.ild(recs, vectors) == pytest.approx(expected)
    assert metrics.ild(np.array([[0, 0]]), vectors) == pytest.approx(0.0)  # identical items
    assert math.isnan(metrics.ild(np.array([[1, -1]]), vectors))


def test_all_metrics_truncates_to_k_and_names_keys():
    counts = np.array([4, 2, 1, 1, 0])
    values = metrics.all_metrics(RECS, TARGETS, counts, IS_TAIL, None, k=1)
    assert values["recall@1"] == 0.0  # user 0's hit was at rank 2
    assert values["coverage@1"] == pytest.approx(2 / 5)  # items 0 and 3
    assert math.isnan(values["ild@1"])
    assert values["cold_recall@1"] == 0.0  # user 2's target 0 is not cold; user 1's target 4 is (count 0)
    assert set(values) >= {f"{m}@1" for m in report.METRICS}  # every column the report prints
