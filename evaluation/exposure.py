"""Exposure of served lists and the shop's feedback on them, from records in the log schema.

One function, `summarize`, computes what the service shows live (`GET /v1/exposure`, `/metrics`) over its
sliding window and what the report computes over log spans; the formulas are evaluation/metrics.py's, the
ones the offline harness reports, so an APLT online means what it means offline.

Inputs are records as serving/event_log.py writes them: served {request_id, ts, item_ids, is_tail, is_new}
(flags per slot, as the answering model version served them) and events {request_id, item_id, type, ts}.

  requests        served lists.
  aplt            mean over lists of the tail share of the list (metrics.tail_shares).
  coverage        share of the catalog's items in at least one served list; tail_coverage: of its tail items.
  gini            Gini index of served slots per catalog item, zeros included (metrics.gini).
  impressions     displayed slots: (request_id, item_id) pairs of a served list with an impression event;
                  with `served_as_shown`, every served slot (for shops that send no impression events).
  clicks          displayed slots with a click event (a slot clicked twice counts once).
  ctr             clicks / impressions; ctr_head, ctr_tail, ctr_new: over head / tail / new slots (as served).
  new_items       catalog items flagged new; new_items_shown: of them, displayed at least once.
  time_to_first_impression_s   median over new items displayed of (first display − the item's arrival),
                  counting only items that arrived at or after `since` (the start of a live window: an
                  earlier item's first display may lie before it).
Events that join no served slot (an unknown request id, or an item not in that list) are counted in
`unjoined_events` and change no rate. A rate over nothing is None (JSON null).

The report (`make report`, evaluation/exposure_report.py) takes the same join per slot (`slot_outcomes`: when
each served slot was first displayed and first clicked) and the same new-item waits (`new_item_waits`, also to
the first click) for its per-item, brand and category tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from evaluation import metrics
from serving.event_log import EVENT_TYPES, MODEL_VERSION, REQUEST_ID, TS, TYPE
from trainer import features

IMPRESSION, CLICK = EVENT_TYPES[:2]
Slot = tuple[str, str]  # (request_id, item_id)
# slot_outcomes' columns besides the log's own names: the served record a slot belongs to (its position in
# `served`), its first display and its first click-through (NaN: none).
LIST_INDEX, SHOWN_TS, CLICK_TS = "list_index", "shown_ts", "click_ts"


@dataclass(frozen=True)
class Catalog:
    """The items exposure is measured against (row i = one item)."""

    item_ids: tuple[str, ...]
    is_tail: np.ndarray  # [N] bool
    is_new: np.ndarray  # [N] bool
    arrival_ts: np.ndarray  # [N] float, when each new item entered the served catalog (NaN: unknown)

    @classmethod
    def from_items(cls, items: Mapping[str, tuple[bool, bool]], arrivals: Mapping[str, float]) -> Catalog:
        """`items`: item id → (is_tail, is_new); `arrivals`: item id → arrival time of new items."""
        ids = tuple(items)
        flags = np.array([items[i] for i in ids], bool).reshape(-1, 2)
        arrival = np.array([arrivals.get(i, np.nan) for i in ids], np.float64)
        return cls(ids, flags[:, 0], flags[:, 1], arrival)


@dataclass
class _Slots:
    """Every served slot as parallel lists."""

    keys: list[Slot]
    ts: list[float]
    is_tail: list[bool]
    is_new: list[bool]
    lists: list[int]  # the served record of each slot (its position in `served`)


def _slots(served: Iterable[Mapping]) -> tuple[_Slots, list[list[bool]], list[list[str]]]:
    slots = _Slots([], [], [], [], [])
    lists_tail, lists_ids = [], []
    for position, record in enumerate(served):
        ids = [i for i in record[features.ITEM_IDS] if i]  # "" = padding
        tails = [bool(t) for t in record[features.IS_TAIL][: len(ids)]]
        news = [bool(n) for n in record[features.IS_NEW][: len(ids)]]
        lists_tail.append(tails)
        lists_ids.append(ids)
        for item, tail, new in zip(ids, tails, news, strict=True):
            slots.keys.append((record[REQUEST_ID], item))
            slots.ts.append(float(record[TS]))
            slots.is_tail.append(tail)
            slots.is_new.append(new)
            slots.lists.append(position)
    return slots, lists_tail, lists_ids


def _join(
    slots: _Slots, events: Iterable[Mapping], served_as_shown: bool
) -> tuple[dict[int, float], dict[int, float], int]:
    """(slot → first display, displayed slot → first click, events joining no slot)."""
    index = {key: i for i, key in enumerate(slots.keys)}  # a slot served twice keeps its last record
    shown_at: dict[int, float] = {} if not served_as_shown else {i: slots.ts[i] for i in index.values()}
    clicked_at: dict[int, float] = {}
    unjoined = 0
    for event in events:
        i = index.get((event[REQUEST_ID], event[features.ITEM_ID]))
        if i is None:
            unjoined += 1
        elif event[TYPE] == IMPRESSION and not served_as_shown:
            shown_at[i] = min(shown_at.get(i, np.inf), float(event[TS]))
        elif event[TYPE] == CLICK:
            clicked_at[i] = min(clicked_at.get(i, np.inf), float(event[TS]))
    # a click on a slot never displayed is not a click-through
    return shown_at, {i: ts for i, ts in clicked_at.items() if i in shown_at}, unjoined


@dataclass(frozen=True)
class Outcomes:
    """Every served slot, in served order, and what the shop reported on it: the join `summarize` rates."""

    # LIST_INDEX, REQUEST_ID, ITEM_ID, TS, IS_TAIL, IS_NEW (as served), SHOWN_TS, CLICK_TS: one value per slot
    columns: dict[str, list]
    unjoined_events: int


def slot_outcomes(
    served: Iterable[Mapping], events: Iterable[Mapping], served_as_shown: bool = False
) -> Outcomes:
    """Per served slot: when it was first displayed and first clicked (NaN: never), as `summarize` counts."""
    slots, _, _ = _slots(served)
    shown_at, clicked_at, unjoined = _join(slots, events, served_as_shown)
    indices = range(len(slots.keys))
    columns = {
        LIST_INDEX: slots.lists,
        REQUEST_ID: [request for request, _ in slots.keys],
        features.ITEM_ID: [item for _, item in slots.keys],
        TS: slots.ts,
        features.IS_TAIL: slots.is_tail,
        features.IS_NEW: slots.is_new,
        SHOWN_TS: [shown_at.get(i, np.nan) for i in indices],
        CLICK_TS: [clicked_at.get(i, np.nan) for i in indices],
    }
    return Outcomes(columns, unjoined)


def new_item_waits(first: Mapping[str, float], catalog: Catalog, since: float = -np.inf) -> dict[str, float]:
    """New item id → seconds from its arrival to `first[item]` (its first display, or first click), never
    negative, for the catalog's new items in `first` that arrived at or after `since` (an unknown arrival,
    NaN, never counts)."""
    return {
        item: max(first[item] - arrival, 0.0)
        for item, is_new, arrival in zip(catalog.item_ids, catalog.is_new, catalog.arrival_ts, strict=True)
        if is_new and item in first and arrival >= since  # NaN compares False
    }


def arrivals(served: Iterable[Mapping], new_items: Mapping[int, Iterable[str]]) -> dict[str, float]:
    """item id → when it arrived: the first served list of the first model version listing it as new.

    `new_items`: model version → its new items (catalog metadata `is_new`), for the logs' long view (the
    live window uses when the service first saw the version instead)."""
    first_served: dict[int, float] = {}
    for record in served:
        version = int(record[MODEL_VERSION])
        first_served[version] = min(first_served.get(version, np.inf), float(record[TS]))
    result: dict[str, float] = {}
    for version, ts in sorted(first_served.items(), key=lambda kv: kv[1]):
        for item in new_items.get(version, ()):
            result.setdefault(item, ts)
    return result


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _nan_to_none(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def summarize(
    served: Iterable[Mapping],
    events: Iterable[Mapping],
    catalog: Catalog,
    served_as_shown: bool = False,
    since: float = -np.inf,
) -> dict:
    """The exposure summary (module docstring) of `served` lists and `events`."""
    slots, lists_tail, lists_ids = _slots(served)
    shown_at, clicked_at, unjoined = _join(slots, events, served_as_shown)
    clicked = set(clicked_at)
    return {
        "requests": len(lists_ids),
        **_list_metrics(lists_tail, lists_ids, catalog),
        **_click_metrics(slots, shown_at, clicked),
        **_new_item_metrics(slots, shown_at, catalog, since),
        "unjoined_events": unjoined,
    }


def _list_metrics(lists_tail: list[list[bool]], lists_ids: list[list[str]], catalog: Catalog) -> dict:
    width = max((len(ids) for ids in lists_ids), default=0)
    valid = np.zeros([len(lists_ids), width], bool)
    slot_tail = np.zeros_like(valid)
    rows = np.full([len(lists_ids), width], metrics.PAD, np.int64)
    row_of = {item: i for i, item in enumerate(catalog.item_ids)}
    for u, (ids, tails) in enumerate(zip(lists_ids, lists_tail, strict=True)):
        valid[u, : len(ids)] = True
        slot_tail[u, : len(ids)] = tails
        rows[u, : len(ids)] = [row_of.get(item, metrics.PAD) for item in ids]  # unknown to this catalog
    n = len(catalog.item_ids)
    shares = metrics.tail_shares(slot_tail, valid)
    return {
        "aplt": float(shares.mean()) if len(shares) else None,
        "coverage": _nan_to_none(metrics.coverage(rows, n)),
        "tail_coverage": _nan_to_none(metrics.tail_coverage(rows, catalog.is_tail)),
        "gini": _nan_to_none(metrics.gini(metrics.exposure(rows, n))),
    }


def _click_metrics(slots: _Slots, shown_at: Mapping[int, float], clicked: set[int]) -> dict:
    groups = {
        "ctr": lambda i: True,
        "ctr_head": lambda i: not slots.is_tail[i],
        "ctr_tail": lambda i: slots.is_tail[i],
        "ctr_new": lambda i: slots.is_new[i],
    }
    doc: dict = {"impressions": len(shown_at), "clicks": len(clicked)}
    for name, member in groups.items():
        shown = [i for i in shown_at if member(i)]
        doc[name] = _rate(sum(i in clicked for i in shown), len(shown))
    return doc


def _new_item_metrics(slots: _Slots, shown_at: Mapping[int, float], catalog: Catalog, since: float) -> dict:
    first_shown: dict[str, float] = {}
    for i, ts in shown_at.items():
        item = slots.keys[i][1]
        first_shown[item] = min(first_shown.get(item, np.inf), ts)
    new = [item for item, is_new in zip(catalog.item_ids, catalog.is_new, strict=True) if is_new]
    waits = list(new_item_waits(first_shown, catalog, since).values())
    return {
        "new_items": len(new),
        "new_items_shown": sum(item in first_shown for item in new),
        "time_to_first_impression_s": float(np.median(waits)) if waits else None,
    }
