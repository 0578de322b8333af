"""The platform under test: settings for a temp folder reading a sample mirror, and its defs.

    platform = build_platform(tmp_path, mirror)  # or the `make_platform` fixture
    platform.materialize(ingest_job.selection, instance=instance)

A mirror is a folder (read through `file://` URLs), a running loopback `HttpMirror`, or explicit
`MirrorUrls`. The definitions are `orchestration.definitions.build_defs`, so tests run exactly
the assets, checks, jobs and resources the code location serves; only raw-file downloads fail
fast (one retry, 10 ms backoff), and `resource_overrides` replaces resources by key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import dagster as dg

from orchestration.definitions import build_defs
from orchestration.resources import RawSourcesResource
from recommender_lib.config import ENV_DATA_DIR, ENV_IMDB_BASE_URL, ENV_MOVIELENS_URL, Settings
from recommender_lib.sources.formats import MOVIELENS_DEFAULT_ZIP
from tests.support.http_mirror import HttpMirror

FAST_FAILING_DOWNLOADS = {"retries": 1, "backoff_s": 0.01}


class MirrorUrls(NamedTuple):
    """Where the IMDb dumps and the MovieLens zip are fetched from."""

    imdb_base_url: str
    movielens_url: str


def mirror_urls(mirror: Path | HttpMirror | MirrorUrls) -> MirrorUrls:
    """The URLs of a mirror folder (`file://`), a served `HttpMirror`, or `MirrorUrls` as is."""
    if isinstance(mirror, MirrorUrls):
        return mirror
    zip_path = f"movielens/{MOVIELENS_DEFAULT_ZIP}"
    if isinstance(mirror, HttpMirror):
        return MirrorUrls(mirror.url_for("imdb"), mirror.url_for(zip_path))
    root = Path(mirror).resolve()
    return MirrorUrls((root / "imdb").as_uri(), (root / zip_path).as_uri())


@dataclass(frozen=True)
class Platform:
    """One platform: its environment (also good for `ServingSettings`), settings and defs."""

    env: dict[str, str]
    settings: Settings
    defs: dg.Definitions

    def resource(self, key: str) -> Any:
        return (self.defs.resources or {})[key]

    def materialize(
        self,
        selection: dg.AssetSelection | None = None,
        *,
        extra_assets: Iterable[dg.AssetsDefinition] = (),
        run_config: Mapping[str, Any] | None = None,
        instance: dg.DagsterInstance | None = None,
    ) -> dg.ExecuteInProcessResult:
        """Materialize `selection` (default: every asset) with its checks; errors are results."""
        return dg.materialize(
            [*(self.defs.assets or ()), *(self.defs.asset_checks or ()), *extra_assets],
            selection=selection,
            resources=self.defs.resources,
            run_config=run_config,
            instance=instance or dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
        )


def build_platform(
    tmp_path: Path,
    mirror: Path | HttpMirror | MirrorUrls,
    *,
    env: Mapping[str, str] | None = None,
    resource_overrides: Mapping[str, object] | None = None,
) -> Platform:
    """Settings for data in `tmp_path/data` read from `mirror` (`env` adds variables), and
    `build_defs` on them."""
    imdb_base_url, movielens_url = mirror_urls(mirror)
    full_env = {
        ENV_DATA_DIR: str(tmp_path / "data"),
        ENV_IMDB_BASE_URL: imdb_base_url,
        ENV_MOVIELENS_URL: movielens_url,
        **(env or {}),
    }
    settings = Settings.from_env(full_env)
    raw_sources = RawSourcesResource.from_settings(settings, **FAST_FAILING_DOWNLOADS)
    overrides = {"raw_sources": raw_sources, **(resource_overrides or {})}
    return Platform(full_env, settings, build_defs(settings, overrides))
