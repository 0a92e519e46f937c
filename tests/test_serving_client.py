"""serving/rest_client.py, grpc_client.py and the `python -m serving.client` CLI against the toy model."""

import numpy as np
import pytest

from serving import client as cli
from serving.grpc_client import GrpcClient
from serving.recommend_request import pad_histories
from serving.rest_client import RestClient, ServingClientError
from tests.test_serving_toy import MODEL, running_server, save_toy_model


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("client_models"))
    save_toy_model(base, 4)
    with running_server(base, max_k=20) as running:
        yield running


@pytest.fixture(params=["rest", "grpc"])
def client(request, server):
    if request.param == "rest":
        made = RestClient(f"http://127.0.0.1:{server.rest_port}", MODEL, timeout_s=10)
    else:
        made = GrpcClient(f"127.0.0.1:{server.grpc_port}", MODEL, timeout_s=10)
    yield made
    made.close()


def test_recommend(client):
    result = client.recommend(["a", "b"], [["x"], []], k=3, boost=2.0)
    assert np.asarray(result.outputs["item_ids"]).tolist() in (
        [["v4-a-0", "v4-a-1", "v4-a-2"], ["v4-b-0", "v4-b-1", "v4-b-2"]],  # REST: JSON strings
        [[b"v4-a-0", b"v4-a-1", b"v4-a-2"], [b"v4-b-0", b"v4-b-1", b"v4-b-2"]],  # gRPC: DT_STRING bytes
    )
    np.testing.assert_allclose(np.asarray(result.outputs["scores"], np.float32), [[2.0, 1.0, 0.0]] * 2)
    assert result.rows(1)[0] == {"item_ids": "v4-b-0", "scores": 2.0, "is_tail": 0}
    assert result.version in (None, 4)  # only gRPC reports the version
    assert client.scalar_inputs("recommend") == ["boost", "k"]


def test_errors_carry_status_and_message(client):
    with pytest.raises(ServingClientError) as raised:
        client.recommend(["a"], [[]], k=21, boost=0.0)
    assert raised.value.status in (400, "INVALID_ARGUMENT")
    assert "k must be between 1 and 20, got 21" in raised.value.message
    with pytest.raises(ServingClientError) as raised:
        client.recommend(["a"], [[]], k=2)  # the knob is required by the signature
    assert raised.value.status in (400, "INVALID_ARGUMENT")


def test_pad_histories():
    assert pad_histories([["a", "b"], []]) == [["a", "b"], ["", ""]]
    assert pad_histories([[]]) == [[""]]  # a [B, 0] tensor has no JSON form


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
