"""Loading a dataset folder for offline evaluation: the valid catalog and each user's positives.

Rows are read and parsed with `components.data_files`, exactly as the pipeline's ExampleGen reads them: bad
rows and interactions with items outside the valid catalog are dropped, the first row of a repeated item_id
wins, and a rated interaction is a positive when its rating is >= `rating_threshold` (implicit rows, with no
rating, are all positives); the others are kept apart as negatives (the pipeline is given them too: an item
rated only below the threshold was seen, it is not new). A user's positives are ordered by (time, line in the
file), as in ExampleGen, and so are their negatives.

Example:
    dataset = load_dataset("/work/shared/data/amazon-office")
    dataset.item_ids[:3], len(dataset.positives)
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter, defaultdict

from components import data_files
from components.data_files import Interaction, Item, Rejected
from components.example_gen_config import ExampleGenConfig

RATING_THRESHOLD = ExampleGenConfig.rating_threshold  # the pipeline's default
# How positives with equal times are ordered: file order, as ExampleGen does (the default), or by item id.
TIE_ORDERS = {
    "line": lambda p: (p.time, p.line),
    "item_id": lambda p: (p.time, p.item_id, p.line),
}
DEFAULT_TIE_ORDER = "line"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A catalog (file order) and every user's positives in (time, line) order.

    name: the folder's base name. dropped: counts of rows that are not positives, by reason (data_files
    reasons plus BELOW_RATING_THRESHOLD). negatives: every user's BELOW_RATING_THRESHOLD rows, in the same
    order (users without a positive included).
    """

    name: str
    items: tuple[Item, ...]
    positives: dict[str, tuple[Interaction, ...]]
    dropped: dict[str, int]
    negatives: dict[str, tuple[Interaction, ...]] = dataclasses.field(default_factory=dict)

    @property
    def item_ids(self) -> tuple[str, ...]:
        return tuple(item.item_id for item in self.items)


def load_dataset(
    data_dir: str, rating_threshold: float = RATING_THRESHOLD, time_ties: str = DEFAULT_TIE_ORDER
) -> Dataset:
    """Reads `data_dir` (any layout of `components.data_files`) into a `Dataset`."""
    if time_ties not in TIE_ORDERS:
        raise ValueError(f"unknown time_ties {time_ties!r}; expected one of {sorted(TIE_ORDERS)}")
    files = data_files.find_dataset_files(data_dir)
    dropped: Counter[str] = Counter()
    items = _read_items(files.items, dropped)
    known = {item.item_id for item in items}
    by_user: dict[str, list[Interaction]] = defaultdict(list)
    below: dict[str, list[Interaction]] = defaultdict(list)
    for row in data_files.read_raw_rows(files.interactions):
        parsed = data_files.parse_interaction(row)
        reason = _interaction_problem(parsed, known, rating_threshold)
        if reason:
            dropped[reason] += 1
        if reason == data_files.BELOW_RATING_THRESHOLD:
            below[parsed.user_id].append(parsed)
        elif not reason:
            by_user[parsed.user_id].append(parsed)
    order = TIE_ORDERS[time_ties]
    positives = {user: tuple(sorted(rows, key=order)) for user, rows in sorted(by_user.items())}
    negatives = {user: tuple(sorted(rows, key=order)) for user, rows in sorted(below.items())}
    name = os.path.basename(os.path.normpath(data_dir))
    return Dataset(name, tuple(items), positives, dict(sorted(dropped.items())), negatives)


def _read_items(path: str, dropped: Counter[str]) -> list[Item]:
    items, seen = [], set()
    for row in data_files.read_raw_rows(path):
        parsed = data_files.parse_item(row)
        if isinstance(parsed, Rejected):
            dropped[parsed.reason] += 1
        elif parsed.item_id in seen:
            dropped[data_files.DUPLICATE_ITEM_ID] += 1
        else:
            seen.add(parsed.item_id)
            items.append(parsed)
    return items


def _interaction_problem(parsed: Interaction | Rejected, known: set[str], threshold: float) -> str | None:
    """Why a parsed interaction is not a usable positive, or None when it is one."""
    if isinstance(parsed, Rejected):
        return parsed.reason
    if parsed.item_id not in known:
        return data_files.UNKNOWN_ITEM
    if parsed.rating is not None and parsed.rating < threshold:
        return data_files.BELOW_RATING_THRESHOLD
    return None
