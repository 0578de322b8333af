"""Request and response models of the feedback endpoints (`serving.feedback_api`).

The batch envelope is validated as a whole (≤ `MAX_BATCH` events, else 422); each event is then
validated on its own (`FeedbackEventIn`, strict like every request model), so one bad event is
rejected with its errors while the others are stored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, WithJsonSchema

from recommender_lib.sources.feedback.events import (
    EVENT_TYPES,
    MAX_BATCH,
    MAX_ID_LENGTH,
    USER_PATTERN,
)
from serving.schemas import FieldProblem, RequestModel, TitleRef

USER_HELP = "the application's own user id: 1-128 characters of A-Z a-z 0-9 . _ : @ -"
MAX_FEEDBACK_PAGE = 1000


class FeedbackEventIn(RequestModel):
    """One thing an application user did with a title."""

    event_id: str = Field(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        description="the application's unique id of this event: resending it is a no-op",
    )
    user: str = Field(pattern=USER_PATTERN, description=USER_HELP)
    title: TitleRef
    type: str = Field(
        json_schema_extra={"enum": list(EVENT_TYPES)},
        description="rating | watched | dismissed | impression (the title was shown)",
    )
    value: float | None = Field(
        None, description="stars of a rating, 0.5 to 5 in halves; absent for the other types"
    )
    at: int | AwareDatetime | None = Field(
        None,
        description="when it happened: unix seconds or ISO 8601 with a zone (default: now); "
        "not before 1990, at most 5 minutes ahead",
    )

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "event_id": "e-1",
                    "user": "u42",
                    "title": "tt0114709",
                    "type": "rating",
                    "value": 4.5,
                }
            ]
        },
    )


class FeedbackBatch(RequestModel):
    events: Annotated[
        list[Any],
        Field(min_length=1, max_length=MAX_BATCH),
        WithJsonSchema(
            {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH,
                "items": FeedbackEventIn.model_json_schema(),
                "description": f"1 to {MAX_BATCH} events, each validated on its own",
            }
        ),
    ]


class FeedbackResult(BaseModel):
    index: int = Field(description="position of the event in the batch")
    event_id: str | None = Field(description="null when the event has no readable event_id")
    status: Literal["accepted", "duplicate", "rejected"] = Field(
        description="accepted: stored now; duplicate: this event_id was stored already "
        "(nothing changed); rejected: invalid, see errors (nothing stored)"
    )
    errors: list[FieldProblem] | None = Field(None, description="why it was rejected")


class FeedbackResponse(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[FeedbackResult] = Field(description="one per event, in batch order")


class StoredFeedback(BaseModel):
    event_id: str
    title: str = Field(description="canonical reference: the tconst, else the MovieLens id")
    type: str
    value: float | None
    at: int = Field(description="when it happened, unix seconds")
    received_at: int = Field(description="when it was stored, unix seconds")


class UserFeedbackResponse(BaseModel):
    user: str
    total: int = Field(description="events stored for this user")
    items: list[StoredFeedback] = Field(description="in arrival order")
