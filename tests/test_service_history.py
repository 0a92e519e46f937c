"""The history stores, SQLite and Redis (a real redis-server), under the same tests: order, the bound per
user, the TTL, forgetting, persistence, thread safety; then what is particular to each backend."""

import os
import threading
import time

import pytest
import redis

from serving.history_store import (
    HISTORY_FILE_NAME,
    REDIS_KEY_PREFIX,
    HistoryUnavailable,
    RedisHistoryStore,
    SqliteHistoryStore,
    open_history_store,
)
from serving.redis_process import RedisServer
from serving.service_config import HISTORY_BACKENDS, REDIS, SQLITE, ServiceConfig, parse_args


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(params=HISTORY_BACKENDS)
def open_store(request, tmp_path, clock):
    """Opens a store of the backend under test (a second one sees the same data); closes them all after."""
    opened = []
    if request.param == REDIS:
        url = request.getfixturevalue("redis_server").url
        with redis.Redis.from_url(url) as client:
            client.flushdb()

    def open_(max_length: int = 4, ttl_s: float = 100):
        if request.param == REDIS:
            store = RedisHistoryStore(url, max_length, ttl_s, clock=clock)
        else:
            store = SqliteHistoryStore(str(tmp_path / "h.sqlite3"), max_length, ttl_s, clock=clock)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store):
    return open_store()


def test_recent_items_oldest_first_per_user(store):
    store.append("p1", ["a", "b"])
    store.append("p2", ["x"])
    store.append("p1", ["c"])
    assert store.recent("p1", 10) == ["a", "b", "c"]
    assert store.recent("p1", 2) == ["b", "c"]
    assert store.recent("p1", 0) == []
    assert store.recent("p2", 10) == ["x"]
    assert store.recent("nobody", 10) == []


def test_bounded_length_keeps_the_most_recent(store):
    store.append("p1", ["a", "b", "c"])
    store.append("p1", ["d", "e", "f"])
    assert store.recent("p1", 10) == ["c", "d", "e", "f"]
    assert store.stored("p1") == ["c", "d", "e", "f"]  # trimmed, not just hidden
    store.append("p1", ["g", "h", "i", "j", "k"])  # one append longer than the bound
    assert store.stored("p1") == ["h", "i", "j", "k"]


def test_ttl_hides_then_purges_old_items(store, clock):
    store.append("p1", ["old"])  # t = 1000
    clock.now = 1060
    store.append("p1", ["new"])
    assert store.recent("p1", 10) == ["old", "new"]
    clock.now = 1101  # "old" is 101 s old: past the 100 s TTL
    assert store.recent("p1", 10) == ["new"]
    assert store.stored("p1") == ["old", "new"]  # hidden at once, purged at the next append
    store.append("p1", ["newer"])
    assert store.stored("p1") == ["new", "newer"]


def test_forget_then_a_new_store_sees_the_same_data(open_store):
    store = open_store()
    store.append("p1", ["a"])
    store.append("p2", ["b", "c"])
    assert store.forget("p2") == 2
    assert store.forget("p2") == 0
    store.close()
    reopened = open_store()
    assert (reopened.recent("p1", 4), reopened.recent("p2", 4)) == (["a"], [])


def test_concurrent_appends_from_threads(store):
    threads = [threading.Thread(target=store.append, args=(f"p{n}", [f"i{n}"] * 3)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [store.recent(f"p{n}", 10) for n in range(8)] == [[f"i{n}"] * 3 for n in range(8)]


def test_concurrent_appends_to_one_user_keep_the_bound_exactly(store):
    def append_many(n: int) -> None:
        for j in range(10):
            store.append("p", [f"t{n}-{j}"])

    threads = [threading.Thread(target=append_many, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    kept = store.stored("p")
    assert len(kept) == 4 and len(set(kept)) == 4
    per_thread: dict[str, list[int]] = {}
    for item in kept:
        thread, j = item[1:].split("-")
        per_thread.setdefault(thread, []).append(int(j))
    assert all(js == sorted(js) for js in per_thread.values())  # each thread's items in its own order


@pytest.mark.parametrize("store_class", [SqliteHistoryStore, RedisHistoryStore])
def test_bad_settings_are_refused(tmp_path, store_class):
    where = str(tmp_path / "h.sqlite3") if store_class is SqliteHistoryStore else "redis://127.0.0.1:1/0"
    with pytest.raises(ValueError, match="max_length must be >= 1 and ttl_s > 0, got 0 and 5"):
        store_class(where, max_length=0, ttl_s=5)


def test_sqlite_file_is_wal_with_full_sync(tmp_path):
    store = SqliteHistoryStore(str(tmp_path / "h.sqlite3"), max_length=4, ttl_s=100)
    assert store._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert store._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    store.close()


def test_sqlite_errors_raise_history_unavailable(tmp_path):
    """An SQLite failure is HistoryUnavailable (the service then falls back), never a bare sqlite3.Error."""
    store = SqliteHistoryStore(str(tmp_path / "h.sqlite3"), max_length=4, ttl_s=100)
    store.append("p1", ["a"])
    store._db.close()  # what any later statement meets: sqlite3.ProgrammingError, a sqlite3.Error
    calls = [lambda: store.append("p1", ["b"]), lambda: store.recent("p1", 4), lambda: store.forget("p1")]
    for call in [*calls, store.ping, lambda: store.stored("p1")]:
        with pytest.raises(HistoryUnavailable, match=r"^sqlite .*h\.sqlite3: ProgrammingError: "):
            call()
    store.close()

    garbage = tmp_path / "not-a-database.sqlite3"
    garbage.write_bytes(b"x" * 4096)
    with pytest.raises(HistoryUnavailable, match=r"not-a-database\.sqlite3: DatabaseError: file is not a"):
        SqliteHistoryStore(str(garbage), max_length=4, ttl_s=100)


def test_sqlite_forget_leaves_no_byte_of_the_user_in_the_file_or_its_wal(tmp_path):
    """Checked while the store is still open (a running service): the rows are zeroed (secure_delete) and
    the -wal, which still holds the pages written before, is checkpointed and emptied."""
    path = str(tmp_path / "h.sqlite3")
    store = SqliteHistoryStore(path, max_length=4, ttl_s=100)
    user, other = "a" * 64, "b" * 64
    store.append(user, ["i-ana-1", "i-ana-2"])
    store.append(other, ["i9"])
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the user's rows in the main file too
    store.append(user, ["i-ana-3"])  # and in the -wal
    assert store.forget(user) == 3
    files = [path, path + "-wal"]
    assert [os.path.exists(f) for f in files] == [True, True]
    for name in files:
        with open(name, "rb") as f:
            content = f.read()
        assert user.encode() not in content and b"i-ana-" not in content, name
    assert store.recent(other, 4) == ["i9"]
    store.close()


def test_redis_keeps_one_list_per_pseudonym_with_a_ttl(redis_server, clock):
    store = RedisHistoryStore(redis_server.url, max_length=4, ttl_s=100, clock=clock)
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as client:
        client.flushdb()
        store.append("3f0c", ["a", "b"])
        assert client.keys("*") == [REDIS_KEY_PREFIX + "3f0c"]
        assert client.lrange(REDIS_KEY_PREFIX + "3f0c", 0, -1) == ["1000.0 a", "1000.0 b"]
        assert 99_000 < client.pttl(REDIS_KEY_PREFIX + "3f0c") <= 100_000  # EXPIRE ttl_s, renewed per append
    store.close()


def test_redis_append_racing_another_is_retried_not_over_the_bound(redis_server):
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushdb()
    other = RedisHistoryStore(redis_server.url, max_length=4, ttl_s=100, clock=Clock())
    calls = []

    def racing_clock() -> float:
        calls.append(len(calls))
        if len(calls) == 2:  # inside the append's WATCH, between its read and its MULTI/EXEC
            other.append("p", ["x", "y"])
        return 1000.0

    store = RedisHistoryStore(redis_server.url, max_length=4, ttl_s=100, clock=racing_clock)
    store.append("p", ["a", "b", "c"])
    # 1st try read [] and would trim nothing: [x y a b c] is over the bound; the retry reads [x y]
    assert (store.stored("p"), len(calls)) == (["y", "a", "b", "c"], 3)
    store.close()
    other.close()


def test_redis_down_raises_history_unavailable_fast_then_recovers(tmp_path, clock):
    server = RedisServer(tmp_path).start()
    store = RedisHistoryStore(server.url, max_length=4, ttl_s=100, clock=clock)
    try:
        store.append("p1", ["a"])
        server.kill()
        for call in (lambda: store.append("p1", ["b"]), lambda: store.recent("p1", 4), store.ping):
            start = time.monotonic()
            with pytest.raises(HistoryUnavailable, match="^redis: ConnectionError: "):
                call()
            assert time.monotonic() - start < 1.0  # refused at once: no backoff, one retry
        server.start()  # same port, empty (no persistence): the pooled connection reconnects
        store.ping()
        store.append("p1", ["c"])
        assert store.recent("p1", 4) == ["c"]
    finally:
        store.close()
        server.stop()


@pytest.mark.parametrize("backend, store_class", [(SQLITE, SqliteHistoryStore), (REDIS, RedisHistoryStore)])
def test_open_history_store_picks_the_configured_backend(tmp_path, backend, store_class):
    config = ServiceConfig(output=str(tmp_path), history_backend=backend, redis_url="redis://127.0.0.1:1/0")
    store = open_history_store(config)
    assert type(store) is store_class
    assert (tmp_path / "service" / HISTORY_FILE_NAME).exists() == (backend == SQLITE)
    store.close()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--history_backend", "memcached"], "--history_backend: must be one of ['sqlite', 'redis']"),
        (["--redis_url", "127.0.0.1:6379"], "argument --redis_url: must be redis[s]://host:port/db or unix"),
        (["--redis_url", "redis://host:port/0"], "argument --redis_url: must be redis[s]://host:port/db"),
    ],
)
def test_backend_flags_are_checked_at_parse_time(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


def test_backend_flags_set_fields():
    config = parse_args(["--history_backend", "redis", "--redis_url", "unix:///run/redis.sock?db=2"])
    assert (config.history_backend, config.redis_url) == ("redis", "unix:///run/redis.sock?db=2")
    assert (ServiceConfig().history_backend, ServiceConfig().redis_url) == ("sqlite", "redis://127.0.0.1:6379/0")
