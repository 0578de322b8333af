"""Serving settings from environment variables (defaults from `recommender_lib.config`).

| variable | default | meaning |
|---|---|---|
| `CINE_BUNDLE_DIR` | unset | air-gapped: serve this bundle dir, reload when its manifest changes |
| `MLFLOW_TRACKING_URI` | `Settings.from_env()` | registry to poll when no bundle dir is set |
| `CINE_MODEL_NAME` | `cine-reco` | registered model name |
| `CINE_MODEL_ALIAS` | `champion` | alias served |
| `CINE_RELOAD_INTERVAL_S` | 10 | seconds between polls for a new version |
| `CINE_RELOAD_BACKOFF_S` | 300 | seconds before a bundle that did not verify/load is tried again |
| `CINE_RELOAD_RETRY_MAX_S` | 60 | cap of the retry delay after an environment error (unwritable |
| | | cache, registry down): the interval, doubling per failure, up to this |
| `CINE_PROMOTION_LOG` | `<data_dir>/registry/promotions.jsonl` | where fallbacks find the |
| | | previous champions when the champion does not verify |
| `CINE_SERVING_DIR` | `<data_dir>/serving` | download cache of registry bundles |
| `CINE_CORS_ORIGINS` | unset (CORS closed) | comma-separated allowed origins |
| `CINE_MAX_BODY_BYTES` | 262144 | larger request bodies get 413 (a full feedback batch fits) |
| `CINE_SIMILAR_CACHE_SIZE` | 2048 | rendered similar-titles responses kept per model (0: off) |
| `CINE_BLAS_THREADS` | 1 | BLAS threads per process (0: leave as is); requests run in parallel |
| `CINE_FEEDBACK_URL` | `Settings.from_env()` | feedback event store (SQLite file or Postgres) |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from recommender_lib.config import Settings
from recommender_lib.registry.client import CHAMPION, DEFAULT_MODEL_NAME, default_promotion_log

ENV_BUNDLE_DIR = "CINE_BUNDLE_DIR"
ENV_MODEL_NAME = "CINE_MODEL_NAME"
ENV_MODEL_ALIAS = "CINE_MODEL_ALIAS"
ENV_RELOAD_INTERVAL_S = "CINE_RELOAD_INTERVAL_S"
ENV_RELOAD_BACKOFF_S = "CINE_RELOAD_BACKOFF_S"
ENV_RELOAD_RETRY_MAX_S = "CINE_RELOAD_RETRY_MAX_S"
ENV_PROMOTION_LOG = "CINE_PROMOTION_LOG"
ENV_SERVING_DIR = "CINE_SERVING_DIR"
ENV_CORS_ORIGINS = "CINE_CORS_ORIGINS"
ENV_MAX_BODY_BYTES = "CINE_MAX_BODY_BYTES"
ENV_BLAS_THREADS = "CINE_BLAS_THREADS"
ENV_SIMILAR_CACHE_SIZE = "CINE_SIMILAR_CACHE_SIZE"


def _number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {raw!r}")
    return value


@dataclass(frozen=True)
class ServingSettings:
    """Resolved serving settings; `ServingSettings.from_env()` applies the defaults."""

    bundle_dir: Path | None
    tracking_uri: str
    model_name: str
    model_alias: str
    reload_interval_s: float
    reload_backoff_s: float
    serving_dir: Path
    cors_origins: tuple[str, ...]
    max_body_bytes: int
    blas_threads: int = 1
    similar_cache_size: int = 2048
    reload_retry_max_s: float = 60.0
    promotion_log: Path | None = None
    feedback_url: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingSettings:
        env = os.environ if environ is None else environ
        base = Settings.from_env(dict(env))
        bundle_dir = env.get(ENV_BUNDLE_DIR)
        origins = (env.get(ENV_CORS_ORIGINS) or "").split(",")
        return cls(
            bundle_dir=Path(bundle_dir).resolve() if bundle_dir else None,
            tracking_uri=base.mlflow_tracking_uri,
            model_name=env.get(ENV_MODEL_NAME) or DEFAULT_MODEL_NAME,
            model_alias=(env.get(ENV_MODEL_ALIAS) or CHAMPION).removeprefix("@"),
            reload_interval_s=_number(env, ENV_RELOAD_INTERVAL_S, 10.0, 0.05),
            reload_backoff_s=_number(env, ENV_RELOAD_BACKOFF_S, 300.0, 0.0),
            serving_dir=Path(env.get(ENV_SERVING_DIR) or base.data_dir / "serving"),
            cors_origins=tuple(o.strip() for o in origins if o.strip()),
            max_body_bytes=int(_number(env, ENV_MAX_BODY_BYTES, 256 * 1024, 1)),
            blas_threads=int(_number(env, ENV_BLAS_THREADS, 1, 0)),
            similar_cache_size=int(_number(env, ENV_SIMILAR_CACHE_SIZE, 2048, 0)),
            reload_retry_max_s=_number(env, ENV_RELOAD_RETRY_MAX_S, 60.0, 0.0),
            promotion_log=Path(env.get(ENV_PROMOTION_LOG) or default_promotion_log(base)),
            feedback_url=base.feedback_url,
        )
