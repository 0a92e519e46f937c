"""The recommendation service: a JSON API in front of a TF Serving model server (ours, TF Serving, KServe).

  python -m serving.service --output demo-run --model_endpoint 127.0.0.1:8500     (make service)
  python -m serving.service --output demo-run --model_endpoint in-process  (one process: laptops, tests)

Per request: the user id becomes a pseudonym (serving/pseudonym.py), the stored history (history_store.py)
plus the request's is sent to `recommend` over TF Serving's gRPC API (grpc_client.py), titles come from the
answering version's catalog metadata (catalog_metadata.py), and a served record is queued to the log
(event_log.py). Events are acknowledged once durable; clicks, add-to-carts and purchases extend the history.
The API is in serving/service_api.py. Until the model answers, /readyz and /v1/recommendations say 503; a
background probe (GetModelStatus) notices when it does, and notices when it goes away again.

The history store (SQLite or Redis) is best effort: the event log is the record. When it fails (Redis down),
the service keeps answering from the request-carried history alone, acknowledges events once they are in the
log without extending the history, and /readyz stays 200 with {"status": "degraded", "history_store": false}
(a 503 would take every replica out of rotation for an outage of the store they share). While it is down,
requests skip it; a probe pings it every ready_poll_s and the service uses it again once it answers.

In a test: `service = RecommendationService(ServiceConfig(port=0, ...)).start(); ...; service.stop()`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from serving import explorer, service_api
from serving.catalog_metadata import UNKNOWN, CatalogMetadata, ItemInfo
from serving.client_error import ServingClientError
from serving.event_log import (
    EVENTS,
    MODEL_VERSION,
    REASONS,
    RULES_FIRED,
    SERVED,
    SPONSORED,
    USER_PSEUDONYM,
    EventLog,
    LogFull,
    next_free_span,
)
from serving.explanations import reason_code, reason_text
from serving.exposure_window import ExposureCollector, ExposureWindow
from serving.history_store import HistoryUnavailable, open_history_store
from serving.log_fields import MANUAL_SPANS
from serving.pseudonym import Pseudonymizer
from serving.recommend_request import filter_names, knob_names, with_knobs_off
from serving.rules import NO_RULES, Candidate, Placed, RulesFile
from serving.server import run_until_signalled
from serving.service_api import ApiError
from serving.service_config import IN_PROCESS, ServiceConfig, parse_args
from trainer import features

logger = logging.getLogger(__name__)

JSON = "application/json"
_ROUTE = web.RequestKey("route", str)
_MODEL_DOWN = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "NOT_FOUND")  # gRPC codes that mean "not ready"


@dataclass(frozen=True)
class ModelState:
    version: int
    knobs: tuple[str, ...]
    filters: tuple[str, ...]  # the item filters its recommend declares (none before they existed)


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(
            "tailtower_service_requests",
            "Requests by route and status.",
            ["route", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "tailtower_service_request_latency_seconds", "Request latency.", ["route"], registry=registry
        )
        self.ready = Gauge("tailtower_service_ready", "1 when the model answers.", registry=registry)
        self.history_ready = Gauge(
            "tailtower_service_history_ready", "1 when the history store answers.", registry=registry
        )
        self.rules = Gauge("tailtower_service_rules", "Business rules in force.", registry=registry)
        self.rules_file_error = Gauge(
            "tailtower_service_rules_file_error",
            "1 while the rules file on disk is refused (the rules in force stay).",
            registry=registry,
        )
        self.history_fallbacks = Counter(
            "tailtower_service_history_fallbacks",
            "History reads from the request alone and appends dropped: the store was down or failed.",
            ["operation"],
            registry=registry,
        )


class RecommendationService:
    def __init__(self, config: ServiceConfig, client=None):
        self.config = config
        os.makedirs(config.service_dir, exist_ok=True)
        self.pseudonyms = Pseudonymizer.from_config(config.pseudonym_key_file, config.service_dir)
        self.registry = CollectorRegistry()
        self.metrics = ServiceMetrics(self.registry)
        self.log = EventLog(
            config.logs_dir,
            span=next_free_span(config.logs_dir) if config.log_spans == MANUAL_SPANS else None,
            max_pending=config.max_pending_records,
            linger_s=config.log_linger_s,
            registry=self.registry,
        )
        self.history = open_history_store(config)
        self.history_error: str | None = None  # why the history store is down; None while it answers
        self.metrics.history_ready.set(1)
        self.catalog = CatalogMetadata(config.versions_path)
        self.rules = RulesFile(config.rules_path)
        self.metrics.rules.set_function(lambda: len(self.rules.rules))
        self.metrics.rules_file_error.set_function(lambda: self.rules.error is not None)
        self.exposure = ExposureWindow(
            config.exposure_window_s, config.exposure_max_records, config.exposure_shown
        )
        self.registry.register(ExposureCollector(self.exposure_summary))
        self.client = client or _model_client(config)
        self.model: ModelState | None = None
        self.not_ready_reason = "the model has not answered yet"
        self._executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="service")
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="service-loop", daemon=True)
        self._runner: web.AppRunner | None = None
        self._probe_tasks: list[asyncio.Task] = []
        self.port = 0

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> RecommendationService:
        self._loop_thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()
        logger.info(
            "service on %s:%d, model %s at %s",
            self.config.host,
            self.port,
            self.config.model_name,
            self.config.model_endpoint,
        )
        return self

    async def _start(self) -> int:
        app = web.Application(client_max_size=self.config.max_body_bytes, middlewares=[self._middleware])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_post(service_api.RECOMMENDATIONS_PATH, self._recommendations)
        app.router.add_post(service_api.EVENTS_PATH, self._events)
        app.router.add_get(service_api.EXPOSURE_PATH, self._exposure)
        app.router.add_post(service_api.ROTATE_PATH, self._rotate)
        app.router.add_get(service_api.USERS_PATH, self._users)
        app.router.add_get(service_api.HISTORY_PATH, self._history_of)
        app.router.add_get(service_api.EXPLORER_PATH, self._explorer_page)
        app.router.add_get(service_api.EXPLORER_ASSETS_PATH, self._explorer_asset)
        self._runner = web.AppRunner(app, access_log=None)  # no request details in logs
        await self._runner.setup()
        await web.TCPSite(self._runner, self.config.host, self.config.port).start()
        self._probe_tasks = [
            asyncio.create_task(self._probe_forever(self.probe)),
            asyncio.create_task(self._probe_forever(self.probe_history)),
        ]
        return self._runner.addresses[0][1]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join()
        self._loop.close()
        self._executor.shutdown(wait=True)
        self.log.close()
        self.history.close()
        self.client.close()

    async def _stop(self) -> None:
        for task in self._probe_tasks:
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------------------------ readiness
    async def _probe_forever(self, probe) -> None:
        while True:
            await self._run(probe)
            await asyncio.sleep(self.config.ready_poll_s)

    def probe(self) -> ModelState | None:
        """Asks the model server for an available version (and the knobs of `recommend`, once per version)."""
        try:
            statuses = self.client.status().model_version_status
            available = [s.version for s in statuses if s.state == s.AVAILABLE]
            if not available:
                raise ServingClientError("UNAVAILABLE", f"no available version of {self.config.model_name}")
            version = max(available)
            if self.model is None or self.model.version != version:
                knobs = knob_names(self.client.scalar_inputs(features.RECOMMEND_SIGNATURE))
                filters = filter_names(self.client.input_dtypes(features.RECOMMEND_SIGNATURE))
                self.exposure.note_version(version, self.catalog.items(version))
                self.model = ModelState(version, knobs, filters)
                logger.info("ready: %s version %d, knobs %s", self.config.model_name, version, list(knobs))
        except ServingClientError as e:
            self._not_ready(f"model server: {e}")
        self.metrics.ready.set(self.model is not None)
        return self.model

    def _not_ready(self, reason: str) -> None:
        if self.model is not None:
            logger.warning("not ready: %s", reason)
        self.model, self.not_ready_reason = None, reason
        self.metrics.ready.set(0)

    def probe_history(self) -> bool:
        """Pings the history store; the service uses it again from the first answer."""
        try:
            self.history.ping()
        except HistoryUnavailable as e:
            self._history_down(e)
            return False
        if self.history_error is not None:
            logger.info("history store back: using it again")
        self.history_error = None
        self.metrics.history_ready.set(1)
        return True

    def _history_down(self, error: Exception) -> None:
        """Marks the store down until the probe's next ping answers. Only a HistoryUnavailable's message is
        shown: another exception's may hold a pseudonym or an item id."""
        reason = str(error) if isinstance(error, HistoryUnavailable) else f"unexpected {type(error).__name__}"
        if self.history_error is None:
            logger.warning("history store down, answering from request-carried history: %s", reason)
        self.history_error = reason
        self.metrics.history_ready.set(0)

    def _stored_history(self, user: str) -> list[str]:
        if self.history_error is None:
            try:
                return self.history.recent(user, self.config.history_length)
            except Exception as e:  # noqa: BLE001  best effort: the request's history still answers
                self._history_down(e)
        self.metrics.history_fallbacks.labels("recent").inc()
        return []

    # ------------------------------------------------------------------------------------ HTTP
    @web.middleware
    async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
        start = time.perf_counter()
        resource = request.match_info.route.resource
        request[_ROUTE] = resource.canonical if resource is not None else "other"
        try:
            response = await handler(request)
        except ApiError as e:
            response = _error(str(e), e.status)
        except LogFull as e:
            response = _error(f"log backlog full, retry later: {e}", 503)
        except web.HTTPException as e:  # 404, 405, 413 from the body limit
            response = _error(e.text or e.reason, e.status)
        except Exception as e:
            logger.exception("%s %s failed", request.method, request.path)
            response = _error(f"internal error: {type(e).__name__}", 500)
        self.metrics.requests.labels(request[_ROUTE], str(response.status)).inc()
        self.metrics.latency.labels(request[_ROUTE]).observe(time.perf_counter() - start)
        return response

    async def _healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "alive"})

    async def _readyz(self, request: web.Request) -> web.Response:
        model = self.model
        if model is None:
            return _error(f"not ready: {self.not_ready_reason}", 503)
        error = self.history_error  # None while the history store answers
        doc = {
            "status": "ready" if error is None else "degraded",  # 200 either way: see the module docstring
            "model": self.config.model_name,
            "version": model.version,
            "history_store": error is None,
        }
        if error is not None:
            doc["history_store_error"] = error
        if self.rules.error is not None:  # the file on disk is refused: the rules in force stay
            doc["rules_file_error"] = self.rules.error
        return _json(doc)

    async def _metrics_page(self, request: web.Request) -> web.Response:
        body = await self._run(generate_latest, self.registry)  # the exposure gauges compute at a scrape
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _rotate(self, request: web.Request) -> web.Response:
        """Closes the open span (both kinds, into Parquet), opens the next: {"closed": n, "span": n + 1}."""
        span = await asyncio.wrap_future(self.log.submit_rotate())  # the open span + 1
        return _json({"closed": span - 1, "span": span})

    async def _exposure(self, request: web.Request) -> web.Response:
        doc = await self._run(self.exposure_summary)
        if doc is None:
            raise ApiError(f"not ready: {self.not_ready_reason}", 503)
        return _json(doc)

    def exposure_summary(self) -> dict | None:
        """Live exposure (serving/exposure_window.py) against the served version's catalog; None if not
        ready."""
        model = self.model
        return (
            None if model is None else self.exposure.summary(model.version, self.catalog.items(model.version))
        )

    # ------------------------------------------------------------------------------------ web explorer
    async def _explorer_page(self, request: web.Request) -> web.Response:
        return await self._explorer_file(explorer.INDEX_FILE)

    async def _explorer_asset(self, request: web.Request) -> web.Response:
        return await self._explorer_file(request.match_info["name"])

    async def _explorer_file(self, name: str) -> web.Response:
        found = await self._run(explorer.asset, name)
        if found is None:
            raise ApiError(f"not found: {name}", 404)
        body, content_type = found
        headers = {"Cache-Control": "no-cache"}  # an edited page shows on reload
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)

    async def _users(self, request: web.Request) -> web.Response:
        """Dataset users to pick from, with their eval-split history (serving/explorer/__init__.py)."""
        limit = service_api.users_limit(request.query)
        return _json(await self._run(self._dataset_users, limit))

    def _dataset_users(self, limit: int) -> dict:
        source, users = explorer.dataset_users(self.config.output, limit)
        listed = [{features.USER_ID: user, features.HISTORY: self._titled(items)} for user, items in users]
        return {"source": source, "users": listed}

    async def _history_of(self, request: web.Request) -> web.Response:
        """The user's stored history (what the service puts before a request's own), with titles."""
        user_id = service_api.history_user(request.query)
        return _json(await self._run(self._user_history, user_id))

    def _user_history(self, user_id: str) -> dict:
        items = self._stored_history(self.pseudonyms(user_id))
        return {"items": self._titled(items), "history_store": self.history_error is None}

    def _titled(self, item_ids: list[str]) -> list[dict]:
        """Item ids with the serving version's titles ("" before the model answers)."""
        model = self.model
        catalog = self.catalog.items(model.version) if model is not None else {}
        return [{features.ITEM_ID: i, features.TITLE: catalog.get(i, UNKNOWN).title} for i in item_ids]

    async def _recommendations(self, request: web.Request) -> web.Response:
        model = self.model
        if model is None:
            raise ApiError(f"not ready: {self.not_ready_reason}", 503)
        doc = service_api.parse_json(await request.read())
        ask = service_api.recommendation_request(doc, self.config)
        try:
            knobs = with_knobs_off(ask.knobs, model.knobs)
        except ValueError as e:
            raise ApiError(f"knobs: {e}") from e
        missing = sorted(set(ask.filters) - set(model.filters))
        if missing:
            detail = "has no such filter (exported before them)"
            raise ApiError(f"{missing[0]}: model version {model.version} {detail}")
        return _json(await self._run(self._recommend, ask, knobs, model.version))

    def _recommend(self, ask: service_api.RecommendationRequest, knobs: dict, probed_version: int) -> dict:
        user = self.pseudonyms(ask.user_id)
        history = self._stored_history(user) + ask.history
        rules = self.rules.current() if ask.rules else NO_RULES
        pool_k = max(ask.k, self.config.rules_pool) if len(rules) else ask.k
        try:
            # The model sees the pseudonym too: models trained on the service's logs know users by it.
            filters = {name: [values] for name, values in ask.filters.items()}
            result = self.client.recommend([user], [history], pool_k, **knobs, **filters)
        except ServingClientError as e:
            if e.status in _MODEL_DOWN:
                self._not_ready(f"model server: {e}")
                raise ApiError(f"not ready: {self.not_ready_reason}", 503) from e
            status = 400 if e.status == "INVALID_ARGUMENT" else 502
            raise ApiError(f"model rejected the request: {e.message}", status) from e
        except ValueError as e:  # a knob its input's dtype cannot hold ("high" for a float); ids are strings
            raise ApiError(f"knobs: {e}") from None
        version = result.version or probed_version
        rows = result.rows(0)
        if not all(math.isfinite(row[features.SCORES]) for row in rows):
            raise ApiError("the model answered a non-finite score: nothing served or logged", 502)
        catalog = self.catalog.items(version)
        outcome = rules.apply(
            [_candidate(row, catalog.get(row[features.ITEM_IDS], UNKNOWN)) for row in rows],
            k=ask.k,
            history=history,
            surface=ask.surface,
            lookup=catalog.get,
        )
        explained = {row[features.ITEM_IDS]: row for row in rows}
        items = [
            {
                features.ITEM_ID: placed.item_id,
                features.TITLE: catalog.get(placed.item_id, UNKNOWN).title,
                features.SCORE: placed.score,  # None: placed by a rule from outside the model's pool
                features.IS_TAIL: placed.is_tail,
                features.IS_NEW: placed.is_new,
                SPONSORED: placed.sponsored,
                service_api.REASON: _reason(placed, explained.get(placed.item_id, {}), catalog),
            }
            for placed in outcome.items
        ]
        request_id = uuid.uuid4().hex
        record = _served_record(
            request_id, user, version, ask, knobs, history, items, outcome.fired, self.config
        )
        self.log.submit(SERVED, [record])  # queued, not awaited: LogFull (503) still stops the answer
        self.exposure.add(SERVED, [record])
        # rules_fired: the ids of the rules that changed this list, as logged (a merchant sees why it moved)
        answer = {service_api.REQUEST_ID: request_id, "model_version": str(version), "items": items}
        return answer | {RULES_FIRED: outcome.fired}

    async def _events(self, request: web.Request) -> web.Response:
        batch = service_api.events(service_api.parse_json(await request.read()), self.config)
        now = time.time()
        records = [
            {
                service_api.REQUEST_ID: event.request_id,
                USER_PSEUDONYM: self.pseudonyms(event.user_id),
                features.ITEM_ID: event.item_id,
                service_api.TYPE: event.type,
                service_api.TS: now if event.ts is None else event.ts,
            }
            for event in batch
        ]
        wait_s = self.config.log_wait_s
        try:  # durable before the 200
            await asyncio.wait_for(asyncio.wrap_future(self.log.submit(EVENTS, records)), wait_s)
        except TimeoutError:
            raise ApiError(
                f"the event log did not confirm the batch within {wait_s:g} s: it may or may not be "
                "durable (a retry may log it twice)",
                503,
            ) from None
        self.exposure.add(EVENTS, records)
        await self._run(self._extend_histories, records)  # best effort: the log is the record
        return _json({"accepted": len(records)})

    def _extend_histories(self, records: list[dict]) -> None:
        by_user: dict[str, list[str]] = {}
        for record in records:
            if record[service_api.TYPE] in service_api.HISTORY_EVENTS:
                by_user.setdefault(record[USER_PSEUDONYM], []).append(record[features.ITEM_ID])
        for user, items in by_user.items():
            if self.history_error is None:
                try:
                    self.history.append(user, items)
                    continue
                except Exception as e:  # noqa: BLE001  the events are durable: their answer is a 200
                    self._history_down(e)
            self.metrics.history_fallbacks.labels("append").inc()

    async def _run(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)


def _model_client(config: ServiceConfig):
    """TF Serving's gRPC API at config.model_endpoint, or a model server started in this process."""
    if config.model_endpoint == IN_PROCESS:
        from serving.in_process_model import InProcessModelClient  # imports TensorFlow

        return InProcessModelClient(config.versions_path, config.model_name, config.model_timeout_s)
    from serving.grpc_client import GrpcClient  # imports TensorFlow

    return GrpcClient(config.model_endpoint, config.model_name, config.model_timeout_s)


def _reason(placed: Placed, row: dict, catalog: dict[str, ItemInfo]) -> dict | None:
    """The answer's reason of one item: the rules' placement, else the model's explanation (none from a model
    exported before explanations)."""
    code = reason_code(row.get(features.REASON, ""), placed.sponsored, placed.model_score is None)
    if code is None:
        return None
    because = row.get(features.BECAUSE, "") if code in features.REASONS else ""
    title = catalog.get(because, UNKNOWN).title or because
    return {service_api.CODE: code, service_api.MESSAGE: reason_text(code, title), features.BECAUSE: because}


def _candidate(row: dict, info: ItemInfo) -> Candidate:
    """A model answer's row as the rules see it."""
    return Candidate(
        row[features.ITEM_IDS],
        float(row[features.SCORES]),
        bool(row[features.IS_TAIL]),
        info.is_new,
        info.brand,
        info.categories,
    )


def _served_record(
    request_id, user, version, ask, knobs, history, items, fired, config: ServiceConfig
) -> dict:
    return {
        service_api.REQUEST_ID: request_id,
        USER_PSEUDONYM: user,
        service_api.TS: time.time(),
        "model_name": config.model_name,
        MODEL_VERSION: version,
        service_api.SURFACE: ask.surface,
        service_api.KNOBS: json.dumps(knobs, sort_keys=True),
        features.HISTORY: history,
        features.ITEM_IDS: [item[features.ITEM_ID] for item in items],
        "positions": list(range(len(items))),
        features.SCORES: [item[features.SCORE] for item in items],
        features.IS_TAIL: [item[features.IS_TAIL] for item in items],
        features.IS_NEW: [item[features.IS_NEW] for item in items],
        SPONSORED: [item[SPONSORED] for item in items],
        REASONS: [(item[service_api.REASON] or {}).get(service_api.CODE, "") for item in items],
        features.BECAUSE: [(item[service_api.REASON] or {}).get(features.BECAUSE, "") for item in items],
        RULES_FIRED: fired,
    }


def _json(doc: dict, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(doc), status=status, content_type=JSON)


def _error(message: str, status: int) -> web.Response:
    return _json({"error": message}, status)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_until_signalled(RecommendationService(parse_args(argv, __doc__.split("\n\n")[0])).start())


if __name__ == "__main__":
    main()
