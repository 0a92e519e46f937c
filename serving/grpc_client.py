"""`recommend` over TF Serving's gRPC API (works unchanged against tensorflow_model_server).

  client = GrpcClient("127.0.0.1:8500", "tailtower", timeout_s=5.0)
  from serving.recommend_request import knob_names, with_knobs_off
  knobs = with_knobs_off({"mmr_lambda": 0.2}, knob_names(client.scalar_inputs("recommend")))  # the rest 0
  result = client.recommend(["u001"], [["i003", "i017"]], k=10, **knobs)
  result.outputs["item_ids"], result.version

Input dtypes come from GetModelMetadata, so knobs are sent with the dtype the signature declares (TF Serving
does not cast: an int64 `k` for an int32 input is an error). They are kept per (signature, requested version)
with the model version the metadata described, and read again when they may be stale: another version
answered, a request names an input they lack (a new version's knob), a request is refused as
INVALID_ARGUMENT (then resent once if the metadata changed), and on every `metadata()` / `scalar_inputs()`
call (which read the metadata anyway). One channel per client; calls may be made from several threads.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

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
from serving.config import DEFAULT_GRPC_TARGET, DEFAULT_TIMEOUT_S, MODEL_NAME
from serving.recommend_request import Knob, Recommendations, filter_names, recommend_inputs, typed_inputs
from trainer import features

Dtypes = dict[str, np.dtype]  # {input name: numpy dtype} of one signature (object = DT_STRING)


class GrpcClient:
    def __init__(
        self, target: str = DEFAULT_GRPC_TARGET, model: str = MODEL_NAME, timeout_s: float = DEFAULT_TIMEOUT_S
    ):
        self.model = model
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(target)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        # (signature, requested version or None = latest) → (the version the metadata described, dtypes)
        self._dtypes: dict[tuple[str, int | None], tuple[int, Dtypes]] = {}

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout_s)
        except grpc.RpcError as e:
            raise ServingClientError(e.code().name, e.details()) from e

    def metadata(self, version: int | None = None) -> get_model_metadata_pb2.SignatureDefMap:
        """The signatures of `version` (None: the latest); refreshes the kept input dtypes."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = self.model
        if version is not None:
            request.model_spec.version.value = version
        response = self._call(self._predictions.GetModelMetadata, request)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        described = response.model_spec.version.value
        for name, signature_def in signatures.signature_def.items():
            dtypes = {
                input_name: np.dtype(tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)
                for input_name, info in signature_def.inputs.items()
            }
            self._dtypes[name, version] = (described, dtypes)
        return signatures

    def input_dtypes(self, signature: str, version: int | None = None, names: Collection[str] = ()) -> Dtypes:
        """{input name: numpy dtype} of the signature, read again when `names` has one it lacks."""
        kept = self._dtypes.get((signature, version))
        if kept is None or not set(names) <= kept[1].keys():
            self.metadata(version)
            kept = self._dtypes.get((signature, version), (0, {}))  # unknown signature: the server says so
        return kept[1]

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
        dtypes = self.input_dtypes(signature, version, inputs.keys())
        for name, array in typed_inputs(inputs, dtypes).items():
            request.inputs[name].CopyFrom(tensors.to_proto(array))
        return request

    def predict(
        self, inputs: Mapping[str, object], signature: str, version: int | None = None
    ) -> predict_pb2.PredictResponse:
        try:
            response = self._call(self._predictions.Predict, self.predict_request(inputs, signature, version))
        except ServingClientError as e:
            # A new version may declare another dtype for an input: retry once if the metadata moved on.
            if e.status != "INVALID_ARGUMENT" or not self._stale(signature, version):
                raise
            response = self._call(self._predictions.Predict, self.predict_request(inputs, signature, version))
        kept = self._dtypes.get((signature, version))
        if kept is not None and kept[0] != response.model_spec.version.value:
            self._dtypes.pop((signature, version), None)  # another version answered: read its dtypes next
        return response

    def _stale(self, signature: str, version: int | None) -> bool:
        """Whether the kept dtypes described another version than the server's metadata does now."""
        kept = self._dtypes.get((signature, version))
        self.metadata(version)
        return kept != self._dtypes.get((signature, version))

    def recommend(
        self,
        users: Sequence[str],
        histories: Sequence[Sequence[str]],
        k: int,
        version: int | None = None,
        **knobs: Knob,
    ) -> Recommendations:
        # The filters the model declares (none before they existed); a version that adds them is seen at
        # the metadata refresh its first refusal triggers (`predict`), so one request can fail at that swap.
        declared = filter_names(self.input_dtypes(features.RECOMMEND_SIGNATURE, version))
        inputs = recommend_inputs(users, histories, k, knobs, declared=declared)
        response = self.predict(inputs, features.RECOMMEND_SIGNATURE, version)
        outputs = {name: tensors.to_ndarray(proto) for name, proto in response.outputs.items()}
        return Recommendations(outputs, version=response.model_spec.version.value)

    def status(self) -> get_model_status_pb2.GetModelStatusResponse:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.model
        return self._call(self._models.GetModelStatus, request)

    def close(self) -> None:
        self._channel.close()
