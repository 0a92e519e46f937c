"""Training examples from the recommendation service's logs (serving/event_log.py's schema), per request.

One served record and the events that name its request id become:
  * a positive (label 1) for each displayed item the user clicked, added to the cart or bought;
  * a real negative (label 0) for each displayed item the user did none of those with;
each with the history the model saw when it served the list (the logs hold pseudonyms, so the history is the
one recorded, never a join with raw ids), the user's pseudonym, the slot's position (for the ranking head's
position bias, trainer/features.py POSITION_BUCKET) and the time of the first event on the item (else the
time it was served). "Displayed" means an impression event (`SHOWN_IMPRESSIONS`), or every served slot
(`SHOWN_SERVED`, for shops that send no impressions). A taken item that was not displayed still counts as a
positive (the shop saw the user take it) at its served position. Events that name no served record are
counted, not used. Log examples all go to the train split: eval stays the dataset's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from components.interactions import TRAIN, ExampleStub
from serving.event_log import (
    EVENT_TYPES,
    POSITIONS,
    SHOWN,
    SHOWN_IMPRESSIONS,
    SHOWN_SERVED,
    TS,
    TYPE,
    USER_PSEUDONYM,
)
from trainer import features

IMPRESSION = EVENT_TYPES[0]
TAKEN = frozenset(EVENT_TYPES[1:])  # click, add_to_cart, purchase: the user took the item


def request_examples(
    served: Iterable[Mapping], events: Iterable[Mapping], shown: str = SHOWN_IMPRESSIONS
) -> list[ExampleStub]:
    """The examples of one request id: `served` holds its served record (none: the events are orphans;
    several: a duplicate log line, the first is used) and `events` every event naming it."""
    if shown not in SHOWN:
        raise ValueError(f"shown must be one of {list(SHOWN)}, got {shown!r}")
    served = list(served)
    if not served:
        return []
    record = served[0]
    slots = {
        item: position
        for item, position in zip(record[features.ITEM_IDS], record[POSITIONS], strict=True)
        if item
    }
    displayed = set(slots) if shown == SHOWN_SERVED else set()
    taken: dict[str, float] = {}  # item → time of its first taking event
    for event in events:
        item = event[features.ITEM_ID]
        if item not in slots:
            continue
        if event[TYPE] == IMPRESSION:
            displayed.add(item)
        elif event[TYPE] in TAKEN:
            taken[item] = min(taken.get(item, float("inf")), float(event[TS]))
    user, history = record[USER_PSEUDONYM], tuple(record[features.HISTORY])
    served_at = int(record[TS])
    return [
        ExampleStub(
            TRAIN,
            user,
            item,
            history,
            int(taken[item]) if item in taken else served_at,
            1.0 if item in taken else 0.0,
            position,
        )
        for item, position in sorted(slots.items(), key=lambda kv: kv[1])
        if item in taken or item in displayed
    ]
