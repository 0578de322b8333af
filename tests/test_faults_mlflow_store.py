"""A data dir moved or copied elsewhere: its MLflow store must not keep writing to the old place.

Real MLflow SQLite stores in temporary data dirs: a run with an artifact and a registered version
are made in one data dir, the dir is copied, the original removed, and the copy is used.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from recommender_lib.registry.cli import main as registry_cli
from recommender_lib.registry.relocation import ARTIFACTS_SUBDIR, MovedStoreError, relocate_store
from recommender_lib.registry.tracking import ensure_experiment

EXPERIMENT = "cine-reco"


def _uri(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}"


def _run_with_artifact(data_dir: Path, tmp_path: Path) -> tuple[str, str]:
    """(run id, artifact URI) of a run that logged one file, in `data_dir`'s store."""
    uri = _uri(data_dir)
    experiment_id = ensure_experiment(uri, EXPERIMENT, data_dir / ARTIFACTS_SUBDIR)
    note = tmp_path / "note.txt"
    note.write_text("hello", encoding="utf-8")
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_artifact(str(note))
            return run.info.run_id, mlflow.get_artifact_uri()
    finally:
        mlflow.set_tracking_uri("")


@pytest.fixture()
def moved(tmp_path: Path) -> tuple[Path, Path]:
    """A store made in `old/`, copied to `new/`, with `old/` deleted. Returns (old, new)."""
    old, new = tmp_path / "old" / "data", tmp_path / "new" / "data"
    run_id, artifacts = _run_with_artifact(old, tmp_path)
    client = MlflowClient(_uri(old))
    client.create_registered_model("cine-reco")
    client.create_model_version("cine-reco", artifacts, run_id=run_id)
    shutil.copytree(old, new)
    shutil.rmtree(old)
    return old, new


def test_a_moved_store_is_refused_with_what_to_do(moved: tuple[Path, Path]) -> None:
    old, new = moved
    with pytest.raises(MovedStoreError) as err:
        ensure_experiment(_uri(new), EXPERIMENT, new / ARTIFACTS_SUBDIR)
    message = str(err.value)
    assert str(old) in message and str(new) in message
    assert "python -m recommender_lib.registry relocate" in message
    assert not old.exists()  # nothing was written back to the old place


def test_relocate_rewrites_every_path_and_new_runs_stay_in_the_new_dir(
    moved: tuple[Path, Path], tmp_path: Path
) -> None:
    old, new = moved
    changed = relocate_store(_uri(new), old, new)
    assert changed["experiments.artifact_location"] == 1
    assert changed["runs.artifact_uri"] == 1
    assert changed["model_versions.source"] == 1
    assert list((new / "mlflow").glob("mlflow.db.before-relocate-*"))  # the old db is kept

    client = MlflowClient(_uri(new))
    version = client.get_model_version("cine-reco", "1")
    assert version.source.startswith(new.resolve().as_uri() + "/")
    downloaded = Path(client.download_artifacts(version.run_id, "note.txt", str(tmp_path)))
    assert downloaded.read_text(encoding="utf-8") == "hello"

    _, artifacts = _run_with_artifact(new, tmp_path)  # the check passes, files land in new/
    assert artifacts.startswith(new.resolve().as_uri() + "/")
    assert not old.exists()


def test_the_cli_relocates_a_moved_store(
    moved: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    old, new = moved
    monkeypatch.setenv("CINE_DATA_DIR", str(new))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert registry_cli(["relocate", "--from", str(old)]) == 0
    assert "experiments.artifact_location" in capsys.readouterr().out
    ensure_experiment(_uri(new), EXPERIMENT, new / ARTIFACTS_SUBDIR)  # no longer refused
