"""Prometheus metrics of one server: requests by route and status, latency, the served model version.

Each server owns a registry (several servers can live in one test process); /metrics exposes it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Sub-millisecond buckets: a recommend call on the demo model takes ~1 ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The counters and histograms both front ends and the model manager update."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "tailtower_serving_requests",
            "Requests by protocol, route and status code.",
            ["protocol", "route", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tailtower_serving_request_latency_seconds",
            "Request latency in the server.",
            ["protocol", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_version = Gauge(
            "tailtower_serving_model_version",
            "Version being served (0 = none).",
            ["model"],
            registry=self.registry,
        )
        self.loads = Counter(
            "tailtower_serving_model_loads",
            "Version loads by result (ok / error).",
            ["model", "result"],
            registry=self.registry,
        )

    def observe(self, protocol: str, route: str, code: str | int, seconds: float) -> None:
        self.requests.labels(protocol, route, str(code)).inc()
        self.latency.labels(protocol, route).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
