"""The SQLite history store: order, the bound per user, the TTL, forgetting, thread safety."""

import threading

import pytest

from serving.history_store import SqliteHistoryStore


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path, clock):
    opened = SqliteHistoryStore(str(tmp_path / "h.sqlite3"), max_length=4, ttl_s=100, clock=clock)
    yield opened
    opened.close()


def test_recent_items_oldest_first_per_user(store):
    store.append("p1", ["a", "b"])
    store.append("p2", ["x"])
    store.append("p1", ["c"])
    assert store.recent("p1", 10) == ["a", "b", "c"]
    assert store.recent("p1", 2) == ["b", "c"]
    assert store.recent("p2", 10) == ["x"]
    assert store.recent("nobody", 10) == []


def test_bounded_length_keeps_the_most_recent(store):
    store.append("p1", ["a", "b", "c"])
    store.append("p1", ["d", "e", "f"])
    assert store.recent("p1", 10) == ["c", "d", "e", "f"]
    assert store._db.execute("SELECT COUNT(*) FROM history").fetchone() == (4,)  # trimmed, not just hidden


def test_ttl_hides_then_purges_old_items(store, clock):
    store.append("p1", ["old"])  # t = 1000
    clock.now = 1060
    store.append("p1", ["new"])
    assert store.recent("p1", 10) == ["old", "new"]
    clock.now = 1101  # "old" is 101 s old: past the 100 s TTL
    assert store.recent("p1", 10) == ["new"]
    store.append("p1", ["newer"])
    assert store._db.execute("SELECT item_id FROM history ORDER BY seq").fetchall() == [("new",), ("newer",)]


def test_forget_and_persistence(tmp_path, clock):
    path = str(tmp_path / "h.sqlite3")
    store = SqliteHistoryStore(path, max_length=4, ttl_s=100, clock=clock)
    store.append("p1", ["a"])
    store.append("p2", ["b", "c"])
    assert store.forget("p2") == 2
    store.close()
    reopened = SqliteHistoryStore(path, max_length=4, ttl_s=100, clock=clock)
    assert (reopened.recent("p1", 4), reopened.recent("p2", 4)) == (["a"], [])
    assert reopened._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert reopened._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    reopened.close()


def test_concurrent_appends_from_threads(store):
    threads = [threading.Thread(target=store.append, args=(f"p{n}", [f"i{n}"] * 3)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [store.recent(f"p{n}", 10) for n in range(8)] == [[f"i{n}"] * 3 for n in range(8)]


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="max_length must be >= 1 and ttl_s > 0, got 0 and 5"):
        SqliteHistoryStore(str(tmp_path / "h.sqlite3"), max_length=0, ttl_s=5)
