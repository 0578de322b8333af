"""MLflow model registry for serving bundles: versions, the `champion` alias, promotions, rollback.

Each registered version is an MLflow pyfunc model whose `bundle` artifact is a verified serving
bundle (`recommender_lib.bundle.format`). Serving loads `models:/<name>@champion`. Every alias move
is appended to a JSON Lines promotion log, which is also what `rollback` consults.

The registry is the source of truth for who is champion: promote/rollback move the alias first,
then tag the version and append the log record (under a file lock, so concurrent promotions
neither lose records nor interleave).

CLI: `python -m recommender_lib.registry {list,promote,rollback,log} --help`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import getpass
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from recommender_lib.atomic import atomic_path, write_text_atomic
from recommender_lib.bundle.format import BundleError, verify_bundle
from recommender_lib.config import Settings
from recommender_lib.registry.tracking import DEFAULT_EXPERIMENT, ensure_experiment

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.pyfunc import PythonModel

CHAMPION = "champion"
DEFAULT_MODEL_NAME = "cine-reco"
BUNDLE_ARTIFACT = "bundle"
MODEL_ARTIFACT_NAME = "model"
Action = Literal["promote", "rollback"]
_MODELS_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))")


class RegistryError(Exception):
    """A registry request cannot be met: unknown version or alias, nothing to roll back to…"""


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    bundle_version: str
    model_uri: str


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: str
    run_id: str | None
    bundle_version: str | None
    status: str
    created_at: str
    is_champion: bool
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PromotionRecord:
    at: str
    model_name: str
    from_version: str | None
    to_version: str
    actor: str
    reason: str
    action: Action

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


# --------------------------------------------------------------------------- MLflow plumbing


def _client(client_or_uri: MlflowClient | str) -> MlflowClient:
    if not isinstance(client_or_uri, str):
        return client_or_uri
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=client_or_uri, registry_uri=client_or_uri)


def _is_missing(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")


def _get_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if _is_missing(exc):
            raise RegistryError(f"model {name!r} has no version {version!r}") from None
        raise


def _get_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if _is_missing(exc):
            return None
        raise


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def _info(mv: ModelVersion, champion_version: str | None) -> ModelVersionInfo:
    tags = dict(mv.tags or {})
    created = datetime.fromtimestamp((mv.creation_timestamp or 0) / 1000, UTC)
    return ModelVersionInfo(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id,
        bundle_version=tags.get("bundle_version"),
        status=str(mv.status),
        created_at=created.isoformat(timespec="seconds"),
        is_champion=str(mv.version) == champion_version,
        tags=tags,
    )


@contextlib.contextmanager
def _global_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at `uri` for the block, then restore the previous setting.

    `mlflow.pyfunc.log_model` only works through the fluent (process-global) API.
    """
    import mlflow

    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


@contextlib.contextmanager
def _run(
    tracking_uri: str, run_id: str | None, experiment_name: str, artifact_root: Path | None
) -> Iterator[str]:
    """Yield the id of an active run: `run_id` resumed, or a new one; end what was started here."""
    import mlflow

    active = mlflow.active_run()
    if active is not None and run_id is not None and active.info.run_id == run_id:
        yield run_id  # the caller's run (e.g. dagster-mlflow's): the caller ends it
        return
    kwargs: dict[str, Any] = {"nested": active is not None}
    if run_id is not None:
        kwargs["run_id"] = run_id
    else:
        kwargs["experiment_id"] = ensure_experiment(tracking_uri, experiment_name, artifact_root)
    # ActiveRun.__exit__ ends the run FINISHED, or FAILED when the block raised.
    with mlflow.start_run(**kwargs) as run:
        yield run.info.run_id


def _flatten(prefix: str, value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(_flatten(f"{prefix}.{key}", item))
        return out
    return {prefix: value if isinstance(value, str) else json.dumps(value)}


def _version_tags(
    manifest: Mapping[str, Any], bundle_version: str, tags: Mapping[str, str]
) -> dict[str, str]:
    out = {"bundle_version": bundle_version}
    out.update(_flatten("metric", manifest.get("metrics") or {}))
    out.update(_flatten("source", manifest.get("source_versions") or {}))
    out.update({str(k): str(v) for k, v in tags.items()})
    return out


# --------------------------------------------------------------------------- register / download


def register_bundle(
    bundle_dir: Path,
    *,
    tracking_uri: str,
    python_model: PythonModel,
    model_name: str = DEFAULT_MODEL_NAME,
    run_id: str | None = None,
    experiment_name: str = DEFAULT_EXPERIMENT,
    artifact_root: Path | None = None,
    tags: Mapping[str, str] | None = None,
    pip_requirements: Sequence[str] | None = None,
    signature: Any = None,
    input_example: Any = None,
) -> RegisteredVersion:
    """Verify `bundle_dir`, log it as a pyfunc model's `bundle` artifact and register a version.

    The model is logged in run `run_id` (resumed) or in a new run of `experiment_name`. Version
    tags: `bundle_version`, `metric.<name>` and `source.<name>` from the manifest, then `tags`.
    `pip_requirements=None` lets MLflow infer them, which loads the model in a subprocess (slow);
    so does an `input_example` (MLflow validates it by loading the model and predicting).
    Sets MLflow's process-global tracking URI while logging (restored after; not thread-safe).
    """
    import mlflow

    bundle_dir = Path(bundle_dir)
    manifest = verify_bundle(bundle_dir)
    bundle_version = str(manifest["bundle_version"])
    client = _client(tracking_uri)
    with (
        _global_tracking_uri(tracking_uri),
        _run(tracking_uri, run_id, experiment_name, artifact_root) as active_run_id,
    ):
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT_NAME,
            python_model=python_model,
            artifacts={BUNDLE_ARTIFACT: str(bundle_dir.resolve())},
            pip_requirements=list(pip_requirements) if pip_requirements is not None else None,
            signature=signature,
            input_example=input_example,
        )
        _ensure_registered_model(client, model_name)
        # Still inside the global-URI block: the SQL registry store resolves a `models:/<id>`
        # source through the *global* tracking URI, not the client's.
        mv = client.create_model_version(
            name=model_name,
            source=info.model_uri,
            run_id=active_run_id,
            tags=_version_tags(manifest, bundle_version, tags or {}),
            model_id=info.model_id,
        )
    return RegisteredVersion(
        name=model_name,
        version=str(mv.version),
        run_id=active_run_id,
        bundle_version=bundle_version,
        model_uri=f"models:/{model_name}/{mv.version}",
    )


def resolve_version(client: MlflowClient, ref: str, model_name: str) -> ModelVersion:
    """Resolve `models:/<name>@<alias>`, `models:/<name>/<version>`, `@alias`, `alias` or `3`."""
    name, alias, version = model_name, None, None
    if match := _MODELS_URI.fullmatch(ref):
        name, alias, version = match["name"], match["alias"], match["version"]
    elif ref.startswith("models:/"):
        raise RegistryError(f"cannot parse model URI {ref!r}")
    elif ref.isdigit():
        version = ref
    else:
        alias = ref.removeprefix("@")
    if version is not None:
        return _get_version(client, name, version)
    mv = _get_alias(client, name, alias or "")
    if mv is None:
        raise RegistryError(f"model {name!r} has no alias {alias!r}")
    return mv


def _bundle_subpath(model_dir: Path) -> str:
    from mlflow.models import Model

    flavor = Model.load(str(model_dir)).flavors.get("python_function", {})
    artifact = (flavor.get("artifacts") or {}).get(BUNDLE_ARTIFACT)
    if not artifact:
        raise RegistryError(f"model at {model_dir} has no {BUNDLE_ARTIFACT!r} artifact")
    return artifact["path"]


def download_bundle(
    model_uri_or_alias: str,
    *,
    tracking_uri: str,
    model_name: str = DEFAULT_MODEL_NAME,
    dest: Path,
) -> Path:
    """Download a version's bundle, verify it, and move it atomically onto `dest`; return `dest`.

    `dest` is replaced only by a bundle that passed `verify_bundle` (else BundleError).
    """
    import mlflow

    client = _client(tracking_uri)
    mv = resolve_version(client, model_uri_or_alias, model_name)
    source = client.get_model_version_download_uri(mv.name, mv.version)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.download.", dir=dest.parent) as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=tmp, tracking_uri=tracking_uri
            )
        )
        bundle = local / _bundle_subpath(local)
        try:
            verify_bundle(bundle)
        except BundleError as exc:
            raise BundleError(f"model {mv.name!r} version {mv.version}: {exc}") from exc
        with atomic_path(dest) as target:
            os.replace(bundle, target)
    return dest


# --------------------------------------------------------------------------- queries


def champion(
    client_or_tracking_uri: MlflowClient | str, model_name: str
) -> ModelVersionInfo | None:
    """The version holding the `champion` alias, or None (also when the model does not exist)."""
    mv = _get_alias(_client(client_or_tracking_uri), model_name, CHAMPION)
    return None if mv is None else _info(mv, str(mv.version))


def list_versions(tracking_uri: str, model_name: str) -> list[ModelVersionInfo]:
    """All versions of `model_name` by version number; `is_champion` marks the champion."""
    client = _client(tracking_uri)
    current = _get_alias(client, model_name, CHAMPION)
    champion_version = None if current is None else str(current.version)
    versions: list[ModelVersion] = []
    token = None
    while True:
        page = client.search_model_versions(
            filter_string=f"name = '{model_name}'", page_token=token
        )
        versions.extend(page)
        token = page.token
        if not token:
            break
    versions.sort(key=lambda mv: int(mv.version))
    return [_info(mv, champion_version) for mv in versions]


# --------------------------------------------------------------------------- promotion log


def default_promotion_log(settings: Settings) -> Path:
    return settings.data_dir / "registry" / "promotions.jsonl"


def read_promotion_log(log_path: Path) -> list[PromotionRecord]:
    """All records, oldest first; [] when the log does not exist yet."""
    log_path = Path(log_path)
    try:
        lines = log_path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            record = PromotionRecord(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise RegistryError(
                f"{log_path}: line {number} is not a promotion record: {exc}"
            ) from exc
        if record.action not in ("promote", "rollback") or not record.to_version:
            raise RegistryError(f"{log_path}: line {number} has an invalid action or to_version")
        records.append(record)
    return records


@contextlib.contextmanager
def _log_lock(log_path: Path) -> Iterator[None]:
    """Exclusive lock serialising read-modify-write of the promotion log across processes."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path.with_name(log_path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _append_record(log_path: Path, record: PromotionRecord) -> None:
    try:
        existing = log_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        existing = ""
    if existing and not existing.endswith("\n"):
        existing += "\n"
    write_text_atomic(log_path, existing + record.to_json() + "\n")


def _move_champion(
    tracking_uri: str,
    model_name: str,
    version: str,
    *,
    action: Action,
    reason: str,
    actor: str,
    log_path: Path,
) -> PromotionRecord:
    client = _client(tracking_uri)
    version = str(version)
    mv = _get_version(client, model_name, version)
    if str(mv.status) != "READY":
        raise RegistryError(f"model {model_name!r} version {version} is {mv.status}, not READY")
    current = _get_alias(client, model_name, CHAMPION)
    from_version = None if current is None else str(current.version)
    if from_version == version:
        raise RegistryError(f"model {model_name!r} version {version} is already the champion")
    record = PromotionRecord(
        at=datetime.now(UTC).isoformat(timespec="seconds"),
        model_name=model_name,
        from_version=from_version,
        to_version=version,
        actor=actor,
        reason=reason,
        action=action,
    )
    client.set_registered_model_alias(model_name, CHAMPION, version)
    client.set_model_version_tag(model_name, version, "promoted_at", record.at)
    client.set_model_version_tag(model_name, version, "promotion_reason", reason)
    _append_record(log_path, record)
    return record


def promote(
    tracking_uri: str,
    model_name: str,
    version: str,
    *,
    reason: str,
    actor: str,
    log_path: Path,
) -> PromotionRecord:
    """Move `champion` to `version` (must exist and be READY) and log it as a promotion."""
    log_path = Path(log_path)
    with _log_lock(log_path):
        return _move_champion(
            tracking_uri,
            model_name,
            version,
            action="promote",
            reason=reason,
            actor=actor,
            log_path=log_path,
        )


def rollback_target(records: Sequence[PromotionRecord], model_name: str, current: str) -> str:
    """The champion before `current`: `from_version` of the last promotion to `current`.

    Only promotions count, so repeated rollbacks walk further back (3 → 2 → 1) instead of
    toggling. When `current` was reached by an explicit rollback only, that move is undone.
    """
    moves = [r for r in records if r.model_name == model_name and r.to_version == current]
    promotions = [r for r in moves if r.action == "promote"]
    last = (promotions or moves or [None])[-1]
    if last is None or last.from_version is None:
        raise RegistryError(
            f"model {model_name!r}: the promotion log records no champion before version "
            f"{current}; pass an explicit version to roll back to"
        )
    return last.from_version


def rollback(
    tracking_uri: str,
    model_name: str,
    *,
    log_path: Path,
    actor: str,
    reason: str = "manual rollback",
    to_version: str | None = None,
) -> PromotionRecord:
    """Move `champion` back to `to_version`, or to the previous champion per the promotion log."""
    log_path = Path(log_path)
    with _log_lock(log_path):
        current = champion(tracking_uri, model_name)
        if current is None:
            raise RegistryError(f"model {model_name!r} has no champion to roll back from")
        target = to_version or rollback_target(
            read_promotion_log(log_path), model_name, current.version
        )
        return _move_champion(
            tracking_uri,
            model_name,
            target,
            action="rollback",
            reason=reason,
            actor=actor,
            log_path=log_path,
        )


# --------------------------------------------------------------------------- CLI


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


SUMMARY_METRICS = ("P1.two_tower.rmse", "P1.two_tower.ndcg_at_10", "P2.two_tower.rmse_k3")


def _metrics_summary(tags: Mapping[str, str]) -> str:
    """The headline held-out metrics of a version (all of them are in its tags and MLflow)."""
    shown = [(m, tags.get(f"metric.{m}")) for m in SUMMARY_METRICS]
    return " ".join(f"{m.split('.', 1)[1]}={float(v):.4f}" for m, v in shown if v is not None)


def _is_mlflow_error(exc: Exception) -> bool:
    errors = sys.modules.get("mlflow.exceptions")
    return errors is not None and isinstance(exc, errors.MlflowException)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recommender_lib.registry",
        description="Inspect the model registry and move the serving champion.",
    )
    parser.add_argument("--tracking-uri", help="MLflow tracking/registry URI (default: settings)")
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--promotion-log", type=Path, help="default: <data_dir>/registry/…")
    parser.add_argument("--actor", help="who is acting (default: the OS user)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list versions; * marks the champion")
    p = sub.add_parser("promote", help="make VERSION the champion")
    p.add_argument("version")
    p.add_argument("--reason", required=True)
    r = sub.add_parser("rollback", help="return the champion alias to the previous champion")
    r.add_argument("--to", dest="to_version", help="roll back to this version instead")
    r.add_argument("--reason", default="manual rollback")
    sub.add_parser("log", help="show the promotion log")
    return parser


def _print_record(record: PromotionRecord) -> None:
    print(
        f"{record.action}: {record.model_name} champion "
        f"{record.from_version or '(none)'} -> {record.to_version}"
    )


def _cmd_list(args: argparse.Namespace) -> None:
    versions = list_versions(args.tracking_uri, args.model_name)
    if not versions:
        print(f"no versions of model {args.model_name!r} at {args.tracking_uri}")
        return
    headers = ["", "VERSION", "STATUS", "BUNDLE", "CREATED", "RUN", "METRICS"]
    rows = [
        (
            "*" if v.is_champion else "",
            v.version,
            v.status,
            v.bundle_version,
            v.created_at,
            v.run_id,
            _metrics_summary(v.tags),
        )
        for v in versions
    ]
    print(_table(headers, rows))


def _cmd_promote(args: argparse.Namespace) -> None:
    record = promote(
        args.tracking_uri,
        args.model_name,
        args.version,
        reason=args.reason,
        actor=args.actor,
        log_path=args.promotion_log,
    )
    _print_record(record)


def _cmd_rollback(args: argparse.Namespace) -> None:
    record = rollback(
        args.tracking_uri,
        args.model_name,
        log_path=args.promotion_log,
        actor=args.actor,
        reason=args.reason,
        to_version=args.to_version,
    )
    _print_record(record)


def _cmd_log(args: argparse.Namespace) -> None:
    records = [r for r in read_promotion_log(args.promotion_log) if r.model_name == args.model_name]
    if not records:
        print(f"no promotions of model {args.model_name!r} in {args.promotion_log}")
        return
    headers = ["AT", "ACTION", "FROM", "TO", "ACTOR", "REASON"]
    rows = [(r.at, r.action, r.from_version, r.to_version, r.actor, r.reason) for r in records]
    print(_table(headers, rows))


_COMMANDS = {"list": _cmd_list, "promote": _cmd_promote, "rollback": _cmd_rollback, "log": _cmd_log}


def _check_store(tracking_uri: str) -> None:
    """Refuse a missing SQLite store instead of silently creating an empty one."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise RegistryError(f"no MLflow database at {db} (check --tracking-uri)")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (1 with a one-line error on failure)."""
    args = _parser().parse_args(argv)
    if args.tracking_uri is None or args.promotion_log is None:
        settings = Settings.from_env()
        args.tracking_uri = args.tracking_uri or settings.mlflow_tracking_uri
        args.promotion_log = args.promotion_log or default_promotion_log(settings)
    args.actor = args.actor or _os_user()
    try:
        if args.command != "log":
            _check_store(args.tracking_uri)
        _COMMANDS[args.command](args)
    except Exception as exc:
        if not isinstance(exc, (RegistryError, BundleError)) and not _is_mlflow_error(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
