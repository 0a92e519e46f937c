"""The web explorer (serving/explorer/) in headless Chromium against a running service, and its endpoints.

The service runs a toy model in-process (serving/in_process_model.py: the production gRPC request path) on a
free loopback port. The toy ranks 13 items: heads h0-h5 (scores 12 … 7), then tails t0-t5 (5.5 … 0.5) and a
new item n0 (0.25, tail); xquad_lambda adds 30 × λ to every tail score, mmr_lambda takes 10 × λ off every odd
catalog slot, and mmr_lambda + xquad_lambda > 1 is an INVALID_ARGUMENT, as in the real model. History items
are excluded. The rules file pins t5 at 1 and sponsors n0 at 2. The run folder has an eval split (alice,
bob) so the page has dataset users to pick. The browser tests skip without chromium + chromedriver.
"""

import json
import os
import shutil

import pytest
import requests
import tensorflow as tf

from serving import explorer, service_api
from serving.explanations import reason_text
from serving.screenshots import ExplorerPage, browser_missing, headless_chrome
from serving.service import RecommendationService
from serving.service_config import IN_PROCESS, ServiceConfig
from tests.test_service_e2e import wait_ready
from trainer import features

MODEL = "explorertoy"
HEAD = [f"h{i}" for i in range(6)]
TAIL = [f"t{i}" for i in range(6)]
NEW = "n0"
ITEMS = [*HEAD, *TAIL, NEW]
BASE_SCORES = [12.0, 11.0, 10.0, 9.0, 8.0, 7.0, 5.5, 4.5, 3.5, 2.5, 1.5, 0.5, 0.25]
TITLES = {**{h: f"Head pen {h[1:]}" for h in HEAD}, **{t: f"Tail notebook {t[1:]}" for t in TAIL}}
TITLES[NEW] = "New stapler"
# The newest run's eval split (execution 10; an older run's, execution 4, must not be read: 10 sorts first
# as text). Alice and bob have positives there; carol only a negative.
EVAL_SPLIT = os.path.join("pipeline-root", "InteractionsExampleGen", "examples", "{}", "Split-eval")
DATASET = {"alice": ["h0", "h1"], "bob": ["t0"]}
K = 6  # typed into the page: with k = 6 the xquad step below changes the list's tail share (2/6 → 3/6)
# Rows of the page's live-exposure panel.
SERVED_LISTS, LIVE_TAIL_SHARE = "Served lists", "Tail share of served lists (APLT)"
RULES = "rules:\n  - {kind: pin, item_id: t5, position: 1}\n  - {kind: sponsored, item_id: n0, position: 2}\n"


class ExplorerToy(tf.Module):
    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name=features.USER_ID),
            tf.TensorSpec([None, None], tf.string, name=features.HISTORY),
            tf.TensorSpec([], tf.int32, name=features.K),
            tf.TensorSpec([], tf.float32, name=features.MMR_LAMBDA),
            tf.TensorSpec([], tf.float32, name=features.XQUAD_LAMBDA),
        ]
    )
    def recommend(self, user_id, history, k, mmr_lambda, xquad_lambda):
        del user_id
        tf.debugging.assert_less_equal(
            mmr_lambda + xquad_lambda, 1.0, "mmr_lambda + xquad_lambda must be <= 1"
        )
        items = tf.constant(ITEMS)
        is_tail = tf.constant([item not in HEAD for item in ITEMS])
        odd = tf.constant([i % 2 for i in range(len(ITEMS))], tf.float32)
        score = (
            tf.constant(BASE_SCORES)
            + 30.0 * xquad_lambda * tf.cast(is_tail, tf.float32)
            - 10.0 * mmr_lambda * odd
        )
        seen = tf.reduce_any(tf.equal(history[:, :, None], items[None, None, :]), axis=1)  # [B, N]
        top = tf.math.top_k(tf.where(seen, -1e9, score[None, :]), tf.minimum(k, len(ITEMS)))
        ids = tf.where(top.values > -1e8, tf.gather(items, top.indices), "")  # "" pads: history is excluded
        lengths = tf.reduce_sum(tf.cast(history != "", tf.int32), axis=1)
        last = tf.gather(history, tf.maximum(lengths - 1, 0), batch_dims=1)  # right-padded: the newest item
        because = tf.where(lengths > 0, last, "")[:, None] + tf.zeros_like(ids)
        tail = tf.gather(is_tail, top.indices)
        code = tf.where(tail, features.REASON_TAIL_DISCOVERY, features.REASON_SIMILAR_TO)
        code = tf.where((lengths > 0)[:, None], code, features.REASON_POPULAR)
        code = tf.where(ids == NEW, features.REASON_NEW_ITEM, code)
        return {
            features.ITEM_IDS: ids,
            features.SCORES: top.values,
            features.IS_TAIL: tf.cast(tail, tf.int64),
            features.REASON: code,
            features.BECAUSE: because,
        }


def _write_model(base: str) -> None:
    module = ExplorerToy()
    path = os.path.join(base, "1")
    tf.saved_model.save(module, path, signatures={"recommend": module.recommend.get_concrete_function()})
    os.makedirs(os.path.join(path, features.ASSETS_EXTRA_DIR))
    with open(os.path.join(path, features.ASSETS_EXTRA_DIR, features.CATALOG_METADATA_FILE), "w") as f:
        for item in ITEMS:
            row = {
                features.ITEM_ID: item,
                features.TITLE: TITLES[item],
                features.BRAND: "",
                features.CATEGORIES: [],
            }
            f.write(
                json.dumps(row | {features.IS_TAIL: item not in HEAD, features.IS_NEW: item == NEW}) + "\n"
            )


def _write_eval_split(folder: str, rows: list[tuple[str, list[str], float]]) -> None:
    """ExampleGen's layout: gzipped TFRecords of tf.Examples (user_id, item_id, history, label)."""
    os.makedirs(folder)
    with tf.io.TFRecordWriter(os.path.join(folder, "data_tfrecord-00000-of-00001.gz"), "GZIP") as writer:
        for user, history, label in rows:
            feature = {
                features.USER_ID: _bytes([user]),
                features.ITEM_ID: _bytes(["t4"]),
                features.HISTORY: _bytes(history),
                features.LABEL: tf.train.Feature(float_list=tf.train.FloatList(value=[label])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def _bytes(values: list[str]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> str:
    """The service's URL: the toy model in-process, a run folder with two eval splits, the rules file."""
    base, out = tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("run")
    _write_model(str(base))
    rows = [("alice", DATASET["alice"], 1.0), ("carol", ["t1"], 0.0), ("bob", DATASET["bob"], 1.0)]
    _write_eval_split(str(out / EVAL_SPLIT.format(10)), rows)
    _write_eval_split(str(out / EVAL_SPLIT.format(4)), [("olduser", ["h3"], 1.0)])
    rules = out / "rules.yaml"
    rules.write_text(RULES)
    config = ServiceConfig(
        port=0,
        model_endpoint=IN_PROCESS,
        model_name=MODEL,
        model_base_path=str(base),
        output=str(out),
        rules_file=str(rules),
        ready_poll_s=0.1,
        max_k=20,
    )
    service = RecommendationService(config).start()
    try:
        url = f"http://127.0.0.1:{service.port}"
        wait_ready(url)
        yield url
    finally:
        service.stop()


@pytest.fixture(scope="module")
def page(site):
    missing = browser_missing()
    if missing:
        pytest.skip(missing)
    driver = headless_chrome()
    try:
        yield ExplorerPage(driver, site + service_api.EXPLORER_PATH)
    finally:
        driver.quit()


def test_users_come_from_the_newest_eval_split_with_titles(site):
    doc = requests.get(site + service_api.USERS_PATH, timeout=10).json()
    assert doc["source"] == EVAL_SPLIT.format(10)
    titled = {user: [{"item_id": i, "title": TITLES[i]} for i in items] for user, items in DATASET.items()}
    assert doc["users"] == [{"user_id": user, "history": titled[user]} for user in ("alice", "bob")]
    one = requests.get(site + service_api.USERS_PATH, params={"limit": 1}, timeout=10).json()
    assert [user["user_id"] for user in one["users"]] == ["alice"]
    for bad in ("limit=0", "limit=x", "limit=201", "user=alice"):
        answer = requests.get(f"{site}{service_api.USERS_PATH}?{bad}", timeout=10)
        assert answer.status_code == 400 and bad.split("=")[0] in answer.json()["error"]


def test_history_is_the_stored_history_with_titles(site):
    url = site + service_api.HISTORY_PATH
    assert requests.get(url, params={"user_id": "dave"}, timeout=10).json() == {
        "items": [],
        "history_store": True,
    }
    click = {"request_id": "", "user_id": "dave", "item_id": "t2", "type": "click"}
    assert (
        requests.post(site + service_api.EVENTS_PATH, json={"events": [click]}, timeout=10).status_code == 200
    )
    doc = requests.get(url, params={"user_id": "dave"}, timeout=10).json()
    assert doc["items"] == [{"item_id": "t2", "title": "Tail notebook 2"}]
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 400 and "user_id: required" in answer.json()["error"]


def test_the_service_serves_the_page_and_its_files_only(site):
    page = requests.get(site + "/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert 'src="explorer/explorer.js"' in page.text
    script = requests.get(site + "/explorer/explorer.js", timeout=10)
    assert script.headers["Content-Type"].startswith("text/javascript") and "fetch(" in script.text
    for other in ("/explorer/__init__.py", "/explorer/..%2F__init__.py", "/explorer/nothing.js"):
        assert requests.get(site + other, timeout=10).status_code == 404


def _expected(history: list[str], xquad: float, rules: bool) -> list[str]:
    """The toy's top K for the history (mmr_lambda 0), with the rules file applied when `rules`."""
    scores = {item: s + 30 * xquad * (item not in HEAD) for item, s in zip(ITEMS, BASE_SCORES, strict=True)}
    ranked = sorted((i for i in ITEMS if i not in history), key=lambda i: -scores[i])
    if rules:
        ranked = ["t5", NEW, *(i for i in ranked if i not in ("t5", NEW))]
    return ranked[:K]


def _tail_share(ids: list[str]) -> str:
    tail = sum(i not in HEAD for i in ids)
    return f"{100 * tail / len(ids):.1f}% ({tail} of {len(ids)})"


def test_the_page_shows_a_user_and_follows_the_slider_and_the_rules(page):
    from selenium.webdriver.common.keys import Keys

    page.open()
    assert page.dataset_users() == ["alice", "bob"]
    page.wait(lambda: page.exposure().get(SERVED_LISTS))
    served = int(page.exposure()[SERVED_LISTS])  # lists the service served before this test
    page.find("k").clear()
    page.find("k").send_keys(str(K))
    summary, ids = page.pick_user("alice")
    assert ids == _expected(DATASET["alice"], 0.0, rules=True)
    assert _tail_share(ids) in summary
    history = [li.text for li in page.find("history").find_elements("tag name", "li")]
    assert history == ["Head pen 0 (h0)", "Head pen 1 (h1)"]  # the dataset's, sent with the request
    items = {item["item_id"]: item for item in page.items()}
    assert items[NEW]["badges"] == ["tail", "new", "sponsored"] and items[NEW]["reason"] == "Sponsored"
    assert items["t5"]["badges"] == ["tail"]
    assert items["t5"]["reason"] == reason_text(features.REASON_TAIL_DISCOVERY, TITLES["h1"])
    assert items["h2"] == {
        "item_id": "h2",
        "title": TITLES["h2"],
        "score": "score 10.000",
        "badges": ["head"],
        "reason": reason_text(features.REASON_SIMILAR_TO, TITLES["h1"]),
    }
    page.wait(lambda: page.exposure()[SERVED_LISTS] == str(served + 1))
    before = page.exposure()

    # xquad_lambda 0 → 0.1 (two arrow keys): a tail item enters the list and its tail share goes up.
    slid_summary, slid = page.after(lambda: page.move_slider(features.XQUAD_LAMBDA, Keys.ARROW_RIGHT * 2))
    assert slid == _expected(DATASET["alice"], 0.1, rules=True) != ids
    assert _tail_share(slid) in slid_summary and _tail_share(ids) not in slid_summary
    page.wait(lambda: page.exposure()[SERVED_LISTS] == str(served + 2))
    assert page.exposure()[LIVE_TAIL_SHARE] != before[LIVE_TAIL_SHARE]

    _, without_rules = page.after(page.toggle_rules)
    assert without_rules == _expected(DATASET["alice"], 0.1, rules=False) != slid
    _, with_rules = page.after(page.toggle_rules)
    assert with_rules == slid

    # mmr_lambda 1 + xquad_lambda 0.1 > 1: the model refuses; the page shows the service's error, no list.
    _, refused = page.after(lambda: page.move_slider(features.MMR_LAMBDA, Keys.END))
    assert refused == [] and page.find("error").is_displayed()
    assert "400: model rejected the request" in page.find("error").text
    _, back = page.after(lambda: page.move_slider(features.MMR_LAMBDA, Keys.HOME))
    assert back == slid and not page.find("error").is_displayed()

    # Any id can be typed: no history, so popular items around the rules' picks.
    page.find("user-id").clear()
    _, typed = page.after(lambda: page.find("user-id").send_keys("zoe", Keys.ENTER))
    assert typed == _expected([], 0.1, rules=True)
    assert page.find("history-source").text.startswith("No history")
    assert page.items()[2]["reason"] == reason_text(features.REASON_POPULAR, "")
    assert page.js_errors() == []


def test_a_broken_script_shows_no_list(page, tmp_path, monkeypatch):
    """The page test's first condition fails when the script does not parse: nothing renders."""
    from selenium.common.exceptions import TimeoutException

    for name in explorer.ASSETS:
        shutil.copy(os.path.join(explorer.STATIC_DIR, name), tmp_path / name)
    script = (tmp_path / "explorer.js").read_text()
    (tmp_path / "explorer.js").write_text(script.replace("async function api(", "async function api((", 1))
    monkeypatch.setattr(explorer, "STATIC_DIR", str(tmp_path))
    with pytest.raises(TimeoutException):
        page.open(timeout_s=5)
    assert page.shown()[1] == [] and not page.find("users-source").text
    assert any("SyntaxError" in error for error in page.js_errors())
