"""Evaluation protocols: leave-last-out per user, optionally with a seeded share of items made cold.

"standard": each user's last positive is the test target, the one before is the validation item and the
rest is train. Like the README reference figures, every system fits on train + validation (the "fit" data:
everything before the test target) and, history excluded (below), never recommends the user's fit items. A
user with one positive has a test target and an empty history; with two, the validation item is the whole
history.

"cold_items": as "standard", then a seeded `COLD_ITEM_SHARE` of the items that have fit interactions lose
all of them (they vanish from users' histories and from the fit data); their test targets stay.

A rated dataset's negatives (rated below the threshold) that come before the user's test target, in (time,
line) order (whatever `time_ties` ordered the positives by), are fit data too (every negative of a user
without a positive): a pipeline reads them to tell an item seen and not liked from a new one. A made-cold
item loses its negatives as well, as a new item has none.

Either protocol runs under one of two history protocols (harness --history): "excluded" (the default, as
above) never recommends a user's fit items; "kept" ranks the whole catalog, fit items included, as RecBole's
full ranking does (the protocol the text-based sequential recommenders UniSRec, VQ-Rec and Recformer report).
Figures under the two are not comparable.

An item is *cold* when it has no fit interaction (made cold, or never interacted with before a test
target), *tail* when it is outside the head: the most popular items that together first reach `HEAD_SHARE`
of fit interactions, as in `trainer.preprocessing.head_size`; among equal counts the later catalog item ranks
first (the tie convention of `evaluation.ranking`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from components.data_files import Interaction
from evaluation.data import Dataset
from trainer import features

STANDARD, COLD_ITEMS = "standard", "cold_items"
PROTOCOLS = (STANDARD, COLD_ITEMS)
HISTORY_EXCLUDED, HISTORY_KEPT = "excluded", "kept"
HISTORY_PROTOCOLS = (HISTORY_EXCLUDED, HISTORY_KEPT)
COLD_ITEM_SHARE = 0.1
HEAD_SHARE = features.HEAD_SHARE


@dataclasses.dataclass(frozen=True)
class Split:
    """One protocol's split of a dataset; users sorted by id, items in catalog order.

    history[u]: item indices of user u's fit positives, oldest first. test[u]: the test target's index.
    validation[u]: the validation item's index, -1 when the user has a single positive (or it was made
    cold). fit_rows[user_id]: the fit positives themselves (what a training pipeline may see).
    made_cold: [N] bool, the items this protocol stripped of their fit interactions.
    fit_negatives[user_id]: the fit negatives (module docstring), every user who has any.
    """

    protocol: str
    item_ids: tuple[str, ...]
    users: tuple[str, ...]
    history: tuple[np.ndarray, ...]
    test: np.ndarray
    validation: np.ndarray
    fit_rows: dict[str, tuple[Interaction, ...]]
    made_cold: np.ndarray
    fit_negatives: dict[str, tuple[Interaction, ...]] = dataclasses.field(default_factory=dict)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def counts(self) -> np.ndarray:
        """[N] fit interactions per item."""
        flat = np.concatenate([*self.history, np.zeros(0, np.int64)])
        return np.bincount(flat, minlength=self.num_items)

    @property
    def is_cold(self) -> np.ndarray:
        return self.counts == 0

    @property
    def is_tail(self) -> np.ndarray:
        return tail_items(self.counts, HEAD_SHARE)

    def fit_matrix(self) -> sp.csr_matrix:
        """[U, N] binary user × item matrix of the fit data (repeated interactions count once)."""
        rows = np.repeat(np.arange(len(self.users)), [len(h) for h in self.history])
        cols = np.concatenate([*self.history, np.zeros(0, np.int64)])
        matrix = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(self.users), self.num_items))
        matrix.data[:] = 1.0  # duplicates were summed
        return matrix

    def last_item_matrix(self) -> sp.csr_matrix:
        """[U, N] binary: each user's most recent fit positive (an empty row for a user without one)."""
        users = [u for u, h in enumerate(self.history) if len(h)]
        cols = [self.history[u][-1] for u in users]
        shape = (len(self.users), self.num_items)
        return sp.csr_matrix((np.ones(len(users)), (users, cols)), shape=shape)


def tail_items(counts: np.ndarray, head_share: float = HEAD_SHARE) -> np.ndarray:
    """[N] bool: True outside the head (top items by count, ties higher index first, first reaching share).

    >>> tail_items(np.array([1, 4, 2, 3])).tolist()  # 4 + 3 = 70% < 80%; 4 + 3 + 2 = 90%
    [True, False, False, False]
    """
    counts = np.asarray(counts, np.float64)
    order = np.lexsort((-np.arange(len(counts)), -counts))
    before = np.cumsum(counts[order]) - counts[order]  # exclusive cumulative sum
    head_size = int(np.sum(before < head_share * counts.sum()))
    tail = np.ones(len(counts), bool)
    tail[order[:head_size]] = False
    return tail


def leave_last_out(
    dataset: Dataset, protocol: str = STANDARD, seed: int = 0, cold_share: float = COLD_ITEM_SHARE
) -> Split:
    """Splits `dataset` under `protocol`; the cold items are drawn with numpy's default_rng(seed)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    index = {item_id: i for i, item_id in enumerate(dataset.item_ids)}
    users = tuple(sorted(dataset.positives))
    fit_rows = {u: dataset.positives[u][:-1] for u in users}
    made_cold = np.zeros(len(index), bool)
    if protocol == COLD_ITEMS:
        made_cold = _draw_cold(fit_rows, index, seed, cold_share)
        fit_rows = {
            u: tuple(p for p in rows if not made_cold[index[p.item_id]]) for u, rows in fit_rows.items()
        }
    history = tuple(np.array([index[p.item_id] for p in fit_rows[u]], np.int64) for u in users)
    test = np.array([index[dataset.positives[u][-1].item_id] for u in users], np.int64)
    validation = np.array([_validation(dataset.positives[u], index, made_cold) for u in users], np.int64)
    negatives = _fit_negatives(dataset, made_cold, index)
    return Split(protocol, dataset.item_ids, users, history, test, validation, fit_rows, made_cold, negatives)


def _fit_negatives(
    dataset: Dataset, made_cold: np.ndarray, index: dict[str, int]
) -> dict[str, tuple[Interaction, ...]]:
    """Each user's negatives before their test target ((time, line) order), made-cold items left out."""
    kept = {}
    for user, rows in dataset.negatives.items():
        target = dataset.positives[user][-1] if dataset.positives.get(user) else None
        before = [
            n
            for n in rows
            if not made_cold[index[n.item_id]]
            and (target is None or (n.time, n.line) < (target.time, target.line))
        ]
        if before:
            kept[user] = tuple(before)
    return kept


def _validation(positives: tuple[Interaction, ...], index: dict[str, int], made_cold: np.ndarray) -> int:
    if len(positives) < 2 or made_cold[index[positives[-2].item_id]]:
        return -1
    return index[positives[-2].item_id]


def _draw_cold(
    fit_rows: dict[str, tuple[Interaction, ...]], index: dict[str, int], seed: int, share: float
) -> np.ndarray:
    """[N] bool: round(share × items with fit interactions) of them, drawn without replacement."""
    candidates = np.array(sorted({index[p.item_id] for rows in fit_rows.values() for p in rows}), np.int64)
    chosen = np.random.default_rng(seed).choice(
        candidates, int(round(share * len(candidates))), replace=False
    )
    made_cold = np.zeros(len(index), bool)
    made_cold[chosen] = True
    return made_cold
