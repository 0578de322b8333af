"""pandera schemas of the warehouse tables: the row-level quality rules.

They are plain `DataFrameSchema`s so they can be used anywhere; the orchestration layer runs them
inside blocking asset checks through `recommender_lib.warehouse.quality.validate_table`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pandera.pandas as pa

from recommender_lib.sources.feedback.events import (
    APP_USER_ID_BASE,
    EARLIEST_AT,
    EVENT_TYPES,
    MAX_FUTURE_S,
    MAX_ID_LENGTH,
    RATING,
    USER_PATTERN,
    training_user_id,
)
from recommender_lib.sources.formats import (
    IMDB_GENRES,
    IMDB_TITLE_TYPES,
    MOVIELENS_GENRES,
    MOVIELENS_NO_GENRES,
    TCONST_PATTERN,
)
from recommender_lib.warehouse.akas import CATALOG_AKAS, CATALOG_AKAS_KEY
from recommender_lib.warehouse.catalog import CATALOG
from recommender_lib.warehouse.tables import (
    IMDB_TITLES,
    MOVIE_LINKS,
    MOVIELENS_MOVIES,
    MOVIELENS_RATINGS,
)

FIRST_FILM_YEAR = 1870  # "Passage de Vénus", the oldest title in IMDb, is from 1874
FIRST_RATING_TS = 789_652_800  # 1995-01-09: MovieLens went online in 1995
HALF_STARS = [x / 2 for x in range(1, 11)]


def _latest_plausible_year() -> int:
    return datetime.now(UTC).year + 10  # announced titles carry future years


def _genre_lists(allowed: set[str], max_len: int | None = None) -> pa.Check:
    """Element-wise check of a LIST column: every genre known, at most `max_len` of them."""

    def ok(values: object) -> bool:
        if not isinstance(values, list | tuple | np.ndarray):
            return False
        if max_len is not None and len(values) > max_len:
            return False
        return all(v in allowed for v in values)

    name = f"genres in known set{'' if max_len is None else f', at most {max_len}'}"
    return pa.Check(ok, element_wise=True, name=name, error=name)


def _year_column(nullable: bool = True) -> pa.Column:
    return pa.Column(
        "Int64",
        pa.Check.in_range(FIRST_FILM_YEAR, _latest_plausible_year()),
        nullable=nullable,
        coerce=True,
    )


def _end_not_before_start(df: pd.DataFrame) -> pd.Series:
    return df["end_year"].isna() | df["start_year"].isna() | (df["end_year"] >= df["start_year"])


IMDB_TITLES_SCHEMA = pa.DataFrameSchema(
    {
        "tconst": pa.Column(str, pa.Check.str_matches(TCONST_PATTERN), unique=True),
        "title_type": pa.Column(str, pa.Check.str_matches(r"^[A-Za-z]+$")),
        "primary_title": pa.Column(str, pa.Check.str_length(min_value=1)),
        "original_title": pa.Column(str, nullable=True),
        "is_adult": pa.Column(bool),
        "start_year": _year_column(),
        "end_year": _year_column(),
        "runtime_minutes": pa.Column("Int64", pa.Check.ge(0), nullable=True, coerce=True),
        "genres": pa.Column(object, _genre_lists(set(IMDB_GENRES), max_len=3)),
        "average_rating": pa.Column(float, pa.Check.in_range(1.0, 10.0)),
        "num_votes": pa.Column("Int64", pa.Check.ge(1), coerce=True),
    },
    checks=[pa.Check(_end_not_before_start, name="end_year >= start_year")],
    strict=True,
    name=IMDB_TITLES,
)

MOVIELENS_RATINGS_SCHEMA = pa.DataFrameSchema(
    {
        "user_id": pa.Column("Int64", pa.Check.ge(1), coerce=True),
        "movie_id": pa.Column("Int64", pa.Check.ge(1), coerce=True),
        "rating": pa.Column(float, pa.Check.isin(HALF_STARS)),
        "rating_ts": pa.Column(
            "Int64",
            pa.Check(lambda s: s.between(FIRST_RATING_TS, datetime.now(UTC).timestamp() + 86_400),
                     name="timestamp between 1995 and now"),
            coerce=True,
        ),
        "rated_at": pa.Column("datetime64[us]", coerce=True),
    },
    unique=["user_id", "movie_id"],
    strict=True,
    name=MOVIELENS_RATINGS,
)  # fmt: skip

MOVIELENS_MOVIES_SCHEMA = pa.DataFrameSchema(
    {
        "movie_id": pa.Column("Int64", pa.Check.ge(1), unique=True, coerce=True),
        "title": pa.Column(str, pa.Check.str_length(min_value=1)),
        "year": _year_column(),
        "genres": pa.Column(object, _genre_lists(set(MOVIELENS_GENRES) - {MOVIELENS_NO_GENRES})),
        "raw_title": pa.Column(str),
    },
    strict=True,
    name=MOVIELENS_MOVIES,
)

MOVIE_LINKS_SCHEMA = pa.DataFrameSchema(
    {
        "movie_id": pa.Column("Int64", pa.Check.ge(1), unique=True, coerce=True),
        "imdb_id": pa.Column("Int64", pa.Check.ge(1), coerce=True),
        "tconst": pa.Column(str, pa.Check.str_matches(TCONST_PATTERN)),
        "tmdb_id": pa.Column("Int64", pa.Check.ge(1), nullable=True, coerce=True),
    },
    strict=True,
    name=MOVIE_LINKS,
)


def _imdb_only_ids_negative(df: pd.DataFrame) -> pd.Series:
    return (df["item_id"] > 0) == df["movie_id"].notna()


CATALOG_SCHEMA = pa.DataFrameSchema(
    {
        "item_id": pa.Column("Int64", pa.Check.ne(0), unique=True, coerce=True),
        "tconst": pa.Column(str, pa.Check.str_matches(TCONST_PATTERN), nullable=True),
        "movie_id": pa.Column("Int64", pa.Check.ge(1), nullable=True, coerce=True),
        "title_type": pa.Column(str, pa.Check.isin(IMDB_TITLE_TYPES)),
        "title": pa.Column(str, pa.Check.str_length(min_value=1)),
        "genres": pa.Column(object, _genre_lists(set(MOVIELENS_GENRES) | set(IMDB_GENRES))),
        "year": _year_column(),
        "ml_genres": pa.Column(object, nullable=True),
        "ml_year": _year_column(),
        "imdb_genres": pa.Column(object, nullable=True),
        "imdb_year": _year_column(),
        "runtime": pa.Column("Int64", pa.Check.ge(0), nullable=True, coerce=True),
        "imdb_rating": pa.Column(float, pa.Check.in_range(1.0, 10.0), nullable=True),
        "imdb_votes": pa.Column("Int64", pa.Check.ge(0), nullable=True, coerce=True),
    },
    checks=[pa.Check(_imdb_only_ids_negative, name="item_id > 0 exactly for MovieLens titles")],
    strict=True,
    name=CATALOG,
)

# IMDb regions: ISO 3166 codes plus IMDb's own (XWW world, XEU, SUHH, DDDE, YUCS, ...).
AKAS_REGION_PATTERN = r"^[A-Z0-9]{2,4}$"
# ISO 639-1/-3 codes, IMDb's private `q..` codes included (`en`, `cmn`, `yue`, `qbn`).
AKAS_LANGUAGE_PATTERN = r"^[a-z]{2,3}$"


def _word_lists(pattern: str, name: str) -> pa.Check:
    """Element-wise check of a LIST column: every item matches `pattern` (an empty list passes)."""
    compiled = re.compile(pattern)

    def ok(values: object) -> bool:
        if not isinstance(values, list | tuple | np.ndarray):
            return False
        return all(isinstance(v, str) and compiled.fullmatch(v) for v in values)

    return pa.Check(ok, element_wise=True, name=name, error=name)


CATALOG_AKAS_SCHEMA = pa.DataFrameSchema(
    {
        "tconst": pa.Column(str, pa.Check.str_matches(TCONST_PATTERN)),
        "ordering": pa.Column("Int64", pa.Check.ge(1), coerce=True),
        "title": pa.Column(str, pa.Check.str_length(min_value=1)),
        "region": pa.Column(str, pa.Check.str_matches(AKAS_REGION_PATTERN), nullable=True),
        "language": pa.Column(str, pa.Check.str_matches(AKAS_LANGUAGE_PATTERN), nullable=True),
        "types": pa.Column(object, _word_lists(r"[A-Za-z]+", "types are words")),
        "attributes": pa.Column(object, _word_lists(r"\S.*", "attributes are non-empty")),
        "is_original_title": pa.Column("boolean", nullable=True, coerce=True),
    },
    unique=CATALOG_AKAS_KEY,
    strict=True,
    name=CATALOG_AKAS,
)

WAREHOUSE_SCHEMAS: dict[str, pa.DataFrameSchema] = {
    IMDB_TITLES: IMDB_TITLES_SCHEMA,
    MOVIELENS_RATINGS: MOVIELENS_RATINGS_SCHEMA,
    MOVIELENS_MOVIES: MOVIELENS_MOVIES_SCHEMA,
    MOVIE_LINKS: MOVIE_LINKS_SCHEMA,
    CATALOG_AKAS: CATALOG_AKAS_SCHEMA,
}

# Keys that must be unique over the whole table (the pandera check sees one chunk at a time).
WAREHOUSE_KEYS: dict[str, list[str]] = {
    IMDB_TITLES: ["tconst"],
    MOVIELENS_RATINGS: ["user_id", "movie_id"],
    MOVIELENS_MOVIES: ["movie_id"],
    MOVIE_LINKS: ["movie_id"],
    CATALOG_AKAS: CATALOG_AKAS_KEY,
}

# ----------------------------------------------------------------------- application feedback
# `app_feedback` (recommender_lib/warehouse/app_feedback.py): events copied from the feedback
# store. Its gate adds `known_titles` (item_id in `catalog`) and the key over old + new rows.
APP_FEEDBACK = "app_feedback"


def _values_fit_types(df: pd.DataFrame) -> pd.Series:
    """Ratings carry 0.5-5 stars in halves; the other event types carry no value."""
    is_rating = df["type"] == RATING
    stars = df["value"].isin(HALF_STARS)
    return (is_rating & stars) | (~is_rating & df["value"].isna())


def _training_ids_match(df: pd.DataFrame) -> pd.Series:
    """`training_user_id` is `training_user_id(app_user)`: the documented, stable mapping."""
    return pd.Series(
        [training_user_id(u) for u in df["app_user"]], index=df.index, dtype="Int64"
    ).eq(df["training_user_id"].astype("Int64"))


def _at_plausible(s: pd.Series) -> pd.Series:
    latest = pd.Timestamp(datetime.now(UTC).timestamp() + MAX_FUTURE_S, unit="s")
    return s.between(pd.Timestamp(EARLIEST_AT, unit="s"), latest)


APP_FEEDBACK_SCHEMA = pa.DataFrameSchema(
    {
        "event_id": pa.Column(str, pa.Check.str_length(1, MAX_ID_LENGTH)),
        "app_user": pa.Column(str, pa.Check.str_matches(USER_PATTERN)),
        "training_user_id": pa.Column("Int64", pa.Check.ge(APP_USER_ID_BASE), coerce=True),
        "ref": pa.Column(str, pa.Check.str_length(min_value=1)),
        "item_id": pa.Column("Int64", pa.Check.ne(0), coerce=True),
        "type": pa.Column(str, pa.Check.isin(EVENT_TYPES)),
        "value": pa.Column(float, nullable=True),
        "at": pa.Column(
            "datetime64[us]",
            pa.Check(_at_plausible, name="at between 1990-01-01 and now + 5 min"),
            coerce=True,
        ),
        "received_at": pa.Column("datetime64[us]", coerce=True),
        "seq": pa.Column("Int64", pa.Check.ge(1), unique=True, coerce=True),
    },
    checks=[
        pa.Check(_values_fit_types, name="ratings 0.5-5 in halves, other types without value"),
        pa.Check(_training_ids_match, name="training_user_id = training_user_id(app_user)"),
    ],
    unique=["event_id"],
    strict=True,
    name=APP_FEEDBACK,
)
