"""Source code: a repository directory (or one file of a glob) to one record per source file.

The language comes from the file name; the title is ``<repository>/<path>``. Files that are not
source text are yielded as dropped entries with their reason: ``not_code`` (unknown extension),
``file_too_large``, ``binary_file`` (NUL bytes or not UTF-8), ``generated_file`` (lock files,
protobuf output, a "generated"/"do not edit" banner in the first lines) and ``minified_file``
(very long lines). Version-control and cache directories (``.git``, ``__pycache__``,
``node_modules``, ...) are not walked at all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from massiveds.ingest.extract.stream import DEFAULT_LIMITS, Limits
from massiveds.ingest.extract.types import RawRecord

#: File suffix (lower case) to language.
LANGUAGES: dict[str, str] = {
    ".py": "Python", ".pyi": "Python", ".pyx": "Cython", ".c": "C", ".h": "C", ".cc": "C++", ".cpp": "C++",
    ".cxx": "C++", ".hh": "C++", ".hpp": "C++", ".hxx": "C++", ".cu": "CUDA", ".java": "Java", ".kt": "Kotlin",
    ".scala": "Scala", ".js": "JavaScript", ".mjs": "JavaScript", ".cjs": "JavaScript", ".jsx": "JavaScript",
    ".ts": "TypeScript", ".tsx": "TypeScript", ".go": "Go", ".rs": "Rust", ".rb": "Ruby", ".php": "PHP",
    ".cs": "C#", ".fs": "F#", ".swift": "Swift", ".m": "Objective-C", ".mm": "Objective-C++", ".sh": "Shell",
    ".bash": "Shell", ".zsh": "Shell", ".pl": "Perl", ".pm": "Perl", ".r": "R", ".jl": "Julia", ".lua": "Lua",
    ".hs": "Haskell", ".ml": "OCaml", ".mli": "OCaml", ".ex": "Elixir", ".exs": "Elixir", ".erl": "Erlang",
    ".clj": "Clojure", ".lisp": "Lisp", ".el": "Emacs Lisp", ".scm": "Scheme", ".sql": "SQL", ".f90": "Fortran",
    ".f": "Fortran", ".for": "Fortran", ".asm": "Assembly", ".s": "Assembly", ".dart": "Dart", ".vue": "Vue",
    ".css": "CSS", ".scss": "SCSS", ".html": "HTML", ".cmake": "CMake", ".gp": "PARI/GP", ".ps1": "PowerShell",
}
#: Files recognised by their whole name.
NAMED_FILES: dict[str, str] = {"Makefile": "Makefile", "makefile": "Makefile", "GNUmakefile": "Makefile",
                               "Dockerfile": "Dockerfile", "CMakeLists.txt": "CMake", "Rakefile": "Ruby"}
SKIPPED_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv", ".tox", ".mypy_cache",
                ".pytest_cache", ".ruff_cache", ".idea", ".vscode", ".eggs", "bower_components"}
GENERATED_NAMES = re.compile(r"(_pb2(_grpc)?\.py|\.pb\.(go|cc|h)|\.designer\.cs|-lock\.json|\.lock)$|^(package-lock\.json|go\.sum)$")
GENERATED_BANNER = re.compile(
    r"auto-?generated|@generated|do not (edit|modify)|generated automatically|this file (is|was|has been) generated"
    r"|generated\b.{0,100}?\b(by|with|from)\s+\S*\.(py|pl|sh|rb|js|exe)\b",
    re.IGNORECASE,
)
MAX_BYTES = 1 << 20
BANNER_LINES = 10
MAX_LINE_CHARS = 1000
MAX_MEAN_LINE_CHARS = 200


def language_of(name: str) -> str | None:
    """The language of a file from its name, or None when it is not a known source file."""
    if name in NAMED_FILES:
        return NAMED_FILES[name]
    return LANGUAGES.get(os.path.splitext(name)[1].lower())


def rejection(name: str, raw: bytes) -> tuple[str, str] | None:
    """Why a file is not kept as source code, as (reason, detail), or None to keep it."""
    if len(raw) > MAX_BYTES:
        return "file_too_large", f"{len(raw)} bytes > {MAX_BYTES}"
    if b"\x00" in raw[:8192]:
        return "binary_file", "NUL bytes"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return "binary_file", f"not UTF-8 at byte {exc.start}"
    if GENERATED_NAMES.search(name):
        return "generated_file", "generated file name"
    banner = GENERATED_BANNER.search("\n".join(text.splitlines()[:BANNER_LINES]))
    if banner:
        return "generated_file", f"banner {banner.group(0)!r}"
    lines = text.splitlines() or [""]
    longest = max(len(line) for line in lines)
    if name.endswith((".min.js", ".min.css")) or longest > MAX_LINE_CHARS or len(text) / len(lines) > MAX_MEAN_LINE_CHARS:
        return "minified_file", f"{len(lines)} lines, longest {longest} characters"
    return None


def _walk(root: Path) -> list[Path]:
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        files.extend(Path(dirpath) / f for f in sorted(filenames))
    return files


def _repository(path: Path) -> Path:
    """The repository a lone file belongs to: its nearest ancestor with a VCS folder, else its own folder."""
    for parent in path.parents:
        if any((parent / vcs).exists() for vcs in (".git", ".hg", ".svn")):
            return parent
    return path.parent


def read_code(path: str, limits: Limits = DEFAULT_LIMITS) -> Iterator[RawRecord]:
    """One record per source file of a repository directory (walked in sorted order), or of one file.

    A file over ``MAX_BYTES`` (or a smaller ``max_record_bytes``) is dropped by its size, unread.
    """
    cap = min(MAX_BYTES, limits.max_record_bytes or MAX_BYTES)
    target = Path(path)
    root = target if target.is_dir() else _repository(target)
    files = _walk(target) if target.is_dir() else [target]
    for row, file in enumerate(files):
        rel = file.relative_to(root).as_posix()
        language = language_of(file.name)
        if language is None:
            yield RawRecord(row, None, f"{rel}: unknown source file type", reason="not_code")
            continue
        try:
            size = file.stat().st_size
            if size > cap:
                yield RawRecord(row, None, f"{rel}: {size} bytes > {cap}", reason="file_too_large")
                continue
            raw = file.read_bytes()
        except OSError as exc:
            yield RawRecord(row, None, f"{rel}: {exc}")
            continue
        rejected = rejection(file.name, raw)
        if rejected is not None:
            yield RawRecord(row, None, f"{rel}: {rejected[1]}", reason=rejected[0])
            continue
        yield RawRecord(row, {"text": raw.decode("utf-8"), "title": f"{root.name}/{rel}", "url": None,
                              "repository": root.name, "path": rel, "language": language, "bytes": len(raw)})
