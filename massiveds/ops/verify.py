"""Check a datastore directory against its catalog: every file present with the recorded size and sha256, nothing extra.

The catalog (``datastore.json``) records ``trained.faiss`` and every shard file; a published or
pulled datastore also carries ``checksums.json`` (see ``massiveds.ops.publish``), which records every
file, ``shard.json`` included. ``build/`` holds build state, not datastore files, and is not checked.
A shard merged in place is checked where it lives (its ``folder``, relative to the datastore).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from massiveds.core.catalog import CHECKSUMS, Catalog, Expected, catalog_files, check_paths, listing_files, read_catalog, read_listing
from massiveds.core.errors import DatastoreError
from massiveds.core.layout import CATALOG, sha256_file
from massiveds.core.writer_lock import LOCK_FILE

BUILD = "build"


def require_catalog_files(root: Path, catalog: Catalog, action: str) -> None:
    """Raise DatastoreError at the first shard folder or catalog file that is missing or not its recorded size (before ``action``)."""
    for shard in catalog.shards:
        if not (root / shard.folder_rel()).is_dir():
            raise DatastoreError(f"cannot {action} {root}: shard folder {os.path.normpath(root / shard.folder_rel())} is missing")
    for e in catalog_files(catalog):
        path = root / e.rel
        if not path.is_file() or path.stat().st_size != e.bytes:
            what = "missing" if not path.is_file() else "not the size its catalog records"
            raise DatastoreError(f"cannot {action} {root}: {os.path.normpath(path)} is {what}; run massiveds verify {root}")


def present_files(root: Path, include_build: bool = False) -> list[str]:
    """Every regular file under ``root`` (relative, sorted), without ``build/`` unless asked, and without the writer lock file."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != LOCK_FILE and (include_build or not (rel == BUILD or rel.startswith(BUILD + "/"))):
            out.append(rel)
    return out


#: Times verify checks again when a writer replaced the catalog while it checked.
REVERIFY = 3


def verify(root: str | Path, *, hashes: bool = True, on_file: Callable[[str, int], None] | None = None) -> list[str]:
    """Every problem of the datastore at ``root``, one line each ([] when it is whole); ``hashes=False`` checks sizes only.

    A check that found problems while a writer replaced the catalog is run again on the new one: verify never reports a
    writer's switch as damage.
    """
    root = Path(root)
    for _ in range(REVERIFY):
        stamp = _stamp(root / CATALOG)
        problems = _verify(root, hashes, on_file)
        if not problems or _stamp(root / CATALOG) == stamp:
            return problems
    return problems


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _verify(root: Path, hashes: bool, on_file: Callable[[str, int], None] | None) -> list[str]:
    if not root.is_dir():
        return [f"{root}: no such directory"]
    if not (root / CATALOG).is_file():
        return [f"{CATALOG}: missing (not a datastore, or an unfinished build or pull)"]
    try:
        catalog = read_catalog(root)
        listing = read_listing(root)
        check_paths(root, catalog, listing)
        recorded = catalog_files(catalog)
    except DatastoreError as exc:
        return [str(exc)]
    expected: dict[str, Expected] = {}
    problems: list[str] = []
    listed = listing_files(listing) if listing is not None else None
    for e in recorded + [x for x in listed or [] if x.rel != CATALOG]:
        if e.rel in expected and (expected[e.rel].bytes, expected[e.rel].sha256) != (e.bytes, e.sha256):
            problems.append(f"{e.rel}: {CATALOG} and {CHECKSUMS} disagree about this file")
        expected.setdefault(e.rel, e)
    if listed is not None:
        own = next((x for x in listed if x.rel == CATALOG), None)
        if own is not None and own.sha256 != sha256_file(root / CATALOG):
            problems.append(f"{CATALOG}: sha256 differs from {CHECKSUMS} (catalog replaced after publishing?)")
    for rel, e in sorted(expected.items()):
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel}: missing (catalog: {e.bytes:,} bytes)")
            continue
        size = path.stat().st_size
        if size != e.bytes:
            problems.append(f"{rel}: size {size:,} bytes, catalog says {e.bytes:,} (truncated or replaced)")
        elif hashes:
            digest = sha256_file(path)
            if digest != e.sha256:
                problems.append(f"{rel}: sha256 {digest} differs from the catalog's {e.sha256} (altered)")
        if on_file is not None:
            on_file(rel, size)
    known = set(expected) | {CATALOG, CHECKSUMS}
    for rel in present_files(root):
        if rel not in known and not (listed is None and rel.endswith("/shard.json") and rel.startswith("shards/")):
            problems.append(f"{rel}: present but not in the catalog")
    for shard in catalog.shards:
        rel = shard.folder_rel()
        if not (root / rel).is_dir():
            where = f" (shard {shard.name}, merged in place)" if shard.elsewhere else ""
            problems.append(f"{rel}: shard folder missing{where}")
    return problems
