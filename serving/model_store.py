"""`ModelStore`: the model being served, swapped atomically when a new version appears.

A refresh resolves the source (the MLflow alias, or a bundle directory's manifest), and when it
names something other than what is loaded: fetch the bundle (download + verify into the cache),
`Recommender.load` it (verifies every sha256 again), build the `ServingView`, run every model
path once, and only then swap ONE reference. Requests read `store.current` once and use that
object throughout, so a swap never mixes two versions in one response.

Any failure is logged and counted; the loaded model keeps serving. A candidate whose bundle is
bad (does not verify, does not load) is not tried again until the source names another one or
`backoff_s` has passed or its stored files change (`BundleSource.stamp`); one that failed for
the environment (cache not writable, registry or artifact store unreachable) is retried after
`interval_s`, doubling up to `retry_max_s`. The sources are in `serving/sources.py`.

When what the source names does not verify and nothing is loaded yet, the store serves a
fallback (`BundleSource.fallbacks`: the previous champions per the promotion log, then the
newest registered versions) and says so in `fallback` (`/version`, logs, metrics). While any
version other than the one the source names is served, `fallback` says why.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from recommender_lib.bundle.format import BundleError
from recommender_lib.registry.records import RegistryError
from serving.logs import LOGGER_NAME, log_event
from serving.sources import BundleSource, Candidate, DirectorySource, RegistrySource
from serving.view import ServingView

if TYPE_CHECKING:
    from serving.settings import ServingSettings

logger = logging.getLogger(f"{LOGGER_NAME}.model_store")
RefreshOutcome = Literal["loaded", "fallback", "unchanged", "skipped", "failed"]
MAX_FALLBACK_TRIES = 5  # fallback versions tried per refresh (each is a download + verify)


@dataclass(frozen=True)
class Fallback:
    """Why the served version (`served_key`) is not the one the source names (`wanted`)."""

    served_key: str
    wanted: Candidate
    reason: str
    since: str


@dataclass(frozen=True)
class _Failure:
    at: float  # monotonic time of the last failure
    retry_after_s: float
    count: int  # consecutive failures of this candidate
    error: str
    environment: bool  # the environment failed (retried soon), not the bundle
    stamp: str | None  # the source's stamp of the bundle's files when it was tried


def is_environment_error(exc: BaseException) -> bool:
    """True for failures of the surroundings (disk, network, registry), not of the bundle."""
    if isinstance(exc, (BundleError, RegistryError)):
        return False
    if isinstance(exc, (OSError, MemoryError)):
        return True
    return type(exc).__module__.startswith(("mlflow", "requests", "urllib3", "botocore"))


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
        retry_max_s: float = 60.0,
        warm_up: bool = True,
        similar_cache_size: int = 2048,
    ) -> None:
        self.source = source
        self.interval_s = interval_s
        self.backoff_s = backoff_s
        self.retry_max_s = retry_max_s
        self.warm_up = warm_up
        self.similar_cache_size = similar_cache_size
        self._current: LoadedModel | None = None
        self._fallback: Fallback | None = None
        self._swap_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._failed: dict[str, _Failure] = {}  # candidate key -> its last failure
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
                settings.promotion_log,
            )
        return cls(
            source,
            interval_s=settings.reload_interval_s,
            backoff_s=settings.reload_backoff_s,
            retry_max_s=settings.reload_retry_max_s,
            similar_cache_size=settings.similar_cache_size,
        )

    @property
    def current(self) -> LoadedModel | None:
        """The served model (None before the first load); read it once per request."""
        return self._current

    @property
    def fallback(self) -> Fallback | None:
        """Why the served model is not the one the source names; None when it is."""
        return self._fallback

    @property
    def ready(self) -> bool:
        return self._current is not None

    # ------------------------------------------------------------------------------ refresh
    def refresh(self) -> RefreshOutcome:
        """Load and swap in what the source names now, if new; never raises.

        When it does not load: a loaded model keeps serving (as a fallback); with nothing loaded
        and a bundle that does not verify, the first fallback version that loads is served."""
        with self._refresh_lock:
            try:
                candidate = self.source.resolve()
            except Exception as exc:
                return self._failure("resolve", None, exc)
            current = self._current
            if current is not None and current.key == candidate.key:
                self._set_fallback(None)
                return "unchanged"
            outcome: RefreshOutcome = "skipped"
            if not self._waiting(candidate):
                outcome = self._load(candidate, current)
            if outcome == "loaded":
                return outcome
            failure = self._failed[candidate.key]
            if self._current is None and not failure.environment:
                return self._fall_back(candidate, failure)
            if self._current is not None:
                self._set_fallback(self._current, candidate, failure.error)
            return outcome

    def _waiting(self, candidate: Candidate) -> bool:
        """True while a failed candidate waits for its retry and its files are unchanged."""
        failure = self._failed.get(candidate.key)
        if failure is None or time.monotonic() - failure.at >= failure.retry_after_s:
            return False
        if failure.environment or failure.stamp is None:
            return True
        stamp = self._stamp(candidate)
        if stamp is None or stamp == failure.stamp:
            return True
        log_event(
            logger, logging.INFO, "bundle_changed", registry_version=candidate.registry_version
        )
        return False

    def _stamp(self, candidate: Candidate) -> str | None:
        try:
            return self.source.stamp(candidate)
        except Exception:  # a stamp is an optimisation: without one, wait for the backoff
            return None

    def _fall_back(self, wanted: Candidate, failure: _Failure) -> RefreshOutcome:
        """Serve the first of the source's fallbacks that loads (a few per refresh)."""
        try:
            fallbacks = self.source.fallbacks(wanted)
        except Exception as exc:
            return self._failure("fallback", wanted, exc)
        tries = 0
        for candidate in fallbacks:
            if tries == MAX_FALLBACK_TRIES:
                break
            if self._waiting(candidate):
                continue
            tries += 1
            if self._load(candidate, None, (wanted, failure.error)) == "loaded":
                return "fallback"
        return "failed"

    def _set_fallback(
        self, served: LoadedModel | None, wanted: Candidate | None = None, reason: str = ""
    ) -> None:
        """Record (and log once) that `served` stands in for `wanted`; None clears it."""
        old = self._fallback
        if served is None or wanted is None:
            self._fallback = None
            return
        if old is not None and old.served_key == served.key and old.wanted == wanted:
            return
        since = datetime.now(UTC).isoformat(timespec="seconds")
        self._fallback = Fallback(served.key, wanted, reason, since)
        log_event(
            logger,
            logging.WARNING,
            "model_fallback",
            model_version=served.model_version,
            registry_version=served.registry_version,
            wanted_registry_version=wanted.registry_version,
            wanted_bundle_version=wanted.bundle_version,
            reason=reason,
        )

    def _load(
        self,
        candidate: Candidate,
        previous: LoadedModel | None,
        stands_in_for: tuple[Candidate, str] | None = None,
    ) -> RefreshOutcome:
        """Fetch, load, check, build and warm up `candidate`, then swap it in; with
        `stands_in_for` (wanted candidate, why not), it is served as a fallback."""
        from recommender_lib.engine.recommender import Recommender

        started = time.perf_counter()
        stage, bundle_dir, stamp = "fetch", None, self._stamp(candidate)
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
            self._note_failure(candidate.key, exc, stamp)
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
            self._fallback = None
            if stands_in_for is not None:
                self._set_fallback(loaded, *stands_in_for)
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
            fallback=stands_in_for is not None,
            seconds=round(time.perf_counter() - started, 3),
        )
        return "loaded"

    def _note_failure(self, key: str, exc: Exception, stamp: str | None) -> None:
        """Remember a failed candidate: bad bundles wait `backoff_s`; environment failures
        wait `interval_s`, doubling per consecutive failure up to `retry_max_s`."""
        environment = is_environment_error(exc)
        count = (self._failed[key].count + 1) if key in self._failed else 1
        if environment:
            delay = min(self.interval_s * 2 ** min(count - 1, 30), self.retry_max_s)
        else:
            delay = self.backoff_s
        error = f"{type(exc).__name__}: {exc}"
        self._failed[key] = _Failure(time.monotonic(), delay, count, error, environment, stamp)

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
            exc_info=stage not in ("resolve", "fallback"),
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
