"""TF Serving's REST API (v1) on aiohttp, plus /healthz, /readyz and /metrics.

Routes are matched with TF Serving's own regular expressions (http_rest_api_util.cc), so the same paths work
and the same paths fail ("Malformed request: ..."). Model calls run on a thread pool; the event loop only
does HTTP. Every error is {"error": "..."} with TF Serving's HTTP status for its code; an oversized body gets
413. Each request is counted in the metrics and logged on the `serving.access` logger.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from concurrent.futures import Executor

import grpc
import orjson
from aiohttp import web

from serving import protos, rest_json
from serving.config import ServerConfig
from serving.errors import ServingError, invalid_argument
from serving.metrics import Metrics
from serving.model_manager import ModelManager

access_logger = logging.getLogger("serving.access")
logger = logging.getLogger(__name__)

_NAME_VERSION_LABEL = r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
PREDICT_PATH = re.compile(_NAME_VERSION_LABEL + r":(classify|regress|predict)", re.IGNORECASE)
STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.IGNORECASE
)
JSON = "application/json"
_ROUTE_KEY = web.RequestKey("route", str)


def json_response(doc, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type=JSON)


def error_response(message: str, status: int) -> web.Response:
    return json_response({"error": message}, status)


class RestApi:
    """Builds the aiohttp application over a `ModelManager`."""

    def __init__(self, manager: ModelManager, metrics: Metrics, config: ServerConfig, executor: Executor):
        self._manager = manager
        self._metrics = metrics
        self._config = config
        self._executor = executor

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self._config.max_body_bytes, middlewares=[self._middleware])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_route("*", "/v1/{tail:.*}", self._v1)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        return app

    # ------------------------------------------------------------------------------------ middleware
    @web.middleware
    async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
        start = time.perf_counter()
        request[_ROUTE_KEY] = "other"
        try:
            response = await handler(request)
        except ServingError as e:
            response = error_response(e.message, e.http_status)
        except web.HTTPException as e:  # 413 from the body limit, 405, ...
            response = error_response(e.text or e.reason, e.status)
        except Exception as e:  # a bug must still answer in TF Serving's error format
            logger.exception("REST %s %s failed", request.method, request.path)
            response = error_response(f"Internal error: {e}", 500)
        elapsed = time.perf_counter() - start
        self._metrics.observe("rest", request[_ROUTE_KEY], response.status, elapsed)
        if self._config.access_log:
            access_logger.info(
                "REST %s %s %d %.2fms", request.method, request.path, response.status, elapsed * 1e3
            )
        return response

    # ------------------------------------------------------------------------------------ probes
    async def _healthz(self, request: web.Request) -> web.Response:
        request[_ROUTE_KEY] = "healthz"
        return json_response({"status": "alive"})

    async def _readyz(self, request: web.Request) -> web.Response:
        request[_ROUTE_KEY] = "readyz"
        version = self._manager.served_version
        if version is None:
            return error_response(f"model {self._manager.name} has no available version yet", 503)
        return json_response({"status": "ready", "model": self._manager.name, "version": version})

    async def _metrics_page(self, request: web.Request) -> web.Response:
        request[_ROUTE_KEY] = "metrics"
        body, content_type = self._metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _unknown(self, request: web.Request) -> web.Response:
        return error_response(f"Not found: {request.method} {request.path}", 404)

    # ------------------------------------------------------------------------------------ /v1
    async def _v1(self, request: web.Request) -> web.Response:
        path = request.path
        if request.method == "POST" and (match := PREDICT_PATH.fullmatch(path)):
            request[_ROUTE_KEY] = "predict"
            name, version, label, verb = match.groups()
            if verb.lower() != "predict":
                raise ServingError(
                    grpc.StatusCode.UNIMPLEMENTED, f"{verb} is not supported by this server; use :predict"
                )
            body = await self._read_body(request)
            payload = await self._run(self._predict, name, _version(version), label, body)
            return web.Response(body=payload, content_type=JSON)
        if request.method == "GET" and (match := STATUS_PATH.fullmatch(path)):
            name, version, label, subresource = match.groups()
            request[_ROUTE_KEY] = "metadata" if subresource else "status"
            if not name:
                raise invalid_argument("Missing model name in request.")
            method = self._metadata if subresource else self._status
            return json_response(await self._run(method, name, _version(version), label))
        raise invalid_argument(f"Malformed request: {request.method} {path}")

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self._config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
        return await request.read()  # also enforces the limit for chunked bodies

    async def _run(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _predict(self, name: str, version: int | None, label: str | None, body: bytes) -> bytes:
        doc = rest_json.parse_request(body)  # malformed JSON fails first, as in TF Serving
        signature = rest_json.signature_name(doc)
        with self._manager.acquire(name, version, label) as servable:
            inputs, fmt = rest_json.request_tensors(doc, servable.input_infos(signature))
            outputs = servable.predict(signature, inputs)
        return rest_json.response_body(outputs, fmt)

    def _status(self, name: str, version: int | None, label: str | None) -> dict:
        return protos.status_json(protos.status_response(self._manager.statuses(name, version, label)))

    def _metadata(self, name: str, version: int | None, label: str | None) -> dict:
        with self._manager.acquire(name, version, label) as servable:
            return protos.metadata_json(servable)


def _version(text: str | None) -> int | None:
    return None if text is None else int(text)
