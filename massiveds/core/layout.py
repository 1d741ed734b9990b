"""On-disk layout of a datastore and its build folder, with atomic writes and checksums.

A reader never sees half a file: everything is written under a temporary name in the same folder
and renamed into place. ``datastore.json`` is written last, so a datastore without it is not a
datastore yet.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

CATALOG = "datastore.json"
TRAINED_INDEX = "trained.faiss"
FORMAT_VERSION = 1
DONE_MARKER = "_SUCCESS.json"


def tmp_name(path: Path) -> Path:
    """A unique temporary sibling of ``path`` (same folder, so the final rename is atomic)."""
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")


TEMPORARY = re.compile(r"\..+\.tmp-[0-9a-f]{12}")


def remove_temporaries(root: Path, skip: tuple[str, ...] = ("build",)) -> list[Path]:
    """Remove what ``atomic_path`` left under ``root`` when its writer was killed (outside the folders ``skip``); those removed.

    Only safe while no writer works there: a datastore's writer calls it holding the writer lock.
    """
    removed = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if here == root:
            dirs[:] = [d for d in dirs if d not in skip]
        for name in [*dirs, *files]:
            if TEMPORARY.fullmatch(name):
                path = here / name
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                removed.append(path)
        dirs[:] = [d for d in dirs if not TEMPORARY.fullmatch(d)]
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_json(path: str | Path, obj: Any, indent: int | None = 2, ensure_ascii: bool = True) -> None:
    """Write ``obj`` as JSON (indented unless ``indent`` is None), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, ensure_ascii=ensure_ascii) + ("\n" if indent is not None else ""), encoding="utf-8")


def write_array(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as a ``.npy`` file (no pickles), atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    """Size and checksum of one datastore file, as stored in the catalog."""
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def shard_name(domain: str, number: int) -> str:
    """Folder name of a shard: ``<domain>-<n>``, zero-padded so names sort in id order."""
    return f"{domain}-{number:05d}"


class ShardFiles:
    """The names of a shard folder's files (docs/datastore.md); the BM25 index's are ``massiveds.encode.sparse.SHARD_FILES``."""

    #: the FAISS index of the shard's vectors, under their passage ids
    INDEX = "index.faiss"
    #: the passages: text and attribution, one row per passage id (Arrow IPC)
    PASSAGES = "passages.arrow"
    #: the fp16 vectors, one row per passage (exact rerank, recall, retraining)
    VECTORS = "vectors.npy"
    #: the shard's own record (name, domain, ids, files), written last by the build
    INFO = "shard.json"
    #: deleted rows (sorted int64 row numbers), written by ``massiveds delete``, removed by ``massiveds compact``
    DELETED = "deleted.npy"
    #: a compacted shard's row -> passage id map (sorted int64 ids as stored), written by ``massiveds compact``
    ROW_IDS = "ids.npy"


class DatastoreLayout:
    """Paths of one datastore directory (docs/datastore.md, "The datastore directory")."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def catalog(self) -> Path:
        return self.root / CATALOG

    @property
    def trained_index(self) -> Path:
        return self.root / TRAINED_INDEX

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    def shard(self, name: str) -> Path:
        return self.shards / name

    @property
    def build(self) -> Path:
        return self.root / "build"

    @property
    def dropped(self) -> Path:
        return self.build / "dropped"


def mark_done(folder: Path, info: dict[str, Any]) -> None:
    """Record that a stage or work unit finished, with what it produced."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / DONE_MARKER, info)
