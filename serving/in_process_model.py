"""The model server inside the service's own process: `make service MODEL_ENDPOINT=in-process`.

One process for a laptop or a test instead of `make serve` + `make service`. It is the same model server
(serving/model_manager.py's version policy and hot reload, serving/grpc_service.py's TF Serving gRPC API)
bound to a free loopback port, and the service talks to it with the same GrpcClient it uses for real TF
Serving: the request path is the production one, only the process boundary is gone.
"""

from __future__ import annotations

from serving.config import DEFAULT_HOST, ServerConfig
from serving.grpc_client import GrpcClient
from serving.grpc_service import build_server
from serving.metrics import Metrics
from serving.model_manager import ModelManager

STOP_GRACE_S = 5.0


class InProcessModelClient(GrpcClient):
    """A GrpcClient whose model server it started itself (and stops on close)."""

    def __init__(self, model_base_path: str, model_name: str, timeout_s: float):
        config = ServerConfig(
            model_base_path=model_base_path,
            model_name=model_name,
            host=DEFAULT_HOST,
            grpc_port=0,
            rest_port=0,
            access_log=False,  # the service logs its own requests
        )
        metrics = Metrics()  # not exposed: the service's /metrics counts its own requests
        self.manager = ModelManager(config, metrics)
        self.manager.start()
        self._server, self.port = build_server(self.manager, metrics, config)
        self._server.start()
        super().__init__(f"{DEFAULT_HOST}:{self.port}", model_name, timeout_s)

    def close(self) -> None:
        super().close()
        self._server.stop(STOP_GRACE_S).wait()
        self.manager.stop()
