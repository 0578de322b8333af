"""The feedback endpoints: what applications tell the platform back, and their users'
recommendations from it (no retraining).

* `POST /feedback`: a batch of events, idempotent by `event_id`; each event is validated and
  its title resolved against the served catalogue on its own (a bad one is rejected, the rest
  stored); the stored ones are committed before the answer, so a 2xx loses nothing.
* `GET /users/{user}/feedback`, `DELETE /users/{user}` (forget the user: every event deleted).
* `GET /users/{user}/recommendations`: `recommender_lib.engine.app_users` over the stored events.

Application users (`/users/...`, string ids) never mix with MovieLens users
(`/movielens-users/...`). The store (`app.state.feedback`) is opened at startup; when it is
unreachable these endpoints answer 503 with Retry-After and try to open it again next time.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from pydantic import ValidationError

from recommender_lib.engine.app_users import profile_of, recommend_for_app_user
from recommender_lib.engine.recommender import UnknownTitleError
from recommender_lib.sources.feedback.events import USER_PATTERN, FeedbackEvent, event_problems
from recommender_lib.sources.feedback.store import FeedbackStore, FeedbackStoreError
from serving import feedback_schemas as fs
from serving import schemas as s
from serving.api import (
    BODY,
    INTERNAL,
    INVALID,
    NOT_LOADED,
    VARY,
    Responses,
    query_filters,
    recommendations_body,
    request_locale,
    served,
    timed,
)
from serving.logs import LOGGER_NAME
from serving.model_store import LoadedModel
from serving.query import openapi_parameters, parse_query

logger = logging.getLogger(f"{LOGGER_NAME}.feedback")
RETRY_AFTER_S = "5"
STORE_DOWN: Responses = {
    503: {
        "model": s.ErrorResponse,
        "description": "no model loaded yet, or the feedback store is unavailable (Retry-After)",
    }
}
REJECT_FIELDS = frozenset({"event_id", "user", "title", "type", "value", "at"})
UserPath = Annotated[str, Path(pattern=USER_PATTERN, description=fs.USER_HELP)]
_open_lock = threading.Lock()

router = APIRouter(responses={**NOT_LOADED, **INVALID, **INTERNAL, **STORE_DOWN})


# ------------------------------------------------------------------------------ the store
def open_feedback_store(url: str) -> FeedbackStore | None:
    """The store at `url`, or None (logged) when it cannot be opened now."""
    try:
        return FeedbackStore.open(url)
    except (FeedbackStoreError, OSError, ValueError) as exc:
        logger.error("feedback store unavailable", extra={"fields": {"error": str(exc)}})
        return None


def _unavailable(what: str) -> HTTPException:
    return HTTPException(
        503, f"feedback store unavailable: {what}", headers={"Retry-After": RETRY_AFTER_S}
    )


def feedback_store(request: Request) -> FeedbackStore:
    """The app's feedback store, opened now if startup could not; 503 while unreachable."""
    state = request.app.state
    store: FeedbackStore | None = getattr(state, "feedback", None)
    if store is None:
        with _open_lock:
            store = getattr(state, "feedback", None)
            if store is None:
                store = open_feedback_store(state.settings.feedback_url)
                state.feedback = store
    if store is None:
        raise _unavailable("cannot open it")
    return store


def _store_call(what: str, call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except FeedbackStoreError as exc:
        logger.error(f"feedback store {what} failed", extra={"fields": {"error": str(exc)}})
        raise _unavailable(f"{what} failed") from None


# ------------------------------------------------------------------------------ validation
def _problem(index: int, field: str, message: str) -> dict[str, str]:
    path = f"events.{index}.{field}"
    return {"field": path, "message": f"{path}: {message}"}


def _checked(
    model: LoadedModel, index: int, raw: Any, now: float
) -> tuple[FeedbackEvent | None, list[dict[str, str]], str]:
    """(event, [], "") for a valid event, else (None, problems, rejection reason)."""
    try:
        if not isinstance(raw, dict):
            raise TypeError
        parsed = fs.FeedbackEventIn.model_validate_json(json.dumps(raw))
    except TypeError:
        return None, [_problem(index, "event", "must be a JSON object")], "invalid"
    except ValidationError as exc:
        problems, fields = [], []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "event"
            fields.append(field)
            problems.append(_problem(index, field, str(err["msg"])))
        return None, problems, fields[0] if fields[0] in REJECT_FIELDS else "invalid"
    at = (
        parsed.at if parsed.at is None or isinstance(parsed.at, int) else int(parsed.at.timestamp())
    )
    found = event_problems(parsed.type, parsed.value, at, now)
    if found:
        return None, [_problem(index, f, m) for f, m in found], found[0][0]
    rec = model.view.recommender
    try:
        row = rec.row(parsed.title)
    except UnknownTitleError:
        message = f"unknown title {parsed.title!r} (not in the served catalogue)"
        return None, [_problem(index, "title", message)], "unknown_title"
    event = FeedbackEvent(
        event_id=parsed.event_id,
        app_user=parsed.user,
        ref=str(model.view.meta[row]["ref"]),
        item_id=int(rec.embeddings.item_ids[row]),
        type=parsed.type,
        value=parsed.value,
        at=int(now) if at is None else at,
    )
    return event, [], ""


def _event_id(raw: Any) -> str | None:
    value = raw.get("event_id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) else None


# ------------------------------------------------------------------------------ endpoints
@router.post(
    "/feedback",
    response_model=fs.FeedbackResponse,
    response_model_exclude_unset=True,
    responses=BODY,
    tags=["feedback"],
)
def post_feedback(body: fs.FeedbackBatch, request: Request) -> dict[str, Any]:
    """Store a batch of feedback events (1 to 500; idempotent by `event_id`).

    Each event is validated, and its title resolved against the served catalogue, on its own:
    an invalid one is `rejected` with its errors, the others are stored. Stored events are
    committed before this answers; a resent `event_id` is a `duplicate` and changes nothing.
    """
    model = served(request)
    store = feedback_store(request)
    now = time.time()
    results: list[dict[str, Any]] = []
    valid: list[FeedbackEvent] = []
    reasons: list[str] = []
    for i, raw in enumerate(body.events):
        event, problems, reason = _checked(model, i, raw, now)
        results.append({"index": i, "event_id": _event_id(raw)})
        if event is None:
            results[-1].update(status="rejected", errors=problems)
            reasons.append(reason)
        else:
            valid.append(event)
    statuses = iter(_store_call("write", store.add, valid))
    for result in results:
        if "status" not in result:
            result["status"] = next(statuses)
    request.app.state.metrics.count_feedback(valid, [r["status"] for r in results], reasons)
    counts = {k: sum(r["status"] == k for r in results) for k in ("accepted", "duplicate")}
    return {
        "accepted": counts["accepted"],
        "duplicates": counts["duplicate"],
        "rejected": len(reasons),
        "results": results,
    }


@router.get("/users/{user}/feedback", response_model=fs.UserFeedbackResponse, tags=["feedback"])
def get_feedback(
    user: UserPath,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=fs.MAX_FEEDBACK_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> dict[str, Any]:
    """The stored events of an application user, in arrival order (empty when unknown)."""
    store = feedback_store(request)
    events = _store_call("read", store.events_of, user, limit, offset)
    return {
        "user": user,
        "total": _store_call("read", store.count_of, user),
        "items": [
            {
                "event_id": e.event_id,
                "title": e.ref,
                "type": e.type,
                "value": e.value,
                "at": e.at,
                "received_at": e.received_at,
            }
            for e in events
        ],
    }


@router.delete(
    "/users/{user}",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "forgotten (also when nothing was stored)"}},
    tags=["feedback"],
)
def forget_user(user: UserPath, request: Request) -> Response:
    """Forget an application user: every stored event of theirs is deleted (idempotent). The
    next training run no longer sees them."""
    deleted = _store_call("delete", feedback_store(request).forget, user)
    logger.info("user forgotten", extra={"fields": {"events_deleted": deleted}})
    return Response(status_code=204)


@router.get(
    "/users/{user}/recommendations",
    response_model=s.RecommendationResponse,
    response_model_exclude_unset=True,
    tags=["recommendations", "feedback"],
    openapi_extra=openapi_parameters(s.UserRecommendationQuery),
)
def recommend_for_app_user_route(
    user: UserPath, request: Request, response: Response
) -> dict[str, Any]:
    """Top-k titles for an application user from their stored feedback, no retraining.

    Their latest rating per title goes through the same user features as training; rated,
    watched and dismissed titles never appear; a title shown 3+ times and never chosen comes
    after every other candidate. Without ratings: the most popular titles.
    """
    model = served(request)
    view = model.view
    params = parse_query(request, s.UserRecommendationQuery)
    filters = query_filters(view, params)
    names = view.localized(request_locale(request, params.lang, params.region))
    response.headers.update(VARY)
    store = feedback_store(request)
    profile = profile_of(_store_call("read", store.events_of, user))
    with timed(request, "app_user"):
        result = recommend_for_app_user(
            view.recommender, profile, params.offset + params.k, filters
        )
    stars = {}
    for ref, (rating, _) in profile.ratings.items():
        try:
            stars[view.recommender.row(ref)] = rating
        except UnknownTitleError:
            continue
    note = f"personalised from {len(profile.ratings)} rating(s) of application user {user}"
    return recommendations_body(model, result, stars, note, params.offset, names)
