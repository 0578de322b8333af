"""`Registry`: the MLflow model registry of serving bundles — versions, the `champion` alias,
promotions, rollback. The only code that talks to MLflow's model-registry API.

Each registered version is an MLflow pyfunc model whose `bundle` artifact is a verified serving
bundle (`recommender_lib.bundle.format`). Serving loads `models:/<name>@champion`. Every alias move
is appended to a JSON Lines promotion log (`records.PromotionLog`), which `rollback` consults.

The registry is the source of truth for who is champion: promote/rollback first download and
verify the target's bundle (refused unless `force`, which is logged and recorded), then move the
alias, tag the version and append the log record (under a file lock, so concurrent promotions
neither lose records nor interleave).

CLI: `python -m recommender_lib.registry {list,promote,rollback,log} --help`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recommender_lib.atomic import atomic_path
from recommender_lib.bundle.format import BundleError, read_manifest, verify_bundle
from recommender_lib.config import Settings
from recommender_lib.registry.records import (
    Action,
    ModelVersionInfo,
    PromotionLog,
    PromotionRecord,
    RegisteredVersion,
    RegistryError,
    rollback_target,
)
from recommender_lib.registry.tracking import DEFAULT_EXPERIMENT, ensure_experiment
from recommender_lib.registry.version_info import version_description, version_tags

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.pyfunc import PythonModel

logger = logging.getLogger(__name__)
CHAMPION = "champion"
DEFAULT_MODEL_NAME = "cine-reco"
BUNDLE_ARTIFACT = "bundle"
MODEL_ARTIFACT_NAME = "model"
_MODELS_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))")


def default_promotion_log(settings: Settings) -> Path:
    return settings.data_dir / "registry" / "promotions.jsonl"


class Registry:
    """One registered model (`model_name`) in the MLflow store at `tracking_uri`, and the
    promotion log recording its champions. Building one contacts nothing; the MLflow client is
    created on first use."""

    def __init__(
        self,
        tracking_uri: str,
        model_name: str = DEFAULT_MODEL_NAME,
        promotion_log: Path | str | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.promotion_log = None if promotion_log is None else Path(promotion_log)
        self._mlflow: MlflowClient | None = None

    @classmethod
    def from_settings(cls, settings: Settings, model_name: str = DEFAULT_MODEL_NAME) -> Registry:
        """The registry of `settings.mlflow_tracking_uri` with the default promotion log."""
        return cls(settings.mlflow_tracking_uri, model_name, default_promotion_log(settings))

    def __repr__(self) -> str:
        return f"Registry({self.tracking_uri!r}, {self.model_name!r}, {self.promotion_log!r})"

    @property
    def _client(self) -> MlflowClient:
        if self._mlflow is None:
            from mlflow import MlflowClient

            uri = self.tracking_uri
            self._mlflow = MlflowClient(tracking_uri=uri, registry_uri=uri)
        return self._mlflow

    # ----------------------------------------------------------------------- register / download

    def register_bundle(
        self,
        bundle_dir: Path,
        *,
        python_model: PythonModel,
        run_id: str | None = None,
        experiment_name: str = DEFAULT_EXPERIMENT,
        artifact_root: Path | None = None,
        tags: Mapping[str, str] | None = None,
        pip_requirements: Sequence[str] | None = None,
        signature: Any = None,
        input_example: Any = None,
    ) -> RegisteredVersion:
        """Verify `bundle_dir`, log it as a pyfunc model's `bundle` artifact, register a version.

        The model is logged in run `run_id` (resumed) or in a new run of `experiment_name`.
        Version tags: `bundle_version`, `metric.<name>` of the gated metrics and `source.<name>`
        from the manifest, then `tags`; the description (`version_description`) says what the
        model was trained on and its headline numbers. `pip_requirements=None` lets MLflow infer
        them, which loads the model in a subprocess (slow); so does an `input_example` (MLflow
        validates it by loading the model and predicting). Sets MLflow's process-global tracking
        URI while logging (restored after; not thread-safe).
        """
        import mlflow

        bundle_dir = Path(bundle_dir)
        manifest = verify_bundle(bundle_dir)
        bundle_version = str(manifest["bundle_version"])
        uri = self.tracking_uri
        with (
            _global_tracking_uri(uri),
            _run(uri, run_id, experiment_name, artifact_root) as active_run_id,
        ):
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT_NAME,
                python_model=python_model,
                artifacts={BUNDLE_ARTIFACT: str(bundle_dir.resolve())},
                pip_requirements=list(pip_requirements) if pip_requirements is not None else None,
                signature=signature,
                input_example=input_example,
            )
            # Still inside the global-URI block: the SQL registry store resolves a `models:/<id>`
            # source through the *global* tracking URI, not the client's.
            mv = self._create_version(
                info.model_uri,
                run_id=active_run_id,
                tags=version_tags(manifest, bundle_version, tags or {}),
                model_id=info.model_id,
                description=version_description(manifest),
            )
        return RegisteredVersion(
            name=self.model_name,
            version=str(mv.version),
            run_id=active_run_id,
            bundle_version=bundle_version,
            model_uri=f"models:/{self.model_name}/{mv.version}",
        )

    def add_version(
        self, source: str, *, run_id: str | None = None, tags: Mapping[str, str] | None = None
    ) -> ModelVersionInfo:
        """Register a version whose artifacts are already at `source` (a URI); not champion."""
        mv = self._create_version(source, run_id=run_id, tags=dict(tags or {}))
        return _info(mv, None)

    def _create_version(
        self,
        source: str,
        *,
        run_id: str | None,
        tags: dict[str, str],
        model_id: str | None = None,
        description: str | None = None,
    ) -> ModelVersion:
        from mlflow.exceptions import MlflowException

        try:
            self._client.create_registered_model(self.model_name)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        return self._client.create_model_version(
            name=self.model_name,
            source=source,
            run_id=run_id,
            tags=tags,
            model_id=model_id,
            description=description,
        )

    def artifact_uri(self, ref: str) -> str:
        """Where the artifacts of version or alias `ref` (see `resolve`) are stored."""
        mv = self._resolve(ref)
        return self._client.get_model_version_download_uri(mv.name, mv.version)

    def download_bundle(self, ref: str, dest: Path) -> Path:
        """Download the bundle of `ref` (see `resolve`), verify it, and move it atomically onto
        `dest`; return `dest`. `dest` is replaced only by a bundle that passed `verify_bundle`
        (else BundleError)."""
        import mlflow

        mv = self._resolve(ref)
        source = self._client.get_model_version_download_uri(mv.name, mv.version)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{dest.name}.download.", dir=dest.parent) as tmp:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=source, dst_path=tmp, tracking_uri=self.tracking_uri
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

    def verify_version(self, ref: str) -> str:
        """Download the bundle of `ref` into a temp folder and verify it; return its bundle
        version. BundleError when it does not verify or is not the registered bundle."""
        mv = self._resolve(ref)
        with tempfile.TemporaryDirectory(prefix=".verify.") as tmp:
            bundle = self.download_bundle(str(mv.version), Path(tmp) / "bundle")
            found = str(read_manifest(bundle)["bundle_version"])  # verified by the download
        registered = (mv.tags or {}).get("bundle_version")
        if registered is not None and registered != found:
            raise BundleError(
                f"model {mv.name!r} version {mv.version}: registered as bundle {registered}, "
                f"the manifest says {found}"
            )
        return found

    # ----------------------------------------------------------------------- queries

    def resolve(self, ref: str) -> ModelVersionInfo:
        """The version `ref` names: `models:/<name>@<alias>`, `models:/<name>/<version>`,
        `@alias`, `alias` or `3` (the last three of this registry's model)."""
        mv, alias = self._lookup(ref)
        champion = mv if alias == CHAMPION else self._get_alias(mv.name, CHAMPION)
        return _info(mv, None if champion is None else str(champion.version))

    def _resolve(self, ref: str) -> ModelVersion:
        return self._lookup(ref)[0]

    def _lookup(self, ref: str) -> tuple[ModelVersion, str | None]:
        """The version `ref` names, and the alias it was named by (None for a number)."""
        name, alias, version = self.model_name, None, None
        if match := _MODELS_URI.fullmatch(ref):
            name, alias, version = match["name"], match["alias"], match["version"]
        elif ref.startswith("models:/"):
            raise RegistryError(f"cannot parse model URI {ref!r}")
        elif ref.isdigit():
            version = ref
        else:
            alias = ref.removeprefix("@")
        if version is not None:
            return self._get_version(name, version), None
        mv = self._get_alias(name, alias or "")
        if mv is None:
            raise RegistryError(f"model {name!r} has no alias {alias!r}")
        return mv, alias

    def champion(self) -> ModelVersionInfo | None:
        """The version holding the `champion` alias, or None (also when the model is unknown)."""
        mv = self._get_alias(self.model_name, CHAMPION)
        return None if mv is None else _info(mv, str(mv.version))

    def list_versions(self) -> list[ModelVersionInfo]:
        """All versions of the model by version number; `is_champion` marks the champion."""
        current = self._get_alias(self.model_name, CHAMPION)
        champion_version = None if current is None else str(current.version)
        versions: list[ModelVersion] = []
        token = None
        while True:
            page = self._client.search_model_versions(
                filter_string=f"name = '{self.model_name}'", page_token=token
            )
            versions.extend(page)
            token = page.token
            if not token:
                break
        versions.sort(key=lambda mv: int(mv.version))
        return [_info(mv, champion_version) for mv in versions]

    def _get_version(self, name: str, version: str) -> ModelVersion:
        from mlflow.exceptions import MlflowException

        try:
            return self._client.get_model_version(name, str(version))
        except MlflowException as exc:
            if _is_missing(exc):
                raise RegistryError(f"model {name!r} has no version {version!r}") from None
            raise

    def _get_alias(self, name: str, alias: str) -> ModelVersion | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            if _is_missing(exc):
                return None
            raise

    # ----------------------------------------------------------------------- promotion

    @property
    def _log(self) -> PromotionLog:
        if self.promotion_log is None:
            raise RegistryError(f"{self!r} has no promotion log")
        return PromotionLog(self.promotion_log)

    def promotions(self) -> list[PromotionRecord]:
        """This model's records of the promotion log, oldest first ([] when there is no log).

        Every line of the log is validated (RegistryError names the first bad one)."""
        return [r for r in self._log.read() if r.model_name == self.model_name]

    def promote(
        self, version: str, *, reason: str, actor: str, force: bool = False
    ) -> PromotionRecord:
        """Move `champion` to `version` (must exist, be READY and have a bundle that verifies,
        unless `force`) and log it as a promotion."""
        log = self._log
        with log.locked():
            return self._move_champion(
                log, version, action="promote", reason=reason, actor=actor, force=force
            )

    def rollback(
        self,
        *,
        actor: str,
        reason: str = "manual rollback",
        to_version: str | None = None,
        force: bool = False,
    ) -> PromotionRecord:
        """Move `champion` back to `to_version`, or to the previous champion per the log (its
        bundle must verify unless `force`)."""
        log = self._log
        with log.locked():
            current = self.champion()
            if current is None:
                raise RegistryError(f"model {self.model_name!r} has no champion to roll back from")
            target = to_version or rollback_target(log.read(), self.model_name, current.version)
            return self._move_champion(
                log, target, action="rollback", reason=reason, actor=actor, force=force
            )

    def _move_champion(
        self,
        log: PromotionLog,
        version: str,
        *,
        action: Action,
        reason: str,
        actor: str,
        force: bool,
    ) -> PromotionRecord:
        name, version = self.model_name, str(version)
        mv = self._get_version(name, version)
        if str(mv.status) != "READY":
            raise RegistryError(f"model {name!r} version {version} is {mv.status}, not READY")
        current = self._get_alias(name, CHAMPION)
        from_version = None if current is None else str(current.version)
        if from_version == version:
            raise RegistryError(f"model {name!r} version {version} is already the champion")
        forced = self._check_target(version, action, force)
        record = PromotionRecord(
            at=datetime.now(UTC).isoformat(timespec="seconds"),
            model_name=name,
            from_version=from_version,
            to_version=version,
            actor=actor,
            reason=reason,
            action=action,
            forced=forced,
        )
        self._client.set_registered_model_alias(name, CHAMPION, version)
        self._client.set_model_version_tag(name, version, "promoted_at", record.at)
        self._client.set_model_version_tag(name, version, "promotion_reason", reason)
        if forced:
            self._client.set_model_version_tag(name, version, "promotion_forced", "true")
        log.append(record)
        return record

    def _check_target(self, version: str, action: Action, force: bool) -> bool:
        """Verify the bundle of `version`; True when it does not and `force` overrides."""
        try:
            self.verify_version(version)
        except (BundleError, RegistryError) as exc:  # altered, or no bundle artifact at all
            if not force:
                raise RegistryError(
                    f"refusing to {action} model {self.model_name!r} to version {version}: "
                    f"its bundle does not verify ({exc}); --force overrides"
                ) from exc
            logger.warning(
                "forced %s of model %r to version %s whose bundle does not verify: %s",
                action,
                self.model_name,
                version,
                exc,
            )
            return True
        return False


# --------------------------------------------------------------------------- MLflow plumbing


def _is_missing(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")


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


def _bundle_subpath(model_dir: Path) -> str:
    from mlflow.models import Model

    flavor = Model.load(str(model_dir)).flavors.get("python_function", {})
    artifact = (flavor.get("artifacts") or {}).get(BUNDLE_ARTIFACT)
    if not artifact:
        raise RegistryError(f"model at {model_dir} has no {BUNDLE_ARTIFACT!r} artifact")
    return artifact["path"]


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
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]  # None: back to the default


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
