"""Server settings, with TF Serving's defaults where it has one (ports, poll interval).

Imports nothing heavy: the pipeline, clients and tools read MODEL_NAME from here, and
`python -m serving.server` checks its flags before TensorFlow is loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from trainer import features

GRPC_PORT = 8500  # TF Serving's --port
REST_PORT = 8501  # TF Serving's --rest_api_port
DEFAULT_HOST = "127.0.0.1"
DEFAULT_GRPC_TARGET = f"{DEFAULT_HOST}:{GRPC_PORT}"  # the clients' and the service's model server
DEFAULT_REST_URL = f"http://{DEFAULT_HOST}:{REST_PORT}"
DEFAULT_TIMEOUT_S = 5.0  # a client's wait for one answer of the model server (REST, gRPC, the service's)
# The served model's name: the pipeline pushes to <run>/serving/MODEL_NAME/<version>/.
MODEL_NAME = "tailtower"
MAX_PORT = 65535
# A local run folder (`make demo` writes it, `make serve` and `make service` read it) and where its pushed
# models live in it: <run>/serving/MODEL_NAME/<version>/.
DEFAULT_OUTPUT = "demo-run"
SERVING_DIRNAME = "serving"
DEFAULT_MODEL_BASE_PATH = os.path.join(DEFAULT_OUTPUT, SERVING_DIRNAME, MODEL_NAME)


@dataclass
class ServerConfig:
    """Everything `serving.server.ModelServer` needs.

    Ports 0 pick free ports (tests). `max_k` bounds a scalar integer input named `k_input` in any signature;
    `version_labels` maps label → version, as TF Serving's model config `version_labels` does.
    """

    model_base_path: str = DEFAULT_MODEL_BASE_PATH
    model_name: str = MODEL_NAME
    host: str = DEFAULT_HOST
    grpc_port: int = GRPC_PORT
    rest_port: int = REST_PORT
    poll_interval_s: float = 1.0  # TF Serving's --file_system_poll_wait_seconds default
    max_body_bytes: int = 1 << 20
    max_k: int = 1000
    k_input: str = features.K
    workers: int = 8
    warmup: bool = True
    warmup_runs: int = 2
    version_labels: dict[str, int] = field(default_factory=dict)
    access_log: bool = True

    def __post_init__(self) -> None:
        checks = {
            "model_name must not be empty": bool(self.model_name),
            "model_base_path must not be empty": bool(self.model_base_path),
            "k_input must not be empty": bool(self.k_input),
            f"grpc_port must be in [0, {MAX_PORT}] (0 = a free port)": 0 <= self.grpc_port <= MAX_PORT,
            f"rest_port must be in [0, {MAX_PORT}] (0 = a free port)": 0 <= self.rest_port <= MAX_PORT,
            "grpc_port and rest_port must differ": self.grpc_port != self.rest_port or self.grpc_port == 0,
            "poll_interval_s must be positive": self.poll_interval_s > 0,
            "max_body_bytes must be positive": self.max_body_bytes > 0,
            "max_k must be positive": self.max_k > 0,
            "workers must be positive": self.workers > 0,
            "warmup_runs must be >= 0": self.warmup_runs >= 0,
            "version_labels must map labels to versions >= 0": all(
                label and isinstance(version, int) and version >= 0
                for label, version in self.version_labels.items()
            ),
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"ServerConfig: {'; '.join(failed)} (got {self})")
