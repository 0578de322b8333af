"""The FastAPI app: `create_app()` builds one; `app` is for `uvicorn serving.app:app`.

Importing this module loads nothing and touches no network: the model store starts polling in
the app's lifespan, so `/health` answers at once and `/ready` turns 200 after the first load.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST

from recommender_lib.sources.feedback.store import FeedbackStore
from serving import errors
from serving import schemas as s
from serving.api import NOT_LOADED, router
from serving.feedback_api import open_feedback_store
from serving.feedback_api import router as feedback_router
from serving.logs import configure_logging
from serving.metrics import ServingMetrics
from serving.middleware import RequestContextMiddleware
from serving.model_store import Fallback, ModelStore
from serving.settings import ServingSettings

STATIC_DIR = Path(__file__).resolve().parent / "static"
INDEX_FILE = STATIC_DIR / "index.html"


class OptionalStaticFiles(StaticFiles):
    """StaticFiles that answers 404 (not 500) while the folder does not exist yet."""

    async def check_config(self) -> None:
        if self.directory is not None and Path(self.directory).is_dir():
            await super().check_config()


def limit_blas_threads(threads: int) -> Callable[[], None]:
    """Cap BLAS threads (0: no cap); returns what undoes it.

    Small per-request products gain nothing from BLAS threads, which only spin against the
    requests running in parallel in the thread pool.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # an optional speed-up: serve anyway
        return lambda: None
    if threads <= 0:
        return lambda: None
    return threadpool_limits(limits=threads, user_api="blas").restore_original_limits


def _store(request: Request) -> ModelStore:
    return request.app.state.store


def _ops_routes(app: FastAPI) -> None:
    @app.get("/health", response_model=s.HealthResponse, tags=["ops"])
    def health(request: Request) -> dict[str, Any]:
        """Liveness: always 200 while the process serves HTTP."""
        current = _store(request).current
        if current is None:
            return {"status": "ok", "model_version": None}
        request.state.model_version = current.model_version
        return {"status": "ok", "model_version": current.model_version}

    @app.get("/ready", response_model=s.ReadyResponse, responses=NOT_LOADED, tags=["ops"])
    def ready(request: Request) -> Any:
        """Readiness: 200 once a model is loaded, 503 before."""
        current = _store(request).current
        if current is None:
            return JSONResponse({"detail": "no model loaded yet"}, status_code=503)
        request.state.model_version = current.model_version
        return {"status": "ready", "model_version": current.model_version}

    @app.get("/version", response_model=s.VersionResponse, responses=NOT_LOADED, tags=["ops"])
    def version(request: Request) -> dict[str, Any]:
        """The served bundle's manifest (without the file hashes), its registry version, and
        `fallback` when it is not the version the alias names (why, and which one that is)."""
        store = _store(request)
        current, fallback = store.current, store.fallback
        if current is None:
            raise HTTPException(503, "no model loaded yet")
        request.state.model_version = current.model_version
        if fallback is not None and fallback.served_key != current.key:
            fallback = None  # from before a swap that happened meanwhile
        registry = None
        if current.registry_version is not None:
            registry = {
                "model_name": current.model_name,
                "version": current.registry_version,
                "alias": current.alias if fallback is None else None,
            }
        return {
            "model_version": current.model_version,
            "source": current.source,
            "registry": registry,
            "fallback": _fallback(fallback, current.alias),
            "loaded_at": current.loaded_at,
            "served_model": _served_model(current.manifest),
            "manifest": {k: v for k, v in current.manifest.items() if k != "files"},
        }

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
        tags=["ops"],
    )
    def metrics(request: Request) -> Response:
        """Prometheus metrics (text exposition format)."""
        body = request.app.state.metrics.exposition()
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        """The try-it page (`serving/static/index.html`)."""
        if not INDEX_FILE.is_file():
            raise HTTPException(404, "no web page installed")
        return FileResponse(INDEX_FILE, media_type="text/html")


def create_app(
    store: ModelStore | None = None,
    settings: ServingSettings | None = None,
    *,
    watch: bool = True,
    feedback: FeedbackStore | None = None,
) -> FastAPI:
    """An app serving `store` (default: from `settings`, default: the environment).

    With `watch`, the lifespan starts the store's polling thread and stops it on shutdown. The
    feedback event store is `feedback`, else opened at startup from `settings.feedback_url`
    (and closed at shutdown).
    """
    settings = settings or ServingSettings.from_env()
    store = store or ModelStore.from_settings(settings)
    configure_logging()
    metrics = ServingMetrics(store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        restore_blas = limit_blas_threads(settings.blas_threads)
        if app.state.feedback is None:
            app.state.feedback = await anyio.to_thread.run_sync(
                open_feedback_store, settings.feedback_url
            )
        if watch:
            store.start()
        try:
            yield
        finally:
            if watch:
                await anyio.to_thread.run_sync(store.stop)
            if feedback is None and app.state.feedback is not None:
                app.state.feedback.close()  # ours: opened from the settings
                app.state.feedback = None
            restore_blas()

    # `/docs` and `/redoc` load Swagger UI / ReDoc from the app (`/static-offline-docs`), not a
    # CDN: the docs work on a machine without internet.
    app = FastAPIOffline(
        title="Ciné-Reco",
        summary="Similar titles, title search and personalised movie recommendations.",
        version="1.0.0",
        lifespan=lifespan,
        # The API routes go straight into the app's routes: an included router adds a
        # matching layer (~25 µs) to every request.
        routes=[*router.routes, *feedback_router.routes],
    )
    app.state.store = store
    app.state.feedback = feedback
    app.state.metrics = metrics
    app.state.settings = settings
    errors.install(app)
    _ops_routes(app)
    app.mount("/static", OptionalStaticFiles(directory=STATIC_DIR, check_dir=False), "static")
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "X-Model-Version"],
        )

    def current_version() -> str | None:
        current = store.current
        return current.model_version if current else None

    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        current_version=current_version,
        max_body_bytes=settings.max_body_bytes,
    )
    return app


app = create_app()


def _fallback(fallback: Fallback | None, alias: str | None) -> dict[str, Any] | None:
    if fallback is None:
        return None
    wanted = fallback.wanted
    return {
        "reason": fallback.reason,
        "since": fallback.since,
        "wanted": {
            "alias": alias,
            "version": wanted.registry_version,
            "bundle_version": wanted.bundle_version,
        },
    }


def _served_model(manifest: dict[str, Any]) -> dict[str, Any] | None:
    model = manifest.get("model")
    if not isinstance(model, dict):
        return None
    rule = model.get("ranking_rule") or {}
    return {"trained_on": model.get("trained_on", {}), "ranking_rule": rule.get("description", "")}
