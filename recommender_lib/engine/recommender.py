"""The in-memory serving engine built from one verified bundle (`recommender_lib.bundle.layout`).

Personalised recommendation for a list of ratings or a known user: the user's feature vector
(the same function as in training), ONE user-tower pass, then `RankingEngine.rank` — the ranking
function the evaluation measures, with the rule saved in the bundle — over the precomputed item
embeddings; the fusion head predicts stars for the returned titles (or the rule's window) only.
No per-request pass of the model over the whole catalogue.

Title references are IMDb ids (`tt0114709`) or MovieLens movie ids (`1` or `"1"`); internally
every title is an item id (MovieLens id, or minus the IMDb number for IMDb-only titles).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from recommender_lib.bundle.format import verify_bundle
from recommender_lib.bundle.layout import (
    AKAS_FILE,
    CATALOG_FILE,
    CONTENT_DIR,
    EMBEDDINGS_FILE,
    MODEL_DIR,
    PERSONAL_DIR,
    USER_FEATURES_PATH,
    USER_HISTORY_FILE,
    ItemEmbeddings,
)
from recommender_lib.engine.ranking import RankingEngine
from recommender_lib.index.content_index import ContentIndex, SimilarityFilters
from recommender_lib.index.localized_titles import LocalizedTitles
from recommender_lib.index.personal import PersonalIndex
from recommender_lib.index.title_search import SearchHit, TitleSearchIndex
from recommender_lib.index.top_k import PAD
from recommender_lib.modeling.features.users import load_user_features, user_features_from_ratings
from recommender_lib.modeling.two_tower.trained import TrainedTwoTower
from recommender_lib.sources.formats import TCONST_PATTERN

TCONST = re.compile(TCONST_PATTERN)
Strategy = Literal["two_tower", "popular"]
# (title ref, stars) or (title ref, stars, unix time of the rating or None for "now")
RatingInput = tuple[str | int, float] | tuple[str | int, float, int | None]


class UnknownTitleError(KeyError):
    """A title reference that is not in the catalogue (`ref` is what the caller sent)."""

    def __init__(self, ref: object) -> None:
        super().__init__(ref)
        self.ref = ref

    def __str__(self) -> str:
        return f"unknown title {self.ref!r}"


class UnknownUserError(KeyError):
    """A user id that the training data does not know."""


@dataclass(frozen=True)
class Recommendation:
    item_id: int
    predicted_rating: float
    score: float  # the ranking rule's ordering score; popularity in the fallback
    because: int | None  # item id of the rated title most like this one


@dataclass(frozen=True)
class RecommendationResult:
    items: list[Recommendation]
    strategy: Strategy
    note: str = ""


@dataclass
class Recommender:
    """Everything a request needs, in memory; immutable once built (swap the whole object)."""

    manifest: dict[str, Any]
    model: TrainedTwoTower
    catalog: pd.DataFrame  # ascending item_id; row i = item i of every array below
    embeddings: ItemEmbeddings
    content: ContentIndex
    search_index: TitleSearchIndex
    localized: LocalizedTitles  # the catalogue's akas: localized titles per locale
    user_ids: np.ndarray
    user_matrix: np.ndarray
    history_offsets: np.ndarray
    history_items: np.ndarray
    history_ratings: np.ndarray
    history_ts: np.ndarray
    personal: PersonalIndex | None = None  # the HNSW graph of large catalogues (exact: None)
    engine: RankingEngine = field(init=False, repr=False)
    _tconst_rows: dict[str, int] = field(default_factory=dict, repr=False)
    _popular: np.ndarray = field(default_factory=lambda: np.zeros(0, np.intp), repr=False)

    # ------------------------------------------------------------------------------ loading
    @classmethod
    def load(cls, bundle_dir: Path | str) -> Recommender:
        """Verify every file of the bundle (sha256), then load it; raises `BundleError`."""
        root = Path(bundle_dir)
        manifest = verify_bundle(root)
        catalog = pd.read_parquet(root / CATALOG_FILE)
        embeddings = ItemEmbeddings.load(root / EMBEDDINGS_FILE)
        content = ContentIndex.load(root / CONTENT_DIR)
        ids = catalog["item_id"].to_numpy(np.int64)
        if not (np.array_equal(ids, embeddings.item_ids) and np.array_equal(ids, content.item_ids)):
            raise ValueError("bundle arrays are not aligned with the catalogue")
        user_ids, user_matrix = load_user_features(root / USER_FEATURES_PATH)
        with np.load(root / USER_HISTORY_FILE, allow_pickle=False) as hist:
            if not np.array_equal(hist["user_ids"], user_ids):
                raise ValueError("user history and user features list different users")
            offsets, items = hist["offsets"], hist["item_ids"]
            stars, times = hist["ratings"], hist["rating_ts"]
        akas = root / AKAS_FILE  # bundles written before akas have none
        localized = (
            LocalizedTitles(pd.read_parquet(akas), ids)
            if akas.is_file()
            else LocalizedTitles.empty(ids)
        )
        personal = None
        if (root / PERSONAL_DIR).is_dir():  # built above the threshold (or when asked)
            dim = embeddings.vectors.shape[1]
            personal = PersonalIndex.load(root / PERSONAL_DIR, len(ids), dim)
        if "poster_url" not in catalog:
            catalog["poster_url"] = None
        search = TitleSearchIndex.build(
            ids,
            catalog["title"].tolist(),
            catalog["year"].tolist(),
            catalog["popularity"],
            localized.alternates(),
        )
        return cls(
            manifest=manifest,
            model=TrainedTwoTower.load(root / MODEL_DIR),
            catalog=catalog,
            embeddings=embeddings,
            content=content,
            search_index=search,
            localized=localized,
            user_ids=user_ids,
            user_matrix=user_matrix,
            history_offsets=offsets,
            history_items=items,
            history_ratings=stars,
            history_ts=times,
            personal=personal,
        )

    def __post_init__(self) -> None:
        self.engine = RankingEngine.from_model(
            self.model,
            self.embeddings.item_ids,
            vectors=self.embeddings.vectors,
            biases=self.embeddings.biases,
            approximate=self.personal,
        )
        tconst = self.catalog["tconst"].tolist()
        self._tconst_rows = {t: i for i, t in enumerate(tconst) if isinstance(t, str)}
        pop = self.catalog["popularity"].to_numpy(np.float64)
        self._popular = np.lexsort((np.arange(len(pop)), -pop))

    @property
    def version(self) -> str:
        return str(self.manifest["bundle_version"])

    # ------------------------------------------------------------------------------ titles
    def row(self, ref: str | int) -> int:
        """Catalogue row of a tconst or MovieLens movie id; `UnknownTitleError` otherwise."""
        if isinstance(ref, str) and TCONST.match(ref):
            row = self._tconst_rows.get(ref)
        else:
            try:
                movie_id = int(ref)
            except (TypeError, ValueError):
                raise UnknownTitleError(ref) from None
            row = self._row_of_item(movie_id) if movie_id > 0 else None
        if row is None:
            raise UnknownTitleError(ref)
        return row

    def _row_of_item(self, item_id: int) -> int | None:
        ids = self.embeddings.item_ids
        pos = int(np.searchsorted(ids, item_id))
        return pos if pos < len(ids) and ids[pos] == item_id else None

    def title(self, row: int) -> dict[str, Any]:
        """JSON-ready metadata of one catalogue row."""
        r = self.catalog.iloc[row]
        return {
            "tconst": r["tconst"] if isinstance(r["tconst"], str) else None,
            "movie_id": None if pd.isna(r["movie_id"]) else int(r["movie_id"]),
            "title": str(r["title"]),
            "title_type": str(r["title_type"]),
            "year": None if pd.isna(r["year"]) else int(r["year"]),
            "genres": [str(g) for g in r["genres"]],
            "runtime_minutes": None if pd.isna(r["runtime"]) else int(r["runtime"]),
            "imdb_rating": None if pd.isna(r["imdb_rating"]) else float(r["imdb_rating"]),
            "imdb_votes": None if pd.isna(r["imdb_votes"]) else int(r["imdb_votes"]),
            "movielens_ratings": int(r["ml_ratings"]),
            "poster_url": r["poster_url"] if isinstance(r["poster_url"], str) else None,
        }

    def search(self, query: str, limit: int = 10) -> list[tuple[int, SearchHit]]:
        """(row, hit) candidates for a free-text title query, best first."""
        return [(self.row_of(h.item_id), h) for h in self.search_index.search(query, limit)]

    def similar(
        self, ref: str | int, k: int, filters: SimilarityFilters | None = None
    ) -> list[tuple[int, float]]:
        """(row, cosine) content neighbours of a title, best first, never the title itself."""
        item_id = int(self.embeddings.item_ids[self.row(ref)])
        return [(self.row_of(i), s) for i, s in self.content.similar(item_id, k, filters)]

    def row_of(self, item_id: int) -> int:
        row = self._row_of_item(item_id)
        if row is None:
            raise UnknownTitleError(item_id)
        return row

    # ---------------------------------------------------------------------- recommendation
    def _ratings_frame(self, ratings: Sequence[RatingInput]) -> pd.DataFrame:
        """`movie_id, rating[, rating_ts]` of a list of (ref, stars[, unix time or None])."""
        rows = [self.row(r[0]) for r in ratings]
        frame = pd.DataFrame(
            {
                "movie_id": self.embeddings.item_ids[rows].astype(np.int64),
                "rating": np.asarray([r[1] for r in ratings], dtype=np.float64),
            }
        )
        times = [r[2] if len(r) > 2 else None for r in ratings]
        if any(t is not None for t in times):  # the rest were given "now"
            now = self.model.transform.train_end_ts
            frame["rating_ts"] = np.asarray([now if t is None else t for t in times], np.int64)
        return frame

    def _user_vector(self, ratings: pd.DataFrame) -> np.ndarray:
        ux = user_features_from_ratings(ratings, self.model.items, self.model.transform)
        return np.asarray(ux, dtype=np.float32)[None, :]

    def _user_position(self, user_id: int) -> int:
        pos = int(np.searchsorted(self.user_ids, user_id))
        if pos >= len(self.user_ids) or self.user_ids[pos] != user_id:
            raise UnknownUserError(user_id)
        return pos

    def history_frame(self, user_id: int) -> pd.DataFrame:
        """`movie_id, rating, rating_ts` of every rating of a user of the release."""
        pos = self._user_position(user_id)
        rows = slice(self.history_offsets[pos], self.history_offsets[pos + 1])
        return pd.DataFrame(
            {
                "movie_id": self.history_items[rows].astype(np.int64),
                "rating": self.history_ratings[rows].astype(np.float64),
                "rating_ts": self.history_ts[rows].astype(np.int64),
            }
        )

    def recommend(
        self,
        ratings: Sequence[RatingInput],
        k: int,
        filters: SimilarityFilters | None = None,
        exclude: Iterable[str | int] = (),
    ) -> RecommendationResult:
        """Top-k titles for a (possibly new) user from their ratings; rated titles excluded.

        With no ratings there is nothing to personalise: the most popular titles within the
        filters are returned and `strategy` says so.
        """
        frame = self._ratings_frame(ratings)
        excluded = [self.row(ref) for ref in exclude]
        rated_rows = [self.row_of(int(i)) for i in frame["movie_id"]]
        if frame.empty:
            return self._popular_result(k, filters, excluded, "no ratings: most popular titles")
        ux = self._user_vector(frame)
        return self._personalised(ux, len(frame), k, filters, rated_rows + excluded, frame)

    def recommend_for_user(
        self, user_id: int, k: int, filters: SimilarityFilters | None = None
    ) -> RecommendationResult:
        """Top-k titles for a user of the release, excluding everything they rated in it."""
        ux = self.user_matrix[self._user_position(user_id)][None, :]
        rated = self.history_frame(user_id)
        rows = [r for r in (self._row_of_item(int(i)) for i in rated["movie_id"]) if r is not None]
        return self._personalised(ux, len(rated), k, filters, rows, rated)

    def _popular_result(
        self, k: int, filters: SimilarityFilters | None, excluded: list[int], note: str
    ) -> RecommendationResult:
        keep = self.content.mask(filters)
        banned = set(excluded)
        rows = [
            int(r) for r in self._popular if (keep is None or keep[r]) and int(r) not in banned
        ][:k]
        pop = self.catalog["popularity"].to_numpy(np.float64)
        stars = self._predict_rows(self._user_vector(self._ratings_frame([])), rows)
        items = [
            Recommendation(int(self.embeddings.item_ids[r]), float(s), float(pop[r]), None)
            for r, s in zip(rows, stars, strict=True)
        ]
        return RecommendationResult(items, "popular", note)

    def _personalised(
        self,
        ux: np.ndarray,
        n_ratings: int,
        k: int,
        filters: SimilarityFilters | None,
        excluded_rows: list[int],
        rated: pd.DataFrame,
    ) -> RecommendationResult:
        ranked = self.engine.rank(
            ux,
            [n_ratings],
            k,
            excluded=[np.asarray(excluded_rows, dtype=np.int64)],
            allowed=self.content.mask(filters),
        )
        keep = ranked.rows[0] != PAD
        rows = ranked.rows[0][keep]
        because = self._because(rows, rated)
        items = [
            Recommendation(int(self.embeddings.item_ids[row]), float(stars), float(score), why)
            for row, stars, score, why in zip(
                rows, ranked.stars[0][keep], ranked.scores[0][keep], because, strict=True
            )
        ]
        return RecommendationResult(items, "two_tower")

    def _predict_rows(self, ux: np.ndarray, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Predicted stars of catalogue rows for one user (fusion head on those rows only)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return np.zeros(0, np.float64)
        return self.engine.stars(ux, self.engine.user_vectors(ux), rows[None, :])[0]

    def _because(self, rows: np.ndarray, rated: pd.DataFrame) -> list[int | None]:
        """For each recommended row, the liked rated title whose embedding is closest to it."""
        if rated.empty or len(rows) == 0:
            return [None] * len(rows)
        ratings = rated["rating"].to_numpy(np.float64)
        liked = rated if np.isnan(ratings).all() else rated[ratings >= np.nanmean(ratings)]
        liked_rows = [
            r for r in (self._row_of_item(int(i)) for i in liked["movie_id"]) if r is not None
        ]
        if not liked_rows:
            return [None] * len(rows)
        sims = self.embeddings.vectors[rows] @ self.embeddings.vectors[liked_rows].T
        best = np.asarray(liked_rows)[np.argmax(sims, axis=1)]
        return [int(self.embeddings.item_ids[b]) for b in best]

    def score(self, ratings: Sequence[RatingInput], candidates: Sequence[str | int]) -> np.ndarray:
        """Predicted stars of `candidates` for a user with `ratings` (batch scoring)."""
        rows = [self.row(ref) for ref in candidates]
        return self._predict_rows(self._user_vector(self._ratings_frame(ratings)), rows)

    def score_for_user(self, user_id: int, candidates: Sequence[str | int]) -> np.ndarray:
        """Predicted stars of `candidates` for a user of the release (their stored history)."""
        ux = self.user_matrix[self._user_position(user_id)][None, :]
        return self._predict_rows(ux, [self.row(ref) for ref in candidates])
