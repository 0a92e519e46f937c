"""TF Serving's gRPC API on the official stubs: PredictionService (Predict, GetModelMetadata) and
ModelService (GetModelStatus). Classify, Regress, MultiInference and HandleReloadConfigRequest are left to
the generated base classes, which answer UNIMPLEMENTED.

Tensors cross the wire as TensorProtos (serving.tensors: TensorFlow's converters, with a fast path for the
numeric and string arrays our signatures use); errors abort the call with TF Serving's code and message.
"""

from __future__ import annotations

import functools
import logging
import time
from concurrent import futures

import grpc
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import protos, tensors
from serving.config import ServerConfig
from serving.errors import ServingError, invalid_argument
from serving.metrics import Metrics
from serving.model_manager import ModelManager
from serving.servable import DEFAULT_SIGNATURE

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("serving.access")


def _spec(model_spec) -> tuple[str, int | None, str | None]:
    """(name, version, label) of a ModelSpec; a missing name is INVALID_ARGUMENT."""
    if not model_spec.name:
        raise invalid_argument("Missing ModelSpec")
    version = model_spec.version.value if model_spec.HasField("version") else None
    return model_spec.name, version, model_spec.version_label or None


def _rpc(route: str):
    """Counts, times and logs an RPC; turns ServingError (and bugs) into aborted calls."""

    def decorator(method):
        @functools.wraps(method)
        def wrapper(self, request, context):
            start, code = time.perf_counter(), grpc.StatusCode.OK
            try:
                return method(self, request, context)
            except ServingError as e:
                code = e.code
                context.abort(e.code, e.message)
            except Exception as e:  # a bug must still end the call with a status
                logger.exception("gRPC %s failed", route)
                code = grpc.StatusCode.INTERNAL
                context.abort(code, f"Internal error: {e}")
            finally:
                elapsed = time.perf_counter() - start
                self.metrics.observe("grpc", route, code.name, elapsed)
                if self.access_log:
                    access_logger.info("gRPC %s %s %.2fms", route, code.name, elapsed * 1e3)

        return wrapper

    return decorator


def _to_array(alias: str, proto):
    try:
        return tensors.to_ndarray(proto)
    except Exception as e:  # malformed TensorProto (content size vs shape, unknown dtype)
        raise invalid_argument(f"tensor parsing error: {alias}") from e


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager: ModelManager, metrics: Metrics, access_log: bool):
        self.manager, self.metrics, self.access_log = manager, metrics, access_log

    @_rpc("predict")
    def Predict(self, request, context):  # noqa: N802 - the generated servicer's method name
        name, version, label = _spec(request.model_spec)
        signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
        with self.manager.acquire(name, version, label) as servable:
            inputs = {alias: _to_array(alias, proto) for alias, proto in request.inputs.items()}
            outputs = servable.predict(signature, inputs, list(request.output_filter))
            response = predict_pb2.PredictResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = signature
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(tensors.to_proto(value))
        return response

    @_rpc("metadata")
    def GetModelMetadata(self, request, context):  # noqa: N802
        name, version, label = _spec(request.model_spec)
        if not request.metadata_field:
            raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
        unsupported = [f for f in request.metadata_field if f != protos.SIGNATURE_DEF_FIELD]
        if unsupported:
            raise invalid_argument(f"Metadata field {unsupported[0]} is not supported")
        with self.manager.acquire(name, version, label) as servable:
            return protos.metadata_response(servable)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager, metrics: Metrics, access_log: bool):
        self.manager, self.metrics, self.access_log = manager, metrics, access_log

    @_rpc("status")
    def GetModelStatus(self, request, context):  # noqa: N802
        name, version, label = _spec(request.model_spec)
        return protos.status_response(self.manager.statuses(name, version, label))


def build_server(manager: ModelManager, metrics: Metrics, config: ServerConfig) -> tuple[grpc.Server, int]:
    """A started-to-be gRPC server bound to config.host:config.grpc_port; returns it and the bound port."""
    options = [("grpc.max_receive_message_length", config.max_body_bytes), ("grpc.so_reuseport", 0)]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="grpc"), options=options
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(manager, metrics, config.access_log), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelService(manager, metrics, config.access_log), server
    )
    port = server.add_insecure_port(f"{config.host}:{config.grpc_port}")
    if port == 0:
        raise OSError(f"cannot bind gRPC to {config.host}:{config.grpc_port}")
    return server, port
