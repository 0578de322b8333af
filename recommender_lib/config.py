"""Platform settings read from environment variables, with the embedded defaults.

Every path and URL the platform uses comes from here, so one set of variables configures the
Dagster code location, the CLI tools and (later) the serving API alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

IMDB_BASE_URL = "https://datasets.imdbws.com"
MOVIELENS_URL = "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

ENV_DATA_DIR = "CINE_DATA_DIR"
ENV_IMDB_BASE_URL = "CINE_IMDB_BASE_URL"
ENV_MOVIELENS_URL = "CINE_MOVIELENS_URL"
ENV_WAREHOUSE_PATH = "CINE_WAREHOUSE_PATH"
ENV_RAW_RETENTION = "CINE_RAW_RETENTION"
ENV_MLFLOW_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_FEEDBACK_URL = "CINE_FEEDBACK_URL"


@dataclass(frozen=True)
class Settings:
    """Resolved settings; `Settings.from_env()` applies the documented defaults."""

    data_dir: Path
    imdb_base_url: str
    movielens_url: str
    warehouse_path: Path
    raw_retention: int
    mlflow_tracking_uri: str
    # the application feedback event store (`recommender_lib.sources.feedback.store`)
    feedback_url: str = ""

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        data_dir = Path(env.get(ENV_DATA_DIR) or PROJECT_ROOT / "data").resolve()
        return cls(
            data_dir=data_dir,
            imdb_base_url=(env.get(ENV_IMDB_BASE_URL) or IMDB_BASE_URL).rstrip("/"),
            movielens_url=env.get(ENV_MOVIELENS_URL) or MOVIELENS_URL,
            warehouse_path=Path(
                env.get(ENV_WAREHOUSE_PATH) or data_dir / "warehouse" / "cine_reco.duckdb"
            ),
            raw_retention=int(env.get(ENV_RAW_RETENTION) or 3),
            mlflow_tracking_uri=env.get(ENV_MLFLOW_TRACKING_URI)
            or f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}",
            feedback_url=env.get(ENV_FEEDBACK_URL)
            or f"sqlite:///{data_dir / 'feedback' / 'events.db'}",
        )
