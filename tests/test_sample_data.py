"""Tests for the sample-mirror generator (small profile; full-profile chunking scaled down)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import re
import time
import zipfile
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from recommender_lib.sources import formats
from recommender_lib.sources.sample_data import PROFILES, SampleMirror, main, write_sample_mirror

ML = "ml-latest-small"
BASICS_TYPES = {
    "tconst": "VARCHAR",
    "titleType": "VARCHAR",
    "primaryTitle": "VARCHAR",
    "originalTitle": "VARCHAR",
    "isAdult": "INTEGER",
    "startYear": "INTEGER",
    "endYear": "INTEGER",
    "runtimeMinutes": "INTEGER",
    "genres": "VARCHAR",
}
RATINGS_TYPES = {"tconst": "VARCHAR", "averageRating": "DOUBLE", "numVotes": "INTEGER"}


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> SampleMirror:
    return write_sample_mirror(tmp_path_factory.mktemp("mirror"), "small", seed=0)


@pytest.fixture(scope="module")
def basics(mirror: SampleMirror) -> pd.DataFrame:
    return _read_tsv(mirror.basics)


@pytest.fixture(scope="module")
def imdb_ratings(mirror: SampleMirror) -> pd.DataFrame:
    return _read_tsv(mirror.ratings)


@pytest.fixture(scope="module")
def ml(mirror: SampleMirror) -> dict[str, pd.DataFrame]:
    with zipfile.ZipFile(mirror.movielens_zip) as zf:
        return {
            name: pd.read_csv(io.BytesIO(zf.read(f"{ML}/{name}")), dtype={"imdbId": str})
            for name in formats.MOVIELENS_FILES
        }


def _read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", quoting=3, na_values="\\N", keep_default_na=False)


def _duck_tsv(path: Path, columns: dict[str, str]) -> str:
    """The strict IMDb read: no quoting, no escape, `\\N` nulls, explicit column types."""
    cols = ", ".join(f"'{k}': '{v}'" for k, v in columns.items())
    return (
        f"read_csv('{path}', delim='\\t', header=true, quote='', escape='', "
        f"nullstr='\\N', columns={{{cols}}})"
    )


def _tconst_num(frame: pd.DataFrame) -> pd.Series:
    return frame.tconst.str[2:].astype(int)


def _raw_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().split("\n")


def _zip_member(mirror: SampleMirror, name: str) -> bytes:
    with zipfile.ZipFile(mirror.movielens_zip) as zf:
        return zf.read(f"{ML}/{name}")


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# ------------------------------------------------------------------------------ files, bytes


def test_layout_and_md5(mirror: SampleMirror) -> None:
    assert mirror.basics == mirror.root / "imdb" / formats.IMDB_BASICS_FILE
    assert mirror.ratings == mirror.root / "imdb" / formats.IMDB_RATINGS_FILE
    assert mirror.akas == mirror.root / "imdb" / formats.IMDB_AKAS_FILE
    assert mirror.movielens_zip == mirror.root / "movielens" / formats.MOVIELENS_DEFAULT_ZIP
    paths = (mirror.basics, mirror.ratings, mirror.akas, mirror.movielens_zip, mirror.movielens_md5)
    for path in paths:
        assert path.is_file() and path.stat().st_size > 0
    assert not [p for p in mirror.root.rglob(".*")], "temporary files left behind"
    digest = hashlib.md5(mirror.movielens_zip.read_bytes()).hexdigest()
    assert mirror.movielens_md5.read_text() == f"MD5 (ml-latest-small.zip) = {digest}\n"


def test_same_seed_same_bytes_other_seed_differs(mirror: SampleMirror, tmp_path: Path) -> None:
    again = write_sample_mirror(tmp_path / "again", "small", seed=0)
    other = write_sample_mirror(tmp_path / "other", "small", seed=1)
    first = _tree_bytes(mirror.root)
    assert _tree_bytes(again.root) == first
    second = _tree_bytes(other.root)
    assert second.keys() == first.keys()
    assert all(second[k] != first[k] for k in first)


def test_small_profile_is_fast(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    write_sample_mirror(tmp_path, "small", seed=5)
    assert time.perf_counter() - t0 < 5.0


def test_zip_holds_one_folder_with_clean_crcs(mirror: SampleMirror) -> None:
    with zipfile.ZipFile(mirror.movielens_zip) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        readme = zf.read(f"{ML}/README.txt").decode()
    assert {n.split("/")[0] for n in names} == {ML}
    assert {f"{ML}/{f}" for f in (*formats.MOVIELENS_FILES, "README.txt")} <= set(names)
    assert "SYNTHETIC" in readme and "NOT GroupLens" in readme


# -------------------------------------------------------------------------------------- IMDb


def test_imdb_parses_with_duckdb_and_pandas(
    mirror: SampleMirror, basics: pd.DataFrame, imdb_ratings: pd.DataFrame
) -> None:
    con = duckdb.connect()
    schema = con.execute(f"DESCRIBE SELECT * FROM {_duck_tsv(mirror.basics, BASICS_TYPES)}")
    types = {row[0]: row[1] for row in schema.fetchall()}
    assert list(types) == list(formats.IMDB_BASICS_COLUMNS) and types["startYear"] == "INTEGER"
    n_duck, n_year, n_adult = con.execute(
        "SELECT count(*), count(startYear), sum(isAdult) "
        f"FROM {_duck_tsv(mirror.basics, BASICS_TYPES)}"
    ).fetchone()
    assert n_duck == len(basics) == PROFILES["small"].n_imdb_titles
    assert n_year == basics.startYear.notna().sum() and 0 < n_year < n_duck
    assert n_adult == basics.isAdult.sum()
    assert list(basics.columns) == list(formats.IMDB_BASICS_COLUMNS)
    n_rated = con.execute(f"SELECT count(*) FROM {_duck_tsv(mirror.ratings, RATINGS_TYPES)}")
    assert n_rated.fetchone()[0] == len(imdb_ratings)
    assert list(imdb_ratings.columns) == list(formats.IMDB_RATINGS_COLUMNS)


def test_imdb_values(basics: pd.DataFrame, imdb_ratings: pd.DataFrame) -> None:
    assert basics.tconst.str.fullmatch(r"tt\d{7,8}").all() and basics.tconst.is_unique
    assert (basics.tconst.str.len() == 10).any()  # some 8-digit ids
    assert _tconst_num(basics).is_monotonic_increasing  # numeric order, like the real dump
    assert set(basics.titleType) == set(formats.IMDB_TITLE_TYPES)
    counts = basics.titleType.value_counts()
    assert counts.index[0] == "tvEpisode" and counts["movie"] > counts["tvSeries"]
    assert set(basics.isAdult) == {0, 1}
    genres = basics.genres.dropna().str.split(",")
    assert genres.map(len).between(1, 3).all()
    assert set(genres.explode()) <= set(formats.IMDB_GENRES)
    adult = basics[basics.isAdult == 1]
    assert adult.genres.str.contains("Adult").all()
    for col in ("startYear", "endYear", "runtimeMinutes", "genres"):
        assert basics[col].isna().any(), col
    series = basics[basics.endYear.notna()]
    assert len(series) and set(series.titleType) <= {"tvSeries", "tvMiniSeries"}
    assert (series.endYear >= series.startYear).all()
    assert _tconst_num(imdb_ratings).is_monotonic_increasing and imdb_ratings.tconst.is_unique
    assert imdb_ratings.tconst.isin(basics.tconst).all()
    assert imdb_ratings.averageRating.between(1.0, 10.0).all()
    assert (imdb_ratings.numVotes >= 5).all() and imdb_ratings.numVotes.max() > 10_000


def test_imdb_raw_quirks(mirror: SampleMirror) -> None:
    lines = _raw_lines(mirror.basics)
    assert lines[0] == "\t".join(formats.IMDB_BASICS_COLUMNS) and lines[-1] == ""
    rows = [line.split("\t") for line in lines[1:-1]]
    assert all(len(r) == len(formats.IMDB_BASICS_COLUMNS) for r in rows)
    titles = [r[2] for r in rows]
    assert any(t.startswith('"') for t in titles)
    assert any('"' in t[1:] for t in titles)
    assert any("," in t for t in titles) and any("'" in t for t in titles)
    assert any(re.search(r"[éüßö]", t) for t in titles) and any("東京" in t for t in titles)
    assert {"NA", "Null"} <= set(titles)  # must stay strings: keep_default_na=False
    assert any(r[2] != r[3] for r in rows)
    assert any(formats.IMDB_NULL in r for r in rows)
    rlines = _raw_lines(mirror.ratings)
    assert rlines[0] == "\t".join(formats.IMDB_RATINGS_COLUMNS)
    assert all(re.fullmatch(r"tt\d{7,8}\t\d{1,2}\.\d\t\d+", line) for line in rlines[1:-1])


# --------------------------------------------------------------------------------- MovieLens


def test_movielens_raw_quirks(mirror: SampleMirror) -> None:
    for name, header in formats.MOVIELENS_FILES.items():
        raw = _zip_member(mirror, name)
        assert raw.startswith((",".join(header) + "\r\n").encode())
        assert raw.count(b"\n") == raw.count(b"\r\n")
    movies = _zip_member(mirror, "movies.csv").decode()
    assert re.search(r'\n\d+,"[^"\r\n]*, The \(\d{4}\)",', movies)  # quoted comma title
    assert formats.MOVIELENS_NO_GENRES in movies and "|IMAX" in movies
    assert re.search(r'\n\d+,"[^"\r\n]*, (La|Le|Les|Il|El|Der|Die|Das|Los|L\') \(', movies)
    links = _zip_member(mirror, "links.csv").decode()
    assert re.search(r"\n\d+,0\d{6},", links)  # zero-padded imdbId
    assert re.search(r"\n\d+,\d{7,8},\r\n", links)  # empty tmdbId
    tags = _zip_member(mirror, "tags.csv").decode()
    assert re.search(r'\n\d+,\d+,"[^"\r\n]*,[^"\r\n]*",\d+\r\n', tags)  # tag with a comma


def test_movielens_values(ml: dict[str, pd.DataFrame]) -> None:
    ratings, movies, links = ml["ratings.csv"], ml["movies.csv"], ml["links.csv"]
    for name, frame in ml.items():
        assert list(frame.columns) == list(formats.MOVIELENS_FILES[name])
    assert set(ratings.rating.unique()) <= {h / 2 for h in range(1, 11)}
    assert not ratings.duplicated(["userId", "movieId"]).any()
    per_user = ratings.groupby("userId").size()
    assert per_user.min() >= 20 and per_user.max() > 3 * per_user.median()
    assert per_user.index.tolist() == list(range(1, PROFILES["small"].n_users + 1))
    assert 10_000 < len(ratings) < 20_000
    assert 3.1 < ratings.rating.mean() < 3.9
    assert ratings.movieId.isin(movies.movieId).all()
    assert ratings.timestamp.between(820454400, 1704067199).all()
    assert movies.movieId.is_unique and links.movieId.tolist() == movies.movieId.tolist()
    genres = movies.genres.str.split("|").explode()
    assert set(genres) <= set(formats.MOVIELENS_GENRES)
    assert (~movies.title.str.contains(r"\(\d{4}\)$")).any()
    assert links.imdbId.str.fullmatch(r"\d{7,8}").all() and links.imdbId.is_unique
    assert links.tmdbId.isna().any()
    tags = ml["tags.csv"]
    assert len(tags) > 100 and tags.tag.str.contains(",").any()
    assert (
        pd.MultiIndex.from_frame(tags[["userId", "movieId"]])
        .isin(pd.MultiIndex.from_frame(ratings[["userId", "movieId"]]))
        .all()
    )


def test_movielens_parses_with_duckdb(
    mirror: SampleMirror, ml: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    with zipfile.ZipFile(mirror.movielens_zip) as zf:
        zf.extractall(tmp_path)
    folder = tmp_path / ML
    con = duckdb.connect()
    n, lo, hi = con.execute(
        f"SELECT count(*), min(rating), max(rating) FROM read_csv('{folder / 'ratings.csv'}')"
    ).fetchone()
    assert n == len(ml["ratings.csv"]) and lo >= 0.5 and hi <= 5.0
    titles = con.execute(f"SELECT title FROM read_csv('{folder / 'movies.csv'}')").fetchall()
    assert [t[0] for t in titles] == ml["movies.csv"].title.tolist()
    assert any(", The (" in t[0] for t in titles)
    imdb = con.execute(
        f"SELECT imdbId FROM read_csv('{folder / 'links.csv'}', types={{'imdbId': 'VARCHAR'}})"
    ).fetchall()
    assert [i[0] for i in imdb] == ml["links.csv"].imdbId.tolist()
    n_tags = con.execute(f"SELECT count(*) FROM read_csv('{folder / 'tags.csv'}')").fetchone()
    assert n_tags[0] == len(ml["tags.csv"])


def test_lf_variant(tmp_path: Path) -> None:
    mirror = write_sample_mirror(tmp_path, "small", seed=0, crlf=False)
    for name in formats.MOVIELENS_FILES:
        raw = _zip_member(mirror, name)
        assert b"\r" not in raw and raw.endswith(b"\n")


# ----------------------------------------------------------------------------------- linkage


def test_links_cover_imdb(
    basics: pd.DataFrame, imdb_ratings: pd.DataFrame, ml: dict[str, pd.DataFrame]
) -> None:
    links = ml["links.csv"].merge(ml["movies.csv"], on="movieId")
    links["tconst"] = "tt" + links.imdbId
    in_basics = links.tconst.isin(basics.tconst)
    assert in_basics.mean() >= 0.9 and not in_basics.all()
    assert (in_basics & ~links.tconst.isin(imdb_ratings.tconst)).any()
    linked = links[in_basics].merge(basics, on="tconst")
    assert set(linked.titleType) <= {"movie", "tvMovie", "tvSeries", "tvMiniSeries", "video"}
    assert (linked.isAdult == 0).all()
    year = linked.title.str.extract(r"\((\d{4})\)$")[0].astype(float)
    assert (year.dropna() == linked.startYear[year.notna()]).all()
    no_genres = linked.genres_x == formats.MOVIELENS_NO_GENRES
    assert linked.genres_y[~no_genres].notna().mean() > 0.99
    fam = linked.genres_y.fillna("").str.contains("Family")
    assert linked.genres_x[fam].str.contains("Children").all()


def test_ratings_follow_release(ml: dict[str, pd.DataFrame]) -> None:
    movies = ml["movies.csv"]
    year = movies.set_index("movieId").title.str.extract(r"\((\d{4})\)$")[0].astype(float)
    r = ml["ratings.csv"].join(year.rename("year"), on="movieId").dropna()
    rated_year = pd.to_datetime(r.timestamp, unit="s").dt.year
    assert (rated_year >= r.year).mean() > 0.98


# --------------------------------------------------------------------------------- structure


def test_bias_baseline_beats_global_mean(ml: dict[str, pd.DataFrame]) -> None:
    """Per-user temporal 80/20 split: damped user+item biases beat the mean by >= 3 % RMSE."""
    r = ml["ratings.csv"].sort_values(["userId", "timestamp", "movieId"])
    pos = r.groupby("userId").cumcount()
    size = r.groupby("userId").userId.transform("size")
    test = pos >= size - np.ceil(0.2 * size)
    train, held = r[~test], r[test]
    mu = train.rating.mean()
    item = train.assign(d=train.rating - mu).groupby("movieId").d.agg(["sum", "count"])
    b_i = item["sum"] / (item["count"] + 25)
    resid = train.rating - mu - train.movieId.map(b_i)
    user = train.assign(d=resid).groupby("userId").d.agg(["sum", "count"])
    b_u = user["sum"] / (user["count"] + 10)
    pred = mu + held.movieId.map(b_i).fillna(0) + held.userId.map(b_u).fillna(0)
    rmse_mean = np.sqrt(((held.rating - mu) ** 2).mean())
    rmse_bias = np.sqrt(((held.rating - pred.clip(0.5, 5)) ** 2).mean())
    assert rmse_bias < 0.97 * rmse_mean


# ----------------------------------------------------------------------------- chunking, CLI


def test_chunked_path_with_tiny_chunks(tmp_path: Path) -> None:
    """The full profile's chunking, exercised with tiny chunks on a scaled profile."""
    prof = dataclasses.replace(
        PROFILES["full"],
        name="scaled-full",
        n_imdb_titles=3_000,
        n_users=50,
        n_movies=300,
        mean_ratings_per_user=40,
        n_tags=60,
        chunk_rows=257,
        chunk_users=7,
    )
    mirror = write_sample_mirror(tmp_path, prof, seed=3)
    basics = _read_tsv(mirror.basics)
    ratings = _read_tsv(mirror.ratings)
    assert len(basics) == 3_000 and basics.tconst.is_unique
    assert _tconst_num(basics).is_monotonic_increasing
    assert _tconst_num(ratings).is_monotonic_increasing
    assert (basics.tconst.str.len() == 10).mean() > 0.2  # eight_digit_share of the full profile
    assert 0.05 < len(ratings) / len(basics) < 0.5
    with zipfile.ZipFile(mirror.movielens_zip) as zf:
        ml_ratings = pd.read_csv(io.BytesIO(zf.read(f"{ML}/ratings.csv")))
        tags = pd.read_csv(io.BytesIO(zf.read(f"{ML}/tags.csv")))
    assert ml_ratings.userId.unique().tolist() == list(range(1, 51))
    assert ml_ratings.groupby("userId").size().min() >= 20
    assert not ml_ratings.duplicated(["userId", "movieId"]).any()
    assert (ml_ratings.groupby("userId").movieId.diff().dropna() > 0).all()
    assert len(tags) > 0
    akas = _read_tsv(mirror.akas)
    assert akas.titleId.isin(basics.tconst).all() and akas.titleId.nunique() > 2_500
    assert not akas.duplicated(["titleId", "ordering"]).any()
    assert _tconst_num(akas.rename(columns={"titleId": "tconst"})).is_monotonic_increasing


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--profile", "small", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "title.basics.tsv.gz" in out and "ml-latest-small.zip" in out
    assert formats.IMDB_AKAS_FILE in out
    assert (tmp_path / "movielens" / "ml-latest-small.zip.md5").is_file()


def test_cli_only_akas_writes_the_same_akas_bytes(tmp_path: Path, mirror: SampleMirror) -> None:
    assert main(["--out", str(tmp_path), "--profile", "small", "--only", "akas"]) == 0
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == [f"imdb/{formats.IMDB_AKAS_FILE}"]
    assert (tmp_path / files[0]).read_bytes() == mirror.akas.read_bytes()
