"""`feedback_sensor`: retrain once enough new application ratings have arrived.

Each tick counts the store's `rating` events after the watermark (a store `seq`) of the last
training: the larger of the sensor's cursor (the watermark of the last run it requested) and
the `watermark_seq` of the latest `app_feedback` copy made by a `retrain` or `full_refresh` run.
With at least `CINE_FEEDBACK_MIN_RATINGS` (default 1,000) of them it requests one `retrain` run
whose run key is `feedback-<max seq>` (the same watermark never launches twice) and moves the
cursor to that seq; otherwise it skips, saying how many ratings it is waiting for. A store that
cannot be read gives a SkipReason with the cursor kept: the sensor never raises.
`CINE_SENSOR_INTERVAL_S` overrides its interval like the dump sensors'.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import dagster as dg

from orchestration.assets.feedback import WATERMARK_KEY
from orchestration.jobs import full_refresh_job, retrain_job
from orchestration.resources import FeedbackStoreResource
from orchestration.sensors import TAG_SOURCE, instance_of, positive_int_env, sensor_interval_s
from recommender_lib.sources.feedback.events import RATING
from recommender_lib.warehouse.app_feedback import APP_FEEDBACK

log = logging.getLogger(__name__)

ENV_FEEDBACK_MIN_RATINGS = "CINE_FEEDBACK_MIN_RATINGS"
DEFAULT_MIN_RATINGS = 1000
FEEDBACK_INTERVAL_S = 300  # one count query on the store per tick
TAG_FEEDBACK_WATERMARK = "cine/feedback_watermark"
TAG_NEW_RATINGS = "cine/new_ratings"
TRAINING_JOBS = (retrain_job.name, full_refresh_job.name)


def min_new_ratings(environ: Mapping[str, str] | None = None) -> int:
    """`CINE_FEEDBACK_MIN_RATINGS` when set to a positive integer, else 1,000."""
    return positive_int_env(ENV_FEEDBACK_MIN_RATINGS, DEFAULT_MIN_RATINGS, environ)


def _cursor_seq(cursor: str | None) -> int | None:
    try:
        return int(cursor) if cursor else None
    except ValueError:
        log.warning("ignoring unreadable feedback sensor cursor %r", cursor[:200] if cursor else "")
        return None


def trained_watermark(instance: dg.DagsterInstance | None) -> int | None:
    """`watermark_seq` of the latest `app_feedback` copy made by a training run (None: none)."""
    if instance is None:
        return None
    event = instance.get_latest_materialization_event(dg.AssetKey(APP_FEEDBACK))
    if event is None or event.asset_materialization is None:
        return None
    run = instance.get_run_by_id(event.run_id)
    value = event.asset_materialization.metadata.get(WATERMARK_KEY)
    if run is None or run.job_name not in TRAINING_JOBS or value is None:
        return None
    return int(value.value)  # type: ignore[arg-type]


def evaluate_feedback(
    context: dg.SensorEvaluationContext, feedback_store: FeedbackStoreResource, min_ratings: int
) -> dg.SensorResult | dg.SkipReason:
    """One `retrain` request when `min_ratings` new rating events arrived since the watermark."""
    cursor = _cursor_seq(context.cursor)
    try:
        trained = trained_watermark(instance_of(context))
        watermark = max(s for s in (cursor, trained, 0) if s is not None)
        with feedback_store.get_store() as store:
            new = store.count_after(watermark, type=RATING)
            latest = store.max_seq()
    except Exception as exc:  # a sensor tick must never raise: the store may be down
        context.log.warning(f"feedback store not read: {exc}")
        return dg.SkipReason(f"feedback store not read, cursor kept: {exc}")
    if new < min_ratings:
        skip = dg.SkipReason(
            f"{new} new ratings after seq {watermark}; a retrain needs {min_ratings}"
        )
        return dg.SensorResult(skip_reason=skip, cursor=str(watermark))
    context.log.info(f"{new} new ratings after seq {watermark} (up to seq {latest}): retrain")
    request = dg.RunRequest(
        run_key=f"feedback-{latest}",
        tags={TAG_SOURCE: "feedback", TAG_FEEDBACK_WATERMARK: str(latest),
              TAG_NEW_RATINGS: str(new)},
    )  # fmt: skip
    return dg.SensorResult(run_requests=[request], cursor=str(latest))


@dg.sensor(
    job=retrain_job,
    minimum_interval_seconds=sensor_interval_s(FEEDBACK_INTERVAL_S),
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def feedback_sensor(
    context: dg.SensorEvaluationContext, feedback_store: FeedbackStoreResource
) -> dg.SensorResult | dg.SkipReason:
    """At least `CINE_FEEDBACK_MIN_RATINGS` (default 1,000) new application ratings since the
    last training: retrain (run key `feedback-<max seq>`)."""
    return evaluate_feedback(context, feedback_store, min_new_ratings())


feedback_sensors = [feedback_sensor]
