"""Application feedback: event rules (`events`) and the durable event store (`store`)."""

from recommender_lib.sources.feedback.events import (
    APP_USER_ID_BASE,
    EVENT_TYPES,
    MAX_BATCH,
    FeedbackEvent,
    event_problems,
    training_user_id,
)
from recommender_lib.sources.feedback.store import (
    FeedbackStore,
    FeedbackStoreError,
    StoredEvent,
    sqlite_url,
)

__all__ = [
    "APP_USER_ID_BASE",
    "EVENT_TYPES",
    "MAX_BATCH",
    "FeedbackEvent",
    "FeedbackStore",
    "FeedbackStoreError",
    "StoredEvent",
    "event_problems",
    "sqlite_url",
    "training_user_id",
]
