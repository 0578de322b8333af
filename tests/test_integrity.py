"""Integrity checks: gzip TSV streams, MovieLens zips, checksum files."""

from __future__ import annotations

import gzip
import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from recommender_lib.sources import formats
from recommender_lib.sources.integrity import (
    IntegrityError,
    extract_zip,
    file_md5,
    file_sha256,
    parse_md5_file,
    verify_gzip_tsv,
    verify_movielens_zip,
)

BASICS_ROWS = [
    "tt0000001\tshort\tCarmencita\tCarmencita\t0\t1894\t\\N\t1\tDocumentary,Short",
    'tt0114709\tmovie\t"Giliap"\t"Giliap"\t0\t1975\t\\N\t137\tCrime,Drama',
    "tt0903747\ttvSeries\tBreaking Bad\tBreaking Bad\t0\t2008\t2013\t49\tCrime,Drama,Thriller",
]


def basics_tsv(rows: list[str] = BASICS_ROWS, columns: tuple[str, ...] | None = None) -> bytes:
    header = "\t".join(columns or formats.IMDB_BASICS_COLUMNS)
    return ("\n".join([header, *rows]) + "\n").encode()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def movielens_files(eol: str = "\n", bom: bool = False) -> dict[str, str]:
    rows = {
        "ratings.csv": ["1,1,4.0,964982703", "1,3,4.0,964981247"],
        "movies.csv": ["1,Toy Story (1995),Adventure|Animation", '3,"Grumpier Old Men, The",IMAX'],
        "links.csv": ["1,0114709,862", "3,0113228,"],
        "tags.csv": ["2,60756,funny,1445714994"],
    }
    files = {}
    for name, lines in rows.items():
        text = eol.join([",".join(formats.MOVIELENS_FILES[name]), *lines]) + eol
        files[name] = ("\ufeff" if bom else "") + text
    return files


def movielens_zip(
    files: dict[str, str] | None = None,
    folder: str = "ml-latest-small",
    compression: int = zipfile.ZIP_DEFLATED,
) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        if folder:
            zf.writestr(f"{folder}/", "")
        for name, text in (movielens_files() if files is None else files).items():
            zf.writestr(f"{folder}/{name}" if folder else name, text)
    return buf.getvalue()


# --------------------------------------------------------------------------- gzip TSV


def test_gzip_tsv_counts_data_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "b.tsv.gz", gzip.compress(basics_tsv()))
    assert verify_gzip_tsv(path, formats.IMDB_BASICS_COLUMNS) == 3


def test_gzip_tsv_header_only_and_unterminated_last_line(tmp_path: Path) -> None:
    only = write(tmp_path / "h.gz", gzip.compress(basics_tsv(rows=[])))
    assert verify_gzip_tsv(only, formats.IMDB_BASICS_COLUMNS) == 0
    unterminated = write(tmp_path / "u.gz", gzip.compress(basics_tsv().rstrip(b"\n")))
    assert verify_gzip_tsv(unterminated, formats.IMDB_BASICS_COLUMNS) == 3


def test_gzip_tsv_multi_member(tmp_path: Path) -> None:
    data = basics_tsv()
    split = data.index(b"\n") + 5
    path = write(tmp_path / "m.gz", gzip.compress(data[:split]) + gzip.compress(data[split:]))
    assert verify_gzip_tsv(path, formats.IMDB_BASICS_COLUMNS) == 3


def test_gzip_tsv_large_stream_is_read_to_the_end(tmp_path: Path) -> None:
    rows = BASICS_ROWS * 100_000  # ~25 MB raw: crosses many read and inflate blocks
    path = write(tmp_path / "big.gz", gzip.compress(basics_tsv(rows), compresslevel=1))
    assert verify_gzip_tsv(path, formats.IMDB_BASICS_COLUMNS) == 300_000


def test_gzip_tsv_truncated(tmp_path: Path) -> None:
    data = gzip.compress(basics_tsv(BASICS_ROWS * 50))
    path = write(tmp_path / "t.gz", data[: len(data) // 2])
    with pytest.raises(IntegrityError, match="truncated gzip stream") as err:
        verify_gzip_tsv(path, formats.IMDB_BASICS_COLUMNS)
    assert str(path) in str(err.value)


def test_gzip_tsv_crc_mismatch(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(basics_tsv()))
    data[-8] ^= 0x01  # first byte of the CRC32 trailer
    path = write(tmp_path / "c.gz", bytes(data))
    with pytest.raises(IntegrityError, match="CRC mismatch"):
        verify_gzip_tsv(path, formats.IMDB_BASICS_COLUMNS)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"tconst\ttitleType\n", "not a gzip file"),
        (b"", "not a gzip file .*empty"),
        (gzip.compress(b"") + b"garbage", "trailing garbage"),
        (gzip.compress(b""), "empty"),
    ],
)
def test_gzip_tsv_rejects_non_gzip(tmp_path: Path, payload: bytes, message: str) -> None:
    with pytest.raises(IntegrityError, match=message):
        verify_gzip_tsv(write(tmp_path / "x.gz", payload), formats.IMDB_BASICS_COLUMNS)


def test_gzip_tsv_schema_drift_names_columns(tmp_path: Path) -> None:
    drifted = tuple(c for c in formats.IMDB_BASICS_COLUMNS if c != "runtimeMinutes")
    path = write(tmp_path / "d.gz", gzip.compress(basics_tsv(columns=(*drifted, "runtime"))))
    with pytest.raises(IntegrityError, match="schema drift") as err:
        verify_gzip_tsv(path, formats.IMDB_BASICS_COLUMNS)
    assert "missing ['runtimeMinutes']" in str(err.value)
    assert "unexpected ['runtime']" in str(err.value)


def test_gzip_tsv_header_must_match_exactly(tmp_path: Path) -> None:
    crlf = basics_tsv().replace(b"\n", b"\r\n", 1)
    path = write(tmp_path / "r.gz", gzip.compress(crlf))
    with pytest.raises(IntegrityError, match="header mismatch"):
        verify_gzip_tsv(path, formats.IMDB_BASICS_COLUMNS)
    ratings = "\t".join(formats.IMDB_RATINGS_COLUMNS) + "\ntt0000001\t5.7\t2100\n"
    ok = write(tmp_path / "ratings.gz", gzip.compress(ratings.encode()))
    assert verify_gzip_tsv(ok, formats.IMDB_RATINGS_COLUMNS) == 1


# --------------------------------------------------------------------------- MovieLens zip


@pytest.mark.parametrize(("eol", "bom"), [("\n", False), ("\r\n", False), ("\r\n", True)])
def test_movielens_zip_ok(tmp_path: Path, eol: str, bom: bool) -> None:
    path = write(tmp_path / "ml.zip", movielens_zip(movielens_files(eol, bom)))
    assert verify_movielens_zip(path) == "ml-latest-small"


def test_movielens_zip_tags_optional(tmp_path: Path) -> None:
    files = movielens_files()
    del files["tags.csv"]
    path = write(tmp_path / "ml.zip", movielens_zip(files, folder="ml-25m"))
    assert verify_movielens_zip(path) == "ml-25m"


def test_movielens_zip_bad_crc(tmp_path: Path) -> None:
    data = bytearray(movielens_zip(compression=zipfile.ZIP_STORED))
    at = data.index(b"Toy Story")
    data[at] ^= 0x20  # same length, different bytes: only the CRC notices
    with pytest.raises(IntegrityError, match=r"CRC mismatch in zip member .*movies\.csv"):
        verify_movielens_zip(write(tmp_path / "ml.zip", bytes(data)))


def test_movielens_not_a_zip(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="not a zip file"):
        verify_movielens_zip(write(tmp_path / "ml.zip", b"<html>Not Found</html>"))
    truncated = movielens_zip()[:200]
    with pytest.raises(IntegrityError, match="not a zip file"):
        verify_movielens_zip(write(tmp_path / "t.zip", truncated))


def test_movielens_missing_movies(tmp_path: Path) -> None:
    files = movielens_files()
    del files["movies.csv"]
    with pytest.raises(IntegrityError, match=r"lacks \['movies.csv'\]"):
        verify_movielens_zip(write(tmp_path / "ml.zip", movielens_zip(files)))


def test_movielens_wrong_header(tmp_path: Path) -> None:
    files = movielens_files()
    files["links.csv"] = "movieId,imdb_id,tmdbId\n1,0114709,862\n"
    with pytest.raises(IntegrityError, match=r"links\.csv") as err:
        verify_movielens_zip(write(tmp_path / "ml.zip", movielens_zip(files)))
    assert "missing ['imdbId']" in str(err.value)


def test_movielens_needs_one_top_folder(tmp_path: Path) -> None:
    flat = write(tmp_path / "flat.zip", movielens_zip(folder=""))
    with pytest.raises(IntegrityError, match="exactly one top-level folder"):
        verify_movielens_zip(flat)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in movielens_files().items():
            zf.writestr(f"a/{name}", text)
        zf.writestr("b/README.txt", "x")
    with pytest.raises(IntegrityError, match="exactly one top-level folder"):
        verify_movielens_zip(write(tmp_path / "two.zip", buf.getvalue()))


def zip_slip_archive() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in movielens_files().items():
            zf.writestr(f"ml-latest-small/{name}", text)
        zf.writestr("ml-latest-small/../../evil.txt", "pwned")
    return buf.getvalue()


def test_zip_slip_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "slip.zip", zip_slip_archive())
    with pytest.raises(IntegrityError, match="escapes"):
        verify_movielens_zip(path)
    dest = tmp_path / "a" / "b"
    with pytest.raises(IntegrityError, match="escapes"):
        extract_zip(path, dest)
    assert not (tmp_path / "evil.txt").exists()
    assert not any(dest.rglob("*"))


def test_extract_zip(tmp_path: Path) -> None:
    path = write(tmp_path / "ml.zip", movielens_zip())
    out = extract_zip(path, tmp_path / "out")
    assert out == tmp_path / "out"
    movies = (out / "ml-latest-small" / "movies.csv").read_text()
    assert movies.startswith("movieId,title,genres\n")


@pytest.mark.shared_data
def test_real_movielens_release(shared_movielens: Path) -> None:
    assert verify_movielens_zip(shared_movielens / "ml-latest-small.zip") == "ml-latest-small"


# --------------------------------------------------------------------------- checksums

HEX = "a3ab1f1f9c9e8d7e7d8e4e4d4e4d4e4d"


@pytest.mark.parametrize(
    "text",
    [
        f"MD5 (ml-latest-small.zip) = {HEX}\n",
        f"MD5 (ml-latest-small.zip) = {HEX.upper()}",
        f"{HEX}  ml-latest-small.zip\n",
        f"{HEX} *ml-latest-small.zip\n",
        f"{HEX}\n",
    ],
)
def test_parse_md5_file_formats(text: str) -> None:
    assert parse_md5_file(text) == HEX


def test_parse_md5_file_picks_the_named_entry() -> None:
    other = "0" * 32
    text = f"MD5 (ml-25m.zip) = {other}\nMD5 (ml-latest-small.zip) = {HEX}\n"
    assert parse_md5_file(text, filename="ml-latest-small.zip") == HEX
    with pytest.raises(IntegrityError, match="ambiguous"):
        parse_md5_file(text)
    with pytest.raises(IntegrityError, match=r"no MD5 digest for 'ml-32m\.zip'"):
        parse_md5_file(text, filename="ml-32m.zip")


def test_parse_md5_file_rejects_garbage() -> None:
    with pytest.raises(IntegrityError, match="no MD5 digest"):
        parse_md5_file("<html>404 Not Found</html>")


def test_file_digests(tmp_path: Path) -> None:
    data = b"x" * (3 << 20) + b"tail"
    path = write(tmp_path / "f.bin", data)
    assert file_md5(path) == hashlib.md5(data).hexdigest()
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
