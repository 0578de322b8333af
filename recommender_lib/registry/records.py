"""What the registry hands out and keeps: registered-version records and the promotion log.

The promotion log is a JSON Lines file, one `PromotionRecord` per move of the `champion` alias;
`rollback_target` reads it to find the previous champion.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from recommender_lib.atomic import write_text_atomic

Action = Literal["promote", "rollback"]


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
    forced: bool = False  # moved with `force` to a version whose bundle did not verify

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class PromotionLog:
    """The JSON Lines promotion log at `path` (shared by every model of a store)."""

    path: Path

    def read(self) -> list[PromotionRecord]:
        """All records, oldest first; [] when the log does not exist yet."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
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
                    f"{self.path}: line {number} is not a promotion record: {exc}"
                ) from exc
            if record.action not in ("promote", "rollback") or not record.to_version:
                raise RegistryError(
                    f"{self.path}: line {number} has an invalid action or to_version"
                )
            records.append(record)
        return records

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive lock serialising read-modify-write of the log across processes."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def append(self, record: PromotionRecord) -> None:
        """Append one record (atomically rewritten; hold `locked()` around read-modify-write)."""
        try:
            existing = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            existing = ""
        if existing and not existing.endswith("\n"):
            existing += "\n"
        write_text_atomic(self.path, existing + record.to_json() + "\n")


def previous_champions(
    records: Sequence[PromotionRecord], model_name: str, current: str
) -> list[str]:
    """The champions before `current`, newest first, walking `rollback_target` back."""
    found: list[str] = []
    seen = {current}
    while True:
        try:
            current = rollback_target(records, model_name, current)
        except RegistryError:
            return found
        if current in seen:
            return found
        seen.add(current)
        found.append(current)


def rollback_target(records: Sequence[PromotionRecord], model_name: str, current: str) -> str:
    """The champion before `current`: `from_version` of the last promotion to `current`.

    Only promotions count, so repeated rollbacks walk further back (3 → 2 → 1) instead of
    toggling. When `current` was reached by an explicit rollback only, that move is undone.
    """
    moves = [r for r in records if r.model_name == model_name and r.to_version == current]
    promotions = [r for r in moves if r.action == "promote"]
    candidates = promotions or moves
    last = candidates[-1] if candidates else None
    if last is None or last.from_version is None:
        raise RegistryError(
            f"model {model_name!r}: the promotion log records no champion before version "
            f"{current}; pass an explicit version to roll back to"
        )
    return last.from_version
