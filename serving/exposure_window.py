"""Live exposure: the service's recent served lists and events, summarized by evaluation/exposure.py.

The window keeps the records of the last `window_s` seconds (at most `max_records` of each kind, oldest
dropped first) in memory; `GET /v1/exposure` and the `tailtower_exposure_*` gauges of `/metrics` are the same
summary. New items' arrival is when this service first saw a model version listing them as new (live
metrics start with the service; `make report` reads the logs for the long view).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from evaluation.exposure import Catalog, summarize
from serving.catalog_metadata import ItemInfo
from serving.event_log import EVENTS, MODEL_VERSION, SERVED, SHOWN, SHOWN_IMPRESSIONS, SHOWN_SERVED


class ExposureWindow:
    def __init__(self, window_s: float, max_records: int, shown: str = SHOWN_IMPRESSIONS):
        if shown not in SHOWN:
            raise ValueError(f"shown must be one of {list(SHOWN)}, got {shown!r}")
        self.window_s, self.shown = window_s, shown
        self._records = {kind: deque(maxlen=max_records) for kind in (SERVED, EVENTS)}
        self._arrivals: dict[str, float] = {}  # new item id → when a version listing it was first seen
        self._catalog: tuple[int, int, Catalog] | None = None  # (version, arrivals seen, catalog)
        self._lock = threading.Lock()

    def add(self, kind: str, records: Iterable[Mapping], now: float | None = None) -> None:
        """Kept with the time they were added (an event's own `ts` is the shop's and may be late)."""
        now = time.time() if now is None else now
        with self._lock:
            self._records[kind].extend((now, record) for record in records)

    def note_version(self, version: int, items: Mapping[str, ItemInfo], now: float | None = None) -> None:
        """A model version was first seen: its new items have arrived (once: the earliest sighting counts)."""
        now = time.time() if now is None else now
        with self._lock:
            for item, info in items.items():
                if info.is_new:
                    self._arrivals.setdefault(item, now)

    def summary(self, version: int, items: Mapping[str, ItemInfo], now: float | None = None) -> dict:
        """The exposure summary of the window against `version`'s catalog `items`."""
        now = time.time() if now is None else now
        since = now - self.window_s
        with self._lock:
            for records in self._records.values():
                while records and records[0][0] < since:
                    records.popleft()
            kept = self._records[SERVED]
            start = kept[0][0] if len(kept) == kept.maxlen else since  # full: older lists were dropped
            served = [record for _, record in kept]
            events = [record for _, record in self._records[EVENTS]]
            catalog = self._catalog_of(version, items)
        doc = summarize(served, events, catalog, served_as_shown=self.shown == SHOWN_SERVED, since=start)
        return {"window_s": self.window_s, "shown": self.shown, MODEL_VERSION: version, **doc}

    def _catalog_of(self, version: int, items: Mapping[str, ItemInfo]) -> Catalog:
        if self._catalog is None or self._catalog[:2] != (version, len(self._arrivals)):
            flags = {item: (info.is_tail, info.is_new) for item, info in items.items()}
            self._catalog = (version, len(self._arrivals), Catalog.from_items(flags, self._arrivals))
        return self._catalog[2]


class ExposureCollector(Collector):
    """`tailtower_exposure_<name>` gauges of the summary's numbers, computed at each scrape; none while the
    model is not ready (`summary` returns None), a null value left out."""

    def __init__(self, summary: Callable[[], dict | None]):
        self._summary = summary

    def collect(self):
        doc = self._summary()
        if doc is None:
            return
        for name, value in doc.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and name != MODEL_VERSION:
                yield GaugeMetricFamily(f"tailtower_exposure_{name}", _HELP.get(name, name), value=value)


_HELP = {
    "window_s": "Length of the live exposure window (seconds).",
    "requests": "Served lists in the window.",
    "aplt": "Mean share of tail items per served list (APLT).",
    "coverage": "Share of catalog items served at least once in the window.",
    "tail_coverage": "Share of tail items served at least once in the window.",
    "gini": "Gini index of served slots per catalog item.",
    "impressions": "Displayed slots in the window.",
    "clicks": "Displayed slots clicked.",
    "ctr": "Clicks / impressions.",
    "ctr_head": "CTR of head items.",
    "ctr_tail": "CTR of tail items.",
    "ctr_new": "CTR of new items.",
    "new_items": "Items the served version flags new.",
    "new_items_shown": "New items displayed at least once in the window.",
    "time_to_first_impression_s": "Median seconds from a new item's arrival to its first display.",
    "unjoined_events": "Events in the window that match no served slot.",
}
