"""trainer.weighted_top_k: the pooled top k equals the full top k of every mix."""

import numpy as np
import pytest

from trainer import weighted_top_k


def _total(parts, weights):
    return sum(w * (p if p.ndim == 2 else p[None, :]) for w, p in zip(weights, parts, strict=True) if w)


def _full(parts, weights, k):
    return np.argpartition(-_total(parts, weights), k - 1, axis=1)[:, :k]


def _parts(users=300, items=500, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=[users, items]).astype(np.float32)
    base[rng.random([users, items]) < 0.05] = -np.inf  # excluded (seen) items
    sparse = np.where(rng.random([users, items]) < 0.02, rng.random([users, items]), 0).astype(np.float32)
    popularity = np.log(rng.pareto(1.0, items) + 1e-3).astype(np.float32)
    is_cold = (rng.random(items) < 0.3).astype(np.float32)
    return base, sparse, popularity, is_cold


@pytest.mark.parametrize("weights", [(1, 0, 0, 0), (1, 0.4, 0.05, 0), (1, 100, 0, 0), (1, 0.2, 1.0, 0.3),
                                     (0, 1, 0, 0), (1, 0.1, 0.5, 2.0)])
@pytest.mark.parametrize("size", [10, 25, 600])
def test_pooled_lists_are_the_full_lists(weights, size):
    parts = _parts()
    candidates = weighted_top_k.pool(parts, size)
    pooled = weighted_top_k.top_k(candidates, weights, 10)
    full = _full(parts, weights, 10)
    total = _total(parts, weights)
    scores = [np.sort(np.take_along_axis(total, recs, axis=1), axis=1) for recs in (pooled, full)]
    np.testing.assert_array_equal(*scores)  # the same scores: the same lists up to ties
    assert all(len(set(row)) == 10 for row in pooled)


def test_the_bound_sends_users_to_the_full_ranking_when_the_pool_is_not_enough():
    # Ten items share a big popularity but a low tower score; with a pool of 3 per part the mix that
    # weights popularity needs items from outside the pool, which only the full ranking finds.
    base = np.tile(np.linspace(1, 0, 50, dtype=np.float32), (4, 1))
    popularity = np.zeros(50, np.float32)
    popularity[30:40] = 5.0
    candidates = weighted_top_k.pool((base, popularity), size=3)
    recs = weighted_top_k.top_k(candidates, (1.0, 1.0), 3)
    assert np.sort(recs, axis=1).tolist() == [[30, 31, 32]] * 4
    assert np.sort(weighted_top_k.top_k(candidates, (1.0, 0.0), 3), axis=1).tolist() == [[0, 1, 2]] * 4


def test_refuses_negative_weights_and_k_above_the_pool():
    candidates = weighted_top_k.pool(_parts(users=5, items=40)[:2], size=5)
    with pytest.raises(ValueError, match="non-negative"):
        weighted_top_k.top_k(candidates, (1.0, -0.1), 3)
    with pytest.raises(ValueError, match="pool's size"):
        weighted_top_k.top_k(candidates, (1.0, 0.1), 6)


@pytest.mark.parametrize("size", [10, 200])
def test_lists_padded_from_excluded_items_never_repeat_an_item(size):
    # Three items are not excluded: the 10-item list is padded with excluded (-inf) ones, which the pool
    # holds twice when several parts picked them; the list still names 10 distinct items.
    base = np.full([6, 200], -np.inf, np.float32)
    base[:, :3] = [1.0, 0.5, 0.2]
    popularity = np.linspace(0, 1, 200, dtype=np.float32)
    candidates = weighted_top_k.pool((base, popularity), size)
    recs = weighted_top_k.top_k(candidates, (1.0, 0.5), 10)
    assert all(len(set(row)) == 10 and {0, 1, 2} <= set(row) for row in recs.tolist())
