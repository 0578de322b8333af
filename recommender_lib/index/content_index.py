"""Cosine top-k over the title catalogue's content vectors, with metadata filters.

`ContentIndex` holds one L2-normalised float32 vector per title plus the few per-title columns
the filters need (title type code, year, votes, genre bitmask). A query is one float32
matrix-vector product, the excluded rows set to -inf, the rows passing the filters picked out,
and `top_k`: a threshold from a strided sample narrows the rows to about sqrt(n * k), then
`np.argpartition` finds the k best and only those are sorted by (-score, row position). The
result equals the first k of a stable full sort exactly, ties on the k-th boundary included,
so answers are deterministic. Above `APPROXIMATE_THRESHOLD` titles (or when asked) the build
adds an HNSW graph (`backends.HNSWBackend`, its recall@10 checked against exact, the build failing
below 0.98); queries then over-fetch from the graph and filter exactly, falling back to the exact
masked search when too few candidates pass.

Conventions: all-zero input vectors stay zero (score 0 against everything, never > 0); a title
whose own vector is zero has no neighbours (`similar` returns []), likewise a zero query vector.
Missing year is stored as -1 and fails any year filter; missing votes count as 0; a missing
title type fails a title-type filter; a title without genres fails a genre filter.

Saved as plain `.npy` files (no pickle) plus `content_index.json` (vocabularies, dims), each
written atomically, the HNSW graph as `hnsw.faiss` with its parameters and recall under
`index` in the JSON; the JSON is written last.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recommender_lib.atomic import atomic_path, write_text_atomic
from recommender_lib.index.backends import (
    APPROXIMATE_THRESHOLD,
    ExactBackend,
    HNSWBackend,
    HNSWParams,
    _check_k,
    check_recall,
    filtered_search,
)
from recommender_lib.index.backends import _top_k_exact as _top_k_exact  # re-exported
from recommender_lib.index.backends import top_k as top_k  # re-exported (engine.ranking)

CONTENT_INDEX_VERSION = 1
MISSING_YEAR = -1
MAX_GENRES = 64
META_FILE = "content_index.json"
ARRAY_FIELDS = ("item_ids", "vectors", "title_type", "year", "votes", "genre_bits")
METADATA_COLUMNS = ("item_id", "title_type", "year", "num_votes", "genres")
_NO_ROWS = np.empty(0, dtype=np.int64)
_NO_SCORES = np.empty(0, dtype=np.float32)


# ------------------------------------------------------------------------------------ filters


def _name_set(value: Iterable[str] | None, what: str) -> frozenset[str] | None:
    """Coerce an iterable of names to a non-empty frozenset (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str):
        raise ValueError(f"{what} must be a collection of names, not the string {value!r}")
    names = frozenset(value)
    if not names:
        raise ValueError(f"{what} must not be empty (use None for no {what} filter)")
    if not all(isinstance(name, str) for name in names):
        raise ValueError(f"{what} must be strings, got {sorted(map(repr, names))}")
    return names


@dataclass(frozen=True)
class SimilarityFilters:
    """Which titles may be returned. Every field None means no filtering.

    `genres` passes a title having ANY of the listed genres. Names are checked against the
    index's vocabularies in `ContentIndex.mask` (unknown ones raise `ValueError`).
    """

    title_types: frozenset[str] | None = None
    min_year: int | None = None
    max_year: int | None = None
    min_votes: int | None = None
    genres: frozenset[str] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "title_types", _name_set(self.title_types, "title_types"))
        object.__setattr__(self, "genres", _name_set(self.genres, "genres"))
        if (
            self.min_year is not None
            and self.max_year is not None
            and self.min_year > self.max_year
        ):
            raise ValueError(f"min_year {self.min_year} is after max_year {self.max_year}")
        if self.min_votes is not None and self.min_votes < 0:
            raise ValueError(f"min_votes must be >= 0, got {self.min_votes}")

    @property
    def is_empty(self) -> bool:
        """True when no field restricts anything."""
        fields = (self.title_types, self.min_year, self.max_year, self.min_votes, self.genres)
        return all(value is None for value in fields)


# ------------------------------------------------------------------------------ build helpers


def _item_ids(item_ids: Any) -> np.ndarray:
    ids = np.asarray(item_ids)
    if ids.ndim != 1:
        raise ValueError(f"item_ids must be 1-D, got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"item_ids must be integers, got dtype {ids.dtype}")
    return ids.astype(np.int64, copy=False)


def _duplicates(values: np.ndarray) -> np.ndarray:
    ordered = np.sort(values)
    return np.unique(ordered[1:][ordered[1:] == ordered[:-1]])


def _normalised(vectors: Any, n: int) -> np.ndarray:
    """Validated float32 copy with unit-length rows (all-zero rows stay zero)."""
    matrix = np.asarray(vectors, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != n or matrix.shape[1] < 1:
        raise ValueError(f"vectors must have shape ({n}, d >= 1), got {matrix.shape}")
    if not np.isfinite(matrix).all():
        bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
        raise ValueError(f"vectors contain NaN/inf in {bad.size} row(s), first rows {bad[:5]}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    np.divide(matrix, norms, out=matrix, where=norms > 0)
    return matrix.astype(np.float32)


def _aligned_metadata(metadata: pd.DataFrame, ids: np.ndarray) -> pd.DataFrame:
    """Metadata rows in the order of `ids` (ValueError on missing columns/ids, duplicates)."""
    missing_cols = [c for c in METADATA_COLUMNS if c not in metadata.columns]
    if missing_cols:
        raise ValueError(f"metadata lacks column(s) {missing_cols}; needs {METADATA_COLUMNS}")
    meta_ids = pd.to_numeric(metadata["item_id"], errors="raise").to_numpy(dtype=np.int64)
    dup = _duplicates(meta_ids)
    if dup.size:
        raise ValueError(f"metadata has duplicate item_id(s), first ones {dup[:5].tolist()}")
    rows = pd.Index(meta_ids).get_indexer(ids)
    if (rows < 0).any():
        absent = ids[rows < 0]
        raise ValueError(
            f"no metadata for {absent.size} item id(s), first ones {absent[:5].tolist()}"
        )
    return metadata.iloc[rows].reset_index(drop=True)


def _nullable_ints(values: pd.Series, name: str, fill: int) -> np.ndarray:
    """Nullable integer column -> int64 with `fill` for missing; negatives rejected."""
    try:
        numbers = pd.array(values.to_numpy(dtype=object), dtype="Int64")
    except (TypeError, ValueError) as err:
        raise ValueError(f"metadata column {name!r} must hold integers or nulls: {err}") from err
    if (numbers < 0).fillna(False).any():
        raise ValueError(f"metadata column {name!r} has negative values")
    return numbers.fillna(fill).to_numpy(dtype=np.int64)


def _vocab(observed: Iterable[str], given: Sequence[str] | None, what: str) -> list[str]:
    """The given vocabulary (checked to cover `observed`) or the sorted observed names."""
    seen = set(observed)
    if not all(isinstance(name, str) for name in seen):
        raise ValueError(f"{what} names must be strings, got {sorted(map(repr, seen))}")
    seen = {str(name) for name in seen}  # np.str_ -> str, for JSON and messages
    if given is None:
        return sorted(seen)
    vocab = [str(name) for name in given]
    if len(set(vocab)) != len(vocab):
        raise ValueError(f"{what} vocabulary has duplicate names")
    unknown = seen - set(vocab)
    if unknown:
        raise ValueError(f"{what} {sorted(unknown)} not in the given vocabulary {vocab}")
    return vocab


def _title_type_codes(
    values: pd.Series, vocab: Sequence[str] | None
) -> tuple[np.ndarray, list[str]]:
    types = values.where(values.notna(), None)
    names = _vocab((t for t in types if t is not None), vocab, "title type")
    codes = pd.Categorical(types, categories=names).codes.astype(np.int16)
    return codes, names


def _genre_bitmasks(values: pd.Series, vocab: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    """One uint64 bitmask per row (bit i = vocab[i]); entries are lists of names or None."""
    lists = values.map(lambda g: () if g is None or (np.ndim(g) == 0 and pd.isna(g)) else g)
    exploded = lists.reset_index(drop=True).explode().dropna()
    names = _vocab(exploded.unique(), vocab, "genre")
    if len(names) > MAX_GENRES:
        raise ValueError(f"at most {MAX_GENRES} genres fit the bitmask, got {len(names)}")
    bit = {name: np.uint64(1) << np.uint64(i) for i, name in enumerate(names)}
    bits = np.zeros(len(values), dtype=np.uint64)
    np.bitwise_or.at(
        bits,
        exploded.index.to_numpy(dtype=np.intp),
        exploded.map(bit).to_numpy(dtype=np.uint64),
    )
    return bits, names


# ------------------------------------------------------------------------------------- index


def _write_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


@dataclass(eq=False)
class ContentIndex:
    """Cosine nearest neighbours over L2-normalised title vectors, with filters: exact, or through
    the HNSW graph `approximate` when the build made one."""

    item_ids: np.ndarray  # int64 (n,), unique
    vectors: np.ndarray  # float32 (n, d), unit or all-zero rows
    title_type: np.ndarray  # int16 (n,), index into title_type_vocab, -1 = missing
    title_type_vocab: list[str]
    year: np.ndarray  # int32 (n,), MISSING_YEAR = missing
    votes: np.ndarray  # int64 (n,), missing = 0
    genre_bits: np.ndarray  # uint64 (n,), bit i = genre_vocab[i]
    genre_vocab: list[str]
    approximate: HNSWBackend | None = None  # None: exact search only
    _exact: ExactBackend = field(init=False, repr=False)
    _order: np.ndarray = field(init=False, repr=False)  # argsort of item_ids
    _sorted_ids: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.item_ids = _item_ids(self.item_ids)
        n = self.item_ids.size
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != n:
            raise ValueError(f"vectors must have shape ({n}, d), got {self.vectors.shape}")
        self.title_type = np.asarray(self.title_type, dtype=np.int16)
        self.year = np.asarray(self.year, dtype=np.int32)
        self.votes = np.asarray(self.votes, dtype=np.int64)
        self.genre_bits = np.asarray(self.genre_bits, dtype=np.uint64)
        for name in ("title_type", "year", "votes", "genre_bits"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {getattr(self, name).shape}")
        if len(self.genre_vocab) > MAX_GENRES:
            raise ValueError(f"at most {MAX_GENRES} genres, got {len(self.genre_vocab)}")
        codes = self.title_type
        if codes.size and (codes.min() < -1 or codes.max() >= len(self.title_type_vocab)):
            raise ValueError("title_type codes must be -1 or index title_type_vocab")
        self._exact = ExactBackend(self.vectors)
        if self.approximate is not None and len(self.approximate) != n:
            raise ValueError(f"the HNSW index holds {len(self.approximate)} rows, not {n}")
        self._order = np.argsort(self.item_ids, kind="stable")
        self._sorted_ids = self.item_ids[self._order]
        dup = self._sorted_ids[1:][self._sorted_ids[1:] == self._sorted_ids[:-1]]
        if dup.size:
            raise ValueError(f"duplicate item id(s), first ones {np.unique(dup)[:5].tolist()}")

    # ---------------------------------------------------------------------------- build/io

    @classmethod
    def build(
        cls,
        item_ids: Any,
        vectors: Any,
        metadata: pd.DataFrame,
        *,
        genre_vocab: Sequence[str] | None = None,
        title_type_vocab: Sequence[str] | None = None,
        approximate: bool | None = None,
        hnsw: HNSWParams | None = None,
    ) -> ContentIndex:
        """Index `vectors` (row i = `item_ids[i]`) with metadata aligned by `item_id`.

        Vocabularies default to the sorted names seen in `metadata`; pass them to accept filter
        names that no title uses yet (e.g. all MovieLens genres). `approximate`: None = an HNSW
        graph (`hnsw` parameters) above `APPROXIMATE_THRESHOLD` titles, True / False = always /
        never; its recall check raises `backends.RecallTooLow` (a `ValueError`) below 0.98.
        """
        ids = _item_ids(item_ids)  # uniqueness is checked in __post_init__
        matrix = _normalised(vectors, ids.size)
        meta = _aligned_metadata(metadata, ids)
        codes, types = _title_type_codes(meta["title_type"], title_type_vocab)
        bits, genres = _genre_bitmasks(meta["genres"], genre_vocab)
        year = _nullable_ints(meta["year"], "year", MISSING_YEAR)
        if year.size and year.max() > np.iinfo(np.int32).max:
            raise ValueError("metadata column 'year' does not fit int32")
        if approximate is None:
            approximate = ids.size > APPROXIMATE_THRESHOLD
        graph = None
        if approximate:
            graph = HNSWBackend.build(matrix, hnsw)
            check_recall(ExactBackend(matrix), graph)
        return cls(
            approximate=graph,
            item_ids=ids,
            vectors=matrix,
            title_type=codes,
            title_type_vocab=types,
            year=year.astype(np.int32),
            votes=_nullable_ints(meta["num_votes"], "num_votes", 0),
            genre_bits=bits,
            genre_vocab=genres,
        )

    def save(self, directory: Path | str) -> dict[str, Path]:
        """Write one `.npy` per array plus `content_index.json`; returns name -> path."""
        directory = Path(directory)
        paths = {name: directory / f"{name}.npy" for name in ARRAY_FIELDS}
        for name, path in paths.items():
            _write_npy(path, getattr(self, name))
        meta = {
            "version": CONTENT_INDEX_VERSION,
            "n_items": int(self.item_ids.size),
            "dim": int(self.vectors.shape[1]),
            "title_type_vocab": self.title_type_vocab,
            "genre_vocab": self.genre_vocab,
            "index": {"kind": "exact"} if self.approximate is None else self.approximate.describe(),
        }
        if self.approximate is not None:
            paths["hnsw"] = self.approximate.save(directory)
        paths["meta"] = directory / META_FILE
        write_text_atomic(paths["meta"], json.dumps(meta, indent=2) + "\n")
        return paths

    @classmethod
    def load(cls, directory: Path | str) -> ContentIndex:
        """Read an index written by `save`."""
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        if meta.get("version") != CONTENT_INDEX_VERSION:
            raise ValueError(f"unsupported content index version {meta.get('version')!r}")
        arrays = {
            name: np.load(directory / f"{name}.npy", allow_pickle=False) for name in ARRAY_FIELDS
        }
        if arrays["vectors"].shape != (meta["n_items"], meta["dim"]):
            raise ValueError(
                f"vectors.npy has shape {arrays['vectors'].shape}, "
                f"{META_FILE} says ({meta['n_items']}, {meta['dim']})"
            )
        graph = None
        if meta.get("index", {}).get("kind", "exact") != "exact":
            graph = HNSWBackend.load(directory, meta["index"], meta["n_items"], meta["dim"])
        return cls(
            **arrays,
            approximate=graph,
            title_type_vocab=list(meta["title_type_vocab"]),
            genre_vocab=list(meta["genre_vocab"]),
        )

    # ------------------------------------------------------------------------------ lookup

    def __len__(self) -> int:
        return int(self.item_ids.size)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def _lookup(self, ids: np.ndarray) -> np.ndarray:
        """Row positions of `ids`, -1 where unknown."""
        if self._sorted_ids.size == 0:
            return np.full(ids.shape, -1, dtype=np.intp)
        at = np.minimum(np.searchsorted(self._sorted_ids, ids), self._sorted_ids.size - 1)
        found = self._sorted_ids[at] == ids
        return np.where(found, self._order[at], -1)

    def position(self, item_id: int) -> int:
        """Row of `item_id`; `KeyError` if the title is not in the index."""
        pos = int(self._lookup(np.asarray([item_id], dtype=np.int64))[0])
        if pos < 0:
            raise KeyError(f"item id {item_id} is not in the content index")
        return pos

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, int | np.integer):
            return False
        return bool(self._lookup(np.asarray([item_id], dtype=np.int64))[0] >= 0)

    # ----------------------------------------------------------------------------- filters

    def _code_set(self, names: frozenset[str], vocab: list[str], what: str) -> list[int]:
        unknown = sorted(names - set(vocab))
        if unknown:
            raise ValueError(f"unknown {what} {unknown}; allowed: {vocab}")
        return [vocab.index(name) for name in sorted(names)]

    def mask(self, filters: SimilarityFilters | None) -> np.ndarray | None:
        """Boolean row mask of titles passing `filters`, or None when nothing is filtered."""
        if filters is None or filters.is_empty:
            return None
        keep = np.ones(len(self), dtype=bool)
        if filters.title_types is not None:
            codes = self._code_set(filters.title_types, self.title_type_vocab, "title type(s)")
            keep &= np.isin(self.title_type, codes)
        if filters.min_year is not None or filters.max_year is not None:
            keep &= self.year != MISSING_YEAR
            if filters.min_year is not None:
                keep &= self.year >= filters.min_year
            if filters.max_year is not None:
                keep &= self.year <= filters.max_year
        if filters.min_votes is not None:
            keep &= self.votes >= filters.min_votes
        if filters.genres is not None:
            codes = self._code_set(filters.genres, self.genre_vocab, "genre(s)")
            wanted = np.uint64(sum(1 << code for code in codes))
            keep &= (self.genre_bits & wanted) != 0
        return keep

    # ----------------------------------------------------------------------------- queries

    def _ranked_rows(
        self, q: np.ndarray, k: int, filters: SimilarityFilters | None, excluded: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cosines) of the top k for unit vector `q`, best first, leaving out the
        `excluded` row(s) (an int or an array of rows)."""
        k = _check_k(k)
        keep = self.mask(filters)  # validates filter names even when q is zero
        if not q.any() or len(self) == 0:
            return _NO_ROWS, _NO_SCORES
        if self.approximate is not None:
            found = filtered_search(self.approximate, self.vectors, q, k, keep, excluded)
            if found is not None:  # else too few candidates passed: search exactly
                return found[1], found[0]
        scores = self.vectors @ q
        scores[excluded] = -np.inf
        # Rank only the rows passing the filters (ascending, so ties still go by position):
        # smaller, and argpartition degrades on arrays that are mostly one repeated -inf.
        rows = None if keep is None else np.flatnonzero(keep)
        if rows is not None:
            scores = scores[rows]
        if scores.size == 0:
            return _NO_ROWS, _NO_SCORES
        best = top_k(scores, k)
        best = best[scores[best] > -np.inf]
        return (best if rows is None else rows[best]), scores[best]

    def _ranked(
        self, q: np.ndarray, k: int, filters: SimilarityFilters | None, excluded: np.ndarray
    ) -> list[tuple[int, float]]:
        """Top-k (item id, cosine) for unit vector `q`, leaving out `excluded` rows."""
        rows, scores = self._ranked_rows(q, k, filters, excluded)
        return list(zip(self.item_ids[rows].tolist(), scores.tolist(), strict=True))

    def similar(
        self, item_id: int, k: int, filters: SimilarityFilters | None = None
    ) -> list[tuple[int, float]]:
        """Up to k (item id, cosine) neighbours of a catalogue title, best first, never itself."""
        pos = self.position(item_id)
        return self._ranked(self.vectors[pos], k, filters, np.asarray([pos], dtype=np.intp))

    def similar_rows(
        self, row: int, k: int, filters: SimilarityFilters | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """`similar` by row position (the serving fast path): (rows, cosines) arrays, best
        first, never `row` itself, with no id lookups either way."""
        if not 0 <= row < len(self):
            raise IndexError(f"row {row} is outside the content index (0..{len(self) - 1})")
        return self._ranked_rows(self.vectors[row], k, filters, row)

    def query(
        self,
        vector: Any,
        k: int,
        filters: SimilarityFilters | None = None,
        exclude: Iterable[int] | None = None,
    ) -> list[tuple[int, float]]:
        """Up to k (item id, cosine) titles nearest an arbitrary vector (normalised here).

        `exclude` item ids are left out; ids not in the index are ignored.
        """
        q = np.asarray(vector, dtype=np.float64)
        if q.shape != (self.dim,):
            raise ValueError(f"query vector must have shape ({self.dim},), got {q.shape}")
        if not np.isfinite(q).all():
            raise ValueError("query vector contains NaN/inf")
        norm = np.linalg.norm(q)
        q = (q / norm if norm > 0 else q).astype(np.float32)
        ids = np.fromiter(() if exclude is None else exclude, dtype=np.int64)
        rows = self._lookup(ids)
        return self._ranked(q, k, filters, rows[rows >= 0])
