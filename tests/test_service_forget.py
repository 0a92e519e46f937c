"""forget-user: a user's history (SQLite and a real redis-server), served records and events (closed spans
and open journals) go, under the service's pseudonym key; every other record stays as it was; the report
counts exactly what went."""

import glob
import os

import pyarrow.parquet as pq
import pytest
import redis

from serving import event_log, forget_user
from serving.event_log import EVENTS, SERVED, EventLog, LogLocked, read_records
from serving.history_store import HISTORY_FILE_NAME, open_history_store
from serving.pseudonym import KEY_ENV, KEY_FILE_NAME, Pseudonymizer
from serving.redis_process import RedisServer
from serving.service_config import HISTORY_BACKENDS, REDIS, SQLITE, ServiceConfig


def served(request_id: str, user: str) -> dict:
    return {
        "request_id": request_id,
        "user_pseudonym": user,
        "ts": 1.5,
        "model_name": "tailtower",
        "model_version": 3,
        "surface": "home",
        "knobs": "{}",
        "history": ["h1"],
        "item_ids": ["i1", "i2"],
        "positions": [0, 1],
        "scores": [0.5, 0.25],
        "is_tail": [False, True],
        "is_new": [False, False],
        "sponsored": [False, False],
        "reasons": ["", ""],
        "because": ["", ""],
        "rules_fired": [],
    }


def event(request_id: str, user: str, kind: str = "click") -> dict:
    return {"request_id": request_id, "user_pseudonym": user, "item_id": "i1", "type": kind, "ts": 2.5}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(params=HISTORY_BACKENDS)
def config(request, tmp_path, monkeypatch):
    """ana and ben in a closed span (1) and the open one (2), some batches mixed; histories stored."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    url = request.getfixturevalue("redis_server").url if request.param == REDIS else ServiceConfig.redis_url
    config = ServiceConfig(output=str(tmp_path), history_backend=request.param, redis_url=url)
    if request.param == REDIS:
        with redis.Redis.from_url(config.redis_url) as client:
            client.flushdb()
    pseudonyms = Pseudonymizer.from_config("", config.service_dir)  # creates the key, as the service does
    ana, ben = pseudonyms("ana"), pseudonyms("ben")
    log = EventLog(config.logs_dir, span=1)
    log.append(SERVED, [served("r1", ana)])
    log.append(SERVED, [served("r2", ben)])
    log.append(EVENTS, [event("r1", ana), event("r2", ben, "impression"), event("r1", ana, "purchase")])
    log.rotate(2)
    log.append(SERVED, [served("r3", ana)])
    log.append(EVENTS, [event("r2", ben)])
    log.append(EVENTS, [event("r3", ana, "impression")])
    log.append(EVENTS, [event("r3", ana), event("r4", ben, "add_to_cart")])
    log.close()  # the open span's journals stay: a service restarted in span 2 continues them
    store = open_history_store(config)
    store.append(ana, ["i1", "i2", "i3"])
    store.append(ben, ["i9"])
    store.close()
    return config


def records(config: ServiceConfig, kind: str) -> list[dict]:
    return read_records(config.logs_dir, kind, include_open=True)


def test_forget_removes_the_user_everywhere_and_keeps_everyone_else(config):
    ana = forget_user.pseudonymizer(config)("ana")
    others = {
        kind: [r for r in records(config, kind) if r["user_pseudonym"] != ana] for kind in (SERVED, EVENTS)
    }
    assert [len(others[SERVED]), len(others[EVENTS])] == [1, 3]

    report = forget_user.forget_user(config, "ana")

    assert [(r.kind, r.span, r.is_open, r.records) for r in report.removals] == [
        (SERVED, 1, False, 1),
        (SERVED, 2, True, 1),
        (EVENTS, 1, False, 2),
        (EVENTS, 2, True, 2),
    ]
    assert (report.history_items, report.records(SERVED), report.records(EVENTS)) == (3, 2, 4)
    assert report.lines() == [
        f"forgot user {ana[:12]}… (pseudonym prefix)",
        "  history: 3 items",
        "  log records: served 2, events 4 (4 files rewritten)",
        "  events span=1 (closed): 2 records",
        "  events span=2 (open journal): 2 records",
        "  served span=1 (closed): 1 records",
        "  served span=2 (open journal): 1 records",
    ]
    for kind in (SERVED, EVENTS):
        assert records(config, kind) == others[kind]  # same records, same order
    # Not a byte of it left in the logs: the lock, and per kind span 1's Parquet file and span 2's journal.
    files = [os.path.join(folder, name) for folder, _, names in os.walk(config.logs_dir) for name in names]
    assert len(files) == 5
    # Nor in the service folder: the key, and with SQLite its file (the -wal goes with the last close).
    history_files = [HISTORY_FILE_NAME] if config.history_backend == SQLITE else []
    service_files = sorted(os.listdir(config.service_dir))
    assert service_files == sorted([*history_files, KEY_FILE_NAME])
    for path in files + [os.path.join(config.service_dir, name) for name in service_files]:
        with open(path, "rb") as f:
            content = f.read()
        assert ana.encode() not in content, path
        if path.endswith(HISTORY_FILE_NAME):  # nor her items (ben has only i9)
            assert [item for item in (b"i1", b"i2", b"i3", b"i9") if item in content] == [b"i9"]
    for path in glob.glob(os.path.join(config.logs_dir, "*", "span=*", "*.parquet")):
        assert pq.read_schema(path).metadata[b"tailtower.log_schema_version"] == b"2"
    assert glob.glob(os.path.join(config.logs_dir, "*", ".tmp", "*")) == []
    store = open_history_store(config)
    ben = forget_user.pseudonymizer(config)("ben")
    assert (store.recent(ana, 20), store.recent(ben, 20)) == ([], ["i9"])
    store.close()


def test_a_service_restarted_after_forget_continues_the_rewritten_journal(config):
    forget_user.forget_user(config, "ana")
    ben = forget_user.pseudonymizer(config)("ben")
    log = EventLog(config.logs_dir, span=2)
    log.append(EVENTS, [event("r5", ben)])
    log.close()
    assert [r["request_id"] for r in records(config, EVENTS)] == ["r2", "r2", "r4", "r5"]


def test_forget_refuses_while_a_service_writes_the_logs_and_removes_nothing(config):
    before = {kind: records(config, kind) for kind in (SERVED, EVENTS)}
    log = EventLog(config.logs_dir, span=2)  # what a running service holds
    try:
        with pytest.raises(LogLocked, match=r"logs/\.lock is held by another process"):
            forget_user.forget_user(config, "ana")
        with pytest.raises(LogLocked):
            EventLog(config.logs_dir, span=2)  # one writer per folder
    finally:
        log.close()
    assert {kind: records(config, kind) for kind in (SERVED, EVENTS)} == before
    store = open_history_store(config)
    assert store.recent(forget_user.pseudonymizer(config)("ana"), 20) == ["i1", "i2", "i3"]
    store.close()


def test_a_torn_last_line_naming_the_user_is_cut(config):
    ana = forget_user.pseudonymizer(config)("ana")
    (journal,) = glob.glob(os.path.join(config.logs_dir, EVENTS, ".journal", "*.jsonl"))
    with open(journal, "ab") as f:
        f.write(b'[{"request_id":"r9","user_pseudonym":"' + ana.encode())  # a crash mid-write
    event_log.forget(config.logs_dir, ana)
    with open(journal, "rb") as f:
        content = f.read()
    assert content.endswith(b"\n") and ana.encode() not in content


def test_cli_prints_the_report_without_the_id_and_stops_without_a_key(config, tmp_path, capsys):
    argv = ["--history_backend", config.history_backend, "--redis_url", config.redis_url]
    argv += ["--output", config.output, "--user", "ana"]
    assert forget_user.main(argv) == 0
    out = capsys.readouterr().out
    assert "ana" not in out and "  history: 3 items\n" in out
    assert forget_user.main(argv) == 0  # nothing left
    assert capsys.readouterr().out.splitlines()[1:] == [
        "  history: 0 items",
        "  log records: served 0, events 0 (0 files rewritten)",
    ]

    empty = str(tmp_path / "never-served")
    assert forget_user.main(["--output", empty, "--user", "ana"]) == 1
    assert "error: no pseudonym key: $TAILTOWER_PSEUDONYM_KEY is unset" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(empty, "service", KEY_FILE_NAME))  # no new key made


def test_nothing_is_removed_when_the_history_backend_is_down(config, capsys):
    before = {kind: records(config, kind) for kind in (SERVED, EVENTS)}
    argv = ["--history_backend", REDIS, "--redis_url", "redis://127.0.0.1:1/0"]
    assert forget_user.main([*argv, "--output", config.output, "--user", "ana"]) == 1
    assert capsys.readouterr().err.startswith("error: redis: ConnectionError: ")
    assert {kind: records(config, kind) for kind in (SERVED, EVENTS)} == before
