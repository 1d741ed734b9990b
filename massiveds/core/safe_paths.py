"""The one check for every path a datastore names: a datastore is untrusted input.

A catalog (``datastore.json``) and a ``checksums.json`` name files: shard names, shard file names,
trained indexes, the merged index, every published file. A pulled or handed-over datastore may be
crafted, and ``../../.bashrc`` or ``/etc/cron.d/x`` joined to a folder reads or writes outside it.
So each such name passes ``safe_join`` before it is opened or written:

- lexically: a non-empty relative POSIX path; no ``..``, ``.`` or empty component (one spelling per
  file, so two entries cannot name the same file); no backslash (a separator on Windows), drive,
  NUL or other control character;
- after joining, with symlinks resolved: inside the folder it belongs to (the datastore root, or the
  folder a merged-in-place shard's catalog record declares).

Names are data, not paths: an object key of ``s3://`` or ``hf://`` with ``..`` in it is refused the
same way, since it would become a local path on ``pull``.
"""

from __future__ import annotations

import re
from pathlib import Path

from massiveds.core.errors import DatastoreError


class UnsafePathError(DatastoreError):
    """A path named by a datastore that would lead outside it (or is not a plain relative path)."""


_DRIVE = re.compile(r"^[A-Za-z]:")


def _lexical_problem(rel: object, *, parent_steps: bool) -> str | None:
    if not isinstance(rel, str) or not rel:
        return "is not a path"
    if "\\" in rel:
        return "holds a backslash"
    if any(ord(c) < 32 or ord(c) == 127 for c in rel):
        return "holds a NUL or control character"
    if rel.startswith("/") or _DRIVE.match(rel):
        return "is absolute"
    for part in rel.split("/"):
        if part == ".." and not parent_steps:
            return "has a '..' component"
        if part in ("", "."):
            return "has an empty or '.' component"
    return None


def check_relpath(rel: object, what: str, *, parent_steps: bool = False) -> str:
    """``rel`` if it is a plain relative POSIX path (``..`` only with ``parent_steps``), else UnsafePathError naming ``what``."""
    problem = _lexical_problem(rel, parent_steps=parent_steps)
    if problem is not None:
        raise UnsafePathError(f"{what} {rel!r} {problem}: refused, nothing read or written (an unsafe or crafted datastore?)")
    assert isinstance(rel, str)
    return rel


def check_name(name: object, what: str) -> str:
    """``name`` if it is one plain path component (a shard or file name), else UnsafePathError."""
    check_relpath(name, what)
    assert isinstance(name, str)
    if "/" in name:
        raise UnsafePathError(f"{what} {name!r} is not a single name: refused, nothing read or written (an unsafe or crafted datastore?)")
    return name


def inside(path: Path, folder: Path, what: str) -> Path:
    """``path`` if, with symlinks resolved, it lies in ``folder`` (which may itself be reached through symlinks)."""
    limit, resolved = folder.resolve(), path.resolve()
    if resolved != limit and limit not in resolved.parents:
        raise UnsafePathError(f"{what} {path} leads outside {folder} (to {resolved}, through a symlink): refused, nothing read or written")
    return path


def no_symlink(folder: Path, rel: object, what: str) -> Path:
    """``folder / rel`` if ``rel`` is plain and relative and nothing on the way from ``folder`` is a symlink.

    A published datastore holds regular files only: a symlink in it could point at any file of the
    machine that publishes or pulls it, even one that resolves inside the folder today.
    """
    path = folder / check_relpath(rel, what)
    if path.resolve() != folder.resolve() / str(rel):
        raise UnsafePathError(f"{what} {path} is a symlink or lies under one: refused, nothing read or written "
                              "(a published datastore holds regular files only)")
    return path


def safe_join(folder: Path, rel: object, what: str) -> Path:
    """``folder / rel`` after both checks: ``rel`` plain and relative, the joined path (symlinks resolved) inside ``folder``."""
    return inside(folder / check_relpath(rel, what), folder, what)
