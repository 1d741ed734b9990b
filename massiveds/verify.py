"""Check a datastore directory against its catalog: every file present with the recorded size and sha256, nothing extra.

The catalog (``datastore.json``) records ``trained.faiss`` and every shard file; a published or
pulled datastore also carries ``checksums.json`` (see ``massiveds.publish``), which records every
file, ``shard.json`` included. ``build/`` holds build state, not datastore files, and is not checked.
A shard merged in place is checked where it lives (its ``folder``, relative to the datastore).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from massiveds.errors import DatastoreError
from massiveds.layout import CATALOG, sha256_file, shard_folder_rel

CHECKSUMS = "checksums.json"
BUILD = "build"


@dataclass(frozen=True)
class Expected:
    """A file the datastore must hold: path relative to its root, size, sha256."""

    rel: str
    bytes: int
    sha256: str


def read_catalog(root: Path) -> dict[str, Any]:
    """The parsed catalog of ``root`` (raises FileNotFoundError / ValueError)."""
    return dict(json.loads((root / CATALOG).read_text()))


def catalog_files(catalog: dict[str, Any]) -> list[Expected]:
    """The files a catalog records with their sizes and digests: the trained index(es) and every shard file (where it lives)."""
    out = []
    trained = catalog.get("trained_index")
    for rec in ([trained] if trained else []) + catalog.get("trained_indexes", []):  # a merge keeps one per source
        out.append(Expected(rec["file"], int(rec["bytes"]), rec["sha256"]))
    for shard in catalog.get("shards", []):
        for name, rec in sorted(shard.get("files", {}).items()):
            out.append(Expected(f"{shard_folder_rel(shard)}/{name}", int(rec["bytes"]), rec["sha256"]))
    return out


def require_catalog_files(root: Path, catalog: dict[str, Any], action: str) -> None:
    """Raise DatastoreError at the first shard folder or catalog file that is missing or not its recorded size (before ``action``)."""
    for shard in catalog["shards"]:
        if not (root / shard_folder_rel(shard)).is_dir():
            raise DatastoreError(f"cannot {action} {root}: shard folder {os.path.normpath(root / shard_folder_rel(shard))} is missing")
    for e in catalog_files(catalog):
        path = root / e.rel
        if not path.is_file() or path.stat().st_size != e.bytes:
            what = "missing" if not path.is_file() else "not the size its catalog records"
            raise DatastoreError(f"cannot {action} {root}: {os.path.normpath(path)} is {what}; run massiveds verify {root}")


def checksum_files(root: Path) -> list[Expected] | None:
    """The files ``checksums.json`` records (None when the datastore has none)."""
    path = root / CHECKSUMS
    if not path.is_file():
        return None
    listing = json.loads(path.read_text())
    return [Expected(rel, int(r["bytes"]), r["sha256"]) for rel, r in sorted(listing["files"].items())]


def present_files(root: Path, include_build: bool = False) -> list[str]:
    """Every regular file under ``root`` (relative, sorted), without ``build/`` unless asked."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and (include_build or not (rel == BUILD or rel.startswith(BUILD + "/"))):
            out.append(rel)
    return out


def verify(root: str | Path, *, hashes: bool = True, on_file: Callable[[str, int], None] | None = None) -> list[str]:
    """Every problem of the datastore at ``root``, one line each ([] when it is whole); ``hashes=False`` checks sizes only."""
    root = Path(root)
    if not root.is_dir():
        return [f"{root}: no such directory"]
    try:
        catalog = read_catalog(root)
    except FileNotFoundError:
        return [f"{CATALOG}: missing (not a datastore, or an unfinished build or pull)"]
    except (ValueError, KeyError) as exc:
        return [f"{CATALOG}: unreadable ({exc})"]
    expected: dict[str, Expected] = {}
    problems: list[str] = []
    try:
        recorded = catalog_files(catalog)
    except (KeyError, TypeError, ValueError, DatastoreError) as exc:
        return [f"{CATALOG}: malformed shard or index record ({exc})"]
    listed = checksum_files(root)
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
    for shard in catalog.get("shards", []):
        rel = shard_folder_rel(shard)
        if not (root / rel).is_dir():
            problems.append(f"{rel}: shard folder missing" + (f" (shard {shard['name']}, merged in place)" if "folder" in shard else ""))
    return problems
