"""TF Serving's own REST JSON test cases, run against serving/rest_json.py and the local server.

Transcribed from tensorflow/serving (json_tensor_test.cc at 07451ec6, the handler test at 49ac8acb):
  * tensorflow_serving/util/json_tensor_test.cc: every predict case (FillPredictRequestFromJson →
    REQUEST_CASES, MakeJsonFromTensors → RESPONSE_CASES) and MakeJsonFromStatus (→ STATUS_CASES);
  * tensorflow_serving/model_servers/http_rest_api_handler_test.cc: the predict tests
    (PredictModelNameVersionErrors, PredictRequestErrors, Predict → HTTP_CASES), over HTTP against a
    half_plus_two model (y = 0.5 * x + 2) served as in the C++ test: name
    saved_model_half_plus_two_2_versions, version 123, label Version_Label.
Each row is named after the C++ test it comes from, with [sub-case] where the test checks several.
Error rows assert the canonical code and the substring the C++ test asserts (HasSubstr); output rows compare
the parsed JSON by value (NaN equal to NaN), as the C++ CompareJson does.

Left out: the classify/regress cases (ClassifyRegressRequestTest.*, ClassifyRegressnResultTest.*, the
handler's Regress and Classify: this server answers :classify and :regress with UNIMPLEMENTED), the handler's
path, status and metadata tests (kPathRegex, UnsupportedApiCalls, GetStatus, GetModelMetadata: not predict
JSON; tests/test_serving_rest.py covers them), and MakeJsonFromTensors.StatusOK (an OK status writes no JSON;
there is nothing to call here).

EXTRA_CASES are not TF Serving tests but behaviour its json_tensor.cc defines and its tests do not reach:
absl::Base64Unescape's leniency (no padding, whitespace), -Infinity in a request, IsLosslessDecimal's
refusal of floats past float32's range, and rapidjson's refusal of a number that overflows a double.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf

from serving import rest_json
from serving.errors import ServingError
from serving.rest import error_response
from serving.servable import InputInfo
from tests.test_serving_toy import running_server

INT, FLOAT, DOUBLE, STRING = tf.int32, tf.float32, tf.float64, tf.string
NAN, INF = float("nan"), float("inf")


def strings(values) -> np.ndarray:
    """A DT_STRING array (numpy object array of bytes) shaped like the nested list `values`."""
    shape = np.shape(np.array(values, dtype=object))
    flat = np.empty(int(np.prod(shape)), dtype=object)
    flat[:] = [v.encode() for v in np.array(values, dtype=object).ravel()]
    return flat.reshape(shape)


# -------------------------------------------------------------------------------- FillPredictRequestFromJson
@dataclass
class Request:
    body: str | bytes
    infos: dict  # input name → dtype; the C++ TensorInfos have no shape
    tensors: dict = field(default_factory=dict)  # expected input arrays (dtype, shape, values)
    fmt: str = rest_json.ROW
    signature: str = ""
    error: str | None = None  # substring the C++ test asserts; the code is always INVALID_ARGUMENT


SINGLE_INT = {"default": INT}
INT_STR = {"int_tensor": INT, "str_tensor": STRING}

REQUEST_CASES = {
    "JsontensorTest.SingleUnnamedTensor": Request(
        '{"instances": [[1,2],[3,4],[5,6]]}',
        SINGLE_INT,
        {"default": np.array([[1, 2], [3, 4], [5, 6]], np.int32)},
    ),
    "JsontensorTest.MixedInputForFloatTensor": Request(
        '{"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}',
        {"default": FLOAT},
        {"default": np.array([1, 2.0, 3, 4, 5.003, 0.007, 0.0], np.float32)},
    ),
    "JsontensorTest.MixedInputForDoubleTensor": Request(
        '{"instances": [1.0, 2, 3, 4, 0.662, 0, 0.0]}',
        {"default": DOUBLE},
        {"default": np.array([1.0, 2, 3, 4, 0.662, 0, 0.0], np.float64)},
    ),
    "JsontensorTest.SingleUnnamedTensorWithSignature": Request(
        '{"signature_name": "predict_images", "instances": [[1,2]]}',
        SINGLE_INT,
        {"default": np.array([[1, 2]], np.int32)},
        signature="predict_images",
    ),
    "JsontensorTest.TensorFromNonNullTerminatedBuffer": Request(
        b'{"instances": [[1,2],[3,4],[5,6]]}X'[:-1],
        SINGLE_INT,
        {"default": np.array([[1, 2], [3, 4], [5, 6]], np.int32)},
    ),
    "JsontensorTest.SingleUnnamedTensorBase64Scalars": Request(
        '{"instances": [ { "b64" : "aGVsbG8=" }, { "b64": "d29ybGQ=" } ]}',
        {"default": STRING},
        {"default": strings(["hello", "world"])},
    ),
    "JsontensorTest.SingleUnnamedTensorBase64Lists": Request(
        '{"instances": [ [{ "b64" : "aGVsbG8=" }], [{ "b64": "d29ybGQ=" }] ]}',
        {"default": STRING},
        {"default": strings([["hello"], ["world"]])},
    ),
    "JsontensorTest.SingleNamedTensorBase64": Request(
        '{"instances": [{"default": [ [{ "b64" : "aGVsbG8=" }], [{ "b64": "d29ybGQ=" }] ]}]}',
        {"default": STRING},
        {"default": strings([[["hello"], ["world"]]])},
    ),
    "JsontensorTest.MultipleNamedTensor": Request(
        """{"instances": [
             {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"],
              "float_tensor": [1.0, NaN], "dbl_tensor": [NaN]},
             {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"],
              "float_tensor": [2.0, Infinity], "dbl_tensor": [2.0]}
           ]}""",
        {"int_tensor": INT, "str_tensor": STRING, "float_tensor": FLOAT, "dbl_tensor": DOUBLE},
        {
            "int_tensor": np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], np.int32),
            "str_tensor": strings([["foo", "bar"], ["baz", "bat"]]),
            "float_tensor": np.array([[1.0, NAN], [2.0, INF]], np.float32),
            "dbl_tensor": np.array([[NAN], [2.0]], np.float64),
        },
    ),
    "JsontensorTest.SingleUnnamedTensorColumnarFormat[named]": Request(
        '{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]]}}',
        {"int_tensor": INT},
        {"int_tensor": np.array([[[1, 2], [3, 4], [5, 6]]], np.int32)},
        fmt=rest_json.COLUMNAR,
    ),
    "JsontensorTest.SingleUnnamedTensorColumnarFormat[unnamed]": Request(
        '{"inputs": [[[1,2],[3,4],[5,6]]]}',
        {"int_tensor": INT},
        {"int_tensor": np.array([[[1, 2], [3, 4], [5, 6]]], np.int32)},
        fmt=rest_json.COLUMNAR,
    ),
    "JsontensorTest.MultipleNamedTensorColumnarFormat": Request(
        """{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]], "str_tensor": ["foo", "bar"],
                       "bin_tensor": { "b64" : "aGVsbG8=" }}}""",
        {"int_tensor": INT, "str_tensor": STRING, "bin_tensor": STRING},
        {
            "int_tensor": np.array([[[1, 2], [3, 4], [5, 6]]], np.int32),
            "str_tensor": strings(["foo", "bar"]),
            "bin_tensor": strings("hello"),
        },
        fmt=rest_json.COLUMNAR,
    ),
    "JsontensorTest.SingleUnnamedTensorErrors[empty]": Request("", SINGLE_INT, error="document is empty"),
    "JsontensorTest.SingleUnnamedTensorErrors[signature_name_not_string]": Request(
        '{"signature_name": 5, "instances": [[1,2],[3,4],[5,6,7]]}',
        SINGLE_INT,
        error="must be a string value",
    ),
    "JsontensorTest.SingleUnnamedTensorErrors[instances_and_inputs]": Request(
        '{"instances": [[1,2],[3,4],[5,6,7]], "inputs": [[1,2],[3,4],[5,6,7]]}',
        SINGLE_INT,
        error="Not formatted correctly",
    ),
    "JsontensorTest.SingleUnnamedTensorErrors[tensor_size]": Request(
        '{"instances": [[1,2],[3,4],[5,6,7]]}', SINGLE_INT, error="Expecting tensor size"
    ),
    "JsontensorTest.SingleUnnamedTensorErrors[shape]": Request(
        '{"instances": [[1,2],[3,4],[[5,6]]]}', SINGLE_INT, error="Expecting shape"
    ),
    "JsontensorTest.SingleUnnamedTensorErrors[scalar_then_list]": Request(
        '{"instances": [1, [1]]}', SINGLE_INT, error="Expecting shape"
    ),
    "JsontensorTest.SingleUnnamedTensorErrors[type]": Request(
        '{"instances": [[1,2],["a", "b"]]}', SINGLE_INT, error="not of expected type"
    ),
    # absl::Substitute("$0", std::numeric_limits<double>::max()) writes six significant digits.
    "JsontensorTest.SingleUnnamedTensorErrors[double_max_to_float]": Request(
        '{ "instances": [1.79769e+308] }', {"default": FLOAT}, error="loss of precision"
    ),
    "JsontensorTest.SingleUnnamedTensorErrors[2^24+1_to_float]": Request(
        '{ "instances": [16777217] }', {"default": FLOAT}, error="loss of precision"
    ),
    "JsontensorTest.SingleUnnamedTensorErrors[2^53+1_to_double]": Request(
        '{ "instances": [9007199254740993] }', {"default": DOUBLE}, error="loss of precision"
    ),
    "JsontensorTest.MultipleNamedTensorErrors[shape]": Request(
        """{"instances": [{"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]},
                          {"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}]}""",
        INT_STR,
        error="Expecting shape",
    ),
    "JsontensorTest.MultipleNamedTensorErrors[tensor_size]": Request(
        """{"instances": [{"int_tensor": [[1,2],[3,4],[5,6],[7,8]], "str_tensor": ["foo", "bar"]},
                          {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"]}]}""",
        INT_STR,
        error="Expecting tensor size",
    ),
    "JsontensorTest.MultipleNamedTensorErrors[object_then_list]": Request(
        """{"instances": [{"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]},
                          [1, 20, 30],
                          {"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}]}""",
        INT_STR,
        error="Expecting object but got list",
    ),
    "JsontensorTest.MultipleNamedTensorErrors[list_then_object]": Request(
        '{"instances": [["baz", "bar"], {"str_tensor": ["baz", "bat"]}]}',
        {"str_tensor": STRING},
        error="Expecting value/list but got object",
    ),
}

HELLO_WORLD = base64.encodebytes(b"hello world " * 8).decode()  # base64 wrapped at 76 columns, "\n" ended
EXTRA_CASES = {
    "json_tensor.cc:JsonDecodeBase64Object[absl_unpadded]": Request(
        '{"instances": [{"b64": "aGVsbG8"}, {"b64": "d29ybGQ"}]}',
        {"default": STRING},
        {"default": strings(["hello", "world"])},
    ),
    "json_tensor.cc:JsonDecodeBase64Object[absl_whitespace]": Request(
        json.dumps({"instances": [{"b64": HELLO_WORLD}, {"b64": " aGVs\r\nbG8=\t"}]}),
        {"default": STRING},
        {"default": strings(["hello world " * 8, "hello"])},
    ),
    "json_tensor.cc:JsonDecodeBase64Object[absl_wrong_padding]": Request(
        '{"instances": [{"b64": "aGVsbG8=="}]}', {"default": STRING}, error="Unable to base64 decode"
    ),
    "json_tensor.cc:JsonDecodeBase64Object[absl_not_base64]": Request(
        '{"instances": [{"b64": "aGV*bG8="}]}', {"default": STRING}, error="Unable to base64 decode"
    ),
    "json_tensor.cc:ParseJson[python_json.dumps_non_finite]": Request(
        json.dumps({"instances": [NAN, INF, -INF, 1.5]}),
        {"default": FLOAT},
        {"default": np.array([NAN, INF, -INF, 1.5], np.float32)},
    ),
    "json_tensor.cc:IsLosslessDecimal[past_float32_range]": Request(
        '{"instances": [1e39]}', {"default": FLOAT}, error="Cannot convert JSON value: 1e+39 to float"
    ),
    "json_tensor.cc:ParseJson[double_overflow]": Request(
        '{"instances": [1e400]}', {"default": DOUBLE}, error="JSON Parse error: Number too big"
    ),
}


def _fill_predict_request(case: Request) -> tuple[str, dict, str]:
    """What FillPredictRequestFromJson does: parse, read the signature name, convert the inputs."""
    body = case.body.encode() if isinstance(case.body, str) else case.body
    doc = rest_json.parse_request(body)
    signature = rest_json.signature_name(doc)
    infos = {name: InputInfo(name, dtype, None) for name, dtype in case.infos.items()}
    tensors, fmt = rest_json.request_tensors(doc, infos)
    return signature, tensors, fmt


@pytest.mark.parametrize("case", [pytest.param(c, id=i) for i, c in (REQUEST_CASES | EXTRA_CASES).items()])
def test_fill_predict_request_from_json(case: Request):
    if case.error is not None:
        with pytest.raises(ServingError) as raised:
            _fill_predict_request(case)
        assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert case.error in raised.value.message
        return
    signature, tensors, fmt = _fill_predict_request(case)
    assert (signature, fmt) == (case.signature, case.fmt)
    assert tensors.keys() == case.tensors.keys()
    for name, expected in case.tensors.items():
        assert (tensors[name].dtype, tensors[name].shape) == (expected.dtype, expected.shape), name
        np.testing.assert_array_equal(tensors[name], expected, err_msg=name)  # NaN == NaN here


# ------------------------------------------------------------------------------------ MakeJsonFromTensors
@dataclass
class Response:
    outputs: dict  # output name → array
    fmt: str
    json: str | None = None  # expected document (may hold NaN/Infinity, as rapidjson writes them)
    error: str | None = None  # substring the C++ test asserts; the code is always INVALID_ARGUMENT


INT_2x3x2 = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2], np.int32).reshape(2, 3, 2)
BYTES_2x2 = strings([["hello", "world"], ["tf", "serving"]])
MULTIPLE_NAMED = {
    "int_tensor": INT_2x3x2,
    "str_tensor": strings([["foo", "bar"], ["baz", "bat"]]),
    "float_tensor": np.array([[1.0], [2.0]], np.float32),
    "double_scalar_tensor": np.array([8.0, 9.0], np.float64),
    "str_tensor_bytes": BYTES_2x2,
}
ROW, COLUMNAR = rest_json.ROW, rest_json.COLUMNAR

RESPONSE_CASES = {
    "JsontensorTest.FromJsonSingleTensor[row]": Response(
        {"int_tensor": INT_2x3x2},
        ROW,
        '{"predictions": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]]}',
    ),
    "JsontensorTest.FromJsonSingleTensor[columnar]": Response(
        {"int_tensor": INT_2x3x2},
        COLUMNAR,
        '{"outputs": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]]}',
    ),
    "JsontensorTest.FromJsonSingleScalarTensor[row]": Response(
        {"int_tensor": np.array([1, 2, 3, 4, 5], np.int32)}, ROW, '{"predictions": [1, 2, 3, 4, 5]}'
    ),
    "JsontensorTest.FromJsonSingleScalarTensor[columnar]": Response(
        {"int_tensor": np.array([1, 2, 3, 4, 5], np.int32)}, COLUMNAR, '{"outputs": [1, 2, 3, 4, 5]}'
    ),
    "JsontensorTest.FromJsonSingleBytesTensor": Response(
        {"str_tensor_bytes": BYTES_2x2},
        ROW,
        """{"predictions": [[{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
                            [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]]}""",
    ),
    "JsontensorTest.FromJsonSingleFloatTensorSixDigitPrecision": Response(
        {"float_tensor": np.array([[9000000, 999999, 0.50000], [0.0003, 0.00003, 555557.5]], np.float32)},
        ROW,
        '{"predictions": [[9e+06, 999999.0, 0.5], [0.0003, 3e-05, 555557.5]]}',
    ),
    "JsontensorTest.FromJsonSingleFloatTensorNonFinite": Response(
        {"float_tensor": np.array([[NAN, INF], [3, -INF]], np.float32)},
        ROW,
        '{"predictions": [[NaN, Infinity], [3.0, -Infinity]]}',
    ),
    "JsontensorTest.FromJsonSingleTensorErrors[empty_tensor_map]": Response(
        {}, ROW, error="empty tensor map"
    ),
    # The C++ proto has shape [2] and one complex value (scomplex_val 1.0, 2.0); the value is not reached.
    "JsontensorTest.FromJsonSingleTensorErrors[complex64]": Response(
        {"tensor": np.array([1 + 2j, 1 + 2j], np.complex64)}, ROW, error="tensor type: complex64"
    ),
    "JsontensorTest.FromJsonSingleTensorErrors[no_shape]": Response(
        {"tensor": np.array(1, np.int32)}, ROW, error="no shape information"
    ),
    "JsontensorTest.FromJsonMultipleNamedTensors[row]": Response(
        MULTIPLE_NAMED,
        ROW,
        """{"predictions": [
             {"double_scalar_tensor": 8.0, "float_tensor": [1.0], "int_tensor": [[1, 2], [3, 4], [5, 6]],
              "str_tensor": ["foo", "bar"], "str_tensor_bytes": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}]},
             {"double_scalar_tensor": 9.0, "float_tensor": [2.0], "int_tensor": [[7, 8], [9, 0], [1, 2]],
              "str_tensor": ["baz", "bat"], "str_tensor_bytes": [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]}
           ]}""",
    ),
    "JsontensorTest.FromJsonMultipleNamedTensors[columnar]": Response(
        MULTIPLE_NAMED,
        COLUMNAR,
        """{"outputs": {
             "double_scalar_tensor": [8.0, 9.0],
             "float_tensor": [[1.0], [2.0]],
             "int_tensor": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]],
             "str_tensor": [["foo", "bar"], ["baz", "bat"]],
             "str_tensor_bytes": [[{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
                                  [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]]}}""",
    ),
    "JsontensorTest.FromJsonMultipleNamedTensorsErrors": Response(
        {
            "int_tensor": np.arange(1, 7, dtype=np.int32).reshape(2, 3),
            "str_tensor": strings([["foo", "bar", "baz"]]),
        },
        ROW,
        error="inconsistent batch size",
    ),
    "JsontensorTest.FromJsonSingleZeroBatchTensor": Response(
        {"int_tensor": np.zeros((0, 2), np.int32)}, ROW, '{"predictions": []}'
    ),
    "JsontensorTest.FromJsonMultipleZeroBatchTensors": Response(
        {"str_tensor": np.empty((0, 1, 2), object), "float_tensor": np.zeros((0, 3, 4), np.float32)},
        ROW,
        '{"predictions": []}',
    ),
    "JsontensorTest.FromJsonMultipleZeroBatchTensorsErrors": Response(
        {"int_tensor": np.zeros((0, 2), np.int32), "str_tensor": strings([["foo", "bar"]])},
        ROW,
        error="inconsistent batch size",
    ),
}

_NAN_KEY = object()  # what every NaN becomes in `_comparable`, so that NaN == NaN


def _comparable(value):
    """A parsed JSON value with NaN made comparable; numbers compare by value (3 == 3.0), like rapidjson."""
    if isinstance(value, dict):
        return {key: _comparable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_comparable(item) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return _NAN_KEY
    return value


def assert_same_json(actual: bytes | str, expected: str) -> None:
    # Python's json reads NaN/Infinity/-Infinity (rapidjson's kParseNanAndInfFlag) and nothing else extra.
    assert _comparable(json.loads(actual)) == _comparable(json.loads(expected)), actual


@pytest.mark.parametrize("case", [pytest.param(c, id=i) for i, c in RESPONSE_CASES.items()])
def test_make_json_from_tensors(case: Response):
    if case.error is not None:
        with pytest.raises(ServingError) as raised:
            rest_json.response_body(case.outputs, case.fmt)
        assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert case.error in raised.value.message
        return
    assert_same_json(rest_json.response_body(case.outputs, case.fmt), case.json)


def test_non_finite_outputs_are_tokens_not_strings_or_null():
    # FromJsonSingleFloatTensorNonFinite compares "all values as strings": check the raw text too, in every
    # layout (one output, several per row, a 0-d row), next to a string output that reads "null".
    scores = np.array([-INF, NAN, 0.1], np.float32)
    assert rest_json.response_body({"s": scores}, COLUMNAR) == b'{"outputs":[-Infinity,NaN,0.1]}'
    assert rest_json.response_body({"s": scores}, ROW) == b'{"predictions":[-Infinity,NaN,0.1]}'
    rows = {"s": scores, "m": np.array([[1, INF], [2, 3], [NAN, 4]], np.float64), "w": strings(["null"] * 3)}
    assert rest_json.response_body(rows, ROW) == (
        b'{"predictions":[{"m":[1.0,Infinity],"s":-Infinity,"w":"null"},'
        b'{"m":[2.0,3.0],"s":NaN,"w":"null"},{"m":[NaN,4.0],"s":0.1,"w":"null"}]}'
    )


def test_lists_nested_deeper_than_a_tensor_can_be_are_a_bad_request():
    # orjson stops at 1024 levels; Python's json, which reads the NaN requests, goes deeper.
    for depth in (65, 5000):
        case = Request('{"instances": ' + "[" * depth + "1" + "]" * depth + "}", SINGLE_INT)
        with pytest.raises(ServingError) as raised:
            _fill_predict_request(case)
        assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT


# ------------------------------------------------------------------------------------ MakeJsonFromStatus
STATUS_CASES = {
    "MakeJsonFromTensors.StatusError[double_quotes]": ('Bad key: "key"', '{ "error": "Bad key: \\"key\\"" }'),
    "MakeJsonFromTensors.StatusError[single_quotes]": ("Bad key: 'key'", '{ "error": "Bad key: \'key\'" }'),
}


@pytest.mark.parametrize(("message", "expected"), [pytest.param(*c, id=i) for i, c in STATUS_CASES.items()])
def test_make_json_from_status(message: str, expected: str):
    assert_same_json(error_response(message, 400).body, expected)


# ------------------------------------------------------------------------------------ HttpRestApiHandlerTest
MODEL = "saved_model_half_plus_two_2_versions"
VERSION, LABEL = 123, "Version_Label"
PREDICT = f"/v1/models/{MODEL}:predict"


class HalfPlusTwo(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="x")])
    def predict(self, x):
        return {"y": 0.5 * x + 2.0}


@dataclass
class Http:
    path: str
    body: str
    status: int  # the HTTP status of the canonical code the C++ test asserts (OK 200, NOT_FOUND 404, ...)
    json: str | None = None  # expected document, or
    error: str | None = None  # a substring of {"error": ...}


HTTP_CASES = {
    # The C++ asserts only NOT_FOUND; the messages are TF Serving's ServerCore ones.
    "HttpRestApiHandlerTest.PredictModelNameVersionErrors[unknown_model]": Http(
        "/v1/models/foo:predict",
        '{ "instances": [1] }',
        404,
        error="Servable not found for request: Latest(foo)",
    ),
    "HttpRestApiHandlerTest.PredictModelNameVersionErrors[unknown_model_version]": Http(
        "/v1/models/foo/versions/50:predict",
        '{ "instances": [1] }',
        404,
        error="Servable not found for request: Specific(foo, 50)",
    ),
    "HttpRestApiHandlerTest.PredictModelNameVersionErrors[name_with_99]": Http(
        f"/v1/models/{MODEL}99:predict",
        '{ "instances": [1] }',
        404,
        error=f"Servable not found for request: Latest({MODEL}99)",
    ),
    "HttpRestApiHandlerTest.PredictRequestErrors[empty]": Http(
        PREDICT, "", 400, error="JSON Parse error: The document is empty"
    ),
    "HttpRestApiHandlerTest.PredictRequestErrors[bad_json]": Http(
        PREDICT, "instances = [1, 2]", 400, error="JSON Parse error: Invalid value"
    ),
    "HttpRestApiHandlerTest.PredictRequestErrors[type]": Http(
        PREDICT, '{ "instances": ["x", "y"] }', 400, error="not of expected type: float"
    ),
    "HttpRestApiHandlerTest.PredictRequestErrors[unknown_label]": Http(
        f"/v1/models/{MODEL}/labels/Version_Nonexistent:predict",
        '{ "instances": ["x", "y"] }',
        400,
        error="Unrecognized servable version label",
    ),
    "HttpRestApiHandlerTest.PredictRequestErrors[signature_name_not_string]": Http(
        PREDICT, '{ "signature_name": 100 }', 400, error="'signature_name' key must be a string value."
    ),
    "HttpRestApiHandlerTest.Predict[latest]": Http(
        PREDICT, '{"instances": [[1.0, 2.0], [3.0, 4.0]]}', 200, '{ "predictions": [[2.5, 3.0], [3.5, 4.0]] }'
    ),
    "HttpRestApiHandlerTest.Predict[version]": Http(
        f"/v1/models/{MODEL}/versions/{VERSION}:predict",
        '{"instances": [1.0, 2.0]}',
        200,
        '{ "predictions": [2.5, 3.0] }',
    ),
    "HttpRestApiHandlerTest.Predict[label]": Http(
        f"/v1/models/{MODEL}/labels/{LABEL}:predict",
        '{"instances": [1.0, 2.0]}',
        200,
        '{ "predictions": [2.5, 3.0] }',
    ),
    "HttpRestApiHandlerTest.Predict[signature_name]": Http(
        f"/v1/models/{MODEL}/versions/{VERSION}:predict",
        '{"signature_name": "serving_default", "instances": [3.0, 4.0]}',
        200,
        '{ "predictions": [3.5, 4.0] }',
    ),
    "HttpRestApiHandlerTest.Predict[columnar]": Http(
        f"/v1/models/{MODEL}/versions/{VERSION}:predict",
        '{"signature_name": "serving_default", "inputs": [3.0, 4.0]}',
        200,
        '{ "outputs": [3.5, 4.0] }',
    ),
}


@pytest.fixture(scope="module")
def half_plus_two(tmp_path_factory):
    base = tmp_path_factory.mktemp("half_plus_two")
    module = HalfPlusTwo()
    tf.saved_model.save(
        module,
        str(base / str(VERSION)),
        signatures={"serving_default": module.predict.get_concrete_function()},
    )
    with running_server(str(base), model_name=MODEL, version_labels={LABEL: VERSION}) as server:
        with requests.Session() as session:
            yield session, f"http://127.0.0.1:{server.rest_port}"


@pytest.mark.parametrize("case", [pytest.param(c, id=i) for i, c in HTTP_CASES.items()])
def test_http_rest_api_handler_predict(half_plus_two, case: Http):
    session, base = half_plus_two
    response = session.post(base + case.path, data=case.body.encode(), timeout=10)
    assert response.status_code == case.status, response.text
    assert response.headers["Content-Type"] == "application/json"
    if case.json is not None:
        assert_same_json(response.content, case.json)
    else:
        assert case.error in response.json()["error"]


def test_python_json_dumps_clients_get_non_finite_values_both_ways(half_plus_two):
    session, base = half_plus_two
    body = json.dumps({"instances": [NAN, -INF, 1.0]})  # what requests' json= writes: NaN, -Infinity
    response = session.post(base + PREDICT, data=body, timeout=10)
    assert response.status_code == 200, response.text
    assert response.content == b'{"predictions":[NaN,-Infinity,2.5]}'


def test_lone_surrogates_are_a_bad_request():
    # orjson refuses "\ud800", Python's json (the NaN fallback) reads it; it must not reach a UTF-8 encoder.
    for body in ('{"instances": ["\\ud800"]}', '{"instances": [NaN], "x": "\\udc00"}'):
        with pytest.raises(ServingError) as raised:
            rest_json.parse_request(body.encode())
        assert raised.value.message == "JSON Parse error: The surrogate pair in string is invalid."
