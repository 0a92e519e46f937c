"""A tiny SavedModel with recommend-like signatures for the server tests (saves in ~1 s), and its checks.

Signatures (the version is baked into the item ids, so a test can see which version answered):
  recommend(user_id [B] string, history [B, H] string, k int32, boost float32) →
      item_ids [B, k] "v<version>-<user>-<j>", scores [B, k] float32 (boost - j), is_tail [B, k] int64 (j % 2)
  echo(data [B] string) → data_bytes [B] (the same bytes; "_bytes" = base64 in REST), length [B] int32
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import tensorflow as tf

from serving.config import ServerConfig
from serving.servable import Servable
from serving.server import ModelServer

MODEL = "toy"


class ToyModel(tf.Module):
    def __init__(self, version: int):
        super().__init__()
        self.version = version

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="user_id"),
            tf.TensorSpec([None, None], tf.string, name="history"),
            tf.TensorSpec([], tf.int32, name="k"),
            tf.TensorSpec([], tf.float32, name="boost"),
        ]
    )
    def recommend(self, user_id, history, k, boost):
        del history  # the toy ignores it
        positions = tf.range(k)
        batch = tf.shape(user_id)[0]
        users = tf.tile(user_id[:, None], [1, k])
        suffix = tf.tile(tf.strings.as_string(positions)[None, :], [batch, 1])
        ids = tf.strings.join([f"v{self.version}-", users, "-", suffix])  # StringJoin does not broadcast
        scores = boost - tf.cast(positions, tf.float32)
        return {
            "item_ids": ids,
            "scores": tf.tile(scores[None, :], [batch, 1]),
            "is_tail": tf.tile(tf.cast(positions % 2, tf.int64)[None, :], [batch, 1]),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="data")])
    def echo(self, data):
        return {"data_bytes": data, "length": tf.strings.length(data)}


def save_toy_model(base_path: str, version: int) -> str:
    """Saves version `version` under `base_path/<version>` (TF Serving's layout); returns its folder."""
    module = ToyModel(version)
    path = os.path.join(base_path, str(version))
    signatures = {
        "recommend": module.recommend.get_concrete_function(),
        "echo": module.echo.get_concrete_function(),
    }
    tf.saved_model.save(module, path, signatures=signatures)
    return path


@contextmanager
def running_server(base_path: str, **overrides) -> Iterator[ModelServer]:
    """A server for MODEL on free loopback ports, polling fast; waits for a version to be available."""
    settings = {
        "model_base_path": base_path,
        "model_name": MODEL,
        "grpc_port": 0,
        "rest_port": 0,
        "poll_interval_s": 0.1,
        "access_log": False,
    } | overrides
    server = ModelServer(ServerConfig(**settings)).start()
    try:
        assert server.wait_until_available(60), "no version became available"
        yield server
    finally:
        server.stop()


def recommend_inputs(k: int = 3, boost: float = 1.0, users: tuple = ("u1",)) -> dict:
    return {"user_id": list(users), "history": [["h1", ""]] * len(users), "k": k, "boost": boost}


def test_toy_model_signatures(tmp_path):
    path = save_toy_model(str(tmp_path), 7)
    servable = Servable.load(MODEL, 7, path, k_input="k", max_k=10)
    out = servable.predict(
        "recommend",
        {
            "user_id": np.array([b"a", b"b"], object),
            "history": np.array([[b""], [b""]], object),
            "k": np.array(3, np.int32),
            "boost": np.array(1.5, np.float32),
        },
    )
    assert out["item_ids"].tolist() == [[b"v7-a-0", b"v7-a-1", b"v7-a-2"], [b"v7-b-0", b"v7-b-1", b"v7-b-2"]]
    np.testing.assert_allclose(out["scores"], [[1.5, 0.5, -0.5]] * 2)
    assert out["is_tail"].tolist() == [[0, 1, 0]] * 2
    assert set(servable.signature_defs) >= {"recommend", "echo"}
    # warm-up without a warm-up file: every callable signature, `runs` times each
    assert servable.warm_up(runs=2) == 4
