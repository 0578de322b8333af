"""Generated poster placeholders: a title's initials on a colour derived from its genre."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from xml.sax.saxutils import escape

from recommender_lib.index.title_search import ARTICLES

WIDTH, HEIGHT = 200, 300  # the 2:3 shape of a poster
NO_GENRE_HUE = 220


def initials(title: str, most: int = 2) -> str:
    """Up to `most` initials of a title's words, its leading article skipped: "The Matrix
    Reloaded" -> "MR"; "?" when it has no letters or digits."""
    words = ["".join(c for c in w if c.isalnum()) for w in title.split()]
    words = [w for w in words if w]
    if len(words) > 1 and words[0].casefold() in ARTICLES:
        words = words[1:]
    return "".join(w[0] for w in words[:most]).upper() or "?"


def genre_hue(genres: Sequence[str]) -> int:
    """A stable hue (0-359) for a title's first genre; one hue for titles without genres."""
    return zlib.crc32(genres[0].encode()) % 360 if genres else NO_GENRE_HUE


def placeholder_svg(title: str, genres: Sequence[str]) -> bytes:
    """A 200x300 SVG: the initials of `title` on a gradient in its genre's hue."""
    hue = genre_hue(genres)
    label = escape(title)
    return f"""<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" \
viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title, {'"': "&quot;"})}">
<title>{label}</title>
<defs><linearGradient id="g" x1="0" y1="0" x2="0" y2="1">
<stop offset="0" stop-color="hsl({hue},45%,42%)"/><stop offset="1" stop-color="hsl({hue},50%,22%)"/>
</linearGradient></defs>
<rect width="100%" height="100%" fill="url(#g)"/>
<text x="50%" y="50%" dominant-baseline="central" text-anchor="middle" \
font-family="system-ui,sans-serif" font-size="72" font-weight="600" fill="#fff" \
fill-opacity="0.9">{escape(initials(title))}</text>
</svg>
""".encode()
