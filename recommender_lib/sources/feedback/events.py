"""Application feedback events: their types, the validation rules and the id mapping.

An application (the site or app calling the API) sends what its users do with titles. Users are
the application's own string ids and never mixed up with MovieLens user ids: training maps them
into a separate id range (`training_user_id`).

Rules (the API and the warehouse checks both apply them):

| field | rule |
|---|---|
| `event_id` | 1-128 characters; one event per id (a resend is a duplicate, ignored) |
| `user` | 1-128 characters of `[A-Za-z0-9._:@-]` |
| `type` | one of `EVENT_TYPES` |
| `value` | stars for `rating`: 0.5 to 5 in halves; no value for the other types |
| `at` | unix seconds; not before 1990-01-01, not more than 5 minutes in the future |
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import dataclass

EVENT_TYPES = ("rating", "watched", "dismissed", "impression")
RATING = "rating"
MAX_BATCH = 500  # events per POST /feedback
MAX_ID_LENGTH = 128  # event ids and user ids
USER_PATTERN = r"^[A-Za-z0-9._:@-]{1,128}$"
MIN_STARS, MAX_STARS = 0.5, 5.0
EARLIEST_AT = 631_152_000  # 1990-01-01T00:00:00Z
MAX_FUTURE_S = 300  # clock skew tolerated on `at`
# Application users' training ids: 2**60 + the first 7 bytes (56 bits) of sha256(user id).
# MovieLens ids are small integers, so the ranges never meet; two application users share a
# training id with probability ~n**2 / 2**57 (about 1e-5 at a million users).
APP_USER_ID_BASE = 2**60

_USER = re.compile(USER_PATTERN)


def training_user_id(user: str) -> int:
    """The training-data user id of an application user (stable, above every MovieLens id)."""
    digest = hashlib.sha256(user.encode("utf-8")).digest()
    return APP_USER_ID_BASE + int.from_bytes(digest[:7], "big")


def valid_user(user: str) -> bool:
    """Whether `user` is a well-formed application user id."""
    return bool(_USER.match(user))


@dataclass(frozen=True)
class FeedbackEvent:
    """A validated event, its title resolved to the catalogue (`ref`: tconst else MovieLens
    id; `item_id`: catalogue item id)."""

    event_id: str
    app_user: str
    ref: str
    item_id: int
    type: str
    value: float | None
    at: int


def event_problems(
    event_type: str, value: float | None, at: int | None, now: float | None = None
) -> list[tuple[str, str]]:
    """(field, message) of every rule `type`, `value` and `at` break; empty when valid."""
    problems: list[tuple[str, str]] = []
    if event_type not in EVENT_TYPES:
        problems.append(("type", f"{event_type!r} is not one of {', '.join(EVENT_TYPES)}"))
    elif event_type == RATING:
        if value is None:
            problems.append(("value", "a rating needs a value (0.5 to 5 stars in halves)"))
        elif not (
            math.isfinite(value) and MIN_STARS <= value <= MAX_STARS and (value * 2).is_integer()
        ):
            problems.append(("value", f"{value!r} is not 0.5 to 5 stars in halves"))
    elif value is not None:
        problems.append(("value", f"a {event_type} event has no value (got {value!r})"))
    if at is not None:
        now = time.time() if now is None else now
        if at < EARLIEST_AT:
            problems.append(("at", f"{at} is before 1990-01-01"))
        elif at > now + MAX_FUTURE_S:
            problems.append(("at", f"{at} is more than {MAX_FUTURE_S} s in the future"))
    return problems
