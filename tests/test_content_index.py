"""Exact cosine top-k (`recommender_lib.index.content_index`): ranking, ties, filters, io and
validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recommender_lib.index.content_index import ContentIndex, SimilarityFilters, _top_k_exact, top_k

TYPES = ["movie", "tvSeries", "short"]
GENRES = ["Action", "Comedy", "Drama", "Horror"]


def reference(scores: np.ndarray, k: int) -> np.ndarray:
    """Brute force: the first k of a stable full sort, best first."""
    return np.argsort(-scores, kind="stable")[:k]


def make_metadata(ids: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """Random metadata with missing values in every nullable column."""
    rng = np.random.default_rng(seed)
    n = ids.size
    years = rng.integers(1950, 2025, n).astype(object)
    years[rng.random(n) < 0.2] = None
    votes = rng.integers(0, 1000, n).astype(object)
    votes[rng.random(n) < 0.2] = None
    types = rng.choice(TYPES, n).astype(object)
    types[rng.random(n) < 0.1] = None
    genres = [
        None if r < 0.1 else sorted(rng.choice(GENRES, rng.integers(0, 3), replace=False))
        for r in rng.random(n)
    ]
    return pd.DataFrame(
        {"item_id": ids, "title_type": types, "year": years, "num_votes": votes, "genres": genres}
    )


def make_index(n: int = 60, d: int = 6, seed: int = 0) -> ContentIndex:
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(-n // 2, n - n // 2 + 1))
    ids = ids[ids != 0][:n]
    return ContentIndex.build(ids, rng.normal(size=(n, d)), make_metadata(ids, seed))


def brute_force(
    index: ContentIndex, q: np.ndarray, k: int, keep: np.ndarray, skip: set[int]
) -> list[tuple[int, float]]:
    scores = index.vectors @ q.astype(np.float32)
    rows = [int(i) for i in np.argsort(-scores, kind="stable") if keep[i] and i not in skip]
    return [(int(index.item_ids[i]), float(scores[i])) for i in rows[:k]]


# --------------------------------------------------------------------------------------- top_k


@pytest.mark.parametrize("seed", range(5))
def test_top_k_equals_stable_sort_on_random_scores(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=200).astype(np.float32)
    for k in (1, 2, 10, 199, 200, 500):
        np.testing.assert_array_equal(top_k(scores, k), reference(scores, k))


@pytest.mark.parametrize("seed", range(5))
def test_top_k_ties_on_the_boundary(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=300).astype(np.float32)  # hundreds of ties per value
    scores[rng.random(300) < 0.1] = -np.inf
    for k in range(1, 301, 7):
        np.testing.assert_array_equal(top_k(scores, k), reference(scores, k))


@pytest.mark.parametrize("k", [1, 3, 10, 40])
def test_top_k_sampled_threshold_on_adversarial_orders(k: int) -> None:
    """Long arrays take the strided-sample threshold path; it must stay exact in any order."""
    rng = np.random.default_rng(k)
    n = 4000
    base = rng.normal(size=n).astype(np.float32)
    stride = int(np.sqrt(n // k))
    low_on_sample = base.copy()
    low_on_sample[::stride] -= 10.0  # the sample sees only low scores
    high_on_sample = base.copy()
    high_on_sample[::stride] += 10.0  # the sample holds all the best scores
    ties = rng.integers(0, 3, size=n).astype(np.float32)
    mostly_inf = np.where(rng.random(n) < 0.97, -np.inf, base).astype(np.float32)
    almost_all_inf = np.full(n, -np.inf, dtype=np.float32)
    almost_all_inf[rng.choice(n, size=k // 2 + 1, replace=False)] = base[: k // 2 + 1]
    top_tied = np.where(rng.random(n) < 0.6, np.float32(1.0), base).astype(np.float32)
    zeros = np.zeros(n, dtype=np.float32)
    cases = [base, np.sort(base), np.sort(base)[::-1], low_on_sample, high_on_sample, ties]
    for scores in [*cases, mostly_inf, almost_all_inf, top_tied, zeros]:
        np.testing.assert_array_equal(top_k(scores, k), reference(scores, k))
        np.testing.assert_array_equal(_top_k_exact(scores, k), reference(scores, k))


def test_top_k_rejects_bad_k() -> None:
    with pytest.raises(ValueError, match="k must be >= 1"):
        top_k(np.zeros(3), 0)
    with pytest.raises(TypeError):
        top_k(np.zeros(3), 1.5)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ ranking


@pytest.mark.parametrize("seed", range(3))
def test_similar_matches_brute_force(seed: int) -> None:
    index = make_index(seed=seed)
    keep = np.ones(len(index), dtype=bool)
    for pos in (0, 17, len(index) - 1):
        item = int(index.item_ids[pos])
        for k in (1, 5, len(index) - 1, len(index) + 10):
            got = index.similar(item, k)
            assert got == brute_force(index, index.vectors[pos], k, keep, {pos})
            assert item not in {i for i, _ in got}
        assert len(index.similar(item, 1000)) == len(index) - 1


def test_heavy_ties_are_deterministic_and_stable() -> None:
    rng = np.random.default_rng(3)
    distinct = rng.normal(size=(4, 5))
    vectors = distinct[rng.integers(0, 4, size=80)]
    ids = np.arange(1, 81)
    index = ContentIndex.build(ids, vectors, make_metadata(ids))
    keep = np.ones(80, dtype=bool)
    for k in (1, 3, 10, 25, 79):
        got = index.similar(7, k)
        assert got == index.similar(7, k)
        assert got == brute_force(index, index.vectors[6], k, keep, {6})
    unit = distinct[0] / np.linalg.norm(distinct[0])
    assert index.query(distinct[0], 10) == brute_force(index, unit, 10, keep, set())


def test_duplicates_tie_at_one_but_query_never_returned() -> None:
    ids = np.array([10, 20, 30, 40])
    vectors = np.array([[1.0, 2.0], [1.0, 2.0], [2.0, 4.0], [-1.0, 0.5]])
    index = ContentIndex.build(ids, vectors, make_metadata(ids))
    got = index.similar(20, 3)
    assert [i for i, _ in got] == [10, 30, 40]
    assert got[0][1] == pytest.approx(1.0) and got[1][1] == pytest.approx(1.0)
    assert [i for i, _ in index.similar(10, 1)] == [20]
    assert [i for i, _ in index.similar(30, 2)] == [10, 20]


def test_query_normalises_and_excludes() -> None:
    index = make_index(seed=4)
    q = np.random.default_rng(9).normal(size=index.dim) * 37.0
    unit = q / np.linalg.norm(q)
    keep = np.ones(len(index), dtype=bool)
    got = index.query(q, 8)
    assert got == brute_force(index, unit, 8, keep, set())
    assert all(-1.0001 <= s <= 1.0001 for _, s in got)
    drop = [got[0][0], got[3][0], 10**9]  # unknown ids are ignored
    skip = {index.position(drop[0]), index.position(drop[1])}
    assert index.query(q, 8, exclude=drop) == brute_force(index, unit, 8, keep, skip)
    with pytest.raises(ValueError, match="shape"):
        index.query(np.ones(index.dim + 1), 3)
    with pytest.raises(ValueError, match="NaN"):
        index.query(np.full(index.dim, np.nan), 3)
    with pytest.raises(ValueError, match="k must be"):
        index.query(q, 0)


def test_zero_vectors_never_score_above_zero() -> None:
    ids = np.array([1, 2, 3, 4])
    vectors = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    index = ContentIndex.build(ids, vectors, make_metadata(ids))
    assert not index.vectors[[0, 3]].any()
    assert np.allclose(np.linalg.norm(index.vectors[[1, 2]], axis=1), 1.0)
    assert index.similar(1, 3) == []  # no content, no neighbours
    scores = dict(index.similar(2, 3))
    assert scores[1] == 0.0 and scores[4] == 0.0
    assert index.query(np.zeros(3), 3) == []


# ------------------------------------------------------------------------------------ filters


def filtered_similar(index: ContentIndex, filters: SimilarityFilters) -> list[int]:
    keep = index.mask(filters)
    assert keep is not None
    pos = 0
    got = index.similar(int(index.item_ids[pos]), len(index), filters)
    assert got == brute_force(index, index.vectors[pos], len(index), keep, {pos})
    return [index.position(i) for i, _ in got]


def test_each_filter_is_honoured() -> None:
    index = make_index(n=120, seed=5)
    meta = make_metadata(index.item_ids, 5)  # the rows make_index used, in index order
    year = pd.to_numeric(meta["year"]).to_numpy()
    votes = pd.to_numeric(meta["num_votes"]).fillna(0).to_numpy()
    types, genres = meta["title_type"].to_numpy(), meta["genres"].to_numpy()

    rows = filtered_similar(index, SimilarityFilters(title_types=frozenset({"movie", "short"})))
    assert rows and all(types[r] in {"movie", "short"} for r in rows)
    assert len(rows) == sum(t in {"movie", "short"} for t in types[1:])

    rows = filtered_similar(index, SimilarityFilters(min_year=1980, max_year=2000))
    assert rows and all(1980 <= year[r] <= 2000 for r in rows)  # NaN (missing) fails
    assert len(rows) == int(((year[1:] >= 1980) & (year[1:] <= 2000)).sum())
    rows = filtered_similar(index, SimilarityFilters(min_year=1000))
    assert len(rows) == int((~np.isnan(year[1:])).sum())  # missing years fail a year filter

    rows = filtered_similar(index, SimilarityFilters(min_votes=500))
    assert rows and all(votes[r] >= 500 for r in rows)
    assert len(rows) == int((votes[1:] >= 500).sum())
    assert len(filtered_similar(index, SimilarityFilters(min_votes=0))) == len(index) - 1

    wanted = {"Action", "Horror"}
    rows = filtered_similar(index, SimilarityFilters(genres=frozenset(wanted)))
    has = [g is not None and bool(wanted & set(g)) for g in genres]
    assert rows and all(has[r] for r in rows) and len(rows) == sum(has[1:])

    combo = SimilarityFilters(
        title_types=frozenset({"movie"}), max_year=2010, min_votes=100, genres=frozenset({"Drama"})
    )
    rows = filtered_similar(index, combo)
    expect = [
        r
        for r in range(1, len(index))
        if types[r] == "movie"
        and year[r] <= 2010
        and votes[r] >= 100
        and genres[r] is not None
        and "Drama" in genres[r]
    ]
    assert sorted(rows) == expect


def test_no_filter_and_empty_results() -> None:
    index = make_index(seed=6)
    assert index.mask(None) is None and index.mask(SimilarityFilters()) is None
    assert index.similar(int(index.item_ids[0]), 5, SimilarityFilters(min_year=3000)) == []
    assert index.query(np.ones(index.dim), 5, SimilarityFilters(min_votes=10**9)) == []


def test_bad_filters_raise_value_error() -> None:
    index = make_index(seed=7)
    with pytest.raises(ValueError, match=r"unknown genre.*'Noir'.*allowed.*Action"):
        index.mask(SimilarityFilters(genres=frozenset({"Noir", "Drama"})))
    with pytest.raises(ValueError, match=r"unknown title type.*'film'.*allowed.*movie"):
        index.similar(int(index.item_ids[0]), 3, SimilarityFilters(title_types=frozenset({"film"})))
    with pytest.raises(ValueError, match="min_year 2001 is after max_year 2000"):
        SimilarityFilters(min_year=2001, max_year=2000)
    with pytest.raises(ValueError, match="not the string"):
        SimilarityFilters(genres="Drama")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must not be empty"):
        SimilarityFilters(title_types=frozenset())
    with pytest.raises(ValueError, match="min_votes"):
        SimilarityFilters(min_votes=-1)


def test_given_vocabulary_accepts_unused_names() -> None:
    ids = np.array([1, 2])
    index = ContentIndex.build(
        ids, np.eye(2), make_metadata(ids), genre_vocab=[*GENRES, "Western"],
        title_type_vocab=[*TYPES, "tvMovie"],
    )  # fmt: skip
    both = SimilarityFilters(genres=frozenset({"Western"}), title_types=frozenset({"tvMovie"}))
    assert not index.mask(both).any()
    with pytest.raises(ValueError, match="not in the given vocabulary"):
        ContentIndex.build(ids, np.eye(2), make_metadata(ids), genre_vocab=["Action"])


# --------------------------------------------------------------------------------- lookup, io


def test_unknown_id_raises_key_error() -> None:
    index = make_index(seed=8)
    missing = int(index.item_ids.max()) + 1
    with pytest.raises(KeyError, match=f"item id {missing} is not in the content index"):
        index.similar(missing, 3)
    assert missing not in index and int(index.item_ids[3]) in index
    assert index.position(int(index.item_ids[3])) == 3


def test_save_load_round_trip(tmp_path: Path) -> None:
    index = make_index(seed=9)
    paths = index.save(tmp_path / "content")
    assert {p.name for p in paths.values()} == {p.name for p in (tmp_path / "content").iterdir()}
    loaded = ContentIndex.load(tmp_path / "content")
    for name in ("item_ids", "vectors", "title_type", "year", "votes", "genre_bits"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(index, name))
        assert getattr(loaded, name).dtype == getattr(index, name).dtype
    assert loaded.genre_vocab == index.genre_vocab == GENRES
    assert loaded.title_type_vocab == index.title_type_vocab == sorted(TYPES)
    filters = SimilarityFilters(genres=frozenset({"Drama"}), min_year=1970)
    item = int(index.item_ids[5])
    assert loaded.similar(item, 7, filters) == index.similar(item, 7, filters)


# ------------------------------------------------------------------------------- validation


def test_build_validation_errors() -> None:
    ids = np.array([1, 2, 3])
    meta = make_metadata(ids)
    good = np.eye(3)
    with pytest.raises(ValueError, match=r"duplicate item id.*\[2\]"):
        ContentIndex.build(np.array([1, 2, 2]), good, meta)
    with pytest.raises(ValueError, match="duplicate item_id"):
        ContentIndex.build(ids, good, pd.concat([meta, meta.iloc[[0]]]))
    with pytest.raises(ValueError, match=r"no metadata for 1 item id.*\[3\]"):
        ContentIndex.build(ids, good, meta.iloc[:2])
    with pytest.raises(ValueError, match="NaN/inf"):
        ContentIndex.build(ids, np.array([[1.0, 0.0], [np.inf, 1.0], [0.0, 1.0]]), meta)
    with pytest.raises(ValueError, match="NaN/inf"):
        ContentIndex.build(ids, np.array([[1.0, 0.0], [np.nan, 1.0], [0.0, 1.0]]), meta)
    with pytest.raises(ValueError, match="shape"):
        ContentIndex.build(ids, np.eye(4), meta)
    with pytest.raises(ValueError, match="shape"):
        ContentIndex.build(ids, np.ones(3), meta)
    with pytest.raises(ValueError, match="lacks column"):
        ContentIndex.build(ids, good, meta.drop(columns="genres"))
    with pytest.raises(ValueError, match="integers"):
        ContentIndex.build(np.array([1.0, 2.0, 3.0]), good, meta)
    with pytest.raises(ValueError, match="num_votes"):
        ContentIndex.build(ids, good, meta.assign(num_votes=[1, -5, 2]))
    with pytest.raises(ValueError, match="year"):
        ContentIndex.build(ids, good, meta.assign(year=[1990.5, None, 2000]))
    too_many = meta.assign(genres=[[f"g{i}" for i in range(65)], None, []])
    with pytest.raises(ValueError, match="at most 64"):
        ContentIndex.build(ids, good, too_many)


def test_sixty_four_genres_fit_the_bitmask() -> None:
    ids = np.array([1, 2, 3])
    names = [f"g{i:02d}" for i in range(64)]
    meta = make_metadata(ids).assign(genres=[names[:1], names[63:], names])
    index = ContentIndex.build(ids, np.eye(3), meta)
    top = SimilarityFilters(genres=frozenset({"g63"}))
    np.testing.assert_array_equal(index.mask(top), [False, True, True])
    assert index.genre_bits[2] == np.iinfo(np.uint64).max
