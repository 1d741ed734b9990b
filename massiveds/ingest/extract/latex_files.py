"""The files of a LaTeX project: a single file, a directory, or a (compressed) tarball, and its root documents."""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from massiveds.ingest.extract.stream import DEFAULT_LIMITS, Limits, open_input

#: Suffixes of LaTeX sources (Sweave and knitr files are LaTeX with R chunks).
TEX_SUFFIXES = (".tex", ".ltx", ".latex", ".rnw", ".snw", ".rtex")
_COMPRESSED = (".gz", ".zst", ".zstd", ".bz2", ".xz")
_INCLUDED = re.compile(r"\\(?:input|include|subfile)\s*(?:\{([^{}]+)\}|([^\s{}\\]+))")
_DOCUMENT = re.compile(r"\\documentclass|\\begin\s*\{document\}")


@dataclass
class Project:
    """The LaTeX sources of a project by path (``/``-separated), and those left out for size, with why."""

    max_bytes: int | None
    files: dict[str, str] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    held: int = 0

    def admits(self, name: str, size: int) -> bool:
        """Whether a source of ``size`` bytes still fits under ``max_bytes`` for the whole project (else it is skipped)."""
        if self.max_bytes is not None and self.held + size > self.max_bytes:
            self.skipped.append((name, f"{size:,} bytes would bring the project's LaTeX past max_record_bytes ({self.max_bytes:,})"))
            return False
        self.held += size
        return True


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # older arXiv sources; every byte maps to a character


def _is_tex(name: str) -> bool:
    return name.lower().endswith(TEX_SUFFIXES)


def _is_tar(head: bytes) -> bool:
    try:
        tarfile.TarInfo.frombuf(head[: tarfile.BLOCKSIZE], tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def project_files(path: str, limits: Limits = DEFAULT_LIMITS) -> Project:
    """The LaTeX sources of a project (a file, a directory, or a tarball compressed or not), read under ``limits``.

    The sources held together stay under ``max_record_bytes`` (a source that would pass it is left out
    and listed in ``skipped``); a compressed file or tarball is decompressed under ``max_expansion_ratio``.
    """
    p = Path(path)
    project = Project(limits.max_record_bytes)
    if p.is_dir():
        for q in sorted(p.rglob("*")):
            name = q.relative_to(p).as_posix()
            if q.is_file() and _is_tex(q.name) and project.admits(name, q.stat().st_size):
                project.files[name] = _decode(q.read_bytes())
        return project
    with open_input(path, limits, by_content=True) as stream:  # arXiv names no compression: the bytes tell
        if _is_tar(stream.peek(tarfile.BLOCKSIZE)):
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:  # streamed: members are read in archive order
                    name = str(PurePosixPath(member.name))
                    if member.isfile() and _is_tex(name) and project.admits(name, member.size):
                        f = tar.extractfile(member)
                        if f is not None:
                            project.files[name] = _decode(f.read())
            return project
        name = next((p.name[: -len(s)] for s in _COMPRESSED if p.name.lower().endswith(s)), p.name)
        cap = limits.max_record_bytes
        data = stream.read(cap + 1) if cap is not None else stream.read()
        if cap is not None and len(data) > cap:
            project.skipped.append((name, f"over max_record_bytes ({cap:,})"))
        else:
            project.files[name] = _decode(data)
    return project


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
