"""Request and response models of the serving API (pydantic v2; they make the OpenAPI doc)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from recommender_lib.sources.feedback.events import APP_USER_ID_BASE

MAX_RATINGS = 500
MAX_EXCLUDE = 500
MAX_CANDIDATES = 1000
MAX_K = 100
MAX_OFFSET = 400  # paging reaches the first MAX_OFFSET + MAX_K results
OFFSET_HELP = "results to skip: the next page of k starts at offset + k"
MAX_SEARCH_LIMIT = 50
MAX_USERS_PAGE = 200
# Training ids from here on are application users (`training_user_id`), never MovieLens users.
MOVIELENS_USER_ID_END = APP_USER_ID_BASE
LANG_HELP = (
    "language of the localized titles (`fr`, `pt-BR`, `ja`); without `lang` and `region` the "
    "Accept-Language header decides"
)
REGION_HELP = "region of the localized titles (`FR`, `JP`); wins over the region of `lang`"


def _ref_text(value: object) -> object:
    """MovieLens ids may come as JSON numbers; references are stripped strings from here on."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value.strip() if isinstance(value, str) else value


TitleRef = Annotated[
    str,
    Field(min_length=1, max_length=64),
    BeforeValidator(_ref_text),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "minLength": 1, "maxLength": 64}, {"type": "integer"}],
            "description": 'IMDb id (`tt0114709`) or MovieLens movie id (`1` or `"1"`)',
            "examples": ["tt0114709", "1"],
        }
    ),
]
Stars = Annotated[
    float,
    Field(ge=0.5, le=5.0, multiple_of=0.5, allow_inf_nan=False, description="0.5 to 5 stars"),
]


# ------------------------------------------------------------------------------------ requests
class RequestModel(BaseModel):
    """A JSON body: unknown fields and lax types are refused (`true` is not 1 star, `"5"` is
    not a number); MovieLens ids may still be JSON numbers (`TitleRef`)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class FilterSpec(RequestModel):
    """Which titles may be returned; every field optional (null = no filter)."""

    title_types: list[str] | None = Field(None, max_length=20, examples=[["movie"]])
    min_year: int | None = Field(None, ge=0, le=3000)
    max_year: int | None = Field(None, ge=0, le=3000)
    min_votes: int | None = Field(None, ge=0)
    genres: list[str] | None = Field(
        None, max_length=64, description="titles with ANY of these genres", examples=[["Drama"]]
    )


class LocaleQuery(BaseModel):
    """Which localized titles (IMDb akas) the response carries."""

    lang: str | None = Field(None, max_length=35, description=LANG_HELP)
    region: str | None = Field(None, max_length=8, description=REGION_HELP)


class FilterQuery(LocaleQuery):
    """Filter query parameters; list parameters repeat or take comma-separated values."""

    title_type: list[str] | None = Field(None, max_length=20, description="e.g. movie,tvSeries")
    min_year: int | None = Field(None, ge=0, le=3000)
    max_year: int | None = Field(None, ge=0, le=3000)
    min_votes: int | None = Field(None, ge=0)
    genres: list[str] | None = Field(None, max_length=64, description="ANY of, e.g. Drama,War")


class SimilarQuery(FilterQuery):
    k: int = Field(10, ge=1, le=MAX_K, description="number of neighbours")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description=OFFSET_HELP)


class UserRecommendationQuery(FilterQuery):
    k: int = Field(10, ge=1, le=MAX_K, description="number of recommendations")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description=OFFSET_HELP)


class Rating(RequestModel):
    title: TitleRef
    rating: Stars
    rated_at: int | None = Field(
        None, ge=0, le=2**40, description="when it was rated, unix seconds (default: now)"
    )


class RatingsBody(RequestModel):
    ratings: list[Rating] = Field(default_factory=list, max_length=MAX_RATINGS)

    @field_validator("ratings")
    @classmethod
    def _distinct_titles(cls, ratings: list[Rating]) -> list[Rating]:
        first: dict[str, int] = {}
        for i, rating in enumerate(ratings):
            if rating.title in first:
                raise ValueError(
                    f"title {rating.title!r} is rated twice (items {first[rating.title]} and {i})"
                )
            first[rating.title] = i
        return ratings


class RecommendationRequest(RatingsBody):
    """Ratings of a (possibly new) user; from zero ratings (most popular titles) up."""

    k: int = Field(10, ge=1, le=MAX_K)
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description=OFFSET_HELP)
    filters: FilterSpec | None = None
    exclude: list[TitleRef] = Field(default_factory=list, max_length=MAX_EXCLUDE)

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"ratings": [{"title": "tt0114709", "rating": 4.5}], "k": 10}]
        },
    )


class ScoreRequest(RatingsBody):
    """Candidates to score for a user given by ratings, or by `user_id` (a user of the release,
    scored from their stored history, as `GET /movielens-users/{id}/recommendations`) — not both."""

    user_id: int | None = Field(
        None, ge=0, lt=MOVIELENS_USER_ID_END, description="a MovieLens user of the release"
    )
    candidates: list[TitleRef] = Field(min_length=1, max_length=MAX_CANDIDATES)

    @model_validator(mode="after")
    def _one_user(self) -> ScoreRequest:
        if self.user_id is not None and self.ratings:
            raise ValueError("give either user_id or ratings, not both")
        return self


# ----------------------------------------------------------------------------------- responses
class Versioned(BaseModel):
    model_version: str = Field(description="bundle version that answered")

    model_config = ConfigDict(protected_namespaces=())


class TitleMeta(BaseModel):
    ref: str = Field(description="canonical reference: the tconst, else the MovieLens id")
    tconst: str | None
    movie_id: int | None
    title: str
    title_type: str | None
    year: int | None
    genres: list[str]
    runtime_minutes: int | None
    imdb_rating: float | None
    imdb_votes: int | None
    movielens_ratings: int = Field(description="MovieLens ratings in the training data")
    poster_url: str | None = Field(description="poster image (TMDb); null when none is known")
    localized_title: str | None = Field(
        None,
        description="the title in the asked language/region (IMDb akas); present when `lang`, "
        "`region` or Accept-Language is given, null when no localized title is known",
    )


class SearchCandidate(TitleMeta):
    match: Literal["exact", "prefix", "fuzzy"]
    score: float = Field(description="similarity of the title to the query, 0-100")


class SearchResponse(Versioned):
    query: str
    candidates: list[SearchCandidate]


class TitleResponse(Versioned):
    title: TitleMeta


class SimilarTitle(TitleMeta):
    similarity: float = Field(description="cosine similarity of the content vectors")


class SimilarResponse(Versioned):
    title: TitleMeta
    items: list[SimilarTitle]


class Because(BaseModel):
    ref: str
    title: str
    rating: float | None = Field(description="the caller's rating (null for known users)")


class RecommendedTitle(TitleMeta):
    predicted_rating: float = Field(description="predicted stars, 0.5-5")
    because: Because | None
    explanation: str


class RecommendationResponse(Versioned):
    strategy: Literal["two_tower", "popular"]
    note: str
    items: list[RecommendedTitle]


class ScoreResponse(Versioned):
    candidates: list[str]
    predicted_ratings: list[float] = Field(description="aligned with `candidates`")


class KnownUser(BaseModel):
    user_id: int
    ratings: int = Field(description="ratings of this user in the served release")


class UsersResponse(Versioned):
    total: int = Field(description="users of the served release")
    items: list[KnownUser]


class HealthResponse(BaseModel):
    status: Literal["ok"]
    model_version: str | None


class ReadyResponse(Versioned):
    status: Literal["ready"]


class RegistryInfo(BaseModel):
    model_name: str
    version: str
    alias: str | None = Field(description="the alias it is served for; null for a fallback")


class WantedVersion(BaseModel):
    alias: str | None
    version: str | None = Field(description="registry version the alias names (null: directory)")
    bundle_version: str | None


class FallbackInfo(BaseModel):
    reason: str = Field(description="why the wanted version is not served")
    since: str
    wanted: WantedVersion


class ServedModel(BaseModel):
    trained_on: dict[str, Any] = Field(
        description="what the served model was trained on: kind ('full refit' on every rating "
        "of the release, or an evaluation split), ratings, users, titles, rating time range"
    )
    ranking_rule: str = Field(description="the ordering the recommendations use")


class VersionResponse(Versioned):
    source: Literal["mlflow", "directory"]
    registry: RegistryInfo | None
    fallback: FallbackInfo | None = Field(
        None, description="set while the served version is not the one the source names"
    )
    loaded_at: str
    served_model: ServedModel | None = Field(description="null for bundles that predate it")
    manifest: dict[str, Any] = Field(description="bundle manifest without the file hash table")


# -------------------------------------------------------------------------------------- errors
class ErrorResponse(BaseModel):
    detail: str


class InternalErrorResponse(ErrorResponse):
    request_id: str


class TitleNotFoundResponse(ErrorResponse):
    suggestions: list[SearchCandidate]


class UnknownRef(BaseModel):
    field: str
    ref: str
    suggestions: list[SearchCandidate]


class UnknownTitlesResponse(ErrorResponse):
    unknown: list[UnknownRef]


class FieldProblem(BaseModel):
    field: str = Field(description="dotted path of the offending input, e.g. ratings.0.rating")
    message: str


class ValidationErrorResponse(BaseModel):
    detail: list[FieldProblem]
