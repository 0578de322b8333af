"""The try-it page (`serving/static/`): served by the app, and a real headless-Chromium round trip.

The fast tests need no model: the page and its assets are plain files, and every string it
shows comes from the one dictionary in app.js, complete in each UI language. The slow ones start
the app on a loopback port with the tiny bundle registered in a temp MLflow store and load
`/?demo=<word>` in headless Chromium, which searches, opens the first hit, rates it and its first
similar title, asks for recommendations, loads their next page (and with `&user=<id>` shows that
MovieLens user's) and marks `<body data-demo="done">`; the dumped DOM must show all of it, posters
included. `scripts/page_screenshots.py` (`make screenshots`) must write real PNGs of the page, and
an app without a model must show translated error states. They skip when no Chromium is
installed (`.ci/optional-packages.sh` installs one on CI).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote
from urllib.request import urlopen

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.model_store import ModelStore
from serving.settings import ServingSettings
from serving.sources import DirectorySource
from tests.support.browser import dump_dom
from tests.support.serving import champion_app, live_server, shared_registered_tiny_store

STATIC = Path(__file__).resolve().parents[1] / "serving" / "static"
LIST_IDS = ("search-results", "similar-results", "recommendations")
UI_LANGUAGES = {"en", "fr", "de", "es", "ja"}  # at least these
RECOMMEND_K = 10  # page size of the page's recommendation requests (app.js)


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
        self.html: dict[str, str | None] = {}
        self.elements: list[tuple[str, dict[str, str | None]]] = []  # every start tag
        self._stack: list[tuple[str, str | None]] = []  # (tag, id) of open elements
        self._item: list[str] | None = None
        self.feed(html)
        self.close()

    def _open_ids(self) -> list[str]:
        return [i for _, i in self._stack if i]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.elements.append((tag, a))
        if tag == "html":
            self.html = a
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


def classes(attrs: dict[str, str | None]) -> set[str]:
    return set((attrs.get("class") or "").split())


class Untranslated(HTMLParser):
    """Visible text of a static HTML file outside `data-i18n` elements (which app.js fills)."""

    SILENT = frozenset({"title", "noscript", "script", "style"})  # set by JS or never shown

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._stack: list[tuple[str, bool]] = []  # (tag, text comes from app.js)
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag not in ("input", "link", "meta", "br", "img"):
            scripted = "data-i18n" in a or a.get("id") == "model-version" or tag in self.SILENT
            self._stack.append((tag, scripted))

    def handle_endtag(self, tag: str) -> None:
        while self._stack and self._stack.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        if data.strip() and not any(scripted for _, scripted in self._stack):
            self.found.append(data.strip())


def page_messages() -> dict[str, dict[str, str]]:
    """The MESSAGES dictionary of app.js, evaluated by node (skips without node)."""
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed (it reads the string table of app.js)")
    script = (
        "const src = require('fs').readFileSync(process.argv[1], 'utf8');"
        "const a = src.indexOf('// BEGIN MESSAGES'), b = src.indexOf('// END MESSAGES');"
        "if (a < 0 || b < a) throw new Error('no MESSAGES block');"
        "const messages = new Function(src.slice(a, b) + ';return MESSAGES;')();"
        "process.stdout.write(JSON.stringify(messages));"
    )
    result = subprocess.run(
        [node, "-e", script, str(STATIC / "app.js")], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def check_png(path: Path, width: int, height: int) -> None:
    """A real PNG of `width` x `height` pixels showing more than a blank page."""
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (width, height), (path, image.size)
        gray = image.convert("L")
        low, high = gray.getextrema()
        assert high - low > 100, f"{path} has no contrast"
        assert gray.getcolors(maxcolors=32) is None, f"{path} has under 32 shades: blank?"


def get_json(url: str) -> Any:
    with urlopen(url, timeout=30) as response:
        return json.load(response)


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


def test_every_visible_string_is_translated() -> None:
    messages = page_messages()
    assert messages.keys() >= UI_LANGUAGES
    english = messages["en"]

    def base(key: str) -> str:
        return re.sub(r"_(one|other)$", "", key)

    def english_of(key: str) -> str:
        return english.get(key) or english[f"{base(key)}_other"]

    for lang, table in messages.items():
        for key in english:
            # languages without a singular form (ja) need only the _other form
            plural_ok = key.endswith("_one") and f"{base(key)}_other" in table
            assert key in table or plural_ok, f"{lang} lacks {key!r}"
        assert not set(table) - set(english), f"{lang} has keys English lacks"
        for key, text in table.items():
            assert text.strip(), (lang, key)
            names = set(re.findall(r"\{(\w+)\}", text))
            assert names <= set(re.findall(r"\{(\w+)\}", english_of(key))), (lang, key)
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    used = set(re.findall(r'data-i18n(?:-[a-z-]+)?="(\w+)"', html))
    used |= set(re.findall(r'\bt\("(\w+)"', script))
    used |= set(re.findall(r'emptyState\("[\w-]+", "(\w+)"\)', script))
    unknown = sorted(k for k in used if k not in english and f"{k}_other" not in english)
    assert not unknown, f"strings missing from MESSAGES.en: {unknown}"
    assert len(used) > 40
    assert Untranslated(html).found == [], "text in index.html without a data-i18n key"
    for attr in ("placeholder", "aria-label"):
        for tag, attrs in Page(html).elements:
            if attrs.get(attr) is not None:
                assert attrs.get(f"data-i18n-{attr}"), f"<{tag} {attr}> is not translated"


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
    assert page.html.get("lang") == "en"
    # "load more" appended the second page of recommendations
    assert len(page.items["recommendations"]) == 2 * RECOMMEND_K
    assert page.by_id["recommendations-section"].get("data-mode") == "ratings"
    assert_posters(page)


def assert_posters(page: Page) -> None:
    """Every listed title has a poster (an image, or its initials when no image loads)."""
    posters = [(tag, a) for tag, a in page.elements if "poster" in classes(a)]
    assert len(posters) >= sum(len(page.items[i]) for i in LIST_IDS), "titles without posters"
    for tag, attrs in posters:
        if tag == "img":
            assert attrs.get("alt") and attrs.get("src"), attrs
            assert attrs.get("loading") in ("lazy", "eager"), attrs
        else:
            assert attrs.get("role") == "img" and attrs.get("aria-label"), attrs


@pytest.mark.slow
def test_screenshots_and_localized_demo(
    browser: str,
    loaded_app: FastAPI,
    tmp_path_factory: pytest.TempPathFactory,
    sample_mirror: Any,
    tmp_path: Path,
) -> None:
    from scripts import page_screenshots

    _, _, bundle_dir = shared_registered_tiny_store(tmp_path_factory, sample_mirror)
    out = tmp_path / "screenshots"
    argv = ["--bundle", str(bundle_dir), "--out", str(out), "--browser", browser]
    assert page_screenshots.main(argv) == 0
    with live_server(loaded_app) as base_url:
        word, user = page_screenshots.demo_inputs(base_url)
        expected = page_screenshots.shots(word, user)
        french = next(shot for shot in expected if "lang=fr" in shot.query)
        dom = dump_dom(browser, f"{base_url}/?{french.query}", tmp_path / "profile", offline=True)
        found = get_json(f"{base_url}/titles/search?{quote_query(q=word, limit=10, lang='fr')}")
    assert sorted(p.name for p in out.iterdir()) == sorted(s.file_name for s in expected)
    for shot in expected:
        check_png(out / shot.file_name, shot.width, shot.height)

    page = Page(dom)
    assert page.body.get("data-demo") == "done", (page.body, page.text.get("recommend-error"))
    assert page.html.get("lang") == "fr"
    assert page.text["search-heading"].strip() == "Recherche"
    assert page.text["recommendations-heading"].strip() == "Recommandations"
    for list_id in LIST_IDS:
        assert page.items[list_id], f"#{list_id} is empty"
    assert_posters(page)
    if user is not None:  # the demo ends on that MovieLens user's recommendations
        assert page.by_id["recommendations-section"].get("data-mode") == "user"
        assert str(user) in page.text["recommend-note"]
    localized = [
        c for c in found["candidates"] if c.get("localized_title") not in (None, c["title"])
    ]
    titles = [a for tag, a in page.elements if "localized-title" in classes(a)]
    if localized:  # the served bundle has French akas for some of these titles
        assert titles and all(a.get("lang") == "fr" for a in titles), titles
    else:
        assert not titles


def quote_query(**values: Any) -> str:
    return "&".join(f"{k}={quote(str(v))}" for k, v in values.items())


@pytest.mark.slow
def test_error_states_in_the_ui_language(browser: str, tmp_path: Path) -> None:
    """No model loaded: the page says so in German, in the service status and the search."""
    store = ModelStore(DirectorySource(tmp_path / "missing"))
    settings = ServingSettings.from_env({"CINE_DATA_DIR": str(tmp_path)})
    with live_server(create_app(store, settings, watch=False)) as base_url:
        dom = dump_dom(browser, f"{base_url}/?demo=Story&lang=de", tmp_path / "p", offline=True)
    page = Page(dom)
    assert page.html.get("lang") == "de"
    assert (page.body.get("data-demo") or "").startswith("error:"), page.body
    assert page.text["search-heading"].strip() == "Suche"
    assert page.text["search-error"].startswith("Fehler: "), page.text.get("search-error")
    assert "geladen" in page.text["search-error"]
    assert "geladen" in page.text["service-status"]
    assert not page.items["search-results"]
