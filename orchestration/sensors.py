"""Sensors and schedules: notice a new IMDb dump or MovieLens release, then refresh and retrain.

Each sensor probes its source(s) cheaply (`recommender_lib.sources.probe`: HEAD / conditional
requests, the MovieLens `.md5`, file size + mtime) and keeps the last seen state per URL as a
JSON cursor. A changed version gives exactly one `full_refresh` run (ingest, then retrain) whose
run key is the dump version(s), so the same dump never launches twice even if a cursor is lost.

Rules:
- unchanged: a SkipReason ("unchanged: ..."), no run; the cursor keeps the fresher validators.
- probe error (refused, timeout, 4xx/5xx): a SkipReason naming the URL and the error; the
  cursor is left as it was and the sensor never raises.
- no cursor yet (first tick, or the URL changed): the version the raw store already holds for
  that URL counts as seen, so a platform that was just refreshed (`make platform`, then
  `dagster dev`) does not retrain again; with an empty store the first tick requests a run.
- covered: a `full_refresh` run that is queued or running but has not started this source's
  raw steps yet fetches the newest version anyway, so a change gives a SkipReason naming that
  run and the cursor moves on. On a fresh install both sensors see a change on their first
  tick; the daemon evaluates them one after the other, so the second is covered by the run the
  first requested: one `full_refresh`, not two on the same data.

Both sensors default to RUNNING: with a daemon (`dagster dev`, docker-compose) the platform
notices new dumps on its own. Nothing runs without a daemon, so tests and `dagster job execute`
are unaffected. `CINE_SENSOR_INTERVAL_S` overrides both intervals (demos). The daily schedule is
an alternative to the sensors, STOPPED by default.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import requests

from orchestration.jobs import full_refresh_job
from orchestration.resources import RawSourcesResource
from recommender_lib.sources.formats import IMDB_AKAS_FILE, IMDB_BASICS_FILE, IMDB_RATINGS_FILE
from recommender_lib.sources.probe import (
    ProbeResult,
    ProbeState,
    SourceProbeError,
    md5_url_for,
    probe_source,
    state_from_fetched,
)
from recommender_lib.sources.raw_store import current_version

log = logging.getLogger(__name__)

ENV_SENSOR_INTERVAL_S = "CINE_SENSOR_INTERVAL_S"
IMDB_INTERVAL_S = 3600  # the dumps are refreshed daily; an hourly look costs three HEADs
MOVIELENS_INTERVAL_S = 6 * 3600  # releases are rare
PROBE_TIMEOUT_S = 15.0  # per request; a tick must stay well under Dagster's 60 s sensor timeout
CURSOR_FORMAT = 1
IMDB_FILES = (IMDB_BASICS_FILE, IMDB_RATINGS_FILE, IMDB_AKAS_FILE)
TAG_SOURCE = "cine/source"
TAG_DUMP_VERSION = "cine/dump_version"
IMDB_ASSETS = {
    IMDB_BASICS_FILE: "imdb_title_basics",
    IMDB_RATINGS_FILE: "imdb_title_ratings",
    IMDB_AKAS_FILE: "imdb_title_akas",
}
MOVIELENS_ASSET = "movielens_release"
PENDING_STATUSES = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def positive_int_env(name: str, default: int, environ: Mapping[str, str] | None = None) -> int:
    """The environment variable `name` when set to a positive integer, else `default` (a bad
    value is logged, never raised: sensors must load)."""
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        log.warning("%s=%r is not a positive integer: using %d", name, raw, default)
        return default
    return value


def sensor_interval_s(default: int, environ: Mapping[str, str] | None = None) -> int:
    """`CINE_SENSOR_INTERVAL_S` when set to a positive integer, else `default`."""
    return positive_int_env(ENV_SENSOR_INTERVAL_S, default, environ)


@dataclass(frozen=True)
class WatchedSource:
    """One URL a sensor probes: its short name, checksum URL and raw-store folder."""

    name: str
    url: str
    store: Path
    md5_url: str | None = None
    assets: tuple[str, ...] = ()  # the raw assets (step keys) that fetch it


def imdb_sources(raw_sources: RawSourcesResource) -> list[WatchedSource]:
    base = raw_sources.imdb_base_url.rstrip("/")
    return [
        WatchedSource(
            f.removesuffix(".tsv.gz"),
            f"{base}/{f}",
            raw_sources.imdb_store(f),
            assets=(IMDB_ASSETS[f],),
        )
        for f in IMDB_FILES
    ]


def movielens_sources(raw_sources: RawSourcesResource) -> list[WatchedSource]:
    url = raw_sources.movielens_url
    store = raw_sources.movielens_store
    return [WatchedSource("movielens", url, store, md5_url_for(url), (MOVIELENS_ASSET,))]


def load_cursor(cursor: str | None) -> dict[str, ProbeState]:
    """The per-URL states of a cursor; an unreadable cursor counts as none (logged)."""
    if not cursor:
        return {}
    try:
        data = json.loads(cursor)
        if data.get("format") != CURSOR_FORMAT:
            raise ValueError(f"unknown cursor format {data.get('format')!r}")
        return {url: ProbeState.from_json(s) for url, s in data["sources"].items()}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("ignoring unreadable sensor cursor %r: %s", cursor[:200], exc)
        return {}


def dump_cursor(states: Mapping[str, ProbeState]) -> str:
    sources = {url: states[url].to_json() for url in sorted(states)}
    return json.dumps({"format": CURSOR_FORMAT, "sources": sources}, sort_keys=True)


def _bootstrap(source: WatchedSource) -> ProbeState | None:
    """The raw store's current version of this URL, as a probe state (None when there is none)."""
    try:
        fetched = current_version(source.store)
        if fetched is None or fetched.url != source.url:
            return None
        return state_from_fetched(fetched, md5_url=source.md5_url)
    except OSError as exc:
        log.warning("%s: cannot read the raw store %s: %s", source.url, source.store, exc)
        return None


def _dump_version(sources: Sequence[WatchedSource], results: Sequence[ProbeResult]) -> str:
    if len(results) == 1:
        return results[0].version
    return ",".join(f"{s.name}={r.version}" for s, r in zip(sources, results, strict=True))


def _describe(sources: Sequence[WatchedSource], results: Sequence[ProbeResult]) -> str:
    parts = []
    for s, r in zip(sources, results, strict=True):
        was = f" (was {r.previous_version})" if r.changed and r.previous_version else ""
        parts.append(f"{s.name} {r.version}{was} [{r.how}]")
    return "; ".join(parts)


def instance_of(context: dg.SensorEvaluationContext) -> dg.DagsterInstance | None:
    """The sensor's instance; None for a context built without one (tests)."""
    try:
        return context.instance
    except dg.DagsterInvariantViolationError:  # a context built without an instance (tests)
        return None


def covering_run(
    instance: dg.DagsterInstance | None, sources: Sequence[WatchedSource]
) -> str | None:
    """A queued or running `full_refresh` run that has not started fetching `sources` yet.

    Its raw steps will fetch the newest version of these sources, so a second run for the same
    change would only repeat it. None when there is no such run (or no instance).
    """
    if instance is None:
        return None
    steps = {asset for source in sources for asset in source.assets}
    records = instance.get_run_records(
        dg.RunsFilter(job_name=full_refresh_job.name, statuses=PENDING_STATUSES), limit=20
    )
    for record in records:
        run = record.dagster_run
        selected = run.asset_selection
        if selected is not None and not steps <= {key.to_user_string() for key in selected}:
            continue
        if not instance.get_run_step_stats(run.run_id, step_keys=sorted(steps)):
            return run.run_id
    return None


def evaluate_sources(
    context: dg.SensorEvaluationContext, source_tag: str, sources: Sequence[WatchedSource]
) -> dg.SensorResult | dg.SkipReason:
    """Probe every source; one `full_refresh` run request when any version changed, unless a
    pending `full_refresh` run will fetch it anyway (`covering_run`)."""
    seen = load_cursor(context.cursor)
    results: list[ProbeResult] = []
    with requests.Session() as session:
        for source in sources:
            previous = seen.get(source.url) or _bootstrap(source)
            try:
                result = probe_source(
                    source.url,
                    previous=previous,
                    timeout_s=PROBE_TIMEOUT_S,
                    md5_url=source.md5_url,
                    session=session,
                )
            except SourceProbeError as exc:
                context.log.warning(f"{source_tag} probe failed: {exc}")
                return dg.SkipReason(f"probe failed, cursor kept: {exc}")
            results.append(result)
    cursor = dump_cursor({r.url: r.state for r in results})
    summary = _describe(sources, results)
    if not any(r.changed for r in results):
        return dg.SensorResult(skip_reason=dg.SkipReason(f"unchanged: {summary}"), cursor=cursor)
    version = _dump_version(sources, results)
    covered_by = covering_run(instance_of(context), sources)
    if covered_by is not None:
        context.log.info(f"{source_tag}: {version} is fetched by run {covered_by}: no new run")
        skip = dg.SkipReason(f"covered by run {covered_by}, which fetches it: {summary}")
        return dg.SensorResult(skip_reason=skip, cursor=cursor)
    context.log.info(f"{source_tag}: new dump version {version}: {summary}")
    request = dg.RunRequest(
        run_key=version, tags={TAG_SOURCE: source_tag, TAG_DUMP_VERSION: version}
    )
    return dg.SensorResult(run_requests=[request], cursor=cursor)


@dg.sensor(
    job=full_refresh_job,
    minimum_interval_seconds=sensor_interval_s(IMDB_INTERVAL_S),
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def imdb_dump_sensor(
    context: dg.SensorEvaluationContext, raw_sources: RawSourcesResource
) -> dg.SensorResult | dg.SkipReason:
    """A new IMDb dump (`title.basics` or `title.ratings` changed): refresh and retrain."""
    return evaluate_sources(context, "imdb", imdb_sources(raw_sources))


@dg.sensor(
    job=full_refresh_job,
    minimum_interval_seconds=sensor_interval_s(MOVIELENS_INTERVAL_S),
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def movielens_release_sensor(
    context: dg.SensorEvaluationContext, raw_sources: RawSourcesResource
) -> dg.SensorResult | dg.SkipReason:
    """A new MovieLens release (its published `.md5`, else the zip's validators): refresh."""
    return evaluate_sources(context, "movielens", movielens_sources(raw_sources))


daily_refresh_schedule = dg.ScheduleDefinition(
    name="daily_refresh_schedule",
    job=full_refresh_job,
    cron_schedule="0 4 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    tags={TAG_SOURCE: "schedule"},
    description=(
        "Alternative to the sensors: a full refresh every day at 04:00 UTC, whether or not a "
        "dump changed (unchanged raw files are not downloaded again, but the model retrains)."
    ),
)

sensors = [imdb_dump_sensor, movielens_release_sensor]
schedules = [daily_refresh_schedule]
