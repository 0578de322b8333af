"""Title search: normalization, tier order, tie-breaks, typo tolerance and validation."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from recommender_lib.index.title_search import (
    SearchHit,
    TitleSearchIndex,
    normalize_title,
    search_key,
    strip_article,
    title_keys,
)

# (title, year, popularity): famous titles, with remakes and look-alikes that compete for queries.
FAMOUS = [
    ("Toy Story", 1995, 215),
    ("Toy Story 2", 1999, 97),
    ("The Toy", 1982, 3),
    ("The Matrix", 1999, 278),
    ("The Matrix Reloaded", 2003, 85),
    ("The Animatrix", 2003, 12),
    ("Amélie", 2001, 120),
    ("Se7en", 1995, 204),
    ("Léon: The Professional", 1994, 133),
    ("Star Wars: Episode IV - A New Hope", 1977, 251),
    ("Star Wars: Episode V - The Empire Strikes Back", 1980, 211),
    ("Star Trek: First Contact", 1996, 58),
    ("The Godfather", 1972, 192),
    ("The Godfather: Part II", 1974, 129),
    ("The Godfather: Part III", 1990, 56),
    ("Hamlet", 1948, 5),
    ("Hamlet", 1990, 12),
    ("Hamlet", 1996, 30),
    ("Hamlet", 2000, 8),
    ("The Shawshank Redemption", 1994, 317),
    ("Pulp Fiction", 1994, 307),
    ("Forrest Gump", 1994, 329),
    ("The Lord of the Rings: The Fellowship of the Ring", 2001, 198),
    ("Spider-Man", 2002, 122),
    ("Inception", 2010, 143),
    ("Gladiator", 2000, 170),
    ("The Dark Knight", 2008, 149),
    ("Jurassic Park", 1993, 238),
    ("Schindler's List", 1993, 220),
    ("Blade Runner", 1982, 124),
    ("Blade Runner 2049", 2017, 42),
    ("Rocky II", 1979, 30),
    ("Seven (a.k.a. Se7en)", 1995, 1),
]
SYLLABLES = "ka lo mi ra ven tor el an is sa be ri do nu ma zel fin gar os ul tha mer qui bo"


def filler(n: int, seed: int = 7) -> list[str]:
    """n titles of 1-4 random made-up words, some with "The"."""
    rng = random.Random(seed)
    syllables = SYLLABLES.split()
    words = ["".join(rng.choices(syllables, k=rng.randint(2, 3))).title() for _ in range(800)]
    titles = []
    for _ in range(n):
        title = " ".join(rng.choices(words, k=rng.randint(1, 4)))
        titles.append(f"The {title}" if rng.random() < 0.2 else title)
    return titles


@pytest.fixture(scope="module")
def index() -> TitleSearchIndex:
    rng = random.Random(11)
    extra = filler(2000)
    titles = [t for t, _, _ in FAMOUS] + extra
    years = [y for _, y, _ in FAMOUS] + [rng.randint(1930, 2020) for _ in extra]
    popularity = [float(p) for _, _, p in FAMOUS] + [float(rng.randint(0, 40)) for _ in extra]
    return TitleSearchIndex.build(list(range(1, len(titles) + 1)), titles, years, popularity)


def titles_of(hits: list[SearchHit]) -> list[str]:
    return [hit.title for hit in hits]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Amélie", "amelie"),
        ("Léon: The Professional", "leon the professional"),
        ("Star Wars: Episode IV - A New Hope", "star wars episode iv a new hope"),
        ("Tom & Jerry", "tom and jerry"),
        ("  SE7EN!!  ", "se7en"),
        ("Schindler's List", "schindlers list"),
        ("L'Atalante", "l atalante"),
        ("Straße", "strasse"),
        ("WALL·E", "wall e"),
        ("Æon Flux", "aeon flux"),
        ("!!! ...", ""),
    ],
)
def test_normalize_title(raw: str, expected: str) -> None:
    assert normalize_title(raw) == expected


def test_article_numeral_and_alternate_keys() -> None:
    assert strip_article("the matrix") == "matrix"
    assert strip_article("l atalante") == "atalante"
    assert strip_article("the") == "the"
    assert strip_article("theodore rex") == "theodore rex"
    assert search_key("Rocky II") == search_key("rocky 2") == "rocky 2"
    assert search_key("V for Vendetta") == "v for vendetta"
    assert search_key("Malcolm X") == "malcolm x"
    assert {"seven", "se7en"} <= set(title_keys("Seven (a.k.a. Se7en)"))
    assert "the seventh seal" in title_keys("Seventh Seal, The (Sjunde inseglet, Det)")
    assert title_keys("The Matrix") == ["the matrix", "matrix"]


def test_exact_beats_prefix_beats_fuzzy(index: TitleSearchIndex) -> None:
    hits = index.search("matrix", limit=5)
    assert hits[0] == SearchHit(4, "The Matrix", 1999, "exact", 100.0)
    assert hits[1].title == "The Matrix Reloaded" and hits[1].match == "prefix"
    tiers = {"exact": 0, "prefix": 1, "fuzzy": 2}
    assert [tiers[h.match] for h in hits] == sorted(tiers[h.match] for h in hits)
    assert "fuzzy" in {h.match for h in hits}  # "The Animatrix" and friends fill the rest
    # The less popular exact title still beats the more popular prefix titles.
    assert titles_of(index.search("toy", limit=3)) == ["The Toy", "Toy Story", "Toy Story 2"]


def test_duplicates_across_years_all_returned_by_popularity(index: TitleSearchIndex) -> None:
    hits = index.search("Hamlet", limit=10)
    assert [(h.year, h.match) for h in hits[:4]] == [
        (1996, "exact"),
        (1990, "exact"),
        (2000, "exact"),
        (1948, "exact"),
    ]
    assert [h.year for h in index.search("hamlet", limit=2)] == [1996, 1990]


def test_trailing_year_puts_that_year_first(index: TitleSearchIndex) -> None:
    assert index.search("hamlet 1948")[0].year == 1948
    assert index.search("Hamlet (2000)")[0].year == 2000
    assert {h.year for h in index.search("hamlet 1948")[:4]} == {1948, 1990, 1996, 2000}
    assert index.search("blade runner 2049")[0].title == "Blade Runner 2049"


def test_tie_break_is_popularity_then_shorter_title_then_id() -> None:
    rows = [
        (5, "Hamlet", 2000, 10.0),
        (3, "Hamlet", 1990, 10.0),
        (9, "Hamlet", 1948, 50.0),
        (4, "Hamlet!", 1964, 10.0),
        (7, "Hamlet Goes Business", 1987, 99.0),
    ]
    expected = [9, 3, 5, 4, 7]  # exact by popularity, then id; the longer "Hamlet!" last; prefix
    for seed in range(3):
        shuffled = random.Random(seed).sample(rows, len(rows))
        ids, titles, years, pops = zip(*shuffled, strict=True)
        index = TitleSearchIndex.build(ids, titles, years, pops)
        assert [h.item_id for h in index.search("hamlet")] == expected


@pytest.mark.parametrize(
    ("query", "title"),
    [
        ("AMÉLIE!!", "Amélie"),
        ("amelie", "Amélie"),
        ("matrix", "The Matrix"),
        ("the matrix", "The Matrix"),
        ("leon the professional", "Léon: The Professional"),
        ("Leon - the Professional", "Léon: The Professional"),
        ("star wars episode iv: a new hope", "Star Wars: Episode IV - A New Hope"),
        ("schindlers list", "Schindler's List"),
        ("se7en", "Se7en"),
        ("rocky 2", "Rocky II"),
    ],
)
def test_exact_ignores_accents_articles_punctuation(
    index: TitleSearchIndex, query: str, title: str
) -> None:
    hit = index.search(query)[0]
    assert (hit.title, hit.match) == (title, "exact")


def test_prefix_and_word_prefix(index: TitleSearchIndex) -> None:
    star_wars = index.search("star wars")
    assert titles_of(star_wars[:2]) == [
        "Star Wars: Episode IV - A New Hope",
        "Star Wars: Episode V - The Empire Strikes Back",
    ]
    assert {h.match for h in star_wars[:2]} == {"prefix"}
    assert index.search("wars hope")[0].title == "Star Wars: Episode IV - A New Hope"
    assert index.search("wars hope")[0].match == "prefix"
    # word prefixes must keep their order
    assert all(h.match != "prefix" for h in index.search("hope wars"))
    godfather = index.search("godfather 2")
    assert (godfather[0].title, godfather[0].match) == ("The Godfather: Part II", "prefix")
    seven = index.search("seven")
    assert (seven[0].title, seven[0].match) == ("Seven (a.k.a. Se7en)", "exact")


@pytest.mark.parametrize(
    ("query", "title"),
    [
        ("matrx", "The Matrix"),
        ("godfater", "The Godfather"),
        ("amelei", "Amélie"),
        ("shawshenk redemption", "The Shawshank Redemption"),
        ("pulp fictoin", "Pulp Fiction"),
        ("forest gump", "Forrest Gump"),
        ("lord of the rigns", "The Lord of the Rings: The Fellowship of the Ring"),
        ("star wras", "Star Wars: Episode IV - A New Hope"),
        ("spiderman", "Spider-Man"),
        ("inceptoin", "Inception"),
        ("gladiater", "Gladiator"),
        ("teh dark knight", "The Dark Knight"),
        ("jurasic park", "Jurassic Park"),
        ("blade runer", "Blade Runner"),
    ],
)
def test_typos_find_the_title_in_top_3(index: TitleSearchIndex, query: str, title: str) -> None:
    hits = index.search(query)
    assert title in titles_of(hits[:3])
    assert all(0.0 <= h.score <= 100.0 for h in hits)


@pytest.mark.parametrize("query", ["qzxvkjwp", "xkcd blorp zzz", "zzzzzzzz", "9471 0385"])
def test_garbage_finds_nothing(index: TitleSearchIndex, query: str) -> None:
    assert index.search(query) == []


def test_fuzzy_skipped_when_exact_and_prefix_fill_the_limit(
    index: TitleSearchIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object) -> None:
        raise AssertionError("fuzzy ran")

    monkeypatch.setattr(index, "_fuzzy", boom)
    assert len(index.search("hamlet", limit=4)) == 4
    with pytest.raises(AssertionError, match="fuzzy ran"):
        index.search("hamlet", limit=5)


def test_query_and_limit_validation(index: TitleSearchIndex) -> None:
    for query in ["", "   ", "?!", "—"]:
        with pytest.raises(ValueError, match="query must contain letters or digits"):
            index.search(query)
    with pytest.raises(ValueError, match="200"):
        index.search("a" * 201)
    assert index.search("a" * 200) == []
    for limit in [0, 101, -1, True]:
        with pytest.raises(ValueError, match="limit"):
            index.search("matrix", limit=limit)
    assert len(index.search("the", limit=100)) == 100


def test_build_validation_and_inputs() -> None:
    with pytest.raises(ValueError, match="same length"):
        TitleSearchIndex.build([1, 2], ["A", "B"], [None], [1.0, 2.0])
    with pytest.raises(ValueError, match="unique"):
        TitleSearchIndex.build([1, 1], ["A", "B"], [None, None], [1.0, 2.0])
    with pytest.raises(ValueError, match="non-negative"):
        TitleSearchIndex.build([1], ["A"], [None], [-1.0])
    empty = TitleSearchIndex.build([], [], [], [])
    assert len(empty) == 0 and empty.search("matrix") == []

    # pandas input with a non-default index, NaN years and popularity, untitled rows skipped
    frame = pd.DataFrame(
        {
            "id": [10, 11, 12, 13],
            "title": ["Amélie", "!!!", None, "Amelie 2"],
            "year": [2001.0, np.nan, 1999.0, np.nan],
            "pop": [np.nan, 3.0, 1.0, 2.0],
        },
        index=[100, 101, 102, 103],
    )
    index = TitleSearchIndex.build(frame["id"], frame["title"], frame["year"], frame["pop"])
    assert len(index) == 2
    assert index.search("amelie") == [
        SearchHit(10, "Amélie", 2001, "exact", 100.0),
        SearchHit(13, "Amelie 2", None, "prefix", 95.0),
    ]
