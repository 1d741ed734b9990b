"""The files of a LaTeX project: a single file, a directory, or a (compressed) tarball, and its root documents."""

from __future__ import annotations

import gzip
import io
import re
import tarfile
from pathlib import Path, PurePosixPath

import zstandard

#: Suffixes of LaTeX sources (Sweave and knitr files are LaTeX with R chunks).
TEX_SUFFIXES = (".tex", ".ltx", ".latex", ".rnw", ".snw", ".rtex")
MAX_MEMBER_BYTES = 20 << 20
_INCLUDED = re.compile(r"\\(?:input|include|subfile)\s*(?:\{([^{}]+)\}|([^\s{}\\]+))")
_DOCUMENT = re.compile(r"\\documentclass|\\begin\s*\{document\}")


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # older arXiv sources; every byte maps to a character


def _is_tex(name: str) -> bool:
    return name.lower().endswith(TEX_SUFFIXES)


def _from_tar(tar: tarfile.TarFile) -> dict[str, str]:
    files: dict[str, str] = {}
    for member in tar:  # streamed: members are read in archive order
        name = str(PurePosixPath(member.name))
        if member.isfile() and _is_tex(name) and member.size <= MAX_MEMBER_BYTES:
            f = tar.extractfile(member)
            if f is not None:
                files[name] = _decode(f.read())
    return files


def project_files(path: str) -> dict[str, str]:
    """The LaTeX sources of a project, by path relative to its root (``/``-separated)."""
    p = Path(path)
    if p.is_dir():
        return {q.relative_to(p).as_posix(): _decode(q.read_bytes()) for q in sorted(p.rglob("*")) if q.is_file() and _is_tex(q.name)}
    name = p.name.lower()
    if name.endswith((".tar.zst", ".tar.zstd", ".tzst")):
        with p.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            return _from_tar(tar)
    if tarfile.is_tarfile(p):
        with tarfile.open(p, "r:*") as tar:
            return _from_tar(tar)
    data = p.read_bytes()
    if data[:2] == b"\x1f\x8b":  # arXiv ships single-file sources as a gzip'd .tex
        inner = gzip.GzipFile(fileobj=io.BytesIO(data)).read()
        return {p.name.removesuffix(".gz"): _decode(inner)}
    return {p.name: _decode(data)}


def root_files(files: dict[str, str]) -> list[str]:
    """The documents of a project: files no other file includes, those with ``\\documentclass`` first if any."""
    if len(files) <= 1:
        return list(files)
    included: set[str] = set()
    for name, text in files.items():
        base = PurePosixPath(name).parent
        for m in _INCLUDED.finditer(text):
            ref = (m.group(1) or m.group(2)).strip()
            for candidate in (ref, ref + ".tex"):
                included.add(str(base / candidate) if str(base) != "." else candidate)
    roots = [n for n in sorted(files) if n not in included]
    documents = [n for n in roots if _DOCUMENT.search(files[n])]
    return documents or roots
