"""evaluation.exposure on a constructed log: every value computed by hand."""

import numpy as np
import pytest

from evaluation.exposure import Catalog, arrivals, summarize

# a: head; b: tail; c: tail, new (arrived at 100); d: head, new (at 50); e: tail, never served
CATALOG = Catalog.from_items(
    {"a": (False, False), "b": (True, False), "c": (True, True), "d": (False, True), "e": (True, False)},
    {"c": 100.0, "d": 50.0},
)


def served(request_id, ts, items, tails, news):
    return {"request_id": request_id, "ts": ts, "item_ids": items, "is_tail": tails, "is_new": news}


def event(request_id, item, kind, ts):
    return {"request_id": request_id, "item_id": item, "type": kind, "ts": ts}


SERVED = [
    served("r1", 110.0, ["a", "b", "c"], [0, 1, 1], [0, 0, 1]),
    served("r2", 120.0, ["a", "d", ""], [0, 0, 0], [0, 1, 0]),  # "" = padding
    served("r3", 130.0, ["b", "x"], [1, 0], [0, 0]),  # x: not in this catalog
]
EVENTS = [
    event("r1", "a", "impression", 111.0),
    event("r1", "b", "impression", 111.0),
    event("r1", "c", "impression", 112.0),
    event("r1", "c", "click", 113.0),
    event("r1", "a", "click", 113.0),
    event("r2", "a", "impression", 121.0),
    event("r2", "d", "impression", 125.0),
    event("r2", "d", "click", 126.0),
    event("r2", "d", "click", 127.0),  # the same slot clicked twice: one click
    event("r3", "b", "click", 131.0),  # never displayed: not a click-through
    event("r9", "a", "impression", 140.0),  # unknown request
    event("r1", "e", "click", 141.0),  # not in that list
    event("r2", "a", "purchase", 150.0),  # neither a display nor a click
]


def test_impression_events_define_what_was_shown():
    assert summarize(SERVED, EVENTS, CATALOG) == {
        "requests": 3,
        "aplt": pytest.approx((2 / 3 + 0 + 1 / 2) / 3),
        "coverage": 0.8,  # a, b, c, d of five
        "tail_coverage": pytest.approx(2 / 3),  # b, c of b, c, e
        "gini": pytest.approx(1 / 3),  # slots per item [a2 b2 c1 d1 e0]: 10 / (5 * 6)
        "impressions": 5,
        "clicks": 3,
        "ctr": 0.6,
        "ctr_head": pytest.approx(2 / 3),  # r1 a, r2 a, r2 d shown; r1 a, r2 d clicked
        "ctr_tail": 0.5,  # r1 b, r1 c shown; r1 c clicked
        "ctr_new": 1.0,
        "new_items": 2,
        "new_items_shown": 2,
        "time_to_first_impression_s": 43.5,  # median of c 112 - 100 and d 125 - 50
        "unjoined_events": 2,
    }


def test_served_slots_as_shown_for_shops_without_impression_events():
    summary = summarize(SERVED, EVENTS, CATALOG, served_as_shown=True)
    assert (summary["impressions"], summary["clicks"]) == (7, 4)  # r3's b click now counts
    assert summary["ctr"] == pytest.approx(4 / 7)
    assert summary["ctr_tail"] == pytest.approx(2 / 3)  # r1 b, r1 c, r3 b shown; r1 c, r3 b clicked
    assert summary["time_to_first_impression_s"] == 40.0  # c 110 - 100, d 120 - 50


def test_since_drops_items_that_arrived_before_the_window():
    assert summarize(SERVED, EVENTS, CATALOG, since=60.0)["time_to_first_impression_s"] == 12.0  # c only


def test_nothing_served_gives_nulls_not_errors():
    summary = summarize([], [event("r1", "a", "click", 1.0)], CATALOG)
    assert summary["requests"] == 0 and summary["unjoined_events"] == 1
    assert summary["coverage"] == 0.0 and summary["tail_coverage"] == 0.0
    assert [summary[key] for key in ("aplt", "gini", "ctr", "time_to_first_impression_s")] == [None] * 4


def test_unknown_arrival_is_left_out_of_the_wait():
    catalog = Catalog(CATALOG.item_ids, CATALOG.is_tail, CATALOG.is_new, np.full(5, np.nan))
    summary = summarize(SERVED, EVENTS, catalog)
    assert summary["new_items_shown"] == 2 and summary["time_to_first_impression_s"] is None


def test_an_item_arrives_with_the_first_list_of_the_first_version_that_lists_it_new():
    served = [
        {"model_version": 2, "ts": 50.0},
        {"model_version": 1, "ts": 10.0},
        {"model_version": 1, "ts": 5.0},
        {"model_version": 2, "ts": 40.0},
    ]
    new = {1: ["c"], 2: ["c", "d"], 3: ["e"]}  # version 3 never served: e has not arrived
    assert arrivals(served, new) == {"c": 5.0, "d": 40.0}
