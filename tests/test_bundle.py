"""Serving bundles: round trip, tamper detection, content addressing, atomic replacement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recommender_lib.bundle.format import (
    BUNDLE_FORMAT,
    MANIFEST_FILE,
    BundleError,
    git_commit,
    read_manifest,
    verify_bundle,
    write_bundle,
)


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Path]:
    src = tmp_path / "src"
    (src / "model" / "assets").mkdir(parents=True)
    (src / "model" / "two_tower.keras").write_bytes(bytes(range(256)) * 10)
    (src / "model" / "assets" / "vocab.txt").write_text("a\nb\n")
    (src / "items.parquet").write_bytes(b"PAR1 not really")
    return {"model": src / "model", "features/items.parquet": src / "items.parquet"}


@pytest.fixture
def bundle(tmp_path: Path, sources: dict[str, Path]) -> Path:
    return write_bundle(
        tmp_path / "out" / "bundle",
        sources,
        {"git_commit": "abc", "metrics": {"rmse": 0.9}, "source_versions": {"ml": "v1"}},
    )


def test_round_trip(bundle: Path) -> None:
    manifest = verify_bundle(bundle)
    assert manifest == read_manifest(bundle)
    assert manifest["format"] == BUNDLE_FORMAT
    assert manifest["git_commit"] == "abc"
    assert manifest["metrics"] == {"rmse": 0.9}
    assert len(manifest["bundle_version"]) == 16
    assert manifest["created_at"].endswith("+00:00")
    assert sorted(manifest["files"]) == [
        "features/items.parquet",
        "model/assets/vocab.txt",
        "model/two_tower.keras",
    ]
    assert manifest["files"]["model/two_tower.keras"]["bytes"] == 2560
    assert (bundle / "model" / "assets" / "vocab.txt").read_text() == "a\nb\n"


@pytest.mark.parametrize(
    "relpath", ["features/items.parquet", "model/assets/vocab.txt", "model/two_tower.keras"]
)
def test_tampered_byte_is_named(bundle: Path, relpath: str) -> None:
    path = bundle / relpath
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{relpath!r} sha256 mismatch"):
        verify_bundle(bundle)


def test_size_mismatch(bundle: Path) -> None:
    with (bundle / "model" / "assets" / "vocab.txt").open("a") as fh:
        fh.write("c\n")
    with pytest.raises(BundleError, match=r"'model/assets/vocab.txt' size mismatch"):
        verify_bundle(bundle)


def test_missing_file(bundle: Path) -> None:
    (bundle / "features" / "items.parquet").unlink()
    with pytest.raises(BundleError, match=r"'features/items.parquet' is missing"):
        verify_bundle(bundle)


def test_extra_file(bundle: Path) -> None:
    (bundle / "model" / "stray.bin").write_bytes(b"x")
    with pytest.raises(BundleError, match=r"unexpected extra file 'model/stray.bin'"):
        verify_bundle(bundle)


def test_bad_manifest_json(bundle: Path) -> None:
    (bundle / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(BundleError, match="bad manifest JSON"):
        verify_bundle(bundle)


def test_missing_manifest_and_unsupported_format(bundle: Path) -> None:
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    (bundle / MANIFEST_FILE).write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(BundleError, match="unsupported bundle format 99"):
        verify_bundle(bundle)
    (bundle / MANIFEST_FILE).unlink()
    with pytest.raises(BundleError, match="manifest is missing"):
        verify_bundle(bundle)


def test_manifest_path_traversal_refused(bundle: Path) -> None:
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    manifest["files"]["../escape"] = {"sha256": "0" * 64, "bytes": 0}
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"must not contain '\.\.'"):
        verify_bundle(bundle)


@pytest.mark.parametrize("relpath", ["../x", "a/../../x", "/etc/passwd", "", MANIFEST_FILE])
def test_bad_relpaths_refused(tmp_path: Path, sources: dict[str, Path], relpath: str) -> None:
    with pytest.raises(BundleError):
        write_bundle(tmp_path / "b", {relpath: sources["features/items.parquet"]}, {})
    assert not (tmp_path / "b").exists()


def test_reserved_manifest_fields_refused(tmp_path: Path, sources: dict[str, Path]) -> None:
    with pytest.raises(BundleError, match="reserved"):
        write_bundle(tmp_path / "b", sources, {"files": {}})


def test_content_addressed_version(tmp_path: Path, sources: dict[str, Path]) -> None:
    first = read_manifest(write_bundle(tmp_path / "one", sources, {"note": "a"}))
    second = read_manifest(write_bundle(tmp_path / "two", sources, {"note": "b"}))
    assert first["bundle_version"] == second["bundle_version"]
    sources["features/items.parquet"].write_bytes(b"changed")
    third = read_manifest(write_bundle(tmp_path / "three", sources, {}))
    assert third["bundle_version"] != first["bundle_version"]
    given = read_manifest(write_bundle(tmp_path / "four", sources, {"bundle_version": "v7"}))
    assert given["bundle_version"] == "v7"


def test_replaces_existing_bundle(bundle: Path, sources: dict[str, Path]) -> None:
    old_version = read_manifest(bundle)["bundle_version"]
    sources["features/items.parquet"].write_bytes(b"new data")
    write_bundle(bundle, sources, {})
    assert verify_bundle(bundle)["bundle_version"] != old_version
    assert [p.name for p in bundle.parent.iterdir()] == ["bundle"]


def test_failed_write_leaves_previous_bundle(bundle: Path, sources: dict[str, Path]) -> None:
    before = read_manifest(bundle)
    broken = {**sources, "zz/missing.bin": bundle.parent / "does-not-exist"}
    with pytest.raises(BundleError, match=r"'zz/missing.bin' does not exist"):
        write_bundle(bundle, broken, {"git_commit": "new"})
    assert verify_bundle(bundle) == before
    assert [p.name for p in bundle.parent.iterdir()] == ["bundle"]


def test_failure_mid_copy_cleans_up(
    bundle: Path, sources: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import recommender_lib.bundle.format as module

    calls = []

    def flaky_copy(src: Path, dst: Path) -> None:
        calls.append(src)
        if len(calls) == 2:
            raise OSError("disk full")
        Path(dst).write_bytes(Path(src).read_bytes())

    monkeypatch.setattr(module.shutil, "copyfile", flaky_copy)
    before = read_manifest(bundle)
    with pytest.raises(BundleError, match="disk full"):
        write_bundle(bundle, sources, {})
    assert len(calls) == 2
    assert verify_bundle(bundle) == before
    assert [p.name for p in bundle.parent.iterdir()] == ["bundle"]


def test_git_commit(tmp_path: Path) -> None:
    assert git_commit(tmp_path) is None
    commit = git_commit()
    assert commit is None or len(commit) in (40, 64)
