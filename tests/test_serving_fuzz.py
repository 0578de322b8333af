"""Schema-driven fuzzing of the serving API: no request the OpenAPI schema describes gets a 5xx.

Schemathesis reads the app's own `/openapi.json` and generates requests for every operation
(valid and invalid ones), sent in process through ASGI to an app serving the real tiny bundle,
so every handler runs for real. The schema is read at import time from an app whose store
never loads (the OpenAPI document does not depend on the model, and the lazy
`schemathesis.pytest.from_fixture` relies on a pytest internal that pytest 9 removed); the
requests go to the loaded app, built by a fixture with the same `create_app`.

Random strings are almost never catalogue references, so about half of the generated cases get
real refs (and filter names) swapped in, deterministically, to reach the model code paths and
not only the 404s. Bounded: 25 derandomized examples per operation, no deadline.
"""

from __future__ import annotations

import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from serving.app import create_app
from serving.model_store import ModelStore
from serving.settings import ServingSettings
from serving.sources import DirectorySource
from tests.support.serving import champion_app

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Vocab:
    refs: list[str]
    genres: list[str]
    title_types: list[str]


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory: pytest.TempPathFactory, sample_mirror: Any) -> Iterator[FastAPI]:
    with champion_app(tmp_path_factory, sample_mirror, "fuzz_served") as app:
        yield app


@pytest.fixture(scope="module")
def vocab(fuzzed_app: FastAPI) -> Vocab:
    view = fuzzed_app.state.store.current.view
    refs = [m["ref"] for m in view.meta]
    movie_ids = [str(m["movie_id"]) for m in view.meta if m["movie_id"] is not None]
    return Vocab(
        refs=refs[:50] + movie_ids[:50],
        genres=sorted(view.genres.values()),
        title_types=sorted(view.title_types.values()),
    )


def _schema_app() -> FastAPI:
    """The app as `create_app` builds it, with a store that never loads (for its schema)."""
    data_dir = Path(tempfile.gettempdir()) / "cine-fuzz-schema"  # never written to
    store = ModelStore(DirectorySource(data_dir / "no-bundle"))
    settings_ = ServingSettings.from_env({"CINE_DATA_DIR": str(data_dir)})
    return create_app(store, settings_, watch=False)


SCHEMA_APP = _schema_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", SCHEMA_APP)


def test_loaded_app_has_the_fuzzed_schema(fuzzed_app: FastAPI) -> None:
    assert fuzzed_app.openapi() == SCHEMA_APP.openapi()


def _pick(options: list[str], seed: int) -> str:
    return options[seed % len(options)]


def realistic(case: schemathesis.Case, vocab: Vocab) -> None:
    """Swap real refs and names into about half of the cases (decided by a hash of the case)."""
    seed = zlib.crc32(repr((case.path_parameters, case.query, case.body)).encode())
    if seed % 2:
        return
    path = case.path_parameters or {}
    if isinstance(path.get("ref"), str):
        path["ref"] = _pick(vocab.refs, seed)
    if isinstance(path.get("user_id"), int):
        path["user_id"] = seed % 50
    query = case.query or {}
    for name, options in (("genres", vocab.genres), ("title_type", vocab.title_types)):
        if name in query:
            query[name] = _pick(options, seed >> 3)
    body = case.body
    if isinstance(body, dict):
        for i, rating in enumerate(body.get("ratings") or []):
            if isinstance(rating, dict) and "title" in rating:
                rating["title"] = _pick(vocab.refs, seed + 7 * i)
        for key in ("exclude", "candidates"):
            if isinstance(body.get(key), list):
                body[key] = [_pick(vocab.refs, seed + 11 * i + 3) for i in range(len(body[key]))]
        filters = body.get("filters")
        if isinstance(filters, dict):
            for name, options in (("genres", vocab.genres), ("title_types", vocab.title_types)):
                if isinstance(filters.get(name), list):
                    filters[name] = [_pick(options, seed >> 5)]


@schema.parametrize()
@settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_request_gets_a_server_error(
    case: schemathesis.Case, fuzzed_app: FastAPI, vocab: Vocab
) -> None:
    realistic(case, vocab)
    case.call_and_validate(app=fuzzed_app, checks=[not_a_server_error])
