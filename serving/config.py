"""Server settings, with TF Serving's defaults where it has one (ports, poll interval)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trainer import features

GRPC_PORT = 8500  # TF Serving's --port
REST_PORT = 8501  # TF Serving's --rest_api_port
DEFAULT_HOST = "127.0.0.1"
# pipeline.configs.MODEL_NAME, repeated because importing pipeline.configs pulls in TFX (~15 s); a test keeps
# the two equal.
MODEL_NAME = "tailtower"
DEFAULT_MODEL_BASE_PATH = f"demo-run/serving/{MODEL_NAME}"


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
