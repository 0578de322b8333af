"""Where the served bundles come from: the MLflow registry (`RegistrySource`) or a bundle
directory (`DirectorySource`), and what `ModelStore` asks of one (`BundleSource`): resolve the
current candidate, fetch it, prune the cache, list fallbacks, stamp its stored files."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse
from urllib.request import url2pathname

from recommender_lib.bundle.format import MANIFEST_FILE, BundleError, read_manifest
from recommender_lib.registry.client import CHAMPION, Registry
from recommender_lib.registry.records import RegistryError, previous_champions
from serving.logs import LOGGER_NAME, log_event

logger = logging.getLogger(f"{LOGGER_NAME}.model_store")


@dataclass(frozen=True)
class Candidate:
    """What the source currently names; `key` changes whenever the bundle to serve changes."""

    key: str
    bundle_version: str | None
    registry_version: str | None = None


class BundleSource(Protocol):
    kind: str  # "mlflow" or "directory"

    @property
    def model_name(self) -> str | None: ...

    @property
    def alias(self) -> str | None: ...

    def resolve(self) -> Candidate: ...

    def fetch(self, candidate: Candidate) -> Path: ...

    def prune(self, keep: set[Path]) -> None: ...

    def fallbacks(self, failed: Candidate) -> list[Candidate]: ...

    def stamp(self, candidate: Candidate) -> str | None: ...


def tree_stamp(folder: Path) -> str | None:
    """A cheap stamp of the files below `folder` (paths, sizes, mtimes); None when absent."""
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            st = path.stat()
            digest.update(f"{path.relative_to(folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


class RegistrySource:
    """`models:/<name>@<alias>` in MLflow, downloaded into `<cache_dir>/<name>-v<version>`."""

    kind = "mlflow"

    def __init__(
        self,
        tracking_uri: str,
        model_name: str,
        alias: str,
        cache_dir: Path,
        promotion_log: Path | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.alias = alias
        self.cache_dir = Path(cache_dir)
        # contacts MLflow on first use
        self.registry = Registry(tracking_uri, model_name, promotion_log)
        self._dir_name = re.compile(re.escape(model_name) + r"-v\d+")

    def resolve(self) -> Candidate:
        mv = self.registry.resolve(f"@{self.alias}")
        return Candidate(f"{mv.version}:{mv.bundle_version}", mv.bundle_version, mv.version)

    def fetch(self, candidate: Candidate) -> Path:
        dest = self.cache_dir / f"{self.model_name}-v{candidate.registry_version}"
        if _cached(dest, candidate.bundle_version):
            return dest  # from an earlier run; Recommender.load verifies every file again
        return self.registry.download_bundle(str(candidate.registry_version), dest)

    def prune(self, keep: set[Path]) -> None:
        """Delete the cached bundles of this model that are not in `keep`."""
        if not self.cache_dir.is_dir():
            return
        for path in self.cache_dir.iterdir():
            if path.is_dir() and self._dir_name.fullmatch(path.name) and path not in keep:
                shutil.rmtree(path, ignore_errors=True)

    def stamp(self, candidate: Candidate) -> str | None:
        """`tree_stamp` of the version's stored artifacts when the store is a local folder
        (else None: a remote store offers no cheap way to see a file change)."""
        uri = urlparse(self.registry.artifact_uri(str(candidate.registry_version)))
        if uri.scheme not in ("", "file"):
            return None
        return tree_stamp(Path(url2pathname(uri.path)))

    def fallbacks(self, failed: Candidate) -> list[Candidate]:
        """What to serve while `failed` does not load: the champions before it per the promotion
        log (newest first, only for the `champion` alias), then every other READY version,
        newest first."""
        ready = {v.version: v for v in self.registry.list_versions() if v.status == "READY"}
        order: list[str] = []
        log = self.registry.promotion_log
        if self.alias == CHAMPION and log is not None and failed.registry_version is not None:
            try:
                order = previous_champions(
                    self.registry.promotions(), self.model_name, failed.registry_version
                )
            except (RegistryError, OSError) as exc:  # an unreadable log: newest versions only
                log_event(logger, logging.WARNING, "promotion_log_unreadable", error=str(exc))
        order += sorted(ready, key=int, reverse=True)
        seen = {failed.registry_version}
        out = []
        for version in order:
            if version in ready and version not in seen:
                seen.add(version)
                bundle_version = ready[version].bundle_version
                out.append(Candidate(f"{version}:{bundle_version}", bundle_version, version))
        return out


def _cached(dest: Path, bundle_version: str | None) -> bool:
    if bundle_version is None or not (dest / MANIFEST_FILE).is_file():
        return False
    try:
        return read_manifest(dest).get("bundle_version") == bundle_version
    except BundleError:
        return False


class DirectorySource:
    """A bundle directory on disk (air-gapped); a changed `manifest.json` means a new bundle."""

    kind = "directory"
    model_name = None
    alias = None

    def __init__(self, bundle_dir: Path) -> None:
        self.bundle_dir = Path(bundle_dir)

    def resolve(self) -> Candidate:
        raw = (self.bundle_dir / MANIFEST_FILE).read_bytes()
        try:
            bundle_version = json.loads(raw).get("bundle_version")
        except (ValueError, AttributeError) as exc:
            raise BundleError(f"{self.bundle_dir / MANIFEST_FILE}: bad manifest: {exc}") from exc
        digest = hashlib.sha256(raw).hexdigest()[:16]
        return Candidate(f"{bundle_version}:{digest}", str(bundle_version))

    def fetch(self, candidate: Candidate) -> Path:
        return self.bundle_dir

    def prune(self, keep: set[Path]) -> None:
        """Never deletes anything: the directory belongs to whoever deployed it."""

    def fallbacks(self, failed: Candidate) -> list[Candidate]:
        """None: a bundle directory holds one version."""
        return []

    def stamp(self, candidate: Candidate) -> str | None:
        return tree_stamp(self.bundle_dir)
