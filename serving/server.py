"""A local model server that speaks TF Serving's REST (8501) and gRPC (8500) APIs, for development and tests.

  python -m serving.server --model_base_path demo-run/serving/tailtower --model_name tailtower

Flags follow tensorflow_model_server's names (--port, --rest_api_port, --model_name, --model_base_path,
--file_system_poll_wait_seconds). In a test:

  server = ModelServer(ServerConfig(model_base_path=path, grpc_port=0, rest_port=0)).start()
  server.wait_until_available(60); ...; server.stop()
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from serving.config import ServerConfig
from serving.metrics import Metrics

# The model manager, gRPC service and REST API load TensorFlow (seconds): they are imported where the server
# is built, so that `python -m serving.server` rejects bad flags first.

logger = logging.getLogger(__name__)


class ModelServer:
    """The model manager, the gRPC server and the REST server (an asyncio loop on its own thread)."""

    def __init__(self, config: ServerConfig):
        from serving.model_manager import ModelManager

        self.config = config
        self.metrics = Metrics()
        self.manager = ModelManager(config, self.metrics)
        self._executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="rest")
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="rest-loop", daemon=True)
        self._runner: web.AppRunner | None = None
        self._grpc = None
        self.grpc_port = 0
        self.rest_port = 0

    def start(self) -> ModelServer:
        from serving.grpc_service import build_server

        self.manager.start()
        self._grpc, self.grpc_port = build_server(self.manager, self.metrics, self.config)
        self._grpc.start()
        self._loop_thread.start()
        self.rest_port = self._call(self._start_rest())
        logger.info(
            "serving %s from %s: gRPC %s:%d, REST %s:%d",
            self.config.model_name,
            self.config.model_base_path,
            self.config.host,
            self.grpc_port,
            self.config.host,
            self.rest_port,
        )
        return self

    async def _start_rest(self) -> int:
        from serving.rest import RestApi

        app = RestApi(self.manager, self.metrics, self.config, self._executor).app()
        self._runner = web.AppRunner(app, access_log=None)  # our middleware logs each request
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.rest_port)
        await site.start()
        return self._runner.addresses[0][1]

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def wait_until_available(self, timeout_s: float) -> bool:
        return self.manager.wait_until_available(timeout_s)

    def stop(self, grace_s: float = 5.0) -> None:
        """Stops accepting requests, lets in-flight ones finish (up to `grace_s`), unloads the model."""
        if self._runner is not None:
            self._call(self._runner.cleanup())
        if self._grpc is not None:
            self._grpc.stop(grace_s).wait()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join()
        self._loop.close()
        self._executor.shutdown(wait=True)
        self.manager.stop()


# ------------------------------------------------------------------------------------ command line
def _labels(text: str) -> dict[str, int]:
    """'stable=3,canary=4' → {"stable": 3, "canary": 4}."""
    labels = {}
    for item in filter(None, text.split(",")):
        label, _, version = item.partition("=")
        if not label or not version.isdigit():
            raise argparse.ArgumentTypeError(f"expected label=version[,label=version], got {text!r}")
        labels[label] = int(version)
    return labels


def parse_args(argv: list[str] | None = None) -> ServerConfig:
    defaults = ServerConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_base_path", default=defaults.model_base_path)
    parser.add_argument("--model_name", default=defaults.model_name)
    parser.add_argument("--host", default=defaults.host, help="bind address (default loopback only)")
    parser.add_argument("--port", type=int, default=defaults.grpc_port, help="gRPC port")
    parser.add_argument("--rest_api_port", type=int, default=defaults.rest_port)
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=defaults.poll_interval_s)
    parser.add_argument("--max_body_bytes", type=int, default=defaults.max_body_bytes)
    parser.add_argument("--max_k", type=int, default=defaults.max_k)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    labels_help = "label=version[,label=version]"
    parser.add_argument("--version_labels", type=_labels, default=defaults.version_labels, help=labels_help)
    parser.add_argument("--no_warmup", action="store_true")
    parser.add_argument("--no_access_log", action="store_true")
    args = parser.parse_args(argv)
    try:
        return ServerConfig(
            model_base_path=args.model_base_path,
            model_name=args.model_name,
            host=args.host,
            grpc_port=args.port,
            rest_port=args.rest_api_port,
            poll_interval_s=args.file_system_poll_wait_seconds,
            max_body_bytes=args.max_body_bytes,
            max_k=args.max_k,
            workers=args.workers,
            version_labels=args.version_labels,
            warmup=not args.no_warmup,
            access_log=not args.no_access_log,
        )
    except ValueError as e:
        parser.error(str(e))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_until_signalled(ModelServer(parse_args(argv)).start())


def run_until_signalled(server) -> None:
    """Blocks until SIGINT or SIGTERM, then stops the started `server` (anything with a `stop()`)."""
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()
    logger.info("shutting down")
    server.stop()


if __name__ == "__main__":
    main()
