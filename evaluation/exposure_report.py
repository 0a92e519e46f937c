"""`make report`: the merchant's exposure report, from the service's logs (closed spans and the open one).

    scripts/env python -m evaluation.exposure_report [--logs demo-run/logs] [--catalog DATASET_DIR]
        [--model_base_path demo-run/serving/tailtower] [--out demo-run/report] [--shown impressions|served]

Writes into --out: index.html (plots as PNG files beside it, linked relatively: nothing external),
per_item.csv, per_brand.csv, per_category.csv, per_span.csv and summary.json. Every rate is computed by
evaluation/exposure.py, the code of the live `/v1/exposure` window and of `make loop`, whose formulas are the
offline harness's (evaluation/metrics.py):
  per item / brand / category  served slots, impressions (displayed slots), clicks (click-throughs), CTR; an
                               item in several categories counts in each.
  per span                     the span's exposure summary (APLT, coverage, Gini, CTR head / tail / new) and
                               the tail's share of served and of displayed slots; the open span's journals
                               are the span "open". Events count in the span of the list they answer.
  overall                      the summary over every span; Gini of served slots and of impressions per
                               catalog item (zeros included); items never served / never displayed; new
                               items' time from arrival to first impression and to first click.
"Displayed" is an impression event, or with `--shown served` every served slot (the service's
`--exposure_shown`).

The catalog: the dataset's items (--catalog) or else the latest model version's
`assets.extra/catalog.jsonl`, plus every item served; titles, brands and categories from the same place
(neither: per item only). Head / tail / new are the model's own flags, as the live metrics take them: the
latest model version's catalog metadata, or else the flags each item was last served with. An item is also
new when any served version listed it new: it arrived while the logs ran, at the first list of the first
version listing it new (`exposure.arrivals`). CTR head / tail / new use the flags each slot was served with.

Read-only: no lock is taken (a running service keeps writing) and nothing under the logs is written. If a span
closes while the logs are read, they are read again. Only the columns rated here are kept: no pseudonym or
history reaches the report. The files this report owns in --out are replaced on every run.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from components.data_files import (
    CSV_LIST_SEPARATOR,
    DataFileError,
    Item,
    find_dataset_files,
    parse_item,
    read_raw_rows,
)
from evaluation import exposure, metrics
from evaluation.report import _pyplot, clean  # the harness's Agg backend and NaN → null
from serving.catalog_metadata import CatalogMetadata, ItemInfo
from serving.config import DEFAULT_MODEL_BASE_PATH, DEFAULT_OUTPUT
from serving.event_log import (
    EVENTS,
    KINDS,
    MODEL_VERSION,
    REQUEST_ID,
    SERVED,
    SHOWN,
    SHOWN_IMPRESSIONS,
    SHOWN_SERVED,
    TS,
    TYPE,
    read_table,
    spans,
)
from serving.service_config import LOGS_DIR
from trainer import features

REPORT_DIR = "report"  # <output>/report/
PAGE = "index.html"
PER_ITEM, PER_BRAND, PER_CATEGORY, PER_SPAN = (
    "per_item.csv",
    "per_brand.csv",
    "per_category.csv",
    "per_span.csv",
)
SUMMARY = "summary.json"
PLOT_SPANS_TAIL, PLOT_SPANS_CTR, PLOT_LORENZ = "tail_share.png", "ctr.png", "lorenz.png"
PLOT_TOP = "top_{}.png"  # per brand / categories
OPEN_SPAN = "open"  # the span label of the open journals' records
NO_DATA = "no served records yet"
NO_ATTRIBUTE = "(none)"  # the brand / category row of items without one
READ_ATTEMPTS = 3
TOP_ROWS = 20  # rows of each table on the page (the CSVs have all)
TOP_BARS = 15  # brands / categories in their plots
MAX_TICKS = 12  # span labels on a plot's axis
# The log columns rated here (nothing else is read: no pseudonym, no history)
SERVED_COLUMNS = (REQUEST_ID, TS, MODEL_VERSION, features.ITEM_IDS, features.IS_TAIL, features.IS_NEW)
EVENT_COLUMNS = (REQUEST_ID, features.ITEM_ID, TYPE, TS)
# Column names of the tables
SPAN = "span"
SPAN_TIMES = ("from_ts", "to_ts")  # a span's first and last served list
SERVED_SLOTS, IMPRESSIONS, CLICKS, CTR = "served_slots", "impressions", "clicks", "ctr"
ARRIVAL_TS, FIRST_IMPRESSION_TS, FIRST_CLICK_TS = "arrival_ts", "first_impression_ts", "first_click_ts"
TO_IMPRESSION_S, TO_CLICK_S = "time_to_first_impression_s", "time_to_first_click_s"
TAIL_SHARE_SERVED, TAIL_SHARE_SHOWN = "tail_share_served", "tail_share_shown"
GROUP_FILES = {features.BRAND: PER_BRAND, features.CATEGORIES: PER_CATEGORY}
SPAN_RATES = ("requests", "aplt", "coverage", "tail_coverage", "gini", "ctr_head", "ctr_tail", "ctr_new")


class ReportError(ValueError):
    """Inputs the report cannot use (a missing logs or dataset folder): the message says which."""


# ------------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class Logs:
    served: list[dict]
    events: list[dict]
    spans: list[int | str]  # the span of each served record (OPEN_SPAN: an open journal's)
    closed: list[int]  # closed spans of either kind, ascending


def read_logs(logs_dir: str) -> Logs:
    """Every served record and event, closed spans and the open journals, as one consistent snapshot."""
    if not os.path.isdir(logs_dir):
        raise ReportError(
            f"logs folder {logs_dir!r} does not exist: start the service (make service, make loop) or pass "
            "LOGS=<the service's logs folder>"
        )
    for _ in range(READ_ATTEMPTS):
        closed = {kind: spans(logs_dir, kind) for kind in KINDS}
        try:
            logs = _read(logs_dir, closed)
        except FileNotFoundError:  # a journal closed into its span while it was read
            continue
        if {kind: spans(logs_dir, kind) for kind in KINDS} == closed:  # else a journal may be missed
            return logs
    raise ReportError(f"{logs_dir}: spans kept closing while they were read ({READ_ATTEMPTS} tries)")


def _read(logs_dir: str, closed: Mapping[str, list[int]]) -> Logs:
    served: list[dict] = []
    labels: list[int | str] = []
    for span in closed[SERVED]:
        records = read_table(logs_dir, SERVED, [span]).select(SERVED_COLUMNS).to_pylist()
        served += records
        labels += [span] * len(records)
    # A journal is deleted just after its span's file is renamed in: one read between the two holds it twice.
    seen = {record[REQUEST_ID] for record in served}
    table = read_table(logs_dir, SERVED, [], include_open=True).select(SERVED_COLUMNS)
    records = [record for record in table.to_pylist() if record[REQUEST_ID] not in seen]
    served += records
    labels += [OPEN_SPAN] * len(records)
    events = read_table(logs_dir, EVENTS, include_open=True).select(EVENT_COLUMNS).to_pylist()
    return Logs(served, events, labels, sorted({s for kind in KINDS for s in closed[kind]}))


# ------------------------------------------------------------------------------------ catalog
@dataclass(frozen=True)
class ReportCatalog:
    catalog: exposure.Catalog
    info: dict[str, ItemInfo]  # titles, brands, categories ({}: unknown, per item only)
    source: str  # where the items and their attributes came from
    flags: str  # where head / tail / new came from


def model_versions(model_base_path: str | None) -> list[int]:
    if not model_base_path or not os.path.isdir(model_base_path):
        return []
    names = os.listdir(model_base_path)
    return sorted(int(n) for n in names if n.isdigit() and os.path.isdir(os.path.join(model_base_path, n)))


def served_flags(served: Sequence[Mapping]) -> dict[int, dict[str, tuple[bool, bool]]]:
    """Model version → item → (is_tail, is_new) as that version last served it."""
    flags: dict[int, dict[str, tuple[bool, bool]]] = defaultdict(dict)
    for record in sorted(served, key=lambda r: r[TS]):
        ids = record[features.ITEM_IDS]
        for item, tail, new in zip(ids, record[features.IS_TAIL], record[features.IS_NEW], strict=False):
            if item:
                flags[int(record[MODEL_VERSION])][item] = (bool(tail), bool(new))
    return dict(flags)


def dataset_items(data_dir: str) -> dict[str, ItemInfo]:
    """The dataset folder's valid items (components/data_files.py's reader), attributes only."""
    try:
        rows = read_raw_rows(find_dataset_files(data_dir).items)
        parsed = [parse_item(row) for row in rows]
    except DataFileError as e:
        raise ReportError(f"CATALOG: {e}") from None
    items: dict[str, ItemInfo] = {}
    for item in parsed:
        if isinstance(item, Item):
            items.setdefault(item.item_id, ItemInfo(item.title, brand=item.brand, categories=item.categories))
    return items


def build_catalog(
    served: Sequence[Mapping], model_base_path: str | None, data_dir: str | None
) -> ReportCatalog:
    by_version = served_flags(served)
    versions = sorted({*by_version, *model_versions(model_base_path)[-1:]})
    store = CatalogMetadata(model_base_path or "", keep_versions=max(len(versions), 1))
    meta = {v: items for v in versions if model_base_path and (items := store.items(v))}
    latest = meta[max(meta)] if meta else {}
    flags = {item: f for v in sorted(by_version) for item, f in by_version[v].items()}  # later versions win
    flags.update({item: (info.is_tail, info.is_new) for item, info in latest.items()})
    new_by_version = {
        v: [i for i, info in meta[v].items() if info.is_new]
        if v in meta
        else [i for i, (_, new) in by_version[v].items() if new]
        for v in versions
    }
    arrived = exposure.arrivals(served, new_by_version)
    if data_dir:
        info, source = dataset_items(data_dir), f"dataset {data_dir}"
    elif latest:
        info, source = latest, f"model version {max(meta)}'s catalog metadata"
    else:
        info, source = {}, "served records only (no catalog metadata: per item only)"
    ids = list(dict.fromkeys([*info, *latest, *flags]))
    items = {
        i: (flags.get(i, (False, False))[0], flags.get(i, (False, False))[1] or i in arrived) for i in ids
    }
    flag_source = f"model version {max(meta)}'s catalog metadata" if latest else "as last served"
    return ReportCatalog(exposure.Catalog.from_items(items, arrived), info, source, flag_source)


# ------------------------------------------------------------------------------------ tables
def slot_frame(logs: Logs, served_as_shown: bool) -> pd.DataFrame:
    """One row per served slot (exposure.slot_outcomes) with its span."""
    outcomes = exposure.slot_outcomes(logs.served, logs.events, served_as_shown)
    frame = pd.DataFrame(outcomes.columns).astype(
        {
            TS: float,
            features.IS_TAIL: bool,
            features.IS_NEW: bool,
            exposure.SHOWN_TS: float,
            exposure.CLICK_TS: float,
        }
    )
    frame[SPAN] = [logs.spans[i] for i in frame[exposure.LIST_INDEX]]
    frame[IMPRESSIONS] = frame[exposure.SHOWN_TS].notna()
    frame[CLICKS] = frame[exposure.CLICK_TS].notna()
    return frame


def _ctr(table: pd.DataFrame) -> pd.Series:
    return table[CLICKS] / table[IMPRESSIONS].where(table[IMPRESSIONS] > 0)


def _first(series: pd.Series) -> dict[str, float]:
    return series.dropna().to_dict()


def item_table(slots: pd.DataFrame, report_catalog: ReportCatalog) -> pd.DataFrame:
    """One row per catalog item: attributes, flags, counts, CTR, arrival and new items' waits."""
    catalog, info = report_catalog.catalog, report_catalog.info
    counts = slots.groupby(features.ITEM_ID).agg(
        **{
            SERVED_SLOTS: (TS, "size"),
            IMPRESSIONS: (IMPRESSIONS, "sum"),
            CLICKS: (CLICKS, "sum"),
            FIRST_IMPRESSION_TS: (exposure.SHOWN_TS, "min"),
            FIRST_CLICK_TS: (exposure.CLICK_TS, "min"),
        }
    )
    attributes = [info.get(item, ItemInfo()) for item in catalog.item_ids]
    table = pd.DataFrame(
        {
            features.ITEM_ID: catalog.item_ids,
            features.TITLE: [a.title for a in attributes],
            features.BRAND: [a.brand for a in attributes],
            features.CATEGORIES: [list(a.categories) for a in attributes],
            features.IS_TAIL: catalog.is_tail,
            features.IS_NEW: catalog.is_new,
            ARRIVAL_TS: catalog.arrival_ts,
        }
    ).join(counts, on=features.ITEM_ID)
    table[[SERVED_SLOTS, IMPRESSIONS, CLICKS]] = (
        table[[SERVED_SLOTS, IMPRESSIONS, CLICKS]].fillna(0).astype(int)
    )
    table[CTR] = _ctr(table)
    for column, first in ((TO_IMPRESSION_S, FIRST_IMPRESSION_TS), (TO_CLICK_S, FIRST_CLICK_TS)):
        waits = exposure.new_item_waits(_first(counts[first]), catalog)
        table[column] = table[features.ITEM_ID].map(waits).astype(float)
    return table


def group_table(items: pd.DataFrame, key: str) -> pd.DataFrame:
    """Per brand or category (an item in several categories counts in each), most impressions first."""
    rows = items.explode(key) if key == features.CATEGORIES else items
    rows = rows.assign(
        **{key: rows[key].fillna("").replace("", NO_ATTRIBUTE), "shown": rows[IMPRESSIONS] > 0}
    )
    table = rows.groupby(key).agg(
        items=(features.ITEM_ID, "size"),
        tail_items=(features.IS_TAIL, "sum"),
        new_items=(features.IS_NEW, "sum"),
        items_shown=("shown", "sum"),
        **{SERVED_SLOTS: (SERVED_SLOTS, "sum"), IMPRESSIONS: (IMPRESSIONS, "sum"), CLICKS: (CLICKS, "sum")},
    )
    table[CTR] = _ctr(table)
    total = items[IMPRESSIONS].sum()
    table["share_of_impressions"] = table[IMPRESSIONS] / total if total else np.nan
    return table.sort_values([IMPRESSIONS, SERVED_SLOTS], ascending=False, kind="stable").reset_index()


def _tail_share(slots: pd.DataFrame) -> tuple[float | None, float | None]:
    """The tail's share of served slots and of displayed slots (flags as served)."""
    shown = slots.loc[slots[IMPRESSIONS], features.IS_TAIL]
    served = slots[features.IS_TAIL]
    return (float(served.mean()) if len(served) else None, float(shown.mean()) if len(shown) else None)


def span_table(
    logs: Logs, slots: pd.DataFrame, catalog: exposure.Catalog, served_as_shown: bool
) -> pd.DataFrame:
    """One row per span (the open one last): exposure.summarize of its lists and the events answering them."""
    by_request: dict[str, list[dict]] = defaultdict(list)
    for event in logs.events:
        by_request[event[REQUEST_ID]].append(event)
    members: dict[int | str, list[dict]] = defaultdict(list)
    for span, record in zip(logs.spans, logs.served, strict=True):
        members[span].append(record)
    rows = []
    for span, served in members.items():  # in reading order: closed spans ascending, then the open one
        events = [e for request in {r[REQUEST_ID] for r in served} for e in by_request[request]]
        doc = exposure.summarize(served, events, catalog, served_as_shown)
        in_span = slots[slots[SPAN] == span]
        tail_served, tail_shown = _tail_share(in_span)
        ts = [r[TS] for r in served]
        rows.append(
            {
                SPAN: span,
                SPAN_TIMES[0]: min(ts),
                SPAN_TIMES[1]: max(ts),
                SERVED_SLOTS: len(in_span),
                IMPRESSIONS: doc[IMPRESSIONS],
                CLICKS: doc[CLICKS],
                CTR: doc[CTR],
                TAIL_SHARE_SERVED: tail_served,
                TAIL_SHARE_SHOWN: tail_shown,
                **{name: doc[name] for name in SPAN_RATES},
            }
        )
    columns = [SPAN, *SPAN_TIMES, SERVED_SLOTS, IMPRESSIONS, CLICKS, CTR, TAIL_SHARE_SERVED, TAIL_SHARE_SHOWN]
    return pd.DataFrame(rows, columns=[*columns, *SPAN_RATES])


def head_tail_table(slots: pd.DataFrame) -> pd.DataFrame:
    """Served slots, impressions, clicks and CTR of head, tail and new slots (flags as served)."""
    groups = {
        "head": ~slots[features.IS_TAIL],
        "tail": slots[features.IS_TAIL],
        "new": slots[features.IS_NEW],
    }
    rows = [
        {
            "slots": name,
            SERVED_SLOTS: int(m.sum()),
            IMPRESSIONS: int(slots.loc[m, IMPRESSIONS].sum()),
            CLICKS: int(slots.loc[m, CLICKS].sum()),
        }
        for name, m in groups.items()
    ]
    table = pd.DataFrame(rows)
    table[CTR] = _ctr(table)
    return table


def summary_of(
    logs: Logs, slots: pd.DataFrame, items: pd.DataFrame, report_catalog: ReportCatalog, shown: str
) -> dict:
    catalog = report_catalog.catalog
    doc = exposure.summarize(logs.served, logs.events, catalog, served_as_shown=shown == SHOWN_SERVED)
    tail_served, tail_shown = _tail_share(slots)
    waits = items[TO_CLICK_S].dropna()
    return {
        **doc,
        "closed_spans": len(logs.closed),
        "open_span_requests": logs.spans.count(OPEN_SPAN),
        "events": len(logs.events),
        SERVED_SLOTS: len(slots),
        TAIL_SHARE_SERVED: tail_served,
        TAIL_SHARE_SHOWN: tail_shown,
        "gini_impressions": clean(metrics.gini(items[IMPRESSIONS].to_numpy())),
        TO_CLICK_S: float(waits.median()) if len(waits) else None,
        "items": len(catalog.item_ids),
        "tail_items": int(catalog.is_tail.sum()),
        "items_never_served": int((items[SERVED_SLOTS] == 0).sum()),
        "items_never_shown": int((items[IMPRESSIONS] == 0).sum()),
        "catalog": report_catalog.source,
        "flags": report_catalog.flags,
        "shown": shown,
    }


# ------------------------------------------------------------------------------------ plots
def _save(fig, plt, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return os.path.basename(path)


def plot_spans(path: str, table: pd.DataFrame, columns: Sequence[str], title: str) -> str:
    """One line per column over the spans (labels as they are: YYYYMMDDHH, a counter, or "open")."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    x = np.arange(len(table))
    for column, style in zip(columns, ("o-", "s--", "^:"), strict=False):  # lines that coincide stay visible
        ax.plot(x, table[column].astype(float), style, label=column, markersize=4)
    ticks = x[:: -(-len(x) // MAX_TICKS)]  # at most MAX_TICKS labels
    ax.set_xticks(ticks, [str(table[SPAN].iloc[i]) for i in ticks], rotation=30, ha="right", fontsize=8)
    ax.set_xlabel(SPAN)
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, plt, path)


def plot_lorenz(path: str, items: pd.DataFrame, summary: Mapping) -> str:
    """Cumulative share of served slots and impressions over items, least exposed first."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for column, gini in ((SERVED_SLOTS, summary["gini"]), (IMPRESSIONS, summary["gini_impressions"])):
        counts = np.sort(items[column].to_numpy(np.float64))
        if counts.sum() > 0:
            share = np.concatenate([[0.0], np.cumsum(counts) / counts.sum()])
            ax.plot(np.linspace(0, 1, len(share)), share, label=f"{column} (Gini {gini:.3f})")
    ax.plot([0, 1], [0, 1], "k:", label="equal exposure")
    ax.set_xlabel("catalog items, least exposed first (share)")
    ax.set_ylabel("cumulative share of exposure")
    ax.set_title("Concentration of exposure")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, plt, path)


def plot_top(path: str, table: pd.DataFrame, key: str) -> str:
    """Impressions and clicks of the most displayed brands or categories."""
    plt = _pyplot()
    top = table.head(TOP_BARS).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(top) + 1.5))
    y = np.arange(len(top))
    ax.barh(y - 0.2, top[IMPRESSIONS], height=0.4, label=IMPRESSIONS)
    ax.barh(y + 0.2, top[CLICKS], height=0.4, label=CLICKS)
    ax.set_yticks(y, [str(v)[:40] for v in top[key]], fontsize=8)
    ax.set_title(f"The {len(top)} most displayed, by {key}")
    ax.legend(fontsize=8)
    return _save(fig, plt, path)


def write_plots(
    out_dir: str, items: pd.DataFrame, spans_table: pd.DataFrame, groups: Mapping, summary
) -> list:
    images = [
        plot_spans(
            os.path.join(out_dir, PLOT_SPANS_TAIL),
            spans_table,
            [TAIL_SHARE_SERVED, TAIL_SHARE_SHOWN, "aplt"],
            "The tail's share of exposure per span",
        ),
        plot_spans(
            os.path.join(out_dir, PLOT_SPANS_CTR),
            spans_table,
            ["ctr_head", "ctr_tail", "ctr_new"],
            "CTR of head, tail and new slots per span",
        ),
        plot_lorenz(os.path.join(out_dir, PLOT_LORENZ), items, summary),
    ]
    for key, table in groups.items():
        if len(table):
            images.append(plot_top(os.path.join(out_dir, PLOT_TOP.format(key)), table, key))
    return images


# ------------------------------------------------------------------------------------ page
def _flat(table: pd.DataFrame) -> pd.DataFrame:
    """Per-item categories (lists) as one string, joined as the dataset's CSV layout joins them."""
    if (
        features.CATEGORIES not in table
        or not table[features.CATEGORIES].map(lambda v: isinstance(v, list)).any()
    ):
        return table
    return table.assign(**{features.CATEGORIES: table[features.CATEGORIES].map(CSV_LIST_SEPARATOR.join)})


def _readable_times(spans_table: pd.DataFrame) -> pd.DataFrame:
    """The spans' first and last list as UTC times (the CSV keeps unix seconds)."""
    times = {
        c: pd.to_datetime(spans_table[c], unit="s", utc=True).dt.strftime("%Y-%m-%d %H:%M:%S")
        for c in SPAN_TIMES
    }
    return spans_table.assign(**times)


def _html_table(table: pd.DataFrame, limit: int = TOP_ROWS) -> str:
    shown = _flat(table.head(limit))
    more = f"<p>{len(table) - limit} more rows in the CSV.</p>" if len(table) > limit else ""
    return shown.to_html(index=False, na_rep="–", float_format=lambda v: f"{v:.3f}", border=0) + more


SUMMARY_LABELS = {
    "requests": "served lists",
    SERVED_SLOTS: "served slots",
    IMPRESSIONS: "impressions",
    CLICKS: "clicks",
    CTR: "CTR",
    "ctr_head": "CTR head",
    "ctr_tail": "CTR tail",
    "ctr_new": "CTR new",
    "aplt": "APLT (mean tail share per list)",
    TAIL_SHARE_SHOWN: "tail share of impressions",
    "coverage": "catalog coverage (served)",
    "tail_coverage": "tail coverage (served)",
    "gini": "Gini of served slots per item",
    "gini_impressions": "Gini of impressions per item",
    "items": "catalog items",
    "items_never_served": "items never served",
    "items_never_shown": "items never displayed",
    "new_items": "new items",
    "new_items_shown": "new items displayed",
    "time_to_first_impression_s": "new items: median seconds to first impression",
    TO_CLICK_S: "new items: median seconds to first click",
    "unjoined_events": "events joining no served slot",
}


def _value(value) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def write_page(
    out_dir: str, logs_dir: str, summary: Mapping, sections: Sequence[tuple[str, str]], files: Sequence[str]
) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(label)}</th><td>{_value(summary.get(key))}</td></tr>"
        for key, label in SUMMARY_LABELS.items()
    )
    written = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    open_lists = summary["open_span_requests"]
    spans_line = f"{summary['closed_spans']} closed spans and the open one ({open_lists} lists in it)"
    intro = (
        f"<p>Logs <code>{html.escape(logs_dir)}</code>: {spans_line}, {summary['events']} events. "
        f"Catalog: {html.escape(summary['catalog'])}; head / tail / new: {html.escape(summary['flags'])}; "
        f"displayed = {html.escape(summary['shown'])}. Written {written}.</p>"
    )
    empty = f"<p class='empty'><b>No data: {NO_DATA}.</b></p>" if not summary["requests"] else ""
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections)
    links = " · ".join(f"<a href='{name}'>{name}</a>" for name in files)
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{text-align:left}"
        ".empty{font-size:1.3em;color:#a00}img{max-width:100%;margin:0.5em 1em 0.5em 0}"
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Exposure report</title>"
        f"<style>{style}</style></head><body><h1>Merchant exposure report</h1>{intro}{empty}"
        f"<h2>Summary</h2><table>{rows}</table>"
        f"{body}<h2>Files</h2><p>{links}</p></body></html>\n"
    )
    path = os.path.join(out_dir, PAGE)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path


def _sections(items, spans_table, groups, head_tail, images) -> list[tuple[str, str]]:
    plots = "".join(f"<img src='{name}' alt='{name}'>" for name in images)
    item_columns = [
        features.ITEM_ID,
        features.TITLE,
        features.BRAND,
        features.IS_TAIL,
        features.IS_NEW,
        SERVED_SLOTS,
        IMPRESSIONS,
        CLICKS,
        CTR,
    ]
    by_exposure = items.sort_values([IMPRESSIONS, SERVED_SLOTS], ascending=False, kind="stable")
    new = items[items[features.IS_NEW]][[*item_columns, TO_IMPRESSION_S, TO_CLICK_S]]
    never = items[items[IMPRESSIONS] == 0][item_columns[:5] + [SERVED_SLOTS]]
    sections = [("Plots", plots)] if images else []
    sections += [
        ("Head vs tail", _html_table(head_tail)),
        ("Per span", _html_table(_readable_times(spans_table), limit=200)),
        ("Most displayed items", _html_table(by_exposure[item_columns])),
    ]
    sections += [(f"Per {key}", _html_table(table)) for key, table in groups.items()]  # brand, categories
    sections += [
        ("New items", _html_table(new.sort_values(TO_IMPRESSION_S, na_position="last"))),
        (f"Items never displayed ({len(never)})", _html_table(never)),
    ]
    return sections


# ------------------------------------------------------------------------------------ the report
def _clear(out_dir: str) -> None:
    """Removes this report's files of an earlier run (a per-item-only run writes no per-brand file)."""
    os.makedirs(out_dir, exist_ok=True)
    plots = (PLOT_SPANS_TAIL, PLOT_SPANS_CTR, PLOT_LORENZ, *(PLOT_TOP.format(key) for key in GROUP_FILES))
    for name in (PAGE, PER_ITEM, PER_SPAN, *GROUP_FILES.values(), SUMMARY, *plots):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(out_dir, name))


def _write_csv(table: pd.DataFrame, path: str) -> None:
    _flat(table).to_csv(path, index=False)


def build_report(
    logs_dir: str,
    out_dir: str,
    model_base_path: str | None = None,
    data_dir: str | None = None,
    shown: str = SHOWN_IMPRESSIONS,
) -> dict:
    """Writes the report (module docstring) into `out_dir`; returns summary.json's content."""
    if shown not in SHOWN:
        raise ReportError(f"shown must be one of {list(SHOWN)}, got {shown!r}")
    logs = read_logs(logs_dir)
    report_catalog = build_catalog(logs.served, model_base_path, data_dir)
    slots = slot_frame(logs, shown == SHOWN_SERVED)
    items = item_table(slots, report_catalog)
    spans_table = span_table(logs, slots, report_catalog.catalog, shown == SHOWN_SERVED)
    keys = (features.BRAND, features.CATEGORIES) if report_catalog.info else ()
    groups = {key: group_table(items, key) for key in keys}
    summary = summary_of(logs, slots, items, report_catalog, shown)
    _clear(out_dir)
    tables = {PER_ITEM: items, PER_SPAN: spans_table}
    tables.update({name: groups[key] for key, name in GROUP_FILES.items() if key in groups})
    for name, table in tables.items():
        _write_csv(table, os.path.join(out_dir, name))
    with open(os.path.join(out_dir, SUMMARY), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    images = write_plots(out_dir, items, spans_table, groups, summary) if summary["requests"] else []
    sections = _sections(items, spans_table, groups, head_tail_table(slots), images)
    write_page(out_dir, logs_dir, summary, sections, [*tables, SUMMARY])
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--logs", default=os.path.join(DEFAULT_OUTPUT, LOGS_DIR), help="the service's logs folder"
    )
    parser.add_argument("--catalog", help="a dataset folder: the catalog's items, titles, brands, categories")
    parser.add_argument(
        "--model_base_path", default=DEFAULT_MODEL_BASE_PATH, help="the model's version folders"
    )
    parser.add_argument("--out", default=os.path.join(DEFAULT_OUTPUT, REPORT_DIR))
    parser.add_argument("--shown", choices=SHOWN, default=SHOWN_IMPRESSIONS, help="what counts as displayed")
    args = parser.parse_args(argv)
    try:
        s = build_report(args.logs, args.out, args.model_base_path, args.catalog, args.shown)
    except ReportError as e:
        print(f"report: {e}", file=sys.stderr)
        return 2
    if not s["requests"]:
        print(f"{args.logs}: {NO_DATA} ({s['events']} events)")
    else:
        print(
            f"{args.logs}: {s['requests']} served lists ({s['closed_spans']} closed spans, "
            f"{s['open_span_requests']} in the open span), {s['events']} events\n"
            f"catalog: {s['catalog']}; head / tail / new: {s['flags']}\n"
            f"CTR {_value(s[CTR])} (head {_value(s['ctr_head'])}, tail {_value(s['ctr_tail'])}, new "
            f"{_value(s['ctr_new'])}); tail share of impressions {_value(s[TAIL_SHARE_SHOWN])}; "
            f"Gini of served slots {_value(s['gini'])}; "
            f"items never displayed {s['items_never_shown']} of {s['items']}"
        )
    print(f"wrote {os.path.join(args.out, PAGE)} and its CSVs, plots and {SUMMARY}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
