"""Search keys of titles and queries (`recommender_lib/index/title_search.py` uses them).

`normalize_title` casefolds, strips accents, reads `&` as `and`, drops apostrophes and turns
other punctuation into spaces; `search_key` also reads stand-alone Roman numerals II-IX (not V)
as digits; `title_keys` gives every key one title is found by (whole, outside and inside
parentheses, with and without a leading article). `row_keys` computes the keys of many rows at
once, once per distinct text (a catalogue's akas repeat many texts).
"""

from __future__ import annotations

import gc
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache, partial

import pyarrow as pa
import pyarrow.compute as pc

ARTICLES = frozenset({"the", "a", "an", "le", "la", "les", "l", "el", "il", "der", "die", "das"})

_PUNCTUATION = re.compile(r"[\W_]+")
_ELISION = re.compile(r"\b([cdjlmnst]|qu)['’]")  # French l'/d'/qu' keep a word break
_APOSTROPHE = re.compile(r"['’`´]")
_LETTERS = str.maketrans({"æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d",
                          "þ": "th", "ı": "i", "&": " and "})  # fmt: skip
_NUMERALS = {"ii": "2", "iii": "3", "iv": "4", "vi": "6", "vii": "7", "viii": "8", "ix": "9"}
_NUMERAL_WORD = re.compile(r"\b(?:" + "|".join(_NUMERALS) + r")\b")
_PARENTHESES = re.compile(r"\(([^()]*)\)")
_TRAILING_ARTICLE_RE2 = r"(?i)^(.*\S),\s*(the|an?|les?|la|l'|el|il|lo|los|las|der|die|das|det|den)$"
_TRAILING_ARTICLE = re.compile(_TRAILING_ARTICLE_RE2.removeprefix("(?i)"), re.IGNORECASE)
_SIMPLE_TEXT = r"^[ -&*-_a-~]*$"  # printable ASCII but ' ( ) `: `_simple_keys` applies


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building millions of small lists: each of its
    passes walks the whole heap, which made list building at 1.5 M titles ~10x slower."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@cache
def _combining() -> dict[int, None]:
    """str.translate table deleting every combining character (accents after NFKD)."""
    return {c: None for c in range(0x110000) if unicodedata.combining(chr(c))}


def normalize_title(text: str) -> str:
    """Casefold, strip accents, `&` -> `and`, drop apostrophes, punctuation -> single spaces.

    Apostrophes join (`Schindler's` -> `schindlers`, `don't` -> `dont`) except after a French
    elision (`L'Atalante` -> `l atalante`), so `l` can be stripped as an article.
    """
    if text.isascii():
        text = text.lower().replace("&", " and ")
    else:  # compatibility forms (ﬁ, ℌ) decompose; casefold again after them
        decomposed = unicodedata.normalize("NFKD", text.casefold())
        text = decomposed.translate(_combining()).casefold().translate(_LETTERS)
    if "'" in text or "`" in text or not text.isascii():
        text = _APOSTROPHE.sub("", _ELISION.sub(r"\1 ", text))
    return _PUNCTUATION.sub(" ", text).strip()


def strip_article(normalized: str) -> str:
    """`normalized` without a leading article (`the matrix` -> `matrix`); unchanged otherwise."""
    head, _, rest = normalized.partition(" ")
    return rest if rest and head in ARTICLES else normalized


def search_key(text: str) -> str:
    """The key titles and queries are compared on: normalized, Roman numerals II-IX as digits."""
    return _NUMERAL_WORD.sub(lambda m: _NUMERALS[m.group()], normalize_title(text))


def title_keys(title: str) -> list[str]:
    """Distinct search keys of one title: whole, outside and inside parentheses, +- article.

    `Seven (a.k.a. Se7en)` -> `seven a k a se7en`, `seven`, `se7en`; an alternate title with its
    article moved to the end (`Seventh Seal, The`) gets it back first.
    """
    parts = [title]
    if "(" in title:
        parts += [_PARENTHESES.sub(" ", title), *_PARENTHESES.findall(title)]
    keys: dict[str, None] = {}
    for part in parts:
        moved = _TRAILING_ARTICLE.match(part.strip())
        key = search_key(f"{moved.group(2)} {moved.group(1)}" if moved else part)
        key = key.removeprefix("a k a ").removeprefix("aka ")
        if key:
            keys[key] = None
            keys[strip_article(key)] = None
    return list(keys)  # the whole title's key first


def _where(array: pa.Array, pattern: str, edit: Callable[[pa.Array], pa.Array]) -> pa.Array:
    """`array` with `edit` applied to the strings that match `pattern` (the rest untouched)."""
    mask = pc.match_substring_regex(array, pattern)
    if not pc.any(mask).as_py():
        return array
    return pc.replace_with_mask(array, mask, edit(array.filter(mask)))


def _numerals(array: pa.Array) -> pa.Array:
    for numeral, digit in _NUMERALS.items():
        array = pc.replace_substring_regex(array, rf"\b{numeral}\b", digit)
    return array


def _simple_keys(texts: list[str]) -> list[list[str]]:
    """`title_keys` of texts that are printable ASCII without `'`, `` ` `` or parentheses, in
    Arrow's vectorised string kernels: the same steps as `title_keys`, which for such a text
    has one part, no elision and no accents (rare steps run only on the strings they change)."""
    array = pc.ascii_trim_whitespace(pa.array(texts, type=pa.large_string()))
    array = _where(
        array,
        _TRAILING_ARTICLE_RE2,
        lambda a: pc.replace_substring_regex(a, _TRAILING_ARTICLE_RE2, r"\2 \1"),
    )
    array = pc.replace_substring(pc.ascii_lower(array), "&", " and ")
    array = pc.ascii_trim(pc.replace_substring_regex(array, "[^a-z0-9]+", " "), " ")
    array = _where(array, _NUMERAL_WORD.pattern, _numerals)
    for prefix in ("a k a ", "aka "):
        array = _where(array, f"^{prefix}", partial(pc.utf8_slice_codeunits, start=len(prefix)))
    articles = f"^(?:{'|'.join(sorted(ARTICLES))}) "
    bare = _where(array, articles, lambda a: pc.replace_substring_regex(a, articles, ""))
    return [
        [] if not key else [key] if key == short else [key, short]
        for key, short in zip(array.to_pylist(), bare.to_pylist(), strict=True)
    ]


def keys_of_texts(texts: Sequence[str]) -> dict[str, list[str]]:
    """`title_keys` of each distinct text: vectorised for plain ASCII texts, else one by one."""
    distinct = list(dict.fromkeys(texts))
    if not distinct:
        return {}
    simple = pc.match_substring_regex(
        pa.array(distinct, type=pa.large_string()), _SIMPLE_TEXT
    ).to_numpy(zero_copy_only=False)
    plain = [t for t, ok in zip(distinct, simple.tolist(), strict=True) if ok]
    known = dict(zip(plain, _simple_keys(plain), strict=True))
    known.update((t, title_keys(t)) for t, ok in zip(distinct, simple, strict=True) if not ok)
    return known


def row_keys(
    titles: Sequence[object], alternates: Sequence[Sequence[str]]
) -> tuple[list[list[str]], list[list[str]]]:
    """Per row: its distinct search keys (title first, then alternates) and whole-title keys.

    `title_keys` runs once per distinct text (`keys_of_texts`); rows with equal texts share the
    key strings.
    """
    rows = [
        [t for t in (title, *others) if isinstance(t, str)] if isinstance(title, str) else []
        for title, others in zip(titles, alternates, strict=True)
    ]
    known = keys_of_texts([t for texts in rows for t in texts])
    keys: list[list[str]] = []
    phrases: list[list[str]] = []
    for texts in rows:
        row_keys: dict[str, None] = {}
        row_phrases: dict[str, None] = {}
        for text in texts:
            found = known[text]
            if found:
                row_phrases[found[0]] = None
                row_keys.update(dict.fromkeys(found))
        keys.append(list(row_keys))
        phrases.append(list(row_phrases))
    return keys, phrases
