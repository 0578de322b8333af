"""Typo-tolerant movie title search for the serving API.

`TitleSearchIndex.build(item_ids, titles, years, popularity)` precomputes everything once;
`search(query, limit)` then returns up to `limit` `SearchHit`s in three tiers:

1. **exact**: the normalized query equals a title's key, with or without its leading article
   (`matrix` finds "The Matrix").
2. **prefix**: a key starts with the query (`toy st` -> "Toy Story 2"), then, below those,
   word-prefix matches where every query word starts a title word, in order
   (`wars hope` -> "Star Wars: Episode IV - A New Hope", `godfather 2` -> "The Godfather:
   Part II").
3. **fuzzy** (only when the tiers above did not fill `limit`): `fuzzy_score` (rapidfuzz ratio,
   token-sort ratio, and partial ratio where the query is shorter than the title) at or above
   `FUZZY_CUTOFF`, so typos (`matrx`, `godfater`) still find the film and garbage finds nothing.
   It scores only a few hundred candidates from a character-bigram index (those most like the
   query, and those that most contain it), which keeps a query at a few milliseconds on 80 k
   titles; the fuzzy tier is skipped for queries under `FUZZY_MIN_QUERY_CHARS` characters.

Within the exact and prefix tiers hits are ordered by popularity (desc), then shorter title,
then item_id; fuzzy hits by similarity plus a small popularity prior (at most
`FUZZY_POPULARITY_BONUS` points), then the same tie-break. A trailing year (`hamlet 1996`,
`hamlet (1996)`) puts that year's matches for the rest of the query first.

Keys: `normalize_title` (casefold, accents stripped, `&` -> `and`, apostrophes dropped,
other punctuation -> space), then stand-alone Roman numerals II-IX (not V) read as digits, so
`rocky 2` and `rocky ii` both equal "Rocky II". Besides the whole title, a title is found by
its parts outside and inside parentheses, as MovieLens writes alternate titles ("Seven (a.k.a.
Se7en)", "Amelie (Fabuleux destin d'Amélie Poulain, Le)"), each with and without its article,
and by its localized titles (IMDb akas, `alternates`) in every tier: "Le Fabuleux Destin
d'Amélie Poulain", "Die fabelhafte Welt der Amélie" and "Amélie" find the same film.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rapidfuzz import fuzz, process

from recommender_lib.index.title_keys import (
    ARTICLES,
    gc_paused,
    normalize_title,
    row_keys,
    search_key,
    strip_article,
    title_keys,
)

__all__ = [
    "ARTICLES",
    "MatchKind",
    "SearchHit",
    "TitleSearchIndex",
    "fuzzy_score",
    "normalize_title",
    "search_key",
    "strip_article",
    "title_keys",
]

MatchKind = Literal["exact", "prefix", "fuzzy"]

MAX_QUERY_CHARS = 200
MAX_LIMIT = 100
FUZZY_CUTOFF = 75.0  # fuzzy_score below this is not shown
FUZZY_START_WEIGHT = 0.95  # the query vs a longer title's beginning: at most 95
FUZZY_PARTIAL_WEIGHT = 0.9  # the query vs the best-matching part of a longer title: at most 90
FUZZY_POPULARITY_BONUS = 3.0  # the most popular title gains this many points in fuzzy ordering
FUZZY_MIN_QUERY_CHARS = 3  # shorter queries get exact/prefix hits only
FUZZY_CANDIDATES = 256  # bigram-overlap candidates scored with fuzzy_score (more for large limit)
FUZZY_MIN_SHARED = 1 / 3  # candidates share at least this fraction of the query's bigrams
FUZZY_LONG_SHARE = 0.25  # of which picked for containing the query rather than resembling it
FUZZY_EXTRA_BIGRAM_WEIGHT = 0.1  # how much a candidate's bigrams beyond the query's count

_YEAR = re.compile(r"^(.*\S)\s+(18[7-9]\d|19\d\d|20\d\d)$")
_TOP = "\U0010ffff"  # sorts after every character, for prefix range ends
_BIGRAM_CHUNK = 200_000  # keys per chunk of the bigram postings build


def fuzzy_score(query_key: str, keys: Sequence[str]) -> np.ndarray:
    """Similarity 0-100 of a query key to each key (both already `search_key`ed).

    The best of the Indel ratio, 0.95 x the token-sort ratio and, where the key is longer than
    the query, `FUZZY_START_WEIGHT` x the ratio to the key's first `len(query_key)` characters
    (a typo'd beginning, `star wras`) and `FUZZY_PARTIAL_WEIGHT` x the partial ratio (a typo'd
    part anywhere), so only an exact key scores 100 and a plain prefix 95. Unlike
    `fuzz.WRatio`, a short title never scores high just by occurring inside a long query.
    """
    if not keys:
        return np.zeros(0)

    def each(scorer: Any, choices: Sequence[str] = keys) -> np.ndarray:
        return process.cdist([query_key], choices, scorer=scorer, processor=None)[0]

    score = np.maximum(each(fuzz.ratio), 0.95 * each(fuzz.token_sort_ratio))
    n = len(query_key)
    longer = np.fromiter(map(len, keys), dtype=np.int64, count=len(keys)) > n
    if longer.any():
        start = FUZZY_START_WEIGHT * each(fuzz.ratio, [key[:n] for key in keys])
        part = FUZZY_PARTIAL_WEIGHT * each(fuzz.partial_ratio)
        score = np.where(longer, np.maximum(score, np.maximum(start, part)), score)
    return np.round(score.astype(np.float64), 1)


@dataclass(frozen=True)
class SearchHit:
    """One candidate title; `score` is its `fuzzy_score` (0-100) to the closest key."""

    item_id: int
    title: str
    year: int | None
    match: MatchKind
    score: float


def _as_year(value: object) -> int | None:
    if value is None:
        return None
    try:
        year = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return int(year) if math.isfinite(year) and year > 0 else None


def _sorted_codes(texts: list[str]) -> tuple[np.ndarray, list[str]]:
    """Each text's rank among the distinct texts, and the distinct texts in sorted order.

    Arrow sorts UTF-8 bytes, which is code point order, Python's string order.
    """
    encoded = pa.array(texts, type=pa.large_string()).dictionary_encode()
    order = pc.sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    codes = rank[encoded.indices.to_numpy(zero_copy_only=False)]
    return codes, encoded.dictionary.take(pa.array(order)).to_pylist()


def _distinct_bigrams(keys: list[str], first: int) -> tuple[np.ndarray, np.ndarray]:
    """(bigram code, owner) of the distinct bigrams of each key of ` key `, owner-major; owners
    count from `first`."""
    padded = [f" {k} " for k in keys]
    lengths = np.fromiter(map(len, padded), dtype=np.int64, count=len(keys))
    points = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    codes = (points[:-1] << 21) | points[1:]
    owners = np.repeat(np.arange(first, first + len(keys), dtype=np.int32), lengths)[:-1]
    inside = np.ones(len(codes), dtype=bool)
    inside[np.cumsum(lengths)[:-1] - 1] = False  # pairs that straddle two keys
    codes, owners = codes[inside], owners[inside]
    order = np.lexsort((codes, owners))
    codes, owners = codes[order], owners[order]
    fresh = np.ones(len(codes), dtype=bool)
    fresh[1:] = (codes[1:] != codes[:-1]) | (owners[1:] != owners[:-1])
    return codes[fresh], owners[fresh]


def _bigram_codes(key: str) -> np.ndarray:
    """Codes of the distinct character bigrams of ` key ` (two code points in one int64)."""
    points = np.frombuffer(f" {key} ".encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    return np.unique((points[:-1] << 21) | points[1:])


class TitleSearchIndex:
    """An immutable search index over a catalogue; build it with `TitleSearchIndex.build`."""

    def __init__(
        self,
        item_ids: np.ndarray,
        titles: list[str],
        years: list[int | None],
        popularity: np.ndarray,
        keys: list[list[str]],
        phrases: list[list[str]],
    ) -> None:
        """Index rows already in rank order (popularity desc, shorter title, item_id).

        `keys[row]`: the row's search keys (`title_keys` of its title, then of its alternate
        titles), non-empty; `phrases[row]`: the whole-title key of its title and of each
        alternate, whose words the word-prefix tier matches.
        """
        self._item_ids = item_ids
        self._titles = titles
        self._years = years
        peak = math.log1p(float(popularity.max())) if len(popularity) else 0.0
        self._prior = np.log1p(popularity) / peak if peak > 0 else np.zeros(len(popularity))
        self._tokens = [tuple(tuple(p.split()) for p in row) for row in phrases]

        # Every key of every row, rows' keys contiguous (`_choice_starts[row]` on).
        counts = np.fromiter(map(len, keys), dtype=np.int64, count=len(keys))
        choice_keys = list(chain.from_iterable(keys))
        self._choice_keys = choice_keys
        self._choice_rows = np.repeat(np.arange(len(keys), dtype=np.int64), counts)
        self._choice_starts = np.concatenate([[0], np.cumsum(counts)]).tolist()
        # Sorted keys (stable: equal keys in row order) for the exact and prefix tiers.
        order = np.argsort(_sorted_codes(choice_keys)[0], kind="stable")
        self._sorted_keys = [choice_keys[i] for i in order.tolist()]
        self._sorted_rows = self._choice_rows[order]

        # Word -> rows postings of the word-prefix tier: distinct (word, row) pairs, sorted.
        words = [tok for row in self._tokens for toks in row for tok in toks]
        per_row = np.fromiter(
            (sum(map(len, row)) for row in self._tokens), dtype=np.int64, count=len(keys)
        )
        codes, self._vocab = _sorted_codes(words)
        owners = np.repeat(np.arange(len(keys), dtype=np.int64), per_row)
        order = np.lexsort((owners, codes))
        codes, owners = codes[order], owners[order]
        fresh = np.ones(len(codes), dtype=bool)
        fresh[1:] = (codes[1:] != codes[:-1]) | (owners[1:] != owners[:-1])
        codes, self._word_rows = codes[fresh], owners[fresh]
        self._word_starts = np.searchsorted(codes, np.arange(len(self._vocab) + 1))

        self._build_bigrams(choice_keys)

    def _build_bigrams(self, keys: list[str]) -> None:
        """CSR postings bigram code -> choice indices, and each choice's distinct bigram count.

        Built in chunks of `_BIGRAM_CHUNK` keys (distinct pairs per chunk, then one stable sort
        by code), so the temporaries stay small beside millions of keys."""
        m = len(keys)
        parts = [
            _distinct_bigrams(keys[lo : lo + _BIGRAM_CHUNK], lo)
            for lo in range(0, m, _BIGRAM_CHUNK)
        ]
        codes = np.concatenate([c for c, _ in parts]) if parts else np.zeros(0, np.int64)
        owners = np.concatenate([o for _, o in parts]) if parts else np.zeros(0, np.int32)
        del parts
        order = np.argsort(codes, kind="stable")  # owners ascend within a code
        codes, owners = codes[order], owners[order]
        del order
        self._gram_codes, gram_starts = np.unique(codes, return_index=True)
        self._gram_starts = np.append(gram_starts, len(codes))
        self._gram_owners = owners
        self._gram_counts = np.bincount(owners, minlength=m).astype(np.float64)

    @classmethod
    def build(
        cls,
        item_ids: Sequence[int] | np.ndarray,
        titles: Sequence[str] | np.ndarray,
        years: Sequence[int | float | None] | np.ndarray,
        popularity: Sequence[float] | np.ndarray,
        alternates: Sequence[Sequence[str]] | None = None,
    ) -> TitleSearchIndex:
        """Index aligned arrays; titles without letters or digits are left out.

        `alternates[i]`: other titles of row i (localized titles) that find it too. Missing
        years (None, NaN, <= 0) become None and missing popularity (NaN) 0. Raises ValueError
        on unequal lengths, duplicate item ids or negative popularity.
        """
        alternates = alternates if alternates is not None else [()] * len(item_ids)
        lengths = {len(item_ids), len(titles), len(years), len(popularity), len(alternates)}
        if len(lengths) != 1:
            raise ValueError(
                "item_ids, titles, years, popularity and alternates must have the same "
                f"length, got {len(item_ids)}, {len(titles)}, {len(years)}, "
                f"{len(popularity)}, {len(alternates)}"
            )
        titles, years = list(titles), list(years)  # positional, also for pandas Series
        ids = np.asarray(item_ids, dtype=np.int64).reshape(-1)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("item_ids must be unique")
        pop = np.asarray(popularity, dtype=np.float64).reshape(-1)
        pop = np.where(np.isnan(pop), 0.0, pop)
        if (pop < 0).any() or not np.isfinite(pop).all():
            raise ValueError("popularity must be finite and non-negative")
        with gc_paused():  # millions of small lists: see `gc_paused`
            keys, phrases = row_keys(titles, alternates)
            keep = [i for i, found in enumerate(keys) if found]
            text = [str(titles[i]) for i in keep]
            title_len = np.fromiter(map(len, text), dtype=np.int64, count=len(keep))
            kept = np.asarray(keep, dtype=np.int64)
            rank = np.lexsort((ids[kept], title_len, -pop[kept]))
            return cls(
                ids[kept][rank],
                [text[i] for i in rank],
                [_as_year(years[keep[i]]) for i in rank],
                pop[kept][rank],
                [keys[keep[i]] for i in rank],
                [phrases[keep[i]] for i in rank],
            )

    def __len__(self) -> int:
        """Number of indexed titles."""
        return len(self._titles)

    def search(self, query: str, limit: int = 10) -> list[SearchHit]:
        """Up to `limit` hits for `query`, best first (exact, then prefix, then fuzzy)."""
        if not isinstance(query, str):
            raise TypeError("query must be a string")
        if len(query) > MAX_QUERY_CHARS:
            raise ValueError(f"query must be at most {MAX_QUERY_CHARS} characters")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}")
        key = search_key(query)
        if not key:
            raise ValueError("query must contain letters or digits")

        ranked = self._search(key, limit)
        dated = _YEAR.match(key)
        if dated:  # `hamlet 1996`: that year's matches for `hamlet` go first
            year = int(dated.group(2))
            undated = self._search(dated.group(1), min(MAX_LIMIT, 4 * limit))
            first = [hit for hit in undated if self._years[hit[0]] == year]
            ranked = first + ranked + undated
        hits: list[SearchHit] = []
        seen: set[int] = set()
        for row, kind, score in ranked:
            if row in seen:
                continue
            seen.add(row)
            hits.append(
                SearchHit(
                    item_id=int(self._item_ids[row]),
                    title=self._titles[row],
                    year=self._years[row],
                    match=kind,
                    score=score,
                )
            )
            if len(hits) == limit:
                break
        return hits

    def _search(self, key: str, limit: int) -> list[tuple[int, MatchKind, float]]:
        """(row, match, score) for one normalized key, best first, at most `limit`."""
        lo = bisect_left(self._sorted_keys, key)
        hi = bisect_right(self._sorted_keys, key, lo)
        exact = self._distinct(self._sorted_rows[lo:hi])[:limit].tolist()
        found: list[tuple[int, MatchKind, float]] = [(row, "exact", 100.0) for row in exact]
        seen = set(exact)
        prefix = self._prefix_rows(key, limit, seen)
        scores = self._similarity(key, prefix)
        found.extend((row, "prefix", score) for row, score in zip(prefix, scores, strict=True))
        if len(found) < limit and len(key) >= FUZZY_MIN_QUERY_CHARS:
            found.extend((row, "fuzzy", score) for row, score in self._fuzzy(key, limit, seen))
        return found[:limit]

    def _prefix_rows(self, key: str, limit: int, seen: set[int]) -> list[int]:
        """Rows whose key starts with `key`, then rows whose words start with its words."""
        out: list[int] = []
        lo = bisect_left(self._sorted_keys, key)
        hi = bisect_left(self._sorted_keys, key + _TOP, lo)
        for row in self._distinct(self._sorted_rows[lo:hi]).tolist():
            if row not in seen:
                seen.add(row)
                out.append(row)
                if len(seen) >= limit:
                    return out

        words = key.split()
        mask: np.ndarray | None = None
        for word in dict.fromkeys(words):
            lo = bisect_left(self._vocab, word)
            hi = bisect_left(self._vocab, word + _TOP, lo)
            rows = self._word_rows[self._word_starts[lo] : self._word_starts[hi]]
            if not len(rows):
                return out
            hit = np.zeros(len(self._titles), dtype=bool)
            hit[rows] = True
            mask = hit if mask is None else mask & hit
        if mask is None:
            return out
        for row in np.flatnonzero(mask).tolist():
            if row in seen or (len(words) > 1 and not self._words_in_order(words, row)):
                continue
            seen.add(row)
            out.append(row)
            if len(seen) >= limit:
                break
        return out

    def _distinct(self, rows: np.ndarray) -> np.ndarray:
        """Sorted distinct rows; a mask over all rows beats sorting a long slice."""
        if len(rows) < 4096:
            return np.unique(rows)
        mask = np.zeros(len(self._titles), dtype=bool)
        mask[rows] = True
        return np.flatnonzero(mask)

    def _words_in_order(self, words: list[str], row: int) -> bool:
        """Whether the words start words of one of the row's titles, in order."""
        for phrase in self._tokens[row]:
            tokens = iter(phrase)
            if all(any(tok.startswith(word) for tok in tokens) for word in words):
                return True
        return False

    def _fuzzy(self, key: str, limit: int, seen: set[int]) -> list[tuple[int, float]]:
        """Rows not in `seen` scoring >= FUZZY_CUTOFF, in fuzzy order, at most enough."""
        if not self._choice_keys:
            return []
        query = _bigram_codes(key)
        pos = np.searchsorted(self._gram_codes, query)
        known = pos < len(self._gram_codes)
        known[known] = self._gram_codes[pos[known]] == query[known]
        pos = pos[known]
        if not len(pos):
            return []
        owners = np.concatenate(
            [self._gram_owners[self._gram_starts[p] : self._gram_starts[p + 1]] for p in pos]
        )
        shared = np.bincount(owners, minlength=len(self._choice_keys))
        # Dice overlap finds whole-title typos; a Tversky index that barely counts the title's
        # extra bigrams finds the query inside a long title ("the tmeple of" -> Indiana Jones).
        n = max(FUZZY_CANDIDATES, 8 * limit)
        picked = np.flatnonzero(shared >= max(1.0, FUZZY_MIN_SHARED * len(query)))
        if len(picked) > n:
            common = shared[picked].astype(np.float64)
            extra = self._gram_counts[picked] - common
            dice = common / (len(query) + self._gram_counts[picked])
            contained = common / (len(query) + FUZZY_EXTRA_BIGRAM_WEIGHT * extra)
            n_long = int(n * FUZZY_LONG_SHARE)
            picked = np.union1d(
                picked[np.argpartition(-dice, n - n_long)[: n - n_long]],
                picked[np.argpartition(-contained, n_long)[:n_long]],
            )
        scores = fuzzy_score(key, [self._choice_keys[i] for i in picked])
        best: dict[int, float] = {}
        for i in np.flatnonzero(scores >= FUZZY_CUTOFF).tolist():
            row, score = int(self._choice_rows[picked[i]]), float(scores[i])
            if row not in seen and score > best.get(row, -1.0):
                best[row] = score
        ordered = sorted(
            best.items(),
            key=lambda item: (-(item[1] + FUZZY_POPULARITY_BONUS * self._prior[item[0]]), item[0]),
        )
        return ordered[: limit - len(seen)]

    def _similarity(self, key: str, rows: list[int]) -> list[float]:
        """Each row's best `fuzzy_score` over its keys."""
        if not rows:
            return []
        spans = [(self._choice_starts[row], self._choice_starts[row + 1]) for row in rows]
        scores = fuzzy_score(key, [self._choice_keys[i] for lo, hi in spans for i in range(lo, hi)])
        bounds = np.cumsum([0] + [hi - lo for lo, hi in spans[:-1]])
        return np.maximum.reduceat(scores, bounds).tolist()
