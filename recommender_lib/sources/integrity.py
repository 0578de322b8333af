"""Integrity checks for downloaded source files (docs/architecture.md §5).

Every check streams its input in large blocks with constant memory and raises `IntegrityError`
with a message naming the file and exactly what is wrong.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from recommender_lib.sources import formats

READ_BLOCK = 4 << 20  # compressed bytes read per step
INFLATE_LIMIT = 8 << 20  # most decompressed bytes produced per step (bounds memory)
HEADER_LIMIT = 1 << 16  # a header line longer than this is not a header
GZIP_MAGIC = b"\x1f\x8b"
MOVIELENS_REQUIRED = ("ratings.csv", "movies.csv", "links.csv")
MOVIELENS_OPTIONAL = ("tags.csv",)
IGNORED_ZIP_PREFIXES = ("__MACOSX/",)


class IntegrityError(Exception):
    """A file is not what it should be: truncated, corrupt, wrong checksum or wrong schema."""


# --------------------------------------------------------------------------- gzip TSV


class _LineCounter:
    """Counts lines of a byte stream and captures its first line."""

    def __init__(self) -> None:
        self.newlines = 0
        self.total = 0
        self.last_byte = b""
        self._head = bytearray()
        self.header: bytes | None = None
        self.header_overflow = False

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if self.header is None:
            self._head += data[: HEADER_LIMIT + 1]
            end = self._head.find(b"\n")
            if end >= 0:
                self.header = bytes(self._head[:end])
                self._head.clear()
            elif len(self._head) > HEADER_LIMIT:
                self.header, self.header_overflow = b"", True
        self.newlines += data.count(b"\n")
        self.total += len(data)
        self.last_byte = data[-1:]

    def finish(self) -> None:
        if self.header is None and self._head:
            self.header = bytes(self._head)  # a file made of one unterminated line

    @property
    def lines(self) -> int:
        return self.newlines + (1 if self.total and self.last_byte != b"\n" else 0)


def _inflate_gzip(path: Path, sink: _LineCounter) -> None:
    """Decompress every gzip member of `path` into `sink`; raise IntegrityError when broken."""
    with open(path, "rb") as fh:
        data = fh.read(READ_BLOCK)
        if not data:
            raise IntegrityError(f"{path}: not a gzip file (the file is empty)")
        if data[:2] != GZIP_MAGIC:
            found = data[:2].hex()
            raise IntegrityError(f"{path}: not a gzip file (magic bytes {found}, expected 1f8b)")
        decomp = zlib.decompressobj(wbits=31)
        while True:
            _inflate_block(path, decomp, data, sink)
            if decomp.eof:
                data = decomp.unused_data or fh.read(READ_BLOCK)
                if _at_end(path, fh, data):
                    return
                decomp = zlib.decompressobj(wbits=31)  # a multi-member gzip file
                continue
            data = fh.read(READ_BLOCK)
            if not data:
                raise IntegrityError(
                    f"{path}: truncated gzip stream (file ends after {path.stat().st_size} "
                    f"compressed / {sink.total} decompressed bytes, before the end marker)"
                )


_ZLIB_ERRORS = {
    "incorrect data check": "CRC mismatch",
    "incorrect length check": "length mismatch (gzip ISIZE)",
    "incorrect header check": "not a gzip file (bad member header)",
}


def _inflate_block(path: Path, decomp: zlib._Decompress, data: bytes, sink: _LineCounter) -> None:
    """Feed one block through `decomp`, at most INFLATE_LIMIT output bytes at a time."""
    try:
        while not decomp.eof:
            out = decomp.decompress(data, INFLATE_LIMIT)
            sink.feed(out)
            data = decomp.unconsumed_tail
            if not data and len(out) < INFLATE_LIMIT:
                return
    except zlib.error as exc:
        what = _ZLIB_ERRORS.get(str(exc).split(": ")[-1], "corrupt gzip stream")
        raise IntegrityError(
            f"{path}: {what} (zlib: {exc}; {sink.total} bytes decompressed before the bad block)"
        ) from exc


def _at_end(path: Path, fh: BinaryIO, data: bytes) -> bool:
    """After a gzip member: True at EOF or zero padding; False when another member starts."""
    while 0 < len(data) < 2:
        more = fh.read(READ_BLOCK)
        if not more:
            break
        data += more
    if data[:2] == GZIP_MAGIC:
        return False
    while data:
        if data.strip(b"\x00"):
            raise IntegrityError(
                f"{path}: trailing garbage after the gzip stream ({data[:8].hex()}...)"
            )
        data = fh.read(READ_BLOCK)
    return True


def verify_gzip_tsv(path: Path | str, expected_columns: Sequence[str]) -> int:
    """Read a gzip TSV to its end, check its header line; return the number of data lines."""
    path = Path(path)
    sink = _LineCounter()
    try:
        _inflate_gzip(path, sink)
    except OSError as exc:
        raise IntegrityError(f"{path}: cannot read: {exc}") from exc
    sink.finish()
    if not sink.total:
        raise IntegrityError(f"{path}: gzip stream is empty (no header line)")
    if sink.header_overflow:
        raise IntegrityError(
            f"{path}: no header line (no newline in the first {HEADER_LIMIT} bytes)"
        )
    expected = "\t".join(expected_columns)
    header = _decode_header(path, sink.header or b"")
    if header != expected:
        raise IntegrityError(
            f"{path}: header mismatch (schema drift): "
            + _describe_columns(list(expected_columns), header.split("\t"))
        )
    return sink.lines - 1


def _decode_header(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IntegrityError(f"{path}: header line is not UTF-8 ({exc})") from exc


def _describe_columns(expected: list[str], found: list[str]) -> str:
    parts = [f"expected columns {expected}, found {found}"]
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    if missing:
        parts.append(f"missing {missing}")
    if extra:
        parts.append(f"unexpected {extra}")
    if not missing and not extra:
        parts.append("same names in a different order or with different whitespace")
    return "; ".join(parts)


# --------------------------------------------------------------------------- zip files


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise IntegrityError(f"{path}: not a zip file or a truncated one ({exc})") from exc
    except OSError as exc:
        raise IntegrityError(f"{path}: cannot read: {exc}") from exc


def _check_member_name(path: Path, name: str) -> PurePosixPath:
    """Reject member names that would land outside the extraction folder (zip-slip)."""
    posix = PurePosixPath(name.replace("\\", "/"))
    unsafe = (
        posix.is_absolute()
        or ".." in posix.parts
        or re.match(r"^[A-Za-z]:", name) is not None
        or "\x00" in name
    )
    if unsafe:
        raise IntegrityError(f"{path}: unsafe member path {name!r} escapes the archive folder")
    return posix


def _test_crcs(path: Path, zf: zipfile.ZipFile) -> None:
    try:
        bad = zf.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
        raise IntegrityError(f"{path}: corrupt zip member data ({exc})") from exc
    if bad is not None:
        raise IntegrityError(f"{path}: CRC mismatch in zip member {bad!r}")


def _members(path: Path, zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    infos = [i for i in zf.infolist() if not i.filename.startswith(IGNORED_ZIP_PREFIXES)]
    for info in infos:
        _check_member_name(path, info.filename)
    return infos


def zip_top_folder(path: Path | str) -> str | None:
    """The single top-level folder every member lives in, or None when there is not one."""
    path = Path(path)
    with _open_zip(path) as zf:
        return _single_top_folder(path, _members(path, zf))


def _single_top_folder(path: Path, infos: list[zipfile.ZipInfo]) -> str | None:
    tops: set[str] = set()
    for info in infos:
        parts = PurePosixPath(info.filename.replace("\\", "/")).parts
        if len(parts) == 1 and not info.is_dir():
            return None  # a file at the top level
        if parts:
            tops.add(parts[0])
    return tops.pop() if len(tops) == 1 else None


def _read_first_line(path: Path, zf: zipfile.ZipFile, member: str) -> str:
    with zf.open(member) as fh:
        raw = fh.readline(HEADER_LIMIT)
    try:
        return raw.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise IntegrityError(f"{path}: header of {member} is not UTF-8 ({exc})") from exc


def verify_movielens_zip(path: Path | str) -> str:
    """Check a MovieLens release zip; return the name of its single top-level folder."""
    path = Path(path)
    with _open_zip(path) as zf:
        infos = _members(path, zf)
        _test_crcs(path, zf)
        folder = _single_top_folder(path, infos)
        if folder is None:
            tops = sorted({PurePosixPath(i.filename).parts[0] for i in infos if i.filename})
            raise IntegrityError(
                f"{path}: expected exactly one top-level folder, found entries {tops}"
            )
        names = {i.filename for i in infos}
        missing = [f for f in MOVIELENS_REQUIRED if f"{folder}/{f}" not in names]
        if missing:
            raise IntegrityError(f"{path}: folder {folder!r} lacks {missing}")
        for name in (*MOVIELENS_REQUIRED, *MOVIELENS_OPTIONAL):
            member = f"{folder}/{name}"
            if member in names:
                _check_csv_header(path, zf, member, formats.MOVIELENS_FILES[name])
    return folder


def _check_csv_header(path: Path, zf: zipfile.ZipFile, member: str, columns: Sequence[str]) -> None:
    header = _read_first_line(path, zf, member)
    if header != ",".join(columns):
        raise IntegrityError(
            f"{path}: header mismatch in {member} (schema drift): "
            + _describe_columns(list(columns), header.split(","))
        )


def extract_zip(path: Path | str, dest_dir: Path | str) -> Path:
    """Extract `path` into `dest_dir` after checking every member path; return `dest_dir`.

    Rejects members that would escape `dest_dir`; CRC errors surface as IntegrityError.
    """
    path, dest_dir = Path(path), Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    root = dest_dir.resolve()
    with _open_zip(path) as zf:
        infos = _members(path, zf)
        for info in infos:
            target = (root / _check_member_name(path, info.filename)).resolve()
            if target != root and not target.is_relative_to(root):
                raise IntegrityError(f"{path}: member {info.filename!r} escapes {dest_dir}")
        try:
            zf.extractall(dest_dir, members=infos)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise IntegrityError(
                f"{path}: corrupt zip member data while extracting ({exc})"
            ) from exc
    return dest_dir


# --------------------------------------------------------------------------- checksums

_BSD_MD5 = re.compile(r"^MD5\s*\((?P<name>.+)\)\s*=\s*(?P<hex>[0-9a-fA-F]{32})\s*$")
_GNU_MD5 = re.compile(r"^\\?(?P<hex>[0-9a-fA-F]{32})\s+\*?(?P<name>.+?)\s*$")
_BARE_MD5 = re.compile(r"^(?P<hex>[0-9a-fA-F]{32})$")


def parse_md5_file(text: str, *, filename: str | None = None) -> str:
    """Parse `MD5 (x.zip) = <hex>`, `<hex>  x.zip` or a bare digest; return lower-case hex.

    With several entries, `filename` picks the line for that file.
    """
    found: list[tuple[str | None, str]] = []
    for line in text.lstrip("\ufeff").splitlines():
        line = line.strip()
        match = _BSD_MD5.match(line) or _GNU_MD5.match(line) or _BARE_MD5.match(line)
        if match:
            found.append((match.groupdict().get("name"), match["hex"].lower()))
    if filename is not None:
        named = [h for name, h in found if name is None or PurePosixPath(name).name == filename]
        found = [(filename, h) for h in named]
    if not found:
        wanted = f" for {filename!r}" if filename else ""
        raise IntegrityError(f"no MD5 digest{wanted} in checksum file: {text[:200]!r}")
    digests = {h for _, h in found}
    if len(digests) > 1:
        raise IntegrityError(f"ambiguous checksum file: {len(digests)} different MD5 digests")
    return digests.pop()


def _file_digest(path: Path | str, algorithm: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()


def file_md5(path: Path | str) -> str:
    """Hex MD5 of a file, read in blocks."""
    return _file_digest(path, "md5")


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    return _file_digest(path, "sha256")
