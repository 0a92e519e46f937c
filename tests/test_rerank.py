"""trainer.rerank against a plain numpy greedy loop and on constructed cases."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from trainer import rerank


def _reference(relevance, valid, text, is_tail, tail_prob, k, mmr_lambda, xquad_lambda):
    """One user, written as the formula reads: [P] arrays → list of k pool positions."""
    rel_valid = relevance[valid]
    spread = rel_valid.max() - rel_valid.min() if valid.any() else 0.0
    rel = (relevance - rel_valid.min()) / spread if spread > 0 else np.ones_like(relevance)
    norms = np.linalg.norm(text, axis=1, keepdims=True)
    unit = np.divide(text, norms, out=np.zeros_like(text), where=norms > 0)
    chosen: list[int] = []
    for _ in range(k):
        best, best_value = None, None
        for i in range(len(relevance)):
            if i in chosen:
                continue
            redundancy = max(float(unit[i] @ unit[j]) for j in chosen) if chosen else 0.0
            group_prob = tail_prob if is_tail[i] else 1.0 - tail_prob
            same = sum(is_tail[j] == is_tail[i] for j in chosen) / len(chosen) if chosen else 0.0
            value = (
                (1 - mmr_lambda - xquad_lambda) * rel[i]
                - mmr_lambda * redundancy
                + xquad_lambda * group_prob * (1 - same)
            )
            value = value if valid[i] else -1e30
            if best_value is None or value > best_value + 1e-6:  # ties (within float noise) → lower index
                best, best_value = i, value
        chosen.append(best)
    return chosen


def _run(relevance, valid, text, is_tail, tail_prob, k, mmr_lambda=0.0, xquad_lambda=0.0):
    positions, chosen_valid = rerank.greedy_rerank(
        tf.constant(relevance, tf.float32),
        tf.constant(valid),
        tf.constant(text, tf.float32),
        tf.constant(is_tail, tf.int64),
        tf.constant(tail_prob, tf.float32),
        tf.constant(k),
        tf.constant(mmr_lambda),
        tf.constant(xquad_lambda),
    )
    return positions.numpy(), chosen_valid.numpy()


def _random_case(seed: int, batch: int = 3, pool: int = 12, dim: int = 5):
    rng = np.random.default_rng(seed)
    relevance = rng.normal(size=[batch, pool]).astype(np.float32)
    relevance = -np.sort(-relevance, axis=1)  # a pool arrives in base-ranking order
    valid = rng.random([batch, pool]) > 0.2
    text = rng.normal(size=[batch, pool, dim]).astype(np.float32)
    text[:, 3] = 0.0  # an item without text
    is_tail = (rng.random([batch, pool]) > 0.6).astype(np.int64)
    tail_prob = rng.random(batch).astype(np.float32)
    return relevance, valid, text, is_tail, tail_prob


@pytest.mark.parametrize(
    "mmr_lambda, xquad_lambda", [(0.0, 0.0), (0.3, 0.0), (0.0, 0.4), (0.5, 0.5), (0.2, 0.7), (1.0, 0.0)]
)
def test_matches_numpy_reference(mmr_lambda, xquad_lambda):
    for seed, k in itertools.product(range(3), (1, 5, 12)):
        case = _random_case(seed)
        positions, chosen_valid = _run(*case, k=k, mmr_lambda=mmr_lambda, xquad_lambda=xquad_lambda)
        for row in range(positions.shape[0]):
            expected = _reference(*(x[row] for x in case), k, mmr_lambda, xquad_lambda)
            assert positions[row].tolist() == expected, (seed, k, row)
            np.testing.assert_array_equal(chosen_valid[row], case[1][row][expected])


def test_zero_lambdas_keep_the_pool_order_even_with_ties():
    relevance, valid, text, is_tail, tail_prob = _random_case(7)
    relevance[:, 2:6] = relevance[:, 2:3]  # ties: the earlier pool position must stay first
    valid[:] = True
    positions, _ = _run(relevance, valid, text, is_tail, tail_prob, k=12)
    np.testing.assert_array_equal(positions, np.tile(np.arange(12), [3, 1]))


def test_invalid_entries_come_last_and_never_repeat():
    # 5 entries, 2 valid (positions 1 and 3); k = 5 → the 2 valid ones first, then padding, no repeats.
    relevance = np.array([[5.0, 4.0, 3.0, 2.0, 1.0]])
    valid = np.array([[False, True, False, True, False]])
    positions, chosen_valid = _run(
        relevance, valid, np.ones([1, 5, 2]), np.zeros([1, 5]), [0.5], k=5, mmr_lambda=0.5
    )
    assert positions[0, :2].tolist() == [1, 3]
    assert sorted(positions[0].tolist()) == [0, 1, 2, 3, 4]
    assert chosen_valid[0].tolist() == [True, True, False, False, False]


def test_xquad_raises_the_tail_share():
    # Head items 0-3 outrank tail items 4-7; the user's history is 50% tail.
    # λ = 0.5, first pick: head 0 obj = 0.5·1 + 0.5·0.5 = 0.75 beats tail 4 = 0.5·(3/7) + 0.25.
    # Second pick: head 1 = 0.5·(6/7) + 0.5·0.5·(1 - 1) = 0.43; tail 4 = 0.21 + 0.5·0.5·1 = 0.46 → tail.
    relevance = np.array([[8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    is_tail = np.array([[0, 0, 0, 0, 1, 1, 1, 1]])
    text = np.ones([1, 8, 2])
    base, _ = _run(relevance, np.ones([1, 8], bool), text, is_tail, [0.5], k=4)
    assert is_tail[0, base[0]].sum() == 0
    diverse, _ = _run(relevance, np.ones([1, 8], bool), text, is_tail, [0.5], k=4, xquad_lambda=0.5)
    # Third pick: head 1 = 0.43 + 0.25·(1 - 1/2) = 0.55 beats tail 5 = 0.5·(2/7) + 0.25·(1 - 1/2) = 0.27.
    assert diverse[0].tolist() == [0, 4, 1, 2]
    # A head-only history (P(tail|u) = 0) gets no tail bonus: the base order.
    head_user, _ = _run(relevance, np.ones([1, 8], bool), text, is_tail, [0.0], k=4, xquad_lambda=0.5)
    assert head_user[0].tolist() == [0, 1, 2, 3]


def test_mmr_skips_a_near_duplicate():
    # Items 0 and 1 have the same text; item 2 is orthogonal. rel_n = [1, 0.5, 0].
    # λ = 0.6, step 2: item 1 = 0.4·0.5 - 0.6·1 = -0.4; item 2 = 0.4·0 - 0.6·0 = 0 → item 2.
    text = np.array([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    positions, _ = _run(
        [[3.0, 2.0, 1.0]], np.ones([1, 3], bool), text, [[0, 0, 0]], [0.0], k=2, mmr_lambda=0.6
    )
    assert positions[0].tolist() == [0, 2]


def test_bad_arguments_raise():
    case = _random_case(0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="<= 1"):
        _run(*case, k=3, mmr_lambda=0.6, xquad_lambda=0.6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="mmr_lambda"):
        _run(*case, k=3, mmr_lambda=-0.1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="pool size"):
        _run(*case, k=13)


def test_tail_share_and_prior():
    is_tail = tf.constant([[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    known = tf.constant([[1, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0]]) > 0
    # Row 0: 2 tail of 3 known; row 1: nothing known → prior 0.2; row 2: 0 of 1.
    np.testing.assert_allclose(rerank.tail_share(is_tail, known, 0.2).numpy(), [2 / 3, 0.2, 0.0], rtol=1e-6)


def test_normalize_relevance():
    scores = tf.constant([[4.0, 2.0, 0.0, -9.0], [1.0, 1.0, 5.0, 5.0]])
    valid = tf.constant([[True, True, True, False], [True, True, False, False]])
    np.testing.assert_allclose(
        rerank.normalize_relevance(scores, valid).numpy(), [[1.0, 0.5, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]]
    )
