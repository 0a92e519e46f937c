"""The service's log: versioned schema, fsync'd group commit, backpressure, atomic spans, crash recovery."""

import glob
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pyarrow.parquet as pq
import pytest

from serving import event_log
from serving.event_log import EVENTS, SERVED, EventLog, LogFull, read_records, spans

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def event(n: int, kind: str = "click") -> dict:
    return {
        "request_id": f"r{n}",
        "user_pseudonym": "ab" * 32,
        "item_id": f"i{n}",
        "type": kind,
        "ts": n + 0.25,
    }


SERVED_RECORD = {
    "request_id": "r1",
    "user_pseudonym": "cd" * 32,
    "ts": 1764700000.123456,
    "model_name": "tailtower",
    "model_version": 3,
    "surface": "home",
    "knobs": '{"mmr_lambda": 0.2}',
    "history": ["i1", "i2"],
    "item_ids": ["i7", "i9"],
    "positions": [0, 1],
    "scores": [0.5, 0.1428571492433548],  # float32 values, exact in float64
    "is_tail": [False, True],
    "is_new": [True, False],
    "sponsored": [False, True],
    "reasons": ["similar_to", "sponsored"],
    "because": ["i1", ""],
    "rules_fired": ["sponsored#1"],
}


@pytest.fixture
def log(tmp_path):
    opened = EventLog(str(tmp_path), span=7)
    yield opened
    opened.close()


def test_hour_span():
    assert event_log.hour_span(0) == 1970010100
    assert event_log.hour_span(1764703800) == 2025120219  # 2025-12-02 19:30 UTC


def test_round_trip_is_exact_and_carries_the_schema_version(log, tmp_path):
    log.append(SERVED, [SERVED_RECORD])
    log.append(EVENTS, [event(1), event(2, "purchase")])
    expected_events = [{"schema_version": 2} | event(1), {"schema_version": 2} | event(2, "purchase")]
    assert read_records(str(tmp_path), EVENTS, include_open=True) == expected_events
    assert read_records(str(tmp_path), EVENTS) == []  # the span is still open
    assert log.rotate() == 8
    assert spans(str(tmp_path), SERVED) == [7]
    assert read_records(str(tmp_path), SERVED) == [{"schema_version": 2} | SERVED_RECORD]
    assert read_records(str(tmp_path), EVENTS, span_ids=[7]) == expected_events
    (path,) = glob.glob(str(tmp_path / "events" / "span=7" / "*.parquet"))
    assert pq.read_schema(path).metadata[b"tailtower.log_schema_version"] == b"2"
    assert glob.glob(str(tmp_path / "*" / ".journal" / "*")) == []  # journals gone after the rename


def test_bad_records_are_rejected_before_anything_is_queued(log, tmp_path):
    with pytest.raises(ValueError, match=r"missing \['ts'\], unknown \['colour'\]"):
        log.append(EVENTS, [event(1), {k: v for k, v in event(2).items() if k != "ts"} | {"colour": "red"}])
    log.flush()
    assert read_records(str(tmp_path), EVENTS, include_open=True) == []


def test_concurrent_appends_share_one_fsync(tmp_path, monkeypatch):
    log = EventLog(str(tmp_path), span=1)
    log.append(EVENTS, [event(0)])  # creates the journal (and fsyncs its folder)
    calls, release = [], threading.Event()
    real_fsync = os.fsync

    def fsync(fd):  # the first fsync waits until the other 8 appends are queued behind it
        calls.append(fd)
        if len(calls) == 1:
            release.wait(30)
        real_fsync(fd)

    monkeypatch.setattr(event_log.os, "fsync", fsync)
    threads = [threading.Thread(target=log.append, args=(EVENTS, [event(n)])) for n in range(1, 10)]
    threads[0].start()
    while not calls:
        time.sleep(0.001)
    for thread in threads[1:]:
        thread.start()
    while log._queue.qsize() < 8:
        time.sleep(0.001)
    release.set()
    for thread in threads:
        thread.join()
    assert len(calls) == 2  # 9 acknowledged appends: the first alone, then 8 in one group, one fsync
    log.close()
    assert len(read_records(str(tmp_path), EVENTS, include_open=True)) == 10


def test_a_full_queue_raises_and_counts_instead_of_dropping(tmp_path):
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    log = EventLog(str(tmp_path), span=1, max_pending=3, linger_s=0.5, registry=registry)
    first = log.submit(EVENTS, [event(1), event(2)])  # the writer lingers: 2 pending
    with pytest.raises(LogFull, match=r"2 log records pending \(max 3\)"):
        log.submit(EVENTS, [event(3), event(4)])
    assert first.result(10) == 2
    log.close()
    assert (
        registry.get_sample_value(
            "tailtower_service_log_records_total", {"kind": EVENTS, "result": "written"}
        )
        == 2
    )
    assert (
        registry.get_sample_value(
            "tailtower_service_log_records_total", {"kind": EVENTS, "result": "rejected"}
        )
        == 2
    )
    assert [r["item_id"] for r in read_records(str(tmp_path), EVENTS, include_open=True)] == ["i1", "i2"]


def test_rotate_must_move_forward(log):
    with pytest.raises(ValueError, match="next span 7 must be after the open span 7"):
        log.rotate(7)
    assert log.rotate(20) == 20
    assert log.span == 20


def test_hourly_spans_rotate_when_the_hour_changes(tmp_path):
    now = [1764703800.0]  # 2025-12-02 19:30 UTC
    log = EventLog(str(tmp_path), clock=lambda: now[0])
    log.append(EVENTS, [event(1)])
    now[0] += 3600
    log.append(EVENTS, [event(2)])
    log.close()
    assert spans(str(tmp_path), EVENTS) == [2025120219]
    assert [r["item_id"] for r in read_records(str(tmp_path), EVENTS)] == ["i1"]
    assert [r["item_id"] for r in read_records(str(tmp_path), EVENTS, include_open=True)] == ["i1", "i2"]


def test_a_reader_sees_complete_files_only_while_spans_close(tmp_path):
    log = EventLog(str(tmp_path), span=1)
    seen, stop = [], threading.Event()

    def read_all():
        while not stop.is_set():
            for path in glob.glob(str(tmp_path / "events" / "span=*" / "*")):
                seen.append(pq.read_table(path).num_rows)  # raises on a partial file

    reader = threading.Thread(target=read_all)
    reader.start()
    for span in range(1, 21):
        log.append(EVENTS, [event(n) for n in range(100)])
        log.rotate(span + 1)
    stop.set()
    reader.join()
    log.close()
    assert set(seen) == {100}
    assert spans(str(tmp_path), EVENTS) == list(range(1, 21))


def test_a_torn_last_line_is_ignored_and_cut(tmp_path):
    log = EventLog(str(tmp_path), span=5)
    log.append(EVENTS, [event(1)])
    log.close()
    (journal,) = glob.glob(str(tmp_path / "events" / ".journal" / "*.jsonl"))
    with open(journal, "ab") as f:
        f.write(b'[{"request_id": "r2", "user_ps')  # a crash mid-write: never acknowledged
    assert [r["item_id"] for r in read_records(str(tmp_path), EVENTS, include_open=True)] == ["i1"]
    log = EventLog(str(tmp_path), span=5)  # same span: the journal is reused, the torn tail cut
    log.append(EVENTS, [event(3)])
    log.close()
    assert [r["item_id"] for r in read_records(str(tmp_path), EVENTS, include_open=True)] == ["i1", "i3"]


WRITER = textwrap.dedent(
    """
    import sys, time
    from serving.event_log import EVENTS, EventLog
    log = EventLog(sys.argv[1], span=int(sys.argv[2]))
    record = {"request_id": "r1", "user_pseudonym": "p", "item_id": "i1", "type": "click", "ts": 1.5}
    log.append(EVENTS, [record])
    print("acknowledged", flush=True)
    time.sleep(600)
    """
)


def test_an_acknowledged_record_survives_sigkill_and_its_old_span_is_closed_on_start(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path), "41"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline() == "acknowledged\n"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    assert process.returncode == -signal.SIGKILL
    assert read_records(str(tmp_path), EVENTS, include_open=True) == [
        {
            "schema_version": 2,
            "request_id": "r1",
            "user_pseudonym": "p",
            "item_id": "i1",
            "type": "click",
            "ts": 1.5,
        }
    ]
    EventLog(str(tmp_path), span=42).close()  # restart in a later span: the orphaned journal is closed
    assert spans(str(tmp_path), EVENTS) == [41]
    assert [r["item_id"] for r in read_records(str(tmp_path), EVENTS)] == ["i1"]


def test_an_unencodable_batch_fails_alone_and_synchronously(log, tmp_path):
    first = log.submit(EVENTS, [event(1)])
    with pytest.raises(ValueError, match="events batch cannot be logged: UnicodeEncodeError"):
        log.submit(EVENTS, [event(2) | {"item_id": "\ud800"}])  # a lone surrogate
    with pytest.raises(ValueError, match="served batch cannot be logged: ValueError"):
        log.submit(SERVED, [SERVED_RECORD | {"scores": [float("nan"), 0.5]}])
    log.append(EVENTS, [event(3)])
    assert first.result(10) == 1
    assert [r["item_id"] for r in read_records(str(tmp_path), EVENTS, include_open=True)] == ["i1", "i3"]


def short_writes(monkeypatch, fail_at: int | None = None):
    """os.write in the log writes at most 5 bytes a call; the call number `fail_at` writes them then fails."""
    real_write, calls = os.write, []

    def write(fd, data):
        calls.append(fd)
        written = real_write(fd, bytes(data[:5]))
        if len(calls) == fail_at:
            raise OSError(28, "No space left on device")
        return written

    monkeypatch.setattr(event_log.os, "write", write)


def test_short_writes_are_completed(log, tmp_path, monkeypatch):
    short_writes(monkeypatch)
    log.append(EVENTS, [event(1)])
    log.append(EVENTS, [event(2)])
    assert [r["item_id"] for r in read_records(str(tmp_path), EVENTS, include_open=True)] == ["i1", "i2"]


def test_a_failed_write_is_cut_back_and_fails_only_its_batch(log, tmp_path, monkeypatch):
    log.append(EVENTS, [event(1)])
    short_writes(monkeypatch, fail_at=3)  # mid-line: 15 bytes of the batch are on disk
    with pytest.raises(OSError, match="No space left on device"):
        log.append(EVENTS, [event(2)])
    monkeypatch.undo()
    log.append(EVENTS, [event(3)])
    assert [r["item_id"] for r in read_records(str(tmp_path), EVENTS, include_open=True)] == ["i1", "i3"]
    assert log.rotate() == 8  # the journal closes into a span
    assert [r["item_id"] for r in read_records(str(tmp_path), EVENTS)] == ["i1", "i3"]


def test_a_corrupt_line_inside_a_journal_is_skipped_and_logged(tmp_path, caplog):
    log = EventLog(str(tmp_path), span=5)
    log.append(EVENTS, [event(1)])
    log.close()
    (journal,) = glob.glob(str(tmp_path / "events" / ".journal" / "*.jsonl"))
    with open(journal, "ab") as f:
        f.write(b'[{"request_id": "r2"\n')  # complete line, not JSON
    log = EventLog(str(tmp_path), span=5)
    log.append(EVENTS, [event(3)])
    assert [r["item_id"] for r in read_records(str(tmp_path), EVENTS, include_open=True)] == ["i1", "i3"]
    assert "skipped corrupt line 2 of " in caplog.text
    log.rotate()
    log.close()
    assert [r["item_id"] for r in read_records(str(tmp_path), EVENTS)] == ["i1", "i3"]


def test_a_cancelled_wait_does_not_stop_the_writer(tmp_path):
    log = EventLog(str(tmp_path), span=1, linger_s=0.3)
    abandoned = log.submit(EVENTS, [event(1)])
    assert abandoned.cancel()  # what asyncio.wrap_future does when aiohttp cancels a handler
    log.append(EVENTS, [event(2)], timeout_s=10)
    log.close()
    assert [r["item_id"] for r in read_records(str(tmp_path), EVENTS, include_open=True)] == ["i1", "i2"]


def test_an_unexpected_writer_error_fails_its_group_and_the_writer_goes_on(log, tmp_path, monkeypatch):
    monkeypatch.setattr(log, "_write", lambda batches: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        log.append(EVENTS, [event(1)], timeout_s=10)
    monkeypatch.undo()
    log.append(EVENTS, [event(2)], timeout_s=10)
    assert [r["item_id"] for r in read_records(str(tmp_path), EVENTS, include_open=True)] == ["i2"]


def test_new_span_folders_are_fsynced_into_their_parent_before_the_journal_goes(log, tmp_path, monkeypatch):
    log.append(EVENTS, [event(1)])
    steps = []
    real_fsync_dir, real_remove = event_log._fsync_dir, os.remove

    def record(step: str, real):
        return lambda path: steps.append((step, path)) or real(path)

    monkeypatch.setattr(event_log, "_fsync_dir", record("fsync", real_fsync_dir))
    monkeypatch.setattr(event_log.os, "remove", record("remove", real_remove))
    log.rotate()
    kind_dir = str(tmp_path / "events")
    events_steps = [(step, os.path.relpath(path, kind_dir)) for step, path in steps if kind_dir in path]
    assert events_steps[:3] == [("fsync", "."), ("fsync", "span=7"), ("remove", events_steps[2][1])]
    assert events_steps[2][1].startswith(".journal/7-")


def test_a_restart_never_writes_into_a_closed_span(tmp_path):
    now = 1764703800.0  # 2025-12-02 19:30 UTC
    log = EventLog(str(tmp_path), clock=lambda: now)
    log.append(EVENTS, [event(1)])
    assert log.rotate() == 2025120220  # ahead of the clock: span 19 is closed
    log.close()
    log = EventLog(str(tmp_path), clock=lambda: now)  # still 19:30
    assert log.span == 2025120220
    log.append(EVENTS, [event(2)])
    log.rotate()
    log.close()
    assert spans(str(tmp_path), EVENTS) == [2025120219, 2025120220]
    assert [r["item_id"] for r in read_records(str(tmp_path), EVENTS, span_ids=[2025120219])] == ["i1"]
    closed = r"span 2025120220 is closed \(closed spans up to 2025120220\): start in a later one"
    with pytest.raises(ValueError, match=closed):
        EventLog(str(tmp_path), span=2025120220)
