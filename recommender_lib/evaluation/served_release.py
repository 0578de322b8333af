"""The served-quality release: a MovieLens release with its held-out ratings taken out.

`make_release` turns a MovieLens release into a smaller release of the same format with the
docs/architecture.md §6 held-out rows taken out (the same rules as
`recommender_lib.modeling.splits`):

- **cold users (P2)**: users ordered by `md5('<seed>:<user_id>')`, then `user_id`; the first
  `min(ceil(cold_user_fraction * n_users), n_users - 1)` are removed entirely;
- **warm test rows (P1)**: of every other user's ratings ordered by `(timestamp, movieId)`, the
  last `ceil(test_fraction * n)` are removed.

The platform is then run on the release (a `file://` URL and its `.md5`), and
`recommender_lib.evaluation.served_quality.measure_served` scores what the API serves against
the removed rows.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recommender_lib.atomic import atomic_path, write_text_atomic
from recommender_lib.sources.integrity import file_md5

RELEASE_NAME = "ml-latest-small"
COPIED_FILES = ("movies.csv", "links.csv", "README.txt")  # copied byte for byte
_EPS = 1e-9  # fractions become counts with ceil(fraction * n - 1e-9), as in splits.py
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: the same input gives the same zip
RATING_COLUMNS = ["user_id", "movie_id", "rating", "rating_ts"]


@dataclass(frozen=True, eq=False)
class HeldOut:
    """A release and what was removed from it.

    release: the kept ratings (source order); test: warm users' removed rows; cold: the cold
    users' rows with `reveal_rank` 1..n in `(rating_ts, movie_id)` order. Rating frames have
    columns `user_id, movie_id, rating, rating_ts`. `movie_ids`: every movie id of movies.csv
    (the baselines' catalogue and the coverage denominator); when None it is read from the zip,
    else taken from the ratings.
    """

    release: pd.DataFrame
    test: pd.DataFrame
    cold: pd.DataFrame
    zip_path: Path
    movie_ids: np.ndarray | None = None

    def catalogue(self) -> np.ndarray:
        """Every movie id of the release's movies.csv, ascending."""
        if self.movie_ids is not None:
            return np.unique(np.asarray(self.movie_ids, dtype=np.int64))
        if Path(self.zip_path).is_file():
            with zipfile.ZipFile(self.zip_path) as zf:
                member = next(n for n in zf.namelist() if n.endswith("/movies.csv"))
                with zf.open(member) as fh:
                    ids = pd.read_csv(fh, usecols=["movieId"])["movieId"]
            return np.unique(ids.to_numpy(dtype=np.int64))
        frames = (self.release, self.test, self.cold)
        return np.unique(np.concatenate([f["movie_id"].to_numpy(dtype=np.int64) for f in frames]))


# ------------------------------------------------------------------------------ the release


def _source_dir(src: Path) -> Path:
    src = Path(src)
    if (src / "ratings.csv").is_file():
        return src
    if (src / RELEASE_NAME / "ratings.csv").is_file():
        return src / RELEASE_NAME
    raise FileNotFoundError(f"{src}: no ratings.csv (expected an extracted MovieLens release)")


def _records(text: str) -> tuple[str, list[str]]:
    """(header line, data records) of CSV text, each with its own line ending kept verbatim.

    A record spans several lines while its double quotes are unbalanced; blank lines are dropped.
    """
    lines = text.split("\n")
    ends = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    records: list[str] = []
    pending = ""
    for line in ends:
        pending += line
        if pending.count('"') % 2 == 0:
            if pending.strip("\r\n"):
                records.append(pending)
            pending = ""
    if pending:
        records.append(pending)
    if not records:
        raise ValueError("empty CSV file")
    return records[0], records[1:]


def _ceil_share(fraction: float, n: np.ndarray | int) -> np.ndarray:
    return np.ceil(np.asarray(n, dtype=np.float64) * float(fraction) - _EPS).astype(np.int64)


def cold_user_ids(user_ids: Iterable[int], fraction: float, seed: int = 0) -> list[int]:
    """The P2 cold users of `recommender_lib.modeling.splits`: users ordered by
    md5('<seed>:<id>'), then id; the first min(ceil(fraction * n_users), n_users - 1)."""
    users = sorted({int(u) for u in user_ids})
    n = min(int(_ceil_share(fraction, len(users))), len(users) - 1) if users else 0
    key = {u: hashlib.md5(f"{int(seed)}:{u}".encode()).hexdigest() for u in users}
    return sorted(users, key=lambda u: (key[u], u))[: max(n, 0)]


def _positions(ratings: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each row's 1-based rank in its user's (rating_ts, movie_id) order, and the user's count."""
    order = ratings.sort_values(["user_id", "rating_ts", "movie_id"], kind="stable")
    pos = np.empty(len(ratings), dtype=np.int64)
    pos[ratings.index.get_indexer(order.index)] = order.groupby("user_id").cumcount().to_numpy() + 1
    n = ratings.groupby("user_id")["user_id"].transform("size").to_numpy(dtype=np.int64)
    return pos, n


def _zip_folder(folder: Path, target: Path) -> None:
    """Zip `folder` as one top folder (directory entry first), reproducibly."""
    with zipfile.ZipFile(target, "w") as zf:
        top = zipfile.ZipInfo(f"{folder.name}/", date_time=_ZIP_DATE)
        top.create_system = 3
        top.external_attr = (0o40755 << 16) | 0x10
        zf.writestr(top, b"")
        for path in sorted(folder.iterdir()):
            info = zipfile.ZipInfo(f"{folder.name}/{path.name}", date_time=_ZIP_DATE)
            info.create_system = 3
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())


def make_release(
    src: Path,
    dest: Path,
    test_fraction: float = 0.2,
    cold_user_fraction: float = 0.2,
    seed: int = 0,
) -> HeldOut:
    """Write `dest/ml-latest-small/`, `dest/ml-latest-small.zip` and its `.md5` without the
    held-out ratings; return what was kept and what was removed.

    `src` is an extracted release folder (or its parent). ratings.csv keeps the source's header,
    line endings, number formats and row order (kept lines are copied verbatim). movies.csv,
    links.csv and README.txt (the licence) are copied byte for byte, so the catalogue is whole.
    tags.csv keeps only the release users' tags, minus tags on their removed (user, movie)
    pairs, so no tag points at a held-out rating (the platform does not read tags today).
    Each output is written to a temporary name and renamed into place.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if not 0.0 <= cold_user_fraction < 1.0:
        raise ValueError(f"cold_user_fraction must be in [0, 1), got {cold_user_fraction}")
    src_dir, dest = _source_dir(src), Path(dest)
    missing = [n for n in ("ratings.csv", *COPIED_FILES) if not (src_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{src_dir}: missing {missing} (README.txt carries the licence)")

    header, lines = _records((src_dir / "ratings.csv").read_bytes().decode("utf-8"))
    raw = pd.read_csv(src_dir / "ratings.csv", dtype={"userId": np.int64, "movieId": np.int64})
    if len(raw) != len(lines):
        raise ValueError(f"ratings.csv: pandas read {len(raw)} rows, the line scan {len(lines)}")
    ratings = pd.DataFrame(
        {
            "user_id": raw["userId"].to_numpy(dtype=np.int64),
            "movie_id": raw["movieId"].to_numpy(dtype=np.int64),
            "rating": raw["rating"].to_numpy(dtype=np.float64),
            "rating_ts": raw["timestamp"].to_numpy(dtype=np.int64),
        }
    )
    pos, n = _positions(ratings)
    is_cold = (
        ratings["user_id"]
        .isin(cold_user_ids(ratings["user_id"], cold_user_fraction, seed))
        .to_numpy()
    )
    is_test = ~is_cold & (pos > n - _ceil_share(test_fraction, n))
    keep = ~is_cold & ~is_test

    release = ratings[keep].reset_index(drop=True)
    test = ratings[is_test].sort_values(["user_id", "rating_ts", "movie_id"], kind="stable")
    cold = ratings[is_cold].assign(reveal_rank=pos[is_cold])
    cold = cold.sort_values(["user_id", "reveal_rank"], kind="stable").reset_index(drop=True)

    dest.mkdir(parents=True, exist_ok=True)
    folder = dest / RELEASE_NAME
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        kept = [line for line, k in zip(lines, keep, strict=True) if k]
        (tmp / "ratings.csv").write_bytes((header + "".join(kept)).encode("utf-8"))
        for name in COPIED_FILES:
            shutil.copyfile(src_dir / name, tmp / name)
        if (src_dir / "tags.csv").is_file():
            (tmp / "tags.csv").write_bytes(_release_tags(src_dir / "tags.csv", release, test))
    zip_path = dest / f"{RELEASE_NAME}.zip"
    with atomic_path(zip_path) as tmp:
        _zip_folder(folder, tmp)
    write_text_atomic(
        dest / f"{zip_path.name}.md5", f"MD5 ({zip_path.name}) = {file_md5(zip_path)}\n"
    )
    movie_ids = pd.read_csv(src_dir / "movies.csv", usecols=["movieId"])["movieId"]
    return HeldOut(
        release=release,
        test=test.reset_index(drop=True),
        cold=cold,
        zip_path=zip_path,
        movie_ids=np.unique(movie_ids.to_numpy(dtype=np.int64)),
    )


def _release_tags(path: Path, release: pd.DataFrame, test: pd.DataFrame) -> bytes:
    """tags.csv lines (verbatim) of release users, minus those on their removed pairs."""
    header, lines = _records(path.read_bytes().decode("utf-8"))
    users = set(release["user_id"].tolist())
    removed = set(zip(test["user_id"].tolist(), test["movie_id"].tolist(), strict=True))
    kept = []
    for line, row in zip(lines, csv.reader(lines), strict=True):
        user, movie = int(row[0]), int(row[1])
        if user in users and (user, movie) not in removed:
            kept.append(line)
    return (header + "".join(kept)).encode("utf-8")
