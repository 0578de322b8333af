"""Deterministic generator of a "sample mirror": IMDb and MovieLens files in the exact formats.

The files imitate the official dumps byte for byte in layout (docs/architecture.md §5) and carry the
quirks a loader must survive (`\\N` nulls, titles beginning with `"`, quoted CSV titles, CRLF, empty
`tmdbId`, links to titles missing from IMDb, ...). The MovieLens ratings come from a hidden model
(biases, genre tastes, latent factors, popularity-driven exposure) so that a recommender trained on
them beats the baselines the way it does on real data. The latent parameters are never written.

Usage: ``python -m recommender_lib.sources.sample_data --out DIR
[--profile small|demo|full] [--seed N]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from recommender_lib.sources import formats
from recommender_lib.sources.sample_data.imdb import IMDB_SAMPLE_FILES, write_imdb
from recommender_lib.sources.sample_data.movielens import write_movielens
from recommender_lib.sources.sample_data.movies import make_catalog
from recommender_lib.sources.sample_data.profiles import PROFILES, SampleMirror, SampleProfile

__all__ = [
    "ONLY_CHOICES",
    "PROFILES",
    "SampleMirror",
    "SampleProfile",
    "main",
    "write_sample_mirror",
]


# `--only` choices: which files a partial mirror writes (the full-scale akas bench needs only
# the akas dump; every file's bytes are the same as in a complete mirror of that seed).
ONLY_CHOICES: dict[str, tuple[str, ...]] = {
    "all": (*IMDB_SAMPLE_FILES, formats.MOVIELENS_DEFAULT_ZIP),
    "imdb": IMDB_SAMPLE_FILES,
    "akas": (formats.IMDB_AKAS_FILE,),
}


def write_sample_mirror(
    out_dir: Path,
    profile: str | SampleProfile = "small",
    seed: int = 0,
    *,
    crlf: bool = True,
    only: str = "all",
) -> SampleMirror:
    """Generate the IMDb and MovieLens sample files under `out_dir` (same seed, same bytes);
    `only` (`ONLY_CHOICES`) limits which files are written."""
    if only not in ONLY_CHOICES:
        raise ValueError(f"unknown file set {only!r}; choose from {sorted(ONLY_CHOICES)}")
    if isinstance(profile, str) and profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    p = PROFILES[profile] if isinstance(profile, str) else profile
    root = Path(out_dir)
    cat, ids = make_catalog(seed, p)
    imdb_dir = root / "imdb"
    files = ONLY_CHOICES[only]
    write_imdb(imdb_dir, seed, p, ids, cat, [f for f in IMDB_SAMPLE_FILES if f in files])
    ml_dir = root / "movielens"
    zip_path = ml_dir / formats.MOVIELENS_DEFAULT_ZIP
    md5_path = ml_dir / f"{formats.MOVIELENS_DEFAULT_ZIP}.md5"
    if formats.MOVIELENS_DEFAULT_ZIP in files:
        zip_path, md5_path = write_movielens(ml_dir, seed, p, cat, "\r\n" if crlf else "\n")
    return SampleMirror(
        root=root,
        imdb_dir=imdb_dir,
        basics=imdb_dir / formats.IMDB_BASICS_FILE,
        ratings=imdb_dir / formats.IMDB_RATINGS_FILE,
        akas=imdb_dir / formats.IMDB_AKAS_FILE,
        movielens_zip=zip_path,
        movielens_md5=md5_path,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: write a sample mirror and print what was written."""
    ap = argparse.ArgumentParser(
        prog="python -m recommender_lib.sources.sample_data", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--profile", choices=sorted(PROFILES), default="small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lf", action="store_true", help="LF line endings in the MovieLens CSVs")
    ap.add_argument(
        "--only", choices=sorted(ONLY_CHOICES), default="all", help="write only these files"
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    mirror = write_sample_mirror(
        args.out, args.profile, args.seed, crlf=not args.lf, only=args.only
    )
    paths = (mirror.basics, mirror.ratings, mirror.akas, mirror.movielens_zip, mirror.movielens_md5)
    for path in paths:
        if path.is_file():
            print(f"{path}\t{path.stat().st_size:,} bytes")
    print(f"profile {args.profile}, seed {args.seed}: {time.perf_counter() - t0:.1f} s")
    return 0
