"""Real-time user history: the item ids a user interacted with, keyed by pseudonym (never the raw id).

  store = SqliteHistoryStore("demo-run/service/history.sqlite3", max_length=20, ttl_s=30 * 86400)
  store = RedisHistoryStore("redis://127.0.0.1:6379/0", max_length=20, ttl_s=30 * 86400)
  store.append(pseudonym, ["i003", "i017"])
  store.recent(pseudonym, 20)  # ["i003", "i017"], oldest first

`HistoryStore` is the interface the service uses, with two backends under the same tests:
`SqliteHistoryStore`, embedded (the default), and `RedisHistoryStore`, the production option (a list per
pseudonym). `open_history_store(config)` opens the one a ServiceConfig names. A backend that cannot be
reached or fails (Redis down, an SQLite file locked, unreadable or on a full disk) raises
`HistoryUnavailable`; the service then answers from the request-carried history alone.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from serving.service_config import REDIS

if TYPE_CHECKING:
    from serving.service_config import ServiceConfig

HISTORY_FILE_NAME = "history.sqlite3"
REDIS_KEY_PREFIX = "tailtower:history:"  # + pseudonym
REDIS_TIMEOUT_S = 1.0  # connect and reply timeouts (a URL's ?socket_timeout=… wins)


class HistoryUnavailable(RuntimeError):
    """The backend cannot be reached or failed (Redis down or timed out, an SQLite error); the message
    says why."""


class HistoryStore(Protocol):
    """At most `max_length` items per user, the most recent kept; items older than `ttl_s` are gone."""

    def append(self, user: str, item_ids: Sequence[str], ts: float | None = None) -> None:
        """Adds `item_ids` (in order) after the user's history; `ts` (unix seconds) defaults to now."""

    def recent(self, user: str, n: int) -> list[str]:
        """The user's last `n` item ids within the TTL, oldest first ([] for an unknown user)."""

    def forget(self, user: str) -> int:
        """Removes every item of the user; returns how many there were."""

    def ping(self) -> None:
        """Returns when the backend answers; raises HistoryUnavailable otherwise."""

    def close(self) -> None: ...


def open_history_store(config: ServiceConfig) -> HistoryStore:
    """The backend `config.history_backend` names (SQLITE: <output>/service/history.sqlite3)."""
    if config.history_backend == REDIS:
        return RedisHistoryStore(config.redis_url, config.history_length, config.history_ttl_s)
    path = os.path.join(config.service_dir, HISTORY_FILE_NAME)
    return SqliteHistoryStore(path, config.history_length, config.history_ttl_s)


def _check_settings(max_length: int, ttl_s: float) -> None:
    if max_length < 1 or ttl_s <= 0:
        raise ValueError(f"max_length must be >= 1 and ttl_s > 0, got {max_length} and {ttl_s}")


class SqliteHistoryStore:
    """`HistoryStore` in one SQLite file: WAL journal, synchronous=FULL (a returned append survives a crash),
    one connection shared under a lock (thread-safe)."""

    def __init__(self, path: str, max_length: int, ttl_s: float, clock=time.time):
        _check_settings(max_length, ttl_s)
        self.path = path
        self.max_length = max_length
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        with self._unavailable_on_error():
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            # Deleted rows are zeroed, so a forgotten user leaves no bytes in the file (see `forget`).
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS history (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " user TEXT NOT NULL, item_id TEXT NOT NULL, ts REAL NOT NULL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS history_user_seq ON history (user, seq)")

    @contextlib.contextmanager
    def _unavailable_on_error(self):
        try:
            yield
        except (sqlite3.Error, OSError) as e:
            raise HistoryUnavailable(f"sqlite {self.path}: {type(e).__name__}: {e}") from e

    def append(self, user: str, item_ids: Sequence[str], ts: float | None = None) -> None:
        ts = self._clock() if ts is None else ts
        with self._lock, self._unavailable_on_error(), self._db:  # one transaction: the items and the trim
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO history (user, item_id, ts) VALUES (?, ?, ?)", [(user, i, ts) for i in item_ids]
            )
            self._db.execute(
                "DELETE FROM history WHERE user = ? AND (ts < ? OR seq NOT IN"
                " (SELECT seq FROM history WHERE user = ? ORDER BY seq DESC LIMIT ?))",
                (user, self._clock() - self.ttl_s, user, self.max_length),
            )

    def recent(self, user: str, n: int) -> list[str]:
        with self._lock, self._unavailable_on_error():
            rows = self._db.execute(
                "SELECT item_id FROM history WHERE user = ? AND ts >= ? ORDER BY seq DESC LIMIT ?",
                (user, self._clock() - self.ttl_s, min(n, self.max_length)),
            ).fetchall()
        return [item for (item,) in reversed(rows)]

    def stored(self, user: str) -> list[str]:
        """Every item kept for the user, expired or not (what a purge must have removed)."""
        with self._lock, self._unavailable_on_error():
            rows = self._db.execute("SELECT item_id FROM history WHERE user = ? ORDER BY seq", (user,))
            return [item for (item,) in rows.fetchall()]

    def forget(self, user: str) -> int:
        """secure_delete zeroes the rows, but in WAL mode older copies of their pages stay in the -wal file
        (and in the main file until a checkpoint): the TRUNCATE checkpoint writes the zeroed pages back and
        empties the -wal, so no byte of the user is left in either file."""
        with self._lock, self._unavailable_on_error():
            with self._db:
                self._db.execute("BEGIN")
                count = self._db.execute("DELETE FROM history WHERE user = ?", (user,)).rowcount
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:  # another process has the file open for reading: its old pages may still be there
                raise HistoryUnavailable(f"sqlite {self.path}: the checkpoint after forget was blocked")
            return count

    def ping(self) -> None:
        with self._lock, self._unavailable_on_error():
            self._db.execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            self._db.close()


class RedisHistoryStore:
    """`HistoryStore` in Redis: one list per user under REDIS_KEY_PREFIX + pseudonym, entries
    "<unix ts> <item id>", oldest first.

    An append is one MULTI/EXEC: RPUSH the items, LTRIM to the bound and past the leading expired entries,
    EXPIRE the key after `ttl_s` (an idle user's key goes by itself). The trim start comes from the list read
    under WATCH (redis-py's `transaction`), so an append racing another for the same user retries rather
    than trim by a stale length. `recent` also hides expired entries, as SQLite does. Durability is Redis's
    own (the server's appendonly/save settings).
    Fails fast (one retry, to reconnect after a server restart; 1 s timeouts) with HistoryUnavailable.
    """

    def __init__(self, url: str, max_length: int, ttl_s: float, clock=time.time):
        _check_settings(max_length, ttl_s)
        self.max_length = max_length
        self.ttl_s = ttl_s
        self._clock = clock
        self._redis = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            retry=Retry(NoBackoff(), retries=1),
        )

    def append(self, user: str, item_ids: Sequence[str], ts: float | None = None) -> None:
        ts = self._clock() if ts is None else ts
        key = REDIS_KEY_PREFIX + user
        entries = [f"{ts!r} {item}" for item in item_ids]

        def update(pipe) -> None:
            stored = pipe.lrange(key, 0, -1)  # at most max_length entries
            cutoff = self._clock() - self.ttl_s
            everything = stored + entries
            expired = next((i for i, e in enumerate(everything) if _ts(e) >= cutoff), len(everything))
            pipe.multi()
            if entries:
                pipe.rpush(key, *entries)
            pipe.ltrim(key, max(expired, len(everything) - self.max_length), -1)
            pipe.pexpire(key, max(1, round(self.ttl_s * 1000)))

        with _unavailable_on_error():
            self._redis.transaction(update, key)

    def recent(self, user: str, n: int) -> list[str]:
        with _unavailable_on_error():
            stored = self._redis.lrange(REDIS_KEY_PREFIX + user, -self.max_length, -1)
        cutoff = self._clock() - self.ttl_s
        items = [entry.partition(" ")[2] for entry in stored if _ts(entry) >= cutoff]
        return items[max(0, len(items) - n) :]

    def stored(self, user: str) -> list[str]:
        """Every item kept for the user, expired or not (what a purge must have removed)."""
        with _unavailable_on_error():
            return [entry.partition(" ")[2] for entry in self._redis.lrange(REDIS_KEY_PREFIX + user, 0, -1)]

    def forget(self, user: str) -> int:
        key = REDIS_KEY_PREFIX + user
        with _unavailable_on_error():
            count, _ = self._redis.pipeline(transaction=True).llen(key).delete(key).execute()
        return count

    def ping(self) -> None:
        with _unavailable_on_error():
            self._redis.ping()

    def close(self) -> None:
        self._redis.close()


def _ts(entry: str) -> float:
    return float(entry.partition(" ")[0])


@contextlib.contextmanager
def _unavailable_on_error():
    try:
        yield
    except redis.RedisError as e:
        raise HistoryUnavailable(f"redis: {type(e).__name__}: {e}") from e
