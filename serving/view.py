"""`ServingView`: JSON-ready per-title metadata precomputed once per loaded bundle.

Responses then copy a small dict per hit instead of reading pandas rows per request, and the
hot endpoints (similar titles, search) splice precomputed JSON text instead of serialising.
Rendered similar-titles bodies are kept in a bounded LRU: a view is immutable and replaced as a
whole on a model swap, so the cache can never serve another version's answer.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from recommender_lib.engine.recommender import Recommender
from recommender_lib.index.content_index import SimilarityFilters
from recommender_lib.index.localized_titles import LOCALE_CACHE_SIZE, Locale

SUGGESTIONS = 5
# Similar-titles bodies render on the event loop (no thread-pool hop) when the content index is
# exact and at most this big: one query is then ~0.1 ms of numpy.
INLINE_MAX_TITLES = 50_000
LocalizedNames = Mapping[int, str]  # catalogue row -> localized title, for one locale
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _column(frame: pd.DataFrame, name: str, cast: type) -> list[Any]:
    """A column as Python values, missing values as None."""
    values = frame[name].astype(object)
    return [None if pd.isna(v) else cast(v) for v in values.tolist()]


def to_json(value: Any) -> str:
    """Compact JSON text (NaN/inf refused)."""
    return _ENCODER.encode(value)


def number_json(value: float, digits: int = 6) -> str:
    """A finite float as JSON text with `digits` decimals (non-finite ones, which the engine
    never returns, as 0)."""
    return f"{value:.{digits}f}" if math.isfinite(value) else "0"


def _metadata(catalog: pd.DataFrame) -> list[dict[str, Any]]:
    tconst = [t if isinstance(t, str) else None for t in catalog["tconst"].tolist()]
    movie_id = _column(catalog, "movie_id", int)
    columns = {
        "tconst": tconst,
        "movie_id": movie_id,
        "title": [str(t) for t in catalog["title"].tolist()],
        "title_type": _column(catalog, "title_type", str),
        "year": _column(catalog, "year", int),
        "genres": [[str(g) for g in gs] if gs is not None else [] for gs in catalog["genres"]],
        "runtime_minutes": _column(catalog, "runtime", int),
        "imdb_rating": _column(catalog, "imdb_rating", float),
        "imdb_votes": _column(catalog, "imdb_votes", int),
        "movielens_ratings": [int(n) for n in catalog["ml_ratings"].tolist()],
        "poster_url": [u if isinstance(u, str) else None for u in catalog["poster_url"].tolist()],
    }
    refs = [t if t is not None else str(m) for t, m in zip(tconst, movie_id, strict=True)]
    names = list(columns)
    return [
        {"ref": ref, **dict(zip(names, row, strict=True))}
        for ref, row in zip(refs, zip(*columns.values(), strict=True), strict=True)
    ]


@dataclass(frozen=True, eq=False)
class ServingView:
    """A loaded `Recommender` plus what the API needs from it, precomputed and immutable."""

    recommender: Recommender
    meta: list[dict[str, Any]]  # catalogue row -> title metadata (treat as read-only)
    genres: dict[str, str]  # casefolded name -> name
    title_types: dict[str, str]
    _meta_json: list[str] = field(repr=False)  # each row's metadata as JSON, without the "}"
    version_json: str = field(repr=False)
    similar_cache_size: int = 2048
    similar_body: Callable[[int, int, SimilarityFilters | None, int, Locale | None], bytes] = field(
        init=False, repr=False
    )
    _small_index: bool = field(init=False, repr=False)
    _ready_locales: set[Locale] = field(init=False, repr=False, default_factory=set)

    def __post_init__(self) -> None:
        render = self._similar_body
        if self.similar_cache_size > 0:
            render = functools.lru_cache(maxsize=self.similar_cache_size)(render)
        object.__setattr__(self, "similar_body", render)
        content = self.recommender.content
        small = content.approximate is None and len(content) <= INLINE_MAX_TITLES
        object.__setattr__(self, "_small_index", small)

    @classmethod
    def build(cls, recommender: Recommender, similar_cache_size: int = 2048) -> ServingView:
        """Precompute everything; `similar_cache_size` bounds the similar-titles LRU (0: off)."""
        content = recommender.content
        meta = _metadata(recommender.catalog)
        return cls(
            recommender=recommender,
            meta=meta,
            genres={g.casefold(): g for g in content.genre_vocab},
            title_types={t.casefold(): t for t in content.title_type_vocab},
            _meta_json=[to_json(m)[:-1] for m in meta],
            version_json=to_json(recommender.version),
            similar_cache_size=similar_cache_size,
        )

    @property
    def version(self) -> str:
        return self.recommender.version

    def localized(self, locale: Locale | None) -> LocalizedNames | None:
        """Row -> localized title for `locale` (None without a locale: no `localized_title`)."""
        if locale is None:
            return None
        names = self.recommender.localized.titles_for(locale)
        if len(self._ready_locales) >= LOCALE_CACHE_SIZE:
            self._ready_locales.clear()  # bounded like the per-locale cache it mirrors
        self._ready_locales.add(locale)
        return names

    def renders_inline(self, locale: Locale | None) -> bool:
        """Whether `similar_body` is cheap enough for the event loop: a small exact index
        (`INLINE_MAX_TITLES`) and `locale`'s titles already resolved (the first resolution of
        a locale reads every aka)."""
        return self._small_index and (locale is None or locale in self._ready_locales)

    def title(self, row: int, names: LocalizedNames | None = None) -> dict[str, Any]:
        """A row's metadata, with `localized_title` when `names` is given."""
        meta = self.meta[row]
        return meta if names is None else {**meta, "localized_title": names.get(row)}

    def title_json(self, row: int, extra: str = "", names: LocalizedNames | None = None) -> str:
        """A row's metadata as a JSON object, `extra` (`"key":value,…` text) appended, and
        `localized_title` when `names` is given."""
        if names is not None:
            localized = f'"localized_title":{to_json(names.get(row))}'
            extra = f"{localized},{extra}" if extra else localized
        return f"{self._meta_json[row]},{extra}}}" if extra else f"{self._meta_json[row]}}}"

    def similar(
        self, row: int, k: int, filters: SimilarityFilters | None
    ) -> list[tuple[int, float]]:
        """(row, cosine) content neighbours of a catalogue row, best first, never itself.

        `Recommender.similar` without its id lookups: the content index is in catalogue order
        (checked by `Recommender.load`), so its rows are catalogue rows.
        """
        rows, scores = self.recommender.content.similar_rows(row, k, filters)
        return list(zip(rows.tolist(), scores.tolist(), strict=True))

    def _similar_body(
        self,
        row: int,
        k: int,
        filters: SimilarityFilters | None,
        offset: int = 0,
        locale: Locale | None = None,
    ) -> bytes:
        """The `/titles/{ref}/similar` response body (JSON bytes): neighbours `offset` to
        `offset + k`, titles localized for `locale`; use `similar_body`, the cached version (a
        pure function of its arguments for this view)."""
        hits = self.similar(row, offset + k, filters)[offset:]
        names = self.localized(locale)
        items = ",".join(
            self.title_json(r, f'"similarity":{number_json(s)}', names) for r, s in hits
        )
        return (
            f'{{"model_version":{self.version_json},"title":{self.title_json(row, "", names)},'
            f'"items":[{items}]}}'
        ).encode()

    def suggestions(self, ref: str, limit: int = SUGGESTIONS) -> list[dict[str, Any]]:
        """Search candidates for an unknown reference (none when it cannot be searched)."""
        try:
            hits = self.recommender.search(str(ref), limit)
        except (TypeError, ValueError):
            return []
        return [self.candidate(row, hit.match, hit.score) for row, hit in hits]

    def candidate(self, row: int, match: str, score: float) -> dict[str, Any]:
        return {**self.meta[row], "match": match, "score": float(score)}

    def warm_up(self) -> None:
        """Run every model path once (builds Keras predict functions before serving)."""
        if not self.meta:
            return
        rec, ref = self.recommender, self.meta[0]["ref"]
        rec.recommend([], 1)
        rec.recommend([(ref, 4.0)], 1)
        rec.score([(ref, 4.0)], [ref])
        rec.similar(ref, 1)
        if len(rec.user_ids):
            rec.recommend_for_user(int(rec.user_ids[0]), 1)

    def canonical(self, names: Sequence[str], vocab: dict[str, str], what: str) -> frozenset[str]:
        """Vocabulary names for case-insensitive `names`; ValueError naming unknown ones."""
        unknown = sorted({n for n in names if n.casefold() not in vocab})
        if unknown:
            raise ValueError(f"unknown {what} {unknown}; allowed: {sorted(vocab.values())}")
        return frozenset(vocab[n.casefold()] for n in names)
