"""The in-memory serving engine built from one verified bundle (`recommender_lib.serving_bundle`).

Personalised recommendation for a list of ratings: the user's feature vector (the same function
as in training), ONE user-tower pass, a dot-product retrieval over the precomputed item
embeddings for a candidate set, then the fusion head re-ranks only those candidates by
predicted stars. No per-request pass of the model over the whole catalogue.

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

from recommender_lib.baselines import MAX_STARS, MIN_STARS
from recommender_lib.bundle import verify_bundle
from recommender_lib.content_index import ContentIndex, SimilarityFilters, top_k
from recommender_lib.features import baseline_prediction, user_features_from_ratings
from recommender_lib.serving_bundle import (
    CATALOG_FILE,
    CONTENT_DIR,
    EMBEDDINGS_FILE,
    MODEL_DIR,
    USER_FEATURES_FILE,
    USER_HISTORY_FILE,
    ItemEmbeddings,
)
from recommender_lib.title_search import SearchHit, TitleSearchIndex
from recommender_lib.two_tower import TrainedTwoTower

TCONST = re.compile(r"^tt\d{7,}$")
MIN_CANDIDATES = 200  # retrieval candidates re-ranked by the fusion head
Strategy = Literal["two_tower", "popular"]


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
    score: float  # retrieval score (dot product / τ + ranking bias); popularity in fallback
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
    user_ids: np.ndarray
    user_matrix: np.ndarray
    history_offsets: np.ndarray
    history_items: np.ndarray
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
        with np.load(root / USER_FEATURES_FILE, allow_pickle=False) as users:
            user_ids, user_matrix = users["user_ids"], users["matrix"].astype(np.float32)
        with np.load(root / USER_HISTORY_FILE, allow_pickle=False) as hist:
            if not np.array_equal(hist["user_ids"], user_ids):
                raise ValueError("user history and user features list different users")
            offsets, items = hist["offsets"], hist["item_ids"]
        search = TitleSearchIndex.build(
            ids, catalog["title"].tolist(), catalog["year"].tolist(), catalog["popularity"]
        )
        return cls(
            manifest=manifest,
            model=TrainedTwoTower.load(root / MODEL_DIR),
            catalog=catalog,
            embeddings=embeddings,
            content=content,
            search_index=search,
            user_ids=user_ids,
            user_matrix=user_matrix,
            history_offsets=offsets,
            history_items=items,
        )

    def __post_init__(self) -> None:
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
    def _ratings_frame(self, ratings: Sequence[tuple[str | int, float]]) -> pd.DataFrame:
        rows = [self.row(ref) for ref, _ in ratings]
        return pd.DataFrame(
            {
                "movie_id": self.embeddings.item_ids[rows].astype(np.int64),
                "rating": np.asarray([r for _, r in ratings], dtype=np.float64),
            }
        )

    def _user_vector(self, ratings: pd.DataFrame) -> np.ndarray:
        ux = user_features_from_ratings(ratings, self.model.items, self.model.transform)
        return np.asarray(ux, dtype=np.float32)[None, :]

    def recommend(
        self,
        ratings: Sequence[tuple[str | int, float]],
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
        return self._personalised(self._user_vector(frame), k, filters, rated_rows + excluded,
                                  frame)  # fmt: skip

    def recommend_for_user(
        self, user_id: int, k: int, filters: SimilarityFilters | None = None
    ) -> RecommendationResult:
        """Top-k titles for a user of the training data, excluding what they already rated."""
        pos = int(np.searchsorted(self.user_ids, user_id))
        if pos >= len(self.user_ids) or self.user_ids[pos] != user_id:
            raise UnknownUserError(user_id)
        seen = self.history_items[self.history_offsets[pos] : self.history_offsets[pos + 1]]
        rows = [r for r in (self._row_of_item(int(i)) for i in seen) if r is not None]
        frame = pd.DataFrame({"movie_id": seen.astype(np.int64), "rating": np.nan})
        return self._personalised(self.user_matrix[pos : pos + 1], k, filters, rows, frame)

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
        k: int,
        filters: SimilarityFilters | None,
        excluded_rows: list[int],
        rated: pd.DataFrame,
    ) -> RecommendationResult:
        u = self.model.user_tower.predict_on_batch(ux)
        u = np.asarray(u, dtype=np.float32)[0]
        scores = self.embeddings.vectors @ u / np.float32(self.model.temperature)
        scores += self.embeddings.biases
        keep = self.content.mask(filters)
        if keep is not None:
            scores[~keep] = -np.inf
        scores[excluded_rows] = -np.inf
        candidates = top_k(scores, max(MIN_CANDIDATES, 5 * k))
        candidates = candidates[np.isfinite(scores[candidates])]
        stars = self._predict_rows(ux, candidates, u)
        order = np.lexsort((candidates, -scores[candidates], -stars))[:k]
        because = self._because(candidates[order], rated)
        items = [
            Recommendation(
                int(self.embeddings.item_ids[candidates[j]]),
                float(stars[j]),
                float(scores[candidates[j]]),
                because[n],
            )
            for n, j in enumerate(order)
        ]
        return RecommendationResult(items, "two_tower")

    def _predict_rows(
        self, ux: np.ndarray, rows: Sequence[int] | np.ndarray, u: np.ndarray | None = None
    ) -> np.ndarray:
        """Predicted stars of catalogue rows for one user (fusion head on the candidates only)."""
        rows = np.asarray(rows, dtype=np.intp)
        if len(rows) == 0:
            return np.zeros(0, np.float64)
        if u is None:
            u = np.asarray(self.model.user_tower.predict_on_batch(ux), dtype=np.float32)[0]
        item_ids = self.embeddings.item_ids[rows]
        base = baseline_prediction(
            np.repeat(ux, len(rows), axis=0),
            self.model.items.biases(item_ids),
            self.model.transform,
        ).astype(np.float32)
        pred = self.model.head.predict_on_batch(
            [np.repeat(u[None, :], len(rows), axis=0), self.embeddings.vectors[rows], base[:, None]]
        )
        return np.clip(np.asarray(pred, dtype=np.float64).ravel(), MIN_STARS, MAX_STARS)

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

    def score(
        self, ratings: Sequence[tuple[str | int, float]], candidates: Sequence[str | int]
    ) -> np.ndarray:
        """Predicted stars of `candidates` for a user with `ratings` (batch scoring)."""
        frame = self._ratings_frame(ratings)
        rows = [self.row(ref) for ref in candidates]
        ux = self._user_vector(frame)
        return self._predict_rows(ux, rows)
