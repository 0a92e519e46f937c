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
from dataclasses import dataclass

import numpy as np
import requests

from serving import bench
from serving import service_api as api
from serving.bench import CONCURRENCY, Query, Result, Sender
from serving.config import DEFAULT_HOST, DEFAULT_MODEL_BASE_PATH, DEFAULT_OUTPUT, MODEL_NAME
from serving.event_log import EVENT_TYPES, EVENTS, read_records
from serving.service_config import ServiceConfig, add_dataclass_flags
from trainer import features

TARGET_RATIO = 1.5  # service p99 / direct p99 at concurrency 1
DIRECT, SERVICE = "direct gRPC", "service"
START_TIMEOUT_S = 300.0  # a process to answer /readyz (TensorFlow import, model load, warm-up)
RECOVERY_TIMEOUT_S = 120.0  # the service to answer again once the model server is back
KILL_TIMEOUT_S = 120.0  # for the acknowledged batches that trigger the SIGKILL
IN_FLIGHT_TIMEOUT_S = 5.0  # then for a batch to be in flight, so that the kill cuts one short
CRASH_TAG = "crash"  # request ids of the SIGKILL step: "crash-<batch>-<event>"
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


@dataclass(frozen=True)
class Report:
    latency: list[Result]
    events: Result
    crash: Crash
    outage: Outage


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
    logged = [
        record[api.REQUEST_ID]
        for record in read_records(config.logs_dir, EVENTS, include_open=True)
        if record[api.REQUEST_ID].startswith(CRASH_TAG + "-")
    ]
    return Crash(
        frozenset(sent), frozenset(acknowledged), frozenset(logged), len(logged), counts["failed"], in_flight
    )


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


def run(settings: Settings, model_server, service: Process, config: ServiceConfig) -> Report:
    """The four steps, in order, against a running model server and service."""
    from serving.grpc_client import GrpcClient  # imports TensorFlow
    from serving.recommend_request import knob_names, with_knobs_off

    grpc = GrpcClient(config.model_endpoint, settings.model_name, timeout_s=bench.TIMEOUT_S)
    try:
        knobs = with_knobs_off({}, knob_names(grpc.scalar_inputs(features.RECOMMEND_SIGNATURE)))
        queries = bench.request_set(settings.requests, bench.history_pool(grpc, knobs))
        url = service_url(config)
        return Report(
            latency(settings, grpc, url, queries, knobs),
            sustained_events(settings, url),
            crash_during_events(settings, service, config),
            model_server_outage(model_server, url),
        )
    finally:
        grpc.close()


# ------------------------------------------------------------------------------------ table
def table(report: Report, settings: Settings) -> list[str]:
    direct = {r.concurrency: _p99_ms(r) for r in report.latency if r.target == DIRECT}
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
        *bench.markdown([_crash_cells(report.crash), _outage_cells(report.outage)], ["fault", "result"]),
    ]


def _p99_ms(result: Result) -> float | None:
    return float(np.percentile(result.latencies_s, 99)) * 1e3 if result.latencies_s else None


def _verdict(results: list[Result], direct: dict[int, float | None]) -> str:
    first = CONCURRENCY[0]
    (service,) = [r for r in results if r.target == SERVICE and r.concurrency == first]
    ratio = (_p99_ms(service) or float("inf")) / (direct.get(first) or float("nan"))
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
    error = outage.error.replace("|", "/")  # a table cell
    error = error if len(error) <= ERROR_CHARS else error[: ERROR_CHARS - 1] + "…"
    return [
        "model server killed, then restarted",
        f'{outage.status} (`/readyz` {outage.readyz}): "{error}"; answering again {back} after the model '
        "server was back, no service restart",
    ]


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
