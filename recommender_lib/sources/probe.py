"""Cheap "is there a new dump?" probes for the sensors: validators only, never the body.

`probe_source(url, previous=...)` asks an `http(s)://` source with a HEAD request (a one-byte
ranged GET where HEAD is refused with 405/501) carrying `If-None-Match` / `If-Modified-Since`
from the previous state: 304 means unchanged. A 200 gives the new validators, and the version
id is derived from them exactly as `recommender_lib.sources.download` names its version folders
(from Last-Modified, else the ETag). For `file://` sources the validators are the file's size and
mtime, as in `download`. With `md5_url` (MovieLens publishes `<zip>.md5`), the digest in that
small file IS the version; when it does not exist (404/410, missing file) the probe falls back
to the zip's own validators.

Known limits: a change that keeps Last-Modified to the second is seen only at the next change
(the version id, like the download's folder name, has one-second resolution); a `.md5` file that
appears or disappears changes the version id once (md5 <-> Last-Modified stamp).

Every failure (connection refused, timeout, 4xx/5xx, unreadable file) raises SourceProbeError
naming the URL and the reason. ProbeState/ProbeResult convert to plain JSON dicts (the cursor).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import requests

from recommender_lib.sources.download import expected_md5
from recommender_lib.sources.integrity import IntegrityError, file_md5
from recommender_lib.sources.raw_store import FetchedFile, filename_from_url, opt_str, version_id
from recommender_lib.sources.retry import NOT_FOUND, DownloadError
from recommender_lib.sources.transfer import (
    MAX_CHECKSUM_BYTES,
    SUPPORTED_SCHEMES,
    USER_AGENT,
    Received,
    conditional_headers,
    file_validators,
    local_path,
)

__all__ = [
    "ProbeResult",
    "ProbeState",
    "SourceProbeError",
    "md5_url_for",
    "probe_source",
    "state_from_fetched",
]

DEFAULT_TIMEOUT_S = 20.0
# A server that sends neither ETag nor Last-Modified can only be versioned by its content, like
# `download` does; the probe hashes bodies up to this size and gives up on larger ones.
MAX_HASH_BYTES = 64 << 20
HASH_CHUNK = 1 << 20


class SourceProbeError(Exception):
    """The source could not be probed; `url` and `reason` say which and why."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


@dataclass(frozen=True)
class ProbeState:
    """What was last seen of one source: its version and the validators to send next time.

    `checked_url` is the URL the validators belong to: the source itself, or its `.md5` file.
    """

    url: str
    version: str
    checked_url: str
    etag: str | None = None
    last_modified: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ProbeState:
        """Inverse of `to_json`; ValueError on anything else."""
        try:
            url, version, checked = data["url"], data["version"], data["checked_url"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a probe state: {data!r}") from exc
        if not all(isinstance(v, str) and v for v in (url, version, checked)):
            raise ValueError(f"not a probe state: {data!r}")
        return cls(
            url=str(url),
            version=str(version),
            checked_url=str(checked),
            etag=opt_str(data.get("etag")),
            last_modified=opt_str(data.get("last_modified")),
        )


@dataclass(frozen=True)
class ProbeResult:
    """One probe: the state to remember, whether the version changed, and how it was told."""

    state: ProbeState
    changed: bool
    how: str  # e.g. "HEAD 304", "GET .md5 200", "file stat"
    previous_version: str | None = None

    @property
    def url(self) -> str:
        return self.state.url

    @property
    def version(self) -> str:
        return self.state.version

    def to_json(self) -> dict[str, object]:
        return {
            "state": self.state.to_json(),
            "changed": self.changed,
            "how": self.how,
            "previous_version": self.previous_version,
        }


def md5_url_for(url: str) -> str:
    """The checksum file GroupLens publishes beside each zip."""
    return f"{url}.md5"


def state_from_fetched(fetched: FetchedFile, *, md5_url: str | None = None) -> ProbeState:
    """The probe state equivalent to a version already in the raw store.

    With `md5_url` and an MD5-verified file, the version is the file's MD5 (what the `.md5`
    probe reports); otherwise the store's version id with its ETag / Last-Modified.
    """
    if md5_url is not None and fetched.md5_verified:
        return ProbeState(url=fetched.url, version=file_md5(fetched.path), checked_url=md5_url)
    return ProbeState(
        url=fetched.url,
        version=fetched.version,
        checked_url=fetched.url,
        etag=fetched.etag,
        last_modified=fetched.last_modified,
    )


def probe_source(
    url: str,
    *,
    previous: ProbeState | None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    md5_url: str | None = None,
    session: requests.Session | None = None,
) -> ProbeResult:
    """Probe `url` (and its checksum file `md5_url`, when given) against `previous`.

    `previous` for another URL is ignored. Raises SourceProbeError on any failure.
    """
    if previous is not None and previous.url != url:
        previous = None
    scheme = urlsplit(url).scheme
    if scheme not in SUPPORTED_SCHEMES:
        raise SourceProbeError(url, "only http(s):// and file:// URLs are supported")
    prober = _Prober(url, previous, timeout_s, session)
    try:
        if md5_url is not None:
            found = prober.md5(md5_url)
            if found is not None:
                return found
        return prober.file() if scheme == "file" else prober.http()
    finally:
        prober.close()


# --------------------------------------------------------------------------- implementation


class _Prober:
    def __init__(
        self,
        url: str,
        previous: ProbeState | None,
        timeout_s: float,
        session: requests.Session | None,
    ) -> None:
        self.url = url
        self.previous = previous
        self.timeout_s = timeout_s
        self._own = session is None
        self.session = session if session is not None else requests.Session()

    def close(self) -> None:
        if self._own:
            self.session.close()

    # -- outcomes
    def _unchanged(self, how: str, etag: str | None = None, lm: str | None = None) -> ProbeResult:
        assert self.previous is not None
        state = self.previous
        if etag or lm:  # a 304 may carry fresher validators
            state = replace(state, etag=etag or state.etag, last_modified=lm or state.last_modified)
        return ProbeResult(state, changed=False, how=how, previous_version=state.version)

    def _seen(
        self, version: str, checked_url: str, etag: str | None, lm: str | None, how: str
    ) -> ProbeResult:
        prev = self.previous
        same_validators = (
            prev is not None
            and prev.checked_url == checked_url
            and (etag or lm)
            and (prev.etag, prev.last_modified) == (etag, lm)
        )
        if same_validators:  # e.g. a server that ignores conditional headers
            return self._unchanged(how)
        state = ProbeState(self.url, version, checked_url, etag, lm)
        changed = prev is None or prev.version != version
        return ProbeResult(
            state, changed=changed, how=how, previous_version=prev.version if prev else None
        )

    def _conditional(self, checked_url: str) -> dict[str, str]:
        prev = self.previous
        if prev is None or prev.checked_url != checked_url:
            return {}
        return conditional_headers(prev.etag, prev.last_modified)

    # -- http(s)
    def http(self) -> ProbeResult:
        conditional = self._conditional(self.url)
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **conditional}
        method = "HEAD"
        resp = self._send(self.url, "HEAD", headers)
        if resp.status_code in (405, 501):  # HEAD not allowed: ask for one byte instead
            resp.close()
            method = "GET"
            resp = self._send(self.url, "GET", {**headers, "Range": "bytes=0-0"})
        with resp:
            status = resp.status_code
            etag, lm = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
            if status == 304 and conditional:
                return self._unchanged(f"{method} 304", etag, lm)
            if status not in (200, 206):
                raise SourceProbeError(self.url, _http_reason(method, resp))
        sha = "" if (etag or lm) else self._hash_body()
        version = version_id(Received(etag=etag, last_modified=lm), sha)
        return self._seen(version, self.url, etag, lm, f"{method} {status}")

    def _hash_body(self) -> str:
        """sha256 of a body that has no validators (as `download` versions it), if small."""
        resp = self._send(
            self.url, "GET", {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        )
        digest, done = hashlib.sha256(), 0
        with resp:
            if resp.status_code != 200:
                raise SourceProbeError(self.url, _http_reason("GET", resp))
            try:
                for chunk in resp.iter_content(HASH_CHUNK):
                    done += len(chunk)
                    if done > MAX_HASH_BYTES:
                        raise SourceProbeError(
                            self.url,
                            "no ETag or Last-Modified, and the body is over "
                            f"{MAX_HASH_BYTES >> 20} MiB: cannot tell versions apart cheaply",
                        )
                    digest.update(chunk)
            except requests.RequestException as exc:
                raise SourceProbeError(self.url, f"reading the body failed: {exc}") from exc
        return digest.hexdigest()

    def _send(self, url: str, method: str, headers: dict[str, str]) -> requests.Response:
        try:
            return self.session.request(
                method,
                url,
                headers=headers,
                timeout=(self.timeout_s, self.timeout_s),
                allow_redirects=True,
                stream=True,
            )
        except requests.Timeout as exc:
            raise SourceProbeError(url, f"{method} timed out after {self.timeout_s:g} s") from exc
        except requests.ConnectionError as exc:
            raise SourceProbeError(url, f"{method} connection failed: {_root_cause(exc)}") from exc
        except requests.RequestException as exc:
            raise SourceProbeError(url, f"{method} failed: {type(exc).__name__}: {exc}") from exc

    # -- the published checksum file
    def md5(self, md5_url: str) -> ProbeResult | None:
        """The `.md5` probe; None when the checksum file does not exist."""
        if urlsplit(md5_url).scheme == "file":
            path = self._path(md5_url)
            try:
                with open(path, "rb") as fh:
                    text = fh.read(MAX_CHECKSUM_BYTES).decode("utf-8", "replace")
            except (FileNotFoundError, NotADirectoryError):
                return None
            except OSError as exc:
                raise SourceProbeError(md5_url, f"cannot read {path}: {exc}") from exc
            return self._seen(self._digest(md5_url, text), md5_url, None, None, "file .md5")
        conditional = self._conditional(md5_url)
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **conditional}
        with self._send(md5_url, "GET", headers) as resp:
            status = resp.status_code
            etag, lm = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
            if status == 304 and conditional:
                return self._unchanged("GET .md5 304", etag, lm)
            if status in NOT_FOUND:
                return None
            if status != 200:
                raise SourceProbeError(md5_url, _http_reason("GET", resp))
            try:
                body = resp.raw.read(MAX_CHECKSUM_BYTES, decode_content=True)
            except Exception as exc:  # urllib3 errors vary by version
                raise SourceProbeError(md5_url, f"reading the checksum failed: {exc}") from exc
        text = body.decode("utf-8", "replace")
        return self._seen(self._digest(md5_url, text), md5_url, etag, lm, "GET .md5 200")

    def _digest(self, md5_url: str, text: str) -> str:
        try:
            return expected_md5(md5_url, text, filename_from_url(self.url))
        except IntegrityError as exc:
            raise SourceProbeError(md5_url, f"unreadable checksum file: {exc}") from exc

    # -- file://
    def file(self) -> ProbeResult:
        path = self._path(self.url)
        try:
            st = path.stat()
        except FileNotFoundError as exc:
            raise SourceProbeError(self.url, f"no such file {path}") from exc
        except OSError as exc:
            raise SourceProbeError(self.url, f"cannot stat {path}: {exc}") from exc
        if not path.is_file():
            raise SourceProbeError(self.url, f"{path} is not a regular file")
        etag, lm = file_validators(st)  # the same synthetic validators as `download` uses
        version = version_id(Received(etag=etag, last_modified=lm), "")
        return self._seen(version, self.url, etag, lm, "file stat")

    def _path(self, url: str) -> Path:
        try:
            return local_path(url)
        except DownloadError as exc:
            raise SourceProbeError(url, str(exc)) from exc


def _http_reason(method: str, resp: requests.Response) -> str:
    what = f"HTTP {resp.status_code} {resp.reason or ''}".strip()
    if resp.status_code in NOT_FOUND:
        return f"{method} answered {what}: the file is not there"
    return f"{method} answered {what}"


def _root_cause(exc: BaseException) -> str:
    """The innermost error's text (e.g. "[Errno 111] Connection refused")."""
    seen: set[int] = set()
    inner: BaseException = exc
    while id(inner) not in seen:
        seen.add(id(inner))
        nxt = inner.__cause__ or inner.__context__
        if nxt is None and inner.args and isinstance(inner.args[0], BaseException):
            nxt = inner.args[0]
        if nxt is None:
            break
        inner = nxt
    reason = getattr(inner, "reason", None)
    text = str(reason if isinstance(reason, BaseException) else inner)
    return text or type(inner).__name__
