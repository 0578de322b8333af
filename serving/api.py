"""The model endpoints: title search and lookup, similar titles, recommendations, scores, the
known users and poster placeholders.

Every endpoint that returns titles localizes them (`localized_title`) for `lang` / `region`, or
else for the Accept-Language header (`recommender_lib.index.localized_titles`); such answers
carry `Vary: Accept-Language`.

Handlers are plain `def` (FastAPI runs them in its thread pool): the work is CPU-bound. The
exception is `/titles/{ref}/similar`, `async def`: on a small exact index (`ServingView.
renders_inline`) its ~0.1 ms of numpy runs on the event loop, as the thread-pool hop would
cost more than the work; otherwise (and for the 404 suggestions) it awaits the thread pool. Each
reads the served model ONCE (`served(request)`, a plain call: a FastAPI dependency would cost
more than the whole similar-titles search) and uses that object for the whole request.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from recommender_lib.engine.recommender import (
    RatingInput,
    RecommendationResult,
    UnknownTitleError,
    UnknownUserError,
)
from recommender_lib.index.content_index import SimilarityFilters
from recommender_lib.index.localized_titles import Locale, LocaleError, parse_accept_language
from serving import schemas as s
from serving.errors import FieldError, TitleNotFound, UnknownTitles
from serving.model_store import LoadedModel
from serving.placeholder import placeholder_svg
from serving.query import openapi_parameters, parse_query
from serving.view import LocalizedNames, ServingView, number_json, to_json

MAX_SUGGESTED_REFS = 10  # unknown references that get search suggestions in one 404
Responses = dict[int | str, dict[str, Any]]  # extra answers documented in the OpenAPI schema
NOT_LOADED: Responses = {503: {"model": s.ErrorResponse, "description": "no model loaded yet"}}
INVALID: Responses = {422: {"model": s.ValidationErrorResponse, "description": "invalid input"}}
TITLE_404: Responses = {404: {"model": s.TitleNotFoundResponse, "description": "unknown title"}}
TITLES_404: Responses = {404: {"model": s.UnknownTitlesResponse, "description": "unknown title(s)"}}
BODY: Responses = {  # what reading a request body can answer (`serving.middleware`, FastAPI)
    400: {"model": s.ErrorResponse, "description": "unreadable body (e.g. not UTF-8)"},
    413: {"model": s.ErrorResponse, "description": "body over CINE_MAX_BODY_BYTES"},
}
INTERNAL: Responses = {
    500: {"model": s.InternalErrorResponse, "description": "internal error, no stack trace"}
}
TitleRefPath = Annotated[
    str, Path(max_length=200, description="IMDb id (tt0114709) or MovieLens id (1)")
]
Lang = Annotated[str | None, Query(max_length=35, description=s.LANG_HELP)]
Region = Annotated[str | None, Query(max_length=8, description=s.REGION_HELP)]
SVG: Responses = {200: {"content": {"image/svg+xml": {}}, "description": "SVG image"}}
VARY = {"Vary": "Accept-Language"}
PLACEHOLDER_MAX_AGE_S = 86_400


def served(request: Request) -> LoadedModel:
    """The served model, read once for this request; 503 before the first load."""
    model: LoadedModel | None = request.app.state.store.current
    if model is None:
        raise HTTPException(503, "no model loaded yet", headers={"Retry-After": "5"})
    request.state.model_version = model.model_version
    return model


router = APIRouter(responses={**NOT_LOADED, **INVALID, **INTERNAL})


def _json(text: str) -> Response:
    """A JSON response from prebuilt text (the hot endpoints skip model serialisation)."""
    return Response(text.encode(), media_type="application/json", headers=VARY)


def request_locale(request: Request, lang: str | None, region: str | None) -> Locale | None:
    """The asked locale: `lang` / `region`, else the Accept-Language header (never an error)."""
    try:
        locale = Locale.parse(lang, region)
    except LocaleError as exc:
        raise FieldError(exc.field, str(exc)) from None
    return locale or parse_accept_language(request.headers.get("accept-language"))


@contextmanager
def timed(request: Request, kind: str) -> Iterator[None]:
    with request.app.state.metrics.recommendation_duration.labels(kind).time():
        yield


# -------------------------------------------------------------------------------- helpers
def _row(view: ServingView, ref: str) -> int:
    try:
        return view.recommender.row(ref)
    except UnknownTitleError:
        raise TitleNotFound(ref, view.suggestions(ref)) from None


def _rows(view: ServingView, refs: Sequence[tuple[str, str]]) -> list[int]:
    """Rows of (field, ref) pairs; `UnknownTitles` listing every unknown one."""
    rows: list[int] = []
    unknown: list[dict[str, Any]] = []
    suggested: dict[str, list[dict[str, Any]]] = {}
    for field, ref in refs:
        try:
            rows.append(view.recommender.row(ref))
        except UnknownTitleError:
            if ref not in suggested and len(suggested) < MAX_SUGGESTED_REFS:
                suggested[ref] = view.suggestions(ref)
            unknown.append({"field": field, "ref": ref, "suggestions": suggested.get(ref, [])})
    if unknown:
        raise UnknownTitles(unknown)
    return rows


def _rated_rows(
    view: ServingView, ratings: Sequence[s.Rating], extra: list[tuple[str, str]]
) -> list[int]:
    """Rows of the rated titles (and of `extra` refs); 422 when two refs name one title."""
    fields = [(f"ratings.{i}.title", r.title) for i, r in enumerate(ratings)]
    rows = _rows(view, fields + extra)
    first: dict[int, int] = {}
    for i, row in enumerate(rows[: len(ratings)]):
        if row in first:
            raise FieldError(
                f"ratings.{i}.title",
                f"{ratings[i].title!r} is the title already rated in ratings.{first[row]}",
            )
        first[row] = i
    return rows[: len(ratings)]


def _rating_inputs(ratings: Sequence[s.Rating]) -> list[RatingInput]:
    return [(r.title, r.rating, r.rated_at) for r in ratings]


def _names(values: list[str] | None) -> list[str] | None:
    """Repeated and/or comma-separated names, blanks dropped (None when nothing is left)."""
    if values is None:
        return None
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    return names or None


def _filters(
    view: ServingView,
    title_types: tuple[str, list[str] | None],
    genres: tuple[str, list[str] | None],
    years: tuple[str, int | None, int | None],
    min_votes: int | None,
) -> SimilarityFilters | None:
    """`SimilarityFilters` with names checked against the bundle; each input comes with its
    field name for the 422 message."""
    checked: list[frozenset[str] | None] = []
    for (field, values), vocab, what in (
        (title_types, view.title_types, "title type(s)"),
        (genres, view.genres, "genre(s)"),
    ):
        names = _names(values)
        try:
            checked.append(None if names is None else view.canonical(names, vocab, what))
        except ValueError as exc:
            raise FieldError(field, str(exc)) from None
    year_field, min_year, max_year = years
    if min_year is not None and max_year is not None and min_year > max_year:
        raise FieldError(year_field, f"min_year {min_year} is after max_year {max_year}")
    filters = SimilarityFilters(checked[0], min_year, max_year, min_votes, checked[1])
    return None if filters.is_empty else filters


def query_filters(view: ServingView, q: s.FilterQuery) -> SimilarityFilters | None:
    years = ("min_year", q.min_year, q.max_year)
    return _filters(view, ("title_type", q.title_type), ("genres", q.genres), years, q.min_votes)


def _body_filters(view: ServingView, spec: s.FilterSpec | None) -> SimilarityFilters | None:
    if spec is None:
        return None
    return _filters(
        view,
        ("filters.title_types", spec.title_types),
        ("filters.genres", spec.genres),
        ("filters.min_year", spec.min_year, spec.max_year),
        spec.min_votes,
    )


def recommendations_body(
    model: LoadedModel,
    result: RecommendationResult,
    stars: dict[int, float],
    note: str,
    offset: int,
    names: LocalizedNames | None,
) -> dict[str, Any]:
    """The response body from result `offset` on, titles localized by `names`; `stars` maps
    rated catalogue rows to the caller's ratings."""
    view, rec = model.view, model.view.recommender
    items = []
    for item in result.items[offset:]:
        because, explanation = None, "Among the most popular titles"
        if item.because is not None:
            row = rec.row_of(item.because)
            meta, rating = view.meta[row], stars.get(row)
            because = {"ref": meta["ref"], "title": meta["title"], "rating": rating}
            explanation = f"Because you rated {meta['title']}" + (
                f" ({rating:.1f}★)" if rating is not None else ""
            )
        elif result.strategy == "two_tower":
            explanation = "Matches your ratings"
        items.append(
            {
                **view.title(rec.row_of(item.item_id), names),
                "predicted_rating": round(item.predicted_rating, 2),
                "because": because,
                "explanation": explanation,
            }
        )
    return {
        "model_version": model.model_version,
        "strategy": result.strategy,
        "note": result.note or note,
        "items": items,
    }


# ------------------------------------------------------------------------------ endpoints
@router.get("/titles/search", response_model=s.SearchResponse, tags=["titles"])
def search_titles(
    request: Request,
    q: Annotated[str, Query(min_length=1, max_length=200, description="title, typos allowed")],
    limit: Annotated[int, Query(ge=1, le=s.MAX_SEARCH_LIMIT)] = 10,
    lang: Lang = None,
    region: Region = None,
) -> Response:
    """Candidate titles for a free-text query, best first; never picks one silently. Localized
    titles (IMDb akas, every language) are searched too."""
    view = served(request).view
    names = view.localized(request_locale(request, lang, region))
    try:
        hits = view.recommender.search(q, limit)
    except ValueError as exc:
        raise FieldError("q", str(exc)) from None
    candidates = ",".join(
        view.title_json(row, f'"match":"{hit.match}","score":{number_json(hit.score, 1)}', names)
        for row, hit in hits
    )
    return _json(
        f'{{"model_version":{view.version_json},"query":{to_json(q)},"candidates":[{candidates}]}}'
    )


@router.get(
    "/titles/{ref}",
    response_model=s.TitleResponse,
    response_model_exclude_unset=True,  # `localized_title` only when asked
    responses=TITLE_404,
    tags=["titles"],
)
def get_title(
    ref: TitleRefPath,
    request: Request,
    response: Response,
    lang: Lang = None,
    region: Region = None,
) -> dict[str, Any]:
    """Metadata of one title."""
    model = served(request)
    names = model.view.localized(request_locale(request, lang, region))
    response.headers.update(VARY)
    return {
        "model_version": model.model_version,
        "title": model.view.title(_row(model.view, ref), names),
    }


@router.get(
    "/titles/{ref}/placeholder.svg",
    response_class=Response,
    responses=SVG | TITLE_404,
    tags=["titles"],
)
def title_placeholder(ref: TitleRefPath, request: Request) -> Response:
    """A poster placeholder for titles without a poster: the title's initials on a colour
    derived from its first genre (2:3 SVG, cacheable)."""
    view = served(request).view
    meta = view.meta[_row(view, ref)]
    return Response(
        placeholder_svg(meta["title"], meta["genres"]),
        media_type="image/svg+xml",
        headers={"Cache-Control": f"public, max-age={PLACEHOLDER_MAX_AGE_S}"},
    )


@router.get(
    "/titles/{ref}/similar",
    response_model=s.SimilarResponse,
    responses=TITLE_404,
    tags=["titles"],
    openapi_extra=openapi_parameters(s.SimilarQuery),
)
async def similar_titles(ref: TitleRefPath, request: Request) -> Response:
    """Content neighbours (cosine over genres and scaled numerics), never the title itself."""
    view = served(request).view
    params = parse_query(request, s.SimilarQuery)
    try:
        row = view.recommender.row(ref)
    except UnknownTitleError:  # the suggestions are a fuzzy search: off the event loop
        raise TitleNotFound(ref, await run_in_threadpool(view.suggestions, ref)) from None
    locale = request_locale(request, params.lang, params.region)
    filters = query_filters(view, params)
    args = (row, params.k, filters, params.offset, locale)
    if view.renders_inline(locale):
        body = view.similar_body(*args)
    else:
        body = await run_in_threadpool(view.similar_body, *args)
    return Response(body, media_type="application/json", headers=VARY)


@router.post(
    "/recommendations",
    response_model=s.RecommendationResponse,
    response_model_exclude_unset=True,
    responses=TITLES_404 | BODY,
    tags=["recommendations"],
)
def recommend(
    body: s.RecommendationRequest,
    request: Request,
    response: Response,
    lang: Lang = None,
    region: Region = None,
) -> dict[str, Any]:
    """Top-k titles for a list of ratings (zero ratings: the most popular titles).

    Rated and excluded titles never appear. Each item says which rated title it is most like.
    """
    model = served(request)
    view = model.view
    names = view.localized(request_locale(request, lang, region))
    response.headers.update(VARY)
    filters = _body_filters(view, body.filters)
    excluded = [(f"exclude.{i}", ref) for i, ref in enumerate(body.exclude)]
    rows = _rated_rows(view, body.ratings, excluded)
    pairs = _rating_inputs(body.ratings)
    with timed(request, "ratings"):
        result = view.recommender.recommend(pairs, body.offset + body.k, filters, body.exclude)
    stars = {row: r.rating for row, r in zip(rows, body.ratings, strict=True)}
    note = f"personalised from {len(pairs)} rating(s)"
    return recommendations_body(model, result, stars, note, body.offset, names)


@router.get(
    "/movielens-users/{user_id}/recommendations",
    response_model=s.RecommendationResponse,
    response_model_exclude_unset=True,
    responses={404: {"model": s.ErrorResponse, "description": "unknown user"}},
    tags=["recommendations"],
    openapi_extra=openapi_parameters(s.UserRecommendationQuery),
)
def recommend_for_user(
    user_id: Annotated[int, Path(ge=0, lt=s.MOVIELENS_USER_ID_END)],
    request: Request,
    response: Response,
) -> dict[str, Any]:
    """Top-k titles for a user of the training data, excluding what they already rated."""
    model = served(request)
    view = model.view
    params = parse_query(request, s.UserRecommendationQuery)
    filters = query_filters(view, params)
    names = view.localized(request_locale(request, params.lang, params.region))
    response.headers.update(VARY)
    try:
        with timed(request, "user"):
            result = view.recommender.recommend_for_user(user_id, params.offset + params.k, filters)
    except UnknownUserError:
        raise HTTPException(404, f"unknown user {user_id}") from None
    note = f"personalised from user {user_id}'s history"
    return recommendations_body(model, result, {}, note, params.offset, names)


@router.get("/movielens-users", response_model=s.UsersResponse, tags=["recommendations"])
def known_users(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=s.MAX_USERS_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> dict[str, Any]:
    """The users of the served release (ascending id) with their rating counts: the ids
    `GET /movielens-users/{user_id}/recommendations` knows."""
    model = served(request)
    rec = model.view.recommender
    total = int(np.searchsorted(rec.user_ids, s.MOVIELENS_USER_ID_END))  # not application users
    end = min(offset + limit, total)
    counts = np.diff(rec.history_offsets)[offset:end]
    users = rec.user_ids[offset:end]
    return {
        "model_version": model.model_version,
        "total": total,
        "items": [
            {"user_id": u, "ratings": n}
            for u, n in zip(users.tolist(), counts.tolist(), strict=True)
        ],
    }


@router.post(
    "/scores",
    response_model=s.ScoreResponse,
    responses=TITLES_404
    | {404: {"model": s.ErrorResponse, "description": "unknown title or user"}}
    | BODY,
    tags=["recommendations"],
)
def score(body: s.ScoreRequest, request: Request) -> dict[str, Any]:
    """Predicted stars (4 decimals) of each candidate for a user with these ratings, or for a
    user of the release (`user_id`: their stored history, 404 when unknown)."""
    model = served(request)
    view = model.view
    candidates = [(f"candidates.{i}", ref) for i, ref in enumerate(body.candidates)]
    _rated_rows(view, body.ratings, candidates)
    with timed(request, "scores"):
        if body.user_id is None:
            predicted = view.recommender.score(_rating_inputs(body.ratings), body.candidates)
        else:
            try:
                predicted = view.recommender.score_for_user(body.user_id, body.candidates)
            except UnknownUserError:
                raise HTTPException(404, f"unknown user {body.user_id}") from None
    return {
        "model_version": model.model_version,
        "candidates": body.candidates,
        "predicted_ratings": [round(float(p), 4) for p in predicted],
    }
