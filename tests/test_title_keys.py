"""The vectorised search keys equal `title_keys` text by text (the build speed-up)."""

from __future__ import annotations

import random

from recommender_lib.index.title_keys import keys_of_texts, row_keys, title_keys

TRICKY = [
    "Matrix, The", "Seventh Seal, the", " a k a  Se7en", "aka Rocky II", "Rocky II", "The",
    "the the", "A", "a k a", "Star Wars: Episode IV - A New Hope", "Les Miserables, Les",
    "Foo,  An", "Vi", "iv&v", "__ii__", "x\\ii", "Amelie, La  ", "Hamlet, L", "L'Atalante",
    "Seven (a.k.a. Se7en)", "Amélie", "Schindler's List", "Don`t", "Ｔｈｅ Ｍａｔｒｉｘ", "",
    "   ", "!!!", "Rocky IX: 2 & III", "The   Godfather: Part II", "Ⅱ", "Æon Flux", "a\tb",
    "Straße", "Episode #7.33", "Fast & Furious, The",
]  # fmt: skip


def test_vectorised_keys_equal_title_keys() -> None:
    rng = random.Random(5)
    alphabet = " -&,.:;!?/'()`ABCxyzTheAnLaIiVvXx0123_@#$%^*+=<>[]{}|~\\\"éß"
    words = ["the", "a", "an", "la", "ii", "iv", "vi", "aka", "a k a", ",", " ", "&", "x"]
    texts = TRICKY + [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14))) for _ in range(3000)
    ]
    texts += [" ".join(rng.choice(words) for _ in range(rng.randint(1, 6))) for _ in range(3000)]
    known = keys_of_texts(texts)
    assert set(known) == set(texts)
    for text in texts:
        assert known[text] == title_keys(text), text


def test_row_keys_merge_and_skip_missing() -> None:
    keys, phrases = row_keys(
        ["The Matrix", None, "Amelie"], [["Matrix, The", "Die Matrix"], ["x"], [None, "Amélie"]]
    )
    assert keys == [["the matrix", "matrix", "die matrix"], [], ["amelie"]]
    assert phrases == [["the matrix", "die matrix"], [], ["amelie"]]
