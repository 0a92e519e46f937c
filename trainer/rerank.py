"""Greedy re-ranking of a candidate pool: MMR (text diversity) and personalised xQuAD (head/tail coverage).

Pure TF (core ops only, so TF Serving runs it), batched over users. At step t the item maximising

  obj(i) = (1 - mmr_lambda - xquad_lambda) * rel(i)
           - mmr_lambda * max_{j in S} cos(text_i, text_j)               (MMR; 0 while S is empty)
           + xquad_lambda * P(g_i | u) * (1 - |S ∩ g_i| / |S|)           (xQuAD; P(g_i | u) while S is empty)

is appended to the chosen list S, where rel = min-max normalised base score over the user's valid pool
entries ([0, 1], so the three terms share a scale), g_i ∈ {head, tail} is the item's group and P(tail | u)
the user's tail share (`tail_share`). Each λ alone gives the textbook form: MMR (1-λ)·rel - λ·sim, and the
"smooth" xQuAD of Abdollahpouri et al. 2019, (1-λ)·rel + λ·coverage. λ = 0 (both) returns exactly the pool
order: `rel` is monotone in the base score and ties go to the lower pool position (the higher base rank).

Example:
  positions, chosen_valid = greedy_rerank(
      relevance=tf.constant([[3.0, 2.0, 1.0]]), valid=tf.constant([[True, True, True]]),
      text=tf.eye(3)[tf.newaxis], is_tail=tf.constant([[0, 0, 1]]), tail_prob=tf.constant([0.5]),
      k=tf.constant(2), mmr_lambda=tf.constant(0.0), xquad_lambda=tf.constant(0.5))
  # positions == [[0, 2]]: after the head item 0, the tail item's coverage bonus (0.5 · 1) beats item 1's 0.
"""

from __future__ import annotations

import tensorflow as tf

# Objective of ineligible pool entries (history, padding): below any real objective, above "chosen" (-inf).
_INELIGIBLE = -1e30


def normalize_relevance(scores: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """Min-max scales `scores` [B, P] over each row's `valid` [B, P] entries to [0, 1] (all 1 if constant).

    Invalid entries get 0 (the caller masks them anyway).
    """
    scores = tf.cast(scores, tf.float32)
    big = tf.constant(3.4e38, tf.float32)
    low = tf.reduce_min(tf.where(valid, scores, big), axis=1, keepdims=True)
    high = tf.reduce_max(tf.where(valid, scores, -big), axis=1, keepdims=True)
    spread = high - low
    safe = tf.where(spread > 0, spread, tf.ones_like(spread))
    scaled = tf.where(spread > 0, (scores - low) / safe, tf.ones_like(scores))
    return tf.where(valid, scaled, tf.zeros_like(scaled))


def unit_vectors(vectors: tf.Tensor) -> tf.Tensor:
    """L2-normalises the last axis [..., T]; zero vectors (no text) stay zero, so their cosine is 0."""
    return tf.math.l2_normalize(tf.cast(vectors, tf.float32), axis=-1)


def tail_share(history_is_tail: tf.Tensor, history_known: tf.Tensor, prior: tf.Tensor) -> tf.Tensor:
    """P(tail | u) [B]: the tail share of each user's known history items, or `prior` when there are none.

    Args:
      history_is_tail: [B, H] 0/1; history_known: [B, H] bool (in the catalog, not padding); prior: scalar.
    """
    known = tf.cast(history_known, tf.float32)
    count = tf.reduce_sum(known, axis=1)
    tail = tf.reduce_sum(known * tf.cast(history_is_tail, tf.float32), axis=1)
    prior = tf.cast(prior, tf.float32)
    return tf.where(count > 0, tail / tf.maximum(count, 1.0), tf.fill(tf.shape(count), prior))


def _first_argmax(objective: tf.Tensor) -> tf.Tensor:
    """[B, P] → [B] int32 index of the row maximum, the lowest index among ties (tf.argmax promises none)."""
    width = tf.shape(objective)[1]
    best = tf.reduce_max(objective, axis=1, keepdims=True)
    positions = tf.broadcast_to(tf.range(width), tf.shape(objective))
    return tf.reduce_min(tf.where(objective >= best, positions, width), axis=1)


def _check_lambdas(mmr_lambda: tf.Tensor, xquad_lambda: tf.Tensor) -> list:
    return [
        tf.debugging.assert_greater_equal(mmr_lambda, 0.0, message="mmr_lambda must be in [0, 1]"),
        tf.debugging.assert_greater_equal(xquad_lambda, 0.0, message="xquad_lambda must be in [0, 1]"),
        tf.debugging.assert_less_equal(
            mmr_lambda + xquad_lambda, 1.0, message="mmr_lambda + xquad_lambda must be <= 1"
        ),
    ]


def greedy_rerank(
    relevance: tf.Tensor,
    valid: tf.Tensor,
    text: tf.Tensor,
    is_tail: tf.Tensor,
    tail_prob: tf.Tensor,
    k: tf.Tensor,
    mmr_lambda: tf.Tensor,
    xquad_lambda: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Picks k of P pool entries per row greedily (see the module docstring for the objective).

    Args:
      relevance: [B, P] base scores (any scale), pool in base-ranking order.
      valid: [B, P] bool, entries that may be recommended; the others are taken only once every valid one is.
      text: [B, P, T] text vectors (cosine similarity; zero vectors are similar to nothing).
      is_tail: [B, P] 0/1 group of each entry.
      tail_prob: [B] P(tail | u).
      k: scalar int, 1 <= k <= P (the caller clamps; checked).
      mmr_lambda, xquad_lambda: scalars in [0, 1] with sum <= 1 (checked).

    Returns:
      positions [B, k] int32 pool positions in chosen order, without repeats; chosen_valid [B, k] bool
      (False = an ineligible entry used as padding because the row had fewer than k valid ones).
    """
    mmr_lambda = tf.cast(mmr_lambda, tf.float32)
    xquad_lambda = tf.cast(xquad_lambda, tf.float32)
    k = tf.cast(k, tf.int32)
    pool = tf.shape(relevance)[1]
    checks = _check_lambdas(mmr_lambda, xquad_lambda) + [
        tf.debugging.assert_positive(k, message="k must be >= 1"),
        tf.debugging.assert_less_equal(k, pool, message="k must not exceed the pool size"),
    ]
    with tf.control_dependencies(checks):  # the loop reads k and rel, so a bad call fails before it runs
        k = tf.identity(k)
        rel = normalize_relevance(relevance, valid)
    unit = unit_vectors(text)
    tail = tf.cast(is_tail, tf.float32) > 0.5
    group_prob = tf.where(tail, tail_prob[:, tf.newaxis], 1.0 - tail_prob[:, tf.newaxis])  # P(g_i | u)
    batch = tf.shape(relevance)[0]

    def step(t, chosen, max_sim, tail_count, picks):
        n = tf.cast(t, tf.float32)
        redundancy = tf.where(t > 0, max_sim, tf.zeros_like(max_sim))
        tail_frac = tail_count[:, tf.newaxis] / tf.maximum(n, 1.0)  # [B, 1]; share of S in the tail
        same_group_frac = tf.where(tail, tail_frac, tf.where(t > 0, 1.0 - tail_frac, 0.0))
        coverage = group_prob * (1.0 - same_group_frac)
        relevance_weight = 1.0 - mmr_lambda - xquad_lambda
        objective = relevance_weight * rel - mmr_lambda * redundancy + xquad_lambda * coverage
        objective = tf.where(valid, objective, _INELIGIBLE)
        objective = tf.where(chosen, -float("inf"), objective)
        pick = _first_argmax(objective)  # [B]
        picked_unit = tf.gather(unit, pick, batch_dims=1)  # [B, T]
        similarity = tf.einsum("bpt,bt->bp", unit, picked_unit)
        picked_tail = tf.cast(tf.gather(tail, pick, batch_dims=1), tf.float32)
        return (
            t + 1,
            tf.logical_or(chosen, tf.one_hot(pick, pool, on_value=True, off_value=False)),
            tf.maximum(max_sim, similarity),
            tail_count + picked_tail,
            picks.write(t, pick),
        )

    state = (
        tf.constant(0),
        tf.zeros_like(valid, dtype=tf.bool),
        tf.fill([batch, pool], -1.0),  # cosine >= -1, so the first pick sets the true maximum
        tf.zeros([batch]),
        tf.TensorArray(tf.int32, size=k, element_shape=[None]),
    )
    _, _, _, _, picks = tf.while_loop(lambda t, *_: t < k, step, state)
    positions = tf.transpose(picks.stack())  # [B, k]
    return positions, tf.gather(valid, positions, batch_dims=1)
