"""Model lifecycle like TF Serving's file-system source.

Hot swap under load, half-written and broken versions, in-flight requests on the old version, deletions.
"""

import os
import shutil
import threading
import time

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.config import ServerConfig
from serving.model_manager import ModelManager, State
from tests.test_serving_toy import MODEL, recommend_inputs, running_server, save_toy_model

MAX_REQUESTS = 5000  # per client thread: the loops are bounded even if the swap never happens


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> str:
    """Versions 1-3 saved once, to be copied into base paths."""
    stage = str(tmp_path_factory.mktemp("staged"))
    for version in (1, 2, 3):
        save_toy_model(stage, version)
    return stage


def _served_version_of(item_id: str | bytes) -> int:
    text = item_id.decode() if isinstance(item_id, bytes) else item_id
    return int(text.split("-")[0][1:])  # "v2-u1-0" → 2


class Client(threading.Thread):
    """Sends recommend requests back to back until stopped (or MAX_REQUESTS); records versions and errors."""

    def __init__(self, send):
        super().__init__(daemon=True)
        self.send, self.versions, self.errors = send, [], []
        self.stop = threading.Event()

    def run(self):
        for _ in range(MAX_REQUESTS):
            if self.stop.is_set():
                return
            try:
                self.versions.append(self.send())
            except Exception as e:  # any failure is what the test counts
                self.errors.append(repr(e))


def rest_sender(port: int):
    session = requests.Session()
    body = {"signature_name": "recommend", "inputs": recommend_inputs()}

    def send() -> int:
        response = session.post(f"http://127.0.0.1:{port}/v1/models/{MODEL}:predict", json=body, timeout=10)
        response.raise_for_status()
        return _served_version_of(response.json()["outputs"]["item_ids"][0][0])

    return send


def grpc_sender(port: int):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = MODEL, "recommend"
    dtypes = {"k": tf.int32, "boost": tf.float32}
    for name, value in recommend_inputs().items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value, dtype=dtypes.get(name, tf.string)))

    def send() -> int:
        response = stub.Predict(request, timeout=10)
        return _served_version_of(tf.make_ndarray(response.outputs["item_ids"])[0, 0])

    return send


def _wait(condition, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_hot_swap_under_load_has_no_failed_requests(tmp_path, staged):
    base = str(tmp_path / "models")
    shutil.copytree(os.path.join(staged, "1"), os.path.join(base, "1"))
    with running_server(base) as server:
        clients = [Client(rest_sender(server.rest_port)), Client(grpc_sender(server.grpc_port))]
        for client in clients:
            client.start()
        assert _wait(lambda: all(len(c.versions) >= 20 for c in clients))
        save_toy_model(base, 2)  # written in place: the server sees the folder while it is being written
        assert _wait(lambda: server.manager.served_version == 2)
        seen = [len(c.versions) for c in clients]
        assert _wait(lambda: all(len(c.versions) >= n + 20 for c, n in zip(clients, seen, strict=True)))
        for client in clients:
            client.stop.set()
            client.join(timeout=30)
        statuses = {s.version: s.state for s in server.manager.statuses(MODEL)}
    for client in clients:
        assert client.errors == []
        assert client.versions[0] == 1 and client.versions[-1] == 2
        switch = client.versions.index(2)
        assert set(client.versions[:switch]) == {1} and set(client.versions[switch:]) == {
            2
        }  # one clean switch
    assert statuses == {1: State.END, 2: State.AVAILABLE}


def _manager(base: str) -> ModelManager:
    return ModelManager(ServerConfig(model_base_path=base, model_name=MODEL, warmup_runs=1))


def _copy_version(
    staged: str, version: int, base: str, target: int | None = None, skip_pb: bool = False
) -> str:
    target_dir = os.path.join(base, str(target or version))
    ignore = shutil.ignore_patterns("saved_model.pb") if skip_pb else None
    shutil.copytree(os.path.join(staged, str(version)), target_dir, ignore=ignore, dirs_exist_ok=True)
    return target_dir


def test_half_written_version_is_never_served(tmp_path, staged):
    base = str(tmp_path)
    _copy_version(staged, 1, base)
    manager = _manager(base)
    manager.poll_once()
    assert manager.served_version is None  # first sighting: not yet known to be stable
    manager.poll_once()
    assert manager.served_version == 1
    new_dir = _copy_version(staged, 2, base, skip_pb=True)  # variables copied, saved_model.pb not yet
    for _ in range(3):
        manager.poll_once()
    assert manager.served_version == 1
    shutil.copy(os.path.join(staged, "2", "saved_model.pb"), new_dir)
    manager.poll_once()
    assert manager.served_version == 1  # complete now, but changed since the last poll
    manager.poll_once()
    assert manager.served_version == 2
    assert [(s.version, s.state) for s in manager.statuses(MODEL)] == [(1, State.END), (2, State.AVAILABLE)]
    manager.stop()


def test_broken_version_keeps_the_old_one_and_is_retried_after_it_changes(tmp_path, staged):
    base = str(tmp_path)
    _copy_version(staged, 1, base)
    os.makedirs(os.path.join(base, "3"))
    with open(os.path.join(base, "3", "saved_model.pb"), "wb") as f:
        f.write(b"not a SavedModel")
    manager = _manager(base)
    for _ in range(3):
        manager.poll_once()
    assert manager.served_version == 1
    (failed,) = manager.statuses(MODEL, version=3)
    assert failed.state == State.END and "Failed to load version 3" in failed.error
    _copy_version(staged, 3, base)  # the export finishes: the files change, so the load is retried
    manager.poll_once()
    manager.poll_once()
    assert manager.served_version == 3
    assert manager.statuses(MODEL, version=3)[0].error == ""
    manager.stop()


def test_in_flight_request_finishes_on_the_old_version_before_it_is_unloaded(tmp_path, staged):
    base = str(tmp_path)
    _copy_version(staged, 1, base)
    manager = _manager(base)
    manager.poll_once()
    manager.poll_once()
    _copy_version(staged, 2, base)
    manager.poll_once()  # first sighting of version 2
    with manager.acquire(MODEL) as old:
        swap = threading.Thread(target=manager.poll_once)
        swap.start()
        assert _wait(lambda: manager.served_version == 2)
        assert _wait(lambda: manager.statuses(MODEL, version=1)[0].state == State.UNLOADING)
        inputs = {k: tf.constant(v).numpy() for k, v in recommend_inputs(k=1).items()}
        out = old.predict("recommend", inputs)  # the old version still answers its in-flight request
        assert out["item_ids"][0, 0] == b"v1-u1-0"
        assert swap.is_alive()  # the unload waits for us
    swap.join(timeout=30)
    assert manager.statuses(MODEL, version=1)[0].state == State.END
    manager.stop()


def test_deleting_the_served_version_falls_back_to_the_previous_one(tmp_path, staged):
    base = str(tmp_path)
    _copy_version(staged, 1, base)
    _copy_version(staged, 2, base)
    manager = _manager(base)
    manager.poll_once()
    manager.poll_once()
    assert manager.served_version == 2
    shutil.rmtree(os.path.join(base, "2"))
    manager.poll_once()
    assert manager.served_version == 1
    shutil.rmtree(os.path.join(base, "1"))
    manager.poll_once()
    assert manager.served_version is None
    assert {s.version: s.state for s in manager.statuses(MODEL)} == {1: State.END, 2: State.END}
    manager.stop()
