"""`recommend` over TF Serving's gRPC API (works unchanged against tensorflow_model_server).

  client = GrpcClient("127.0.0.1:8500", "tailtower", timeout_s=5.0)
  result = client.recommend(["u001"], [["i003", "i017"]], k=10, mmr_lambda=0.2)
  result.outputs["item_ids"], result.version

Input dtypes come from GetModelMetadata (once per signature), so knobs are sent with the dtype the signature
declares (TF Serving does not cast: an int64 `k` for an int32 input is an error).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import grpc  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import tensors  # noqa: E402
from serving.recommend_request import Recommendations, recommend_inputs  # noqa: E402
from serving.rest_client import ServingClientError  # noqa: E402
from trainer import features  # noqa: E402

DEFAULT_TARGET = "127.0.0.1:8500"


class GrpcClient:
    def __init__(self, target: str = DEFAULT_TARGET, model: str = "tailtower", timeout_s: float = 5.0):
        self.model = model
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(target)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._dtypes: dict[str, dict[str, tf.DType]] = {}

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout_s)
        except grpc.RpcError as e:
            raise ServingClientError(e.code().name, e.details()) from e

    def metadata(self) -> get_model_metadata_pb2.SignatureDefMap:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = self.model
        response = self._call(self._predictions.GetModelMetadata, request)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        return signatures

    def input_dtypes(self, signature: str) -> dict[str, tf.DType]:
        if signature not in self._dtypes:
            signature_def = self.metadata().signature_def[signature]
            self._dtypes[signature] = {
                name: tf.dtypes.as_dtype(info.dtype) for name, info in signature_def.inputs.items()
            }
        return self._dtypes[signature]

    def scalar_inputs(self, signature: str) -> list[str]:
        """Names of the signature's rank-0 inputs (k and the knobs), from the model metadata."""
        inputs = self.metadata().signature_def[signature].inputs
        return sorted(name for name, info in inputs.items() if not info.tensor_shape.dim)

    def predict(
        self, inputs: dict, signature: str, version: int | None = None
    ) -> predict_pb2.PredictResponse:
        dtypes = self.input_dtypes(signature)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model
        request.model_spec.signature_name = signature
        if version is not None:
            request.model_spec.version.value = version
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tensors.to_proto(value, dtype=dtypes.get(name)))
        return self._call(self._predictions.Predict, request)

    def recommend(
        self,
        users: Sequence[str],
        histories: Sequence[Sequence[str]],
        k: int,
        version: int | None = None,
        **knobs: float | int | str,
    ) -> Recommendations:
        response = self.predict(
            recommend_inputs(users, histories, k, knobs), features.RECOMMEND_SIGNATURE, version
        )
        outputs = {name: tensors.to_ndarray(proto) for name, proto in response.outputs.items()}
        return Recommendations(outputs, version=response.model_spec.version.value)

    def status(self) -> get_model_status_pb2.GetModelStatusResponse:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.model
        return self._call(self._models.GetModelStatus, request)

    def close(self) -> None:
        self._channel.close()
