"""Offline API docs: `/docs` (Swagger UI) and `/redoc` load their files from the app itself.

The fast test reads the pages and their assets through the app; the slow one renders both in
headless Chromium with every host but loopback unresolvable, and finds the operations drawn.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.model_store import ModelStore
from serving.settings import ServingSettings
from serving.sources import DirectorySource
from tests.support.browser import dump_dom
from tests.support.serving import live_server

DOC_PAGES = ("/docs", "/redoc")
OPERATIONS = ("/titles/search", "/recommendations", "/scores")  # paths every page must show


def _app(tmp: Path):
    """An app whose store never loads: the docs need no model."""
    store = ModelStore(DirectorySource(tmp / "missing"))
    return create_app(store, ServingSettings.from_env({"CINE_DATA_DIR": str(tmp)}), watch=False)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    return TestClient(_app(tmp_path_factory.mktemp("docs")))


@pytest.mark.parametrize("page", DOC_PAGES)
def test_doc_pages_load_only_files_the_app_serves(client: TestClient, page: str) -> None:
    html = client.get(page)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    refs = re.findall(r'(?:src|href)="([^"]+)"', html.text)
    assert any(ref.endswith(".js") for ref in refs), refs
    for ref in refs:
        assert ref.startswith("/") and not ref.startswith("//"), f"external resource {ref}"
        asset = client.get(ref)
        assert asset.status_code == 200, ref
        assert len(asset.content) > 0, ref
    assert "cdn." not in html.text and "fonts.googleapis" not in html.text


@pytest.mark.slow
@pytest.mark.parametrize("page", DOC_PAGES)
def test_doc_pages_render_the_operations_without_network(
    browser: str, tmp_path: Path, page: str
) -> None:
    with live_server(_app(tmp_path / "app")) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        dom = dump_dom(browser, base_url + page, tmp_path / "profile", offline=True)
    if page == "/docs":
        assert 'class="swagger-ui' in dom
        drawn = set(re.findall(r'data-path="([^"]+)"', dom))
    else:
        assert "redoc-wrap" in dom
        drawn = {path for path in OPERATIONS if path in dom}
    assert set(OPERATIONS) <= drawn, sorted(drawn)
