"""The lean `/titles/{ref}/similar` path: `ContentIndex.similar_rows` and the handler's choice
between the event loop (small exact index, resolved locale) and the thread pool."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

import serving.api
import serving.view
from recommender_lib.index.content_index import ContentIndex, SimilarityFilters
from recommender_lib.index.localized_titles import Locale
from serving.app import create_app
from serving.model_store import ModelStore
from serving.settings import ServingSettings
from serving.sources import DirectorySource
from tests.support.serving import shared_registered_tiny_store

GENRES = ("Comedy", "Drama", "War")


def _index(n: int = 80, seed: int = 0, approximate: bool = False) -> ContentIndex:
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(1, n + 1))
    vectors = rng.normal(size=(n, 5))
    vectors[3] = 0.0  # a title without content: no neighbours
    meta = pd.DataFrame(
        {
            "item_id": ids,
            "title_type": rng.choice(["movie", "tvSeries"], size=n),
            "year": rng.integers(1950, 2020, size=n),
            "num_votes": rng.integers(0, 1000, size=n),
            "genres": [list(rng.choice(GENRES, size=rng.integers(1, 3))) for _ in range(n)],
        }
    )
    return ContentIndex.build(ids, vectors, meta, approximate=approximate)


@pytest.mark.parametrize("approximate", [False, True])
@pytest.mark.parametrize(
    "filters",
    [None, SimilarityFilters(title_types=frozenset({"movie"}), min_year=1980, genres=None)],
)
def test_similar_rows_equal_similar(filters: SimilarityFilters | None, approximate: bool) -> None:
    index = _index(approximate=approximate)
    assert (index.approximate is not None) == approximate
    for row in (0, 3, 17, len(index) - 1):
        for k in (1, 10, len(index) + 5):
            rows, scores = index.similar_rows(row, k, filters)
            got = list(zip(index.item_ids[rows].tolist(), scores.tolist(), strict=True))
            assert got == index.similar(int(index.item_ids[row]), k, filters)
            assert row not in rows.tolist()
    assert index.similar_rows(3, 5)[0].size == 0  # zero vector
    with pytest.raises(IndexError, match="outside the content index"):
        index.similar_rows(len(index), 5)
    with pytest.raises(ValueError, match="unknown genre"):
        index.similar_rows(0, 5, SimilarityFilters(genres=frozenset({"Western"})))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, sample_mirror: Any) -> Path:
    """The session's shared tiny bundle (built once for the serving tests)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        return shared_registered_tiny_store(tmp_path_factory, sample_mirror)[2]


def _client(bundle: Path, tmp: Path) -> TestClient:
    store = ModelStore(DirectorySource(bundle))
    assert store.refresh() == "loaded"
    env = {"CINE_DATA_DIR": str(tmp), "CINE_SIMILAR_CACHE_SIZE": "0"}
    return TestClient(create_app(store, ServingSettings.from_env(env), watch=False))


@pytest.fixture
def pool_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Names of the functions `/similar` sent to the thread pool."""
    calls: list[str] = []
    real = serving.api.run_in_threadpool

    async def counting(func: Any, *args: Any) -> Any:
        calls.append(func.__name__.lstrip("_"))  # `_similar_body` when the cache is off
        return await real(func, *args)

    monkeypatch.setattr(serving.api, "run_in_threadpool", counting)
    yield calls


def test_similar_runs_inline_on_a_small_index_and_in_the_pool_otherwise(
    bundle: Path, tmp_path: Path, pool_calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    small = _client(bundle, tmp_path)
    view = small.app.state.store.current.view  # type: ignore[attr-defined]
    ref = view.meta[0]["ref"]
    queries = [{"k": 5}, {"k": 3, "offset": 2, "genres": "Drama"}, {"k": 5, "lang": "fr"}]
    inline = [small.get(f"/titles/{ref}/similar", params=q) for q in queries]
    assert pool_calls == ["similar_body"]  # only the first request in French
    assert view.renders_inline(None) and view.renders_inline(Locale.parse("fr"))
    assert not view.renders_inline(Locale.parse("ja"))
    again = small.get(f"/titles/{ref}/similar", params=queries[2])
    assert pool_calls == ["similar_body"] and again.content == inline[2].content

    monkeypatch.setattr(serving.view, "INLINE_MAX_TITLES", 0)  # as if the catalogue were big
    big = _client(bundle, tmp_path)
    assert not big.app.state.store.current.view.renders_inline(None)  # type: ignore[attr-defined]
    pooled = [big.get(f"/titles/{ref}/similar", params=q) for q in queries]
    assert pool_calls == ["similar_body"] * 4
    for a, b in zip(inline, pooled, strict=True):
        assert a.status_code == b.status_code == 200 and a.content == b.content
        assert a.headers["vary"] == b.headers["vary"] == "Accept-Language"
        assert a.headers["x-model-version"] == b.headers["x-model-version"] == view.version
        assert a.headers["content-type"] == "application/json"


def test_unknown_title_suggestions_come_from_the_pool(
    bundle: Path, tmp_path: Path, pool_calls: list[str]
) -> None:
    client = _client(bundle, tmp_path)
    view = client.app.state.store.current.view  # type: ignore[attr-defined]
    title = view.meta[0]["title"]
    missing = client.get(f"/titles/{title[:-1]}x/similar")
    assert missing.status_code == 404 and pool_calls == ["suggestions"]
    assert missing.json()["suggestions"] == view.suggestions(f"{title[:-1]}x")
    invalid = client.get(f"/titles/{view.meta[0]['ref']}/similar", params={"k": 0})
    assert invalid.status_code == 422 and pool_calls == ["suggestions"]
