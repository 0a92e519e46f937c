"""The harness's outputs: markdown table, metrics.json, PNG plots and a self-contained report.html.

An *entry* is one system at one setting: {"name", "<metric>@K": float | None, ..., "settings": {...}}.
NaN metrics (nothing to measure, e.g. cold_recall without cold targets) are written as null / "–".
Every output names the run's history protocol (evaluation/split.py), whose figures are not comparable.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Sequence

import numpy as np
from tabulate import tabulate

from evaluation import split

METRICS = (
    "recall",
    "ndcg",
    "tail_recall",
    "aplt",
    "tail_coverage",
    "coverage",
    "gini",
    "novelty",
    "ild",
    "cold_recall",
)


HISTORY_NOTES = {
    split.HISTORY_EXCLUDED: "history excluded: a user's fit items are never recommended",
    split.HISTORY_KEPT: "history kept: fit items are ranked too (RecBole's full ranking), not comparable "
    "with history-excluded figures",
}


def history_note(history: str) -> str:
    """One line saying what the history protocol `history` (split.HISTORY_PROTOCOLS) means."""
    return HISTORY_NOTES[history]


def clean(value: float) -> float | None:
    """A JSON-safe float: NaN and infinities become None."""
    return None if value is None or not math.isfinite(value) else float(value)


def _cells(entry: dict, columns: Sequence[str]) -> list[str]:
    return ["–" if entry.get(c) is None else f"{entry[c]:.4f}" for c in columns]


def markdown_table(entries: Sequence[dict], k: int) -> str:
    """A GitHub markdown table: one row per entry, the metrics to 4 decimals ("–" for null)."""
    columns = [f"{m}@{k}" for m in METRICS]
    rows = [[entry["name"], *_cells(entry, columns)] for entry in entries]
    return tabulate(rows, headers=["system", *columns], tablefmt="github", disable_numparse=True)


def write_json(path: str, dataset: str, k: int, history: str, entries: Sequence[dict]) -> None:
    doc = {"dataset": dataset, "k": k, "history_protocol": history, "systems": list(entries)}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, sort_keys=False)
        f.write("\n")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_popularity(path: str, counts: np.ndarray, recs_by_name: dict[str, np.ndarray], k: int) -> None:
    """Cumulative share of recommendations (and of fit interactions) over items ranked by fit popularity."""
    plt = _pyplot()
    order = np.argsort(-np.asarray(counts), kind="stable")
    share = np.arange(1, len(order) + 1) / max(len(order), 1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    catalog = np.cumsum(np.asarray(counts, np.float64)[order])
    ax.plot(share, catalog / max(catalog[-1], 1.0), "k--", label="catalog (fit interactions)")
    for name, recs in recs_by_name.items():
        shown = np.bincount(recs[recs >= 0], minlength=len(order)).astype(np.float64)[order]
        ax.plot(share, np.cumsum(shown) / max(shown.sum(), 1.0), label=name)
    ax.set_xlabel("items, most popular first (share of catalog)")
    ax.set_ylabel(f"cumulative share of top-{k} slots")
    ax.set_title("Popularity of recommended items vs the catalog")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (ties kept), by x ascending."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(ox >= x and oy >= y and (ox, oy) != (x, y) for ox, oy in points)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def plot_pareto(path: str, entries: Sequence[dict], k: int) -> None:
    """Recall@k against APLT@k: one line per knob sweep, baselines as labelled points (of EASE, the best λ
    only), the front dashed."""
    plt = _pyplot()
    recall_key, aplt_key = f"recall@{k}", f"aplt@{k}"
    usable = [
        e
        for e in entries
        if e.get(recall_key) is not None and e.get(aplt_key) is not None and e["settings"].get("best", True)
    ]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for entry in usable:
        if not entry["settings"].get("sweep"):
            ax.scatter(entry[aplt_key], entry[recall_key], marker="s", color="gray")
            ax.annotate(entry["name"], (entry[aplt_key], entry[recall_key]), fontsize=7)
    sweeps = sweep_lines(usable)
    for label, line in sweeps.items():
        ax.plot([e[aplt_key] for e in line], [e[recall_key] for e in line], "o-", label=label)
    points = [(e[aplt_key], e[recall_key]) for e in usable]
    front = pareto_front(points)
    if len(front) > 1:
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "k:", label="Pareto front")
    ax.set_xlabel(f"APLT@{k}")
    ax.set_ylabel(f"Recall@{k}")
    ax.set_title("Accuracy vs long-tail share")
    if sweeps or len(front) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # "tight": labels near the right edge stay whole
    plt.close(fig)


def plot_cold_tradeoff(path: str, entries: Sequence[dict], k: int) -> bool:
    """Cold-target users' Recall@k against the warm-target users': every system as a labelled point, each
    knob sweep as a line from its system's unswept entry (the new-item boost's is the trade a shop makes
    for new items). Writes nothing and answers False when no entry has a cold target to score. A target is
    cold here when it has no fit positive (`metrics.cold_recall`); the boost lifts only those the model
    never saw at all, so on a rated dataset's standard protocol part of the cold targets (seen, not liked)
    are out of its reach, while in the cold-items protocol the made-cold items are unseen."""
    cold_key, warm_key = f"cold_recall@{k}", f"warm_recall@{k}"
    usable = [
        e
        for e in entries
        if e.get(cold_key) is not None and e.get(warm_key) is not None and e["settings"].get("best", True)
    ]
    if not usable:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for entry in usable:
        if not entry["settings"].get("sweep"):
            ax.scatter(entry[cold_key], entry[warm_key], marker="s", color="gray")
            ax.annotate(entry["name"], (entry[cold_key], entry[warm_key]), fontsize=7)
    for label, line in sweep_lines(usable).items():
        ax.plot([e[cold_key] for e in line], [e[warm_key] for e in line], "o-", label=label)
        for swept in (e for e in line if "sweep" in e["settings"]):  # each point names its knob value
            value, point = f"{swept['settings']['value']:g}", (swept[cold_key], swept[warm_key])
            ax.annotate(value, point, xytext=(4, -10), textcoords="offset points", fontsize=7)
    ax.set_xlabel(f"Recall@{k}, users whose target is a cold item")
    ax.set_ylabel(f"Recall@{k}, the other users")
    ax.set_title("New items found vs the rest")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def sweep_lines(entries: Sequence[dict]) -> dict[str, list[dict]]:
    """"<system> <knob>" → that sweep's entries by value, led by the system's unswept entry (knobs at 0)."""
    sweeps: dict[str, list[dict]] = {}
    for entry in entries:
        settings = entry["settings"]
        if settings.get("sweep"):
            sweeps.setdefault(f"{settings.get('system', '')} {settings['sweep']}".strip(), []).append(entry)
    lines = {}
    for label, members in sorted(sweeps.items()):
        system = members[0]["settings"].get("system")
        base = [e for e in entries if e["settings"].get("system") == system and "sweep" not in e["settings"]]
        # Each line starts at its system's unswept entry (every knob at 0).
        lines[label] = base[:1] + sorted(members, key=lambda e: e["settings"].get("value", 0.0))
    return lines


def write_html(
    path: str, title: str, entries: Sequence[dict], k: int, images: Sequence[str], notes: Sequence[str]
) -> None:
    """report.html: the table, the settings of each entry, the plots (inlined as base64) and notes."""
    columns = [f"{m}@{k}" for m in METRICS]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["system", *columns, "settings"])
    rows = []
    for entry in entries:
        cells = _cells(entry, columns)
        settings = html.escape(json.dumps(entry["settings"], sort_keys=True))
        rows.append(
            "<tr><td>"
            + html.escape(entry["name"])
            + "</td>"
            + "".join(f"<td>{c}</td>" for c in cells)
            + f"<td><code>{settings}</code></td></tr>"
        )
    figures = []
    for image in images:
        with open(image, "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
        figures.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(os.path.basename(image))}">'
            f"<figcaption>{html.escape(os.path.basename(image))}</figcaption></figure>"
        )
    body = (
        f"<h1>{html.escape(title)}</h1><table><tr>{head}</tr>{''.join(rows)}</table>"
        + "".join(figures)
        + "<ul>"
        + "".join(f"<li>{html.escape(n)}</li>" for n in notes)
        + "</ul>"
    )
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:first-child{text-align:left}"
        "figure{display:inline-block;margin:1em}"
    )
    with open(path, "w", encoding="utf-8") as f:
        f.write(
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{body}</body></html>\n"
        )
