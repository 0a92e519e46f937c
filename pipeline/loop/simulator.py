"""A simulated shop in front of the recommendation service, for closing the loop (`make loop`).

Shoppers with hidden tastes ask the service (serving/service.py) for lists and react to them: each day
`users_per_day` dataset users each run `sessions_per_user` sessions of POST /v1/recommendations, then one
POST /v1/events batch per list (impressions for every slot shown, then click, add_to_cart and purchase
events). The service logs both; the caller rotates the logs between days and retrains on them.

Hidden tastes come from the dataset the model was trained on: an item's category (its most specific, last
one) and brand; a user's favourite category and brand are those of most of their interactions (ties: the
smallest name). Relevance mirrors the synthetic generator's preferences (pipeline/demo/synthetic_data.py):

  relevance(u, i) = (1 + CATEGORY_BOOST·[category matches]) · (1 + BRAND_BOOST·[brand matches])
                    / ((1 + CATEGORY_BOOST) · (1 + BRAND_BOOST))                      ∈ (0, 1]

Click model (position-based): slot p (0-based) is examined with probability 1 / (p + 1)^examination_decay,
an examined item is clicked with probability click_scale · relevance, and a clicked item is added to the
cart with probability add_to_cart_rate and (independently) purchased with probability purchase_rate.

Deterministic given the seed: the day's users come from (seed, day), each session's draws from (seed, day,
user index, session), a fixed number of draws per slot, so a failed request changes nothing else.
Loopback only: the service URL must name a loopback host; proxies from the environment are ignored.

  python -m pipeline.loop.simulator --data DIR [--url http://127.0.0.1:8080] [--days 1] [--first_day 0]
      [--users_per_day 200] [--k 10] [--click_scale 0.6] [--no-send_impressions] ...
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import math
import sys
import typing
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import requests

from components.data_files import (
    Interaction,
    Item,
    find_dataset_files,
    parse_interaction,
    parse_item,
    read_raw_rows,
)
from pipeline.demo.synthetic_data import BRAND_BOOST, CATEGORY_BOOST
from serving import service_api as api
from serving.config import DEFAULT_HOST
from serving.log_fields import EVENT_TYPES
from serving.service_config import SERVICE_PORT, ConfigError
from trainer import features

DEFAULT_URL = f"http://{DEFAULT_HOST}:{SERVICE_PORT}"
IMPRESSION, CLICK, ADD_TO_CART, PURCHASE = EVENT_TYPES  # the log's event types, in funnel order
MAX_RELEVANCE = (1 + CATEGORY_BOOST) * (1 + BRAND_BOOST)
# Keys of the service's answers that serving/service.py writes as literals.
ITEMS_KEY, ERROR_KEY = "items", "error"
MAX_ERROR_CHARS = 300  # of an answer's body quoted in an error message
# Random streams: a distinct first word keeps the days' user draws and the sessions' draws apart.
_USERS_STREAM, _SESSION_STREAM = 0, 1


@dataclass(frozen=True)
class SimulatorConfig:
    users_per_day: int = 200  # at most the dataset's users: drawn without replacement
    sessions_per_user: int = 1
    k: int = api.DEFAULT_K
    examination_decay: float = 1.0  # P(examine slot p) = 1 / (p + 1)^decay; 0 = every slot is looked at
    click_scale: float = 0.6  # P(click | examined) = click_scale · relevance
    purchase_rate: float = 0.25  # P(purchase | click)
    add_to_cart_rate: float = 0.3  # P(add_to_cart | click)
    send_impressions: bool = True  # an impression event per slot shown; False: the shop sends none
    surface: str = "loop"
    seed: int = 0
    timeout_s: float = 10.0  # per HTTP call

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for name in (field.name for field in dataclasses.fields(self) if hints[field.name] is int):
            _check_int(name, getattr(self, name), minimum=0 if name == "seed" else 1)  # counts: >= 1
        for name in ("click_scale", "purchase_rate", "add_to_cart_rate"):
            value = getattr(self, name)
            _check(
                name, _is_number(value) and 0 <= value <= 1, f"must be a probability in [0, 1], got {value!r}"
            )
        decay = self.examination_decay
        _check("examination_decay", _is_number(decay) and decay >= 0, f"must be a number >= 0, got {decay!r}")
        timeout = self.timeout_s
        _check("timeout_s", _is_number(timeout) and timeout > 0, f"must be a number > 0, got {timeout!r}")
        _check("send_impressions", isinstance(self.send_impressions, bool), "must be True or False")
        _check("surface", isinstance(self.surface, str) and bool(self.surface), "must be a non-empty string")


def _check(name: str, ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(name, message)


def _check_int(name: str, value: object, minimum: int) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    _check(name, ok, f"must be an integer >= {minimum}, got {value!r}")


def _is_number(value: object) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --- hidden tastes -------------------------------------------------------------------------------------
class ItemTraits(NamedTuple):
    category: str  # the item's last (most specific) category; "" when it has none
    brand: str  # "" when unknown


class Taste(NamedTuple):
    category: str  # the user's most frequent category; "" when none of their items has one
    brand: str


def relevance(taste: Taste, traits: ItemTraits) -> float:
    """How much the user likes the item, in (0, 1]: 1 for their category and brand."""
    category = bool(taste.category) and taste.category == traits.category
    brand = bool(taste.brand) and taste.brand == traits.brand
    return (1 + CATEGORY_BOOST * category) * (1 + BRAND_BOOST * brand) / MAX_RELEVANCE


def _most_frequent(counts: Counter) -> str:
    """The most frequent name; ties go to the smallest name, so the result never depends on file order."""
    return min(counts.items(), key=lambda pair: (-pair[1], pair[0]), default=("", 0))[0]


@dataclass(frozen=True)
class HiddenTastes:
    items: dict[str, ItemTraits]
    users: dict[str, Taste]  # only users with at least one valid interaction

    def relevance(self, user_id: str, item_id: str) -> float:
        """An item outside the dataset has no traits: the base relevance."""
        return relevance(self.users[user_id], self.items.get(item_id, ItemTraits("", "")))


def load_tastes(data_dir: str) -> HiddenTastes:
    """Item traits and user tastes of a dataset folder; rejected rows and unknown items are skipped."""
    files = find_dataset_files(data_dir)
    items: dict[str, ItemTraits] = {}
    for row in read_raw_rows(files.items):
        item = parse_item(row)
        if isinstance(item, Item) and item.item_id not in items:  # the first row wins, as in the pipeline
            items[item.item_id] = ItemTraits(item.categories[-1] if item.categories else "", item.brand)
    categories: dict[str, Counter] = defaultdict(Counter)
    brands: dict[str, Counter] = defaultdict(Counter)
    for row in read_raw_rows(files.interactions):
        interaction = parse_interaction(row)
        if not isinstance(interaction, Interaction) or interaction.item_id not in items:
            continue
        traits = items[interaction.item_id]
        categories[interaction.user_id].update([traits.category] if traits.category else [])
        brands[interaction.user_id].update([traits.brand] if traits.brand else [])
    users = {
        user: Taste(_most_frequent(categories[user]), _most_frequent(brands[user]))
        for user in sorted(categories)
    }
    return HiddenTastes(items, users)


# --- click model ---------------------------------------------------------------------------------------
class SlotOutcome(NamedTuple):
    examined: bool
    clicked: bool
    added_to_cart: bool
    purchased: bool


def slot_outcomes(
    relevances: Sequence[float], config: SimulatorConfig, rng: np.random.Generator
) -> list[SlotOutcome]:
    """What the user does with each slot of a list (relevance per slot, in list order)."""
    draws = rng.random((4, len(relevances)))  # always 4 per slot: outcomes never shift later draws
    examine = 1.0 / (np.arange(len(relevances)) + 1.0) ** config.examination_decay
    examined = draws[0] < examine
    clicked = examined & (draws[1] < config.click_scale * np.asarray(relevances, dtype=float))
    carted = clicked & (draws[2] < config.add_to_cart_rate)
    purchased = clicked & (draws[3] < config.purchase_rate)
    return [SlotOutcome(*map(bool, slot)) for slot in zip(examined, clicked, carted, purchased, strict=True)]


# --- the shop -------------------------------------------------------------------------------------------
@dataclass
class DayStats:
    """One simulated day. Event counts are of acknowledged batches only (what the service logged)."""

    day: int
    users: int = 0
    requests: int = 0  # POST /v1/recommendations sent
    failed_requests: int = 0  # of them: no usable 200 answer
    slots: int = 0  # items in the answered lists
    event_batches: int = 0  # POST /v1/events sent
    failed_event_batches: int = 0
    impressions: int = 0
    clicks: int = 0
    add_to_carts: int = 0
    purchases: int = 0
    tail_clicks: int = 0  # clicks on items the answer flagged is_tail
    new_clicks: int = 0  # ... is_new
    first_error: str | None = None

    def failed(self, message: str) -> None:
        self.first_error = self.first_error or message

    @property
    def ctr(self) -> float | None:
        """Clicks per slot served (impressions may not be sent)."""
        return self.clicks / self.slots if self.slots else None

    def summary(self) -> str:
        ctr = "n/a" if self.ctr is None else f"{self.ctr:.3f}"
        line = (
            f"day {self.day}: {self.users} users, {self.requests} requests ({self.failed_requests} failed), "
            f"{self.slots} slots, {self.impressions} impressions, {self.clicks} clicks (ctr {ctr}, "
            f"tail {self.tail_clicks}, new {self.new_clicks}), {self.add_to_carts} add-to-carts, "
            f"{self.purchases} purchases, {self.event_batches} event batches "
            f"({self.failed_event_batches} failed)"
        )
        return line + (f"; first error: {self.first_error}" if self.first_error else "")


def check_loopback_url(url: str) -> str:
    """The URL without a trailing slash; ConfigError unless it is http(s) on a loopback host."""
    parts = urllib.parse.urlsplit(url)
    try:
        host = parts.hostname or ""
        parts.port  # noqa: B018 (raises on a bad port)
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    _check(
        "service_url",
        parts.scheme in ("http", "https") and loopback,
        f"must be a loopback http URL, got {url!r}",
    )
    return url.rstrip("/")


class ShopSimulator:
    """Simulated shoppers of one dataset against the service at `service_url`. Use as a context manager."""

    def __init__(self, data_dir: str, service_url: str = DEFAULT_URL, config: SimulatorConfig | None = None):
        self.config = config or SimulatorConfig()
        self.url = check_loopback_url(service_url)
        self.tastes = load_tastes(data_dir)
        self.user_ids = sorted(self.tastes.users)
        if not self.user_ids:
            raise ValueError(f"{data_dir!r}: no user with a valid interaction to simulate")
        self._http = requests.Session()
        self._http.trust_env = False  # no proxy from the environment: the service is on loopback

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ShopSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def day_users(self, day: int) -> list[str]:
        """The day's shoppers: min(users_per_day, all) dataset users, drawn from (seed, day)."""
        rng = np.random.default_rng([_USERS_STREAM, self.config.seed, day])
        size = min(self.config.users_per_day, len(self.user_ids))
        return [self.user_ids[i] for i in rng.choice(len(self.user_ids), size=size, replace=False)]

    def run_day(self, day: int) -> DayStats:
        """Runs every session of the day; failures are counted in the stats, never raised."""
        if isinstance(day, bool) or not isinstance(day, int) or day < 0:
            raise ValueError(f"day: must be an integer >= 0, got {day!r}")
        users = self.day_users(day)
        stats = DayStats(day=day, users=len(users))
        for index, user in enumerate(users):
            for session in range(self.config.sessions_per_user):
                rng = np.random.default_rng([_SESSION_STREAM, self.config.seed, day, index, session])
                self._session(user, rng, stats)
        return stats

    def _session(self, user: str, rng: np.random.Generator, stats: DayStats) -> None:
        stats.requests += 1
        ask = {features.USER_ID: user, features.K: self.config.k, api.SURFACE: self.config.surface}
        answer = self._post(api.RECOMMENDATIONS_PATH, ask, stats)
        if answer is None:
            stats.failed_requests += 1
            return
        try:
            request_id = answer[api.REQUEST_ID]
            entries = answer[ITEMS_KEY]
            item_ids = [entry[features.ITEM_ID] for entry in entries]
            flags = [(bool(entry[features.IS_TAIL]), bool(entry[features.IS_NEW])) for entry in entries]
        except (KeyError, TypeError) as e:
            stats.failed_requests += 1
            stats.failed(f"{api.RECOMMENDATIONS_PATH}: unexpected answer ({type(e).__name__}: {e})")
            return
        stats.slots += len(item_ids)
        outcomes = slot_outcomes([self.tastes.relevance(user, item) for item in item_ids], self.config, rng)
        events = self._events(request_id, user, item_ids, outcomes)
        if not events:
            return
        stats.event_batches += 1
        if self._post(api.EVENTS_PATH, {api.EVENTS: events}, stats) is None:
            stats.failed_event_batches += 1
            return
        counts = Counter(event[api.TYPE] for event in events)
        stats.impressions += counts[IMPRESSION]
        stats.clicks += counts[CLICK]
        stats.add_to_carts += counts[ADD_TO_CART]
        stats.purchases += counts[PURCHASE]
        clicked = [flag for flag, outcome in zip(flags, outcomes, strict=True) if outcome.clicked]
        stats.tail_clicks += sum(tail for tail, _ in clicked)
        stats.new_clicks += sum(new for _, new in clicked)

    def _events(
        self, request_id: str, user: str, item_ids: list[str], outcomes: list[SlotOutcome]
    ) -> list[dict]:
        """Impressions for every slot (if sent), then each clicked slot's click, add_to_cart, purchase."""
        kinds = [IMPRESSION] * len(item_ids) if self.config.send_impressions else []
        slots = list(range(len(item_ids))) if self.config.send_impressions else []
        for slot, outcome in enumerate(outcomes):
            taken = (
                (CLICK, outcome.clicked),
                (ADD_TO_CART, outcome.added_to_cart),
                (PURCHASE, outcome.purchased),
            )
            for kind, happened in taken:
                if happened:
                    kinds.append(kind)
                    slots.append(slot)
        return [
            {
                api.REQUEST_ID: request_id,
                features.USER_ID: user,
                features.ITEM_ID: item_ids[slot],
                api.TYPE: kind,
            }
            for kind, slot in zip(kinds, slots, strict=True)
        ]

    def _post(self, path: str, doc: dict, stats: DayStats) -> dict | None:
        """The answer of a 200, else None with the error noted in `stats` (not counted: the caller does)."""
        try:
            response = self._http.post(self.url + path, json=doc, timeout=self.config.timeout_s)
        except requests.RequestException as e:
            stats.failed(f"{path}: {type(e).__name__}: {e}")
            return None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict):
            detail = body.get(ERROR_KEY, body) if isinstance(body, dict) else response.text[:MAX_ERROR_CHARS]
            stats.failed(f"{path}: HTTP {response.status_code}: {detail}")
            return None
        return body


# --- command line ---------------------------------------------------------------------------------------
def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One `--<field>` flag per SimulatorConfig field, defaulted by it (booleans: --field / --no-field)."""
    defaults = SimulatorConfig()
    hints = typing.get_type_hints(SimulatorConfig)
    for field in dataclasses.fields(SimulatorConfig):
        default = getattr(defaults, field.name)
        if hints[field.name] is bool:
            parser.add_argument(f"--{field.name}", action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(f"--{field.name}", type=hints[field.name], default=default)


def main(argv: list[str] | None = None) -> int:
    """Runs `--days` days from `--first_day`, one line per day; 1 if any request or event batch failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the dataset folder (items + interactions)")
    parser.add_argument("--url", default=DEFAULT_URL, help="the service (loopback only)")
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--first_day", type=int, default=0, help="day number of the first day (seeds it)")
    _add_config_flags(parser)
    args = vars(parser.parse_args(argv))
    data, url, days, first_day = (args.pop(name) for name in ("data", "url", "days", "first_day"))
    if days < 1 or first_day < 0:
        parser.error("--days must be >= 1 and --first_day >= 0")
    try:
        simulator = ShopSimulator(data, url, SimulatorConfig(**args))
    except ConfigError as e:
        parser.error(f"argument --{'url' if e.name == 'service_url' else e.name}: {e.message}")
    except ValueError as e:  # the dataset: DataFileError, or no user to simulate
        parser.error(str(e))
    failures = 0
    with simulator:
        for day in range(first_day, first_day + days):
            stats = simulator.run_day(day)
            print(stats.summary(), flush=True)
            failures += stats.failed_requests + stats.failed_event_batches
    if failures:
        print(f"{failures} request(s) or event batch(es) failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
