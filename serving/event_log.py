"""The service's logs: one schema module, its writer and its readers.

The service writes here; forget-user, the example generator (components/log_examples.py: training on the
logs), live exposure and the report read through `read_table` / `read_records`.

Two record kinds, schema version SCHEMA_VERSION (every record carries it in `schema_version`; the Parquet
files also in their metadata under `tailtower.log_schema_version`):

  served  one per answered recommendation request
    schema_version int32 · request_id string · user_pseudonym string (serving/pseudonym.py) · ts float64
    (unix seconds) · model_name string · model_version int64 · surface string · knobs string (JSON object of
    the knobs sent to the model) · history list<string> (what the model saw, oldest first) · and per slot,
    as parallel lists in slot order: item_ids list<string> · positions list<int32> (0-based) · scores
    list<float64> · is_tail list<bool> · is_new list<bool>
  events  what the shop reports, joined to served lists by request_id
    schema_version int32 · request_id string · user_pseudonym string · item_id string · type string
    (impression | click | add_to_cart | purchase) · ts float64 (unix seconds)

Layout under `logs_dir`: `<kind>/span=<int>/part-<id>.parquet` (closed spans: complete files only) and
`<kind>/.journal/<span>-<id>.jsonl` (the open span). A span is an integer: by default the UTC hour
YYYYMMDDHH of the write; with `span=` given, spans are explicit and change only on `rotate()` (simulations).
A closed span never gets another record (a reader may have read it): a log starts in the latest of its span
(given, or the hour), the span after the highest closed one and the span of an open journal, so after the
clock went back or `rotate()` ran ahead of the hour a restart continues in a later span (its id is then a
label later than the hour). An explicit `span=` that is closed is a ValueError.

Durability: `submit()` encodes a batch as ONE JSON line on the caller's thread (a batch that cannot be encoded
is a ValueError there, alone) and queues it; one writer thread appends the line to the span's journal and
`os.fsync`s before the batch's future is resolved. A failed write or fsync cuts the journal back to its size
before the write and fails only the batches it held, so a batch is all-or-nothing: a torn last line (a crash
mid-write) is cut, and a corrupt line inside a journal (never expected) is skipped with a warning.
Group commit: the writer takes every batch queued while the previous fsync ran (and, with `linger_s` > 0,
waits that long for more) and pays one fsync per journal for the group. Cost: an append
waits for at most the fsync in progress plus its own group's (~0.1–10 ms by disk), and concurrent appends
share it. More than `max_pending` queued records → `LogFull` (the service answers 503), never a drop.

Closing a span (`rotate()`, the hour changing, or at start for a journal of an older span left by a crash)
writes its journal as one Parquet file under `<kind>/.tmp/`, fsyncs it, renames it into `span=<n>/` (a new
folder is fsync'd into its parent too) and only then deletes the journal. The file name comes from the
journal's id, so a crash between the rename and the delete closes the journal again onto the same name: no
duplicates.

One writer per folder: an EventLog holds an exclusive lock on `logs_dir/.lock` (flock: released when it
closes or its process dies, SIGKILL included). `forget()` (make forget-user) takes the same lock, so it
refuses to run while a service writes the folder (the service appends to the open journal through a file
descriptor: a journal rewritten under it would lose acknowledged batches) and a service cannot start while
it runs. It rewrites each file holding the pseudonym the way spans are closed: aside, fsync'd, renamed over.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prometheus_client import CollectorRegistry, Counter

from serving.log_fields import (  # noqa: F401  (re-exported: the log's names, owned by log_fields)
    EVENT_TYPES,
    EVENTS,
    KINDS,
    MAX_PENDING_RECORDS,
    MODEL_VERSION,
    POSITIONS,
    REASONS,
    REQUEST_ID,
    RULES_FIRED,
    SCHEMA_VERSION_FIELD,
    SERVED,
    SHOWN,
    SHOWN_IMPRESSIONS,
    SHOWN_SERVED,
    SPONSORED,
    TS,
    TYPE,
    USER_PSEUDONYM,
)
from trainer import features

logger = logging.getLogger(__name__)

# 2 added served.sponsored, reasons, because and rules_fired (null in version-1 files)
SCHEMA_VERSION = 2
_META_KEY = b"tailtower.log_schema_version"
JOURNAL_DIR = ".journal"
TMP_DIR = ".tmp"
LOCK_FILE = ".lock"

SCHEMAS: dict[str, pa.Schema] = {
    SERVED: pa.schema(
        [
            (SCHEMA_VERSION_FIELD, pa.int32()),
            (REQUEST_ID, pa.string()),
            (USER_PSEUDONYM, pa.string()),
            (TS, pa.float64()),
            ("model_name", pa.string()),
            (MODEL_VERSION, pa.int64()),
            ("surface", pa.string()),
            ("knobs", pa.string()),
            (features.HISTORY, pa.list_(pa.string())),
            (features.ITEM_IDS, pa.list_(pa.string())),
            (POSITIONS, pa.list_(pa.int32())),
            (features.SCORES, pa.list_(pa.float64())),
            (features.IS_TAIL, pa.list_(pa.bool_())),
            (features.IS_NEW, pa.list_(pa.bool_())),
            (SPONSORED, pa.list_(pa.bool_())),
            (REASONS, pa.list_(pa.string())),
            (features.BECAUSE, pa.list_(pa.string())),
            (RULES_FIRED, pa.list_(pa.string())),
        ],
        metadata={_META_KEY: str(SCHEMA_VERSION).encode()},
    ),
    EVENTS: pa.schema(
        [
            (SCHEMA_VERSION_FIELD, pa.int32()),
            (REQUEST_ID, pa.string()),
            (USER_PSEUDONYM, pa.string()),
            (features.ITEM_ID, pa.string()),
            (TYPE, pa.string()),
            (TS, pa.float64()),
        ],
        metadata={_META_KEY: str(SCHEMA_VERSION).encode()},
    ),
}


class LogFull(RuntimeError):
    """The writer's queue is full (backpressure): retry later. Nothing of the batch was written."""


class LogLocked(RuntimeError):
    """Another EventLog or forget() holds the folder's lock."""


def hour_span(ts: float) -> int:
    """The default span of a time: its UTC hour as YYYYMMDDHH."""
    return int(time.strftime("%Y%m%d%H", time.gmtime(ts)))


def check_record(kind: str, record: Mapping) -> dict:
    """`record` with `schema_version` set; ValueError naming missing or unknown fields."""
    names = SCHEMAS[kind].names
    record = {SCHEMA_VERSION_FIELD: SCHEMA_VERSION, **record}
    missing = sorted(set(names) - set(record))
    unknown = sorted(set(record) - set(names))
    if missing or unknown:
        raise ValueError(f"{kind} record: missing {missing}, unknown {unknown}; fields: {list(names)}")
    return record


@dataclass
class _Batch:
    kind: str
    count: int
    line: bytes  # the journal line: the records as one JSON list
    future: Future = field(default_factory=Future)
    settled: bool = False


class LogMetrics:
    def __init__(self, registry: CollectorRegistry | None):
        registry = registry if registry is not None else CollectorRegistry()  # several logs per process
        self.records = Counter(
            "tailtower_service_log_records",
            "Log records by kind and result (written: durable; rejected: queue full).",
            ["kind", "result"],
            registry=registry,
        )


class EventLog:
    """Thread-safe writer of both record kinds. `submit` returns a future resolved once the batch is durable;
    `append` waits for it. Always `close()` (closes nothing into Parquet: the open span continues on restart).
    """

    def __init__(
        self,
        logs_dir: str,
        span: int | None = None,
        max_pending: int = MAX_PENDING_RECORDS,
        linger_s: float = 0.0,
        registry: CollectorRegistry | None = None,
        clock=time.time,
    ):
        self.logs_dir = logs_dir
        self._lock_fd = lock_logs(logs_dir)
        self._explicit = span is not None
        self._clock = clock
        self._max_pending = max_pending
        self._linger_s = linger_s
        self._metrics = LogMetrics(registry)
        self._queue: queue.Queue = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._journals: dict[str, tuple[int, str, int]] = {}  # kind → (span, path, fd)
        try:
            for kind in KINDS:
                for sub in (JOURNAL_DIR, TMP_DIR):
                    _make_dirs(os.path.join(logs_dir, kind, sub))
            self._span = _first_span(logs_dir, span, hour_span(clock()))
            self._recover()
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._thread = threading.Thread(target=self._run, name="event-log", daemon=True)
        self._thread.start()

    @property
    def span(self) -> int:
        return self._span

    # ------------------------------------------------------------------------------------ public API
    def submit(self, kind: str, records: Iterable[Mapping]) -> Future:
        """Queues `records` as one batch (validated and encoded first: ValueError, nothing queued). LogFull
        when the queue already holds `max_pending` records. The future may be cancelled: the batch is still
        written."""
        checked = [check_record(kind, record) for record in records]
        line = _journal_line(kind, checked)
        with self._lock:
            if self._pending + len(checked) > self._max_pending:
                self._metrics.records.labels(kind, "rejected").inc(len(checked))
                raise LogFull(f"{self._pending} log records pending (max {self._max_pending}): retry later")
            self._pending += len(checked)
        batch = _Batch(kind, len(checked), line)
        self._queue.put(batch)
        return batch.future

    def append(self, kind: str, records: Iterable[Mapping], timeout_s: float | None = None) -> None:
        self.submit(kind, records).result(timeout_s)

    def rotate(self, next_span: int | None = None) -> int:
        """Closes the open span of both kinds into Parquet and opens `next_span` (default: the open span + 1).
        Hourly spans stay hourly: the next hour still rotates on its own. Returns the new span."""
        return self.submit_rotate(next_span).result()

    def submit_rotate(self, next_span: int | None = None) -> Future:
        """`rotate` without waiting: a future of the new span (ValueError if `next_span` is not later)."""
        return self._control(("rotate", next_span))

    def flush(self) -> None:
        """Returns once every batch submitted before the call is durable."""
        self._control(("flush", None)).result()

    def close(self) -> None:
        self._control(("stop", None)).result()
        self._thread.join()
        os.close(self._lock_fd)  # releases the folder's lock

    # ------------------------------------------------------------------------------------ writer thread
    def _control(self, command) -> Future:
        future: Future = Future()
        self._queue.put((command, future))
        return future

    def _run(self) -> None:
        while True:
            group = [self._queue.get()]
            if self._linger_s > 0 and isinstance(group[0], _Batch):
                deadline = time.monotonic() + self._linger_s
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        group.append(self._queue.get(timeout=left))
                    except queue.Empty:
                        break
            while True:  # everything queued meanwhile joins this group
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                if self._commit(group):
                    return
            except Exception as e:  # noqa: BLE001  a bug must not stop the writer: every later write would hang
                logger.exception("log writer failed")
                self._fail_group(group, e)

    def _fail_group(self, group: list, error: Exception) -> None:
        for item in group:
            if isinstance(item, _Batch):
                self._settle(item, error)
            else:
                _resolve(item[1], error=error)

    def _commit(self, group: list) -> bool:
        """Writes the batches up to each control command, one fsync per journal; runs the commands in order.
        Returns True on stop."""
        batches: list[_Batch] = []
        for item in group:
            if isinstance(item, _Batch):
                batches.append(item)
                continue
            self._write(batches)
            batches = []
            (name, argument), future = item
            try:
                if name == "rotate":
                    _resolve(future, self._rotate(argument))
                elif name == "flush":
                    _resolve(future, None)
                else:
                    self._close_journal_files()
                    _resolve(future, None)
                    return True
            except Exception as e:  # noqa: BLE001  the caller gets it
                _resolve(future, error=e)
        self._write(batches)
        return False

    def _write(self, batches: list[_Batch]) -> None:
        """Appends each batch, then one fsync per journal; an error fails only the batches it touched."""
        if not batches:
            return
        try:
            if not self._explicit and (now := hour_span(self._clock())) > self._span:
                self._rotate(now)
        except Exception as e:  # noqa: BLE001  no journal to write to: the group fails
            logger.exception("log rotation failed")
            for batch in batches:
                self._settle(batch, e)
            return
        written: dict[int, tuple[int, list[_Batch]]] = {}  # fd → (size before the group, its batches)
        for batch in batches:
            try:
                fd = self._journal_fd(batch.kind)
                size = os.fstat(fd).st_size
                _write_all(fd, batch.line, size)
            except Exception as e:  # noqa: BLE001  this batch alone fails
                logger.exception("log write failed")
                self._settle(batch, e)
                continue
            written.setdefault(fd, (size, []))[1].append(batch)
        for fd, (size, done) in written.items():
            try:
                os.fsync(fd)
                error = None
            except Exception as e:  # noqa: BLE001  not durable: cut back, the batches fail
                logger.exception("log fsync failed")
                _truncate(fd, size)
                error = e
            for batch in done:
                self._settle(batch, error)

    def _settle(self, batch: _Batch, error: Exception | None) -> None:
        if batch.settled:
            return
        batch.settled = True
        with self._lock:
            self._pending -= batch.count
        if error is None:
            self._metrics.records.labels(batch.kind, "written").inc(batch.count)
        _resolve(batch.future, batch.count, error)

    def _journal_fd(self, kind: str) -> int:
        current = self._journals.get(kind)
        if current is not None and current[0] == self._span:
            return current[2]
        path = os.path.join(self.logs_dir, kind, JOURNAL_DIR, f"{self._span}-{uuid.uuid4().hex}.jsonl")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _fsync_dir(os.path.dirname(path))  # the new name itself survives a crash
        self._journals[kind] = (self._span, path, fd)
        return fd

    def _rotate(self, next_span: int | None) -> int:
        next_span = self._span + 1 if next_span is None else next_span
        if next_span <= self._span:
            raise ValueError(f"next span {next_span} must be after the open span {self._span}")
        self._close_journal_files()
        for kind in KINDS:
            for path in _journals(self.logs_dir, kind):
                _close_span(self.logs_dir, kind, path)
        self._span = next_span
        return next_span

    def _close_journal_files(self) -> None:
        for _, _, fd in self._journals.values():
            os.close(fd)
        self._journals.clear()

    def _recover(self) -> None:
        """At start: journals of older spans are closed; one of the open span is reused (torn tail cut).
        (`_first_span` makes the open span the latest: no journal is of a later one.)"""
        for kind in KINDS:
            for tmp in glob.glob(os.path.join(self.logs_dir, kind, TMP_DIR, "*")):
                os.remove(tmp)  # never renamed: its journal is still there
            for path in _journals(self.logs_dir, kind):
                span = _journal_span(path)
                if span != self._span:
                    _close_span(self.logs_dir, kind, path)
                elif kind not in self._journals:
                    _cut_torn_tail(path)
                    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                    self._journals[kind] = (span, path, fd)


def _resolve(future: Future, result=None, error: Exception | None = None) -> None:
    """Resolves `future` unless it is already resolved or its waiter cancelled it (aiohttp cancels handlers at
    shutdown; asyncio.wrap_future passes that on)."""
    if future.done():
        return
    with contextlib.suppress(InvalidStateError):  # cancelled meanwhile
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


def _first_span(logs_dir: str, span: int | None, hour: int) -> int:
    """The span a log starts in: never a closed one (see the module docstring)."""
    closed = max((s for kind in KINDS for s in spans(logs_dir, kind)), default=None)
    open_spans = [_journal_span(path) for kind in KINDS for path in _journals(logs_dir, kind)]
    if span is not None:
        if closed is not None and span <= closed:
            raise ValueError(f"span {span} is closed (closed spans up to {closed}): start in a later one")
        return max([span, *open_spans])
    return max([hour, *open_spans, *([closed + 1] if closed is not None else [])])


# ------------------------------------------------------------------------------------ files
def _journal_line(kind: str, records: list[dict]) -> bytes:
    """The batch as one JSON line; ValueError naming the kind when it cannot be (NaN, a lone surrogate)."""
    try:
        text = json.dumps(records, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return (text + "\n").encode()
    except (ValueError, TypeError) as e:  # UnicodeEncodeError is a ValueError
        detail = e.reason if isinstance(e, UnicodeError) else str(e)  # the reason, not the text
        raise ValueError(f"{kind} batch cannot be logged: {type(e).__name__}: {detail}") from None


def _write_all(fd: int, data: bytes, size: int) -> None:
    """Appends all of `data` (os.write may write less); on an error cuts the file back to `size`."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        _truncate(fd, size)
        raise


def _truncate(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        logger.exception("could not cut a journal back after a failed write: readers skip the torn line")


def _journals(logs_dir: str, kind: str) -> list[str]:
    return sorted(glob.glob(os.path.join(logs_dir, kind, JOURNAL_DIR, "*.jsonl")))


def _journal_span(path: str) -> int:
    return int(os.path.basename(path).split("-", 1)[0])


def _read_journal(path: str) -> list[dict]:
    """Every complete batch; a torn last line (a crash mid-write, never acknowledged) and a corrupt line (a
    failed write that could not be cut back) are skipped."""
    records = []
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                break
            batch = _parse_line(line, path, number)
            records.extend(batch or [])
    return records


def _parse_line(line: bytes, path: str, number: int) -> list[dict] | None:
    """The batch of a journal line; None (and a warning) for a corrupt one."""
    try:
        batch = json.loads(line)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        batch = None
    if not isinstance(batch, list) or not all(isinstance(record, dict) for record in batch):
        logger.warning("skipped corrupt line %d of %s", number, path)
        return None
    return batch


def _cut_torn_tail(path: str) -> None:
    with open(path, "rb+") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            f.truncate(end)
            os.fsync(f.fileno())


def _close_span(logs_dir: str, kind: str, journal: str) -> None:
    """journal → one Parquet file, written aside, fsync'd, renamed into span=<n>/; then the journal goes."""
    span = _journal_span(journal)
    name = "part-" + os.path.basename(journal).split("-", 1)[1].removesuffix(".jsonl") + ".parquet"
    span_dir = os.path.join(logs_dir, kind, f"span={span}")
    final = os.path.join(span_dir, name)
    records = _read_journal(journal)
    if records and not os.path.exists(final):
        tmp = os.path.join(logs_dir, kind, TMP_DIR, name)
        pq.write_table(pa.Table.from_pylist(records, schema=SCHEMAS[kind]), tmp)
        _make_dirs(span_dir)  # its entry in <kind>/ is durable before the journal goes
        _publish(tmp, final)
    os.remove(journal)
    _fsync_dir(os.path.dirname(journal))
    logger.info("closed %s span %d: %d records", kind, span, len(records))


def _publish(tmp: str, final: str) -> None:
    """tmp (complete) → final, atomically and durably: fsync the file, rename (over any old one), fsync the
    folder."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    _fsync_dir(os.path.dirname(final))


def _make_dirs(path: str) -> None:
    """os.makedirs, each folder it creates fsync'd into its parent so that its entry survives a crash."""
    missing = []
    path = os.path.abspath(path)
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for folder in reversed(missing):
        os.makedirs(folder, exist_ok=True)
        _fsync_dir(os.path.dirname(folder))


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_logs(logs_dir: str) -> int:
    """Takes the folder's exclusive lock (one EventLog, or forget()); returns its descriptor, whose close
    releases it. LogLocked when another holder has it."""
    _make_dirs(logs_dir)
    path = os.path.join(logs_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LogLocked(
            f"{path} is held by another process (a running service or forget-user): stop it first"
        ) from None
    return fd


# ------------------------------------------------------------------------------------ forgetting
@dataclass(frozen=True)
class Removal:
    """Records of one user removed from one file: a closed span's Parquet file or an open journal."""

    kind: str
    span: int
    is_open: bool
    path: str
    records: int


def forget(logs_dir: str, pseudonym: str) -> list[Removal]:
    """Removes every record of `pseudonym` from every span, closed and open, under the folder's lock
    (LogLocked while a service writes here). Each affected file is rewritten aside, fsync'd and renamed over
    the old one, so a reader sees the old file or the new one; other records are kept unchanged, in order.
    A file left without records stays (empty), so no span disappears."""
    if not os.path.isdir(logs_dir):
        return []
    lock = lock_logs(logs_dir)
    try:
        removals = []
        for kind in KINDS:
            _make_dirs(os.path.join(logs_dir, kind, TMP_DIR))
            closed = [
                (span, False, path)
                for span in spans(logs_dir, kind)
                for path in _span_files(logs_dir, kind, span)
            ]
            journals = [(_journal_span(path), True, path) for path in _journals(logs_dir, kind)]
            for span, is_open, path in closed + journals:
                if is_open:
                    removed = _forget_in_journal(path, pseudonym)
                else:
                    removed = _forget_in_parquet(kind, path, pseudonym)
                if removed:
                    removals.append(Removal(kind, span, is_open, path, removed))
        return removals
    finally:
        os.close(lock)


def _tmp_path(path: str) -> str:
    """The aside name of a file of <kind>/<sub>/: <kind>/.tmp/<name> (cleared by an EventLog's start)."""
    kind_dir = os.path.dirname(os.path.dirname(path))
    return os.path.join(kind_dir, TMP_DIR, os.path.basename(path))


def _forget_in_parquet(kind: str, path: str, pseudonym: str) -> int:
    table = pq.read_table(path, schema=SCHEMAS[kind])
    drop = pc.fill_null(pc.equal(table[USER_PSEUDONYM], pseudonym), False)
    removed = pc.sum(drop).as_py() or 0
    if removed:
        tmp = _tmp_path(path)
        pq.write_table(table.filter(pc.invert(drop)), tmp)
        _publish(tmp, path)
    return removed


def _forget_in_journal(path: str, pseudonym: str) -> int:
    """Batches without the user keep their bytes; a torn last line (never acknowledged) or a corrupt line
    goes if it names the user."""
    with open(path, "rb") as f:
        lines = f.readlines()
    kept, removed, torn = [], 0, False
    for number, line in enumerate(lines, 1):
        if not line.endswith(b"\n"):
            torn = torn or pseudonym.encode() in line
            break
        batch = _parse_line(line, path, number)
        if batch is None:  # corrupt: kept unless it may name the user
            if pseudonym.encode() in line:
                torn = True
            else:
                kept.append(line)
            continue
        others = [record for record in batch if record[USER_PSEUDONYM] != pseudonym]
        removed += len(batch) - len(others)
        if len(others) == len(batch):
            kept.append(line)
        elif others:
            kept.append(_journal_line("journal", others))
    if removed or torn:
        tmp = _tmp_path(path)
        with open(tmp, "wb") as f:
            f.writelines(kept)
        _publish(tmp, path)
    return removed


# ------------------------------------------------------------------------------------ readers
def spans(logs_dir: str, kind: str) -> list[int]:
    """The closed spans of `kind`, ascending."""
    found = glob.glob(os.path.join(logs_dir, kind, "span=*"))
    return sorted(int(os.path.basename(path).split("=", 1)[1]) for path in found)


def next_free_span(logs_dir: str) -> int:
    """The first span after every closed one (1 for a new folder): where a manually cut log starts."""
    return max((s for kind in KINDS for s in spans(logs_dir, kind)), default=0) + 1


def _span_files(logs_dir: str, kind: str, span: int) -> list[str]:
    return sorted(glob.glob(os.path.join(logs_dir, kind, f"span={span}", "*.parquet")))


def read_table(
    logs_dir: str, kind: str, span_ids: Iterable[int] | None = None, include_open: bool = False
) -> pa.Table:
    """Records of the closed spans (all, or `span_ids`), plus those of the open journal(s) when asked."""
    wanted = spans(logs_dir, kind) if span_ids is None else list(span_ids)
    tables = [
        pq.read_table(path, schema=SCHEMAS[kind])
        for span in wanted
        for path in _span_files(logs_dir, kind, span)
    ]
    if include_open:
        open_records = [record for path in _journals(logs_dir, kind) for record in _read_journal(path)]
        tables.append(pa.Table.from_pylist(open_records, schema=SCHEMAS[kind]))
    if not tables:
        return SCHEMAS[kind].empty_table()
    return pa.concat_tables(tables)


def read_records(
    logs_dir: str, kind: str, span_ids: Iterable[int] | None = None, include_open: bool = False
) -> list[dict]:
    return read_table(logs_dir, kind, span_ids, include_open).to_pylist()
