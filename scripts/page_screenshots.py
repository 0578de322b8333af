"""Screenshots of the try-it page (`make screenshots`): PNGs of its scripted demo in Chromium.

Serves the app on a loopback port with a bundle (`--bundle DIR`; without it, a tiny bundle
trained in a temp folder on the generated sample data, as the tests build theirs), then loads
`/?demo=<word>&lang=<ui language>[&user=<id>]` in headless Chromium, which searches, opens a
title, rates two, shows recommendations (and a known user's) and saves the window as a PNG:
English, French (with a MovieLens user) and German on a phone-sized window. Chromium runs with
every non-loopback host unresolvable unless `--online`: posters then show the app's placeholders.

    .venv/bin/python scripts/page_screenshots.py --out docs/screenshots [--bundle DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import quote
from urllib.request import Request, urlopen

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python scripts/page_screenshots.py` from anywhere
    sys.path.insert(0, str(ROOT))

BROWSER_TIMEOUT_S = 120
VIRTUAL_TIME_MS = 20_000  # the page's demo round trip finishes well within this
SAMPLE_SEED = 7  # the sample data the tests train their tiny bundle on


@dataclass(frozen=True)
class Shot:
    """One screenshot: file stem, page query string, window size in CSS pixels."""

    name: str
    query: str
    width: int
    height: int

    @property
    def file_name(self) -> str:
        return f"{self.name}.png"


def shots(word: str, user: int | None) -> list[Shot]:
    """The screenshots taken: the demo for `word` in English, French (+ `user`), German."""
    demo = f"demo={quote(word)}"
    french = f"{demo}&lang=fr" + (f"&user={user}" if user is not None else "")
    return [
        Shot("page-en", f"{demo}&lang=en", 1280, 3400),
        Shot("page-fr", french, 1280, 3400),
        Shot("page-de-narrow", f"{demo}&lang=de", 420, 2400),
    ]


def _get_json(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    with urlopen(Request(url, data=data, headers=headers), timeout=30) as response:
        return json.load(response)


def demo_inputs(base_url: str) -> tuple[str, int | None]:
    """(word, user): a word of a popular title's name that the search finds, and the first
    MovieLens user of the served model (None when the API does not list users)."""
    popular = _get_json(f"{base_url}/recommendations", {"ratings": [], "k": 50})["items"]
    word = None
    for item in popular:
        words = [w for w in re.findall(r"[^\W\d_]{4,}", item["title"]) if w.isascii()]
        if words:
            word = max(words, key=len)
            break
    if word is None:
        raise SystemExit("no popular title has a word of 4+ ASCII letters to search for")
    try:
        users = _get_json(f"{base_url}/movielens-users?limit=1")["items"]
    except HTTPError:
        users = []
    return word, (int(users[0]["user_id"]) if users else None)


def screenshot(browser: str, url: str, png: Path, shot: Shot, profile: Path, offline: bool) -> None:
    """Save the window of `url` (after its scripts ran) as `png`; SystemExit on failure."""
    from tests.support.browser import OFFLINE

    png.unlink(missing_ok=True)
    cmd = [
        browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--no-default-browser-check", "--disable-extensions",
        "--disable-background-networking", "--disable-sync", "--hide-scrollbars",
        f"--user-data-dir={profile}", *([OFFLINE] if offline else []),
        f"--window-size={shot.width},{shot.height}", "--force-device-scale-factor=1",
        f"--virtual-time-budget={VIRTUAL_TIME_MS}", f"--screenshot={png}", url,
    ]  # fmt: skip
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{browser} took over {BROWSER_TIMEOUT_S} s on {url}") from None
    if result.returncode != 0 or not png.is_file():
        raise SystemExit(f"no screenshot of {url}: {result.stderr[-2000:]}")


def take_screenshots(
    browser: str, base_url: str, out_dir: Path, work: Path, *, offline: bool = True
) -> list[Path]:
    """Every `shots` PNG of the page served at `base_url`, written into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    word, user = demo_inputs(base_url)
    written = []
    for shot in shots(word, user):
        png = out_dir / shot.file_name
        url = f"{base_url}/?{shot.query}"
        screenshot(browser, url, png, shot, work / f"profile-{shot.name}", offline)
        written.append(png)
    return written


def build_sample_bundle(work: Path) -> Path:
    """A tiny bundle trained on the generated sample data (the tests' `build_tiny_bundle`)."""
    from recommender_lib.sources.sample_data import write_sample_mirror
    from tests.support.tiny_bundle import build_tiny_bundle

    mirror = write_sample_mirror(work / "mirror", "small", seed=SAMPLE_SEED)
    return build_tiny_bundle(mirror, work / "build")


@contextmanager
def serving(bundle_dir: Path, data_dir: Path) -> Iterator[str]:
    """The app serving `bundle_dir` on a free loopback port; yields its base URL."""
    from serving.app import create_app
    from serving.logs import ACCESS_LOGGER_NAME
    from serving.model_store import ModelStore
    from serving.settings import ServingSettings
    from serving.sources import DirectorySource
    from tests.support.serving import live_server

    store = ModelStore(DirectorySource(bundle_dir))
    outcome = store.refresh()
    if store.current is None:
        raise SystemExit(f"the bundle at {bundle_dir} did not load ({outcome})")
    settings = ServingSettings.from_env({"CINE_DATA_DIR": str(data_dir)})
    access_log = logging.getLogger(ACCESS_LOGGER_NAME)
    level = access_log.level
    access_log.setLevel(logging.WARNING)  # no line per request
    try:
        with live_server(create_app(store, settings, watch=False)) as base_url:
            yield base_url
    finally:
        access_log.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--bundle", type=Path, help="serving bundle dir (default: a tiny one)")
    parser.add_argument("--browser", help="Chromium executable (default: found on PATH)")
    parser.add_argument("--online", action="store_true", help="let Chromium load TMDb posters")
    args = parser.parse_args(argv)
    from tests.support.browser import find_browser

    browser = args.browser or find_browser()
    if browser is None:
        raise SystemExit("no Chromium on PATH: install one or pass --browser")
    if args.bundle is not None and not (args.bundle / "manifest.json").is_file():
        raise SystemExit(f"{args.bundle} is not a serving bundle (no manifest.json)")
    with tempfile.TemporaryDirectory(prefix="cine-screenshots-") as tmp:
        work = Path(tmp)
        bundle = args.bundle or build_sample_bundle(work)
        with serving(bundle, work / "data") as base_url:
            written = take_screenshots(browser, base_url, args.out, work, offline=not args.online)
    for png in written:
        print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
