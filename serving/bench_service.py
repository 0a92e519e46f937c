"""The recommendation service under load and faults, next to the model server it fronts (make bench-service).

  python -m serving.bench_service --model_base_path demo-run/serving/tailtower \
      --output demo-run/bench-service.md

Loopback only, bounded, stops by itself. The model server (serving.server) and the service (serving.service,
default settings, a temporary --output) run as subprocesses on free ports; this process drives them:
1. latency: the same requests (serving/bench.py's request set and load runner) sent as POST
   /v1/recommendations (a keep-alive connection per thread) and straight to the model server over gRPC
   (GrpcClient.recommend, one channel), at concurrency 1, 8, 32. Target at 1: service p99 <= 1.5 x direct.
2. events: batches of --batch_size events (a mix of the four types), each acknowledged only once fsync'd:
   sustained events/s with durability on.
3. SIGKILL: the service is killed while events are being sent and restarted on the same folder; the events
   sent, acknowledged and found in its logs (serving.event_log readers, open journal included) are counted.
   Every acknowledged event must be found.
4. model server killed: the service must answer 503 with the reason, then answer again once the model server
   is back on the same port, without a restart.
5. Redis killed: a second service with history_backend=redis (its own redis-server, serving/redis_process.py)
   under recommendations and click events from --event_concurrency threads; Redis is SIGKILLed, then restarted
   on the same port. Per phase (before; down, until the service uses the store again; back): recommendations
   answered and events acknowledged (all of them: the store is best effort), /readyz during the outage (200
   "degraded"), the time until the service uses the store again, and every acknowledged event in its logs.
   Without redis-server on PATH the step is skipped (its row says why), not the benchmark.
Prints a markdown table and writes it to --output (the servers' logs go beside it).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import redis
import requests

from serving import bench
from serving import service_api as api
from serving.bench import CONCURRENCY, Query, Result, Sender
from serving.config import DEFAULT_HOST, DEFAULT_MODEL_BASE_PATH, DEFAULT_OUTPUT, MODEL_NAME
from serving.event_log import EVENT_TYPES, EVENTS, read_records
from serving.redis_process import RedisServer
from serving.service_config import REDIS, ServiceConfig, add_dataclass_flags
from trainer import features

TARGET_RATIO = 1.5  # service p99 / direct p99 at concurrency 1
DIRECT, SERVICE = "direct gRPC", "service"
START_TIMEOUT_S = 300.0  # a process to answer /readyz (TensorFlow import, model load, warm-up)
RECOVERY_TIMEOUT_S = 120.0  # the service to answer again once the model server is back
KILL_TIMEOUT_S = 120.0  # for the acknowledged batches that trigger the SIGKILL
IN_FLIGHT_TIMEOUT_S = 5.0  # then for a batch to be in flight, so that the kill cuts one short
CRASH_TAG = "crash"  # request ids of the SIGKILL step: "crash-<batch>-<event>"
REDIS_TAG = "redis"  # request ids of the Redis step: "redis-<n>"
BEFORE, DOWN, BACK = PHASES = ("before", "down", "back")  # of the Redis step
CLICK = api.HISTORY_EVENTS[0]  # the Redis step's events: a type that extends the user's history
PHASE_TIMEOUT_S = 120.0  # for a phase of the Redis step to reach redis_ops calls of each kind
USERS = 200  # event senders cycle through e000..e199
ERROR_CHARS = 120  # of the service's 503 message shown in the table


@dataclass(frozen=True)
class Settings:
    model_base_path: str = DEFAULT_MODEL_BASE_PATH
    model_name: str = MODEL_NAME
    output: str = os.path.join(DEFAULT_OUTPUT, "bench-service.md")
    requests: int = 1000  # per (target, concurrency)
    k: int = api.DEFAULT_K
    event_batches: int = 200  # sustained step
    batch_size: int = 50
    event_concurrency: int = 8
    kill_after_batches: int = 20  # acknowledged batches of the SIGKILL step before the kill
    redis_ops: int = 200  # recommendations and events per phase of the Redis step (at least)

    def __post_init__(self):
        for item in dataclasses.fields(self):  # every count
            value = getattr(self, item.name)
            if isinstance(value, int) and value < 1:
                raise ValueError(f"{item.name}: must be >= 1, got {value}")
        if not 1 <= self.batch_size <= ServiceConfig.max_events:
            raise ValueError(f"batch_size: must be in [1, {ServiceConfig.max_events}], got {self.batch_size}")


# ------------------------------------------------------------------------------------ processes
class Process:
    """A server subprocess, ready once GET `ready_url` answers 200; its output appended to `log_path`."""

    def __init__(self, name: str, command: list[str], ready_url: str, log_path: str):
        self.name, self.command, self.ready_url, self.log_path = name, command, ready_url, log_path
        self.popen: subprocess.Popen | None = None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> Process:
        with open(self.log_path, "a") as log:
            self.popen = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}; see {self.log_path}")
            try:
                if requests.get(self.ready_url, timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f} s; see {self.log_path}")

    def kill(self, signum: int = signal.SIGKILL) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signum)
            self.popen.wait(60)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


def model_server_process(base_path: str, model: str, grpc_port: int, log_path: str) -> Process:
    rest_port = bench.free_port()
    command = [sys.executable, "-m", "serving.server", "--model_base_path", base_path, "--model_name", model]
    command += ["--port", str(grpc_port), "--rest_api_port", str(rest_port)]
    return Process("model server", command, f"http://{DEFAULT_HOST}:{rest_port}/readyz", log_path)


def service_process(config: ServiceConfig, log_path: str) -> Process:
    """The service with `config`'s non-default settings as flags (its port must not be 0: we call it)."""
    flags = [
        f"--{item.name}={getattr(config, item.name)}"
        for item in dataclasses.fields(ServiceConfig)
        if getattr(config, item.name) != item.default
    ]
    command = [sys.executable, "-m", "serving.service", *flags]
    return Process("service", command, f"{service_url(config)}/readyz", log_path)


def service_url(config: ServiceConfig) -> str:
    return f"http://{config.host}:{config.port}"


# ------------------------------------------------------------------------------------ senders
class Sessions:
    """Keep-alive HTTP sessions, one per sender thread, all closed at the end."""

    def __init__(self):
        self._open: list[requests.Session] = []

    def post(self, url: str) -> Callable[[dict], dict]:
        session = requests.Session()
        self._open.append(session)

        def send(doc: dict) -> dict:
            response = session.post(url, json=doc, timeout=bench.TIMEOUT_S)
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code}: {response.text}")
            return response.json()

        return send

    def close(self) -> None:
        for session in self._open:
            session.close()


def recommendation_sender(sessions: Sessions, url: str, k: int) -> Sender:
    send = sessions.post(url + api.RECOMMENDATIONS_PATH)
    return lambda query: send(
        {features.USER_ID: query.user, features.K: k, features.HISTORY: list(query.history)}
    )


def event_batch(tag: str, n: int, size: int) -> list[dict]:
    """Batch `n` of a step: request ids "<tag>-<n>-<j>" (one per event, so each can be found in the logs)."""
    return [
        {
            api.REQUEST_ID: f"{tag}-{n}-{j}",
            features.USER_ID: f"e{(n * size + j) % USERS:03d}",
            features.ITEM_ID: f"i{j}",
            api.TYPE: EVENT_TYPES[j % len(EVENT_TYPES)],
        }
        for j in range(size)
    ]


def events_sender(sessions: Sessions, url: str) -> Callable[[list[dict]], dict]:
    send = sessions.post(url + api.EVENTS_PATH)
    return lambda batch: send({api.EVENTS: batch})


# ------------------------------------------------------------------------------------ steps
@dataclass(frozen=True)
class Crash:
    """The SIGKILL step: request ids of its events, and its batches."""

    sent: frozenset[str]
    acknowledged: frozenset[str]
    found: frozenset[str]  # every crash-step request id in the logs after the restart
    logged_records: int  # crash-step records in the logs (len(found) unless one was logged twice)
    failed_batches: int  # sends that raised (refused, reset, 503): their events are not acknowledged
    in_flight_at_kill: int  # batches sent whose answer was not yet counted when the SIGKILL was sent

    @property
    def missing(self) -> frozenset[str]:
        return self.acknowledged - self.found


@dataclass(frozen=True)
class Outage:
    status: int  # the service's answer while the model server is down
    error: str
    readyz: int
    recovered_s: float | None  # after the model server was back; None: not within RECOVERY_TIMEOUT_S


@dataclass
class Calls:
    """One phase of the Redis step: the calls sent while it lasted."""

    answered_s: list[float] = field(default_factory=list)  # latencies of the recommendations answered 200
    unanswered: int = 0  # recommendations that failed (an error status, refused, timed out)
    acknowledged: set[str] = field(default_factory=set)  # request ids of the events acknowledged
    unacknowledged: int = 0

    @property
    def recommendations(self) -> int:
        return len(self.answered_s) + self.unanswered

    @property
    def events(self) -> int:
        return len(self.acknowledged) + self.unacknowledged


@dataclass(frozen=True)
class RedisOutage:
    phases: dict[str, Calls]  # BEFORE, DOWN (from the kill until the service uses the store again), BACK
    readyz: int  # the service's /readyz during the outage
    readyz_doc: dict
    # from Redis answering again to "history_store": true (None: not within RECOVERY_TIMEOUT_S)
    recovered_s: float | None
    stored_users: int  # histories in the restarted (empty) Redis at the end: written since it came back
    found: frozenset[str]  # every Redis-step request id in the service's logs

    @property
    def missing(self) -> frozenset[str]:
        return frozenset().union(*(calls.acknowledged for calls in self.phases.values())) - self.found


@dataclass(frozen=True)
class Skipped:
    reason: str


@dataclass(frozen=True)
class Report:
    latency: list[Result]
    events: Result
    crash: Crash
    outage: Outage
    redis: RedisOutage | Skipped


def latency(settings: Settings, grpc, url: str, queries: list[Query], knobs: dict) -> list[Result]:
    sessions = Sessions()
    targets = {
        DIRECT: lambda: bench.sender(grpc, settings.k, knobs),
        SERVICE: lambda: recommendation_sender(sessions, url, settings.k),
    }
    try:
        for name, make_sender in targets.items():
            bench.run_load(name, 4, queries[:100], make_sender)  # warm-up: connections, first calls
        return [
            bench.run_load(name, concurrency, queries, make_sender)
            for concurrency in CONCURRENCY
            for name, make_sender in targets.items()
        ]
    finally:
        sessions.close()


def sustained_events(settings: Settings, url: str) -> Result:
    sessions = Sessions()
    size = settings.batch_size
    try:
        warmup = [event_batch("warmup", n, size) for n in range(4)]
        bench.run_load("events", 2, warmup, lambda: events_sender(sessions, url))
        batches = [event_batch("sustained", n, size) for n in range(settings.event_batches)]
        return bench.run_load(
            "events", settings.event_concurrency, batches, lambda: events_sender(sessions, url)
        )
    finally:
        sessions.close()


def crash_during_events(settings: Settings, service: Process, config: ServiceConfig) -> Crash:
    """Senders post batches until the service is SIGKILLed (after `kill_after_batches` acknowledged ones);
    the service restarts on the same folder (its log recovers the journal) and the logs are read."""
    url, size = service_url(config), settings.batch_size
    sent: set[str] = set()
    acknowledged: set[str] = set()
    lock, numbers = threading.Lock(), itertools.count()
    killed, enough = threading.Event(), threading.Event()
    limit = settings.kill_after_batches * 100  # bounded even if the kill came late (or never)
    sessions = Sessions()
    counts = {"failed": 0, "in_flight": 0}

    def work(send):
        while not killed.is_set() and (n := next(numbers)) < limit:
            batch = event_batch(CRASH_TAG, n, size)
            ids = {event[api.REQUEST_ID] for event in batch}
            with lock:
                sent.update(ids)
                counts["in_flight"] += 1
            try:
                send(batch)
            except (RuntimeError, requests.RequestException):
                with lock:  # the kill (connection refused or reset), or a 503: not acknowledged
                    counts["failed"] += 1
                    counts["in_flight"] -= 1
                continue
            with lock:
                counts["in_flight"] -= 1
                acknowledged.update(ids)
                if len(acknowledged) >= settings.kill_after_batches * size:
                    enough.set()

    threads = [
        threading.Thread(target=work, args=(events_sender(sessions, url),))
        for _ in range(settings.event_concurrency)
    ]
    for thread in threads:
        thread.start()
    enough.wait(KILL_TIMEOUT_S)
    deadline = time.monotonic() + IN_FLIGHT_TIMEOUT_S
    while True:  # kill while a batch is being sent (the senders loop back to back: at once, as a rule)
        with lock:
            if counts["in_flight"] or time.monotonic() > deadline:
                in_flight = counts["in_flight"]
                killed.set()  # no new batches; those in flight meet the kill
                service.kill(signal.SIGKILL)
                break
        time.sleep(0.001)
    for thread in threads:
        thread.join()
    sessions.close()
    service.start()
    logged = logged_request_ids(config.logs_dir, CRASH_TAG)
    return Crash(
        frozenset(sent), frozenset(acknowledged), frozenset(logged), len(logged), counts["failed"], in_flight
    )


def logged_request_ids(logs_dir: str, tag: str) -> list[str]:
    """Request ids of one step's events ("<tag>-...") in the logs, open journal included, once per record."""
    return [
        record[api.REQUEST_ID]
        for record in read_records(logs_dir, EVENTS, include_open=True)
        if record[api.REQUEST_ID].startswith(tag + "-")
    ]


def model_server_outage(model_server, url: str) -> Outage:
    """`model_server` has start() (same port) and kill(): a Process here, an in-process server in tests."""
    probe = {features.USER_ID: "u000"}
    model_server.kill()
    down = requests.post(url + api.RECOMMENDATIONS_PATH, json=probe, timeout=bench.TIMEOUT_S)
    readyz = requests.get(url + "/readyz", timeout=bench.TIMEOUT_S).status_code
    model_server.start()
    back = time.monotonic()
    recovered_s = None
    while time.monotonic() - back < RECOVERY_TIMEOUT_S:
        answer = requests.post(url + api.RECOMMENDATIONS_PATH, json=probe, timeout=bench.TIMEOUT_S)
        if answer.status_code == 200:
            recovered_s = time.monotonic() - back
            break
        time.sleep(0.1)
    return Outage(down.status_code, down.json().get("error", ""), readyz, recovered_s)


class PhasedLoad:
    """Sender threads that post a recommendation (one request-carried history item) and a click event in
    turn, each call counted in the phase current when it was sent."""

    def __init__(self, url: str, k: int, pool: list[str]):
        self.url, self.k, self.pool = url, k, pool
        self.phase = BEFORE
        self.calls = {phase: Calls() for phase in PHASES}
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._numbers = itertools.count()
        self._sessions = Sessions()
        self._threads: list[threading.Thread] = []

    def start(self, threads: int) -> None:
        self._threads = [
            threading.Thread(
                target=self._work,
                args=(
                    recommendation_sender(self._sessions, self.url, self.k),
                    events_sender(self._sessions, self.url),
                ),
            )
            for _ in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def enter(self, phase: str) -> None:
        with self._changed:
            self.phase = phase

    def wait(self, calls: int) -> None:
        """Until the current phase has `calls` answers of each kind (or PHASE_TIMEOUT_S)."""
        with self._changed:
            now = self.calls[self.phase]
            self._changed.wait_for(lambda: min(now.recommendations, now.events) >= calls, PHASE_TIMEOUT_S)

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join()  # each finishes its call: every event sent is acknowledged or failed
        self._sessions.close()

    def _work(self, recommend: Sender, post_events: Callable[[list[dict]], dict]) -> None:
        while not self._stopping.is_set():
            n = next(self._numbers)
            user, item = f"r{n % USERS:03d}", self.pool[n % len(self.pool)]
            phase, start = self.phase, time.perf_counter()
            answered = _sent(recommend, Query(user, (item,)))
            with self._changed:
                calls = self.calls[phase]
                if answered:
                    calls.answered_s.append(time.perf_counter() - start)
                else:
                    calls.unanswered += 1
                self._changed.notify_all()
            request_id, phase = f"{REDIS_TAG}-{n}", self.phase
            click = {
                api.REQUEST_ID: request_id,
                features.USER_ID: user,
                features.ITEM_ID: item,
                api.TYPE: CLICK,
            }
            acknowledged = _sent(post_events, [click])
            with self._changed:
                calls = self.calls[phase]
                if acknowledged:
                    calls.acknowledged.add(request_id)
                else:
                    calls.unacknowledged += 1
                self._changed.notify_all()


def _sent(send: Callable, payload) -> bool:
    try:
        send(payload)
        return True
    except (RuntimeError, requests.RequestException):  # an error status, refused, reset, timed out
        return False


def redis_outage(
    settings: Settings, config: ServiceConfig, pool: list[str], log_path: str
) -> RedisOutage | Skipped:
    """A second service, `config`'s but with a Redis history store of its own, under PhasedLoad while
    Redis is SIGKILLed and restarted."""
    with tempfile.TemporaryDirectory(prefix="bench-service-redis-") as folder:
        try:
            server = RedisServer(Path(folder))
        except RuntimeError as e:  # redis-server is not on PATH: the other steps still count
            return Skipped(str(e))
        redis_config = dataclasses.replace(
            config,
            port=bench.free_port(),
            output=os.path.join(folder, "service"),
            history_backend=REDIS,
            redis_url=server.url,
        )
        return _redis_outage(settings, server, redis_config, pool, log_path)


def _redis_outage(
    settings: Settings, server: RedisServer, config: ServiceConfig, pool: list[str], log_path: str
) -> RedisOutage:
    url = service_url(config)
    service = service_process(config, log_path)
    load = PhasedLoad(url, settings.k, pool)
    try:
        server.start()
        service.start()
        load.start(settings.event_concurrency)
        readyz, recovered_s = _kill_and_restart(settings, server, url, load)
        load.stop()
        with redis.Redis.from_url(server.url) as client:
            stored_users = client.dbsize()
    finally:
        load.stop()
        service.stop()
        server.stop()
    logged = logged_request_ids(config.logs_dir, REDIS_TAG)
    return RedisOutage(
        load.calls, readyz.status_code, readyz.json(), recovered_s, stored_users, frozenset(logged)
    )


def _kill_and_restart(
    settings: Settings, server: RedisServer, url: str, load: PhasedLoad
) -> tuple[requests.Response, float | None]:
    """Redis SIGKILLed after `redis_ops` calls of each kind, restarted on the same port (empty) after as many
    more: the service must notice both by itself."""
    load.wait(settings.redis_ops)
    server.kill()
    load.enter(DOWN)  # after the kill: every call of the phase meets the outage
    load.wait(settings.redis_ops)
    # Each call since the kill met the dead store (the first marks it down): /readyz must say so.
    readyz = requests.get(url + "/readyz", timeout=bench.TIMEOUT_S)
    server.start()  # returns once Redis answers
    recovered_s = _history_store_back(url)
    load.enter(BACK)
    load.wait(settings.redis_ops)
    return readyz, recovered_s


def _history_store_back(url: str) -> float | None:
    back = time.monotonic()
    while time.monotonic() - back < RECOVERY_TIMEOUT_S:
        if requests.get(url + "/readyz", timeout=bench.TIMEOUT_S).json().get("history_store"):
            return time.monotonic() - back
        time.sleep(0.05)
    return None


def run(settings: Settings, model_server, service: Process, config: ServiceConfig) -> Report:
    """The five steps, in order, against a running model server and service (the Redis step starts a
    service of its own; its log goes beside `service`'s)."""
    from serving.grpc_client import GrpcClient  # imports TensorFlow
    from serving.recommend_request import knob_names, with_knobs_off

    grpc = GrpcClient(config.model_endpoint, settings.model_name, timeout_s=bench.TIMEOUT_S)
    try:
        knobs = with_knobs_off({}, knob_names(grpc.scalar_inputs(features.RECOMMEND_SIGNATURE)))
        pool = bench.history_pool(grpc, knobs)
        queries = bench.request_set(settings.requests, pool)
        url = service_url(config)
        return Report(
            latency(settings, grpc, url, queries, knobs),
            sustained_events(settings, url),
            crash_during_events(settings, service, config),
            model_server_outage(model_server, url),
            redis_outage(settings, config, pool, os.path.splitext(service.log_path)[0] + "-redis.log"),
        )
    finally:
        grpc.close()


# ------------------------------------------------------------------------------------ table
def table(report: Report, settings: Settings) -> list[str]:
    direct = {r.concurrency: _p99_ms(r.latencies_s) for r in report.latency if r.target == DIRECT}
    latency_rows = [r.cells(direct.get(r.concurrency)) for r in report.latency]
    events_headers = ["events (durable: fsync'd before the 200)", "batches x events", "concurrency"]
    events_headers += ["ok batches", "p50 ms", "p99 ms", "events/s", "errors"]
    return [
        f"`POST /v1/recommendations` vs the model server over gRPC (k={settings.k}, {settings.requests} "
        f"requests per row, 0-10 history items), {os.cpu_count()} CPUs",
        "",
        *bench.markdown(latency_rows, bench.latency_headers("direct")),
        "",
        _verdict(report.latency, direct),
        "",
        *bench.markdown([_events_cells(report.events, settings)], events_headers),
        "",
        *bench.markdown(
            [_crash_cells(report.crash), _outage_cells(report.outage), _redis_cells(report.redis)],
            ["fault", "result"],
        ),
    ]


def _p99_ms(latencies_s: list[float]) -> float | None:
    return float(np.percentile(latencies_s, 99)) * 1e3 if latencies_s else None


def _verdict(results: list[Result], direct: dict[int, float | None]) -> str:
    first = CONCURRENCY[0]
    (service,) = [r for r in results if r.target == SERVICE and r.concurrency == first]
    ratio = (_p99_ms(service.latencies_s) or float("inf")) / (direct.get(first) or float("nan"))
    met = "met" if ratio <= TARGET_RATIO else "NOT met"
    return (
        f"Target at concurrency {first}: service p99 <= {TARGET_RATIO} x direct p99: {met} ({ratio:.2f} x)."
    )


def _events_cells(result: Result, settings: Settings) -> list[str]:
    lat = np.asarray(result.latencies_s) * 1e3
    p50, p99 = (f"{np.percentile(lat, q):.2f}" for q in (50, 99)) if len(lat) else ("-", "-")
    rate = len(lat) * settings.batch_size / result.wall_s
    batches = f"{settings.event_batches} x {settings.batch_size}"
    cells = ["sustained", batches, result.concurrency, len(lat), p50, p99, f"{rate:.0f}", result.errors]
    return [str(cell) for cell in cells]


def _crash_cells(crash: Crash) -> list[str]:
    verdict = (
        "ok: every acknowledged event is in the logs" if not crash.missing else "LOST acknowledged events"
    )
    return [
        "service SIGKILLed while events were sent, restarted",
        f"{crash.in_flight_at_kill} batches in flight at the kill, {crash.failed_batches} failed; events "
        f"sent {len(crash.sent)} / acknowledged {len(crash.acknowledged)} / found in the logs "
        f"{len(crash.found)} / acknowledged but missing {len(crash.missing)}: {verdict}",
    ]


def _outage_cells(outage: Outage) -> list[str]:
    back = (
        f"not within {RECOVERY_TIMEOUT_S:.0f} s"
        if outage.recovered_s is None
        else f"{outage.recovered_s:.1f} s"
    )
    return [
        "model server killed, then restarted",
        f'{outage.status} (`/readyz` {outage.readyz}): "{_in_cell(outage.error, ERROR_CHARS)}"; answering '
        f"again {back} after the model server was back, no service restart",
    ]


def _redis_cells(step: RedisOutage | Skipped) -> list[str]:
    name = "Redis killed mid-run, restarted"
    if isinstance(step, Skipped):
        return [name, f"skipped: {_in_cell(step.reason)}"]
    before, down, back = (step.phases[phase] for phase in PHASES)
    p99 = {phase: _p99_ms(step.phases[phase].answered_s) for phase in (BEFORE, DOWN)}
    p99_text = {phase: "-" if ms is None else f"{ms:.1f} ms" for phase, ms in p99.items()}
    recovered = (
        f"not within {RECOVERY_TIMEOUT_S:.0f} s" if step.recovered_s is None else f"{step.recovered_s:.1f} s"
    )
    status = step.readyz_doc.get("status") or _in_cell(step.readyz_doc.get("error", ""), ERROR_CHARS)
    return [
        name,
        f"recommendations answered / events acknowledged: before {_answered(before)}; during the outage "
        f"{_answered(down)} (request-carried history only; recommendation p99 {p99_text[DOWN]}, "
        f"{p99_text[BEFORE]} before); after {_answered(back)}. `/readyz` during the outage: {step.readyz} "
        f"{status}. History store used again {recovered} after Redis was back ({step.stored_users} users' "
        f"histories written since). Acknowledged events missing from the logs: {len(step.missing)}",
    ]


def _answered(calls: Calls) -> str:
    return f"{len(calls.answered_s)}/{calls.recommendations}, {len(calls.acknowledged)}/{calls.events}"


def _in_cell(text: str, limit: int | None = None) -> str:
    """`text` in a markdown table cell, cut to `limit` characters."""
    text = text.replace("|", "/")
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


# ------------------------------------------------------------------------------------ main
def benchmark(settings: Settings) -> list[str]:
    if not os.path.isdir(settings.model_base_path) or not any(
        name.isdigit() for name in os.listdir(settings.model_base_path)
    ):
        raise SystemExit(
            f"error: no model version under {settings.model_base_path}: run `make demo` first "
            "(or pass --model_base_path)"
        )
    os.makedirs(os.path.dirname(settings.output) or ".", exist_ok=True)
    logs = os.path.splitext(settings.output)[0]
    grpc_port = bench.free_port()
    model_server = model_server_process(
        settings.model_base_path, settings.model_name, grpc_port, logs + ".model-server.log"
    ).start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-service-") as output:
            config = ServiceConfig(
                port=bench.free_port(),
                model_endpoint=f"{DEFAULT_HOST}:{grpc_port}",
                model_name=settings.model_name,
                model_base_path=settings.model_base_path,
                output=output,
            )
            service = service_process(config, logs + ".service.log").start()
            try:
                report = run(settings, model_server, service, config)
            finally:
                service.stop()
    finally:
        model_server.stop()
    return table(report, settings)


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dataclass_flags(parser, Settings)
    args = parser.parse_args(argv)
    try:
        return Settings(**vars(args))
    except ValueError as e:
        parser.error(str(e))


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    text = "\n".join(benchmark(settings)) + "\n"
    print(text)
    with open(settings.output, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
