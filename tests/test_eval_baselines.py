"""evaluation.baselines and evaluation.ranking against scores computed by hand on a 3-user matrix."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from evaluation import baselines, ranking

# Items 0..3; item 3 has no interactions.
X = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 1, 1, 0]], np.float64))


def test_most_pop_scores_are_item_counts():
    assert baselines.fit_most_pop(X)(X[:2]).tolist() == [[2, 3, 2, 0], [2, 3, 2, 0]]


def test_item_knn_cosine():
    # XᵀX = [[2,2,1],[2,3,2],[1,2,2]] on items 0..2 → cos(0,1) = cos(1,2) = 2/√6, cos(0,2) = 1/2.
    c = 2 / math.sqrt(6)
    expected = np.array([[0, c, 0.5, 0], [c, 0, c, 0], [0.5, c, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_allclose(baselines.item_knn_similarity(X), expected)
    # User 0 = items {0, 1}: score = row 0 + row 1 of S.
    np.testing.assert_allclose(baselines.fit_item_knn(X)(X[:1]), [[c, c, 0.5 + c, 0]])


def test_ease_closed_form():
    # λ = 1: G = XᵀX + I = [[3,2,1],[2,4,2],[1,2,3]], det 16,
    # P = G⁻¹ = [[.5,-.25,0],[-.25,.5,-.25],[0,-.25,.5]];
    # B_ij = −P_ij / P_jj with a zero diagonal.
    active, weights = baselines.ease_weights(X, 1.0)
    assert active.tolist() == [0, 1, 2]  # item 3 has no interactions
    np.testing.assert_allclose(weights, [[0, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0]], atol=1e-12)
    # User 2 = {0, 1, 2}: [0.5, 1, 0.5]; the item without interactions scores 0.
    np.testing.assert_allclose(baselines.fit_ease(X, 1.0)(X[2:]), [[0.5, 1.0, 0.5, 0.0]], atol=1e-12)


def test_top_k_excludes_seen_items_and_breaks_ties_to_the_higher_index():
    scores = np.array([[1.0, 3.0, 3.0, 0.5], [2.0, 2.0, 2.0, 2.0]])
    exclude = sp.csr_matrix(np.array([[0, 0, 0, 0], [1, 0, 1, 0]]))
    assert ranking.top_k(scores, 3, exclude).tolist() == [[2, 1, 0], [3, 1, -1]]


def test_top_k_pads_when_k_exceeds_the_catalog():
    assert ranking.top_k(np.array([[0.1, 0.2]]), 3).tolist() == [[1, 0, -1]]


def test_rank_in_batches_matches_one_batch():
    scorer = baselines.fit_ease(X, 1.0)
    whole = ranking.top_k(scorer(X), 2, X)
    batched = ranking.rank_in_batches(lambda lo, hi: scorer(X[lo:hi]), 3, 2, X, batch_size=2)
    assert batched.tolist() == whole.tolist()
    # User 0 has seen {0, 1}: scores [.5, .5, .5, 0] → item 2, then item 3 (score 0).
    assert whole[0].tolist() == [2, 3]


# The history-kept protocol (evaluation/split.py) ranks seen items like the others.
SCORES = np.array([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.8, 0.4]])
SEEN = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 1, 0, 1]]))


def test_top_k_with_and_without_excluding_the_history():
    # Excluded: user 0 loses item 0 (0.9) → 2 (0.5), 3 (0.3); user 1 loses 1 and 3 → 2 (0.8), 0 (0.2).
    assert ranking.top_k(SCORES, 2, SEEN).tolist() == [[2, 3], [2, 0]]
    # Kept: user 0's seen item 0 ranks first; user 1's seen item 1 ties item 2 (0.8), the higher index first.
    assert ranking.top_k(SCORES, 2).tolist() == [[0, 2], [2, 1]]
    # k = the catalog: the kept list is every item, the excluded one pads the seen slots.
    assert ranking.top_k(SCORES, 4).tolist() == [[0, 2, 3, 1], [2, 1, 3, 0]]
    assert ranking.top_k(SCORES, 4, SEEN).tolist() == [[2, 3, 1, -1], [2, 0, -1, -1]]


def test_rank_in_batches_with_and_without_exclusion():
    def scores(lo, hi):
        return SCORES[lo:hi]

    assert ranking.rank_in_batches(scores, 2, 2, SEEN, batch_size=1).tolist() == [[2, 3], [2, 0]]
    assert ranking.rank_in_batches(scores, 2, 2, batch_size=1).tolist() == [[0, 2], [2, 1]]
    with pytest.raises(ValueError, match="exclude has 2 rows for 3 users"):
        ranking.rank_in_batches(scores, 3, 2, SEEN)


@pytest.mark.parametrize("lam", baselines.EASE_LAMBDAS)
def test_ease_weights_have_a_zero_diagonal(lam):
    _, weights = baselines.ease_weights(X, lam)
    assert np.all(np.diag(weights) == 0)
