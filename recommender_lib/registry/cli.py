"""`python -m recommender_lib.registry {list,promote,rollback,log}`: inspect the model registry
and move the serving champion, through `Registry`."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recommender_lib.bundle.format import BundleError
from recommender_lib.config import Settings
from recommender_lib.registry.client import DEFAULT_MODEL_NAME, Registry, default_promotion_log
from recommender_lib.registry.promotion import METRIC_TAG_PREFIX
from recommender_lib.registry.records import PromotionRecord, RegistryError
from recommender_lib.registry.relocation import MovedStoreError, relocate_store

SUMMARY_METRICS = ("P1.two_tower.rmse", "P1.two_tower.ndcg_at_10", "P2.two_tower.rmse_k3")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _metrics_summary(tags: Mapping[str, str]) -> str:
    """The headline held-out metrics of a version (all of them are in its tags and MLflow)."""
    shown = [(m, tags.get(METRIC_TAG_PREFIX + m)) for m in SUMMARY_METRICS]
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
    for move in (p, r):
        move.add_argument(
            "--force",
            action="store_true",
            help="move the alias even when the version's bundle does not verify (logged)",
        )
    sub.add_parser("log", help="show the promotion log")
    m = sub.add_parser("relocate", help="rewrite a moved local store's paths to this data dir")
    m.add_argument("--from", dest="old_dir", type=Path, required=True, help="the old data dir")
    m.add_argument("--to", dest="new_dir", type=Path, help="default: the current data dir")
    return parser


def _print_record(record: PromotionRecord) -> None:
    action = f"{record.action} (forced, bundle does not verify)" if record.forced else record.action
    print(
        f"{action}: {record.model_name} champion "
        f"{record.from_version or '(none)'} -> {record.to_version}"
    )


def _cmd_list(registry: Registry, args: argparse.Namespace) -> None:
    versions = registry.list_versions()
    if not versions:
        print(f"no versions of model {registry.model_name!r} at {registry.tracking_uri}")
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


def _cmd_promote(registry: Registry, args: argparse.Namespace) -> None:
    record = registry.promote(args.version, reason=args.reason, actor=args.actor, force=args.force)
    _print_record(record)


def _cmd_rollback(registry: Registry, args: argparse.Namespace) -> None:
    record = registry.rollback(
        actor=args.actor, reason=args.reason, to_version=args.to_version, force=args.force
    )
    _print_record(record)


def _cmd_log(registry: Registry, args: argparse.Namespace) -> None:
    records = registry.promotions()
    if not records:
        print(f"no promotions of model {registry.model_name!r} in {registry.promotion_log}")
        return
    headers = ["AT", "ACTION", "FROM", "TO", "ACTOR", "REASON"]
    rows = [
        (
            r.at,
            f"{r.action} (forced)" if r.forced else r.action,
            r.from_version,
            r.to_version,
            r.actor,
            r.reason,
        )
        for r in records
    ]
    print(_table(headers, rows))


def _cmd_relocate(registry: Registry, args: argparse.Namespace) -> None:
    new_dir = args.new_dir or Settings.from_env().data_dir
    changed = relocate_store(registry.tracking_uri, args.old_dir, new_dir)
    print(f"relocated {registry.tracking_uri}: {args.old_dir} -> {new_dir}")
    for column, rows in sorted(changed.items()):
        print(f"  {column}: {rows} row(s)")


_COMMANDS = {
    "list": _cmd_list,
    "promote": _cmd_promote,
    "rollback": _cmd_rollback,
    "log": _cmd_log,
    "relocate": _cmd_relocate,
}


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
    registry = Registry(args.tracking_uri, args.model_name, args.promotion_log)
    try:
        if args.command != "log":
            _check_store(args.tracking_uri)
        _COMMANDS[args.command](registry, args)
    except Exception as exc:
        known = (RegistryError, BundleError, MovedStoreError)
        if not isinstance(exc, known) and not _is_mlflow_error(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
