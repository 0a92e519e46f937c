"""`recommend` on a SavedModel loaded in this process, with the interface of RestClient and GrpcClient.

  client = LocalClient("demo-run/serving/tailtower/3")
  from serving.recommend_request import knob_names, with_knobs_off
  knobs = with_knobs_off({"mmr_lambda": 0.2}, knob_names(client.scalar_inputs("recommend")))  # the rest 0
  result = client.recommend(["u001"], [["i003", "i017"]], k=10, **knobs)
  result.rows(0)  # [{"item_ids": ..., "scores": ..., "is_tail": ...}, ...]

Input dtypes come from the loaded signature (`structured_input_signature`), as GrpcClient reads them from
GetModelMetadata. Errors are raised as `ServingClientError` with the canonical code name the model server
would answer ("INVALID_ARGUMENT"), so callers handle all three clients alike. Calls may be made from several
threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import error_codes_pb2

from serving.client_error import ServingClientError
from serving.recommend_request import Knob, Recommendations, filter_names, recommend_inputs, typed_inputs
from trainer import features

try:  # registers the TF Text ops the transform graph uses, as TF Serving links them into its binary
    import tensorflow_text  # noqa: F401
except ImportError:  # pragma: no cover - a model without TF Text ops still loads
    pass


class LocalClient:
    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self.loaded = tf.saved_model.load(model_dir)  # public: callers may read the model's other objects
        self._specs = {
            name: function.structured_input_signature[1] for name, function in self.loaded.signatures.items()
        }

    def _signature(self, signature: str):
        if signature not in self._specs:
            raise ServingClientError(
                "INVALID_ARGUMENT", f"no signature {signature!r}; the model has {sorted(self._specs)}"
            )
        return self.loaded.signatures[signature]

    def input_dtypes(self, signature: str) -> dict[str, np.dtype]:
        """{input name: numpy dtype} of the signature (object = DT_STRING)."""
        self._signature(signature)
        return {name: np.dtype(spec.dtype.as_numpy_dtype) for name, spec in self._specs[signature].items()}

    def scalar_inputs(self, signature: str) -> list[str]:
        """Names of the signature's rank-0 inputs (k and the knobs)."""
        self._signature(signature)
        return sorted(name for name, spec in self._specs[signature].items() if spec.shape.rank == 0)

    def predict(self, inputs: Mapping[str, object], signature: str) -> dict[str, np.ndarray]:
        """Runs the signature on `inputs` typed as it declares them; numpy outputs."""
        function = self._signature(signature)
        try:
            outputs = function(**typed_inputs(inputs, self.input_dtypes(signature)))
        except tf.errors.OpError as e:
            raise ServingClientError(error_codes_pb2.Code.Name(e.error_code), e.message) from e
        except (TypeError, ValueError) as e:  # a missing or unknown input, a value of the wrong type
            raise ServingClientError("INVALID_ARGUMENT", str(e)) from e
        return {name: value.numpy() for name, value in outputs.items()}

    def recommend(
        self,
        users: Sequence[str],
        histories: Sequence[Sequence[str]],
        k: int,
        version: int | None = None,
        **knobs: Knob,
    ) -> Recommendations:
        """`version` must be None: this client has the one SavedModel it loaded."""
        if version is not None:
            raise ValueError(f"LocalClient serves only {self.model_dir}; got version={version}")
        declared = filter_names(self._specs.get(features.RECOMMEND_SIGNATURE, {}))
        inputs = recommend_inputs(users, histories, k, knobs, declared=declared)
        return Recommendations(self.predict(inputs, features.RECOMMEND_SIGNATURE), version=None)

    def close(self) -> None:
        """Drops the loaded model (its memory is freed once nothing else refers to it)."""
        self.loaded = None
        self._specs = {}
