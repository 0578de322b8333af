"""Recommendations for an application user from their stored feedback events, no retraining.

The events (`recommender_lib.sources.feedback`) become a profile:

* **ratings**: the latest rating of each title (by `at`, then arrival) - these go through
  `Recommender.recommend`, i.e. the same user-feature function as training, one user-tower pass;
* **excluded**: every rated, watched or dismissed title - never recommended;
* **demoted**: a title shown (`impression`) at least `DEMOTE_AFTER_IMPRESSIONS` times and never
  rated, watched or dismissed is moved behind every other candidate: it is returned only once
  the filters leave nothing else to return.

A user without ratings gets the most popular titles minus the excluded ones (same demotion).
Titles the served catalogue no longer has are skipped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from recommender_lib.engine.recommender import (
    RatingInput,
    RecommendationResult,
    Recommender,
    UnknownTitleError,
)
from recommender_lib.index.content_index import SimilarityFilters
from recommender_lib.sources.feedback.store import StoredEvent

DEMOTE_AFTER_IMPRESSIONS = 3
CHOSEN = frozenset({"rating", "watched", "dismissed"})  # types that exclude a title


@dataclass(frozen=True)
class AppUserProfile:
    """What the events of one application user say, by canonical title ref."""

    ratings: dict[str, tuple[float, int]] = field(default_factory=dict)  # ref -> (stars, at)
    excluded: frozenset[str] = frozenset()
    demoted: frozenset[str] = frozenset()
    events: int = 0


def profile_of(events: Iterable[StoredEvent]) -> AppUserProfile:
    """The profile of a user's events (any order; ties on `at` go to the later `seq`)."""
    latest: dict[str, tuple[int, int, float]] = {}  # ref -> (at, seq, stars)
    chosen: set[str] = set()
    shown: Counter[str] = Counter()
    n = 0
    for e in events:
        n += 1
        if e.type == "impression":
            shown[e.ref] += 1
            continue
        if e.type in CHOSEN:
            chosen.add(e.ref)
        newer = e.ref not in latest or (e.at, e.seq) > latest[e.ref][:2]
        if e.type == "rating" and e.value is not None and newer:
            latest[e.ref] = (e.at, e.seq, float(e.value))
    demoted = {r for r, c in shown.items() if c >= DEMOTE_AFTER_IMPRESSIONS and r not in chosen}
    ratings = {ref: (stars, at) for ref, (at, _, stars) in latest.items()}
    return AppUserProfile(ratings, frozenset(chosen), frozenset(demoted), n)


def _known(rec: Recommender, refs: Iterable[str]) -> list[str]:
    """The refs the served catalogue has (ascending, for a deterministic order)."""
    out = []
    for ref in sorted(refs):
        try:
            rec.row(ref)
        except UnknownTitleError:
            continue
        out.append(ref)
    return out


def rating_inputs(rec: Recommender, profile: AppUserProfile) -> list[RatingInput]:
    """(ref, stars, at) of the profile's ratings of titles the served catalogue has."""
    return [(ref, *profile.ratings[ref]) for ref in _known(rec, profile.ratings)]


def recommend_for_app_user(
    rec: Recommender,
    profile: AppUserProfile,
    k: int,
    filters: SimilarityFilters | None = None,
) -> RecommendationResult:
    """Top-k for an application user: rated/watched/dismissed titles never appear, demoted
    ones only after every other candidate within the filters."""
    ratings = rating_inputs(rec, profile)
    excluded = _known(rec, profile.excluded)
    demoted = _known(rec, profile.demoted)
    result = rec.recommend(ratings, k, filters, excluded + demoted)
    if not demoted or len(result.items) >= k:
        return result
    # The filters leave fewer than k other titles: the demoted ones follow, in ranked order.
    wider = rec.recommend(ratings, k + len(demoted), filters, excluded)
    have = {item.item_id for item in result.items}
    tail = [item for item in wider.items if item.item_id not in have]
    items = result.items + tail[: k - len(result.items)]
    return RecommendationResult(items, result.strategy, result.note)
