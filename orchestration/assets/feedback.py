"""Application feedback: the `app_feedback` warehouse table, copied incrementally from the
feedback event store the API writes (`recommender_lib/warehouse/app_feedback.py`).

The copy is gated like the other warehouse tables: new events are staged, the blocking checks
(`pandera_schema`, `unique_key`, `known_titles`) run on them inside the step, and only rows that
pass are appended; a failing check appends nothing, keeps the rows as `app_feedback__rejected`
and fails the step, so `rating_splits` and everything trained after it are skipped.
"""

from __future__ import annotations

import dagster as dg

from orchestration.assets.features import catalog
from orchestration.assets.warehouse import WAREHOUSE_KINDS
from orchestration.metadata import check_result
from orchestration.resources import WAREHOUSE_POOL, FeedbackStoreResource, WarehouseResource
from recommender_lib.sources.feedback.events import EVENT_TYPES
from recommender_lib.sources.feedback.store import FeedbackStoreError
from recommender_lib.warehouse import gate
from recommender_lib.warehouse.app_feedback import (
    APP_FEEDBACK,
    KNOWN_TITLES_RULE,
    FeedbackCopy,
    copy_feedback,
)
from recommender_lib.warehouse.tables import preview_markdown

WATERMARK_KEY = "watermark_seq"  # metadata: the largest store seq in the table after the copy

_DESCRIBED = {
    gate.SCHEMA_RULE: "New rows satisfy the pandera schema `app_feedback` (types, ratings 0.5-5 "
    "in halves and no value on other types, timestamps from 1990 to now, the user id mapping).",
    gate.KEY_RULE: "event_id is unique over the published rows and the new rows together.",
    KNOWN_TITLES_RULE: "Every new row names a title of the catalogue (item_id in `catalog`).",
}
feedback_check_specs = [
    dg.AssetCheckSpec(name, asset=APP_FEEDBACK, blocking=True, description=text)
    for name, text in _DESCRIBED.items()
]


def copy_metadata(copy: FeedbackCopy) -> dict[str, dg.RawMetadataValue]:
    """Rows copied by event type, the watermark, forgotten users removed and total rows."""
    metadata: dict[str, dg.RawMetadataValue] = {
        "dagster/row_count": copy.total_rows,
        "new_rows": copy.new_rows,
        **{f"copied {t}": int(copy.copied.get(t, 0)) for t in EVENT_TYPES},
        WATERMARK_KEY: copy.watermark,
        "previous_watermark_seq": copy.previous_watermark,
        "forgotten_users_removed": copy.forgotten_users,
        "forgotten_rows_removed": copy.forgotten_rows,
        "published": copy.published,
    }
    if copy.rejected_table:
        metadata["rejected_table"] = copy.rejected_table
        metadata["failed_checks"] = dg.MetadataValue.md("\n".join(f"- {f}" for f in copy.failures))
    return metadata


def _named_check(name: str, result: gate.QualityResult) -> dg.AssetCheckResult:
    base = check_result(result)
    return dg.AssetCheckResult(
        check_name=name, passed=base.passed, severity=base.severity,
        metadata=base.metadata, description=base.description,
    )  # fmt: skip


@dg.asset(
    group_name="warehouse", kinds=WAREHOUSE_KINDS, pool=WAREHOUSE_POOL, deps=[catalog],
    check_specs=feedback_check_specs,
)  # fmt: skip
def app_feedback(
    warehouse_db: WarehouseResource, feedback_store: FeedbackStoreResource
) -> dg.MaterializeResult:
    """Application feedback events (ratings, watched, dismissed, impressions) copied from the
    feedback store after the last copied `seq`; users forgotten in the store are deleted first.
    Each row carries `training_user_id`, the user's id in the training data."""
    try:
        with feedback_store.get_store() as store, warehouse_db.get_connection() as conn:
            copy = copy_feedback(conn, store)
            shown = copy.rejected_table or APP_FEEDBACK
            metadata = copy_metadata(copy) | {
                "preview": dg.MetadataValue.md(preview_markdown(conn, shown))
            }
    except FeedbackStoreError as exc:
        raise dg.Failure(f"the feedback store could not be read, nothing copied: {exc}") from exc
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[_named_check(name, r) for name, r in copy.checks.items()],
    )


feedback_assets = [app_feedback]
