"""`recommend` over TF Serving's REST API (works unchanged against tensorflow_model_server).

  client = RestClient("http://127.0.0.1:8501", "tailtower", timeout_s=5.0)
  from serving.recommend_request import knob_names, with_knobs_off
  knobs = with_knobs_off({"mmr_lambda": 0.2}, knob_names(client.scalar_inputs("recommend")))  # the rest 0
  result = client.recommend(["u001"], [["i003", "i017"]], k=10, **knobs)
  result.outputs["item_ids"]  # [[...10 ids...]]

Columnar ("inputs") format, since `k` and the re-ranking knobs are scalars; `signature_name` always sent.
JSON has no dtypes: the server types the values by the signature. The metadata is read once, for the item
filters `recommend` declares (a model exported before them has none). urllib3's
connection pool rather than `requests`: the same keep-alive connection, ~1 ms less per call (measured
against the local server), which `make bench-serve` would otherwise count as server latency.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import urllib3

from serving.client_error import ServingClientError
from serving.config import DEFAULT_REST_URL, DEFAULT_TIMEOUT_S, MODEL_NAME
from serving.recommend_request import Knob, Recommendations, filter_names, recommend_inputs
from trainer import features

_JSON = {"Content-Type": "application/json"}
_MAX_KEPT = 8


class RestClient:
    """Keep-alive connections: one per thread calling at the same time, up to `_MAX_KEPT`."""

    def __init__(
        self, url: str = DEFAULT_REST_URL, model: str = MODEL_NAME, timeout_s: float = DEFAULT_TIMEOUT_S
    ):
        self.url = url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self._prefix = urllib3.util.parse_url(self.url).path or ""  # a server behind a path, e.g. /serving
        # No retries, as `requests` by default: a failed predict is reported, not sent twice.
        self._pool = urllib3.connection_from_url(
            self.url, timeout=timeout_s, retries=urllib3.Retry(0, read=False), maxsize=_MAX_KEPT
        )
        self._declared_filters: tuple[str, ...] | None = None

    def _model_path(self, version: int | None) -> str:
        suffix = f"/versions/{version}" if version is not None else ""
        return f"{self._prefix}/v1/models/{self.model}{suffix}"

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        encoded = None if body is None else json.dumps(body).encode()
        try:
            response = self._pool.urlopen(method, path, body=encoded, headers=_JSON if body else None)
        except urllib3.exceptions.HTTPError as e:  # no answer: refused, timed out, dropped
            raise ServingClientError("UNAVAILABLE", f"{method} {self.url}{path}: {e}") from e
        text = response.data.decode(errors="replace")
        try:
            doc = json.loads(text)  # json, not orjson: TF Serving writes NaN and Infinity
        except ValueError:
            doc = {"error": text}
        if response.status != 200:
            raise ServingClientError(response.status, doc.get("error", text))
        return doc

    def predict(self, inputs: dict, signature: str, version: int | None = None) -> dict:
        body = {"signature_name": signature, "inputs": inputs}
        return self._call("POST", self._model_path(version) + ":predict", body)["outputs"]

    def recommend(
        self,
        users: Sequence[str],
        histories: Sequence[Sequence[str]],
        k: int,
        version: int | None = None,
        **knobs: Knob,
    ) -> Recommendations:
        inputs = recommend_inputs(users, histories, k, knobs, declared=self._filters())
        try:
            outputs = self.predict(inputs, features.RECOMMEND_SIGNATURE, version)
        except ServingClientError:
            self._declared_filters = None  # another version may declare other filters: read them again
            raise
        return Recommendations.from_outputs(outputs)

    def _filters(self) -> tuple[str, ...]:
        """The item filters `recommend` declares, from the model metadata (read once, again after an
        error): a model exported before the filters has none."""
        if self._declared_filters is None:
            signatures = self.metadata()["metadata"]["signature_def"]["signature_def"]
            self._declared_filters = filter_names(signatures[features.RECOMMEND_SIGNATURE]["inputs"])
        return self._declared_filters

    def status(self) -> dict:
        return self._call("GET", self._model_path(None))

    def metadata(self) -> dict:
        return self._call("GET", self._model_path(None) + "/metadata")

    def scalar_inputs(self, signature: str) -> list[str]:
        """Names of the signature's rank-0 inputs (k and the knobs), from the model metadata."""
        signatures = self.metadata()["metadata"]["signature_def"]["signature_def"]
        inputs = signatures[signature]["inputs"]
        return sorted(name for name, info in inputs.items() if not info["tensor_shape"].get("dim"))

    def close(self) -> None:
        self._pool.close()
