"""Localized titles: locale parsing, which aka a locale shows, and search by localized title."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recommender_lib.bundle.layout import akas_frame
from recommender_lib.index.localized_titles import (
    Locale,
    LocaleError,
    LocalizedTitles,
    aka_preference,
    parse_accept_language,
)
from recommender_lib.index.title_search import TitleSearchIndex

AMELIE = 4973
IDS = np.array([1, AMELIE, 5000], dtype=np.int64)


def akas(*rows: tuple[int, str, str | None, str | None, int, int]) -> pd.DataFrame:
    """item_id, title, region, language, preference, ordering."""
    columns = ["item_id", "title", "region", "language", "preference", "ordering"]
    return pd.DataFrame(list(rows), columns=columns)


AMELIE_AKAS = akas(
    (AMELIE, "Le fabuleux destin d'Amélie Poulain", None, None, 2, 1),
    (AMELIE, "Amélie", "US", None, 0, 2),
    (AMELIE, "Le fabuleux destin d'Amélie Poulain", "FR", None, 0, 3),
    (AMELIE, "Die fabelhafte Welt der Amélie", "DE", None, 0, 4),
    (AMELIE, "Amelie aus Montmartre", "DE", None, 7, 5),  # a working title
    (AMELIE, "アメリ", "JP", "ja", 2, 6),
    (AMELIE, "Амели", "RU", None, 2, 7),
    (AMELIE, "Amélie de Montmartre", "CA", "fr", 2, 8),
    (AMELIE, "天使爱美丽", "CN", "cmn", 2, 9),
    (99999, "Not in the catalogue", "FR", None, 0, 1),
)


@pytest.mark.parametrize(
    ("lang", "region", "expected"),
    [
        ("fr", None, Locale("fr", None)),
        ("pt-BR", None, Locale("pt", "BR")),
        ("zh-Hant-TW", None, Locale("zh", "TW")),
        ("FR", None, Locale("fr", None)),
        ("fr-CA", "fr", Locale("fr", "FR")),  # region wins over the tag's
        (None, "jp", Locale(None, "JP")),
        (" ", "", None),
        (None, None, None),
    ],
)
def test_locale_parse(lang: str | None, region: str | None, expected: Locale | None) -> None:
    assert Locale.parse(lang, region) == expected


@pytest.mark.parametrize(
    ("lang", "region", "field"),
    [
        ("français", None, "lang"),
        ("f", None, "lang"),
        ("fr_FR", None, "lang"),
        (None, "F-R", "region"),
    ],
)
def test_locale_parse_refuses_malformed(lang: str | None, region: str | None, field: str) -> None:
    with pytest.raises(LocaleError) as err:
        Locale.parse(lang, region)
    assert err.value.field == field


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7", Locale("fr", "FR")),
        ("en;q=0.5, de-AT", Locale("de", "AT")),
        ("*", None),
        ("", None),
        (None, None),
        ("garbage;;;, ;q=abc", None),
        ("ja;q=0, ko", Locale("ko", None)),
    ],
)
def test_accept_language(header: str | None, expected: Locale | None) -> None:
    assert parse_accept_language(header) == expected


def test_aka_preference_orders_display_release_alternative_working() -> None:
    display = aka_preference(["imdbDisplay"], [])
    plain = aka_preference(None, None)
    festival = aka_preference(np.array(["festival", "tv"]), [])
    alternative = aka_preference(["alternative"], [])
    working = aka_preference(["working"], [])
    assert display < plain < festival < alternative < working
    assert aka_preference(None, ["transliterated title"]) == plain + 1


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        (Locale("fr"), "Le fabuleux destin d'Amélie Poulain"),  # FR: the language's region
        (Locale("fr", "CA"), "Amélie de Montmartre"),
        (Locale("de"), "Die fabelhafte Welt der Amélie"),  # display title before working title
        (Locale("ja"), "アメリ"),
        (Locale("ru"), "Амели"),
        (Locale("zh"), "天使爱美丽"),  # IMDb writes Mandarin as cmn
        (Locale(None, "US"), "Amélie"),
        (Locale("en"), "Amélie"),
    ],
)
def test_localized_title_choice(locale: Locale, expected: str) -> None:
    names = LocalizedTitles(AMELIE_AKAS, IDS).titles_for(locale)
    assert names == {1: expected}


def test_no_eligible_aka_gives_no_localized_title() -> None:
    localized = LocalizedTitles(AMELIE_AKAS, IDS)
    assert localized.titles_for(Locale("sv")) == {}
    assert localized.titles_for(Locale(None, "XX")) == {}
    assert LocalizedTitles.empty(IDS).titles_for(Locale("fr")) == {}


def test_akas_frame_maps_catalogue_titles_and_ranks_types() -> None:
    catalog = pd.DataFrame({"item_id": [1, AMELIE], "tconst": ["tt0114709", "tt0211915"]})
    warehouse = pd.DataFrame(
        {
            "tconst": ["tt0211915", "tt0211915", "tt9999999"],
            "ordering": [2, 1, 1],
            "title": ["Amélie", "Le fabuleux destin d'Amélie Poulain", "Other"],
            "region": ["US", None, "FR"],
            "language": [None, None, None],
            "types": [["imdbDisplay"], ["original"], None],
            "attributes": [[], [], None],
            "is_original_title": [False, True, False],
        }
    )
    frame = akas_frame(warehouse, catalog)
    assert frame["item_id"].tolist() == [AMELIE, AMELIE]
    assert frame["ordering"].tolist() == [1, 2]
    assert frame["preference"].tolist() == [2, 0]


def test_search_finds_a_film_by_any_of_its_titles() -> None:
    localized = LocalizedTitles(AMELIE_AKAS, IDS)
    index = TitleSearchIndex.build(
        IDS,
        ["Toy Story", "Amélie", "Amelia"],
        [1995, 2001, 2009],
        [300.0, 120.0, 10.0],
        localized.alternates(),
    )
    for query in (
        "Le Fabuleux Destin d'Amélie Poulain",
        "Amélie",
        "fabuleux destin",  # a localized title's beginning
        "destin amelie",  # its words, in order
        "fabelhafte welt",
        "アメリ",
        "le fabuleux destn d amelie",  # a typo
    ):
        hits = index.search(query, 3)
        assert hits and hits[0].item_id == AMELIE, (query, hits)
        assert hits[0].title == "Amélie"  # the hit names the catalogue title
    assert index.search("Toy Story", 1)[0].item_id == 1


def test_search_alternates_must_align() -> None:
    with pytest.raises(ValueError, match="same length"):
        TitleSearchIndex.build(IDS, ["a", "b", "c"], [None] * 3, [0.0] * 3, [[]])
