"""`recommend` over TF Serving's gRPC API (works unchanged against tensorflow_model_server).

  client = GrpcClient("127.0.0.1:8500", "tailtower", timeout_s=5.0)
  result = client.recommend(["u001"], [["i003", "i017"]], k=10, mmr_lambda=0.2, xquad_lambda=0.0)
  result.outputs["item_ids"], result.version

Input dtypes come from GetModelMetadata (once per signature), so knobs are sent with the dtype the signature
declares (TF Serving does not cast: an int64 `k` for an int32 input is an error). One channel per client;
calls may be made from several threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import tensors
from serving.client_error import ServingClientError
from serving.config import MODEL_NAME
from serving.recommend_request import Knob, Recommendations, recommend_inputs, typed_inputs
from trainer import features

DEFAULT_TARGET = "127.0.0.1:8500"


class GrpcClient:
    def __init__(self, target: str = DEFAULT_TARGET, model: str = MODEL_NAME, timeout_s: float = 5.0):
        self.model = model
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(target)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._dtypes: dict[str, dict[str, np.dtype]] = {}

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

    def input_dtypes(self, signature: str) -> dict[str, np.dtype]:
        """{input name: numpy dtype} of the signature (object = DT_STRING), read once from the metadata."""
        if signature not in self._dtypes:
            signature_def = self.metadata().signature_def[signature]
            self._dtypes[signature] = {
                name: np.dtype(tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)
                for name, info in signature_def.inputs.items()
            }
        return self._dtypes[signature]

    def scalar_inputs(self, signature: str) -> list[str]:
        """Names of the signature's rank-0 inputs (k and the knobs), from the model metadata."""
        inputs = self.metadata().signature_def[signature].inputs
        return sorted(name for name, info in inputs.items() if not info.tensor_shape.dim)

    def predict_request(
        self, inputs: Mapping[str, object], signature: str, version: int | None = None
    ) -> predict_pb2.PredictRequest:
        """The PredictRequest of `inputs`, typed as the signature declares them."""
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model
        request.model_spec.signature_name = signature
        if version is not None:
            request.model_spec.version.value = version
        for name, array in typed_inputs(inputs, self.input_dtypes(signature)).items():
            request.inputs[name].CopyFrom(tensors.to_proto(array))
        return request

    def predict(
        self, inputs: Mapping[str, object], signature: str, version: int | None = None
    ) -> predict_pb2.PredictResponse:
        return self._call(self._predictions.Predict, self.predict_request(inputs, signature, version))

    def recommend(
        self,
        users: Sequence[str],
        histories: Sequence[Sequence[str]],
        k: int,
        version: int | None = None,
        **knobs: Knob,
    ) -> Recommendations:
        inputs = recommend_inputs(users, histories, k, knobs)
        response = self.predict(inputs, features.RECOMMEND_SIGNATURE, version)
        outputs = {name: tensors.to_ndarray(proto) for name, proto in response.outputs.items()}
        return Recommendations(outputs, version=response.model_spec.version.value)

    def status(self) -> get_model_status_pb2.GetModelStatusResponse:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.model
        return self._call(self._models.GetModelStatus, request)

    def close(self) -> None:
        self._channel.close()
