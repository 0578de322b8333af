"""Localized titles from IMDb's akas: which aka a language and/or region shows
(docs/architecture.md §7.5).

A `Locale` comes from `lang` (`fr`, `pt-BR`), `region` (`FR`) or an `Accept-Language` header.
For one title, the aka shown for a locale is the first eligible one in this order:

1. the asked region, in the asked language or with no language given;
2. the asked region, any language;
3. a region that speaks the asked language (`LANGUAGE_REGIONS`, in its order: `pt` prefers
   Brazil's title to Portugal's), in that language or with no language given;
4. the asked language (or a code IMDb writes for it, `LANGUAGE_ALIASES`), any region.

(IMDb rarely fills an aka's language, and mostly where a region has several: a French-Canadian
title says `fr`, France's title says nothing; so the language's own regions come first.)

Within a tier, `aka_preference` puts IMDb's display title first, then plain release titles,
then TV/video/DVD/festival titles, alternative titles and working titles last; an aka with
attributes ("transliterated title", "literal English title") comes after one without. Ties go
to the lower IMDb `ordering`. A title without an eligible aka has no localized title (the API
shows the original). Regions and languages are compared case-insensitively.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pandas as pd

from recommender_lib.index.title_keys import gc_paused

# The regions whose release titles are in that language, most populous audience first.
LANGUAGE_REGIONS: dict[str, tuple[str, ...]] = {
    "ar": ("EG", "SA", "AE"), "bg": ("BG",), "cs": ("CZ",), "da": ("DK",), "de": ("DE", "AT"),
    "el": ("GR",), "en": ("US", "GB", "CA", "AU"), "es": ("ES", "MX", "AR"), "fa": ("IR",),
    "fi": ("FI",), "fr": ("FR", "CA", "BE"), "he": ("IL",), "hi": ("IN",), "hu": ("HU",),
    "id": ("ID",), "it": ("IT",), "ja": ("JP",), "ko": ("KR",), "nl": ("NL", "BE"),
    "no": ("NO",), "pl": ("PL",), "pt": ("BR", "PT"), "ro": ("RO",), "ru": ("RU",),
    "sk": ("SK",), "sr": ("RS",), "sv": ("SE",), "th": ("TH",), "tr": ("TR",), "uk": ("UA",),
    "vi": ("VN",), "zh": ("CN", "TW", "HK"),
}  # fmt: skip
# Other codes IMDb writes for a language: Mandarin/Cantonese for Chinese, Bokmål for Norwegian.
LANGUAGE_ALIASES: dict[str, tuple[str, ...]] = {"zh": ("cmn", "yue"), "no": ("nb", "nn")}
# IMDb akas `types`, best first; an aka without types ranks as a plain release title.
TYPE_RANK: dict[str, int] = {
    "imdbDisplay": 0, "original": 1, "tv": 2, "video": 2, "dvd": 2, "festival": 2,
    "alternative": 3, "working": 4,
}  # fmt: skip
NO_TYPE_RANK = 1
UNKNOWN_TYPE_RANK = 3
LOCALE_CACHE_SIZE = 64  # locales whose per-title choice is kept

_LANG = re.compile(r"^([A-Za-z]{2,3})(?:-([A-Za-z]{4}))?(?:-([A-Za-z]{2}|\d{3}))?$")
_REGION = re.compile(r"^(?:[A-Za-z]{2}|\d{3}|[Xx][A-Za-z]{2,3})$")
_SPEAKING_REGION = 10  # + the region's position in LANGUAGE_REGIONS
_ANY_REGION = 50
_NOT_ELIGIBLE = 99


class LocaleError(ValueError):
    """A `lang` or `region` (`field`) that is not a language tag or region code."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Locale:
    """A language (ISO 639, lower case) and/or a region (ISO 3166 / IMDb code, upper case)."""

    language: str | None = None
    region: str | None = None

    @classmethod
    def parse(cls, lang: str | None, region: str | None = None) -> Locale | None:
        """`Locale` from a `lang` tag (`pt-BR`, `zh-Hant-TW`) and/or a `region` (which wins
        over the tag's own region); None when both are empty. Raises `LocaleError`."""
        language = tag_region = None
        if lang and lang.strip():
            match = _LANG.match(lang.strip())
            if not match:
                raise LocaleError(
                    "lang", f"lang {lang!r} is not a language tag such as 'fr' or 'pt-BR'"
                )
            language, tag_region = match.group(1).lower(), match.group(3)
        if region and region.strip():
            if not _REGION.match(region.strip()):
                raise LocaleError(
                    "region", f"region {region!r} is not a region code such as 'FR' or 'JP'"
                )
            tag_region = region.strip()
        if language is None and tag_region is None:
            return None
        return cls(language, tag_region.upper() if tag_region else None)


def parse_accept_language(header: str | None) -> Locale | None:
    """The preferred `Locale` of an `Accept-Language` header (highest q, then first); None
    for an empty, wildcard-only or unreadable header (a header never causes an error)."""
    best: tuple[float, int, Locale] | None = None
    for position, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = -1.0
        try:
            locale = Locale.parse(tag) if tag.strip() != "*" else None
        except LocaleError:
            locale = None
        if locale is not None and quality > 0 and (best is None or quality > best[0]):
            best = (quality, position, locale)
    return best[2] if best else None


def _items(values: Iterable[str] | None) -> Iterable[str]:
    """A list column's value (list, numpy array or missing) as an iterable."""
    return values if values is not None and not isinstance(values, float) else ()


def aka_preference(types: Iterable[str] | None, attributes: Iterable[str] | None) -> int:
    """Rank of an aka within a tier (lower is better): its best type, x2, +1 with attributes."""
    ranks = [TYPE_RANK.get(t, UNKNOWN_TYPE_RANK) for t in _items(types) if t]
    has_attributes = any(a for a in _items(attributes))
    return 2 * (min(ranks) if ranks else NO_TYPE_RANK) + int(has_attributes)


def _codes(values: Sequence[object], upper: bool) -> tuple[np.ndarray, dict[str, int]]:
    """Integer codes of case-normalised strings (-1 for missing) and the code of each value.

    Codes follow the first appearance of each normalised value; the case is normalised once per
    distinct value.
    """
    raw, distinct = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
    keys = [
        (v.upper() if upper else v.lower()) if isinstance(v, str) and v else None
        for v in distinct.tolist()
    ]
    vocab: dict[str, int] = {}
    of_distinct = np.asarray(
        [-1 if k is None else vocab.setdefault(k, len(vocab)) for k in keys], dtype=np.int32
    )
    codes = np.full(len(raw), -1, dtype=np.int32)
    known = raw >= 0
    codes[known] = of_distinct[raw[known]]
    return codes, vocab


class LocalizedTitles:
    """The akas of a catalogue, aligned with its rows; `titles_for(locale)` picks one per row."""

    def __init__(self, akas: pd.DataFrame, item_ids: np.ndarray) -> None:
        """`akas`: item_id, title, region, language, preference, ordering (one row per aka);
        rows of items outside `item_ids` (ascending) are ignored."""
        ids = np.asarray(item_ids, dtype=np.int64)
        aka_items = akas["item_id"].to_numpy(np.int64)
        pos = np.searchsorted(ids, aka_items)
        known = pos < len(ids)
        known[known] = ids[pos[known]] == aka_items[known]
        frame = akas.loc[known]
        self.n_rows = len(ids)
        self.rows = pos[known].astype(np.int64)
        self.titles: list[str] = [str(t) for t in frame["title"].tolist()]
        self.regions, self._region_codes = _codes(frame["region"], upper=True)
        self.languages, self._language_codes = _codes(frame["language"], upper=False)
        self.preference = frame["preference"].to_numpy(np.int64)
        self.ordering = frame["ordering"].to_numpy(np.int64)
        self._cache: dict[Locale, dict[int, str]] = {}
        self._lock = threading.Lock()

    @classmethod
    def empty(cls, item_ids: np.ndarray) -> LocalizedTitles:
        columns = ["item_id", "title", "region", "language", "preference", "ordering"]
        return cls(pd.DataFrame({c: [] for c in columns}), item_ids)

    def __len__(self) -> int:
        """Number of akas."""
        return len(self.titles)

    def alternates(self) -> list[list[str]]:
        """Each catalogue row's distinct aka titles (for search)."""
        with gc_paused():
            pairs = pd.DataFrame({"row": self.rows, "title": self.titles}).drop_duplicates()
            rows = pairs["row"].to_numpy(np.int64)
            order = np.argsort(rows, kind="stable")  # each row's titles in aka order
            titles = pairs["title"].to_numpy(object)[order].tolist()
            bounds = np.searchsorted(rows[order], np.arange(self.n_rows + 1))
            return [titles[lo:hi] for lo, hi in pairwise(bounds.tolist())]

    def titles_for(self, locale: Locale) -> dict[int, str]:
        """Catalogue row -> localized title for `locale` (rows without an eligible aka absent)."""
        cached = self._cache.get(locale)
        if cached is None:
            cached = self._choose(locale)
            with self._lock:
                if len(self._cache) >= LOCALE_CACHE_SIZE:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[locale] = cached
        return cached

    def _tiers(self, locale: Locale) -> np.ndarray:
        tier = np.full(len(self.titles), _NOT_ELIGIBLE, dtype=np.int64)
        codes = (locale.language, *LANGUAGE_ALIASES.get(locale.language or "", ()))
        in_language = np.isin(
            self.languages, [self._language_codes.get(c or "", -2) for c in codes]
        )
        no_language = self.languages == -1
        if locale.language is not None:
            tier[in_language] = _ANY_REGION
            speaking = LANGUAGE_REGIONS.get(locale.language, ())
            for position, region in reversed(list(enumerate(speaking))):
                in_region = self.regions == self._region_codes.get(region, -2)
                tier[in_region & (no_language | in_language)] = _SPEAKING_REGION + position
        if locale.region is not None:
            in_region = self.regions == self._region_codes.get(locale.region, -2)
            tier[in_region] = 1
            tier[in_region & (no_language | in_language)] = 0
        return tier

    def _choose(self, locale: Locale) -> dict[int, str]:
        tier = self._tiers(locale)
        eligible = np.flatnonzero(tier < _NOT_ELIGIBLE)
        if not len(eligible):
            return {}
        order = eligible[
            np.lexsort(
                (
                    self.ordering[eligible],
                    self.preference[eligible],
                    tier[eligible],
                    self.rows[eligible],
                )
            )
        ]
        rows = self.rows[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = rows[1:] != rows[:-1]
        return {int(self.rows[i]): self.titles[i] for i in order[first].tolist()}
