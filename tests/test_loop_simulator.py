"""The shop simulator (pipeline/loop/simulator.py) against a fake service: aiohttp on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

from pipeline.loop import simulator as sim
from serving import service_api as api
from trainer import features

# The fake service's fixed list: (item_id, is_tail, is_new).
LISTED = (
    ("w0", False, False),
    ("w1", True, False),
    ("w2", False, True),
    ("w3", True, True),
    ("w4", False, False),
)


class FakeService:
    """Answers every recommendation with LISTED and records the bodies it gets; `fail` = 1-based request
    numbers to answer 500, `fail_events` = answer every events batch 503."""

    def __init__(self) -> None:
        self.asks: list[dict] = []
        self.batches: list[list[dict]] = []
        self.fail: set[int] = set()
        self.fail_events = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def _start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_post(api.RECOMMENDATIONS_PATH, self._recommend)
        app.router.add_post(api.EVENTS_PATH, self._events)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    async def _recommend(self, request: web.Request) -> web.Response:
        self.asks.append(await request.json())
        if len(self.asks) in self.fail:
            return web.json_response({"error": "model server: UNAVAILABLE"}, status=500)
        items = [
            {
                features.ITEM_ID: item,
                features.TITLE: item,
                features.SCORE: 1.0,
                features.IS_TAIL: tail,
                features.IS_NEW: new,
            }
            for item, tail, new in LISTED
        ]
        return web.json_response({api.REQUEST_ID: f"r{len(self.asks)}", "model_version": "1", "items": items})

    async def _events(self, request: web.Request) -> web.Response:
        batch = (await request.json())[api.EVENTS]
        self.batches.append(batch)
        if self.fail_events:
            return web.json_response({"error": "log backlog full"}, status=503)
        return web.json_response({"accepted": len(batch)})

    def reset(self) -> None:
        self.asks.clear()
        self.batches.clear()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture
def service():
    fake = FakeService()
    yield fake
    fake.close()


def write_dataset(folder: Path, items: list[dict], interactions: list[tuple[str, str]]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))
    rows = [f"{user}\t{item}\t\t{t}" for t, (user, item) in enumerate(interactions)]
    (folder / "interactions.tsv").write_text("user_id\titem_id\trating\ttime\n" + "\n".join(rows) + "\n")
    return str(folder)


def item(item_id: str, categories: list[str], brand: str = "") -> dict:
    return {"item_id": item_id, "title": f"Item {item_id}", "categories": categories, "brand": brand}


@pytest.fixture
def shop_data(tmp_path) -> str:
    """Every listed item is Writing by Nova, and every user prefers Writing and Nova: relevance 1."""
    items = [item(item_id, ["Office", "Writing"], "Nova") for item_id, _, _ in LISTED]
    items.append(item("p0", ["Office", "Paper"], "Apex"))
    interactions = [(f"u{u}", f"w{(u + n) % len(LISTED)}") for u in range(12) for n in range(3)]
    interactions += [(f"u{u}", "p0") for u in range(12)]
    return write_dataset(tmp_path / "shop", items, interactions)


def run(data: str, url: str, days: int = 1, **config) -> list[sim.DayStats]:
    with sim.ShopSimulator(data, url, sim.SimulatorConfig(**config)) as shop:
        return [shop.run_day(day) for day in range(days)]


# --- (1) hidden tastes ---------------------------------------------------------------------------------
def test_tastes_are_the_most_frequent_category_and_brand(tmp_path):
    items = [
        item("a1", ["Office", "Writing"], "Apex"),
        item("a2", ["Office", "Writing"], "Nova"),
        item("a3", ["Office", "Paper"], "Nova"),
        item("a4", ["Art"], "Apex"),
        item("a5", []),  # neither category nor brand
    ]
    interactions = [
        ("u1", "a1"),
        ("u1", "a2"),
        ("u1", "a3"),  # Writing 2 : Paper 1, Nova 2 : Apex 1
        ("u2", "a4"),
        ("u2", "a1"),  # Art 1 : Writing 1 -> the smaller name; Apex 2
        ("u3", "a5"),  # interacted, but no traits to prefer
        ("u4", "zz"),  # only an unknown item: skipped
    ]
    data = write_dataset(tmp_path / "tiny", items, interactions)
    with (tmp_path / "tiny" / "interactions.tsv").open("a") as f:
        f.write("u5\ta1\t\tnot-a-time\n")  # a rejected row: u5 is skipped too

    tastes = sim.load_tastes(data)

    assert tastes.users == {
        "u1": sim.Taste("Writing", "Nova"),
        "u2": sim.Taste("Art", "Apex"),
        "u3": sim.Taste("", ""),
    }
    assert tastes.items["a4"] == sim.ItemTraits("Art", "Apex")
    assert tastes.items["a5"] == sim.ItemTraits("", "")
    assert tastes.relevance("u1", "a2") == 1.0  # (1 + 15)(1 + 2) / 48
    assert tastes.relevance("u1", "a1") == pytest.approx(16 / 48)
    assert tastes.relevance("u1", "a3") == pytest.approx(3 / 48)
    assert tastes.relevance("u1", "a4") == pytest.approx(1 / 48)
    assert tastes.relevance("u1", "unknown") == pytest.approx(1 / 48)
    assert tastes.relevance("u3", "a5") == pytest.approx(1 / 48)  # "" never matches ""


# --- (2) determinism -----------------------------------------------------------------------------------
def test_same_seed_same_events_and_other_seed_other_events(service, shop_data):
    first = run(shop_data, service.url, days=2, users_per_day=8, seed=3)
    events, asks = list(service.batches), list(service.asks)
    service.reset()
    second = run(shop_data, service.url, days=2, users_per_day=8, seed=3)
    assert (service.batches, service.asks, second) == (events, asks, first)
    assert sum(s.clicks for s in first) > 0

    service.reset()
    run(shop_data, service.url, days=2, users_per_day=8, seed=4)
    assert service.batches != events


def test_days_draw_distinct_users_up_to_the_dataset(service, shop_data):
    with sim.ShopSimulator(shop_data, service.url, sim.SimulatorConfig(users_per_day=5)) as shop:
        day0, day1 = shop.day_users(0), shop.day_users(1)
    assert len(set(day0)) == 5 and day0 != day1
    stats = run(shop_data, service.url, users_per_day=100, sessions_per_user=2)[0]
    assert (stats.users, stats.requests) == (12, 24)  # 12 users in the dataset, drawn without replacement
    assert Counter(ask[features.USER_ID] for ask in service.asks) == {f"u{u}": 2 for u in range(12)}


# --- (3) what the events say ----------------------------------------------------------------------------
@pytest.mark.parametrize("send_impressions", [True, False])
def test_events_name_the_answer_and_follow_the_funnel(service, shop_data, send_impressions):
    stats = run(
        shop_data, service.url, users_per_day=12, sessions_per_user=3, send_impressions=send_impressions
    )[0]

    listed = [item_id for item_id, _, _ in LISTED]
    assert len(service.batches) == stats.event_batches <= stats.requests == 36
    assert service.asks[0] == {
        features.USER_ID: service.asks[0][features.USER_ID],
        features.K: 10,
        api.SURFACE: "loop",
    }  # no history: the service keeps it
    totals: Counter = Counter()
    for batch in service.batches:
        request_id = batch[0][api.REQUEST_ID]
        user = batch[0][features.USER_ID]
        assert {(e[api.REQUEST_ID], e[features.USER_ID]) for e in batch} == {(request_id, user)}
        assert all(e[features.ITEM_ID] in listed for e in batch)
        by_type = {
            kind: [e[features.ITEM_ID] for e in batch if e[api.TYPE] == kind] for kind in api.HISTORY_EVENTS
        }
        impressions = [e[features.ITEM_ID] for e in batch if e[api.TYPE] == sim.IMPRESSION]
        assert impressions == (listed if send_impressions else [])
        assert set(by_type[sim.ADD_TO_CART]) <= set(by_type[sim.CLICK])
        assert set(by_type[sim.PURCHASE]) <= set(by_type[sim.CLICK])
        if send_impressions:  # impressions come first
            assert [e[api.TYPE] for e in batch[: len(listed)]] == [sim.IMPRESSION] * len(listed)
        totals.update(e[api.TYPE] for e in batch)
    assert (stats.impressions, stats.clicks, stats.add_to_carts, stats.purchases) == (
        totals[sim.IMPRESSION],
        totals[sim.CLICK],
        totals[sim.ADD_TO_CART],
        totals[sim.PURCHASE],
    )
    assert stats.clicks > 0 and stats.add_to_carts > 0 and stats.purchases > 0
    assert stats.slots == 36 * len(LISTED)
    flags = {item_id: (tail, new) for item_id, tail, new in LISTED}
    clicked = [e[features.ITEM_ID] for b in service.batches for e in b if e[api.TYPE] == sim.CLICK]
    assert stats.tail_clicks == sum(flags[i][0] for i in clicked)
    assert stats.new_clicks == sum(flags[i][1] for i in clicked)


# --- (4) the click model's extremes ---------------------------------------------------------------------
def test_everything_relevant_and_examined_is_clicked(service, shop_data):
    stats = run(shop_data, service.url, users_per_day=6, click_scale=1.0, examination_decay=0.0)[0]
    assert stats.clicks == stats.slots == 6 * len(LISTED)
    for batch in service.batches:
        clicks = [e[features.ITEM_ID] for e in batch if e[api.TYPE] == sim.CLICK]
        assert clicks == [item_id for item_id, _, _ in LISTED]
    assert stats.tail_clicks == 6 * 2 and stats.new_clicks == 6 * 2


def test_no_click_at_scale_zero(service, shop_data):
    stats = run(shop_data, service.url, users_per_day=6, click_scale=0.0, examination_decay=0.0)[0]
    assert (stats.clicks, stats.add_to_carts, stats.purchases) == (0, 0, 0)
    assert stats.impressions == 6 * len(LISTED)  # the lists were still shown
    assert {e[api.TYPE] for b in service.batches for e in b} == {sim.IMPRESSION}


def test_slot_outcomes_follow_examination_decay():
    config = sim.SimulatorConfig(click_scale=1.0, examination_decay=1.0)
    rng = np.random.default_rng(0)
    examined = np.array(
        [[o.examined for o in sim.slot_outcomes([1.0] * 4, config, rng)] for _ in range(4000)]
    )
    np.testing.assert_allclose(examined.mean(axis=0), [1, 1 / 2, 1 / 3, 1 / 4], atol=0.03)


# --- (5) failures -----------------------------------------------------------------------------------------
def test_a_500_is_counted_and_the_day_goes_on(service, shop_data):
    service.fail = {2}
    stats = run(shop_data, service.url, users_per_day=5)[0]
    assert (stats.requests, stats.failed_requests, stats.event_batches) == (5, 1, 4)
    assert len(service.asks) == 5 and len(service.batches) == 4
    assert stats.first_error == f"{api.RECOMMENDATIONS_PATH}: HTTP 500: model server: UNAVAILABLE"
    assert "r2" not in {e[api.REQUEST_ID] for b in service.batches for e in b}


def test_rejected_event_batches_are_counted_not_logged(service, shop_data):
    service.fail_events = True
    stats = run(shop_data, service.url, users_per_day=3)[0]
    assert (stats.failed_requests, stats.event_batches, stats.failed_event_batches) == (0, 3, 3)
    assert (stats.impressions, stats.clicks) == (0, 0)
    assert stats.first_error == f"{api.EVENTS_PATH}: HTTP 503: log backlog full"


def test_an_unreachable_service_is_counted(service, shop_data):
    url = service.url
    service.close()
    stats = run(shop_data, url, users_per_day=2, timeout_s=2.0)[0]
    assert (stats.requests, stats.failed_requests, stats.event_batches) == (2, 2, 0)
    assert stats.first_error.startswith(f"{api.RECOMMENDATIONS_PATH}: ConnectionError")


# --- (6) configuration ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value",
    [
        ("users_per_day", 0),
        ("sessions_per_user", 0),
        ("k", 0),
        ("k", True),
        ("k", 2.5),
        ("examination_decay", -0.5),
        ("click_scale", 1.5),
        ("click_scale", float("nan")),
        ("purchase_rate", -0.1),
        ("add_to_cart_rate", "0.3"),
        ("send_impressions", "yes"),
        ("surface", ""),
        ("seed", -1),
        ("timeout_s", 0),
        ("timeout_s", float("inf")),
    ],
)
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field}: "):
        sim.SimulatorConfig(**{field: value})


@pytest.mark.parametrize(
    "url", ["http://10.0.0.5:8080", "http://example.com", "ftp://127.0.0.1:8080", "nonsense"]
)
def test_only_loopback_services(shop_data, url):
    with pytest.raises(ValueError, match="^service_url: must be a loopback"):
        sim.ShopSimulator(shop_data, url)


def test_main_prints_a_line_per_day(service, shop_data, capsys):
    code = sim.main(
        [
            "--data",
            shop_data,
            "--url",
            service.url,
            "--days",
            "2",
            "--first_day",
            "5",
            "--users_per_day",
            "3",
            "--no-send_impressions",
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert [line.split(":")[0] for line in lines] == ["day 5", "day 6"]
    assert all("3 requests (0 failed)" in line and " 0 impressions" in line for line in lines)
    with pytest.raises(SystemExit):
        sim.main(["--data", shop_data, "--url", service.url, "--click_scale", "2"])
    assert "argument --click_scale: must be a probability" in capsys.readouterr().err
