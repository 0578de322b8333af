"""Resources: where the sources live and how raw files are fetched, and the DuckDB warehouse."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

with warnings.catch_warnings():  # dagster-mlflow is marked beta; the warning is noise here
    warnings.simplefilter("ignore", dg.BetaWarning)
    from dagster_mlflow.resources import CONFIG_SCHEMA as MLFLOW_CONFIG_SCHEMA
    from dagster_mlflow.resources import MlFlow

from recommender_lib.config import Settings
from recommender_lib.registry.client import DEFAULT_MODEL_NAME, Registry, default_promotion_log
from recommender_lib.registry.relocation import artifact_root
from recommender_lib.registry.tracking import (
    DEFAULT_EXPERIMENT,
    end_orphaned_runs,
    ensure_experiment,
)
from recommender_lib.sources.download import fetch_versioned
from recommender_lib.sources.feedback.store import FeedbackStore
from recommender_lib.sources.formats import IMDB_HEADERS
from recommender_lib.sources.integrity import IntegrityError, verify_gzip_tsv, verify_movielens_zip
from recommender_lib.sources.raw_store import FetchedFile, current_version
from recommender_lib.sources.retry import DownloadError, is_permanent_download_error
from recommender_lib.sources.tmdb import (
    DEFAULT_REQUESTS_PER_SECOND,
    ENV_TMDB_API_KEY,
    TMDB_API_BASE_URL,
    TMDB_IMAGE_BASE_URL,
    TmdbClient,
)
from recommender_lib.sources.transfer import DownloadProgress
from recommender_lib.warehouse import storage

log = logging.getLogger(__name__)


class RawSourcesResource(dg.ConfigurableResource):
    """Source URLs (`http(s)://` or `file://`) and the versioned raw-file store."""

    imdb_base_url: str
    movielens_url: str
    raw_dir: str
    retention: int = 3
    retries: int = 4
    backoff_s: float = 2.0
    timeout_s: float = 120.0

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> RawSourcesResource:
        """The sources and raw store of `settings`; `options` set the other fields (retries...)."""
        return cls(
            imdb_base_url=settings.imdb_base_url,
            movielens_url=settings.movielens_url,
            raw_dir=str(settings.raw_dir),
            retention=settings.raw_retention,
            **options,
        )

    def imdb_store(self, filename: str) -> Path:
        return Path(self.raw_dir) / "imdb" / filename.removesuffix(".tsv.gz")

    @property
    def movielens_store(self) -> Path:
        return Path(self.raw_dir) / "movielens"

    def fetch_imdb(self, context: dg.AssetExecutionContext, filename: str) -> FetchedFile:
        """Fetch one IMDb dump file; verify the gzip stream and its header line."""
        columns = IMDB_HEADERS[filename]
        return self._fetch(
            context,
            f"{self.imdb_base_url.rstrip('/')}/{filename}",
            self.imdb_store(filename),
            verify=lambda path: verify_gzip_tsv(path, columns),
        )

    def fetch_movielens(self, context: dg.AssetExecutionContext) -> FetchedFile:
        """Fetch the MovieLens zip; verify CRCs, layout and the published `.md5`; extract it."""
        return self._fetch(
            context,
            self.movielens_url,
            self.movielens_store,
            verify=verify_movielens_zip,
            md5_url=f"{self.movielens_url}.md5",
            extract_zip=True,
        )

    def current_imdb(self, filename: str) -> FetchedFile:
        return _require_current(self.imdb_store(filename))

    def current_movielens(self) -> FetchedFile:
        return _require_current(self.movielens_store)

    def _fetch(
        self, context: dg.AssetExecutionContext, url: str, store: Path, **kwargs
    ) -> FetchedFile:
        def log_progress(p: DownloadProgress) -> None:
            total = f"/{p.bytes_total / 1e6:.1f}" if p.bytes_total else ""
            context.log.info(
                f"{url}: {p.bytes_done / 1e6:.1f}{total} MB at {p.rate_bytes_per_s / 1e6:.1f} MB/s"
            )

        try:
            fetched = fetch_versioned(
                url,
                store,
                retention=self.retention,
                retries=self.retries,
                backoff_s=self.backoff_s,
                timeout_s=self.timeout_s,
                progress=log_progress,
                **kwargs,
            )
        except (DownloadError, IntegrityError) as exc:
            if is_permanent_download_error(exc):  # a retry of the step cannot fix it
                raise dg.Failure(description=str(exc), allow_retries=False) from exc
            raise
        state = "new version" if fetched.changed else "unchanged, kept"
        context.log.info(f"{url}: {state} {fetched.version} at {fetched.path}")
        return fetched


class ArtifactStoreResource(dg.ConfigurableResource):
    """Folder for feature files and trained models, one sub-folder per Dagster run."""

    root: str

    def run_dir(self, kind: str, run_id: str) -> Path:
        return Path(self.root) / kind / run_id


class RegistryResource(dg.ConfigurableResource):
    """The MLflow model registry: registered-model name, where bundles are built, promotion log."""

    tracking_uri: str
    model_name: str = DEFAULT_MODEL_NAME
    experiment_name: str = DEFAULT_EXPERIMENT
    bundle_root: str
    promotion_log: str

    def bundle_dir(self, run_id: str) -> Path:
        return Path(self.bundle_root) / run_id

    def registry(self, model_name: str | None = None) -> Registry:
        """The `Registry` of `model_name` (default: this resource's) with the promotion log."""
        return Registry(self.tracking_uri, model_name or self.model_name, self.promotion_log)


class TmdbResource(dg.ConfigurableResource):
    """TMDb API v3 for the optional poster enrichment; off (no request made) without a key.

    `from_env` takes the key from `TMDB_API_KEY` as a `dg.EnvVar` (resolved at run time, never
    shown in the UI or stored in run config) only when the variable is set: an unset `EnvVar`
    would fail every run that builds this resource.
    """

    api_key: str | None = None
    api_base_url: str = TMDB_API_BASE_URL
    image_base_url: str = TMDB_IMAGE_BASE_URL
    requests_per_second: float = DEFAULT_REQUESTS_PER_SECOND
    refresh_after_days: float = 30.0
    max_titles_per_run: int = 5000
    timeout_s: float = 10.0
    retries: int = 3
    backoff_s: float = 0.5

    @classmethod
    def from_env(cls, **options: Any) -> TmdbResource:
        """The resource with the key of `TMDB_API_KEY` when it is set in this process (else off);
        `options` set the other fields."""
        key = dg.EnvVar(ENV_TMDB_API_KEY) if os.environ.get(ENV_TMDB_API_KEY) else None
        return cls(api_key=key, **options)

    @property
    def enabled(self) -> bool:
        return bool(self.api_key)

    def client(self) -> TmdbClient:
        """A client for this configuration (call only when `enabled`)."""
        if not self.api_key:
            raise ValueError(f"TMDb is off: set {ENV_TMDB_API_KEY}")
        return TmdbClient(
            self.api_key,
            api_base_url=self.api_base_url,
            requests_per_second=self.requests_per_second,
            timeout_s=self.timeout_s,
            retries=self.retries,
            backoff_s=self.backoff_s,
        )


class FeedbackStoreResource(dg.ConfigurableResource):
    """The application feedback event store (`CINE_FEEDBACK_URL`: an SQLite file or Postgres)
    that the API writes; `app_feedback` and `feedback_sensor` read it."""

    url: str

    @contextmanager
    def get_store(self) -> Iterator[FeedbackStore]:
        """The store, open for the block (schema created when missing); closed after."""
        store = FeedbackStore.open(self.url)
        try:
            yield store
        finally:
            store.close()


WAREHOUSE_POOL = "duckdb_warehouse"


REBUILD_WAREHOUSE_TAG = "cine/rebuild_warehouse"


class WarehouseResource(DuckDBResource):
    """The DuckDB warehouse file; its folder is created on first use.

    DuckDB allows one writing process per file: warehouse assets and checks share the
    `duckdb_warehouse` concurrency pool so steps of parallel runs take turns, and a lock held by
    another process is waited for (DuckDBResource's backoff). A corrupt, truncated or foreign file
    fails at once with `dg.Failure(allow_retries=False)` naming the remedy; in a run tagged
    `cine/rebuild_warehouse` (the `rebuild_warehouse` job) such a file is first moved aside.
    """

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        run = context.dagster_run
        if run is None or run.tags.get(REBUILD_WAREHOUSE_TAG) != "true":
            return
        moved = storage.set_aside_if_unreadable(self.database)
        if moved is not None and context.log is not None:
            context.log.warning(f"{moved[1]}; moved aside to {moved[0]}, rebuilding")

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        config = {"custom_user_agent": "dagster", **self.connection_config}
        try:
            conn = storage.open_warehouse(self.database, config=config)
        except storage.WarehouseUnreadableError as exc:
            raise dg.Failure(
                description=str(exc),
                metadata={"path": dg.MetadataValue.path(str(exc.path)), "kind": exc.kind,
                          "remedy": storage.REBUILD_HINT},
                allow_retries=False,
            ) from exc  # fmt: skip
        except duckdb.IOException as exc:
            if not storage.is_lock_conflict(exc):
                raise
            with super().get_connection() as waited:  # another process writes: wait for it
                yield waited
            return
        try:
            yield conn
        finally:
            conn.close()


@dg.resource(
    config_schema={
        **MLFLOW_CONFIG_SCHEMA,
        "artifact_root": dg.Field(
            dg.Noneable(str), default_value=None, description="Artifact folder of the experiment."
        ),
    },
    description="dagster-mlflow's tracking resource; creates the experiment first.",
)
def mlflow_tracking(init_context: dg.InitResourceContext) -> LazyMlFlow:
    """One MLflow run per Dagster run that logs (found again by its `dagster_run_id` tag).

    dagster-mlflow's `MlFlow` starts its run when it is built, and Dagster builds a run's
    resources up front, so the run is created lazily — only when a step logs — and every step
    that logs ends it (see `orchestration.tracking`): a run that trains nothing (e.g. stopped by a
    data check) creates no MLflow run, and none is ever left RUNNING.
    """
    return LazyMlFlow(init_context)


class LazyMlFlow:
    """Builds dagster-mlflow's `MlFlow` (which starts or resumes the run) on first `get()`.

    Before that it ends the RUNNING MLflow runs of Dagster runs that are over (a run killed
    with SIGKILL never ends its own), so the next run that logs leaves none behind.
    """

    def __init__(self, init_context: dg.InitResourceContext) -> None:
        self._init_context = init_context
        self._mlflow: MlFlow | None = None

    def get(self) -> MlFlow:
        if self._mlflow is None:
            config = self._init_context.resource_config
            root = config.get("artifact_root")
            ensure_experiment(
                config["mlflow_tracking_uri"],
                config["experiment_name"],
                Path(root) if root else None,
            )
            self._end_orphans(config["mlflow_tracking_uri"], config["experiment_name"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", dg.BetaWarning)
                self._mlflow = MlFlow(self._init_context)
        return self._mlflow

    def _end_orphans(self, tracking_uri: str, experiment_name: str) -> None:
        instance = self._init_context.instance
        if instance is None:
            return
        try:
            ended = end_orphaned_runs(
                tracking_uri,
                lambda run_id: mlflow_status_for(instance.get_run_by_id(run_id)),
                experiment_name=experiment_name,
            )
        except Exception as exc:  # hygiene must never fail the run that logs
            log.warning("could not end orphaned MLflow runs: %s", exc)
            return
        for run_id, status in ended.items():
            log.warning("ended orphaned MLflow run %s as %s", run_id, status)


def mlflow_status_for(run: dg.DagsterRun | None) -> str | None:
    """The MLflow status that ends the MLflow run of Dagster `run`; None while it is not over.

    FAILURE → FAILED, CANCELED → KILLED, SUCCESS → FINISHED; a deleted run counts as KILLED.
    """
    if run is None:
        return "KILLED"
    return {
        dg.DagsterRunStatus.FAILURE: "FAILED",
        dg.DagsterRunStatus.CANCELED: "KILLED",
        dg.DagsterRunStatus.SUCCESS: "FINISHED",
    }.get(run.status)


def _require_current(store: Path) -> FetchedFile:
    fetched = current_version(store)
    if fetched is None:
        raise dg.Failure(f"No verified raw file in {store}: materialize the raw asset first.")
    return fetched


def default_resources(settings: Settings | None = None) -> dict[str, object]:
    """Resources of the embedded default, configured from the environment (see README)."""
    settings = settings or Settings.from_env()
    return {
        "raw_sources": RawSourcesResource.from_settings(settings),
        "warehouse_db": WarehouseResource(database=str(settings.warehouse_path)),
        "artifacts": ArtifactStoreResource(root=str(settings.data_dir / "artifacts")),
        "tmdb": TmdbResource.from_env(),
        "feedback_store": FeedbackStoreResource(url=settings.feedback_url),
        "model_registry": RegistryResource(
            tracking_uri=settings.mlflow_tracking_uri,
            bundle_root=str(settings.data_dir / "bundles"),
            promotion_log=str(default_promotion_log(settings)),
        ),
        "mlflow": mlflow_tracking.configured(
            {
                "experiment_name": DEFAULT_EXPERIMENT,
                "mlflow_tracking_uri": settings.mlflow_tracking_uri,
                # A tracking server stores artifacts itself; a local store keeps them in data/
                "artifact_root": None
                if settings.mlflow_tracking_uri.startswith("http")
                else str(artifact_root(settings)),
            }
        ),
    }
