"""make report (evaluation/exposure_report.py) on logs written by the service's own EventLog: every number by
hand.

Model version 1 lists a (head), b, c (tail; c new), e (tail); version 2 the same with c no longer new and f
(tail, new) added. Span 1 (closed): r1 (v1, ts 100) [a, b, c], r2 (v1, ts 200) [a, c]; span 2 (closed):
r3 (v2, ts 1000) [f, a]; span 3 stays open: r4 (v2, ts 2000) [b, f]. b's r1 slot is never displayed, e is
never served; r2's click on c arrives late, in span 2. c arrives at 100 (v1's first list), f at 1000.
"""

import json
import os

import pandas as pd
import pytest

from evaluation import exposure_report
from evaluation.exposure_report import ReportError, build_report, main
from serving.event_log import EVENTS, SERVED, EventLog

PSEUDONYM = "feedc0de" * 8  # what the logs hold instead of a user id: never in the report
FLAGS = {  # item → (is_tail, is_new) per version
    1: {"a": (False, False), "b": (True, False), "c": (True, True), "e": (True, False)},
    2: {"a": (False, False), "b": (True, False), "c": (True, False), "e": (True, False), "f": (True, True)},
}
ATTRIBUTES = {  # item → (brand, categories)
    "a": ("Acme", ["Pens"]),
    "b": ("Acme", ["Pens", "Paper"]),
    "c": ("Bolt", ["Paper"]),
    "e": ("Acme", ["Ink"]),
    "f": ("Bolt", []),
}


def served(request_id, ts, version, items):
    flags = [FLAGS[version][item] for item in items]
    n = len(items)
    return {
        "request_id": request_id,
        "user_pseudonym": PSEUDONYM,
        "ts": ts,
        "model_name": "tailtower",
        "model_version": version,
        "surface": "home",
        "knobs": "{}",
        "history": ["a"],
        "item_ids": items,
        "positions": list(range(n)),
        "scores": [1.0] * n,
        "is_tail": [tail for tail, _ in flags],
        "is_new": [new for _, new in flags],
        "sponsored": [False] * n,
        "reasons": [""] * n,
        "because": [""] * n,
        "rules_fired": [],
    }


def events(request_id, *entries):
    return [
        {"request_id": request_id, "user_pseudonym": PSEUDONYM, "item_id": item, "type": kind, "ts": ts}
        for item, kind, ts in entries
    ]


def write_logs(logs_dir):
    log = EventLog(logs_dir, span=1)
    try:
        log.append(SERVED, [served("r1", 100.0, 1, ["a", "b", "c"]), served("r2", 200.0, 1, ["a", "c"])])
        log.append(EVENTS, events("r1", ("a", "impression", 101.0), ("c", "impression", 105.0)))
        log.append(EVENTS, events("r1", ("c", "click", 110.0), ("a", "click", 102.0)))
        log.append(EVENTS, events("r2", ("a", "impression", 201.0), ("c", "impression", 201.0)))
        log.rotate()
        log.append(SERVED, [served("r3", 1000.0, 2, ["f", "a"])])
        log.append(EVENTS, events("r2", ("c", "click", 300.0)))  # late: r2 was served in span 1
        log.append(EVENTS, events("r3", ("f", "impression", 1010.0), ("a", "impression", 1010.0)))
        log.append(EVENTS, events("r3", ("f", "click", 1100.0), ("a", "purchase", 1200.0)))
        log.append(EVENTS, events("r9", ("a", "click", 1300.0)))  # an unknown request
        log.rotate()
        log.append(SERVED, [served("r4", 2000.0, 2, ["b", "f"])])
        log.append(EVENTS, events("r4", ("b", "impression", 2001.0), ("f", "impression", 2001.0)))
        log.append(EVENTS, events("r4", ("b", "click", 2005.0)))
    finally:
        log.close()  # span 3 stays open: its journals are all there is of it


def write_model_metadata(base):
    """<base>/<version>/assets.extra/catalog.jsonl, as the Trainer writes it (serving/catalog_metadata.py)."""
    for version, flags in FLAGS.items():
        folder = os.path.join(base, str(version), "assets.extra")
        os.makedirs(folder)
        with open(os.path.join(folder, "catalog.jsonl"), "w", encoding="utf-8") as f:
            for item, (tail, new) in flags.items():
                brand, categories = ATTRIBUTES[item]
                doc = {"item_id": item, "title": f"Item {item}", "brand": brand, "categories": categories}
                f.write(json.dumps({**doc, "is_tail": tail, "is_new": new}) + "\n")


def files_of(folder):
    """path → bytes of every file under `folder`."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                found[os.path.join(root, name)] = f.read()
    return found


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The report of the constructed logs with the model's catalog metadata (no dataset folder)."""
    root = tmp_path_factory.mktemp("report")
    logs, base, out = str(root / "logs"), str(root / "serving"), str(root / "out")
    write_logs(logs)
    write_model_metadata(base)
    before = files_of(logs)
    summary = build_report(logs, out, model_base_path=base)
    return {"summary": summary, "out": out, "logs": logs, "before": before}


def read_csv(report, name):
    return pd.read_csv(os.path.join(report["out"], name), keep_default_na=False, na_values=[""])


def test_per_item_counts_ctr_and_never_shown(report):
    items = read_csv(report, exposure_report.PER_ITEM).set_index("item_id")
    assert list(items.index) == ["a", "b", "c", "e", "f"]  # the latest version's catalog, in its order
    counts = items[["served_slots", "impressions", "clicks"]].to_dict("index")
    assert counts == {
        "a": {"served_slots": 3, "impressions": 3, "clicks": 1},
        "b": {"served_slots": 2, "impressions": 1, "clicks": 1},  # r1's b never displayed
        "c": {"served_slots": 2, "impressions": 2, "clicks": 2},  # r2's click came in the next span
        "e": {"served_slots": 0, "impressions": 0, "clicks": 0},
        "f": {"served_slots": 2, "impressions": 2, "clicks": 1},
    }
    assert items["ctr"].to_dict() == pytest.approx(
        {"a": 1 / 3, "b": 1.0, "c": 1.0, "e": float("nan"), "f": 0.5}, nan_ok=True
    )  # e: never displayed, no rate
    assert items.loc["b", "title"] == "Item b" and items.loc["b", "categories"] == "Pens|Paper"
    assert list(items[items["is_tail"]].index) == ["b", "c", "e", "f"]
    assert list(items[items["is_new"]].index) == ["c", "f"]  # c: new when version 1 served it
    summary = report["summary"]
    assert (summary["items"], summary["tail_items"]) == (5, 4)
    assert (summary["items_never_served"], summary["items_never_shown"]) == (1, 1)


def test_new_items_time_to_first_impression_and_click(report):
    items = read_csv(report, exposure_report.PER_ITEM).set_index("item_id")
    assert items.loc[["c", "f"], "arrival_ts"].tolist() == [100.0, 1000.0]
    assert items.loc[["c", "f"], "time_to_first_impression_s"].tolist() == [5.0, 10.0]
    assert items.loc[["c", "f"], "time_to_first_click_s"].tolist() == [10.0, 100.0]
    assert items.loc[["a", "b", "e"], "time_to_first_impression_s"].isna().all()  # not new
    summary = report["summary"]
    assert (summary["new_items"], summary["new_items_shown"]) == (2, 2)
    assert summary["time_to_first_impression_s"] == 7.5
    assert summary["time_to_first_click_s"] == 55.0


def test_head_vs_tail_ctr_and_gini(report):
    summary = report["summary"]
    assert (summary["requests"], summary["served_slots"], summary["impressions"], summary["clicks"]) == (
        4,
        9,
        8,
        5,
    )
    assert summary["ctr"] == pytest.approx(5 / 8)
    assert summary["ctr_head"] == pytest.approx(1 / 3)  # a: r1, r2, r3 displayed; r1 clicked
    assert summary["ctr_tail"] == pytest.approx(4 / 5)  # c r1, c r2, f r3, b r4, f r4; all but f r4 clicked
    assert summary["ctr_new"] == pytest.approx(3 / 4)  # c r1, c r2, f r3, f r4
    # served slots per catalog item [a3 b2 c2 e0 f2] → sorted [0 2 2 2 3]: (-2·2 + 2·2 + 4·3) / (5 · 9)
    assert summary["gini"] == pytest.approx(12 / 45)
    # impressions [a3 b1 c2 e0 f2] → [0 1 2 2 3]: (-2·1 + 2·2 + 4·3) / (5 · 8)
    assert summary["gini_impressions"] == pytest.approx(14 / 40)
    assert summary["tail_share_served"] == pytest.approx(6 / 9)
    assert summary["tail_share_shown"] == pytest.approx(5 / 8)
    assert summary["unjoined_events"] == 1
    with open(os.path.join(report["out"], exposure_report.SUMMARY)) as f:
        assert json.load(f) == summary


def test_tail_share_per_span_reads_the_open_span(report):
    spans = read_csv(report, exposure_report.PER_SPAN)
    assert spans["span"].astype(str).tolist() == ["1", "2", "open"]
    assert spans["requests"].tolist() == [2, 1, 1]
    assert spans["tail_share_served"].tolist() == pytest.approx([3 / 5, 1 / 2, 1.0])
    assert spans["tail_share_shown"].tolist() == pytest.approx([2 / 4, 1 / 2, 1.0])  # r1's b not displayed
    assert spans["aplt"].tolist() == pytest.approx([(2 / 3 + 1 / 2) / 2, 1 / 2, 1.0])
    assert spans["ctr"].tolist() == pytest.approx([3 / 4, 1 / 2, 1 / 2])  # the late click counts in span 1
    summary = report["summary"]
    assert (summary["closed_spans"], summary["open_span_requests"]) == (2, 1)


def test_per_brand_and_category(report):
    brands = read_csv(report, exposure_report.PER_BRAND).set_index("brand")
    assert brands.loc["Acme", ["items", "items_shown", "impressions", "clicks"]].tolist() == [3, 2, 4, 2]
    assert brands.loc["Bolt", ["items", "impressions", "clicks", "ctr"]].tolist() == [2, 4, 3, 0.75]
    assert brands["share_of_impressions"].to_dict() == {"Acme": 0.5, "Bolt": 0.5}
    categories = read_csv(report, exposure_report.PER_CATEGORY).set_index("categories")
    assert categories["impressions"].to_dict() == {"Pens": 4, "Paper": 3, "(none)": 2, "Ink": 0}
    assert categories.loc["Paper", "ctr"] == 1.0 and categories.loc["Pens", "items"] == 2  # b in both


def test_page_plots_no_pseudonyms_and_logs_untouched(report):
    out = report["out"]
    with open(os.path.join(out, exposure_report.PAGE), encoding="utf-8") as f:
        page = f.read()
    images = ["tail_share.png", "ctr.png", "lorenz.png", "top_brand.png", "top_categories.png"]
    for name in images:
        assert f"src='{name}'" in page and os.path.getsize(os.path.join(out, name)) > 1000
    assert "http" not in page and "data:" not in page  # relative links only, nothing external
    assert exposure_report.NO_DATA not in page
    assert all(PSEUDONYM.encode() not in data for data in files_of(out).values())
    assert files_of(report["logs"]) == report["before"]  # read only, the open journals included


def test_dataset_catalog_without_model_metadata(tmp_path):
    """CATALOG gives the items and attributes; head / tail / new come from the flags as served."""
    logs, data, out = str(tmp_path / "logs"), tmp_path / "data", str(tmp_path / "out")
    write_logs(logs)
    data.mkdir()
    (data / "interactions.tsv").write_text("user_id\titem_id\trating\ttime\nu1\ta\t\t1\n")
    rows = [{"item_id": i, "title": f"Shop {i}", "brand": "Crane"} for i in ("a", "b", "c", "f", "g")]
    (data / "items.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = build_report(logs, out, model_base_path=str(tmp_path / "no-models"), data_dir=str(data))
    items = pd.read_csv(os.path.join(out, exposure_report.PER_ITEM)).set_index("item_id")
    assert list(items.index) == ["a", "b", "c", "f", "g"]
    assert items.loc["g", "served_slots"] == 0 and items.loc["a", "title"] == "Shop a"
    assert list(items[items["is_new"]].index) == ["c", "f"]  # as served by versions 1 and 2
    assert list(items[items["is_tail"]].index) == ["b", "c", "f"]
    assert summary["flags"] == "as last served" and summary["time_to_first_click_s"] == 55.0
    brands = pd.read_csv(os.path.join(out, exposure_report.PER_BRAND))
    assert brands[["brand", "items", "impressions"]].values.tolist() == [["Crane", 5, 8]]


def test_without_any_catalog_reports_per_item_only(tmp_path):
    logs, out, base = str(tmp_path / "logs"), str(tmp_path / "out"), str(tmp_path / "serving")
    write_logs(logs)
    write_model_metadata(base)
    build_report(logs, out, model_base_path=base)  # an earlier run, with brands and categories
    summary = build_report(logs, out, model_base_path=None)
    assert summary["items"] == 4 and summary["items_never_served"] == 0  # the served items: a, b, c, f
    assert summary["flags"] == "as last served" and summary["catalog"].startswith("served records only")
    written = ["index.html", "per_item.csv", "per_span.csv", "summary.json", "tail_share.png", "ctr.png"]
    assert sorted(os.listdir(out)) == sorted([*written, "lorenz.png"])  # the earlier run's per_brand.csv went
    with open(os.path.join(out, exposure_report.PAGE), encoding="utf-8") as f:
        page = f.read()
    assert "per_item.csv" in page and "per_brand.csv" not in page


def test_no_served_records_still_writes_a_page_that_says_so(tmp_path, capsys):
    logs, out = str(tmp_path / "logs"), str(tmp_path / "out")
    EventLog(logs).close()  # a service that started and served nothing
    assert main(["--logs", logs, "--out", out, "--model_base_path", str(tmp_path / "none")]) == 0
    assert exposure_report.NO_DATA in capsys.readouterr().out
    with open(os.path.join(out, exposure_report.PAGE), encoding="utf-8") as f:
        assert exposure_report.NO_DATA in f.read()
    with open(os.path.join(out, exposure_report.SUMMARY)) as f:
        summary = json.load(f)
    assert summary["requests"] == 0 and summary["ctr"] is None
    assert not [name for name in os.listdir(out) if name.endswith(".png")]
    assert pd.read_csv(os.path.join(out, exposure_report.PER_SPAN)).empty


def test_a_missing_logs_folder_is_a_clear_error(tmp_path, capsys):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(ReportError, match="does not exist"):
        build_report(missing, str(tmp_path / "out"))
    assert main(["--logs", missing, "--out", str(tmp_path / "out")]) == 2
    assert f"logs folder {missing!r} does not exist" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")


def test_served_slots_as_displayed_for_shops_without_impressions(tmp_path):
    logs, out = str(tmp_path / "logs"), str(tmp_path / "out")
    write_logs(logs)
    assert main(["--logs", logs, "--out", out, "--model_base_path", "", "--shown", "served"]) == 0
    with open(os.path.join(out, exposure_report.SUMMARY)) as f:
        summary = json.load(f)
    assert (summary["shown"], summary["impressions"], summary["clicks"]) == ("served", 9, 5)
    assert summary["tail_share_shown"] == summary["tail_share_served"] == pytest.approx(6 / 9)
