"""Top-K lists from a score matrix, with each user's seen items excluded (or not: the history-kept protocol
of evaluation/split.py) and deterministic ties.

A list is a row of item indices, best first, padded with -1 when fewer than K items are rankable (a score of
-inf is not rankable).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

PAD = -1


def top_k(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None) -> np.ndarray:
    """[U, N] scores → [U, k] item indices by descending score; equal scores rank the higher index first.

    `exclude` ([U, N], nonzero = seen) items never appear; rows with fewer than k candidates are -1-padded.
    """
    scores = np.array(scores, dtype=np.float64)  # a copy: exclusions are written into it
    if exclude is not None:
        rows, cols = exclude.nonzero()
        scores[rows, cols] = -np.inf
    # Ties go to the later catalog item, a convention that reproduces the README reference figures
    # (MostPop, ItemKNN): a stable sort over the reversed columns, mapped back.
    num_items = scores.shape[1]
    order = num_items - 1 - np.argsort(-scores[:, ::-1], axis=1, kind="stable")[:, :k]
    ranked = np.where(np.isneginf(np.take_along_axis(scores, order, axis=1)), PAD, order)
    if ranked.shape[1] < k:
        ranked = np.pad(ranked, ((0, 0), (0, k - ranked.shape[1])), constant_values=PAD)
    return ranked.astype(np.int64)


def rank_in_batches(
    score_fn, num_users: int, k: int, exclude: sp.csr_matrix | None = None, batch_size: int = 1024
) -> np.ndarray:
    """Top-k lists for users 0..num_users-1, scoring `batch_size` users at a time.

    score_fn(lo, hi) → [hi - lo, N] scores of users lo..hi-1. exclude: [num_users, N] as in `top_k` (None:
    every item is rankable).
    """
    if exclude is not None and exclude.shape[0] != num_users:
        raise ValueError(f"exclude has {exclude.shape[0]} rows for {num_users} users")
    chunks = [
        top_k(
            score_fn(lo, min(lo + batch_size, num_users)),
            k,
            None if exclude is None else exclude[lo : lo + batch_size],
        )
        for lo in range(0, num_users, batch_size)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, k), np.int64)
