"""Shared fixtures: generated sample mirrors, the real MovieLens copy, a temp Dagster instance
and the platform under test (settings for a temp folder + a mirror, `build_defs`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support.platform import Platform

SHARED_MOVIELENS = Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens"


@pytest.fixture(scope="session", autouse=True)
def feedback_store_outside_the_checkout(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    """Apps built from the process environment open the feedback store at
    `CINE_FEEDBACK_URL`: point it at a session temp file, never at `<checkout>/data`."""
    from recommender_lib.config import ENV_FEEDBACK_URL
    from recommender_lib.sources.feedback.store import sqlite_url

    path = tmp_path_factory.mktemp("feedback") / "events.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_FEEDBACK_URL, sqlite_url(path))
        yield


@pytest.fixture(scope="session")
def shared_movielens() -> Path:
    """The real ml-latest-small copy in ../shared (skips where it is absent)."""
    if not (SHARED_MOVIELENS / "ml-latest-small" / "ratings.csv").is_file():
        pytest.skip(f"real MovieLens copy not found at {SHARED_MOVIELENS}")
    return SHARED_MOVIELENS


@pytest.fixture(scope="session")
def sample_mirror(tmp_path_factory: pytest.TempPathFactory):
    """A small generated mirror (IMDb dumps + MovieLens zip), shared read-only by tests."""
    from recommender_lib.sources.sample_data import write_sample_mirror

    return write_sample_mirror(tmp_path_factory.mktemp("mirror"), "small", seed=7)


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A throwaway DAGSTER_HOME so runs never touch the user's instance."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    yield home


@pytest.fixture
def make_platform(tmp_path: Path) -> Callable[..., Platform]:
    """`build_platform` for this test's `tmp_path`: `make_platform(mirror, env=..., ...)`."""
    from tests.support.platform import build_platform  # Dagster loads only for tests that ask

    return partial(build_platform, tmp_path)


@pytest.fixture(scope="session")
def browser() -> str:
    """Path of a headless-capable Chromium; skips (before any bundle is built) without one."""
    from tests.support.browser import BROWSERS, find_browser

    path = find_browser()
    if path is None:
        names = ", ".join(BROWSERS)
        pytest.skip(f"no headless browser on PATH ({names}); see .ci/optional-packages.sh")
    return path
