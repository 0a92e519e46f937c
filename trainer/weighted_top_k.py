"""Each user's top k of many mixes Σ w_i · part_i (w_i ≥ 0) of the same parts, without a full sort per mix.

The blend choice scores hundreds of mixes of a few [U, N] parts (tower scores, item-item scores,
popularity); a full argpartition per mix costs U·N each, which grows with users × items. `pool` keeps each
user's `size` best items of every part (one argpartition per part); `top_k` ranks a mix over that pool
only. It equals the full top k whenever the pool's k-th score is at least what an item outside the pool
can reach — Σ w_i · (part i's size-th best value), Fagin's threshold bound — and scores the users where it
is not in full, so the lists are the full top k (up to ties) at U · parts · size per mix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

POOL_SIZE = 100  # each part's best items per user


@dataclasses.dataclass(frozen=True)
class Pool:
    parts: tuple[np.ndarray, ...]  # float, each [U, N] (per user) or [N] (the same for every user)
    rows: np.ndarray  # [U, P] candidate item rows, the union of every part's best
    values: tuple[np.ndarray, ...]  # per part [U, P]: its value at rows
    floors: tuple[np.ndarray, ...]  # per part [U]: the lowest of its own best values (-inf: it kept all)
    repeated: np.ndarray  # [U, P] bool: a row already in the pool (ranked once)
    size: int  # each part's best items per user: at least this many distinct rows


def pool(parts: Sequence[np.ndarray], size: int = POOL_SIZE) -> Pool:
    """The candidate pool of float `parts` (at least one [U, N]; -inf = never listed); `top_k` then serves
    any k ≤ size."""
    parts = tuple(np.asarray(p) for p in parts)
    num_users = next(len(p) for p in parts if p.ndim == 2)
    num_items = parts[0].shape[-1]
    size = min(size, num_items)
    tops, floors = [], []
    for part in parts:
        per_user = part if part.ndim == 2 else part[None, :]
        top = np.argpartition(-per_user, size - 1, axis=1)[:, :size]
        floor = np.take_along_axis(per_user, top, axis=1).min(axis=1)
        if size == num_items:
            floor = np.full_like(floor, -np.inf)
        tops.append(np.broadcast_to(top, (num_users, size)))
        floors.append(np.broadcast_to(floor, (num_users,)))
    rows = np.sort(np.concatenate(tops, axis=1), axis=1)
    repeated = np.zeros(rows.shape, bool)
    repeated[:, 1:] = rows[:, 1:] == rows[:, :-1]
    values = tuple(
        np.take_along_axis(part, rows, axis=1) if part.ndim == 2 else part[rows] for part in parts
    )
    return Pool(parts, rows, values, tuple(floors), repeated, size)


def top_k(candidates: Pool, weights: Sequence[float], k: int) -> np.ndarray:
    """[U, k] item rows of each user's k best Σ weights[i] · parts[i] (order within a list unspecified);
    k ≤ the pool's size."""
    if any(w < 0 for w in weights):
        raise ValueError(f"top_k: weights must be non-negative, got {list(weights)}")
    num_items = candidates.parts[0].shape[-1]
    k = min(k, num_items)
    if k > candidates.size:
        raise ValueError(f"top_k: k={k} is more than the pool's size ({candidates.size} per part)")
    scores = _mix(candidates.values, weights, candidates.rows.shape)
    scores[candidates.repeated] = -np.inf
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(scores, best, axis=1).min(axis=1)
    bound = _mix(candidates.floors, weights, kth.shape)
    recs = np.take_along_axis(candidates.rows, best, axis=1)
    # An item outside the pool could enter these users' lists, or their pool holds fewer than k items with a
    # finite score (a list padded from -inf entries could repeat a row): score them in full.
    redo = np.flatnonzero((kth < bound) | (kth == -np.inf))
    if redo.size:
        parts = [p[redo] if p.ndim == 2 else p for p in candidates.parts]
        full = _mix(parts, weights, (redo.size, num_items))
        recs[redo] = np.argpartition(-full, k - 1, axis=1)[:, :k]
    return recs


def _mix(values: Sequence[np.ndarray], weights: Sequence[float], shape: tuple[int, ...]) -> np.ndarray:
    """Σ w · v over the parts with w > 0 (a zero weight drops its part, -inf values included)."""
    total = np.zeros(shape, np.float32)
    for weight, value in zip(weights, values, strict=True):
        if weight:
            total += np.float32(weight) * value
    return total
