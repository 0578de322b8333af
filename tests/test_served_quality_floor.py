"""The quality floor of what users get: real MovieLens, each user's newest 20 % removed (and
20 % of users removed entirely), the platform's library workflow on what is left (evaluated
recipe, production refit, bundle), the real API app, and every number taken through HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from recommender_lib.evaluation.served_quality import format_markdown, measure_served
from recommender_lib.evaluation.served_release import make_release
from recommender_lib.modeling.splits import build_splits
from recommender_lib.modeling.two_tower.params import TwoTowerParams
from recommender_lib.warehouse import tables as warehouse
from recommender_lib.warehouse.catalog import CatalogFilters, build_catalog
from recommender_lib.workflow.steps import connection, train_and_bundle
from serving.app import create_app
from serving.model_store import ModelStore
from serving.settings import ServingSettings
from serving.sources import DirectorySource

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


def test_served_recommendations_beat_most_popular_on_removed_ratings(
    shared_movielens: Path, tmp_path: Path
) -> None:
    held = make_release(shared_movielens / "ml-latest-small", tmp_path / "release")
    conn = warehouse.connect(":memory:")
    warehouse.load_movielens_release(conn, held.zip_path.parent / "ml-latest-small")
    build_splits(conn)
    build_catalog(conn, CatalogFilters())
    bundle, _ = train_and_bundle(connection(conn), TwoTowerParams(), tmp_path / "work", {})
    store = ModelStore(DirectorySource(bundle))
    assert store.refresh() == "loaded"
    app = create_app(store, ServingSettings.from_env({"CINE_DATA_DIR": str(tmp_path)}), watch=False)
    with TestClient(app) as client:
        out = measure_served(client, held, baselines=("most_popular",))
    print("\n" + format_markdown(out))
    assert out["users"] == 488 and out["api.unknown_users"] == 0
    assert out["api.already_rated"] == 0
    assert all(out[f"api.cold.already_rated_k{k}"] == 0 for k in (3, 5, 10))
    assert out["api.ndcg@10"] >= 1.2 * out["most_popular.ndcg@10"]
    assert out["api.rmse"] < out["most_popular.rmse"]
