"""Serving bundles: a directory of files plus `manifest.json` with their sizes and SHA-256 sums.

A bundle is everything the serving process needs (model weights, vocabularies, feature tables)
with enough provenance to say where it came from (git commit, Dagster run, MLflow run, source
versions, metrics). `write_bundle` builds one atomically; `verify_bundle` checks every byte
against the manifest and rejects missing, altered or unexpected files.

Manifest layout (format 1)::

    {"format": 1, "bundle_version": "3f2a…", "created_at": "2025-01-01T00:00:00+00:00",
     "files": {"model/two_tower.keras": {"sha256": "…", "bytes": 123}, …},
     …caller fields such as git_commit, dagster_run_id, mlflow_run_id, source_versions, metrics}
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from recommender_lib.atomic import atomic_path

BUNDLE_FORMAT = 1
MANIFEST_FILE = "manifest.json"
CHUNK_SIZE = 1 << 20  # bytes hashed per read
RESERVED_FIELDS = frozenset({"format", "files"})
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_COMMIT_RE = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")


class BundleError(Exception):
    """A bundle (or the request to write one) is invalid: the message names the file and why."""


# --------------------------------------------------------------------------- helpers


def file_digest(path: Path) -> tuple[str, int]:
    """SHA-256 hex digest and size of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def content_version(files: Mapping[str, Mapping[str, Any]]) -> str:
    """Content address of a bundle: first 16 hex chars of SHA-256 over sorted `path\\0sha256\\n`."""
    digest = hashlib.sha256()
    for relpath in sorted(files):
        digest.update(f"{relpath}\0{files[relpath]['sha256']}\n".encode())
    return digest.hexdigest()[:16]


def check_relpath(relpath: str) -> str:
    """Return `relpath` in normal POSIX form; refuse absolute paths, `..`, empty names."""
    if not isinstance(relpath, str) or not relpath or "\\" in relpath:
        raise BundleError(f"invalid bundle path {relpath!r}: must be a non-empty POSIX path")
    path = PurePosixPath(relpath)
    if path.is_absolute() or relpath.startswith("/"):
        raise BundleError(f"invalid bundle path {relpath!r}: must be relative")
    if ".." in path.parts:
        raise BundleError(f"invalid bundle path {relpath!r}: must not contain '..'")
    if str(path) in ("", "."):
        raise BundleError(f"invalid bundle path {relpath!r}: names no file")
    return str(path)


def _files_below(directory: Path) -> Iterator[Path]:
    """Every regular file below `directory` (following symlinks), in sorted order."""
    return (p for p in sorted(directory.rglob("*")) if p.is_file())


def _expand_sources(files: Mapping[str, Path]) -> dict[str, Path]:
    """Map each bundle path to one source file; directories expand to the files below them."""
    expanded: dict[str, Path] = {}
    for relpath, source in sorted(files.items()):
        relpath = check_relpath(relpath)
        source = Path(source)
        if source.is_dir():
            pairs = [
                (f"{relpath}/{p.relative_to(source).as_posix()}", p) for p in _files_below(source)
            ]
        elif source.is_file():
            pairs = [(relpath, source)]
        else:
            raise BundleError(f"source for bundle path {relpath!r} does not exist: {source}")
        for name, path in pairs:
            if name == MANIFEST_FILE:
                raise BundleError(f"bundle path {name!r} is reserved for the manifest")
            if name in expanded:
                raise BundleError(f"bundle path {name!r} is given twice")
            expanded[name] = path
    clashes = {str(parent) for name in expanded for parent in PurePosixPath(name).parents}
    if clash := sorted(clashes & expanded.keys()):
        raise BundleError(f"bundle path {clash[0]!r} is both a file and a folder")
    return expanded


def git_commit(repo_dir: Path | None = None) -> str | None:
    """`git rev-parse HEAD` of `repo_dir` (default: this project's checkout); None if unknown."""
    cwd = Path(repo_dir) if repo_dir is not None else Path(__file__).resolve().parent.parent
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and _COMMIT_RE.fullmatch(commit) else None


# --------------------------------------------------------------------------- write


def write_bundle(destination: Path, files: Mapping[str, Path], manifest: Mapping[str, Any]) -> Path:
    """Build a bundle at `destination` from `{bundle path: source file or folder}`.

    Files are copied into a temporary folder beside `destination`, hashed, described in
    `manifest.json` (the caller's `manifest` fields plus `format`, `created_at`, `files` and
    `bundle_version`, content-addressed unless given) and the folder is then renamed onto
    `destination`. An existing `destination` is replaced atomically: readers see either the
    old bundle or the new one, and on any error the old one is left untouched.
    """
    destination = Path(destination)
    if reserved := sorted(RESERVED_FIELDS & manifest.keys()):
        raise BundleError(f"manifest fields {reserved} are reserved and set by write_bundle")
    sources = _expand_sources(files)
    with atomic_path(destination) as tmp:
        tmp.mkdir()
        entries: dict[str, dict[str, Any]] = {}
        for relpath, source in sources.items():
            target = tmp / relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(source, target)
            except OSError as exc:
                raise BundleError(
                    f"cannot copy {source} to bundle path {relpath!r}: {exc}"
                ) from exc
            sha256, size = file_digest(target)
            entries[relpath] = {"sha256": sha256, "bytes": size}
        document = {
            **manifest,
            "format": BUNDLE_FORMAT,
            "created_at": manifest.get("created_at") or datetime.now(UTC).isoformat(),
            "bundle_version": manifest.get("bundle_version") or content_version(entries),
            "files": entries,
        }
        try:
            text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise BundleError(f"manifest is not JSON-serialisable: {exc}") from exc
        (tmp / MANIFEST_FILE).write_text(text + "\n", encoding="utf-8")
    return destination


# --------------------------------------------------------------------------- read / verify


def _check_file_entries(manifest_path: Path, files: Any) -> None:
    if not isinstance(files, dict):
        raise BundleError(f"{manifest_path}: 'files' must be an object")
    for relpath, entry in files.items():
        try:
            check_relpath(relpath)
        except BundleError as exc:
            raise BundleError(f"{manifest_path}: {exc}") from None
        if relpath == MANIFEST_FILE:
            raise BundleError(f"{manifest_path}: lists itself as a bundle file")
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not _SHA256_RE.fullmatch(entry["sha256"])
            or type(entry.get("bytes")) is not int
            or entry["bytes"] < 0
        ):
            raise BundleError(
                f"{manifest_path}: entry for {relpath!r} needs a hex 'sha256' and integer 'bytes'"
            )


def read_manifest(directory: Path) -> dict[str, Any]:
    """Parse and structurally validate `directory/manifest.json` (no file hashing)."""
    path = Path(directory) / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(f"{path}: manifest is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: cannot read manifest: {exc}") from exc
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: bad manifest JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: manifest must be a JSON object")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{path}: unsupported bundle format {manifest.get('format')!r} "
            f"(this code reads format {BUNDLE_FORMAT})"
        )
    _check_file_entries(path, manifest.get("files"))
    return manifest


def _present_files(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if not p.is_dir()}


def verify_bundle(directory: Path) -> dict[str, Any]:
    """Check every listed file's size and SHA-256 and that no other files exist; return manifest.

    Cheap checks (missing, extra, size) run before any hashing.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    files: dict[str, dict[str, Any]] = manifest["files"]
    present = _present_files(directory) - {MANIFEST_FILE}
    if missing := sorted(files.keys() - present):
        raise BundleError(f"bundle {directory}: file {missing[0]!r} is missing")
    if extra := sorted(present - files.keys()):
        raise BundleError(f"bundle {directory}: unexpected extra file {extra[0]!r}")
    for relpath, entry in sorted(files.items()):
        try:
            size = (directory / relpath).stat().st_size
        except OSError as exc:
            raise BundleError(f"bundle {directory}: file {relpath!r} unreadable: {exc}") from exc
        if size != entry["bytes"]:
            raise BundleError(
                f"bundle {directory}: file {relpath!r} size mismatch "
                f"(manifest {entry['bytes']} bytes, found {size})"
            )
    for relpath, entry in sorted(files.items()):
        sha256, _ = file_digest(directory / relpath)
        if sha256 != entry["sha256"]:
            raise BundleError(
                f"bundle {directory}: file {relpath!r} sha256 mismatch "
                f"(manifest {entry['sha256'][:12]}…, found {sha256[:12]}…)"
            )
    return manifest
