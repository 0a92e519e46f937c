"""The service's public JSON API: request bodies checked into typed requests (field names are public API).

  POST /v1/recommendations {"user_id": str, "k": int = 10, "history": [str] = [], "surface": str = "default",
                            "knobs": {str: number | str} = {}, "rules": bool = true,
                            "exclude_ids" | "allowed_ids" | "categories" | "brands": [str] = []}
  GET /v1/users?limit=20 → {"source": str | null, "users": [{"user_id", "history": [{"item_id", "title"}]}]}
  GET /v1/history?user_id=u1 → {"items": [{"item_id", "title"}], "history_store": bool}
  POST /v1/events {"events": [{"request_id": str, "user_id": str, "item_id": str,
                               "type": "impression" | "click" | "add_to_cart" | "purchase", "ts": number?}]}

Every error is an `ApiError` whose message names the field (`events[2].type`), and for unknown fields lists
the known ones. Strings must be valid Unicode: a lone surrogate (JSON "\\ud800") can be neither logged nor
sent to the model, so it is a 400 naming the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from serving.event_log import EVENT_TYPES
from serving.service_config import ServiceConfig
from trainer import features

# The API's routes (public: shops call them).
RECOMMENDATIONS_PATH = "/v1/recommendations"
EVENTS_PATH = "/v1/events"
EXPOSURE_PATH = "/v1/exposure"
ROTATE_PATH = "/v1/logs/rotate"
USERS_PATH = "/v1/users"  # GET ?limit=n: dataset users to pick from (serving/explorer/__init__.py)
# GET ?user_id=...: the stored history with titles. The id is a query parameter, not a path segment: the
# service names request.path in its error log, and no raw user id goes to a log.
HISTORY_PATH = "/v1/history"
EXPLORER_PATH = "/"  # the web explorer's page; its files under EXPLORER_ASSETS_PATH
EXPLORER_ASSETS_PATH = "/explorer/{name}"

DEFAULT_K = 10
DEFAULT_USERS, MAX_USERS = 20, 200  # GET /v1/users?limit=
LIMIT = "limit"
DEFAULT_SURFACE = "default"
# Events that say the user wanted the item: they extend the user's history (an impression does not).
HISTORY_EVENTS = ("click", "add_to_cart", "purchase")

REQUEST_ID = "request_id"
SURFACE = "surface"
KNOBS = "knobs"
RULES = "rules"  # request: false serves without the rules file
REASON = features.REASON  # answer: per item {"code", "message", "because"} (serving/explanations.py) or null
CODE, MESSAGE = "code", "message"
FILTERS = tuple(features.FILTER_MAX_WIDTH)  # request: recommend's item filters, passed on as they are
EVENTS = "events"
TYPE = "type"
TS = "ts"


class ApiError(ValueError):
    """A bad request: HTTP `status` (400 by default) and a message naming the field."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RecommendationRequest:
    user_id: str
    k: int
    history: list[str]
    surface: str
    knobs: dict[str, float | int | str]
    rules: bool = True
    filters: dict[str, list[str]] = field(default_factory=dict)  # recommend's item filters, as given


@dataclass(frozen=True)
class Event:
    request_id: str
    user_id: str
    item_id: str
    type: str
    ts: float | None


def parse_json(body: bytes) -> dict:
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(f"the body is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise ApiError("the body must be a JSON object")
    return doc


def recommendation_request(doc: Mapping, config: ServiceConfig) -> RecommendationRequest:
    _known(doc, (features.USER_ID, features.K, features.HISTORY, SURFACE, KNOBS, RULES, *FILTERS), "")
    rules = doc.get(RULES, True)
    if not isinstance(rules, bool):
        raise ApiError(f"rules: must be true or false, got {rules!r}")
    k = doc.get(features.K, DEFAULT_K)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= config.max_k:
        raise ApiError(f"k: must be an integer in [1, {config.max_k}], got {k!r}")
    history = doc.get(features.HISTORY, [])
    if not isinstance(history, list) or not all(isinstance(i, str) and i for i in history):
        raise ApiError("history: must be a list of non-empty item id strings")
    for i, item in enumerate(history):
        _check_unicode(item, f"history[{i}]")
    if len(history) > config.max_history:
        raise ApiError(f"history: at most {config.max_history} items, got {len(history)}")
    knobs = doc.get(KNOBS, {})
    if not isinstance(knobs, dict) or not all(_is_knob_value(v) for v in knobs.values()):
        raise ApiError("knobs: must be an object of numbers or strings")
    for name, value in knobs.items():
        _check_unicode(name, "knobs")
        if isinstance(value, str):
            _check_unicode(value, f"knobs.{name}")
    return RecommendationRequest(
        user_id=_string(doc, features.USER_ID, ""),
        k=k,
        history=history,
        surface=_string(doc, SURFACE, "", DEFAULT_SURFACE),
        knobs=knobs,
        rules=rules,
        filters={name: _filter(doc, name) for name in FILTERS if name in doc},
    )


def users_limit(query: Mapping[str, str]) -> int:
    """GET /v1/users' `limit`: an integer in [1, MAX_USERS], DEFAULT_USERS when absent."""
    _known(query, (LIMIT,), "")
    raw = query.get(LIMIT, str(DEFAULT_USERS))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_USERS:
        raise ApiError(f"limit: must be an integer in [1, {MAX_USERS}], got {raw!r}")
    return int(raw)


def history_user(query: Mapping[str, str]) -> str:
    """GET /v1/history's `user_id` (required, non-empty)."""
    _known(query, (features.USER_ID,), "")
    return _string(query, features.USER_ID, "")


def _filter(doc: Mapping, name: str) -> list[str]:
    values = doc[name]
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise ApiError(f"{name}: must be a list of non-empty strings")
    limit = features.FILTER_MAX_WIDTH[name]
    if len(values) > limit:
        raise ApiError(f"{name}: at most {limit} values, got {len(values)}")
    for i, value in enumerate(values):
        _check_unicode(value, f"{name}[{i}]")
    return values


def events(doc: Mapping, config: ServiceConfig) -> list[Event]:
    _known(doc, (EVENTS,), "")
    raw = doc.get(EVENTS)
    if not isinstance(raw, list) or not raw:
        raise ApiError("events: must be a non-empty list")
    if len(raw) > config.max_events:
        raise ApiError(f"events: at most {config.max_events} per batch, got {len(raw)}", status=413)
    return [_event(item, f"events[{i}].") for i, item in enumerate(raw)]


def _event(item: object, where: str) -> Event:
    if not isinstance(item, dict):
        raise ApiError(f"{where[:-1]}: must be an object")
    _known(item, (REQUEST_ID, features.USER_ID, features.ITEM_ID, TYPE, TS), where)
    kind = _string(item, TYPE, where)
    if kind not in EVENT_TYPES:
        raise ApiError(f"{where}type: must be one of {list(EVENT_TYPES)}, got {kind!r}")
    ts = item.get(TS)
    if ts is not None and (not _is_number(ts) or not math.isfinite(ts) or ts < 0):
        raise ApiError(f"{where}ts: must be unix seconds (a number >= 0), got {ts!r}")
    return Event(
        request_id=_string(item, REQUEST_ID, where, allow_empty=True),
        user_id=_string(item, features.USER_ID, where),
        item_id=_string(item, features.ITEM_ID, where),
        type=kind,
        ts=None if ts is None else float(ts),
    )


def _known(doc: Mapping, names: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(doc) - set(names))
    if unknown:
        raise ApiError(f"{where}unknown field(s) {unknown}; known: {list(names)}")


def _string(
    doc: Mapping, name: str, where: str, default: str | None = None, allow_empty: bool = False
) -> str:
    value = doc.get(name, default)
    if value is None:
        raise ApiError(f"{where}{name}: required")
    if not isinstance(value, str) or not (value or allow_empty):
        raise ApiError(f"{where}{name}: must be a non-empty string, got {value!r}")
    _check_unicode(value, f"{where}{name}")
    return value


def _check_unicode(value: str, name: str) -> None:
    """ApiError naming the field for a string UTF-8 cannot encode (not echoing it: it may be a user id)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(f"{name}: must be valid Unicode text (it holds a lone surrogate)") from None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_knob_value(value: object) -> bool:
    return isinstance(value, str) or (_is_number(value) and math.isfinite(value))
