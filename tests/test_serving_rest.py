"""TF Serving's REST API of the local server, with plain HTTP requests against the toy model."""

import base64
import logging

import pytest
import requests

from tests.test_serving_toy import MODEL, recommend_inputs, running_server, save_toy_model

MAX_BODY = 64 * 1024
MAX_K = 50


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("rest_models"))
    save_toy_model(base, 1)
    overrides = {
        "max_body_bytes": MAX_BODY,
        "max_k": MAX_K,
        "version_labels": {"stable": 1},
        "access_log": True,
    }
    with running_server(base, **overrides) as running:
        yield running


@pytest.fixture(scope="module")
def http(server):
    session = requests.Session()
    base = f"http://127.0.0.1:{server.rest_port}"

    def call(method: str, path: str, **kwargs) -> requests.Response:
        return session.request(method, base + path, timeout=10, **kwargs)

    yield call
    session.close()


def _predict(http, path: str = f"/v1/models/{MODEL}:predict", **inputs) -> requests.Response:
    return http("POST", path, json={"signature_name": "recommend", "inputs": recommend_inputs(**inputs)})


def _assert_serving(http) -> None:
    response = _predict(http, k=2)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"]["item_ids"] == [["v1-u1-0", "v1-u1-1"]]


AVAILABLE = {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}


@pytest.mark.parametrize(
    "path", [f"/v1/models/{MODEL}", f"/v1/models/{MODEL}/versions/1", f"/v1/models/{MODEL}/labels/stable"]
)
def test_model_status(http, path):
    response = http("GET", path)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {"model_version_status": [AVAILABLE]}


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/models/{MODEL}/metadata",
        f"/v1/models/{MODEL}/versions/1/metadata",
        f"/v1/models/{MODEL}/labels/stable/metadata",
    ],
)
def test_model_metadata(http, path):
    doc = http("GET", path).json()
    assert doc["model_spec"] == {"name": MODEL, "version": "1", "signature_name": ""}
    signatures = doc["metadata"]["signature_def"]["signature_def"]
    recommend = signatures["recommend"]
    assert recommend["method_name"] == "tensorflow/serving/predict"
    assert recommend["inputs"]["k"]["dtype"] == "DT_INT32"
    assert recommend["inputs"]["history"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}] * 2
    assert set(recommend["outputs"]) == {"item_ids", "scores", "is_tail"}
    assert signatures["echo"]["outputs"]["length"]["dtype"] == "DT_INT32"


@pytest.mark.parametrize("route", ["", "/versions/1", "/labels/stable"])
def test_predict_columnar(http, route):
    response = _predict(http, f"/v1/models/{MODEL}{route}:predict", k=3, boost=2.5, users=("a", "b"))
    assert response.status_code == 200, response.text
    # Several outputs → {"outputs": {name: value}}; float32 written with its shortest repr, like TF Serving.
    assert response.json() == {
        "outputs": {
            "item_ids": [["v1-a-0", "v1-a-1", "v1-a-2"], ["v1-b-0", "v1-b-1", "v1-b-2"]],
            "scores": [[2.5, 1.5, 0.5], [2.5, 1.5, 0.5]],
            "is_tail": [[0, 1, 0], [0, 1, 0]],
        }
    }


def test_predict_row_format_and_b64(http):
    raw = b"\x00\xffz"
    body = {"signature_name": "echo", "instances": ["abc", {"b64": base64.b64encode(raw).decode()}]}
    response = http("POST", f"/v1/models/{MODEL}:predict", json=body)
    assert response.status_code == 200, response.text
    # Row format → "predictions", one object per instance; "_bytes" outputs come back base64-encoded.
    assert response.json() == {
        "predictions": [
            {"data_bytes": {"b64": base64.b64encode(b"abc").decode()}, "length": 3},
            {"data_bytes": {"b64": base64.b64encode(raw).decode()}, "length": 3},
        ]
    }
    named = {"signature_name": "echo", "instances": [{"data": "hi"}]}
    assert http("POST", f"/v1/models/{MODEL}:predict", json=named).json()["predictions"][0]["length"] == 2
    columnar = {"signature_name": "echo", "inputs": ["a", "bb"]}  # one input: a plain value
    assert http("POST", f"/v1/models/{MODEL}:predict", json=columnar).json()["outputs"]["length"] == [1, 2]


def _recommend_body(**changes) -> dict:
    inputs = recommend_inputs() | changes
    return {"signature_name": "recommend", "inputs": {k: v for k, v in inputs.items() if v is not None}}


PREDICT = f"/v1/models/{MODEL}:predict"
BAD_REQUESTS = {
    "unknown model": (
        "POST",
        "/v1/models/nope:predict",
        _recommend_body(),
        404,
        "Servable not found for request: Latest(nope)",
    ),
    "unknown version": (
        "POST",
        f"/v1/models/{MODEL}/versions/9:predict",
        _recommend_body(),
        404,
        f"Servable not found for request: Specific({MODEL}, 9)",
    ),
    "unknown label": (
        "POST",
        f"/v1/models/{MODEL}/labels/nope:predict",
        _recommend_body(),
        400,
        "Unrecognized servable version label: nope",
    ),
    "unknown signature": (
        "POST",
        PREDICT,
        {"signature_name": "nope", "inputs": {"x": 1}},
        400,
        'Serving signature name: "nope" not found in signature def',
    ),
    "missing input": ("POST", PREDICT, _recommend_body(boost=None), 400, "Missing named input: boost"),
    "extra input": ("POST", PREDICT, _recommend_body(colour="red"), 400, "does not: {colour}"),
    "string for int": (
        "POST",
        PREDICT,
        _recommend_body(k="ten"),
        400,
        'JSON Value: "ten" Type: String is not of expected type: int32',
    ),
    "float for int": ("POST", PREDICT, _recommend_body(k=2.5), 400, "is not of expected type: int32"),
    "number for string": (
        "POST",
        PREDICT,
        _recommend_body(user_id=[7]),
        400,
        "is not of expected type: string",
    ),
    "bool for float": ("POST", PREDICT, _recommend_body(boost=True), 400, "is not of expected type: float"),
    "k zero": ("POST", PREDICT, _recommend_body(k=0), 400, f"k must be between 1 and {MAX_K}, got 0"),
    "k too big": ("POST", PREDICT, _recommend_body(k=MAX_K + 1), 400, f"got {MAX_K + 1}"),
    "wrong rank": ("POST", PREDICT, _recommend_body(history=["h1"]), 400, "has shape [1] but the signature"),
    "ragged list": (
        "POST",
        PREDICT,
        _recommend_body(history=[["a"], ["b", "c"]]),
        400,
        "Encountered list at unexpected size",
    ),
    "bad base64": ("POST", PREDICT, _recommend_body(user_id=[{"b64": "!!"}]), 400, "Unable to base64 decode"),
    "no inputs": (
        "POST",
        PREDICT,
        {"signature_name": "recommend"},
        400,
        "Missing 'inputs' or 'instances' key",
    ),
    "both formats": (
        "POST",
        PREDICT,
        {"signature_name": "recommend", "inputs": {}, "instances": []},
        400,
        "only one of 'inputs' or",
    ),
    "scalar in rows": (
        "POST",
        PREDICT,
        {
            "signature_name": "recommend",
            "instances": [{"user_id": "u", "history": ["h"], "k": 2, "boost": 1.0}],
        },
        400,
        "has shape [1] but the signature expects []",
    ),
    "malformed json": ("POST", PREDICT, b'{"inputs": [1, 2', 400, "JSON Parse error"),
    "json not object": ("POST", PREDICT, b"[1, 2]", 400, "Is not object"),
    "empty body": ("POST", PREDICT, b"", 400, "The document is empty"),
    "signature not string": (
        "POST",
        PREDICT,
        {"signature_name": 3, "inputs": {}},
        400,
        "'signature_name' key must be a string value",
    ),
    "oversized body": ("POST", PREDICT, b" " * (MAX_BODY + 1), 413, "Maximum request body size"),
    "classify": ("POST", f"/v1/models/{MODEL}:classify", _recommend_body(), 501, "use :predict"),
    "malformed path": ("GET", "/v1/modelz/x", None, 400, "Malformed request: GET /v1/modelz/x"),
    "no model name": ("GET", "/v1/models", None, 400, "Missing model name in request."),
    "status of unknown model": (
        "GET",
        "/v1/models/nope",
        None,
        404,
        "Could not find any versions of model nope",
    ),
    "status of unknown version": (
        "GET",
        f"/v1/models/{MODEL}/versions/9",
        None,
        404,
        f"Could not find version 9 of model {MODEL}",
    ),
    "metadata of unknown model": ("GET", "/v1/models/nope/metadata", None, 404, "Servable not found"),
    "outside /v1": ("GET", "/v2/models", None, 404, "Not found: GET /v2/models"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_tf_serving_errors_and_the_server_keeps_serving(http, case):
    method, path, body, status, message = BAD_REQUESTS[case]
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body} if body is not None else {}
    response = http(method, path, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert message in response.json()["error"]
    _assert_serving(http)


def test_probes_metrics_and_access_log(http, caplog):
    assert http("GET", "/healthz").json() == {"status": "alive"}
    assert http("GET", "/readyz").json() == {"status": "ready", "model": MODEL, "version": 1}
    with caplog.at_level(logging.INFO, logger="serving.access"):
        _assert_serving(http)
        http("POST", "/v1/models/nope:predict", json=_recommend_body())
    logged = [r.getMessage() for r in caplog.records if r.name == "serving.access"]
    assert any(line.startswith(f"REST POST /v1/models/{MODEL}:predict 200 ") for line in logged), logged
    assert any(line.startswith("REST POST /v1/models/nope:predict 404 ") for line in logged), logged
    page = http("GET", "/metrics").text
    assert 'tailtower_serving_requests_total{code="200",protocol="rest",route="predict"}' in page
    assert 'tailtower_serving_requests_total{code="404",protocol="rest",route="predict"}' in page
    assert 'tailtower_serving_request_latency_seconds_count{protocol="rest",route="predict"}' in page
    assert f'tailtower_serving_model_version{{model="{MODEL}"}} 1.0' in page
