"""The try-it page (`serving/static/`): served by the app, and a real headless-Chromium round trip.

The fast tests need no model: the page and its assets are plain files. The slow one starts the
app on a loopback port with the tiny bundle registered in a temp MLflow store and loads
`/?demo=<word>` in headless Chromium, which searches, opens the first hit, rates it and its first
similar title, asks for recommendations and marks `<body data-demo="done">`; the dumped DOM must
show all of it. It skips when no Chromium is installed (`.ci/optional-packages.sh` installs one
on CI).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.model_store import ModelStore
from serving.settings import ServingSettings
from serving.sources import DirectorySource
from tests.support.browser import dump_dom
from tests.support.serving import champion_app, live_server

STATIC = Path(__file__).resolve().parents[1] / "serving" / "static"
LIST_IDS = ("search-results", "similar-results", "recommendations")


class Page(HTMLParser):
    """Just enough of a DOM: attributes by id, `<li>` counts and text of the ids we check."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.body: dict[str, str | None] = {}
        self.by_id: dict[str, dict[str, str | None]] = {}
        self.labels: set[str] = set()
        self.controls: list[tuple[str, dict[str, str | None]]] = []
        self.resources: list[str] = []
        self.items: dict[str, list[str]] = {i: [] for i in LIST_IDS}
        self.text: dict[str, str] = {}
        self._stack: list[tuple[str, str | None]] = []  # (tag, id) of open elements
        self._item: list[str] | None = None
        self.feed(html)
        self.close()

    def _open_ids(self) -> list[str]:
        return [i for _, i in self._stack if i]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if a.get("id"):
            self.by_id[str(a["id"])] = a
        if tag == "label" and a.get("for"):
            self.labels.add(str(a["for"]))
        if tag in ("input", "select", "textarea"):
            self.controls.append((tag, a))
        if tag in ("script", "link", "img") and (a.get("src") or a.get("href")):
            self.resources.append(str(a.get("src") or a.get("href")))
        if tag in ("input", "link", "meta", "br", "img"):
            return  # void elements never close
        open_ids = self._open_ids()
        if tag == "li" and open_ids and open_ids[-1] in self.items:
            self._item = []
            self.items[open_ids[-1]].append("")
        self._stack.append((tag, a.get("id")))

    def handle_endtag(self, tag: str) -> None:
        while self._stack:
            open_tag, _ = self._stack.pop()
            if (
                open_tag == "li"
                and self._item is not None
                and not any(t == "li" for t, _ in self._stack)
            ):
                list_id = self._open_ids()[-1]
                self.items[list_id][-1] = " ".join("".join(self._item).split())
                self._item = None
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._item is not None:
            self._item.append(data)
        for element_id in self._open_ids():
            self.text[element_id] = self.text.get(element_id, "") + data


# ------------------------------------------------------------------------- fast: plain files
@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    """An app with a store that never loads: the page must not need a model."""
    tmp = tmp_path_factory.mktemp("page")
    store = ModelStore(DirectorySource(tmp / "missing"))
    settings = ServingSettings.from_env({"CINE_DATA_DIR": str(tmp)})
    return TestClient(create_app(store, settings, watch=False))


def test_page_and_assets_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = Page(page.text)
    assert {"search-input", *LIST_IDS, "model-version", "recommend-button"} <= html.by_id.keys()
    assert html.resources, "the page loads its script and stylesheet"
    for ref in html.resources:
        assert not re.match(r"^(https?:)?//", ref), f"external resource {ref}"
        asset = client.get("/" + ref.lstrip("/"))
        assert asset.status_code == 200, ref
    assert (
        client.get("/static/app.js")
        .headers["content-type"]
        .startswith(("text/javascript", "application/javascript"))
    )
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
    assert client.get("/static/missing.js").status_code == 404


def test_page_is_self_contained_and_labelled(client: TestClient) -> None:
    html = Page(client.get("/").text)
    for tag, attrs in html.controls:
        if attrs.get("type") == "hidden":
            continue
        named = attrs.get("id") in html.labels or attrs.get("aria-label")
        assert named, f"<{tag} id={attrs.get('id')!r}> has no label"
    for name in ("index.html", "app.js", "style.css"):
        text = (STATIC / name).read_text(encoding="utf-8")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), name
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    assert "alert(" not in script and "innerHTML" not in script
    for endpoint in ("titles/search", "/similar", "recommendations"):
        assert endpoint in script


def test_script_parses() -> None:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed (only used for a syntax check)")
    result = subprocess.run(
        [node, "--check", str(STATIC / "app.js")], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------- slow: real browser
@pytest.fixture(scope="module")
def loaded_app(tmp_path_factory: pytest.TempPathFactory, sample_mirror: Any) -> Iterator[FastAPI]:
    with champion_app(tmp_path_factory, sample_mirror, "page_served") as app:
        yield app


def demo_word(app: FastAPI) -> str:
    """A word of a catalogue title (4+ letters) that finds that title."""
    view = app.state.store.current.view
    for meta in view.meta:
        words = [w for w in re.findall(r"[^\W\d_]{4,}", meta["title"]) if w.isascii()]
        if words:
            return max(words, key=len)
    pytest.fail("no catalogue title has a word of 4+ letters")


@pytest.mark.slow
def test_demo_round_trip_in_headless_chromium(
    browser: str, loaded_app: FastAPI, tmp_path: Path
) -> None:
    word = demo_word(loaded_app)
    version = loaded_app.state.store.current.model_version
    with live_server(loaded_app) as base_url:
        url = f"{base_url}/?demo={quote(word)}"
        assert url.startswith("http://127.0.0.1:")
        dom = dump_dom(browser, url, tmp_path / "profile")
    page = Page(dom)
    assert page.body.get("data-demo") == "done", (page.body, page.text.get("search-error"))
    for list_id in LIST_IDS:
        assert page.items[list_id], f"#{list_id} is empty"
    assert word.casefold() in page.items["search-results"][0].casefold()
    assert "predicted" in page.items["recommendations"][0]
    assert page.text["model-version"].strip() == version
    ratings = page.text.get("ratings", "")
    assert "5.0" in ratings and "4.0" in ratings
