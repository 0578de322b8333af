"""Helpers for serving tests: a real tiny bundle in a temp MLflow registry, a live server.

`registered_tiny_store` builds the tiny bundle (~30 s) and registers it as version 1 of model
`test` with the `champion` alias; build it once per session. `fresh_model` gives a test its own
registered model (versions copied from existing ones, cheap) so alias moves stay local to it.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from recommender_lib.registry.client import Registry

if TYPE_CHECKING:
    from fastapi import FastAPI

TEST_MODEL = "test"


def register(tracking_uri: str, model_name: str, bundle_dir: Path, artifact_root: Path) -> str:
    """Log `bundle_dir` as a new version of `model_name` (the real `register_bundle` path)."""
    from recommender_lib.registry.pyfunc import BundlePyfunc

    registered = Registry(tracking_uri, model_name).register_bundle(
        bundle_dir, python_model=BundlePyfunc(), artifact_root=artifact_root, pip_requirements=[]
    )
    return registered.version


def promote_champion(tracking_uri: str, model_name: str, version: str, log_path: Path) -> None:
    Registry(tracking_uri, model_name, log_path).promote(version, reason="test", actor="tests")


def registered_tiny_store(tmp: Path, sample_mirror: Any) -> tuple[str, str, Path]:
    """(tracking_uri, model_name, bundle_dir): the tiny bundle as `test` v1 = champion."""
    from tests.support.tiny_bundle import build_tiny_bundle

    tmp = Path(tmp)
    bundle_dir = build_tiny_bundle(sample_mirror, tmp / "build")
    tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    version = register(tracking_uri, TEST_MODEL, bundle_dir, tmp / "artifacts")
    promote_champion(tracking_uri, TEST_MODEL, version, tmp / "promotions.jsonl")
    return tracking_uri, TEST_MODEL, bundle_dir


def shared_registered_tiny_store(
    tmp_path_factory: Any, sample_mirror: Any
) -> tuple[str, str, Path]:
    """`registered_tiny_store` once per pytest session, shared by every module that asks.

    A marker in the session's base temp folder records it; alias moves on `test` would leak
    between modules, so tests move aliases only on models of their own (`copy_version`).
    """
    root = Path(tmp_path_factory.getbasetemp()) / "serving_tiny_registry"
    marker = root / "registered.json"
    if marker.is_file():
        saved = json.loads(marker.read_text())
        return saved["uri"], saved["model"], Path(saved["bundle_dir"])
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    uri, model, bundle_dir = registered_tiny_store(root, sample_mirror)
    marker.write_text(json.dumps({"uri": uri, "model": model, "bundle_dir": str(bundle_dir)}))
    return uri, model, bundle_dir


def variant_bundle(bundle_dir: Path, dest: Path, bundle_version: str) -> Path:
    """A copy of a bundle whose manifest names another `bundle_version` (still verifiable)."""
    shutil.copytree(bundle_dir, dest)
    manifest_path = dest / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["bundle_version"] = bundle_version
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return dest


def artifact_dir(tracking_uri: str, model_name: str, version: str) -> Path:
    """The local artifact folder of a registered version (file-based artifact stores only)."""
    uri = Registry(tracking_uri, model_name).artifact_uri(version)
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"not a local artifact store: {uri}")
    return Path(url2pathname(parsed.path))


def add_version(
    tracking_uri: str, model_name: str, source: Path | str, tags: dict[str, str]
) -> str:
    """Register a version of `model_name` (created if needed) whose artifacts are `source`."""
    source_uri = source if isinstance(source, str) else Path(source).resolve().as_uri()
    return Registry(tracking_uri, model_name).add_version(source_uri, tags=tags).version


def copy_version(tracking_uri: str, from_model: str, version: str, to_model: str) -> str:
    """A version of `to_model` with the artifacts and tags of `from_model` version `version`."""
    mv = Registry(tracking_uri, from_model).resolve(version)
    source = artifact_dir(tracking_uri, from_model, version)
    return add_version(tracking_uri, to_model, source, mv.tags)


def tamper_bundle_file(bundle_dir: Path, relpath: str = "embeddings/item_embeddings.npz") -> None:
    """Flip one byte of a bundle file (same size: only the sha256 check can catch it)."""
    target = Path(bundle_dir) / relpath
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))


def wait_for(predicate: Any, timeout: float, what: str, poll: float = 0.05) -> None:
    """Poll `predicate()` until true; `TimeoutError` naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


@contextmanager
def live_server(app: FastAPI, timeout: float = 60.0) -> Iterator[str]:
    """Run `app` under uvicorn on a free loopback port in a thread; yield its base URL.

    The socket is bound before the server starts (no port race); shutdown is bounded.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="live-uvicorn", daemon=True
    )
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout, "uvicorn to start")
        if not server.started:
            raise RuntimeError("uvicorn exited before it started serving")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


@contextmanager
def champion_app(tmp_path_factory: Any, sample_mirror: Any, label: str) -> Iterator[FastAPI]:
    """An app (no watcher) that has loaded the shared tiny bundle through the registry."""
    import pytest

    from serving.app import create_app
    from serving.model_store import ModelStore
    from serving.settings import ServingSettings
    from serving.sources import RegistrySource

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        uri, model, _ = shared_registered_tiny_store(tmp_path_factory, sample_mirror)
        tmp = tmp_path_factory.mktemp(label)
        store = ModelStore(RegistrySource(uri, model, "champion", tmp / "cache"))
        assert store.refresh() == "loaded"
        yield create_app(store, ServingSettings.from_env({"CINE_DATA_DIR": str(tmp)}), watch=False)
