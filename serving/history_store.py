"""Real-time user history: the item ids a user interacted with, keyed by pseudonym (never the raw id).

  store = SqliteHistoryStore("demo-run/service/history.sqlite3", max_length=20, ttl_s=30 * 86400)
  store.append(pseudonym, ["i003", "i017"])
  store.recent(pseudonym, 20)  # ["i003", "i017"], oldest first

`HistoryStore` is the interface the service uses; `SqliteHistoryStore` is the embedded default. A Redis
backend (the production option: a list per pseudonym with LPUSH + LTRIM for the bound and EXPIRE for the
TTL) is meant to implement the same three methods and run under the same tests; it is not here yet because
the environment does not ship redis-server.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Protocol

HISTORY_FILE_NAME = "history.sqlite3"


class HistoryStore(Protocol):
    """At most `max_length` items per user, the most recent kept; items older than `ttl_s` are gone."""

    def append(self, user: str, item_ids: Sequence[str], ts: float | None = None) -> None:
        """Adds `item_ids` (in order) after the user's history; `ts` (unix seconds) defaults to now."""

    def recent(self, user: str, n: int) -> list[str]:
        """The user's last `n` item ids within the TTL, oldest first ([] for an unknown user)."""

    def forget(self, user: str) -> int:
        """Removes every item of the user; returns how many there were."""

    def close(self) -> None: ...


class SqliteHistoryStore:
    """`HistoryStore` in one SQLite file: WAL journal, synchronous=FULL (a returned append survives a crash),
    one connection shared under a lock (thread-safe)."""

    def __init__(self, path: str, max_length: int, ttl_s: float, clock=time.time):
        if max_length < 1 or ttl_s <= 0:
            raise ValueError(f"max_length must be >= 1 and ttl_s > 0, got {max_length} and {ttl_s}")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.max_length = max_length
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS history (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " user TEXT NOT NULL, item_id TEXT NOT NULL, ts REAL NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS history_user_seq ON history (user, seq)")

    def append(self, user: str, item_ids: Sequence[str], ts: float | None = None) -> None:
        ts = self._clock() if ts is None else ts
        with self._lock, self._db:  # one transaction: the items and the trim
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
        with self._lock:
            rows = self._db.execute(
                "SELECT item_id FROM history WHERE user = ? AND ts >= ? ORDER BY seq DESC LIMIT ?",
                (user, self._clock() - self.ttl_s, min(n, self.max_length)),
            ).fetchall()
        return [item for (item,) in reversed(rows)]

    def forget(self, user: str) -> int:
        with self._lock, self._db:
            self._db.execute("BEGIN")
            return self._db.execute("DELETE FROM history WHERE user = ?", (user,)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
