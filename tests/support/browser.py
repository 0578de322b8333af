"""Headless Chromium for the page and docs tests: find it, dump a page's DOM after its scripts ran.

`.ci/optional-packages.sh` installs Chromium on CI; tests skip where none is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER_TIMEOUT_S = 90
# Every host name but loopback resolves to nothing: a page that needs the internet fails.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def dump_dom(browser: str, url: str, profile: Path, *, offline: bool = False) -> str:
    """The DOM of `url` once its scripts ran (15 s of virtual time); fails the test on error."""
    cmd = [
        browser, "--headless=new", "--no-sandbox", "--disable-gpu",
        "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
        "--disable-extensions", "--disable-background-networking", "--disable-sync",
        f"--user-data-dir={profile}", *([OFFLINE] if offline else []),
        "--virtual-time-budget=15000", "--dump-dom", url,
    ]  # fmt: skip
    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{browser} did not finish within {BROWSER_TIMEOUT_S} s")
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout
