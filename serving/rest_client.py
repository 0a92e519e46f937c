"""`recommend` over TF Serving's REST API (works unchanged against tensorflow_model_server).

  client = RestClient("http://127.0.0.1:8501", "tailtower", timeout_s=5.0)
  result = client.recommend(["u001"], [["i003", "i017"]], k=10, mmr_lambda=0.2)
  result.outputs["item_ids"]  # [[...10 ids...]]

Columnar ("inputs") format, since `k` and the re-ranking knobs are scalars; `signature_name` always sent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import requests

from serving.recommend_request import Recommendations, recommend_inputs
from trainer import features

DEFAULT_URL = "http://127.0.0.1:8501"


class ServingClientError(RuntimeError):
    """A non-OK answer: the HTTP status (or gRPC code name) and TF Serving's error message."""

    def __init__(self, status: int | str, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class RestClient:
    def __init__(self, url: str = DEFAULT_URL, model: str = "tailtower", timeout_s: float = 5.0):
        self.url = url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self._session = requests.Session()  # keep-alive: one TCP connection for all calls

    def _model_path(self, version: int | None) -> str:
        suffix = f"/versions/{version}" if version is not None else ""
        return f"{self.url}/v1/models/{self.model}{suffix}"

    def _check(self, response: requests.Response) -> dict:
        try:
            doc = response.json()
        except ValueError:
            doc = {"error": response.text}
        if response.status_code != 200:
            raise ServingClientError(response.status_code, doc.get("error", response.text))
        return doc

    def predict(self, inputs: dict, signature: str, version: int | None = None) -> dict:
        body = {"signature_name": signature, "inputs": inputs}
        response = self._session.post(
            self._model_path(version) + ":predict", json=body, timeout=self.timeout_s
        )
        return self._check(response)["outputs"]

    def recommend(
        self,
        users: Sequence[str],
        histories: Sequence[Sequence[str]],
        k: int,
        version: int | None = None,
        **knobs: float | int | str,
    ) -> Recommendations:
        inputs = recommend_inputs(users, histories, k, knobs)
        outputs = self.predict(inputs, features.RECOMMEND_SIGNATURE, version)
        return Recommendations({name: np.asarray(value) for name, value in outputs.items()}, version=None)

    def status(self) -> dict:
        return self._check(self._session.get(self._model_path(None), timeout=self.timeout_s))

    def metadata(self) -> dict:
        return self._check(self._session.get(self._model_path(None) + "/metadata", timeout=self.timeout_s))

    def scalar_inputs(self, signature: str) -> list[str]:
        """Names of the signature's rank-0 inputs (k and the knobs), from the model metadata."""
        signatures = self.metadata()["metadata"]["signature_def"]["signature_def"]
        inputs = signatures[signature]["inputs"]
        return sorted(name for name, info in inputs.items() if not info["tensor_shape"].get("dim"))

    def close(self) -> None:
        self._session.close()
