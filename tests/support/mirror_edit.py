"""Craft broken sources from a good sample mirror: rewrite a zip member or a gzip TSV."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

LinesEdit = Callable[[list[str]], list[str]]


def copy_mirror(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def edit_gzip_lines(path: Path, edit: LinesEdit) -> None:
    """Rewrite a gzip text file through `edit` (a function of its lines, header included)."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        lines = f.read().splitlines()
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        f.write("\n".join(edit(lines)) + "\n")


def edit_zip_member(zip_path: Path, member_name: str, edit: LinesEdit) -> None:
    """Rewrite the member ending in `/member_name` and refresh the published `.md5` beside it."""
    with zipfile.ZipFile(zip_path) as src:
        members = {info: src.read(info) for info in src.infolist()}
    tmp = zip_path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
        for info, data in members.items():
            if info.filename.endswith("/" + member_name):
                text = data.decode("utf-8")
                newline = "\r\n" if "\r\n" in text else "\n"
                data = (newline.join(edit(text.splitlines())) + newline).encode("utf-8")
            out.writestr(info, data)
    tmp.replace(zip_path)
    md5 = zip_path.with_name(zip_path.name + ".md5")
    if md5.exists():
        digest = hashlib.md5(zip_path.read_bytes()).hexdigest()
        md5.write_text(f"MD5 ({zip_path.name}) = {digest}\n")


def replace_field(line: str, sep: str, index: int, value: str) -> str:
    fields = line.split(sep)
    fields[index] = value
    return sep.join(fields)
