"""IMDb side of the sample mirror: title.basics and title.ratings, written chunk by chunk."""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recommender_lib.atomic import atomic_path
from recommender_lib.sources import formats
from recommender_lib.sources.sample_data.akas import akas_counts, akas_text
from recommender_lib.sources.sample_data.common import (
    ID_KNOTS,
    ID_YEARS,
    IG,
    TYPE_CODE,
    TYPES,
    genre_logw,
    genre_masks,
    mask_strings,
    pick_types,
    rng_for,
)
from recommender_lib.sources.sample_data.movies import Catalog
from recommender_lib.sources.sample_data.profiles import SampleProfile
from recommender_lib.sources.sample_data.titles import (
    FORCED_TITLES,
    english_titles,
    episode_titles,
    foreign_titles,
)

_GZIP_LEVEL = 6
# The dumps the mirror carries, in the order `_imdb_chunks` yields their text.
IMDB_SAMPLE_FILES = (formats.IMDB_BASICS_FILE, formats.IMDB_RATINGS_FILE, formats.IMDB_AKAS_FILE)
_NULL = formats.IMDB_NULL
_TYPE_SHARE = {  # filler rows, roughly the real dump
    "tvEpisode": 0.735, "short": 0.09, "movie": 0.062, "video": 0.026, "tvSeries": 0.026,
    "tvMovie": 0.014, "tvMiniSeries": 0.006, "tvSpecial": 0.0045, "videoGame": 0.0035,
    "tvShort": 0.001, "tvPilot": 0.00001,
}  # fmt: skip
_RATED_WEIGHT = {  # how much likelier a type has a title.ratings row
    "movie": 3.0, "tvSeries": 3.0, "tvMiniSeries": 3.0, "tvMovie": 2.5, "video": 1.5,
    "videoGame": 2.0, "tvSpecial": 1.5, "short": 1.0, "tvShort": 0.8, "tvEpisode": 0.5,
    "tvPilot": 1.0,
}  # fmt: skip
# runtime per type: median minutes, log-sd, min, max, share of \N
_RUNTIME = {
    "movie": (95, 0.22, 45, 400, 0.25), "short": (9, 0.7, 1, 45, 0.3),
    "tvSeries": (40, 0.35, 5, 120, 0.45), "tvEpisode": (30, 0.4, 1, 180, 0.65),
    "tvMovie": (88, 0.18, 45, 240, 0.3), "tvMiniSeries": (52, 0.3, 10, 600, 0.4),
    "tvSpecial": (60, 0.4, 5, 240, 0.4), "tvShort": (8, 0.6, 1, 40, 0.4),
    "video": (70, 0.5, 3, 300, 0.4), "videoGame": (20, 0.5, 1, 100, 0.97),
    "tvPilot": (45, 0.3, 15, 120, 0.5),
}  # fmt: skip

_TENTHS_STR = np.array([f"{t / 10:.1f}" for t in range(101)], dtype=object)


@dataclass
class _Rows:
    """Column arrays of one basics chunk (0 = \\N for years, -1 for runtime)."""

    type_code: np.ndarray
    adult: np.ndarray
    year: np.ndarray
    end_year: np.ndarray
    runtime: np.ndarray
    gmask: np.ndarray
    primary: np.ndarray
    original: np.ndarray


def _filler_rows(rng: np.random.Generator, ids: np.ndarray) -> _Rows:
    """Random basics rows with realistic type mix, years, runtimes, genres and titles."""
    m = len(ids)
    tc = pick_types(rng, _TYPE_SHARE, m)
    adult = (rng.random(m) < np.where(tc == TYPE_CODE["tvEpisode"], 0.004, 0.025)).astype(np.int8)
    added = np.interp(ids, ID_KNOTS, ID_YEARS) + rng.random(m)
    backfill = np.where(rng.random(m) < 0.4, rng.exponential(15, m), 0)
    year = np.clip(added - backfill, 1874, 2029).astype(np.int16)
    tv = np.isin(tc, [TYPE_CODE[t] for t in TYPES if t.startswith("tv")])
    year[tv] = np.maximum(year[tv], 1947)
    year[tc == TYPE_CODE["videoGame"]] = np.maximum(year[tc == TYPE_CODE["videoGame"]], 1975)
    year[rng.random(m) < np.where(tc == TYPE_CODE["tvEpisode"], 0.15, 0.05)] = 0
    end = np.zeros(m, dtype=np.int16)
    runs = (
        np.isin(tc, [TYPE_CODE["tvSeries"], TYPE_CODE["tvMiniSeries"]])
        & (year > 0)
        & (rng.random(m) < 0.6)
    )
    span = np.where(
        tc == TYPE_CODE["tvMiniSeries"], rng.integers(0, 2, m), rng.geometric(0.3, m) - 1
    )
    end[runs] = np.minimum(year[runs] + span[runs], np.maximum(year[runs], 2025))
    rt = np.array([_RUNTIME[t] for t in TYPES])[tc]
    runtime = np.clip(
        np.round(rt[:, 0] * np.exp(rt[:, 1] * rng.standard_normal(m))), rt[:, 2], rt[:, 3]
    )
    runtime = np.where(rng.random(m) < rt[:, 4], -1, runtime).astype(np.int32)
    gmask = genre_masks(rng, genre_logw(tc), (0.45, 0.3, 0.25), 0.08)
    adult_rows = gmask[adult == 1]
    three = np.array([bin(x).count("1") == 3 for x in adult_rows.tolist()], dtype=bool)
    adult_rows[three] &= adult_rows[three] - 1  # keep at most two genres besides Adult
    gmask[adult == 1] = adult_rows | 1 << IG.index("Adult")
    episode = tc == TYPE_CODE["tvEpisode"]
    primary = np.empty(m, dtype=object)
    primary[episode] = episode_titles(rng, int(episode.sum()))
    primary[~episode] = english_titles(rng, int((~episode).sum()))
    original = primary.copy()
    foreign = ~episode & (rng.random(m) < 0.08)
    original[foreign] = foreign_titles(rng, int(foreign.sum()))
    return _Rows(tc, adult, year, end, runtime, gmask, primary, original)


def _force_quirks(rng: np.random.Generator, rows: _Rows, free: np.ndarray) -> None:
    """Guarantee every title type and the rare title shapes appear (first chunk only)."""
    slots = rng.permutation(free)
    for t, i in enumerate(slots[: len(TYPES)].tolist()):
        rows.type_code[i] = t
        rows.end_year[i] = 0
        if TYPES[t] in ("tvSeries", "tvMiniSeries") and rows.year[i] > 0:
            rows.end_year[i] = int(rows.year[i]) + 3
    rest = slots[len(TYPES) :]
    for title, i in zip(FORCED_TITLES, rest.tolist(), strict=False):
        rows.primary[i] = rows.original[i] = title


def _overlay_linked(rows: _Rows, local: np.ndarray, cat: Catalog, items: np.ndarray) -> None:
    """Write the MovieLens-linked titles over their rows."""
    rows.type_code[local] = cat.type_code[items]
    rows.adult[local] = 0
    rows.year[local] = cat.year[items]
    rows.end_year[local] = 0
    rows.runtime[local] = cat.runtime[items]
    rows.gmask[local] = cat.imdb_mask[items]
    rows.primary[local] = [cat.primary[i] for i in items.tolist()]
    rows.original[local] = [cat.original[i] for i in items.tolist()]


def _int_strings(values: np.ndarray, null: int) -> list[str]:
    """Integers as text, `\\N` where `values == null`."""
    return [_NULL if v == null else str(v) for v in values.tolist()]


def _basics_text(ids: np.ndarray, rows: _Rows) -> str:
    """Tab-separated basics lines (no quoting) for one chunk."""
    cols = [
        [formats.tconst_from_imdb_id(x) for x in ids.tolist()],
        np.array(TYPES, dtype=object)[rows.type_code].tolist(),
        rows.primary.tolist(),
        rows.original.tolist(),
        np.array(["0", "1"], dtype=object)[rows.adult].tolist(),
        _int_strings(rows.year, 0),
        _int_strings(rows.end_year, 0),
        _int_strings(rows.runtime, -1),
        mask_strings(rows.gmask, IG, ",", _NULL).tolist(),
    ]
    return "".join("\t".join(r) + "\n" for r in zip(*cols, strict=True))


def _ratings_text(ids: np.ndarray, tenths: np.ndarray, votes: np.ndarray) -> str:
    """Tab-separated title.ratings lines for one chunk."""
    avg = _TENTHS_STR[tenths].tolist()
    return "".join(
        f"{formats.tconst_from_imdb_id(t)}\t{a}\t{v}\n"
        for t, a, v in zip(ids.tolist(), avg, votes.tolist(), strict=True)
    )


def _filler_rated_share(p: SampleProfile, n_linked_rated: int) -> float:
    """Share of non-linked rows to rate so that the total matches `imdb_rated_share`."""
    n_filler = p.n_imdb_titles - (p.n_movies - max(1, round(p.n_movies * p.missing_link_share)))
    target = p.imdb_rated_share * p.n_imdb_titles - n_linked_rated
    return float(np.clip(target / max(n_filler, 1), 0.0, 1.0))


def _akas_chunk(
    rng: np.random.Generator,
    p: SampleProfile,
    ids: np.ndarray,
    rows: _Rows,
    votes: np.ndarray,
    linked_pop: np.ndarray,
) -> str:
    """title.akas lines of one basics chunk (`votes` 0 for unrated titles)."""
    counts = akas_counts(rng, rows.type_code, votes, linked_pop, p.akas_per_title)
    tconsts = [formats.tconst_from_imdb_id(x) for x in ids.tolist()]
    return akas_text(rng, tconsts, rows.primary, rows.original, counts)


def _imdb_chunks(
    seed: int, p: SampleProfile, ids: np.ndarray, cat: Catalog, *, akas: bool = True
) -> Iterator[tuple[str, str, str]]:
    """(basics, ratings, akas text) per chunk of `chunk_rows` basics rows, in tconst order;
    the akas text is empty without `akas` (it has its own random stream)."""
    inside = np.flatnonzero(cat.basics_pos >= 0)
    inside = inside[np.argsort(cat.basics_pos[inside])]
    linked_pos = cat.basics_pos[inside]
    share = _filler_rated_share(p, int(cat.imdb_rated.sum()))
    w = np.array([_RATED_WEIGHT[t] for t in TYPES])
    w_mean = sum(_TYPE_SHARE[t] * _RATED_WEIGHT[t] for t in TYPES) / sum(_TYPE_SHARE.values())
    for c, a in enumerate(range(0, len(ids), p.chunk_rows)):
        b = min(a + p.chunk_rows, len(ids))
        rng = rng_for(seed, 3, c)
        rows = _filler_rows(rng, ids[a:b])
        lo, hi = np.searchsorted(linked_pos, [a, b])
        local, items = linked_pos[lo:hi] - a, inside[lo:hi]
        if c == 0:
            _force_quirks(rng, rows, np.setdiff1d(np.arange(b - a), local))
        _overlay_linked(rows, local, cat, items)
        rated = rng.random(b - a) < np.minimum(1.0, share * w[rows.type_code] / w_mean)
        episode = rows.type_code == TYPE_CODE["tvEpisode"]
        tenths = np.clip(np.round(rng.normal(66 + 7 * episode, 12)), 10, 100).astype(np.int64)
        mu = 2.7 + 1.0 * (rows.type_code == TYPE_CODE["movie"])
        votes = 5 + np.floor(np.exp(rng.normal(mu, 1.5))).astype(np.int64)
        rated[local] = cat.imdb_rated[items]
        tenths[local] = cat.imdb_tenths[items]
        votes[local] = cat.imdb_votes[items]
        r = np.flatnonzero(rated)
        akas_rows = ""
        if akas:
            linked_pop = np.full(b - a, -1.0)
            linked_pop[local] = cat.pop_pct[items]
            akas_rng = rng_for(seed, 7, c)
            akas_rows = _akas_chunk(akas_rng, p, ids[a:b], rows, votes * rated, linked_pop)
        basics = _basics_text(ids[a:b], rows)
        yield basics, _ratings_text(ids[a:b][r], tenths[r], votes[r]), akas_rows


@contextlib.contextmanager
def _gzip_writer(target: Path) -> Iterator[gzip.GzipFile]:
    """Atomically written gzip file with a reproducible header (no name, mtime 0)."""
    with (
        atomic_path(target) as tmp,
        open(tmp, "wb") as raw,
        gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, compresslevel=_GZIP_LEVEL, mtime=0
        ) as gz,
    ):
        yield gz


def write_imdb(
    imdb_dir: Path,
    seed: int,
    p: SampleProfile,
    ids: np.ndarray,
    cat: Catalog,
    files: Sequence[str] = IMDB_SAMPLE_FILES,
) -> None:
    """Write the IMDb dumps named in `files` (default all three) chunk by chunk."""
    unknown = sorted(set(files) - set(IMDB_SAMPLE_FILES))
    if unknown:
        raise ValueError(f"unknown IMDb files {unknown}; choose from {list(IMDB_SAMPLE_FILES)}")
    with contextlib.ExitStack() as stack:
        out = {
            name: stack.enter_context(_gzip_writer(imdb_dir / name))
            for name in IMDB_SAMPLE_FILES
            if name in files
        }
        for name, gz in out.items():
            gz.write(("\t".join(formats.IMDB_HEADERS[name]) + "\n").encode())
        akas = formats.IMDB_AKAS_FILE in out
        for chunk in _imdb_chunks(seed, p, ids, cat, akas=akas):
            for name, text in zip(IMDB_SAMPLE_FILES, chunk, strict=True):
                if name in out:
                    out[name].write(text.encode("utf-8"))
