"""Item-item collaborative scores as a sparse table of each item's top-n neighbours (numpy / scipy).

The query tower learns from a handful of interactions per user; the item-item baselines (EASE, ItemKNN) get
more out of the same co-occurrences. The Trainer keeps each catalog item's `n` strongest item-item weights
and the serving graph adds, for user u with history items h (newest last),

    cf(u, j) = Σ_h recency^age(h) · W[h, j]       (age 0 = the newest item)

to the retrieval score, scaled per user so that the user's best cf item scores 1 (trainer/blend.py chooses
the method, the recency and the weight on the validation split).

  cosine   W = cosine similarity of the item columns of X (ItemKNN), zero diagonal, from the sparse XᵀX:
           memory and time grow with its non-zeros, not with N².
  ease:λ   W = EASE (Steck 2019): B = I − P · diagMat(1 / diag(P)), P = (XᵀX + λI)⁻¹, over the A items that
           have interactions. Dense [A, A] and O(A³), so only offered up to `EASE_MAX_ITEMS` items.

Inside the SavedModel the table costs N · n · 8 bytes (int32 row + float32 weight): 1M items × 50 = 400 MB.
Items without interactions (cold, new) are no one's neighbour; `text_fill` lends each of them the scores of
its nearest items by candidate vector, and the same weights give it a popularity estimate.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.linalg
import scipy.sparse as sp

PAD = -1
COSINE = "cosine"
EASE_PREFIX = "ease:"
EASE_LAMBDAS = (50.0, 200.0, 500.0)
# Largest item count for which EASE's dense [A, A] inverse is attempted: float64 with a few [A, A] copies,
# about 3.5 GB at 10k items (13 GB at 20k). Larger catalogs use cosine neighbours only.
EASE_MAX_ITEMS = 10_000
# Smallest divisor when scaling (a row or vector of zeros stays zero).
FLOOR = 1e-12


@dataclasses.dataclass(frozen=True)
class NeighbourTable:
    """rows[i]: catalog rows of item i's neighbours, strongest first, PAD-filled; weights[i]: W[i, j]."""

    rows: np.ndarray  # [N, n] int32
    weights: np.ndarray  # [N, n] float32, 0 at PAD


@dataclasses.dataclass(frozen=True)
class TextFill:
    """For each cold row, its `m` nearest items with interactions and weights summing to 1."""

    cold_rows: np.ndarray  # [C] int32
    rows: np.ndarray  # [C, m] int32
    weights: np.ndarray  # [C, m] float32


def without_targets(table: NeighbourTable, keep: int) -> NeighbourTable:
    """The table without the neighbours at rows `keep` and later (PAD, weight 0, moved after the remaining
    neighbours, whose order is kept). Every row stays: the later ones are still history sources."""
    rows, weights = table.rows, table.weights
    dropped = (rows >= keep) | (rows == PAD)
    order = np.argsort(dropped, axis=1, kind="stable")
    rows = np.where(dropped, PAD, rows)
    weights = np.where(dropped, 0.0, weights).astype(np.float32)
    return NeighbourTable(
        np.take_along_axis(rows, order, axis=1).astype(np.int32), np.take_along_axis(weights, order, axis=1)
    )


def interaction_matrix(users: np.ndarray, items: np.ndarray, num_items: int) -> sp.csr_matrix:
    """Binary [U, N] user × item matrix from parallel arrays of user keys (any values) and item rows."""
    users, items = np.asarray(users), np.asarray(items, np.int64)
    if len(items) == 0:
        return sp.csr_matrix((0, num_items), dtype=np.float64)
    _, user_rows = np.unique(users, return_inverse=True)
    x = sp.csr_matrix(
        (np.ones(len(items)), (user_rows.reshape(-1), items)), shape=(int(user_rows.max()) + 1, num_items)
    )
    x.sum_duplicates()
    x.data[:] = 1.0
    return x


def cosine_similarity(x: sp.csr_matrix) -> sp.csr_matrix:
    """[N, N] sparse cosine similarity between item columns of `x`, diagonal 0 (ItemKNN)."""
    co = (x.T @ x).tocsr().astype(np.float64)
    norms = np.sqrt(co.diagonal())
    inverse = sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0))
    similarity = (inverse @ co @ inverse).tocsr()
    similarity.setdiag(0.0)
    similarity.eliminate_zeros()
    return similarity


def item_knn_similarity(x: sp.csr_matrix) -> np.ndarray:
    """`cosine_similarity` as a dense [N, N] array (the ItemKNN baseline)."""
    return cosine_similarity(x).toarray()


def ease_weights(x: sp.csr_matrix, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(active item indices [A], EASE weights [A, A] among them with a zero diagonal)."""
    active = np.flatnonzero(np.asarray(x.sum(axis=0)).reshape(-1) > 0)
    sub = x[:, active]
    gram = np.asarray((sub.T @ sub).todense(), np.float64)
    gram[np.diag_indices_from(gram)] += lam
    p = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)
    weights = -p / np.diag(p)[None, :]
    np.fill_diagonal(weights, 0.0)
    return active, weights


def methods(num_active_items: int) -> tuple[str, ...]:
    """The item-item methods worth trying on a catalog with this many items that have interactions."""
    if num_active_items > EASE_MAX_ITEMS:
        return (COSINE,)
    return (COSINE, *(f"{EASE_PREFIX}{lam:g}" for lam in EASE_LAMBDAS))


def neighbour_table(x: sp.csr_matrix, method: str, n: int) -> NeighbourTable:
    """The top-`n` positive weights of every item's row of W (`method`: COSINE or "ease:<λ>")."""
    num_items = x.shape[1]
    if method == COSINE:
        return _sparse_top(cosine_similarity(x), n)
    if method.startswith(EASE_PREFIX):
        active, weights = ease_weights(x, float(method[len(EASE_PREFIX) :]))
        rows, values = _dense_top(weights, n)
        table = _empty_table(num_items, rows.shape[1])
        table.rows[active] = np.where(rows >= 0, active[np.maximum(rows, 0)], PAD)
        table.weights[active] = values
        return table
    raise ValueError(f"unknown item-item method {method!r}; expected {COSINE!r} or '{EASE_PREFIX}<lambda>'")


def _empty_table(num_items: int, n: int) -> NeighbourTable:
    return NeighbourTable(np.full([num_items, n], PAD, np.int32), np.zeros([num_items, n], np.float32))


def _top_columns(matrix: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a dense [R, A]: the columns of its n largest values and those values, largest first."""
    n = max(min(n, matrix.shape[1]), 1)
    columns = np.argpartition(-matrix, n - 1, axis=1)[:, :n]
    values = np.take_along_axis(matrix, columns, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(columns, order, 1), np.take_along_axis(values, order, 1)


def _dense_top(weights: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a dense [A, A]: the columns of its n largest positive values, PAD past them."""
    columns, values = _top_columns(weights, n)
    keep = values > 0
    return np.where(keep, columns, PAD).astype(np.int32), np.where(keep, values, 0).astype(np.float32)


def _sparse_top(weights: sp.csr_matrix, n: int) -> NeighbourTable:
    """Per row of a sparse [N, N]: its n largest positive values (a row at a time: no dense N² copy)."""
    table = _empty_table(weights.shape[0], max(n, 1))
    for i in range(weights.shape[0]):
        lo, hi = weights.indptr[i], weights.indptr[i + 1]
        columns, values = weights.indices[lo:hi], weights.data[lo:hi]
        positive = values > 0
        columns, values = columns[positive], values[positive]
        best = np.argsort(-values, kind="stable")[:n]
        table.rows[i, : len(best)] = columns[best]
        table.weights[i, : len(best)] = values[best]
    return table


def position_weights(length: int, recency: float) -> np.ndarray:
    """[length] recency^age for a left-padded, newest-last history (the last slot has age 0)."""
    return (recency ** np.arange(length - 1, -1, -1, dtype=np.float64)).astype(np.float32)


def cf_scores(
    table: NeighbourTable, history_rows: np.ndarray, recency: float, num_items: int | None = None
) -> np.ndarray:
    """history_rows [U, H] (table rows, PAD = none; newest last) → raw cf scores [U, num_items] float32.
    num_items: the candidates, the table's first rows (default all; later rows are history sources only)."""
    history_rows = np.asarray(history_rows, np.int64)
    num_users, length = history_rows.shape
    num_items = table.rows.shape[0] if num_items is None else num_items
    source = np.maximum(history_rows, 0)
    slot_weight = position_weights(length, recency)[None, :] * (history_rows >= 0)  # [U, H]
    targets = table.rows[source]  # [U, H, n]
    weights = table.weights[source] * slot_weight[..., None]
    user = np.broadcast_to(np.arange(num_users)[:, None, None], targets.shape)
    valid = targets >= 0
    flat = user[valid] * num_items + targets[valid]
    scores = np.bincount(flat, weights=weights[valid], minlength=num_users * num_items)
    return scores.reshape(num_users, num_items).astype(np.float32)


def scale_per_user(scores: np.ndarray) -> np.ndarray:
    """Each row divided by its maximum (rows with no positive score stay as they are)."""
    top = np.max(scores, axis=1, keepdims=True) if scores.shape[1] else np.zeros([len(scores), 1])
    return (scores / np.maximum(top, FLOOR)).astype(np.float32)


def text_fill(
    vectors: np.ndarray,
    has_interactions: np.ndarray,
    m: int,
    chunk: int = 4096,
    seen: np.ndarray | None = None,
) -> TextFill:
    """Each item the data has not seen → its `m` most cosine-similar items with interactions.

    Weights are the positive cosines normalised to sum 1 (uniform when none is positive), so a cold item's
    filled score is a weighted mean of its neighbours' scores.

    seen: [N] bool, the items the data knows (default: `has_interactions`), e.g. also those only rated
    below the positive threshold: seen and not liked, so they are not filled (their scores stay their own).
    """
    vectors = np.asarray(vectors, np.float32)
    has_interactions = np.asarray(has_interactions, bool)
    seen = has_interactions if seen is None else np.asarray(seen, bool) | has_interactions
    warm = np.flatnonzero(has_interactions)
    cold = np.flatnonzero(~seen).astype(np.int32)
    m = max(min(m, len(warm)), 0)
    if len(cold) == 0 or m == 0:
        return TextFill(np.zeros([0], np.int32), np.zeros([0, m], np.int32), np.zeros([0, m], np.float32))
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), FLOOR)
    rows, weights = [], []
    for lo in range(0, len(cold), chunk):
        similarity = unit[cold[lo : lo + chunk]] @ unit[warm].T  # [c, W]
        columns, values = _top_columns(similarity, m)
        positive = np.maximum(values, 0.0)
        totals = positive.sum(axis=1, keepdims=True)
        uniform = np.full_like(positive, 1.0 / m)
        weights.append(np.where(totals > 0, positive / np.maximum(totals, FLOOR), uniform))
        rows.append(warm[columns])
    return TextFill(cold, np.concatenate(rows).astype(np.int32), np.concatenate(weights).astype(np.float32))


def apply_fill(values: np.ndarray, fill: TextFill) -> np.ndarray:
    """values [..., N] with each cold column replaced by the weighted mean of its fill rows' columns."""
    out = np.array(values, copy=True)
    if len(fill.cold_rows):
        out[..., fill.cold_rows] = np.sum(values[..., fill.rows] * fill.weights, axis=-1)
    return out
