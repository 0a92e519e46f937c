"""TF Serving's file-system source and `latest` version policy for one model, with its version states.

Every `poll_interval_s` the base path is scanned for numeric version folders. A version becomes a candidate
once it has saved_model.pb and its file listing (names, sizes, mtimes) is unchanged since the previous poll,
so a folder still being written is never loaded. The newest candidate is loaded and warmed up while the
current version keeps serving; then new requests go to it, and the old version is unloaded once its
in-flight requests have finished (UNLOADING → END). A version that fails to load is END with the error and is
retried only after its files change. Deleting the served version's folder falls back to the newest other
version (or to none), as TF Serving does.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from serving.config import ServerConfig
from serving.errors import invalid_argument, not_found
from serving.metrics import Metrics
from serving.servable import Servable

logger = logging.getLogger(__name__)

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
Fingerprint = tuple[tuple[str, int, int], ...]
Loader = Callable[[str, int, str, str, int], Servable]


class State(enum.IntEnum):
    """tensorflow.serving.ModelVersionStatus.State values."""

    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass
class VersionStatus:
    version: int
    state: State
    error: str = ""  # "" = OK


def fingerprint(version_dir: str) -> Fingerprint:
    """Every file under `version_dir` as (relative path, size, mtime_ns), sorted; () when it vanished."""
    entries = []
    for root, _, files in os.walk(version_dir):
        for name in files:
            path = os.path.join(root, name)
            try:
                stat = os.stat(path)
            except FileNotFoundError:  # removed while we walked: the next poll sees a different listing
                continue
            entries.append((os.path.relpath(path, version_dir), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


def _has_saved_model(files: Fingerprint) -> bool:
    return any(path in SAVED_MODEL_FILES for path, _, _ in files)


def request_string(name: str, version: int | None) -> str:
    """How TF Serving's ServableRequest prints itself in "Servable not found" errors."""
    return f"Latest({name})" if version is None else f"Specific({name}, {version})"


class ModelManager:
    """Loads, serves and retires the versions of one model; hands out servables to requests."""

    def __init__(self, config: ServerConfig, metrics: Metrics | None = None, loader: Loader = Servable.load):
        self.name = config.model_name
        self._config = config
        self._metrics = metrics
        self._loader = loader
        self._cond = threading.Condition()
        self._current: Servable | None = None
        self._inflight: dict[int, int] = {}
        self._statuses: dict[int, VersionStatus] = {}
        self._last_listing: dict[int, Fingerprint] = {}
        self._failed: dict[int, Fingerprint] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------ polling
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"poll-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._cond:
            current = self._current
        if current is not None:
            self._retire(current)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # keep polling: a bad listing must not stop the server from picking up fixes
                logger.exception("polling %s failed", self._config.model_base_path)
            self._stop.wait(self._config.poll_interval_s)

    def _scan(self) -> dict[int, Fingerprint]:
        base = self._config.model_base_path
        try:
            names = os.listdir(base)
        except FileNotFoundError:
            return {}
        return {
            int(n): fingerprint(os.path.join(base, n))
            for n in names
            if n.isdigit() and os.path.isdir(os.path.join(base, n))
        }

    def poll_once(self) -> None:
        """One scan: load the newest stable version if it is not the one served (tests call this directly)."""
        listing = self._scan()
        stable = [
            v
            for v, files in listing.items()
            if files
            and _has_saved_model(files)
            and self._last_listing.get(v) == files
            and self._failed.get(v) != files
        ]
        self._last_listing = listing
        target = max(stable, default=None)
        current = self.served_version
        if (
            target is not None
            and target != current
            and (current is None or target > current or current not in listing)
        ):
            self._load_and_swap(target, listing[target])
        elif target is None and current is not None and current not in listing:
            logger.warning("version %d of %s was deleted and no other version is ready", current, self.name)
            self._retire(self._current)

    # ------------------------------------------------------------------------------------ lifecycle
    def _set_state(self, version: int, state: State, error: str = "") -> None:
        with self._cond:
            self._statuses[version] = VersionStatus(version, state, error)
        logger.info("%s version %d: %s%s", self.name, version, state.name, f" ({error})" if error else "")

    def _load_and_swap(self, version: int, files: Fingerprint) -> None:
        path = os.path.join(self._config.model_base_path, str(version))
        self._set_state(version, State.START)
        self._set_state(version, State.LOADING)
        try:
            servable = self._loader(self.name, version, path, self._config.k_input, self._config.max_k)
            if self._config.warmup:
                servable.warm_up(self._config.warmup_runs)
        except Exception as e:  # any load failure leaves the old version serving
            logger.exception("loading %s version %d failed", self.name, version)
            self._failed[version] = files
            self._set_state(version, State.END, f"Failed to load version {version}: {e}")
            self._count_load("error")
            return
        with self._cond:
            old, self._current = self._current, servable
            self._inflight[version] = 0
            self._cond.notify_all()  # wake wait_until_available
        self._set_state(version, State.AVAILABLE)
        self._count_load("ok")
        if old is not None:
            self._retire(old)

    def _retire(self, servable: Servable) -> None:
        """UNLOADING until the requests holding `servable` finish, then unloaded and END."""
        self._set_state(servable.version, State.UNLOADING)
        with self._cond:
            if self._current is servable:
                self._current = None
            self._cond.wait_for(lambda: self._inflight.get(servable.version, 0) == 0)
            self._inflight.pop(servable.version, None)
        self._update_version_gauge()
        servable.unload()
        self._set_state(servable.version, State.END)

    def _count_load(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.loads.labels(self.name, result).inc()
        self._update_version_gauge()

    def _update_version_gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.model_version.labels(self.name).set(self.served_version or 0)

    # ------------------------------------------------------------------------------------ requests
    @property
    def served_version(self) -> int | None:
        current = self._current
        return None if current is None else current.version

    def wait_until_available(self, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._current is not None, timeout=timeout_s)

    def resolve_label(self, label: str) -> int:
        version = self._config.version_labels.get(label)
        if version is None:
            raise invalid_argument(f"Unrecognized servable version label: {label}")
        return version

    @contextmanager
    def acquire(self, name: str, version: int | None = None, label: str | None = None) -> Iterator[Servable]:
        """The servable for a request; it stays loaded until the `with` block ends."""
        if label:
            version = self.resolve_label(label)
        with self._cond:
            current = self._current
            if name != self.name or current is None or version not in (None, current.version):
                raise not_found(f"Servable not found for request: {request_string(name, version)}")
            self._inflight[current.version] += 1
        try:
            yield current
        finally:
            with self._cond:
                self._inflight[current.version] -= 1
                if self._inflight[current.version] == 0:
                    self._cond.notify_all()

    def statuses(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        """GetModelStatus: every version this server has seen, or one; TF Serving's NOT_FOUND errors."""
        if label:
            version = self.resolve_label(label)
        with self._cond:
            known = dict(self._statuses) if name == self.name else {}
        if version is None:
            if not known:
                raise not_found(f"Could not find any versions of model {name}")
            return [known[v] for v in sorted(known)]
        if version not in known:
            raise not_found(f"Could not find version {version} of model {name}")
        return [known[version]]
