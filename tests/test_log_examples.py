"""components.log_examples on constructed log records: positives, real negatives, positions, histories."""

import pytest

from components.interactions import TRAIN, ExampleStub
from components.log_examples import request_examples
from serving.event_log import SHOWN_SERVED

SERVED = {
    "request_id": "r1",
    "user_pseudonym": "p1",
    "ts": 100.7,
    "history": ["h1", "h2"],
    "item_ids": ["a", "b", "c", "d", ""],  # "" = padding
    "positions": [0, 1, 2, 3, 4],
}


def event(item, kind, ts):
    return {"request_id": "r1", "user_pseudonym": "p1", "item_id": item, "type": kind, "ts": ts}


EVENTS = [
    event("a", "impression", 101.0),
    event("b", "impression", 101.0),
    event("c", "impression", 101.0),
    event("b", "click", 105.2),
    event("b", "purchase", 104.0),  # the earliest taking event gives the time
    event("d", "add_to_cart", 110.0),  # taken without an impression: still a positive
    event("z", "click", 111.0),  # not in the list: ignored
]


def stub(item, label, position, ts):
    return ExampleStub(TRAIN, "p1", item, ("h1", "h2"), ts, label, position)


def test_taken_items_are_positives_and_displayed_ones_real_negatives():
    assert request_examples([SERVED], EVENTS) == [
        stub("a", 0.0, 0, 100),
        stub("b", 1.0, 1, 104),
        stub("c", 0.0, 2, 100),
        stub("d", 1.0, 3, 110),
    ]


def test_without_impression_events_nothing_is_a_negative_unless_served_slots_count():
    taken_only = [e for e in EVENTS if e["type"] != "impression"]
    assert [s.item_id for s in request_examples([SERVED], taken_only)] == ["b", "d"]
    examples = request_examples([SERVED], taken_only, shown=SHOWN_SERVED)
    assert [(s.item_id, s.label) for s in examples] == [("a", 0.0), ("b", 1.0), ("c", 0.0), ("d", 1.0)]


def test_events_without_their_served_record_give_nothing():
    assert request_examples([], EVENTS) == []


def test_a_duplicated_served_record_counts_once():
    assert request_examples([SERVED, SERVED], EVENTS) == request_examples([SERVED], EVENTS)


def test_unknown_shown_mode_is_refused():
    with pytest.raises(ValueError, match="shown must be one of"):
        request_examples([SERVED], EVENTS, shown="maybe")
