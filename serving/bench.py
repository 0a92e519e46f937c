"""Latency and throughput of `recommend`: the server over REST and gRPC vs an in-process call (the floor).

  python -m serving.bench --model_base_path demo-run/serving/tailtower --output demo-run/bench-serve.md

The server runs in its own process (default settings, access log on); this process drives it with
`concurrency` threads, each sending its share of `requests` back to back over one keep-alive connection
(http.client for REST, a shared channel for gRPC), after a warm-up. The floor calls the signature of the same
SavedModel in this process on the same inputs, tensors built from Python lists and outputs fetched as numpy,
which is the part of a request the server cannot avoid. Prints a markdown table and writes it to --output.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import requests  # noqa: E402

from serving.config import MODEL_NAME  # noqa: E402
from trainer import features  # noqa: E402

CONCURRENCY = (1, 8, 32)


@dataclass
class Result:
    target: str
    concurrency: int
    latencies_s: list[float]
    errors: int
    wall_s: float

    def row(self, floor_p99_ms: float | None) -> str:
        lat = np.asarray(self.latencies_s) * 1e3
        if not len(lat):  # every request failed: the errors column says how many
            return f"| {self.target} | {self.concurrency} | 0 | - | - | - | 0 | {self.errors} |"
        p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
        ratio = f"{p99 / floor_p99_ms:.2f}" if floor_p99_ms else "-"
        return (
            f"| {self.target} | {self.concurrency} | {len(lat)} | {p50:.2f} | {p99:.2f} | {ratio} | "
            f"{len(lat) / self.wall_s:.0f} | {self.errors} |"
        )


def request_set(n: int, history_pool: list[str], k: int, knobs: dict, seed: int = 0) -> list[dict]:
    """`n` recommend inputs: users u000.., 0-10 history items each from `history_pool`, the given knobs."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        history = list(rng.choice(history_pool, size=int(rng.integers(0, 11)), replace=False))
        width = max(1, len(history))
        out.append(
            {
                features.USER_ID: [f"u{i % 200:03d}"],
                features.HISTORY: [history + [""] * (width - len(history))],
                features.K: k,
                **knobs,
            }
        )
    return out


def knobs_off(signature) -> dict[str, float]:
    """Every scalar input of `recommend` besides k (the re-ranking knobs) at 0: the base ranking."""
    specs = signature.structured_input_signature[1]
    return {name: 0.0 for name, spec in specs.items() if spec.shape.rank == 0 and name != features.K}


def run_load(target: str, concurrency: int, inputs: list[dict], make_sender: Callable) -> Result:
    """`concurrency` threads split `inputs`; each thread gets its own sender (connection)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    shards = [inputs[i::concurrency] for i in range(concurrency)]
    senders = [make_sender() for _ in shards]
    barrier = threading.Barrier(concurrency + 1)

    def work(send, shard):
        mine, failed = [], 0
        barrier.wait()
        for item in shard:
            start = time.perf_counter()
            try:
                send(item)
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


# ------------------------------------------------------------------------------------ senders
def floor_sender(signature):
    import tensorflow as tf

    def send(item: dict):
        out = signature(**{name: tf.constant(value) for name, value in item.items()})
        return {name: value.numpy() for name, value in out.items()}

    return lambda: send


def rest_sender(port: int, model: str):
    def make():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        path = f"/v1/models/{model}:predict"

        def send(item: dict):
            body = orjson.dumps({"signature_name": features.RECOMMEND_SIGNATURE, "inputs": item})
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                raise RuntimeError(payload[:200])
            return orjson.loads(payload)

        return send

    return make


def grpc_request(model: str, item: dict):
    """A `recommend` PredictRequest for one `request_set` item, typed as the signature wants (k int32, knobs
    float32: what TensorFlow infers for Python numbers)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from serving import tensors

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = features.RECOMMEND_SIGNATURE
    for name, value in item.items():
        dtype = tf.int32 if name == features.K else None
        request.inputs[name].CopyFrom(tensors.to_proto(value, dtype=dtype))
    return request


def grpc_sender(port: int, model: str):
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from serving import tensors

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def send(item: dict):
        response = stub.Predict(grpc_request(model, item), timeout=30)
        return {name: tensors.to_ndarray(proto) for name, proto in response.outputs.items()}

    return lambda: send


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
def benchmark(base_path: str, model: str, requests_per_level: int, k: int, log_path: str) -> list[str]:
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the transform graph's ops)

    signature = tf.saved_model.load(latest_version_dir(base_path)).signatures[features.RECOMMEND_SIGNATURE]
    knobs = knobs_off(signature)
    pool_out = floor_sender(signature)()(
        {features.USER_ID: ["u000"], features.HISTORY: [[""]], features.K: 50, **knobs}
    )
    pool = [item.decode() for item in pool_out[features.ITEM_IDS][0] if item]
    inputs = request_set(requests_per_level, pool, k, knobs)
    process, rest_port, grpc_port = start_server(base_path, model, log_path)
    try:
        targets = {
            "in-process (floor)": floor_sender(signature),
            "REST": rest_sender(rest_port, model),
            "gRPC": grpc_sender(grpc_port, model),
        }
        results = []
        for name, make_sender in targets.items():
            run_load(name, 4, inputs[:100], make_sender)  # warm-up: connections, first calls
            results.extend(run_load(name, c, inputs, make_sender) for c in CONCURRENCY)
    finally:
        process.terminate()
        process.wait(timeout=60)
    return table(results, requests_per_level, k)


def table(results: list[Result], n: int, k: int) -> list[str]:
    floor = {
        r.concurrency: float(np.percentile(r.latencies_s, 99)) * 1e3
        for r in results
        if r.target.startswith("in-process") and r.latencies_s
    }
    lines = [
        f"`recommend` (k={k}, {n} requests per row, 0-10 history items), {os.cpu_count()} CPUs",
        "",
        "| target | concurrency | ok | p50 ms | p99 ms | p99 / floor p99 | req/s | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [r.row(floor.get(r.concurrency)) for r in results]
    return lines


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
