"""Made-up titles: English, foreign-language and episode titles, and their MovieLens spelling."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_ADJ = (
    "Dark", "Silent", "Last", "Red", "Lost", "Golden", "Broken", "Secret", "Wild", "Little",
    "Hidden", "Endless", "Crimson", "Burning", "Frozen", "Midnight", "Electric", "Quiet",
    "Eternal", "Hollow", "Bitter", "Bright", "Cold", "Distant", "Empty", "Final", "First",
    "Forgotten", "Gentle", "Great", "Iron", "Lonely", "Long", "Lucky", "Mad", "Northern",
    "Pale", "Perfect", "Restless", "Savage", "Second", "Shining", "Silver", "Sweet",
    "Strange", "Sudden", "Velvet", "Wicked", "Young", "Blue", "Black", "White", "Dangerous",
    "Invisible", "American", "Brave", "Deadly", "Holy", "Open", "Stolen",
)  # fmt: skip
_NOUN = (
    "Night", "River", "City", "Road", "Heart", "Summer", "Garden", "Mirror", "Shadow", "Storm",
    "Horizon", "Promise", "Kingdom", "Station", "Letter", "Island", "Dream", "Winter",
    "Empire", "Machine", "Journey", "Fire", "Moon", "Stranger", "House", "Game", "Wedding",
    "Harbor", "Sky", "Frontier", "Affair", "Voyage", "Witness", "Hunter", "Sister", "Brother",
    "Father", "Mother", "Daughter", "Son", "Child", "Lover", "Soldier", "Detective", "Thief",
    "Angel", "Devil", "King", "Queen", "Prince", "Bride", "Ghost", "Killer", "Doctor", "Hotel",
    "Train", "Bridge", "Valley", "Ocean", "Desert", "Forest", "Mountain", "Planet", "Star",
    "Rain", "Wind", "Snow", "Blood", "Gold", "Dust", "Smoke", "Glass", "Stone", "Music",
    "Dance", "Song", "Secret", "Truth", "Lie", "War", "Peace", "Time", "Memory", "Silence",
    "Secretary", "Widow", "Orphan", "Empress", "Pirate", "Outlaw", "Spy", "Gambler", "Painter",
    "Professor", "Sheriff", "Diary", "Exile", "Rebellion", "Paradise",
)  # fmt: skip
_NAME = (
    "Anna", "Marcus", "Giliap", "Zoé", "Hélène", "Jürgen", "Saoirse", "O'Brien", "Björk",
    "Max", "Lena", "Tom", "Rosa", "Otto", "Ingrid", "Pablo", "Yuki", "Kenji", "Amélie",
    "François", "Grete", "Søren", "Nuño", "Agnès", "Mia", "Jack", "Lucy", "Harry", "Sam",
    "Eva", "Mr. Smith", "Dr. Kalman", "Captain Blake", "Ms. Ortiz", "Uncle Joe", "Mrs. Dalloway",
)  # fmt: skip
_PLACE = (
    "Paris", "Berlin", "Zürich", "Montréal", "São Paulo", "Kraków", "Düsseldorf", "Tokyo",
    "東京", "Istanbul", "Reykjavík", "Málaga", "New York", "Chicago", "Vienna", "Rome",
    "Texas", "Brooklyn", "Manhattan", "Tangier", "Köln", "Brasília", "Lódz", "Marseille",
)  # fmt: skip
_CJK = (
    "東京物語", "夜の河", "日本の夏", "七つの海", "静かな雨", "風の谷", "赤い橋", "花火",
    "月の光", "春の雪",
)  # fmt: skip
_FOREIGN = {  # (article, noun) pairs and suffixes per language; "" = no article
    "fr": ((("La", "Cité"), ("La", "Nuit"), ("Le", "Jardin"), ("Les", "Enfants"),
            ("L'", "Été"), ("Le", "Fleuve"), ("La", "Femme"), ("Le", "Samouraï")),
           ("des enfants perdus", "d'hiver", "des étoiles", "éternel", "à Paris", "du Nord")),
    "de": ((("Der", "Fluß"), ("Die", "Straße"), ("Das", "Märchen"), ("Die", "Brücke"),
            ("Der", "Himmel"), ("Das", "Boot")),
           ("im Süden", "der Nacht", "über Berlin", "für immer", "aus Köln")),
    "es": ((("El", "Camino"), ("La", "Noche"), ("Los", "Olvidados"), ("El", "Laberinto"),
            ("La", "Casa")),
           ("del sur", "sin fin", "de Málaga", "del fauno", "de papel")),
    "it": ((("Il", "Postino"), ("La", "Strada"), ("Il", "Sorpasso"), ("La", "Dolce"),
            ("Il", "Gattopardo")),
           ("di notte", "perduta", "d'oro", "vita", "di Roma")),
}  # fmt: skip
_FOREIGN_ARTICLES = ("La", "Le", "Les", "L'", "Der", "Die", "Das", "El", "Los", "Il")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")  # fmt: skip


def _move_article(title: str, articles: Sequence[str]) -> str:
    """`The Kingdom` -> `Kingdom, The`; `L'Été` -> `Été, L'` (MovieLens style)."""
    for a in articles:
        if a.endswith("'") and title.startswith(a) and len(title) > len(a):
            return f"{title[len(a) :]}, {a}"
        if title.startswith(a + " "):
            return f"{title[len(a) + 1 :]}, {a}"
    return title


def english_titles(rng: np.random.Generator, n: int) -> list[str]:
    """English-looking titles, some with commas, apostrophes, quotes and non-ASCII."""
    a = rng.integers(len(_ADJ), size=n).tolist()
    b = rng.integers(len(_NOUN), size=n).tolist()
    c = rng.integers(len(_NOUN), size=n).tolist()
    d = rng.integers(len(_NAME), size=n).tolist()
    e = rng.integers(len(_PLACE), size=n).tolist()
    f = rng.integers(2, 5, size=n).tolist()
    pats = [
        (0.22, lambda i: f"{_ADJ[a[i]]} {_NOUN[b[i]]}"),
        (0.14, lambda i: f"The {_ADJ[a[i]]} {_NOUN[b[i]]}"),
        (0.08, lambda i: f"The {_NOUN[b[i]]}"),
        (0.07, lambda i: f"{_NOUN[b[i]]} of the {_ADJ[a[i]]} {_NOUN[c[i]]}"),
        (0.06, lambda i: f"{_NAME[d[i]]}'s {_NOUN[b[i]]}"),
        (0.03, lambda i: f"{_NOUN[b[i]]}, {_NOUN[c[i]]} and {_NOUN[(b[i] + 7) % len(_NOUN)]}"),
        (0.05, lambda i: f"{_ADJ[a[i]]} {_NOUN[b[i]]}: The {_NOUN[c[i]]}"),
        (0.07, lambda i: f"A {_NOUN[b[i]]} in {_PLACE[e[i]]}"),
        (0.06, lambda i: f"{_NAME[d[i]]} and {_NAME[(d[i] + 5) % len(_NAME)]}"),
        (0.03, lambda i: f"{_ADJ[a[i]]} {_NOUN[b[i]]} {f[i]}"),
        (0.04, lambda i: _PLACE[e[i]]),
        (0.05, lambda i: _NAME[d[i]]),
        (0.03, lambda i: f"An Ode to {_NAME[d[i]]}"),
        (0.01, lambda i: _CJK[d[i] % len(_CJK)]),
        (0.005, lambda i: f"Untitled {_NAME[d[i]]} Project"),
    ]
    pats += [  # rare shapes that trip naive parsers
        (0.004, lambda i: f'"{_NAME[d[i]]}"'),
        (0.004, lambda i: f'The Man Who Said "{_NOUN[b[i]]}"'),
        (0.0005, lambda i: ("NA", "Null")[int(f[i]) % 2]),
    ]
    p = np.array([w for w, _ in pats])
    which = rng.choice(len(pats), size=n, p=p / p.sum())
    return [pats[w][1](i) for i, w in enumerate(which.tolist())]


FORCED_TITLES = ('"Giliap"', 'The Man Who Said "Stop"', "Anna, Max and Otto", "O'Brien's Son",
                 "Straße der Zürich Ängste", "東京物語", "NA", "Null")  # fmt: skip


def foreign_titles(rng: np.random.Generator, n: int) -> list[str]:
    """Original-language titles: French, German, Spanish, Italian (with articles) or Japanese."""
    langs = list(_FOREIGN)
    which = rng.integers(len(langs) + 1, size=n)
    i1 = rng.integers(100, size=n)
    i2 = rng.integers(100, size=n)
    out = []
    for w, x, y in zip(which.tolist(), i1.tolist(), i2.tolist(), strict=True):
        if w == len(langs):
            out.append(_CJK[x % len(_CJK)])
            continue
        pairs, suffixes = _FOREIGN[langs[w]]
        art, noun = pairs[x % len(pairs)]
        head = f"{art}{noun}" if art.endswith("'") else f"{art} {noun}"
        out.append(f"{head} {suffixes[y % len(suffixes)]}")
    return out


def episode_titles(rng: np.random.Generator, n: int) -> list[str]:
    """Episode titles: mostly "Episode #s.e", some dated, the rest like other titles."""
    kind = rng.choice(3, size=n, p=[0.55, 0.05, 0.40])
    s = rng.integers(1, 12, size=n)
    e = rng.integers(1, 40, size=n)
    day = rng.integers(1, 29, size=n)
    mon = rng.integers(12, size=n)
    yr = rng.integers(1950, 2024, size=n)
    other = iter(english_titles(rng, int((kind == 2).sum())))
    out = []
    for i, k in enumerate(kind.tolist()):
        if k == 0:
            out.append(f"Episode #{s[i]}.{e[i]}")
        elif k == 1:
            out.append(f"Episode dated {day[i]} {_MONTHS[mon[i]]} {yr[i]}")
        else:
            out.append(next(other))
    return out


def movielens_title(primary: str, original: str, year: int, with_year: bool, flip: bool) -> str:
    """MovieLens title: articles moved to the end, original title in parentheses, "(yyyy)"."""
    title = _move_article(primary, ("The", "A", "An"))
    if original != primary:
        alt = _move_article(original, _FOREIGN_ARTICLES)
        title = f"{title} ({alt})" if flip else f"{alt} ({title})"
    return f"{title} ({year})" if with_year else title
