"""Offline top-K metrics as pure numpy functions; the one definition of each metric in the project.

The TFMA metrics the Evaluator gates on (evaluation/tfma_metrics.py: Recall@K, APLT@K, TailCoverage@K over
the served `top_k_*` lists) compute their per-list values with `hits` and `tail_shares` from here.

Inputs: `recs` [U, K], each row a user's list best first: item indices padded with -1 (`PAD`), or served
item ids padded with "" (`SERVED_PAD`); an empty list is all padding. `targets` [U], each user's single
held-out item (leave-last-out). Item-level arrays (`is_tail`, `counts`, `vectors`) are indexed by item. A
metric over no users (or no relevant items) is NaN, which the report writes as null.

Definitions (K = the lists' width; a list's length = its non-padding items, at most K):
  recall        share of users whose target is in their list (= HitRate with one target per user).
  ndcg          mean of 1 / log2(rank + 1) for a target at 1-based rank ≤ K, else 0 (ideal DCG = 1).
  tail_recall   recall over users whose target is a tail item.   cold_recall: ... a cold item.
  aplt          Average Percentage of Long Tail items (Abdollahpouri et al. 2019): mean over users of
                (tail items in the list / the list's length); padding is not counted, an empty list
                counts as 0. A list shorter than K because the catalog ran out is not penalised.
  tail_coverage share of tail items shown to at least one user.   coverage: same over all items.
  gini          Gini index of the exposure counts of every item (zeros included): 0 = even, → 1 = one item.
  novelty       mean over lists of the mean −log2 p(i), p(i) = count(i) / total fit interactions. An item
                with count 0 is treated as seen once, p = 1 / total: the finite maximum, shared with
                once-seen items (the log of 0 is undefined). Empty lists are skipped.
  ild           mean over lists of 1 − mean pairwise cosine of the items' vectors (intra-list diversity);
                a zero vector has cosine 0 with everything; lists with fewer than 2 items are skipped.
"""

from __future__ import annotations

import numpy as np

PAD = -1  # padding of a list of item indices
SERVED_PAD = b""  # padding of a served list of item ids (trainer.features.ITEM_IDS, TOP_K_IDS)


def valid_slots(recs: np.ndarray) -> np.ndarray:
    """[U, K] bool: True where a slot holds an item (not `PAD` / `SERVED_PAD`)."""
    recs = np.asarray(recs)
    if recs.dtype.kind in "iu":
        return recs != PAD
    return np.vectorize(len, otypes=[np.int64])(recs) > 0  # bytes or str ids: "" is padding


def target_ranks(recs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """[U] 1-based rank of each user's target in their list, 0 when absent."""
    recs, targets = np.asarray(recs), np.asarray(targets)
    hit = (recs == targets[:, None]) & valid_slots(recs)
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)


def hits(recs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """[U] bool: the user's target is in their list (what recall averages)."""
    return target_ranks(recs, targets) > 0


def tail_shares(slot_is_tail: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """[U] each list's APLT: tail items in the list / the list's length (padding not counted; empty: 0).

    Args:
      slot_is_tail: [U, K] bool, the item in each slot is a tail item (ignored where not `valid`).
      valid: [U, K] bool, the slot holds an item (`valid_slots`).
    """
    valid = np.asarray(valid, bool)
    tail = (np.asarray(slot_is_tail, bool) & valid).sum(axis=1)
    lengths = valid.sum(axis=1)
    return np.divide(tail, lengths, out=np.zeros(len(lengths)), where=lengths > 0)


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def recall(recs: np.ndarray, targets: np.ndarray, users: np.ndarray | None = None) -> float:
    """Share of the selected users (bool mask `users`, default all) whose target is in their list."""
    found = hits(recs, targets)
    return _mean(found if users is None else found[np.asarray(users, bool)])


def ndcg(recs: np.ndarray, targets: np.ndarray) -> float:
    ranks = target_ranks(recs, targets)
    gains = np.where(ranks > 0, 1.0 / np.log2(np.maximum(ranks, 1) + 1.0), 0.0)
    return _mean(gains)


def tail_recall(recs: np.ndarray, targets: np.ndarray, is_tail: np.ndarray) -> float:
    return recall(recs, targets, np.asarray(is_tail, bool)[np.asarray(targets)])


def cold_recall(recs: np.ndarray, targets: np.ndarray, is_cold: np.ndarray) -> float:
    return recall(recs, targets, np.asarray(is_cold, bool)[np.asarray(targets)])


def aplt(recs: np.ndarray, is_tail: np.ndarray) -> float:
    valid = valid_slots(recs)
    return _mean(tail_shares(np.asarray(is_tail, bool)[np.where(valid, recs, 0)], valid))


def exposure(recs: np.ndarray, num_items: int) -> np.ndarray:
    """[N] how many lists show each item."""
    recs = np.asarray(recs)
    return np.bincount(recs[valid_slots(recs)], minlength=num_items)


def coverage(recs: np.ndarray, num_items: int) -> float:
    return float(np.mean(exposure(recs, num_items) > 0)) if num_items else float("nan")


def tail_coverage(recs: np.ndarray, is_tail: np.ndarray) -> float:
    is_tail = np.asarray(is_tail, bool)
    shown = exposure(recs, len(is_tail)) > 0
    return _mean(shown[is_tail])


def gini(counts: np.ndarray) -> float:
    """Gini index of non-negative counts: Σ (2i − n − 1) x_(i) / (n Σ x), x ascending, i = 1..n."""
    x = np.sort(np.asarray(counts, np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return float("nan")
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * x) / (n * total))


def novelty(recs: np.ndarray, counts: np.ndarray) -> float:
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if total == 0:
        return float("nan")
    information = -np.log2(np.maximum(counts, 1.0) / total)
    valid = valid_slots(recs)
    per_item = np.where(valid, information[np.where(valid, recs, 0)], 0.0)
    lengths = valid.sum(axis=1)
    return _mean(per_item.sum(axis=1)[lengths > 0] / lengths[lengths > 0])


def ild(recs: np.ndarray, vectors: np.ndarray) -> float:
    vectors = np.asarray(vectors, np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    valid = valid_slots(recs)
    listed = unit[np.where(valid, recs, 0)] * valid[..., None]  # [U, K, D], padding = zero vectors
    summed = listed.sum(axis=1)
    # Σ over ordered pairs i ≠ j of cos = |Σ v|² − Σ |v|² (unit rows, or zero rows that add nothing).
    pair_sum = np.einsum("ud,ud->u", summed, summed) - np.einsum("ukd,ukd->u", listed, listed)
    lengths = valid.sum(axis=1)
    enough = lengths >= 2
    pairs = lengths[enough] * (lengths[enough] - 1)
    return _mean(1.0 - pair_sum[enough] / pairs)


def all_metrics(
    recs: np.ndarray,
    targets: np.ndarray,
    counts: np.ndarray,
    is_tail: np.ndarray,
    vectors: np.ndarray | None,
    k: int,
) -> dict[str, float]:
    """Every metric on the first k columns of `recs`, keyed "<name>@k" (ild NaN without vectors)."""
    recs = np.asarray(recs)[:, :k]
    counts = np.asarray(counts)
    values = {
        "recall": recall(recs, targets),
        "ndcg": ndcg(recs, targets),
        "tail_recall": tail_recall(recs, targets, is_tail),
        "aplt": aplt(recs, is_tail),
        "tail_coverage": tail_coverage(recs, is_tail),
        "coverage": coverage(recs, len(counts)),
        "gini": gini(exposure(recs, len(counts))),
        "novelty": novelty(recs, counts),
        "ild": ild(recs, vectors) if vectors is not None else float("nan"),
        "cold_recall": cold_recall(recs, targets, counts == 0),
        "warm_recall": recall(recs, targets, counts[np.asarray(targets)] > 0),
    }
    return {f"{name}@{k}": value for name, value in values.items()}
