"""From a new dump to a new served version, with nobody clicking — loopback only.

The mirror serves dump v1 → the IMDb sensor requests a run → the `full_refresh` run completes
(executed in process, as the daemon would launch it) → the API serves v1 → the mirror switches
to v2 → the sensor fires once → the API serves v2 with no failed request in between → a v3 whose
data fails a blocking check never reaches the API.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import httpx
import mlflow
import pytest

from orchestration.sensors import imdb_dump_sensor
from recommender_lib.registry.client import Registry
from recommender_lib.sources.formats import IMDB_RATINGS_FILE
from serving.app import create_app
from serving.model_store import ModelStore
from serving.settings import ServingSettings
from tests.support.http_mirror import HttpMirror
from tests.support.mirror_edit import copy_mirror, edit_gzip_lines, replace_field
from tests.support.serving import live_server, wait_for

pytestmark = pytest.mark.slow

RUN_CONFIG = {
    "ops": {
        "two_tower_model": {
            "config": {"epochs": 2, "embedding_dim": 8, "tower_units": [16], "head_units": [16]}
        },
        # Tiny data and a 2-epoch model: gate on RMSE only, and allow retraining noise (the
        # ranking metrics of such a model move by 10-15 % between retrains on new dumps).
        "model_evaluation_beats_baselines": {"config": {"ndcg_ratio": 0.0, "cold_ndcg_ratio": 0.0}},
        "model_version_not_worse_than_champion": {"config": {"tolerance": 0.3}},
    }
}
RECOMMEND_BODY = {"ratings": [{"title": "1", "rating": 5}], "k": 5}


def _set_mtime(root: Path, when: datetime) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (when.timestamp(), when.timestamp()))


def _edit_imdb_ratings(www: Path, value_index: int, value: str, when: datetime) -> None:
    """Rewrite one field of every 10th IMDb ratings row and give the file a new Last-Modified."""
    path = www / "imdb" / IMDB_RATINGS_FILE

    def edit(lines: list[str]) -> list[str]:
        return [lines[0]] + [
            replace_field(line, "\t", value_index, value) if i % 10 == 0 else line
            for i, line in enumerate(lines[1:])
        ]

    edit_gzip_lines(path, edit)
    os.utime(path, (when.timestamp(), when.timestamp()))


class RequestLoop:
    """Background clients hitting the API until stopped; records every status and version."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.results: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while not self._stop.is_set():
                for response in (
                    client.get("/titles/1/similar", params={"k": 5}),
                    client.post(
                        "/recommendations", json={"ratings": [{"title": "1", "rating": 5}]}
                    ),
                ):
                    body = response.json() if response.status_code == 200 else {}
                    self.results.append((response.status_code, body.get("model_version")))

    def __enter__(self) -> RequestLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def test_new_dumps_reach_the_api_and_bad_data_never_does(
    sample_mirror, tmp_path: Path, dagster_home: Path, make_platform
) -> None:
    www = copy_mirror(sample_mirror.root, tmp_path / "www")
    _set_mtime(www, datetime(2026, 11, 20, tzinfo=UTC))
    with HttpMirror(www) as mirror:
        platform = make_platform(mirror, env={"CINE_RELOAD_INTERVAL_S": "0.2"})
        settings, env = platform.settings, platform.env
        job = platform.defs.resolve_job_def("full_refresh")
        instance = dg.DagsterInstance.get()
        cursor: str | None = None

        def tick() -> list[dg.RunRequest]:
            nonlocal cursor
            context = dg.build_sensor_context(
                cursor=cursor, resources={"raw_sources": platform.resource("raw_sources")}
            )
            output = imdb_dump_sensor(context)
            if isinstance(output, dg.SensorResult):
                cursor = output.cursor or cursor
                return list(output.run_requests or [])
            return []

        def run(request: dg.RunRequest) -> dg.ExecuteInProcessResult:
            return job.execute_in_process(
                run_config=RUN_CONFIG, instance=instance, tags=request.tags, raise_on_error=False
            )

        def champion() -> str | None:
            info = Registry.from_settings(settings).champion()
            return None if info is None else info.version

        # v1: the first tick finds nothing trained yet.
        requests_v1 = tick()
        assert len(requests_v1) == 1
        assert run(requests_v1[0]).success and champion() == "1"
        assert tick() == []  # unchanged dumps: no second run

        store = ModelStore.from_settings(ServingSettings.from_env(env))
        with live_server(create_app(store)) as base_url:
            wait_for(lambda: store.ready, 120, "the first bundle to load")
            v1 = httpx.get(f"{base_url}/version").json()["model_version"]

            with RequestLoop(base_url) as loop:
                # v2: a new IMDb ratings dump (more votes on some titles).
                _edit_imdb_ratings(www, 2, "123456", datetime(2026, 11, 21, tzinfo=UTC))
                requests_v2 = tick()
                assert len(requests_v2) == 1 and tick() == []
                assert requests_v2[0].run_key != requests_v1[0].run_key
                assert run(requests_v2[0]).success and champion() == "2"
                wait_for(
                    lambda: httpx.get(f"{base_url}/version").json()["model_version"] != v1,
                    60,
                    "the API to serve version 2",
                )
                v2 = httpx.get(f"{base_url}/version").json()["model_version"]
                wait_for(lambda: any(v == v2 for _, v in loop.results), 30, "requests on v2")

            statuses = {status for status, _ in loop.results}
            assert statuses == {200}, f"failed requests during the swap: {statuses}"
            versions = [v for _, v in loop.results]
            assert v1 in versions and v2 in versions

            # v3: a dump whose ratings are out of range fails imdb_titles' pandera check.
            _edit_imdb_ratings(www, 1, "11.5", datetime(2026, 11, 22, tzinfo=UTC))
            requests_v3 = tick()
            assert len(requests_v3) == 1
            result = run(requests_v3[0])
            checks = {
                (e.asset_key.to_user_string(), e.check_name): e.passed
                for e in result.get_asset_check_evaluations()
            }
            assert checks[("imdb_titles", "pandera_schema")] is False
            materialized = {
                e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
            }
            assert not {"two_tower_model", "model_version", "champion"} & materialized
            assert champion() == "2"
            assert len(Registry(settings.mlflow_tracking_uri, "cine-reco").list_versions()) == 2
            # One MLflow run per run that trained (v1, v2); the v3 run trained nothing.
            client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
            experiment = client.get_experiment_by_name("cine-reco")
            runs = client.search_runs([experiment.experiment_id])
            assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
            store.refresh()
            assert httpx.get(f"{base_url}/version").json()["model_version"] == v2
