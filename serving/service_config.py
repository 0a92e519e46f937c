"""Settings of the recommendation service (serving/service.py), checked when built, and its command line.

Every field is a flag of the same name (`--max_k 50`); defaults are the fields'. A bad value stops the
parse with an error naming the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
import urllib.parse
from dataclasses import dataclass

from serving.config import (
    DEFAULT_GRPC_TARGET,
    DEFAULT_HOST,
    DEFAULT_OUTPUT,
    DEFAULT_TIMEOUT_S,
    MODEL_NAME,
    SERVING_DIRNAME,
)
from serving.log_fields import (
    HOURLY_SPANS,
    MAX_PENDING_RECORDS,
    SHOWN,
    SHOWN_IMPRESSIONS,
    SPAN_MODES,
)
from trainer import features

SERVICE_PORT = 8080
SERVICE_DIR = "service"  # <output>/service/: pseudonym key, history store, rules file
RULES_FILE = "rules.yaml"
LOGS_DIR = "logs"  # <output>/logs/: served and events spans
SQLITE, REDIS = "sqlite", "redis"
HISTORY_BACKENDS = (SQLITE, REDIS)
IN_PROCESS = "in-process"  # --model_endpoint: load the model in this process (serving/in_process_model.py)


class ConfigError(ValueError):
    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


@dataclass(frozen=True)
class ServiceConfig:
    host: str = DEFAULT_HOST
    port: int = SERVICE_PORT  # 0 picks a free port (tests)
    model_endpoint: str = DEFAULT_GRPC_TARGET  # TF Serving's gRPC API (host:port), or IN_PROCESS
    model_name: str = MODEL_NAME
    # where the versions' assets.extra/ catalog metadata is read; "" = <output>/serving/<model_name>
    model_base_path: str = ""
    output: str = DEFAULT_OUTPUT
    pseudonym_key_file: str = ""  # "" = $TAILTOWER_PSEUDONYM_KEY, else <output>/service/pseudonym.key
    max_body_bytes: int = 256 * 1024
    max_k: int = 100
    max_events: int = 500  # per POST /v1/events
    max_history: int = 200  # request-carried history items
    history_length: int = features.HISTORY_LENGTH  # stored items per user (the model reads this many)
    history_ttl_s: float = 30 * 86400.0
    history_backend: str = SQLITE  # sqlite: <output>/service/history.sqlite3; redis: at redis_url
    redis_url: str = "redis://127.0.0.1:6379/0"  # redis[s]://[user:password@]host:port/db or unix:///path
    model_timeout_s: float = DEFAULT_TIMEOUT_S
    ready_poll_s: float = 0.5
    max_pending_records: int = MAX_PENDING_RECORDS  # log queue bound (503 beyond)
    log_linger_s: float = 0.0  # group commit: extra wait for more appends before an fsync
    log_spans: str = HOURLY_SPANS  # or "manual": spans 1, 2, ... cut by POST /v1/logs/rotate
    log_wait_s: float = 30.0  # an events batch not confirmed durable by then answers 503, never 200
    workers: int = 16  # threads for model calls, history and log waits (they mostly block)
    # Business rules (serving/rules.py), re-read when the file changes; "" = <output>/service/rules.yaml. No
    # file, an empty file: no rules.
    rules_file: str = ""
    rules_pool: int = 50  # items asked of the model when rules are in force: the pool they act on
    exposure_window_s: float = 3600.0  # live exposure metrics (GET /v1/exposure, /metrics) over this window
    exposure_max_records: int = 100_000  # served lists (and events) kept for them at most
    exposure_shown: str = SHOWN_IMPRESSIONS  # displayed = impression events, or "served": every served slot

    def __post_init__(self):
        for name in (
            "max_body_bytes",
            "max_k",
            "max_events",
            "history_length",
            "max_pending_records",
            "exposure_max_records",
            "rules_pool",
        ):
            _check(name, getattr(self, name) >= 1, "must be >= 1")
        _check("workers", self.workers >= 1, "must be >= 1")
        for name in ("history_ttl_s", "model_timeout_s", "ready_poll_s", "log_wait_s", "exposure_window_s"):
            _check(name, getattr(self, name) > 0, "must be > 0")
        _check("max_history", self.max_history >= 0, "must be >= 0")
        _check("log_linger_s", self.log_linger_s >= 0, "must be >= 0")
        _check("port", 0 <= self.port <= 65535, "must be a port number (0-65535)")
        host, sep, port = self.model_endpoint.rpartition(":")
        endpoint_ok = self.model_endpoint == IN_PROCESS or bool(sep and host and port.isdigit())
        _check("model_endpoint", endpoint_ok, f"must be host:port or {IN_PROCESS}")
        _check("output", bool(self.output), "must not be empty")
        backends = list(HISTORY_BACKENDS)
        _check("history_backend", self.history_backend in backends, f"must be one of {backends}")
        _check("log_spans", self.log_spans in SPAN_MODES, f"must be one of {list(SPAN_MODES)}")
        _check("exposure_shown", self.exposure_shown in SHOWN, f"must be one of {list(SHOWN)}")
        _check("redis_url", _redis_url_ok(self.redis_url), "must be redis[s]://host:port/db or unix:///path")

    @property
    def service_dir(self) -> str:
        return os.path.join(self.output, SERVICE_DIR)

    @property
    def logs_dir(self) -> str:
        return os.path.join(self.output, LOGS_DIR)

    @property
    def rules_path(self) -> str:
        return self.rules_file or os.path.join(self.service_dir, RULES_FILE)

    @property
    def versions_path(self) -> str:
        """The model's version folders (SavedModel + assets.extra/ catalog metadata)."""
        return self.model_base_path or os.path.join(self.output, SERVING_DIRNAME, self.model_name)


def _redis_url_ok(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        return False
    if parts.scheme == "unix":
        return bool(parts.path)
    return parts.scheme in ("redis", "rediss") and bool(parts.hostname)


def _check(name: str, ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(name, message)


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One `--<field>` flag per field of the dataclass `cls`, typed and defaulted by the field."""
    defaults = cls()
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        parser.add_argument(f"--{item.name}", type=hints[item.name], default=getattr(defaults, item.name))


def parse_args(argv: list[str] | None = None, description: str = "") -> ServiceConfig:
    parser = argparse.ArgumentParser(description=description)
    add_dataclass_flags(parser, ServiceConfig)
    args = parser.parse_args(argv)
    try:
        return ServiceConfig(**vars(args))
    except ConfigError as e:
        parser.error(f"argument --{e.name}: {e.message} (got {getattr(args, e.name)!r})")
