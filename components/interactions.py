"""Per-user logic of the example generator: splits, histories and sampled negatives (pure Python).

The Beam pipeline in `components.example_gen` groups positives per user and calls these functions, so
they are tested here on hand-computed cases without Beam.

Definitions:
  * A user's positives are ordered by (time, line in the file).
  * split_mode "last_per_user": the user's last positive -> eval, the rest -> train.
    split_mode "global_time": a positive -> eval when its time is after the cut, the `eval_time_quantile`
    of all positives' times (lower value, numpy method="lower"), else train.
  * history: the item ids of the user's positives strictly earlier in time (any split), the last
    `history_length` of them, oldest first. An eval example therefore sees every train item before it.
  * negatives: `num_negatives` distinct items from the sampler's pool (items with train positives),
    never one of the user's positive items (any split); uniform or proportional to train counts. The
    randomness comes from a hash of (seed, user, time, target item), so results never depend on the
    order in which Beam processes users.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence
from itertools import accumulate
from typing import NamedTuple

from components.data_files import Interaction

TRAIN, EVAL = "train", "eval"
SPLITS = (TRAIN, EVAL)
LAST_PER_USER, GLOBAL_TIME = "last_per_user", "global_time"
SPLIT_MODES = (LAST_PER_USER, GLOBAL_TIME)
UNIFORM, POPULARITY = "uniform", "popularity"
SAMPLING_MODES = (UNIFORM, POPULARITY)


class ExampleStub(NamedTuple):
    """An interaction example before item features are joined in (see trainer/features.py)."""

    split: str
    user_id: str
    item_id: str
    history: tuple[str, ...]
    timestamp: int
    label: float
    position: int = -1  # the slot it was displayed in, for examples from the service's logs; -1: none


def time_cut(times: Sequence[int], quantile: float) -> int | None:
    """The global split time: the `quantile` of `times`, lower value. None when `times` is empty.

    >>> time_cut(range(10), 0.9)  # sorted index floor(0.9 * 9) = 8
    8
    """
    if not times:
        return None
    ordered = sorted(times)
    return ordered[int(quantile * (len(ordered) - 1))]


def assign_splits(
    positives: Iterable[Interaction], split_mode: str, cut: int | None = None
) -> list[tuple[Interaction, str]]:
    """One user's positives in (time, line) order, each with its split."""
    ordered = sorted(positives, key=lambda p: (p.time, p.line))
    if split_mode == LAST_PER_USER:
        return [(p, EVAL if i == len(ordered) - 1 else TRAIN) for i, p in enumerate(ordered)]
    if split_mode == GLOBAL_TIME:
        if cut is None:
            raise ValueError("split_mode 'global_time' needs a time cut")
        return [(p, EVAL if p.time > cut else TRAIN) for p in ordered]
    raise ValueError(f"unknown split_mode {split_mode!r}; expected one of {SPLIT_MODES}")


def histories(ordered: Sequence[Interaction], history_length: int) -> list[tuple[str, ...]]:
    """For each positive of a time-ordered sequence, the last `history_length` items strictly before it."""
    times = [p.time for p in ordered]
    result = []
    for p in ordered:
        start = bisect.bisect_left(times, p.time)  # ties in time are not "before"
        result.append(tuple(q.item_id for q in ordered[max(0, start - history_length) : start]))
    return result


def stable_hash(*parts: object) -> int:
    """A 64-bit hash of the parts' str() that is the same in every process (unlike the salted hash())."""
    key = "\x1f".join(str(part) for part in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


def example_rng(seed: int, user_id: str, timestamp: int, item_id: str) -> random.Random:
    """The generator for the negatives of one positive."""
    return random.Random(stable_hash(seed, user_id, timestamp, item_id))


class NegativeSampler(NamedTuple):
    """Draws negatives from `items` (sorted), uniformly or by cumulative weights `cdf`."""

    items: tuple[str, ...]
    cdf: tuple[float, ...] | None = None

    @classmethod
    def from_counts(cls, train_counts: Mapping[str, int], mode: str) -> NegativeSampler:
        """Pool = items with train positives; weights 1 (uniform) or their train counts (popularity)."""
        if mode not in SAMPLING_MODES:
            raise ValueError(f"unknown negative_sampling {mode!r}; expected one of {SAMPLING_MODES}")
        items = tuple(sorted(train_counts))
        if mode == UNIFORM:
            return cls(items)
        return cls(items, tuple(accumulate(float(train_counts[i]) for i in items)))

    def sample(self, rng: random.Random, exclude: set[str], k: int) -> list[str]:
        """Up to `k` distinct items not in `exclude` (fewer only when the pool has fewer such items)."""
        chosen: list[str] = []
        for _ in range(10 * k + 20):  # rejection sampling: cheap when exclusions are a small share
            if len(chosen) == k:
                return chosen
            item = self._draw(rng)
            if item is not None and item not in exclude and item not in chosen:
                chosen.append(item)
        return chosen + self._draw_exactly(rng, exclude | set(chosen), k - len(chosen))

    def _draw(self, rng: random.Random) -> str | None:
        if not self.items:
            return None
        if self.cdf is None:
            return self.items[min(int(rng.random() * len(self.items)), len(self.items) - 1)]
        index = bisect.bisect_right(self.cdf, rng.random() * self.cdf[-1])
        return self.items[min(index, len(self.items) - 1)]

    def _draw_exactly(self, rng: random.Random, exclude: set[str], k: int) -> list[str]:
        """Fallback for heavy exclusion: sample from the explicit remaining pool, without replacement."""
        weights = self._weights()
        pool = [(item, w) for item, w in zip(self.items, weights, strict=True) if item not in exclude]
        chosen = []
        while pool and len(chosen) < k:
            target, total = rng.random() * sum(w for _, w in pool), 0.0
            index = len(pool) - 1
            for i, (_, w) in enumerate(pool):
                total += w
                if target < total:
                    index = i
                    break
            chosen.append(pool.pop(index)[0])
        return chosen

    def _weights(self) -> list[float]:
        if self.cdf is None:
            return [1.0] * len(self.items)
        return [b - a for a, b in zip((0.0, *self.cdf[:-1]), self.cdf, strict=True)]


def user_examples(
    user_id: str,
    sequence: Sequence[tuple[Interaction, str]],
    sampler: NegativeSampler,
    history_length: int,
    num_negatives: int,
    seed: int,
) -> list[ExampleStub]:
    """Every example of one user: per positive, the positive (label 1.0) then its negatives (label 0.0).

    `sequence` is `assign_splits`' output (time-ordered, with splits).
    """
    ordered = [p for p, _ in sequence]
    own_items = {p.item_id for p in ordered}
    stubs = []
    for (p, split), history in zip(sequence, histories(ordered, history_length), strict=True):
        stubs.append(ExampleStub(split, user_id, p.item_id, history, p.time, 1.0))
        rng = example_rng(seed, user_id, p.time, p.item_id)
        for negative in sampler.sample(rng, own_items, num_negatives):
            stubs.append(ExampleStub(split, user_id, negative, history, p.time, 0.0))
    return stubs
