"""The recommendation service end to end, against the real local model server over TF Serving's gRPC API.

The toy model here reads the history: item j of the list is "<history joined by spaces>#<j>", score
boost - j, is_tail j % 2, so a test sees exactly which history the model got.
"""

import dataclasses
import json
import os
import socket
import sqlite3
import time
from concurrent.futures import Future
from dataclasses import dataclass

import pytest
import redis
import requests
import tensorflow as tf

from serving import service_client
from serving.config import ServerConfig
from serving.event_log import EVENTS, SERVED, read_records
from serving.history_store import REDIS_KEY_PREFIX
from serving.redis_process import RedisServer
from serving.server import ModelServer
from serving.service import RecommendationService
from serving.service_config import IN_PROCESS, REDIS, ServiceConfig

MODEL = "historytoy"


class HistoryToy(tf.Module):
    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="user_id"),
            tf.TensorSpec([None, None], tf.string, name="history"),
            tf.TensorSpec([], tf.int32, name="k"),
            tf.TensorSpec([], tf.float32, name="boost"),
        ]
    )
    def recommend(self, user_id, history, k, boost):
        del user_id
        seen = tf.strings.strip(tf.strings.reduce_join(history, axis=1, separator=" "))  # "" padding gone
        positions = tf.range(k)
        slots = tf.strings.join(["#", tf.strings.as_string(positions)])
        ids = tf.strings.join([tf.tile(seen[:, None], [1, k]), tf.tile(slots[None, :], [tf.size(seen), 1])])
        batch = tf.shape(history)[0]
        return {
            "item_ids": ids,
            "scores": tf.tile((boost - tf.cast(positions, tf.float32))[None, :], [batch, 1]),
            "is_tail": tf.tile(tf.cast(positions % 2, tf.int64)[None, :], [batch, 1]),
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout_s: float = 60) -> requests.Response:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = requests.get(url + "/readyz", timeout=5)
        if response.status_code == 200:
            return response
        time.sleep(0.1)
    raise AssertionError("the service never became ready")


def start_model_server(base: str, grpc_port: int) -> ModelServer:
    settings = dict(
        model_base_path=base, model_name=MODEL, grpc_port=grpc_port, rest_port=0, access_log=False
    )
    server = ModelServer(ServerConfig(**settings)).start()
    assert server.wait_until_available(60)
    return server


@dataclass
class Stack:
    service: RecommendationService
    url: str
    before: dict  # responses seen before the model server started
    base: str
    grpc_port: int
    servers: list  # model servers started, the running one last


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The service started first (not ready), then the model server; yields what was seen before."""
    base = str(tmp_path_factory.mktemp("models"))
    module = HistoryToy()
    path = os.path.join(base, "1")
    tf.saved_model.save(module, path, signatures={"recommend": module.recommend.get_concrete_function()})
    os.makedirs(os.path.join(path, "assets.extra"))
    with open(os.path.join(path, "assets.extra", "catalog.jsonl"), "w") as f:
        f.write(
            json.dumps({"item_id": "#0", "title": "Zero", "brand": "", "categories": [], "is_new": True})
            + "\n"
        )
    grpc_port = free_port()
    config = ServiceConfig(
        port=0,
        model_endpoint=f"127.0.0.1:{grpc_port}",
        model_name=MODEL,
        model_base_path=base,
        output=str(tmp_path_factory.mktemp("out")),
        max_body_bytes=4096,
        max_k=20,
        max_events=5,
        ready_poll_s=0.1,
        model_timeout_s=5.0,
    )
    service = RecommendationService(config).start()
    url = f"http://127.0.0.1:{service.port}"
    before = {
        "readyz": requests.get(url + "/readyz", timeout=10),
        "recommend": requests.post(url + "/v1/recommendations", json={"user_id": "alice"}, timeout=10),
    }
    servers = [start_model_server(base, grpc_port)]
    try:
        wait_ready(url)
        yield Stack(service, url, before, base, grpc_port, servers)
    finally:
        for server in servers:
            server.stop()
        service.stop()


def recommend(url: str, **body) -> requests.Response:
    """POST /v1/recommendations with `body` as given (keys are the API's)."""
    return requests.post(url + "/v1/recommendations", json=body, timeout=10)


def post_events(url: str, *events) -> requests.Response:
    return requests.post(url + "/v1/events", json={"events": list(events)}, timeout=10)


def ids(response: requests.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["item_id"] for item in response.json()["items"]]


def test_not_ready_until_the_model_answers_then_ready_without_restart(stack):
    url, before = stack.url, stack.before
    assert before["readyz"].status_code == 503
    assert before["readyz"].json()["error"].startswith("not ready: ")
    assert before["recommend"].status_code == 503
    assert requests.get(url + "/readyz", timeout=10).json() == {
        "status": "ready",
        "model": MODEL,
        "version": 1,
        "history_store": True,
    }
    assert requests.get(url + "/healthz", timeout=10).json() == {"status": "alive"}


def test_a_click_changes_the_next_list_and_request_history_is_merged_after_it(stack):
    url = stack.url
    first = recommend(url, user_id="bob", k=3)
    assert first.status_code == 200
    doc = first.json()
    assert set(doc) == {"request_id", "model_version", "items", "rules_fired"}
    assert doc["rules_fired"] == []  # no rules file
    assert doc["model_version"] == "1"
    organic = {"sponsored": False, "reason": None}  # the toy model explains nothing
    assert doc["items"] == [
        {"item_id": "#0", "title": "Zero", "score": 0.0, "is_tail": False, "is_new": True, **organic},
        {"item_id": "#1", "title": "", "score": -1.0, "is_tail": True, "is_new": False, **organic},
        {"item_id": "#2", "title": "", "score": -2.0, "is_tail": False, "is_new": False, **organic},
    ]
    request_id = doc["request_id"]
    impression = {"request_id": request_id, "user_id": "bob", "item_id": "#1", "type": "impression"}
    click = {"request_id": request_id, "user_id": "bob", "item_id": "#1", "type": "click", "ts": 1764700000.5}
    assert post_events(url, impression, click).json() == {"accepted": 2}
    assert ids(recommend(url, user_id="bob", k=2)) == ["#1#0", "#1#1"]  # the click, not the impression
    assert ids(recommend(url, user_id="bob", k=1, history=["h9"])) == ["#1 h9#0"]
    assert ids(recommend(url, user_id="carol", k=1, knobs={"boost": 2.5})) == ["#0"]  # histories are per user
    assert recommend(url, user_id="carol", k=1, knobs={"boost": 2.5}).json()["items"][0]["score"] == 2.5


def test_logs_hold_served_lists_and_events_under_pseudonyms_only(stack):
    service, url = stack.service, stack.url
    first = recommend(url, user_id="dave", k=2, surface="home", history=["h1"]).json()
    click = {
        "request_id": first["request_id"],
        "user_id": "dave",
        "item_id": "h1#0",
        "type": "purchase",
        "ts": 7.5,
    }
    assert post_events(url, click).status_code == 200
    service.log.flush()
    logs = service.config.logs_dir
    dave = service.pseudonyms("dave")
    (served,) = [
        r for r in read_records(logs, SERVED, include_open=True) if r["request_id"] == first["request_id"]
    ]
    assert served | {"ts": 0} == {
        "schema_version": 2,
        "request_id": first["request_id"],
        "user_pseudonym": dave,
        "ts": 0,
        "model_name": MODEL,
        "model_version": 1,
        "surface": "home",
        "knobs": '{"boost": 0}',
        "history": ["h1"],
        "item_ids": ["h1#0", "h1#1"],
        "positions": [0, 1],
        "scores": [0.0, -1.0],
        "is_tail": [False, True],
        "is_new": [False, False],
        "sponsored": [False, False],
        "reasons": ["", ""],  # the toy model explains nothing
        "because": ["", ""],
        "rules_fired": [],
    }
    assert abs(served["ts"] - time.time()) < 60
    events = [r for r in read_records(logs, EVENTS, include_open=True) if r["user_pseudonym"] == dave]
    assert events == [
        {
            "schema_version": 2,
            "request_id": first["request_id"],
            "user_pseudonym": dave,
            "item_id": "h1#0",
            "type": "purchase",
            "ts": 7.5,
        }
    ]
    assert service.history.recent(dave, 10) == ["h1#0"]
    for folder, _, files in os.walk(service.config.output):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                content = f.read()
            assert b"dave" not in content and b"alice" not in content, name


RECS, EVENTS_PATH = "/v1/recommendations", "/v1/events"
KNOWN_REQUEST = (
    "['user_id', 'k', 'history', 'surface', 'knobs', 'rules', 'exclude_ids', 'allowed_ids', 'categories', "
    "'brands']"
)
KNOWN_EVENT = "['request_id', 'user_id', 'item_id', 'type', 'ts']"
TYPES = "['impression', 'click', 'add_to_cart', 'purchase']"
NOT_UNICODE = "must be valid Unicode text (it holds a lone surrogate)"


def erin(item: str = "i1", **changes) -> dict:
    return {"request_id": "r", "user_id": "erin", "item_id": item, "type": "click"} | changes


BAD_REQUESTS = {
    "unknown field": (RECS, {"user_id": "u", "colour": "red"}, 400,
                      f"unknown field(s) ['colour']; known: {KNOWN_REQUEST}"),
    "missing user": (RECS, {"k": 3}, 400, "user_id: required"),
    "k too large": (RECS, {"user_id": "u", "k": 21}, 400, "k: must be an integer in [1, 20], got 21"),
    "k not int": (RECS, {"user_id": "u", "k": "3"}, 400, "k: must be an integer in [1, 20], got '3'"),
    "unknown knob": (RECS, {"user_id": "u", "knobs": {"nope": 1}}, 400,
                     "knobs: the recommend signature has no knob(s) ['nope']; its knobs: ['boost']"),
    "history not list": (RECS, {"user_id": "u", "history": "i1"}, 400,
                         "history: must be a list of non-empty item id strings"),
    "body too large": (RECS, {"user_id": "u" * 5000}, 413, "Maximum request body size 4096"),
    "bad event type": (EVENTS_PATH, {"events": [erin(), erin("i2", type="view")]}, 400,
                       f"events[1].type: must be one of {TYPES}, got 'view'"),
    "event missing item": (EVENTS_PATH, {"events": [{"request_id": "r", "user_id": "erin", "type": "click"}]},
                           400, "events[0].item_id: required"),
    "event unknown field": (EVENTS_PATH, {"events": [erin(ip="1.2.3.4")]}, 400,
                            f"events[0].unknown field(s) ['ip']; known: {KNOWN_EVENT}"),
    "too many events": (EVENTS_PATH, {"events": [erin()] * 6}, 413, "events: at most 5 per batch, got 6"),
    "filter the model lacks": (RECS, {"user_id": "u", "brands": ["acme"]}, 400,
                               "brands: model version 1 has no such filter (exported before them)"),
    "filter not a list": (RECS, {"user_id": "u", "exclude_ids": "i1"}, 400,
                          "exclude_ids: must be a list of non-empty strings"),
    "string for a float knob": (RECS, {"user_id": "u", "knobs": {"boost": "high"}}, 400,
                                "knobs: input 'boost': 'high' is not a float32"),
    "lone surrogate user": (RECS, {"user_id": "u\ud800"}, 400, f"user_id: {NOT_UNICODE}"),
    "lone surrogate surface": (RECS, {"user_id": "u", "surface": "\udfff"}, 400, f"surface: {NOT_UNICODE}"),
    "lone surrogate history": (RECS, {"user_id": "u", "history": ["i1", "\ud800"]}, 400,
                               f"history[1]: {NOT_UNICODE}"),
    "lone surrogate event item": (EVENTS_PATH, {"events": [erin(), erin("\ud800")]}, 400,
                                  f"events[1].item_id: {NOT_UNICODE}"),
    "lone surrogate event user": (EVENTS_PATH, {"events": [erin(user_id="\ud800")]}, 400,
                                  f"events[0].user_id: {NOT_UNICODE}"),
    "lone surrogate request id": (EVENTS_PATH, {"events": [erin(request_id="\ud800")]}, 400,
                                  f"events[0].request_id: {NOT_UNICODE}"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_a_clear_4xx_and_write_nothing(stack, case):
    service, url = stack.service, stack.url
    path, body, status, message = BAD_REQUESTS[case]
    response = requests.post(url + path, json=body, timeout=10)
    assert response.status_code == status
    assert message in response.json()["error"]
    service.log.flush()
    erin = service.pseudonyms("erin")
    assert [
        r
        for r in read_records(service.config.logs_dir, EVENTS, include_open=True)
        if r["user_pseudonym"] == erin
    ] == []
    assert service.history.recent(erin, 10) == []


def test_a_nan_score_is_a_502_for_that_request_alone(stack):
    response = recommend(stack.url, user_id="jo", knobs={"boost": "nan"})  # the toy's scores: boost - j
    assert (response.status_code, response.json()) == (
        502,
        {"error": "the model answered a non-finite score: nothing served or logged"},
    )
    assert ids(recommend(stack.url, user_id="jo", k=1)) == ["#0"]
    stack.service.log.flush()
    jo = stack.service.pseudonyms("jo")
    served = [r for r in read_records(stack.service.config.logs_dir, SERVED, include_open=True)]
    assert [r["item_ids"] for r in served if r["user_pseudonym"] == jo] == [["#0"]]


def test_history_store_errors_after_the_durable_write_never_fail_the_request(stack, monkeypatch):
    service, url = stack.service, stack.url

    def broken(*args):
        raise sqlite3.OperationalError("database is locked")

    def fallbacks(operation: str) -> float:
        labels = {"operation": operation}
        return service.registry.get_sample_value("tailtower_service_history_fallbacks_total", labels) or 0

    before = {operation: fallbacks(operation) for operation in ("recent", "append")}
    monkeypatch.setattr(service.history, "append", broken)
    monkeypatch.setattr(service.history, "recent", broken)
    click = {"request_id": "r", "user_id": "kim", "item_id": "i4", "type": "click"}
    assert post_events(url, click).json() == {"accepted": 1}
    assert ids(recommend(url, user_id="kim", k=1, history=["h3"])) == ["h3#0"]  # request history only
    assert {operation: fallbacks(operation) - before[operation] for operation in before} == {
        "recent": 1,
        "append": 1,
    }
    monkeypatch.undo()
    service.log.flush()
    kim = service.pseudonyms("kim")
    events = read_records(service.config.logs_dir, EVENTS, include_open=True)
    assert [r["item_id"] for r in events if r["user_pseudonym"] == kim] == ["i4"]


def test_an_event_batch_not_confirmed_in_time_is_a_503_never_a_200(stack, monkeypatch):
    never = Future()  # a writer stuck on a hung disk
    monkeypatch.setattr(stack.service.log, "submit", lambda kind, records: never)
    monkeypatch.setattr(stack.service, "config", dataclasses.replace(stack.service.config, log_wait_s=0.2))
    response = post_events(stack.url, {"request_id": "r", "user_id": "lu", "item_id": "i1", "type": "click"})
    assert (response.status_code, response.json()) == (
        503,
        {
            "error": "the event log did not confirm the batch within 0.2 s: it may or may not be durable "
            "(a retry may log it twice)"
        },
    )
    assert never.cancelled()  # the writer skips a cancelled future instead of dying on it


def test_not_json_and_unknown_paths(stack):
    url = stack.url
    response = requests.post(url + "/v1/recommendations", data=b"{nope", timeout=10)
    assert (response.status_code, response.json()["error"][:22]) == (400, "the body is not JSON: ")
    assert requests.get(url + "/v2/nothing", timeout=10).status_code == 404


def test_metrics_count_requests_and_log_records(stack):
    url = stack.url
    assert post_events(url, {"request_id": "", "user_id": "frank", "item_id": "i1", "type": "add_to_cart"}).ok
    page = requests.get(url + "/metrics", timeout=10).text
    assert 'tailtower_service_log_records_total{kind="events",result="written"}' in page
    assert 'tailtower_service_requests_total{code="200",route="/v1/events"}' in page
    assert 'tailtower_service_requests_total{code="503",route="/v1/recommendations"}' in page
    assert "tailtower_service_ready 1.0" in page


def test_query_service_cli_reports_a_click_then_prints_the_list(stack, capsys):
    argv = ["--url", stack.url, "--user", "gina", "--k", "2", "--click", "i5"]
    assert service_client.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("recommendations for gina (model version 1, ")
    assert lines[2:] == [
        "   1          i5#0     0.0000     0    0  ",
        "   2          i5#1    -1.0000     1    0  ",
    ]


def test_model_server_gone_means_503_then_recovery_without_restart(stack):
    stack.servers.pop().stop()
    response = recommend(stack.url, user_id="hal")
    assert response.status_code == 503
    # the probe or the request itself notices first: the same message either way
    assert response.json()["error"].startswith("not ready: model server: UNAVAILABLE: ")
    assert requests.get(stack.url + "/readyz", timeout=10).status_code == 503
    stack.servers.append(start_model_server(stack.base, stack.grpc_port))
    wait_ready(stack.url)
    assert ids(recommend(stack.url, user_id="hal", k=1)) == ["#0"]


def test_in_process_mode_serves_the_same_api_without_a_model_server(stack, tmp_path):
    settings = dict(port=0, output=str(tmp_path / "out"), model_endpoint=IN_PROCESS)
    service = RecommendationService(dataclasses.replace(stack.service.config, **settings)).start()
    url = f"http://127.0.0.1:{service.port}"
    try:
        assert wait_ready(url).json()["version"] == 1
        assert ids(recommend(url, user_id="jo", k=1, history=["h5"])) == ["h5#0"]
        response = recommend(url, user_id="jo", k=1)
        assert response.json()["items"][0]["title"] == "Zero"  # catalog metadata of the loaded version
        assert "in-process" not in requests.get(url + "/readyz", timeout=10).text
    finally:
        service.stop()
    with pytest.raises(ConnectionRefusedError):  # stopping the service stopped its model server
        socket.create_connection(("127.0.0.1", service.client.port), timeout=5).close()


def test_live_exposure_of_served_lists_and_events(stack, tmp_path):
    settings = dict(port=0, output=str(tmp_path / "out"), model_endpoint=IN_PROCESS)
    service = RecommendationService(dataclasses.replace(stack.service.config, **settings)).start()
    url = f"http://127.0.0.1:{service.port}"
    try:
        wait_ready(url)
        answer = recommend(url, user_id="kay", k=2).json()  # "#0" head and new, "#1" tail
        shown = [{"request_id": answer["request_id"], "user_id": "kay", "item_id": i} for i in ("#0", "#1")]
        events = [{**slot, "type": "impression"} for slot in shown] + [{**shown[1], "type": "click"}]
        assert post_events(url, *events).json() == {"accepted": 3}
        doc = requests.get(url + "/v1/exposure", timeout=10).json()
        assert doc.pop("time_to_first_impression_s") >= 0  # "#0" arrived when the version was first seen
        assert doc == {
            "window_s": 3600.0,
            "shown": "impressions",
            "model_version": 1,
            "requests": 1,
            "aplt": 0.5,
            "coverage": 1.0,  # the toy catalog lists "#0" only
            "tail_coverage": None,  # ... which is not a tail item
            "gini": 0.0,
            "impressions": 2,
            "clicks": 1,
            "ctr": 0.5,
            "ctr_head": 0.0,
            "ctr_tail": 1.0,
            "ctr_new": 0.0,
            "new_items": 1,
            "new_items_shown": 1,
            "unjoined_events": 0,
        }
        page = requests.get(url + "/metrics", timeout=10).text
        assert "tailtower_exposure_ctr 0.5" in page and "tailtower_exposure_aplt 0.5" in page
        assert "tailtower_exposure_tail_coverage" not in page  # null: no value to show
    finally:
        service.stop()


def test_manual_spans_are_cut_by_the_rotate_call(stack, tmp_path):
    settings = dict(port=0, output=str(tmp_path / "out"), model_endpoint=IN_PROCESS, log_spans="manual")
    config = dataclasses.replace(stack.service.config, **settings)
    service = RecommendationService(config).start()
    url = f"http://127.0.0.1:{service.port}"
    try:
        wait_ready(url)
        first = recommend(url, user_id="lee", k=1).json()["request_id"]
        assert requests.post(url + "/v1/logs/rotate", timeout=10).json() == {"closed": 1, "span": 2}
        second = recommend(url, user_id="lee", k=1).json()["request_id"]
        assert [r["request_id"] for r in read_records(config.logs_dir, SERVED, [1])] == [first]
        assert requests.post(url + "/v1/logs/rotate", timeout=10).json() == {"closed": 2, "span": 3}
    finally:
        service.stop()
    assert [r["request_id"] for r in read_records(config.logs_dir, SERVED, [2])] == [second]
    restarted = RecommendationService(config).start()  # continues after the closed spans
    try:
        assert restarted.log.span == 3
    finally:
        restarted.stop()


def test_the_rules_file_is_applied_hot_reloaded_and_a_broken_one_keeps_the_rules_in_force(stack, tmp_path):
    settings = dict(port=0, output=str(tmp_path / "out"), model_endpoint=IN_PROCESS, rules_pool=5)
    config = dataclasses.replace(stack.service.config, **settings)
    os.makedirs(config.service_dir)
    rules = tmp_path / "out" / "service" / "rules.yaml"
    rules.write_text("rules:\n  - {kind: sponsored, item_id: '#0', position: 2}\n")
    service = RecommendationService(config).start()
    url = f"http://127.0.0.1:{service.port}"
    try:
        wait_ready(url)
        answer = recommend(url, user_id="max", k=3, surface="home").json()
        assert [(i["item_id"], i["sponsored"]) for i in answer["items"]] == [
            ("#1", False),  # the model's pool was "#0" .. "#4": "#0" moves to the sponsored slot
            ("#0", True),
            ("#2", False),
        ]
        assert answer["rules_fired"] == ["sponsored#1"]  # as in the served record
        assert ids(recommend(url, user_id="max", k=3, rules=False)) == ["#0", "#1", "#2"]
        rules.write_text("rules:\n  - {kind: bury, item_ids: ['#1'], factor: 0}\n")  # hot reload
        assert ids(recommend(url, user_id="max", k=3)) == ["#0", "#2", "#3"]
        rules.write_text("rules:\n  - {kind: bury, factor: 0}\n")  # no item, brand or category to match
        assert ids(recommend(url, user_id="max", k=3)) == ["#0", "#2", "#3"]  # the rules in force stay
        ready = requests.get(url + "/readyz", timeout=10).json()
        assert ready["rules_file_error"].startswith(str(rules))
        assert "tailtower_service_rules_file_error 1.0" in requests.get(url + "/metrics", timeout=10).text
        service.log.flush()
    finally:
        service.stop()
    served = read_records(config.logs_dir, SERVED, include_open=True)
    assert [(r["rules_fired"], r["sponsored"]) for r in served] == [
        (["sponsored#1"], [False, True, False]),
        ([], [False, False, False]),
        (["bury#1"], [False, False, False]),
        (["bury#1"], [False, False, False]),
    ]


def test_redis_history_down_falls_back_to_request_history_then_recovers(stack, tmp_path):
    (tmp_path / "redis").mkdir()
    redis_server = RedisServer(tmp_path / "redis").start()
    settings = dict(port=0, output=str(tmp_path / "out"), history_backend=REDIS, redis_url=redis_server.url)
    config = dataclasses.replace(stack.service.config, **settings)
    service = RecommendationService(config).start()
    url = f"http://127.0.0.1:{service.port}"
    ivy = service.pseudonyms("ivy")

    def click(item: str) -> requests.Response:
        return post_events(url, {"request_id": "r", "user_id": "ivy", "item_id": item, "type": "click"})

    def readyz() -> dict:
        response = requests.get(url + "/readyz", timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    ready = {"status": "ready", "model": MODEL, "version": 1, "history_store": True}
    try:
        assert wait_ready(url).json() == ready
        assert click("i7").json() == {"accepted": 1}
        assert ids(recommend(url, user_id="ivy", k=1)) == ["i7#0"]
        with redis.Redis.from_url(redis_server.url, decode_responses=True) as client:
            assert client.keys("*") == [REDIS_KEY_PREFIX + ivy]  # the pseudonym, never "ivy"

        redis_server.kill()
        assert ids(recommend(url, user_id="ivy", k=1, history=["h2"])) == ["h2#0"]  # request history only
        assert click("i8").json() == {"accepted": 1}  # in the log, though not in the history
        health = readyz()
        assert health["history_store_error"].startswith("redis: ConnectionError: ")
        assert health | {"history_store_error": ""} == {
            "status": "degraded",
            "model": MODEL,
            "version": 1,
            "history_store": False,
            "history_store_error": "",
        }
        page = requests.get(url + "/metrics", timeout=10).text
        assert "tailtower_service_history_ready 0.0" in page
        assert 'tailtower_service_history_fallbacks_total{operation="recent"} 1.0' in page
        assert 'tailtower_service_history_fallbacks_total{operation="append"} 1.0' in page

        redis_server.start()  # same port, empty: no restart of the service
        deadline = time.monotonic() + 10
        while readyz()["history_store"] is False and time.monotonic() < deadline:
            time.sleep(0.05)
        assert readyz() == ready
        assert click("i9").json() == {"accepted": 1}
        assert ids(recommend(url, user_id="ivy", k=1)) == ["i9#0"]
        service.log.flush()
        events = read_records(config.logs_dir, EVENTS, include_open=True)
        assert [r["item_id"] for r in events if r["user_pseudonym"] == ivy] == ["i7", "i8", "i9"]
    finally:
        service.stop()
        redis_server.stop()
