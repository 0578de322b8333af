"""Sizes of a generated sample mirror (`PROFILES`) and where it was written (`SampleMirror`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SampleProfile:
    """Sizes of a generated mirror; `chunk_rows`/`chunk_users` bound the memory of one step."""

    name: str
    n_imdb_titles: int  # rows of title.basics
    n_users: int  # MovieLens users
    n_movies: int  # MovieLens movies
    mean_ratings_per_user: float  # before the per-user cap; every user has >= 20
    imdb_rated_share: float  # target share of basics rows that get a title.ratings row
    n_tags: int  # approximate rows of tags.csv
    eight_digit_share: float = 0.03  # share of tconsts with 8 digits (tt1xxxxxxx)
    missing_link_share: float = 0.04  # MovieLens links whose tconst is not in basics
    unrated_link_share: float = 0.025  # links in basics without a title.ratings row
    akas_per_title: float = 4.2  # mean title.akas rows of a title no MovieLens movie links to
    chunk_rows: int = 250_000
    chunk_users: int = 2_000


PROFILES: dict[str, SampleProfile] = {
    "small": SampleProfile("small", 4_000, 200, 800, 85.0, 0.4, 300),
    "demo": SampleProfile("demo", 150_000, 1_500, 8_000, 100.0, 0.25, 3_000),
    "full": SampleProfile(
        "full", 12_000_000, 162_000, 62_000, 154.0, 0.125, 1_000_000, eight_digit_share=0.3
    ),
}


@dataclass(frozen=True)
class SampleMirror:
    """Where `write_sample_mirror` put the files."""

    root: Path
    imdb_dir: Path
    basics: Path
    ratings: Path
    akas: Path
    movielens_zip: Path
    movielens_md5: Path
