"""The example generator's summary of what it read, rejected and wrote, and the bad-share check.

Counts arrive from the Beam pipeline as a dict with tuple keys:
  ("rows_read", file)  ("rejected", file, reason)  ("below_rating_threshold", file)
  ("users",)  ("positives", split)  ("negatives", split)  ("examples", split)
  and, with service logs: ("log_requests",) ("log_positives",) ("log_negatives",) ("log_unknown_items",)
  ("log_orphan_events",)
`build_summary` turns them into the JSON-ready summary.json; `check_summary` raises `BadInputError` when a
file's share of rejected rows exceeds `max_bad_share` or when nothing usable was produced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from components.data_files import BELOW_RATING_THRESHOLD, REASONS
from components.interactions import SPLITS

CATALOG = "catalog"


class BadInputError(ValueError):
    """The input data is too broken to train on; the message lists counts and where the bad rows are."""


def build_summary(
    counts: Mapping[tuple[str, ...], int],
    sources: Sequence[str],
    num_negatives: int,
    rejected_path: str,
    logs: Any = None,
) -> dict[str, Any]:
    """The summary.json content. Every file, reason and split appears, with 0 when nothing was counted.
    `logs` (example_gen.LogSpans, or None without service logs) adds a "logs" section."""
    files = {source: _file_summary(counts, source) for source in sources}
    positives = {split: counts.get(("positives", split), 0) for split in SPLITS}
    negatives = {split: counts.get(("negatives", split), 0) for split in SPLITS}
    return {
        "files": files,
        "rejected": {r: sum(f["rejected"][r] for f in files.values()) for r in REASONS},
        "users": counts.get(("users",), 0),
        "positives": positives,
        "negatives": negatives,
        "negatives_per_positive": num_negatives,
        # Positives whose user has fewer candidate negatives than asked leave this many slots empty.
        "negatives_short": {s: positives[s] * num_negatives - negatives[s] for s in SPLITS},
        "examples": {split: counts.get(("examples", split), 0) for split in (*SPLITS, CATALOG)},
        "rejected_path": rejected_path,
        "logs": None if logs is None else _logs_summary(counts, logs),
    }


def _logs_summary(counts: Mapping[tuple[str, ...], int], logs: Any) -> dict[str, Any]:
    """What the service's logs added: train positives (taken items) and real negatives (shown, not taken)."""
    return {
        "logs_dir": logs.logs_dir,
        "served_spans": list(logs.served),
        "events_spans": list(logs.events),
        **{
            key: counts.get((f"log_{key}",), 0)
            for key in ("requests", "positives", "negatives", "unknown_items", "orphan_events")
        },
    }


def _file_summary(counts: Mapping[tuple[str, ...], int], source: str) -> dict[str, Any]:
    rejected = {reason: counts.get(("rejected", source, reason), 0) for reason in REASONS}
    read, bad = counts.get(("rows_read", source), 0), sum(rejected.values())
    return {
        "rows_read": read,
        "rows_rejected": bad,
        "rows_kept": read - bad,
        "bad_share": bad / read if read else 0.0,
        "rejected": rejected,
        BELOW_RATING_THRESHOLD: counts.get((BELOW_RATING_THRESHOLD, source), 0),
    }


def check_summary(summary: Mapping[str, Any], max_bad_share: float) -> None:
    """Raises BadInputError for empty files, a bad share above `max_bad_share`, or no train examples."""
    problems = []
    for source, f in summary["files"].items():
        if f["rows_read"] == 0:
            problems.append(f"{source} has no data rows")
        elif f["bad_share"] > max_bad_share:
            reasons = ", ".join(f"{r}={n}" for r, n in f["rejected"].items() if n)
            problems.append(
                f"{source}: {f['rows_rejected']} of {f['rows_read']} rows rejected "
                f"({f['bad_share']:.1%} > max_bad_share {max_bad_share:.1%}): {reasons}"
            )
    if not problems and summary["examples"]["train"] == 0:
        problems.append("no train examples were produced (every user has a single positive, or none)")
    if problems:
        raise BadInputError(
            "bad input data: "
            + "; ".join(problems)
            + f". Every rejected row is listed with its reason in {summary['rejected_path']}"
        )
