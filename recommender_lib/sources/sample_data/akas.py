"""IMDb title.akas of the sample mirror: localized titles of the generated basics rows.

Per title: one `original` row (isOriginalTitle 1, no region or language) and a Poisson number of
regional rows, more for rated and popular titles and many for the MovieLens-linked ones. A
regional row carries the primary title unchanged (exact duplicates across regions), the
original title, or a deterministic localized form: a small per-language word dictionary with
the language's article (`Le …`, `Der …`) and, for non-Latin scripts, a transliteration into
Cyrillic, Greek, katakana, Hangul, Han, Devanagari, Hebrew or Arabic letters. `types` and
`attributes` are `\\x02`-separated arrays; `\\N` appears in every nullable column. Everything is
vectorized per chunk except the localized strings, which are cached.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

from recommender_lib.sources import formats
from recommender_lib.sources.sample_data.common import TYPES

_NULL = formats.IMDB_NULL
_SEP = formats.IMDB_ARRAY_SEPARATOR
ORIGINAL_TYPE = "original"

# region, its language, how likely the row names the language, weight among regional rows.
_REGIONS: tuple[tuple[str, str, float, float], ...] = (
    ("US", "en", 0.02, 9), ("GB", "en", 0.02, 5), ("XWW", "en", 0.5, 6), ("CA", "fr", 0.3, 3),
    ("AU", "en", 0.0, 2), ("IN", "hi", 0.4, 3), ("FR", "fr", 0.05, 5), ("DE", "de", 0.05, 5),
    ("ES", "es", 0.05, 4), ("IT", "it", 0.03, 4), ("MX", "es", 0.02, 3), ("AR", "es", 0.0, 2),
    ("BR", "pt", 0.03, 4), ("PT", "pt", 0.02, 2), ("JP", "ja", 0.6, 5), ("RU", "ru", 0.02, 4),
    ("SUHH", "ru", 0.4, 1), ("UA", "uk", 0.3, 2), ("BG", "bg", 0.3, 1.5), ("RS", "sr", 0.5, 1.5),
    ("CN", "cmn", 0.7, 3), ("TW", "cmn", 0.6, 2), ("HK", "yue", 0.6, 1.5), ("KR", "ko", 0.1, 3),
    ("GR", "el", 0.05, 2.5), ("IL", "he", 0.5, 1.5), ("IR", "fa", 0.5, 1.5), ("EG", "ar", 0.5, 1),
    ("TR", "tr", 0.0, 2.5), ("PL", "pl", 0.0, 3), ("SE", "sv", 0.0, 2), ("FI", "fi", 0.0, 2),
    ("NL", "nl", 0.0, 2), ("BE", "fr", 0.6, 1.5), ("HU", "hu", 0.0, 2), ("CZ", "cs", 0.0, 1.5),
    ("DK", "da", 0.0, 1.5), ("NO", "no", 0.0, 1.5), ("XEU", "en", 0.3, 0.5),
    ("DDDE", "de", 0.0, 0.3), ("YUCS", "sr", 0.0, 0.3), ("CSHH", "cs", 0.0, 0.3),
)  # fmt: skip
# Rows with a language but no region (Flemish, Yiddish, ...), as IMDb has a few.
_LANGUAGE_ONLY = ("qbn", "yi", "ca", "eu", "gl", "la")

_SCRIPT_LETTERS = {  # a..z in another script (one string of 26 letters, or a list)
    "cyrillic": "абкдефгхижклмнопкрстуввкыз",
    "greek": "αβκδεφγηιτκλμνοπκρστυβωξυζ",
    "katakana": list("アブクドエフグハイジクルムンオプクルストウヴウクイズ"),
    "hangul": list("아브크드에프그흐이즈크르므느오프크르스트우브우크이즈"),
    "han": list("阿布克德埃夫格赫伊杰克尔姆恩奥普丘尔斯特乌维沃克伊兹"),
    "devanagari": list("अबकदएफगहइजकलमनओपकरसटउववकयज"),
    "hebrew": list("אבקדעפגהיגקלמנופקרסטוווקיז"),
    "arabic": list("ابكديفغهيجكلمنوپقرستوفوكيز"),
}
_SCRIPT_SPACE = {"katakana": "・", "han": "", "hangul": " "}


def _letters(script: str) -> dict[int, str]:
    letters = list(_SCRIPT_LETTERS[script])
    assert len(letters) == 26, script
    table = {ord(c): t for c, t in zip("abcdefghijklmnopqrstuvwxyz", letters, strict=True)}
    table |= {ord(c.upper()): (t.upper() if script in ("cyrillic", "greek") else t)
              for c, t in zip("abcdefghijklmnopqrstuvwxyz", letters, strict=True)}  # fmt: skip
    if script in _SCRIPT_SPACE:
        table[ord(" ")] = _SCRIPT_SPACE[script]
    return table


_TRANSLIT = {script: str.maketrans(_letters(script)) for script in _SCRIPT_LETTERS}
_SCRIPT = {"ru": "cyrillic", "uk": "cyrillic", "bg": "cyrillic", "sr": "cyrillic",
           "el": "greek", "ja": "katakana", "ko": "hangul", "cmn": "han", "yue": "han",
           "hi": "devanagari", "he": "hebrew", "yi": "hebrew", "fa": "arabic",
           "ar": "arabic"}  # fmt: skip
# English word -> (fr, de, es, it, pt, ru, ja, cmn); a title's other words are kept or
# transliterated.
_WORDS: dict[str, tuple[str, ...]] = {
    "Night": ("Nuit", "Nacht", "Noche", "Notte", "Noite", "Ночь", "夜", "夜"),
    "River": ("Fleuve", "Fluss", "Río", "Fiume", "Rio", "Река", "川", "河"),
    "City": ("Ville", "Stadt", "Ciudad", "Città", "Cidade", "Город", "街", "城市"),
    "Heart": ("Cœur", "Herz", "Corazón", "Cuore", "Coração", "Сердце", "心", "心"),
    "Summer": ("Été", "Sommer", "Verano", "Estate", "Verão", "Лето", "夏", "夏天"),
    "Winter": ("Hiver", "Winter", "Invierno", "Inverno", "Inverno", "Зима", "冬", "冬天"),
    "House": ("Maison", "Haus", "Casa", "Casa", "Casa", "Дом", "家", "房子"),
    "Moon": ("Lune", "Mond", "Luna", "Luna", "Lua", "Луна", "月", "月亮"),
    "Fire": ("Feu", "Feuer", "Fuego", "Fuoco", "Fogo", "Огонь", "火", "火"),
    "Dream": ("Rêve", "Traum", "Sueño", "Sogno", "Sonho", "Сон", "夢", "梦"),
    "Shadow": ("Ombre", "Schatten", "Sombra", "Ombra", "Sombra", "Тень", "影", "影子"),
    "Storm": ("Tempête", "Sturm", "Tormenta", "Tempesta", "Tempestade", "Буря", "嵐", "风暴"),
    "War": ("Guerre", "Krieg", "Guerra", "Guerra", "Guerra", "Война", "戦争", "战争"),
    "Time": ("Temps", "Zeit", "Tiempo", "Tempo", "Tempo", "Время", "時", "时间"),
    "King": ("Roi", "König", "Rey", "Re", "Rei", "Король", "王", "国王"),
    "Queen": ("Reine", "Königin", "Reina", "Regina", "Rainha", "Королева", "女王", "女王"),
    "Ghost": ("Fantôme", "Geist", "Fantasma", "Fantasma", "Fantasma", "Призрак", "幽霊", "鬼"),
    "Blood": ("Sang", "Blut", "Sangre", "Sangue", "Sangue", "Кровь", "血", "血"),
    "Secret": ("Secret", "Geheimnis", "Secreto", "Segreto", "Segredo", "Тайна", "秘密", "秘密"),
    "Star": ("Étoile", "Stern", "Estrella", "Stella", "Estrela", "Звезда", "星", "星"),
    "Road": ("Route", "Straße", "Camino", "Strada", "Estrada", "Дорога", "道", "路"),
    "Sky": ("Ciel", "Himmel", "Cielo", "Cielo", "Céu", "Небо", "空", "天空"),
    "Dark": ("Sombre", "Dunkle", "Oscuro", "Oscuro", "Escuro", "Тёмный", "闇の", "黑暗"),
    "Silent": ("Silencieux", "Stille", "Silencioso", "Silenzioso", "Silencioso", "Тихий",
               "静かな", "沉默"),
    "Last": ("Dernier", "Letzte", "Último", "Ultimo", "Último", "Последний", "最後の", "最后"),
    "Lost": ("Perdu", "Verlorene", "Perdido", "Perduto", "Perdido", "Потерянный", "失われた",
             "失落"),
    "Red": ("Rouge", "Rote", "Rojo", "Rosso", "Vermelho", "Красный", "赤い", "红色"),
    "Golden": ("Doré", "Goldene", "Dorado", "Dorato", "Dourado", "Золотой", "黄金の", "金色"),
    "Episode": ("Épisode", "Folge", "Episodio", "Episodio", "Episódio", "Эпизод", "エピソード",
                "第集"),
    "and": ("et", "und", "y", "e", "e", "и", "と", "和"),
    "of": ("de", "von", "de", "di", "de", "", "の", "的"),
}  # fmt: skip
_WORD_LANGS = ("fr", "de", "es", "it", "pt", "ru", "ja", "cmn")
_ARTICLES = {"fr": "Le ", "de": "Der ", "es": "El ", "it": "Il ", "pt": "O ", "ru": "",
             "ja": "", "cmn": "", "el": "Ο ", "sv": "", "nl": "De ", "ca": "El "}  # fmt: skip
_WORD_RE = re.compile(r"\b(" + "|".join(_WORDS) + r")\b")
_THE_RE = re.compile(r"^(?:The|A|An) ")
LOCALIZED_LANGS = tuple(sorted({*_WORD_LANGS, *_SCRIPT, *_ARTICLES}))


@lru_cache(maxsize=1 << 18)
def localize(title: str, lang: str) -> str:
    """A deterministic `lang` form of an English `title` (the title itself when none applies)."""
    out = _THE_RE.sub(_ARTICLES.get(lang, ""), title) if lang in _ARTICLES else title
    if lang in _WORD_LANGS:
        k = _WORD_LANGS.index(lang)
        out = _WORD_RE.sub(lambda m: _WORDS[m.group(1)][k], out)
    script = _SCRIPT.get(lang)
    if script is not None:
        out = out.translate(_TRANSLIT[script])
    out = " ".join(out.split())  # a dropped word leaves no double space
    return out or title


# (types value, share) and (attributes value, share); values may hold several \x02 items.
_ROW_TYPES = (
    (_NULL, 0.6), ("imdbDisplay", 0.24), ("alternative", 0.05), ("working", 0.02),
    ("dvd", 0.015), ("festival", 0.01), ("tv", 0.02), ("video", 0.01),
    (f"imdbDisplay{_SEP}tv", 0.015), (f"alternative{_SEP}dvd", 0.01),
    (f"working{_SEP}festival{_SEP}tv", 0.01),
)  # fmt: skip
_ROW_ATTRIBUTES = (
    (_NULL, 0.93), ("literal English title", 0.01), ("literal title", 0.01),
    ("short title", 0.01), ("informal title", 0.005), ("complete title", 0.005),
    ("new title", 0.005), ("transliterated title", 0.005), ("promotional title", 0.005),
    ("alternative spelling", 0.004), ("8mm release title", 0.001),
    (f"literal title{_SEP}transliterated title", 0.003), (f"short title{_SEP}new title", 0.002),
)  # fmt: skip
# Relative number of regional rows per title type (IMDb: movies and series have the most).
_TYPE_AKAS = {
    "movie": 5.0, "tvSeries": 4.5, "tvMiniSeries": 3.5, "tvMovie": 3.0, "video": 1.8,
    "videoGame": 2.5, "tvSpecial": 1.8, "short": 1.6, "tvShort": 1.2, "tvEpisode": 0.85,
    "tvPilot": 1.2,
}  # fmt: skip
_TYPE_WEIGHT = np.array([_TYPE_AKAS[t] for t in TYPES])
_EMPTY_SHARE = 0.02  # titles without any akas row (not linked ones)
# Regions whose rows keep the primary title (English, or a language without a dictionary).
_KEEPS_TITLE = np.array([lang not in LOCALIZED_LANGS for _, lang, *_ in _REGIONS])
_ORDERING_STR = np.array([str(i) for i in range(1, 4097)], dtype=object)


def _choice_strings(rng: np.random.Generator, table: tuple, n: int) -> np.ndarray:
    values = np.array([v for v, _ in table], dtype=object)
    p = np.array([w for _, w in table])
    return values[rng.choice(len(values), size=n, p=p / p.sum())]


def akas_counts(
    rng: np.random.Generator,
    type_code: np.ndarray,
    votes: np.ndarray,
    linked_pop: np.ndarray,
    per_title: float,
) -> np.ndarray:
    """Rows per title: mean `per_title` over unlinked titles (more for popular ones); linked
    titles (`linked_pop` >= 0, their popularity percentile, 0 = top) get 2 to ~60."""
    weight = _TYPE_WEIGHT[type_code] * (0.6 + 0.4 * np.log10(votes + 10.0))
    lam = np.maximum(per_title - 1, 0.0) * weight / max(float(weight.mean()), 1e-9)
    counts = 1 + rng.poisson(lam)
    counts[rng.random(len(counts)) < _EMPTY_SHARE] = 0
    linked = linked_pop >= 0
    pop = 1.0 - linked_pop[linked]
    counts[linked] = 2 + rng.poisson(4 + 50 * pop**4)
    return np.minimum(counts, len(_ORDERING_STR))


def akas_text(
    rng: np.random.Generator,
    tconsts: list[str],
    primary: np.ndarray,
    original: np.ndarray,
    counts: np.ndarray,
) -> str:
    """title.akas lines (no header, no quoting) for one chunk of titles, in title order."""
    n_rows = int(counts.sum())
    if n_rows == 0:
        return ""
    title = np.repeat(np.arange(len(counts)), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    ordering = np.arange(n_rows) - starts
    orig_at = (rng.random(len(counts)) * np.maximum(counts, 1)).astype(np.int64)
    orig_at[rng.random(len(counts)) < 0.6] = 0
    is_orig = ordering == orig_at[title]

    reg = np.array([w for *_, w in _REGIONS])
    region_i = rng.choice(len(_REGIONS), size=n_rows, p=reg / reg.sum())
    regions = np.array([r for r, *_ in _REGIONS], dtype=object)[region_i]
    lang_of = np.array([lang for _, lang, *_ in _REGIONS], dtype=object)[region_i]
    says_lang = rng.random(n_rows) < np.array([s for _, _, s, _ in _REGIONS])[region_i]
    languages = np.where(says_lang, lang_of, _NULL)
    lang_only = rng.random(n_rows) < 0.004
    regions[lang_only] = _NULL
    languages[lang_only] = np.array(_LANGUAGE_ONLY, dtype=object)[
        rng.integers(len(_LANGUAGE_ONLY), size=int(lang_only.sum()))
    ]
    lang_of[lang_only] = languages[lang_only]

    # form: 0 = primary title as is, 1 = original title, 2 = localized
    form = np.where(rng.random(n_rows) < 0.45, 0, 2)
    foreign = original[title] != primary[title]
    form[foreign & (rng.random(n_rows) < 0.3)] = 1
    form[_KEEPS_TITLE[region_i] & ~lang_only] = 0
    titles = primary[title]
    titles[form == 1] = original[title[form == 1]]
    loc = np.flatnonzero(form == 2)
    titles[loc] = [localize(t, g) for t, g in zip(titles[loc], lang_of[loc], strict=True)]
    types = _choice_strings(rng, _ROW_TYPES, n_rows)
    attributes = _choice_strings(rng, _ROW_ATTRIBUTES, n_rows)
    flag = np.where(rng.random(n_rows) < 0.0005, _NULL, "0").astype(object)

    titles[is_orig] = original[title[is_orig]]
    regions[is_orig] = languages[is_orig] = attributes[is_orig] = _NULL
    types[is_orig] = ORIGINAL_TYPE
    flag[is_orig] = "1"
    cols = (
        np.array(tconsts, dtype=object)[title], _ORDERING_STR[ordering], titles, regions,
        languages, types, attributes, flag,
    )  # fmt: skip
    return "".join(["\t".join(r) + "\n" for r in zip(*cols, strict=True)])
