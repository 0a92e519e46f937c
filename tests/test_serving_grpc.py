"""TF Serving's gRPC API of the local server, through the official tensorflow-serving-api stubs."""

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.test_serving_toy import MODEL, running_server, save_toy_model

MAX_BODY = 64 * 1024
DTYPES = {"user_id": tf.string, "history": tf.string, "k": tf.int32, "boost": tf.float32}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("grpc_models"))
    save_toy_model(base, 1)
    with running_server(base, max_body_bytes=MAX_BODY, max_k=50, version_labels={"stable": 1}) as running:
        yield running


@pytest.fixture(scope="module")
def stubs(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    yield (
        prediction_service_pb2_grpc.PredictionServiceStub(channel),
        model_service_pb2_grpc.ModelServiceStub(channel),
    )
    channel.close()


def predict_request(signature: str = "recommend", dtypes: dict | None = None, **changes):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = signature
    inputs = {"user_id": ["a", "b"], "history": [["h", ""], ["", ""]], "k": 2, "boost": 1.0} | changes
    for name, value in inputs.items():
        if value is not None:
            dtype = (dtypes or {}).get(name, DTYPES.get(name))
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value, dtype=dtype))
    return request


def _assert_serving(prediction) -> None:
    response = prediction.Predict(predict_request(), timeout=10)
    assert tf.make_ndarray(response.outputs["item_ids"]).tolist() == [
        [b"v1-a-0", b"v1-a-1"],
        [b"v1-b-0", b"v1-b-1"],
    ]


def test_predict(stubs):
    prediction, _ = stubs
    response = prediction.Predict(predict_request(k=3, boost=2.5), timeout=10)
    assert response.model_spec.name == MODEL
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "recommend"
    outputs = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
    assert outputs["item_ids"][1].tolist() == [b"v1-b-0", b"v1-b-1", b"v1-b-2"]
    np.testing.assert_allclose(outputs["scores"], [[2.5, 1.5, 0.5]] * 2)
    assert outputs["is_tail"].dtype == np.int64


def test_predict_by_version_label_and_output_filter(stubs):
    prediction, _ = stubs
    request = predict_request()
    request.model_spec.version_label = "stable"
    request.output_filter.append("scores")
    response = prediction.Predict(request, timeout=10)
    assert set(response.outputs) == {"scores"}
    request = predict_request()
    request.model_spec.version.value = 1
    assert prediction.Predict(request, timeout=10).model_spec.version.value == 1


def test_get_model_metadata(stubs):
    prediction, _ = stubs
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL
    response = prediction.GetModelMetadata(request, timeout=10)
    assert (response.model_spec.name, response.model_spec.version.value) == (MODEL, 1)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    recommend = signatures.signature_def["recommend"]
    assert {name: tf.dtypes.as_dtype(info.dtype) for name, info in recommend.inputs.items()} == DTYPES
    assert recommend.method_name == "tensorflow/serving/predict"


def test_get_model_status(stubs):
    _, models = stubs
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    (status,) = models.GetModelStatus(request, timeout=10).model_version_status
    assert (status.version, status.state, status.status.error_code) == (1, status.AVAILABLE, 0)


def _status_request(name: str, version: int | None = None):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    return request


def _metadata_request(fields=("signature_def",), name: str = MODEL):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=list(fields))
    request.model_spec.name = name
    return request


def _filtered(*outputs):
    request = predict_request()
    request.output_filter.extend(outputs)
    return request


def _with_spec(request, **spec):
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    return request


BAD_CALLS = {
    "unknown model": (
        "Predict",
        lambda: _with_spec(predict_request(), name="nope"),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    ),
    "unknown version": (
        "Predict",
        lambda: _with_spec(predict_request(), version=9),
        grpc.StatusCode.NOT_FOUND,
        f"Specific({MODEL}, 9)",
    ),
    "unknown label": (
        "Predict",
        lambda: _with_spec(predict_request(), version_label="x"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unrecognized servable version label: x",
    ),
    "unknown signature": (
        "Predict",
        lambda: predict_request("nope"),
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "nope" not found.',
    ),
    "missing input": (
        "Predict",
        lambda: predict_request(boost=None),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Missing but required: {boost}",
    ),
    "extra input": (
        "Predict",
        lambda: predict_request(colour="red"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Sent extra: {colour}",
    ),
    "int64 k": (
        "Predict",
        lambda: predict_request(dtypes={"k": tf.int64}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expects arg 'k' to be int32 but int64 is provided",
    ),
    "float user ids": (
        "Predict",
        lambda: predict_request(user_id=[1.0, 2.0], dtypes={"user_id": tf.float32}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expects arg 'user_id' to be string but float",
    ),
    "k out of range": (
        "Predict",
        lambda: predict_request(k=51),
        grpc.StatusCode.INVALID_ARGUMENT,
        "k must be between 1 and 50, got 51",
    ),
    "bad output filter": (
        "Predict",
        lambda: _filtered("nope"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "output tensor alias not found in signature: nope",
    ),
    "oversized message": (
        "Predict",
        lambda: predict_request(user_id=["x" * MAX_BODY, "y"]),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "larger than max",
    ),
    "metadata without fields": (
        "GetModelMetadata",
        lambda: _metadata_request(()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "must specify at least one metadata_field",
    ),
    "metadata field unsupported": (
        "GetModelMetadata",
        lambda: _metadata_request(("nope",)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Metadata field nope is not supported",
    ),
    "metadata of unknown model": (
        "GetModelMetadata",
        lambda: _metadata_request(name="nope"),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found",
    ),
    "status of unknown model": (
        "GetModelStatus",
        lambda: _status_request("nope"),
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model nope",
    ),
    "status of unknown version": (
        "GetModelStatus",
        lambda: _status_request(MODEL, 9),
        grpc.StatusCode.NOT_FOUND,
        f"Could not find version 9 of model {MODEL}",
    ),
    "classify": ("Classify", classification_pb2.ClassificationRequest, grpc.StatusCode.UNIMPLEMENTED, ""),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_calls_get_tf_serving_status_and_the_server_keeps_serving(stubs, case):
    method, make_request, code, message = BAD_CALLS[case]
    prediction, models = stubs
    stub = models if method == "GetModelStatus" else prediction
    with pytest.raises(grpc.RpcError) as raised:
        getattr(stub, method)(make_request(), timeout=10)
    assert raised.value.code() == code
    assert message in raised.value.details()
    _assert_serving(prediction)


def test_grpc_requests_are_counted(server, stubs):
    _assert_serving(stubs[0])
    with pytest.raises(grpc.RpcError):
        stubs[1].GetModelStatus(_status_request("nope"), timeout=10)
    page = requests.get(f"http://127.0.0.1:{server.rest_port}/metrics", timeout=10).text
    assert 'tailtower_serving_requests_total{code="OK",protocol="grpc",route="predict"}' in page
    assert 'tailtower_serving_requests_total{code="NOT_FOUND",protocol="grpc",route="status"}' in page
