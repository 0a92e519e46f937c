"""serving/rest_client.py, grpc_client.py, local_client.py, the request builder they share
(recommend_request.py) and the `python -m serving.client` CLI, against the toy model."""

import os
import time

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2

from serving import client as cli
from serving.client_error import ServingClientError
from serving.grpc_client import GrpcClient
from serving.local_client import LocalClient
from serving.recommend_request import (
    Recommendations,
    knob_names,
    pad_histories,
    recommend_inputs,
    typed_inputs,
    with_knobs_off,
)
from serving.rest_client import RestClient
from tests.test_serving_toy import MODEL, running_server, save_toy_model

VERSION = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("client_models"))
    save_toy_model(base, VERSION)
    with running_server(base, max_k=20) as running:
        yield running


@pytest.fixture(params=["rest", "grpc", "local"])
def client(request, server):
    if request.param == "rest":
        made = RestClient(f"http://127.0.0.1:{server.rest_port}", MODEL, timeout_s=10)
    elif request.param == "grpc":
        made = GrpcClient(f"127.0.0.1:{server.grpc_port}", MODEL, timeout_s=10)
    else:
        made = LocalClient(os.path.join(server.config.model_base_path, str(VERSION)))
    yield made
    made.close()


def test_recommend(client):
    result = client.recommend(["a", "b"], [["x"], []], k=3, boost=2.0)
    assert np.asarray(result.outputs["item_ids"]).tolist() in (
        [["v4-a-0", "v4-a-1", "v4-a-2"], ["v4-b-0", "v4-b-1", "v4-b-2"]],  # REST: JSON strings
        [[b"v4-a-0", b"v4-a-1", b"v4-a-2"], [b"v4-b-0", b"v4-b-1", b"v4-b-2"]],  # gRPC, local: bytes
    )
    assert result.item_ids() == [["v4-a-0", "v4-a-1", "v4-a-2"], ["v4-b-0", "v4-b-1", "v4-b-2"]]
    np.testing.assert_allclose(np.asarray(result.outputs["scores"], np.float32), [[2.0, 1.0, 0.0]] * 2)
    assert result.rows(1)[0] == {"item_ids": "v4-b-0", "scores": 2.0, "is_tail": 0}
    assert result.version == (4 if isinstance(client, GrpcClient) else None)  # only gRPC reports it
    assert client.scalar_inputs("recommend") == ["boost", "k"]


def test_errors_carry_status_and_message(client):
    if not isinstance(client, LocalClient):  # max_k is the server's bound
        with pytest.raises(ServingClientError) as raised:
            client.recommend(["a"], [[]], k=21, boost=0.0)
        assert raised.value.status in (400, "INVALID_ARGUMENT")
        assert "k must be between 1 and 20, got 21" in raised.value.message
    with pytest.raises(ServingClientError) as raised:
        client.recommend(["a"], [[]], k=2)  # the knob is required by the signature
    assert raised.value.status in (400, "INVALID_ARGUMENT")
    assert "boost" in raised.value.message


def test_no_answer_is_unavailable():
    with pytest.raises(ServingClientError) as raised:
        RestClient("http://127.0.0.1:9", MODEL, timeout_s=2).recommend(["a"], [[]], k=2, boost=0.0)
    assert raised.value.status == "UNAVAILABLE"
    # The first call reads which item filters `recommend` declares: that is what finds no server.
    assert raised.value.message.startswith(f"GET http://127.0.0.1:9/v1/models/{MODEL}/metadata: ")


def test_the_local_client_serves_only_its_own_version(server):
    local = LocalClient(os.path.join(server.config.model_base_path, str(VERSION)))
    with pytest.raises(ValueError, match="version=3"):
        local.recommend(["a"], [[]], k=2, version=3, boost=0.0)
    with pytest.raises(ServingClientError, match="no signature 'nope'; the model has"):
        local.scalar_inputs("nope")


def test_pad_histories():
    assert pad_histories([["a", "b"], []]) == [["a", "b"], ["", ""]]
    assert pad_histories([[]]) == [[""]]  # a [B, 0] tensor has no JSON form


def test_recommend_inputs():
    assert recommend_inputs(["u1", "u2"], [["i3"], []], 5, {"boost": 0.5}, declared=()) == {
        "user_id": ["u1", "u2"],
        "history": [["i3"], [""]],
        "k": 5,
        "boost": 0.5,
    }
    with_filters = recommend_inputs(["u1", "u2"], [[], []], 5, {}, {"brands": [["acme"], []]})
    assert {name: with_filters[name] for name in ("exclude_ids", "brands")} == {
        "exclude_ids": [[""], [""]],  # every declared filter (default: all of them) is sent
        "brands": [["acme"], [""]],
    }
    with pytest.raises(ValueError, match="2 users but 1 histories"):
        recommend_inputs(["u1", "u2"], [["i3"]], 5, {})


def test_typed_inputs_follow_the_declared_dtypes_exactly():
    strings = np.dtype(object)  # DT_STRING
    dtypes = {"user_id": strings, "history": strings, "k": np.dtype(np.int32), "boost": np.float32}
    inputs = recommend_inputs(["u1"], [["i3", "i4"]], 5, {"boost": 1, "extra": 0.5}, declared=())
    typed = typed_inputs(inputs, dtypes)
    assert {name: (value.dtype, value.tolist()) for name, value in typed.items()} == {
        "user_id": (np.dtype(object), ["u1"]),
        "history": (np.dtype(object), [["i3", "i4"]]),
        "k": (np.dtype(np.int32), 5),
        "boost": (np.dtype(np.float32), 1.0),  # a Python int for a float input
        "extra": (np.dtype(np.float64), 0.5),  # not in the signature: left for the model to reject
    }
    with pytest.raises(ValueError, match="input 'k': 2.5 is not exactly a int32"):
        typed_inputs({"k": 2.5}, dtypes)
    with pytest.raises(ValueError, match="input 'boost': 'high' is not a float32"):
        typed_inputs({"boost": "high"}, dtypes)


def test_knobs_are_the_scalar_inputs_besides_k_and_default_to_off():
    assert knob_names(["k", "xquad_lambda", "mmr_lambda"]) == ("mmr_lambda", "xquad_lambda")
    assert with_knobs_off({"xquad_lambda": 0.3}, ("mmr_lambda", "xquad_lambda")) == {
        "mmr_lambda": 0,
        "xquad_lambda": 0.3,
    }
    with pytest.raises(ValueError, match=r"no knob\(s\) \['boost'\]; its knobs: \['mmr_lambda'\]"):
        with_knobs_off({"boost": 1.0}, ("mmr_lambda",))


def test_recommendations_rows_drop_the_padding():
    result = Recommendations.from_outputs(
        {"item_ids": [[b"i1", b""]], "scores": [[0.5, -1.0]], "is_tail": [[1, 0]], "num": [3]}
    )
    assert result.item_ids() == [["i1", ""]]
    assert result.rows(0) == [{"item_ids": "i1", "scores": 0.5, "is_tail": 1}]
    assert result.version is None


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_cli_prints_recommendations(server, capsys, protocol):
    ports = ["--rest_port", str(server.rest_port), "--grpc_port", str(server.grpc_port)]
    code = cli.main(["--user", "u7", "--k", "2", "--protocol", protocol, "--model", MODEL, *ports])
    out, err = capsys.readouterr()
    assert code == 0
    assert "boost not given: sending 0 (off)" in err
    lines = out.splitlines()
    assert lines[0].startswith("recommendations for u7")
    assert lines[2].split() == ["1", "v4-u7-0", "0", "0.0000"]  # rank, item, is_tail, score (boost 0)
    assert lines[3].split() == ["2", "v4-u7-1", "1", "-1.0000"]
    assert cli.main(["--user", "u7", "--k", "99", "--model", MODEL, *ports]) == 1  # k above max_k
    assert "k must be between 1 and 20" in capsys.readouterr().err


def test_parse_knob():
    assert cli.parse_knob("mmr_lambda=0.25") == ("mmr_lambda", 0.25)
    assert cli.parse_knob("n=3") == ("n", 3)
    assert cli.parse_knob("mode=tail") == ("mode", "tail")


def save_toy_version(base_path: str, version: int, knobs: dict[str, tf.DType]) -> None:
    """A `recommend` taking `knobs` (scalars of those dtypes): scores [B, k] = sum of the knobs - j."""
    specs = [
        tf.TensorSpec([None], tf.string, name="user_id"),
        tf.TensorSpec([None, None], tf.string, name="history"),
        tf.TensorSpec([], tf.int32, name="k"),
        *(tf.TensorSpec([], dtype, name=name) for name, dtype in knobs.items()),
    ]

    def recommend(user_id, history, k, *values):
        batch, positions = tf.shape(user_id)[0], tf.range(k)
        scores = tf.add_n([tf.cast(value, tf.float32) for value in values]) - tf.cast(positions, tf.float32)
        return {
            "item_ids": tf.tile(user_id[:, None], [1, k]),
            "scores": tf.tile(scores[None, :], [batch, 1]),
            "is_tail": tf.zeros([batch, k], tf.int64),
        }

    module = tf.Module()
    module.recommend = tf.function(recommend, input_signature=specs)
    signatures = {"recommend": module.recommend.get_concrete_function()}
    tf.saved_model.save(module, os.path.join(base_path, str(version)), signatures=signatures)


def test_grpc_reads_the_input_dtypes_of_each_new_version(tmp_path):
    """The service keeps one GrpcClient while versions come and go: a version that changes a knob's dtype
    (2) or adds a knob (3) is answered at once, without a restart."""
    base = str(tmp_path)
    save_toy_version(base, 1, {"boost": tf.float32})
    with running_server(base) as server:
        client = GrpcClient(f"127.0.0.1:{server.grpc_port}", MODEL, timeout_s=10)

        def serving(version: int) -> None:  # waits until `version` is the latest available
            for _ in range(600):
                states = {s.version: s.state for s in client.status().model_version_status}
                if states.get(version) == get_model_status_pb2.ModelVersionStatus.AVAILABLE:
                    return
                time.sleep(0.05)
            raise AssertionError(f"version {version} not served: {states}")

        def scores(**knobs) -> tuple[int, list]:
            result = client.recommend(["a"], [[]], k=2, **knobs)
            return result.version, np.asarray(result.outputs["scores"]).tolist()

        try:
            assert scores(boost=1.0) == (1, [[1.0, 0.0]])  # float32 boost: dtypes kept for version 1
            save_toy_version(base, 2, {"boost": tf.float64})
            serving(2)
            assert scores(boost=1.0) == (2, [[1.0, 0.0]])  # refused as float32, read again, resent
            save_toy_version(base, 3, {"boost": tf.float64, "spread": tf.float32})
            serving(3)
            assert scores(boost=1.0, spread=0.5) == (3, [[1.5, 0.5]])  # a knob the kept dtypes lack
            assert client.input_dtypes("recommend")["spread"] == np.float32
        finally:
            client.close()
