"""`ModelStore`: the model being served, swapped atomically when a new version appears.

A refresh resolves the source (the MLflow alias, or a bundle directory's manifest), and when it
names something other than what is loaded: fetch the bundle (download + verify into the cache),
`Recommender.load` it (verifies every sha256 again), build the `ServingView`, run every model
path once, and only then swap ONE reference. Requests read `store.current` once and use that
object throughout, so a swap never mixes two versions in one response.

Any failure is logged and counted; the loaded model keeps serving, and the failed candidate is
not tried again until the source names another one or `backoff_s` has passed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from recommender_lib.bundle.format import MANIFEST_FILE, BundleError, read_manifest
from recommender_lib.registry.client import Registry
from serving.logs import LOGGER_NAME, log_event
from serving.view import ServingView

if TYPE_CHECKING:
    from serving.settings import ServingSettings

logger = logging.getLogger(f"{LOGGER_NAME}.model_store")
RefreshOutcome = Literal["loaded", "unchanged", "skipped", "failed"]


@dataclass(frozen=True)
class Candidate:
    """What the source currently names; `key` changes whenever the bundle to serve changes."""

    key: str
    bundle_version: str | None
    registry_version: str | None = None


class BundleSource(Protocol):
    kind: str  # "mlflow" or "directory"

    @property
    def model_name(self) -> str | None: ...

    @property
    def alias(self) -> str | None: ...

    def resolve(self) -> Candidate: ...

    def fetch(self, candidate: Candidate) -> Path: ...

    def prune(self, keep: set[Path]) -> None: ...


class RegistrySource:
    """`models:/<name>@<alias>` in MLflow, downloaded into `<cache_dir>/<name>-v<version>`."""

    kind = "mlflow"

    def __init__(self, tracking_uri: str, model_name: str, alias: str, cache_dir: Path) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.alias = alias
        self.cache_dir = Path(cache_dir)
        self.registry = Registry(tracking_uri, model_name)  # contacts MLflow on first use
        self._dir_name = re.compile(re.escape(model_name) + r"-v\d+")

    def resolve(self) -> Candidate:
        mv = self.registry.resolve(f"@{self.alias}")
        return Candidate(f"{mv.version}:{mv.bundle_version}", mv.bundle_version, mv.version)

    def fetch(self, candidate: Candidate) -> Path:
        dest = self.cache_dir / f"{self.model_name}-v{candidate.registry_version}"
        if _cached(dest, candidate.bundle_version):
            return dest  # from an earlier run; Recommender.load verifies every file again
        return self.registry.download_bundle(str(candidate.registry_version), dest)

    def prune(self, keep: set[Path]) -> None:
        """Delete the cached bundles of this model that are not in `keep`."""
        if not self.cache_dir.is_dir():
            return
        for path in self.cache_dir.iterdir():
            if path.is_dir() and self._dir_name.fullmatch(path.name) and path not in keep:
                shutil.rmtree(path, ignore_errors=True)


def _cached(dest: Path, bundle_version: str | None) -> bool:
    if bundle_version is None or not (dest / MANIFEST_FILE).is_file():
        return False
    try:
        return read_manifest(dest).get("bundle_version") == bundle_version
    except BundleError:
        return False


class DirectorySource:
    """A bundle directory on disk (air-gapped); a changed `manifest.json` means a new bundle."""

    kind = "directory"
    model_name = None
    alias = None

    def __init__(self, bundle_dir: Path) -> None:
        self.bundle_dir = Path(bundle_dir)

    def resolve(self) -> Candidate:
        raw = (self.bundle_dir / MANIFEST_FILE).read_bytes()
        try:
            bundle_version = json.loads(raw).get("bundle_version")
        except (ValueError, AttributeError) as exc:
            raise BundleError(f"{self.bundle_dir / MANIFEST_FILE}: bad manifest: {exc}") from exc
        digest = hashlib.sha256(raw).hexdigest()[:16]
        return Candidate(f"{bundle_version}:{digest}", str(bundle_version))

    def fetch(self, candidate: Candidate) -> Path:
        return self.bundle_dir

    def prune(self, keep: set[Path]) -> None:
        """Never deletes anything: the directory belongs to whoever deployed it."""


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """One loaded version and where it came from; immutable, swapped as a whole."""

    view: ServingView
    key: str
    source: str
    bundle_dir: Path
    loaded_at: str
    model_name: str | None = None
    alias: str | None = None
    registry_version: str | None = None

    @property
    def model_version(self) -> str:
        """The bundle version: what every response reports as `model_version`."""
        return self.view.version

    @property
    def manifest(self) -> dict[str, Any]:
        return self.view.recommender.manifest


class ModelStore:
    """Holds the served `LoadedModel`; `refresh()` swaps in a new one, `start()` polls."""

    def __init__(
        self,
        source: BundleSource,
        *,
        interval_s: float = 10.0,
        backoff_s: float = 300.0,
        warm_up: bool = True,
        similar_cache_size: int = 2048,
    ) -> None:
        self.source = source
        self.interval_s = interval_s
        self.backoff_s = backoff_s
        self.warm_up = warm_up
        self.similar_cache_size = similar_cache_size
        self._current: LoadedModel | None = None
        self._swap_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._failed: dict[str, float] = {}  # candidate key -> monotonic time of the failure
        self._kept: set[Path] = set()  # bundle dirs of the served and the previous version
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reloads = 0
        self.reload_failures = 0

    @classmethod
    def from_settings(cls, settings: ServingSettings) -> ModelStore:
        source: BundleSource
        if settings.bundle_dir is not None:
            source = DirectorySource(settings.bundle_dir)
        else:
            source = RegistrySource(
                settings.tracking_uri,
                settings.model_name,
                settings.model_alias,
                settings.serving_dir,
            )
        return cls(
            source,
            interval_s=settings.reload_interval_s,
            backoff_s=settings.reload_backoff_s,
            similar_cache_size=settings.similar_cache_size,
        )

    @property
    def current(self) -> LoadedModel | None:
        """The served model (None before the first load); read it once per request."""
        return self._current

    @property
    def ready(self) -> bool:
        return self._current is not None

    # ------------------------------------------------------------------------------ refresh
    def refresh(self) -> RefreshOutcome:
        """Load and swap in what the source names now, if new; never raises."""
        with self._refresh_lock:
            try:
                candidate = self.source.resolve()
            except Exception as exc:
                return self._failure("resolve", None, exc)
            current = self._current
            if current is not None and current.key == candidate.key:
                return "unchanged"
            failed_at = self._failed.get(candidate.key)
            if failed_at is not None and time.monotonic() - failed_at < self.backoff_s:
                return "skipped"
            return self._load(candidate, current)

    def _load(self, candidate: Candidate, previous: LoadedModel | None) -> RefreshOutcome:
        from recommender_lib.engine.recommender import Recommender

        started = time.perf_counter()
        stage, bundle_dir = "fetch", None
        try:
            bundle_dir = self.source.fetch(candidate)
            stage = "load"
            recommender = Recommender.load(bundle_dir)
            if candidate.bundle_version not in (None, recommender.version):
                raise BundleError(
                    f"registered as bundle {candidate.bundle_version}, "
                    f"the manifest says {recommender.version}"
                )
            view = ServingView.build(recommender, self.similar_cache_size)
            if self.warm_up:
                stage = "warm_up"
                view.warm_up()
        except Exception as exc:
            self._failed[candidate.key] = time.monotonic()
            if bundle_dir is not None and bundle_dir not in self._kept:
                self.source.prune(self._kept)  # a retry downloads it afresh
            return self._failure(stage, candidate, exc)
        loaded = LoadedModel(
            view=view,
            key=candidate.key,
            source=self.source.kind,
            bundle_dir=bundle_dir,
            loaded_at=datetime.now(UTC).isoformat(timespec="seconds"),
            model_name=self.source.model_name,
            alias=self.source.alias,
            registry_version=candidate.registry_version,
        )
        with self._swap_lock:
            self._current = loaded
            self.reloads += 1
        self._failed.pop(candidate.key, None)
        self._kept = {bundle_dir} | ({previous.bundle_dir} if previous is not None else set())
        self.source.prune(self._kept)  # bundles older than the previous one
        log_event(
            logger,
            logging.INFO,
            "model_loaded",
            model_version=loaded.model_version,
            registry_version=loaded.registry_version,
            previous_version=previous.model_version if previous else None,
            seconds=round(time.perf_counter() - started, 3),
        )
        return "loaded"

    def _failure(self, stage: str, candidate: Candidate | None, exc: Exception) -> RefreshOutcome:
        with self._swap_lock:
            self.reload_failures += 1
        current = self._current
        log_event(
            logger,
            logging.ERROR,
            "model_reload_failed",
            stage=stage,
            registry_version=candidate.registry_version if candidate else None,
            bundle_version=candidate.bundle_version if candidate else None,
            serving_version=current.model_version if current else None,
            error=f"{type(exc).__name__}: {exc}",
            exc_info=stage != "resolve",
        )
        return "failed"

    # ------------------------------------------------------------------------------ watcher
    def start(self) -> None:
        """Poll in a daemon thread: refresh now, then every `interval_s` until `stop()`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.interval_s)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling; waits up to `timeout` for a refresh in progress."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
