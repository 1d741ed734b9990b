"""Read a datastore's catalog and ``checksums.json``, and check every path they name before anything else uses one.

``open_catalog`` is the one way the commands that read a datastore (search, serve, inspect, verify,
subsample, merge, merge-index, publish) get its catalog: it refuses a folder that is not a
datastore, an unreadable catalog, and any path that would lead outside the datastore
(``massiveds.core.safe_paths``), so a crafted datastore fails before a single file is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from massiveds.core.errors import DatastoreError
from massiveds.core.layout import CATALOG, TRAINED_INDEX, shard_folder_rel
from massiveds.core.safe_paths import UnsafePathError, check_name, inside, safe_join

CHECKSUMS = "checksums.json"


@dataclass(frozen=True)
class Expected:
    """A file the datastore must hold: path relative to its root, size, sha256."""

    rel: str
    bytes: int
    sha256: str


def catalog_files(catalog: dict[str, Any]) -> list[Expected]:
    """The files a catalog records with their sizes and digests: the trained index(es) and every shard file (where it lives)."""
    out = []
    trained = catalog.get("trained_index")
    for rec in ([trained] if trained else []) + catalog.get("trained_indexes", []):  # a merge keeps one per source
        out.append(Expected(rec["file"], int(rec["bytes"]), rec["sha256"]))
    for shard in catalog.get("shards", []):
        for name, rec in sorted(shard.get("files", {}).items()):
            out.append(Expected(f"{shard_folder_rel(shard)}/{check_name(name, 'shard file')}", int(rec["bytes"]), rec["sha256"]))
    return out


def listing_files(listing: dict[str, Any]) -> list[Expected]:
    """The files a ``checksums.json`` listing records (keys are checked by ``check_paths``, not here)."""
    return [Expected(rel, int(r["bytes"]), r["sha256"]) for rel, r in sorted(listing["files"].items())]


def read_listing(root: Path) -> dict[str, Any] | None:
    """The parsed ``checksums.json`` of ``root`` (None when the datastore has none)."""
    path = root / CHECKSUMS
    if not path.is_file():
        return None
    try:
        listing = json.loads(path.read_text())
        if not isinstance(listing.get("files"), dict):
            raise ValueError("no 'files' mapping")
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise DatastoreError(f"{path}: unreadable ({exc}); run massiveds verify {root}") from None
    return dict(listing)


def check_paths(root: Path, catalog: dict[str, Any], listing: dict[str, Any] | None) -> None:
    """Raise UnsafePathError at the first path of the catalog or listing that leads outside the datastore.

    A shard's own files must lie in its folder: ``shards/<name>`` inside ``root``, or the folder a
    merged-in-place record declares (a reference the catalog makes on purpose, so it may lie
    elsewhere). Trained and merged indexes, and every ``checksums.json`` key, lie inside ``root``.
    """
    try:
        for shard in catalog.get("shards", []):
            check_name(shard.get("name"), "shard name")
            folder = root / shard_folder_rel(shard)
            if "folder" not in shard:
                inside(folder, root, f"shard {shard['name']}:")
            for name in shard.get("files", {}):
                inside(folder / check_name(name, f"shard {shard['name']}: file name"), folder, f"shard {shard['name']}: file")
            safe_join(root, shard.get("trained", TRAINED_INDEX), f"shard {shard['name']}: trained index")
        trained = catalog.get("trained_index")
        for rec in ([trained] if trained else []) + catalog.get("trained_indexes", []):
            safe_join(root, rec["file"], f"{CATALOG} trained index")
        merged = catalog.get("merged") or {}
        for key in ("index", "ivfdata"):
            if key in merged:
                safe_join(root, merged[key], f"{CATALOG} merged {key}")
        for rel in (listing or {}).get("files", {}):
            safe_join(root, rel, f"{CHECKSUMS} entry")
    except UnsafePathError as exc:
        raise UnsafePathError(f"{root}: {exc}") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise DatastoreError(f"{root / CATALOG}: malformed shard or file record ({exc!r}); run massiveds verify {root}") from None


def check_agreement(root: Path, catalog: dict[str, Any], listing: dict[str, Any], *, complete: bool = False) -> None:
    """Raise DatastoreError where the catalog and ``checksums.json`` record a file differently (``complete``: or the listing lacks it)."""
    listed = {e.rel: e for e in listing_files(listing)}
    for e in catalog_files(catalog):
        other = listed.get(e.rel)
        if (other is None and complete) or (other is not None and (other.bytes, other.sha256) != (e.bytes, e.sha256)):
            raise DatastoreError(f"{root}: {CATALOG} and {CHECKSUMS} disagree about {e.rel}: refused; run massiveds verify {root}")


def read_catalog(root: Path) -> dict[str, Any]:
    """The parsed catalog of ``root``, unchecked; DatastoreError when there is none or it is not JSON."""
    path = root / CATALOG
    if not path.is_file():
        raise DatastoreError(f"{root}: not a datastore (no {CATALOG}); build one with 'massiveds build'")
    try:
        catalog = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatastoreError(f"{path}: unreadable ({exc}); run massiveds verify {root}") from None
    if not isinstance(catalog, dict) or not isinstance(catalog.get("shards", []), list):
        raise DatastoreError(f"{path}: not a datastore catalog; run massiveds verify {root}")
    return catalog


def open_catalog(root: str | Path) -> dict[str, Any]:
    """The catalog of the datastore at ``root``, after ``check_paths`` and ``check_agreement`` over it and its ``checksums.json``."""
    root = Path(root)
    catalog = read_catalog(root)
    listing = read_listing(root)
    check_paths(root, catalog, listing)
    if listing is not None:
        check_agreement(root, catalog, listing)
    return catalog
