"""One loaded model version: its signatures, the SignatureDefs TF Serving reports, and validated calls.

Validation follows TF Serving's predict_util.cc (same checks, same messages where it has them): the signature
must exist, the request must name exactly the signature's inputs, each input must have the declared dtype,
and (our addition, since eager signatures check it anyway) a compatible shape. The `k` input of any
signature is bounded by `max_k`.

Example (every input of the signature, with its dtype; `serving.recommend_request` builds `recommend`'s):
  from serving.recommend_request import knob_names, recommend_inputs, typed_inputs, with_knobs_off
  servable = Servable.load("tailtower", 3, "demo-run/serving/tailtower/3", k_input="k", max_k=1000)
  infos = servable.input_infos("recommend")
  knobs = with_knobs_off({}, knob_names(name for name, info in infos.items() if info.shape == ()))
  dtypes = {name: info.dtype.as_numpy_dtype for name, info in infos.items()}
  out = servable.predict("recommend", typed_inputs(recommend_inputs(["u1"], [["i3"]], 5, knobs), dtypes))
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from serving import tensors
from serving.errors import ServingError, code_from_number, invalid_argument
from trainer import features

try:  # registers the TF Text ops the transform graph uses, as TF Serving links them into its binary
    import tensorflow_text  # noqa: F401
except ImportError:  # pragma: no cover - a model without TF Text ops still loads
    pass

logger = logging.getLogger(__name__)

DEFAULT_SIGNATURE = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
SERVE_TAG = tf.saved_model.SERVING
# TF Serving's warm-up location
WARMUP_FILE = os.path.join(features.ASSETS_EXTRA_DIR, "tf_serving_warmup_requests")


@dataclass(frozen=True)
class InputInfo:
    """A signature input: dtype and shape (None = unknown rank; a None dim = any size)."""

    name: str
    dtype: tf.DType
    shape: tuple[int | None, ...] | None

    def accepts_shape(self, shape: Sequence[int]) -> bool:
        if self.shape is None:
            return True
        return len(shape) == len(self.shape) and all(
            w is None or w == s for w, s in zip(self.shape, shape, strict=True)
        )

    def describe_shape(self) -> str:
        if self.shape is None:
            return "[?]"
        return "[" + ",".join("-1" if d is None else str(d) for d in self.shape) + "]"


def read_signature_defs(export_dir: str) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDefs of the `serve` MetaGraph, as TF Serving's GetModelMetadata returns them."""
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, tf.saved_model.SAVED_MODEL_FILENAME_PB), "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f"{export_dir} has no MetaGraph tagged {SERVE_TAG!r}")


def _input_info(name: str, tensor_info: meta_graph_pb2.TensorInfo) -> InputInfo:
    shape = tensor_info.tensor_shape
    dims = None if shape.unknown_rank else tuple(None if d.size < 0 else d.size for d in shape.dim)
    return InputInfo(name, tf.dtypes.as_dtype(tensor_info.dtype), dims)


def array_dtype(array: np.ndarray) -> tf.DType:
    """The TF dtype a numpy array feeds as (object/bytes/str arrays are DT_STRING)."""
    return tf.string if array.dtype.kind in "OSU" else tf.dtypes.as_dtype(array.dtype)


def _names(names) -> str:
    return ",".join(sorted(names))


class Servable:
    """A loaded SavedModel version. Thread-safe: TF signatures may be called concurrently."""

    def __init__(
        self, name: str, version: int, path: str, loaded, signature_defs: Mapping, k_input: str, max_k: int
    ):
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = dict(signature_defs)
        self._loaded = loaded
        self._functions = dict(loaded.signatures)
        self._inputs = {
            sig: {alias: _input_info(alias, info) for alias, info in sig_def.inputs.items()}
            for sig, sig_def in self.signature_defs.items()
        }
        self._k_input = k_input
        self._max_k = max_k

    @classmethod
    def load(cls, name: str, version: int, path: str, k_input: str, max_k: int) -> Servable:
        signature_defs = read_signature_defs(path)
        loaded = tf.saved_model.load(path, tags=[SERVE_TAG])
        return cls(name, version, path, loaded, signature_defs, k_input, max_k)

    # ------------------------------------------------------------------------------------ signatures
    def input_infos(self, signature_name: str) -> dict[str, InputInfo]:
        """The inputs of a signature ("" = serving_default); TF Serving's REST error when it is unknown."""
        signature_name = signature_name or DEFAULT_SIGNATURE
        if signature_name not in self._functions:
            raise invalid_argument(f'Serving signature name: "{signature_name}" not found in signature def')
        return self._inputs[signature_name]

    def _function(self, signature_name: str):
        function = self._functions.get(signature_name)
        if function is None:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,  # as predict_util.cc
                f'Serving signature key "{signature_name}" not found.',
            )
        return function

    # ------------------------------------------------------------------------------------ predict
    def predict(
        self, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()
    ) -> dict[str, np.ndarray]:
        """Validates `inputs` against the signature and runs it; returns numpy outputs (filtered)."""
        signature_name = signature_name or DEFAULT_SIGNATURE
        function = self._function(signature_name)
        self._check_inputs(self._inputs[signature_name], inputs)
        wanted = self._check_output_filter(signature_name, output_filter)
        try:
            outputs = function(**{alias: tf.constant(value) for alias, value in inputs.items()})
        except tf.errors.OpError as e:
            raise ServingError(code_from_number(e.error_code), e.message) from e
        except (TypeError, ValueError) as e:
            raise invalid_argument(str(e)) from e
        return {
            alias: tensor.numpy() for alias, tensor in outputs.items() if wanted is None or alias in wanted
        }

    def _check_inputs(self, infos: Mapping[str, InputInfo], inputs: Mapping[str, np.ndarray]) -> None:
        sent, expected = set(inputs), set(infos)
        if len(sent) != len(expected):
            raise invalid_argument(
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{_names(sent)}}}) != len({{{_names(expected)}}}). Sent extra: "
                f"{{{_names(sent - expected)}}}. Missing but required: {{{_names(expected - sent)}}}."
            )
        for alias, value in inputs.items():
            info = infos.get(alias)
            if info is None:
                raise invalid_argument(
                    f"input tensor alias not found in signature: {alias}. Inputs expected "
                    f"to be in the set {{{_names(expected)}}}."
                )
            given = array_dtype(value)
            if given != info.dtype:
                raise invalid_argument(
                    f"Expects arg '{alias}' to be {info.dtype.name} but {given.name} is provided"
                )
            if not info.accepts_shape(value.shape):
                raise invalid_argument(
                    f"input '{alias}' has shape {list(value.shape)} but the signature "
                    f"expects {info.describe_shape()} (-1 = any size)"
                )
        self._check_k(infos, inputs)

    def _check_k(self, infos: Mapping[str, InputInfo], inputs: Mapping[str, np.ndarray]) -> None:
        info = infos.get(self._k_input)
        if info is None or info.shape != () or not info.dtype.is_integer:
            return
        k = int(inputs[self._k_input])
        if not 1 <= k <= self._max_k:
            raise invalid_argument(f"{self._k_input} must be between 1 and {self._max_k}, got {k}")

    def _check_output_filter(self, signature_name: str, output_filter: Sequence[str]) -> set[str] | None:
        if not output_filter:
            return None
        outputs = self.signature_defs[signature_name].outputs
        for alias in output_filter:
            if alias not in outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected "
                    f"to be in the set {{{_names(outputs)}}}."
                )
        if len(set(output_filter)) != len(output_filter):
            raise invalid_argument(f"duplicate output tensor alias in {list(output_filter)}")
        return set(output_filter)

    # ------------------------------------------------------------------------------------ lifecycle
    def warm_up(self, runs: int) -> int:
        """Runs TF Serving's warm-up file if the version ships one (a failure fails the load), else `runs`
        calls of every signature on minimal inputs (failures only logged). Returns the calls made."""
        warmup_file = os.path.join(self.path, WARMUP_FILE)
        if os.path.exists(warmup_file):
            return self._replay_warmup_file(warmup_file)
        calls = 0
        for signature_name, infos in self._inputs.items():
            if signature_name not in self._functions:
                continue
            for _ in range(runs):
                try:
                    self.predict(signature_name, {a: self._dummy(info) for a, info in infos.items()})
                    calls += 1
                except ServingError as e:
                    logger.warning(
                        "warm-up of %s v%d %s failed: %s", self.name, self.version, signature_name, e.message
                    )
                    break
        return calls

    def _dummy(self, info: InputInfo) -> np.ndarray:
        shape = [1] if info.shape is None else [1 if d is None else d for d in info.shape]
        if info.name == self._k_input and info.dtype.is_integer:
            return np.full(shape, 1, info.dtype.as_numpy_dtype)
        if info.dtype == tf.string:
            return np.full(shape, b"", dtype=object)
        return np.zeros(shape, info.dtype.as_numpy_dtype)

    def _replay_warmup_file(self, path: str) -> int:
        calls = 0
        for record in tf.data.TFRecordDataset(path):
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if log.WhichOneof("log_type") != "predict_log":
                logger.warning(
                    "warm-up: skipping a %s record (only predict_log is replayed)", log.WhichOneof("log_type")
                )
                continue
            request = log.predict_log.request
            inputs = {alias: tensors.to_ndarray(proto) for alias, proto in request.inputs.items()}
            self.predict(request.model_spec.signature_name, inputs, list(request.output_filter))
            calls += 1
        return calls

    def unload(self) -> None:
        """Drops the references to the TF objects so that their memory can be freed."""
        self._functions = {}
        self._loaded = None
        gc.collect()
