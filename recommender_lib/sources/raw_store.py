"""The versioned store of raw source files: one folder per dump version (docs/architecture.md §4).

    store_dir/
      CURRENT                      the current version's name (replaced atomically)
      20261121T101500Z/            a version: named from Last-Modified, else ETag, else content
        title.basics.tsv.gz        the verified file
        source.json                where it came from: the FetchedFile fields except `changed`
        ml-latest-small/           with extract_zip=True: the extracted archive

Writers hold `store_lock`; temp entries of a killed writer are swept under it, and retention
never leaves a half-deleted version.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import cast
from urllib.parse import unquote, urlsplit

from recommender_lib.atomic import write_text_atomic
from recommender_lib.sources.retry import DownloadError
from recommender_lib.sources.transfer import Received

try:  # POSIX advisory lock: two fetches into one store wait for each other.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

CURRENT_FILE = "CURRENT"
SOURCE_FILE = "source.json"
LOCK_FILE = ".lock"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
STALE_PREFIXES = (TMP_PREFIX, TRASH_PREFIX, f".{CURRENT_FILE}.")


@dataclass(frozen=True)
class FetchedFile:
    """A verified file inside its version folder."""

    path: Path
    version: str
    url: str
    sha256: str
    size_bytes: int
    etag: str | None
    last_modified: str | None
    fetched_at: str
    changed: bool
    extracted_dir: Path | None = None
    md5_verified: bool = False

    @property
    def version_dir(self) -> Path:
        return self.path.parent

    def to_metadata(self) -> dict[str, object]:
        """A plain JSON-able dict (paths as strings) for run metadata."""
        data = asdict(self)
        data["path"] = str(self.path)
        data["extracted_dir"] = None if self.extracted_dir is None else str(self.extracted_dir)
        return data

    def _source_record(self) -> dict[str, object]:
        """source.json: every field but `changed`, paths relative to the version folder."""
        data = self.to_metadata()
        del data["changed"]
        data["path"] = self.path.name
        if self.extracted_dir is not None:
            data["extracted_dir"] = self.extracted_dir.relative_to(self.version_dir).as_posix()
        return data

    @classmethod
    def _from_source_record(cls, data: dict[str, object], version_dir: Path) -> FetchedFile:
        extracted = data.get("extracted_dir")
        return cls(
            path=version_dir / str(data["path"]),
            version=str(data["version"]),
            url=str(data["url"]),
            sha256=str(data["sha256"]),
            size_bytes=int(cast(int, data["size_bytes"])),
            etag=opt_str(data.get("etag")),
            last_modified=opt_str(data.get("last_modified")),
            fetched_at=str(data["fetched_at"]),
            changed=False,
            extracted_dir=None if extracted is None else version_dir / str(extracted),
            md5_verified=bool(data.get("md5_verified", False)),
        )


def current_version(store_dir: Path) -> FetchedFile | None:
    """The version CURRENT points at (changed=False), or None when there is none or it is broken."""
    store_dir = Path(store_dir)
    try:
        name = (store_dir / CURRENT_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if not name or "/" in name or "\\" in name or name.startswith("."):
        log.warning("%s: ignoring invalid CURRENT pointer %r", store_dir, name)
        return None
    found = read_version(store_dir / name)
    if found is None:
        log.warning("%s: CURRENT points at %r, which is missing or incomplete", store_dir, name)
    return found


def set_current(store_dir: Path, version: str) -> None:
    """Point CURRENT at `version` (atomically)."""
    write_text_atomic(store_dir / CURRENT_FILE, version + "\n")


@contextlib.contextmanager
def store_lock(store_dir: Path) -> Iterator[None]:
    """Hold the store's advisory lock (no-op where fcntl is missing)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(store_dir / LOCK_FILE, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def sweep_stale(store_dir: Path) -> None:
    """Remove temp files left by a killed fetch (safe: we hold the store lock)."""
    for entry in store_dir.iterdir():
        if entry.name.startswith(STALE_PREFIXES):
            log.info("removing stale temp entry %s", entry)
            _remove(entry)


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def read_version(version_dir: Path) -> FetchedFile | None:
    """The version recorded in `version_dir`; None when it is missing or incomplete."""
    try:
        data = json.loads((version_dir / SOURCE_FILE).read_text(encoding="utf-8"))
        fetched = FetchedFile._from_source_record(data, version_dir)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not fetched.path.is_file():
        return None
    if fetched.extracted_dir is not None and not fetched.extracted_dir.is_dir():
        return None
    return fetched


def write_source(version_dir: Path, fetched: FetchedFile) -> None:
    """Write the version's source.json."""
    text = json.dumps(fetched._source_record(), indent=2, sort_keys=True) + "\n"
    write_text_atomic(version_dir / SOURCE_FILE, text)


def refresh_validators(
    store_dir: Path, cur: FetchedFile, url: str, received: Received
) -> FetchedFile:
    """Same bytes as the current version: keep it, remembering the new validators."""
    fresh = replace(cur, url=url, etag=received.etag, last_modified=received.last_modified)
    if fresh != cur:
        write_source(store_dir / cur.version, fresh)
    log.info("%s: content identical to version %s", url, cur.version)
    return replace(fresh, changed=False)


def choose_version(
    store_dir: Path, url: str, filename: str, extract_zip: bool, received: Received, sha: str
) -> tuple[str, FetchedFile | None]:
    """The version folder name, plus the existing version when it already holds this content."""
    base = version_id(received, sha)
    for name in (base, f"{base}-{sha[:8]}"):
        existing_dir = store_dir / name
        if not existing_dir.exists():
            return name, None
        existing = read_version(existing_dir)
        if (
            existing is not None
            and existing.sha256 == sha
            and existing.path.name == filename
            and (existing.extracted_dir is not None or not extract_zip)
        ):
            return name, existing
    raise DownloadError(
        f"{url}: version folders {base!r} and {base}-{sha[:8]!r} both exist with other content",
        url=url,
    )


def version_id(received: Received, sha: str) -> str:
    """A version's name: from Last-Modified, else the ETag, else the content hash."""
    if received.last_modified:
        with contextlib.suppress(TypeError, ValueError):
            when = email.utils.parsedate_to_datetime(received.last_modified)
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    if received.etag:
        return f"etag-{hashlib.sha1(received.etag.encode()).hexdigest()[:12]}"
    return f"sha256-{sha[:16]}"


def apply_retention(store_dir: Path, keep: int) -> None:
    """Keep the newest `keep` versions by fetched_at, and always the current one."""
    current = current_version(store_dir)
    versions = [
        v
        for entry in store_dir.iterdir()
        if entry.is_dir() and not entry.name.startswith(".")
        if (v := read_version(entry)) is not None
    ]
    versions.sort(key=lambda v: (_parse_time(v.fetched_at), v.version), reverse=True)
    keepers = {v.version for v in versions[:keep]}
    if current is not None:
        keepers.add(current.version)
    for old in versions:
        if old.version not in keepers:
            log.info("retention: removing version %s of %s", old.version, store_dir)
            trash = store_dir / f"{TRASH_PREFIX}{old.version}"
            os.rename(store_dir / old.version, trash)  # never leave a half-deleted version
            shutil.rmtree(trash, ignore_errors=True)


def filename_from_url(url: str) -> str:
    """The stored file's name: the URL's last path segment (never a store bookkeeping name)."""
    name = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    if not name or name in (".", "..", SOURCE_FILE, CURRENT_FILE):
        raise ValueError(f"cannot derive a file name from {url!r}: pass filename=")
    return name


def _parse_time(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def opt_str(value: object) -> str | None:
    """None stays None, anything else becomes its text."""
    return None if value is None else str(value)
