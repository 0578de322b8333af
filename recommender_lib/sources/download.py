"""Versioned, atomic downloads of the source files (docs/architecture.md §4).

`fetch_versioned(url, store_dir)` keeps one folder per dump version in `store_dir` (the layout
is described in `raw_store`): CURRENT names the current one, source.json in each says where it
came from.

A download streams into a hidden temp folder inside `store_dir`, is verified (size, the caller's
`verify`, the published MD5) and only then renamed into place; CURRENT moves last. Any failure
leaves the previous version and CURRENT untouched and removes the temp files. Re-running is
cheap: conditional requests (ETag / Last-Modified) answer "unchanged" without a body, and an
interrupted body is resumed with a Range request when the server supports it (`transfer`).

For file:// URLs the validators are synthetic (`transfer.file_validators`), so an untouched file
is recognised without reading it. Conditional headers are only sent when the current version came
from the same URL. Transient failures are retried by the rule of `retry`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import requests

from recommender_lib.sources import integrity
from recommender_lib.sources.integrity import IntegrityError, file_md5, file_sha256, parse_md5_file
from recommender_lib.sources.raw_store import (
    SOURCE_FILE,
    TMP_PREFIX,
    FetchedFile,
    apply_retention,
    choose_version,
    current_version,
    filename_from_url,
    refresh_validators,
    set_current,
    store_lock,
    sweep_stale,
    write_source,
)
from recommender_lib.sources.retry import DownloadError, with_retries
from recommender_lib.sources.transfer import (
    SUPPORTED_SCHEMES,
    DownloadProgress,
    Partial,
    Received,
    TransferOptions,
    conditional_headers,
    copy_file,
    fetch_text,
    http_get,
    session_scope,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass
class _Options:
    """The arguments of one fetch_versioned call."""

    store_dir: Path
    filename: str
    verify: Callable[[Path], object] | None
    extract_zip: bool
    md5_url: str | None
    retries: int
    backoff_s: float
    transfer: TransferOptions

    @property
    def url(self) -> str:
        return self.transfer.url


def fetch_versioned(
    url: str,
    store_dir: Path,
    *,
    verify: Callable[[Path], object] | None = None,
    filename: str | None = None,
    extract_zip: bool = False,
    md5_url: str | None = None,
    retention: int = 3,
    retries: int = 4,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    progress: Callable[[DownloadProgress], None] | None = None,
    progress_every_s: float = 5.0,
    session: requests.Session | None = None,
) -> FetchedFile:
    """Fetch `url` into a new version folder of `store_dir` unless it is unchanged.

    Raises DownloadError (network/HTTP/file access, after `retries` retries for transient
    failures) or IntegrityError (a complete body that fails a check; not retried).
    """
    if retention < 1:
        raise ValueError(f"retention must be at least 1, got {retention}")
    _check_scheme(url)
    if md5_url is not None:
        _check_scheme(md5_url)
    store_dir = Path(store_dir)
    store_dir.mkdir(parents=True, exist_ok=True)
    opts = _Options(
        store_dir=store_dir,
        filename=filename or filename_from_url(url),
        verify=verify,
        extract_zip=extract_zip,
        md5_url=md5_url,
        retries=max(0, retries),
        backoff_s=backoff_s,
        transfer=TransferOptions(
            url=url, timeout_s=timeout_s, progress=progress, progress_every_s=progress_every_s
        ),
    )
    with store_lock(store_dir), session_scope(session) as sess:
        sweep_stale(store_dir)
        result = _Fetch(opts, sess, current_version(store_dir)).run()
        apply_retention(store_dir, retention)
    return result


class _Fetch:
    """One call of fetch_versioned, inside the store lock."""

    def __init__(
        self, opts: _Options, session: requests.Session, current: FetchedFile | None
    ) -> None:
        self.opts = opts
        self.session = session
        self.current = current
        self.is_file = urlsplit(opts.url).scheme == "file"

    def run(self) -> FetchedFile:
        tmp_dir = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self.opts.store_dir))
        try:
            target = tmp_dir / self.opts.filename
            received = self._download(target)
            if received is None:
                assert self.current is not None
                log.info("%s unchanged: keeping version %s", self.opts.url, self.current.version)
                return self.current
            return self._install(tmp_dir, target, received)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)

    def _retrying(self, url: str, attempt: Callable[[], _T]) -> _T:
        return with_retries(url, attempt, retries=self.opts.retries, backoff_s=self.opts.backoff_s)

    def _download(self, target: Path) -> Received | None:
        """Fetch the body into `target`; None when the source is unchanged."""
        cur = self._comparable_current()
        same_url = cur if cur is not None and cur.url == self.opts.url else None
        transfer = self.opts.transfer
        if self.is_file:
            known_etag = None if same_url is None else same_url.etag
            return self._retrying(self.opts.url, lambda: copy_file(transfer, target, known_etag))
        partial = Partial()
        conditional = (
            {} if same_url is None else conditional_headers(same_url.etag, same_url.last_modified)
        )
        return self._retrying(
            self.opts.url,
            lambda: http_get(self.session, transfer, target, partial, conditional),
        )

    def _comparable_current(self) -> FetchedFile | None:
        """The current version, when it can stand for this request's result."""
        cur = self.current
        if cur is None or (self.opts.extract_zip and cur.extracted_dir is None):
            return None
        return cur

    def _install(self, tmp_dir: Path, target: Path, received: Received) -> FetchedFile:
        sha = file_sha256(target)
        size = target.stat().st_size
        cur = self._comparable_current()
        if cur is not None and cur.sha256 == sha:
            return refresh_validators(self.opts.store_dir, cur, self.opts.url, received)
        if self.opts.verify is not None:
            self.opts.verify(target)
        md5_verified = self._check_md5(target)
        extracted = self._extract(target, tmp_dir) if self.opts.extract_zip else None
        opts = self.opts
        version, reuse = choose_version(
            opts.store_dir, opts.url, opts.filename, opts.extract_zip, received, sha
        )
        version_dir = self.opts.store_dir / version
        fetched = FetchedFile(
            path=version_dir / target.name,
            version=version,
            url=self.opts.url,
            sha256=sha,
            size_bytes=size,
            etag=received.etag,
            last_modified=received.last_modified,
            fetched_at=datetime.now(UTC).isoformat(),
            changed=True,
            extracted_dir=None if extracted is None else version_dir / extracted.name,
            md5_verified=md5_verified,
        )
        if reuse is not None:  # identical content already kept under that name: point at it
            fetched = replace(fetched, extracted_dir=reuse.extracted_dir)
            fetched = replace(fetched, md5_verified=md5_verified or reuse.md5_verified)
            write_source(version_dir, fetched)
        else:
            write_source(tmp_dir, fetched)
            os.rename(tmp_dir, version_dir)
        set_current(self.opts.store_dir, version)
        log.info("%s: new version %s (%d bytes)", self.opts.url, version, size)
        return fetched

    def _check_md5(self, target: Path) -> bool:
        md5_url = self.opts.md5_url
        if md5_url is None:
            return False
        timeout_s = self.opts.transfer.timeout_s
        text = self._retrying(md5_url, lambda: fetch_text(self.session, md5_url, timeout_s))
        if text is None:
            log.warning("%s not found: MD5 not checked for %s", md5_url, self.opts.url)
            return False
        expected = expected_md5(md5_url, text, filename_from_url(self.opts.url))
        actual = file_md5(target)
        if actual != expected:
            raise IntegrityError(
                f"{self.opts.url}: MD5 mismatch: {md5_url} says {expected}, "
                f"the downloaded {target.stat().st_size} bytes hash to {actual}"
            )
        return True

    def _extract(self, target: Path, tmp_dir: Path) -> Path:
        top = integrity.zip_top_folder(target)
        if top is not None and top not in (target.name, SOURCE_FILE):
            integrity.extract_zip(target, tmp_dir)
            return tmp_dir / top
        dest = tmp_dir / "extracted"
        integrity.extract_zip(target, dest)
        return dest


def expected_md5(md5_url: str, text: str, remote_name: str) -> str:
    """The digest the checksum file gives for `remote_name` (or its only digest)."""
    try:
        return parse_md5_file(text, filename=remote_name)
    except IntegrityError:
        try:
            return parse_md5_file(text)
        except IntegrityError as exc:
            raise IntegrityError(f"{md5_url}: {exc}") from exc


def _check_scheme(url: str) -> None:
    """DownloadError unless `url` is http(s):// or file://."""
    if urlsplit(url).scheme not in SUPPORTED_SCHEMES:
        raise DownloadError(f"{url}: only http(s):// and file:// URLs are supported", url=url)
