"""Latency and throughput of `recommend`: the server over REST and gRPC vs an in-process call (the floor).

  python -m serving.bench --model_base_path demo-run/serving/tailtower --output demo-run/bench-serve.md

The server runs in its own process (default settings, access log on); this process drives it with
`concurrency` threads, each sending its share of `requests` back to back through the project's clients,
after a warm-up: a `RestClient` per thread (one keep-alive connection each), one `GrpcClient` (one channel)
shared by all threads. The floor is a `LocalClient` on the same SavedModel in this process, same requests,
same request builder (serving/recommend_request.py), which is the part of a request the server cannot avoid.
Every knob is sent off (the base ranking). Prints a markdown table and writes it to --output.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import requests
from tabulate import tabulate

from serving.config import MODEL_NAME
from serving.grpc_client import GrpcClient
from serving.local_client import LocalClient
from serving.recommend_request import Knob, Recommendations, knob_names, with_knobs_off
from serving.rest_client import RestClient
from trainer import features

CONCURRENCY = (1, 8, 32)
TIMEOUT_S = 30.0


@dataclass
class Result:
    target: str
    concurrency: int
    latencies_s: list[float]
    errors: int
    wall_s: float

    def cells(self, floor_p99_ms: float | None) -> list[str]:
        """The row of `latency_headers`: p99 / floor p99 compares with `floor_p99_ms` ("-" without one)."""
        lat = np.asarray(self.latencies_s) * 1e3
        if not len(lat):  # every request failed: the errors column says how many
            cells = [self.target, self.concurrency, 0, "-", "-", "-", 0, self.errors]
        else:
            p50, p99 = np.percentile(lat, [50, 99])
            ratio = f"{p99 / floor_p99_ms:.2f}" if floor_p99_ms else "-"
            rate = f"{len(lat) / self.wall_s:.0f}"
            cells = [self.target, self.concurrency, len(lat), f"{p50:.2f}", f"{p99:.2f}", ratio, rate]
            cells.append(self.errors)
        return [str(cell) for cell in cells]


def latency_headers(floor: str) -> list[str]:
    """The columns of `Result.cells`; `floor` names what the p99 is compared with."""
    return ["target", "concurrency", "ok", "p50 ms", "p99 ms", f"p99 / {floor} p99", "req/s", "errors"]


def markdown(rows: list[list[str]], headers: list[str]) -> list[str]:
    """A GitHub markdown table, one line per row; cells are kept as written (no number parsing)."""
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True).splitlines()


@dataclass(frozen=True)
class Query:
    """One request of the load: a user and their history (oldest first)."""

    user: str
    history: tuple[str, ...]


def request_set(n: int, history_pool: list[str], seed: int = 0) -> list[Query]:
    """`n` queries: users u000..u199 in turn, 0-10 distinct history items each from `history_pool`."""
    rng = np.random.default_rng(seed)
    queries = []
    for i in range(n):
        history = rng.choice(history_pool, size=int(rng.integers(0, 11)), replace=False)
        queries.append(Query(f"u{i % 200:03d}", tuple(str(item) for item in history)))
    return queries


Sender = Callable[[Query], Recommendations]


def sender(client, k: int, knobs: Mapping[str, Knob]) -> Sender:
    """`recommend` of one query through `client` (any of LocalClient, RestClient, GrpcClient)."""
    return lambda query: client.recommend([query.user], [list(query.history)], k, **knobs)


def run_load(
    target: str, concurrency: int, queries: list[Query], make_sender: Callable[[], Sender]
) -> Result:
    """`concurrency` threads split `queries`; each thread gets its own sender (REST: its own connection)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    shards = [queries[i::concurrency] for i in range(concurrency)]
    senders = [make_sender() for _ in shards]
    barrier = threading.Barrier(concurrency + 1)

    def work(send, shard):
        mine, failed = [], 0
        barrier.wait()
        for query in shard:
            start = time.perf_counter()
            try:
                send(query)
            except Exception:  # counted: the table reports errors
                failed += 1
                continue
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [
        threading.Thread(target=work, args=(s, shard)) for s, shard in zip(senders, shards, strict=True)
    ]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return Result(target, concurrency, latencies, errors[0], time.perf_counter() - start)


class Targets:
    """The three ways to call `recommend` that the table compares, each a factory of per-thread senders."""

    def __init__(self, local: LocalClient, rest_port: int, grpc_port: int, model: str, k: int):
        self.knobs = with_knobs_off({}, knob_names(local.scalar_inputs(features.RECOMMEND_SIGNATURE)))
        self._local, self._k, self._rest_port = local, k, rest_port
        self._model = model
        self._rest_clients: list[RestClient] = []
        self._grpc = GrpcClient(f"127.0.0.1:{grpc_port}", model, timeout_s=TIMEOUT_S)

    def _rest(self) -> Sender:
        client = RestClient(f"http://127.0.0.1:{self._rest_port}", self._model, timeout_s=TIMEOUT_S)
        self._rest_clients.append(client)
        return sender(client, self._k, self.knobs)

    def senders(self) -> dict[str, Callable[[], Sender]]:
        return {
            "in-process (floor)": lambda: sender(self._local, self._k, self.knobs),
            "REST": self._rest,
            "gRPC": lambda: sender(self._grpc, self._k, self.knobs),
        }

    def close(self) -> None:
        for client in self._rest_clients:
            client.close()
        self._grpc.close()


# ------------------------------------------------------------------------------------ server process
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(base_path: str, model: str, log_path: str) -> tuple[subprocess.Popen, int, int]:
    rest_port, grpc_port = free_port(), free_port()
    command = [
        sys.executable,
        "-m",
        "serving.server",
        "--model_base_path",
        base_path,
        "--model_name",
        model,
        "--port",
        str(grpc_port),
        "--rest_api_port",
        str(rest_port),
    ]
    log = open(log_path, "w")  # noqa: SIM115 - the server process owns it
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see {log_path}")
        try:
            if requests.get(f"http://127.0.0.1:{rest_port}/readyz", timeout=1).status_code == 200:
                return process, rest_port, grpc_port
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    process.terminate()
    raise RuntimeError(f"server not ready after 300 s; see {log_path}")


def latest_version_dir(base_path: str) -> str:
    versions = [int(n) for n in os.listdir(base_path) if n.isdigit()]
    return os.path.join(base_path, str(max(versions)))


# ------------------------------------------------------------------------------------ main
def history_pool(local: LocalClient, knobs: Mapping[str, Knob], size: int = 50) -> list[str]:
    """The model's top `size` items for a new user: history items the model knows."""
    ids = local.recommend(["u000"], [[]], size, **knobs).item_ids()[0]
    return [item for item in ids if item]


def benchmark(base_path: str, model: str, requests_per_level: int, k: int, log_path: str) -> list[str]:
    local = LocalClient(latest_version_dir(base_path))
    process, rest_port, grpc_port = start_server(base_path, model, log_path)
    targets = Targets(local, rest_port, grpc_port, model, k)
    try:
        queries = request_set(requests_per_level, history_pool(local, targets.knobs))
        results = []
        for name, make_sender in targets.senders().items():
            run_load(name, 4, queries[:100], make_sender)  # warm-up: connections, metadata, first calls
            results.extend(run_load(name, c, queries, make_sender) for c in CONCURRENCY)
    finally:
        targets.close()
        process.terminate()
        process.wait(timeout=60)
    return table(results, requests_per_level, k)


def table(results: list[Result], n: int, k: int) -> list[str]:
    floor = {
        r.concurrency: float(np.percentile(r.latencies_s, 99)) * 1e3
        for r in results
        if r.target.startswith("in-process") and r.latencies_s
    }
    rows = [r.cells(floor.get(r.concurrency)) for r in results]
    return [
        f"`recommend` (k={k}, {n} requests per row, 0-10 history items), {os.cpu_count()} CPUs",
        "",
        *markdown(rows, latency_headers("floor")),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_base_path", default=f"demo-run/serving/{MODEL_NAME}")
    parser.add_argument("--model_name", default=MODEL_NAME)
    parser.add_argument("--requests", type=int, default=2000, help="requests per (target, concurrency)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--output", default="demo-run/bench-serve.md")
    args = parser.parse_args(argv)
    log_path = os.path.splitext(args.output)[0] + ".server.log"
    lines = benchmark(args.model_base_path, args.model_name, args.requests, args.k, log_path)
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.output, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
