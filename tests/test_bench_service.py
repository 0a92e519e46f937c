"""bench-service's steps on the toy model with a few requests each (the timed load runs in
`make bench-service`): the service as a subprocess (SIGKILLed and restarted), the model server in process."""

import os
import re

import pytest

from serving import bench, bench_service
from serving.bench_service import BACK, BEFORE, DIRECT, DOWN, PHASES, SERVICE, RedisOutage, Settings, Skipped
from serving.config import ServerConfig
from serving.server import ModelServer
from serving.service_config import ServiceConfig
from tests.test_serving_toy import MODEL, save_toy_model

SETTINGS = Settings(
    model_name=MODEL,
    requests=4,
    k=2,
    event_batches=3,
    batch_size=5,
    event_concurrency=2,
    kill_after_batches=2,
    redis_ops=5,
)


class InProcessModelServer:
    """The bench's model-server interface (start on the same gRPC port, kill) over an in-process server."""

    def __init__(self, base_path: str, grpc_port: int):
        self.config = ServerConfig(
            model_base_path=base_path, model_name=MODEL, grpc_port=grpc_port, rest_port=0, access_log=False
        )
        self.server: ModelServer | None = None

    def start(self) -> "InProcessModelServer":
        self.server = ModelServer(self.config).start()
        assert self.server.wait_until_available(60)
        return self

    def kill(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def test_every_step_runs_and_every_acknowledged_event_survives_the_faults(tmp_path):
    base = str(tmp_path / MODEL)
    save_toy_model(base, 3)
    grpc_port = bench.free_port()
    model_server = InProcessModelServer(base, grpc_port).start()
    config = ServiceConfig(
        port=bench.free_port(),
        model_endpoint=f"127.0.0.1:{grpc_port}",
        model_name=MODEL,
        model_base_path=base,
        output=str(tmp_path / "out"),
    )
    service = bench_service.service_process(config, str(tmp_path / "service.log"))
    try:
        service.start(timeout_s=120)
        report = bench_service.run(SETTINGS, model_server, service, config)
    finally:
        service.stop()
        model_server.kill()

    assert [(r.target, r.concurrency, len(r.latencies_s), r.errors) for r in report.latency] == [
        (target, concurrency, 4, 0) for concurrency in (1, 8, 32) for target in (DIRECT, SERVICE)
    ]
    assert (len(report.events.latencies_s), report.events.errors) == (3, 0)
    crash = report.crash
    assert crash.acknowledged <= crash.found <= crash.sent  # found: every crash-step id in the logs
    assert crash.missing == frozenset()
    assert crash.logged_records == len(crash.found)  # none logged twice by the restart's recovery
    assert len(crash.acknowledged) >= SETTINGS.kill_after_batches * SETTINGS.batch_size
    # Every batch sent was either acknowledged whole or counted failed; the kill cut at least one short.
    assert len(crash.sent - crash.acknowledged) == crash.failed_batches * SETTINGS.batch_size
    assert len(crash.sent) % SETTINGS.batch_size == 0
    assert crash.in_flight_at_kill >= 1
    outage = report.outage
    assert (outage.status, outage.readyz) == (503, 503)
    assert outage.error.startswith("not ready: model server: UNAVAILABLE: ")
    assert outage.recovered_s is not None
    redis_step = report.redis
    assert isinstance(redis_step, RedisOutage)  # scripts/env's root has redis-server
    phases = redis_step.phases
    assert list(phases) == list(PHASES) == [BEFORE, DOWN, BACK]
    # The store is best effort: every call answered, before, during and after the outage.
    assert [(c.unanswered, c.unacknowledged) for c in phases.values()] == [(0, 0)] * 3
    assert all(min(c.recommendations, c.events) >= SETTINGS.redis_ops for c in phases.values())
    assert redis_step.readyz == 200
    assert redis_step.readyz_doc["history_store_error"].startswith("redis: ConnectionError: ")
    assert (redis_step.readyz_doc["status"], redis_step.readyz_doc["history_store"]) == ("degraded", False)
    assert redis_step.recovered_s is not None
    assert redis_step.stored_users >= 1  # clicks after the recovery extended histories in the new Redis
    acknowledged = set().union(*(c.acknowledged for c in phases.values()))
    assert redis_step.found == acknowledged  # every event sent was acknowledged and is in the logs
    assert redis_step.missing == frozenset()

    lines = bench_service.table(report, SETTINGS)
    cells = [[cell.strip() for cell in line.strip("|").split("|")] if line else [] for line in lines]
    assert len(lines) == 22
    assert [lines[i] for i in (1, 10, 12, 16)] == [""] * 4
    assert cells[2] == [
        *("target", "concurrency", "ok", "p50 ms", "p99 ms", "p99 / direct p99", "req/s", "errors")
    ]
    assert [cell[:3] for cell in cells[4:10]] == [
        [target, str(concurrency), "4"] for concurrency in (1, 8, 32) for target in (DIRECT, SERVICE)
    ]
    assert [cell[7] for cell in cells[4:10]] == ["0"] * 6
    assert lines[11].startswith("Target at concurrency 1: service p99 <= 1.5 x direct p99: ")
    assert cells[13] == [
        "events (durable: fsync'd before the 200)",
        *("batches x events", "concurrency", "ok batches", "p50 ms", "p99 ms", "events/s", "errors"),
    ]
    assert cells[15][:4] + cells[15][7:] == ["sustained", "3 x 5", "2", "3", "0"]
    assert cells[17] == ["fault", "result"]
    assert cells[19] == [
        "service SIGKILLed while events were sent, restarted",
        f"{crash.in_flight_at_kill} batches in flight at the kill, {crash.failed_batches} failed; events "
        f"sent {len(crash.sent)} / acknowledged {len(crash.acknowledged)} / found in the logs "
        f"{len(crash.found)} / acknowledged but missing 0: ok: every acknowledged event is in the logs",
    ]
    assert cells[20][0] == "model server killed, then restarted"
    assert cells[20][1].startswith('503 (`/readyz` 503): "not ready: ')
    counts = {
        phase: f"{c.recommendations}/{c.recommendations}, {c.events}/{c.events}"
        for phase, c in phases.items()
    }
    assert cells[21][0] == "Redis killed mid-run, restarted"
    assert re.fullmatch(
        rf"recommendations answered / events acknowledged: before {counts[BEFORE]}; during the outage "
        rf"{counts[DOWN]} \(request-carried history only; recommendation p99 [\d.]+ ms, [\d.]+ ms before\); "
        rf"after {counts[BACK]}\. `/readyz` during the outage: 200 degraded\. History store used again "
        rf"[\d.]+ s after Redis was back \({redis_step.stored_users} users' histories written since\)\. "
        "Acknowledged events missing from the logs: 0",
        cells[21][1],
    ), cells[21][1]
    assert [set(lines[i]) for i in (3, 14, 18)] == [{"|", "-"}] * 3  # the header separators


def test_without_redis_server_the_redis_step_is_skipped_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server on it
    config = ServiceConfig(port=bench.free_port(), output=str(tmp_path / "out"))
    step = bench_service.redis_outage(SETTINGS, config, ["i1"], str(tmp_path / "service-redis.log"))
    assert isinstance(step, Skipped)
    assert step.reason.startswith("redis-server is not on PATH: ")
    assert bench_service._redis_cells(step) == ["Redis killed mid-run, restarted", f"skipped: {step.reason}"]
    assert not (tmp_path / "out").exists()  # nothing was started


def test_without_a_model_it_says_to_run_make_demo_first(tmp_path):
    with pytest.raises(SystemExit, match=r"no model version under .*: run `make demo` first"):
        bench_service.benchmark(
            Settings(model_base_path=str(tmp_path), output=os.path.join(tmp_path, "b.md"))
        )


def test_settings_are_checked():
    with pytest.raises(ValueError, match=r"batch_size: must be in \[1, 500\], got 501"):
        Settings(batch_size=501)
    with pytest.raises(ValueError, match="requests: must be >= 1, got 0"):
        Settings(requests=0)
