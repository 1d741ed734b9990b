"""One shard of an open datastore: its index, passages and stored vectors, opened on first use, and whether it is usable."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from massiveds.core.catalog import ShardRecord
from massiveds.core.errors import DatastoreError
from massiveds.core.layout import ShardFiles
from massiveds.core.passages import PassageFile
from massiveds.encode.index import read_index
from massiveds.store.bm25_index import ShardBM25
from massiveds.store.sampling import doc_positions


@dataclass
class Shard:
    """One shard of an open datastore: its catalog record and folder; its index and passages are opened on first use."""

    record: ShardRecord
    folder: Path
    #: nprobe used when the search gives none (a merged datastore keeps each source's own).
    nprobe: int | None = None
    _ids: np.ndarray | None = field(default=None, repr=False)
    _index: faiss.Index | None = field(default=None, repr=False)
    _passages: PassageFile | None = field(default=None, repr=False)
    _vectors: np.ndarray | None = field(default=None, repr=False)
    _sparse: ShardBM25 | None = field(default=None, repr=False)
    _columns: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _deleted: np.ndarray | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def domain(self) -> str:
        return self.record.domain

    @property
    def id_start(self) -> int:
        return self.record.id_start

    @property
    def count(self) -> int:
        """Rows of the shard's files."""
        return self.record.count

    @property
    def id_offset(self) -> int:
        """Added to the ids stored in the shard's files (its index and passages) to give the datastore's ids."""
        return self.record.id_offset

    @property
    def index(self) -> faiss.Index:
        if self._index is None:
            self._index = read_index(self.folder / ShardFiles.INDEX)
        return self._index

    @property
    def passages(self) -> PassageFile:
        if self._passages is None:
            self._passages = PassageFile(self.folder / ShardFiles.PASSAGES)
        return self._passages

    @property
    def sparse(self) -> ShardBM25:
        """The shard's BM25 index (arrays memory-mapped); its rows are passage ids minus ``id_start``."""
        if self._sparse is None:
            self._sparse = ShardBM25.load(self.folder)
        return self._sparse

    @property
    def has_vectors(self) -> bool:
        return (self.folder / ShardFiles.VECTORS).is_file()

    @property
    def vectors(self) -> np.ndarray:
        """The shard's stored fp16 vectors (row = passage_id - id_start), memory-mapped."""
        if self._vectors is None:
            path = self.folder / ShardFiles.VECTORS
            if not path.is_file():
                raise DatastoreError(f"shard {self.name} has no stored vectors ({path}); rebuild with embed.store_vectors: true")
            vectors = np.load(path, mmap_mode="r", allow_pickle=False)
            if vectors.ndim != 2 or vectors.shape[0] != self.count:
                raise DatastoreError(f"{path}: shape {vectors.shape} does not match the shard's {self.count} passages")
            self._vectors = vectors
        return self._vectors


    @property
    def id_end(self) -> int:
        """One past the shard's last passage id."""
        return self.record.id_end

    @property
    def stored_ids(self) -> np.ndarray | None:
        """The ids (as stored in the shard's files) of its rows when compaction left gaps (``ids.npy``), else None."""
        if self.record.id_span is None or self.record.id_span == self.count:
            return None
        if self._ids is None:
            ids = np.load(self.folder / ShardFiles.ROW_IDS, mmap_mode="r", allow_pickle=False)
            if ids.shape != (self.count,):
                raise DatastoreError(f"{self.folder / ShardFiles.ROW_IDS}: {ids.shape[0]} ids for {self.count} rows; run massiveds verify")
            self._ids = ids
        return self._ids

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """The row of each passage id (datastore ids), -1 for an id the shard does not hold."""
        ids = np.asarray(ids, dtype=np.int64)
        stored = self.stored_ids
        if stored is None:
            inside = (ids >= self.id_start) & (ids < self.id_start + self.count)
            return np.where(inside, ids - self.id_start, -1)
        pos = np.minimum(np.searchsorted(stored, ids - self.id_offset), len(stored) - 1)
        return np.where(stored[pos] == ids - self.id_offset, pos, -1)

    def ids_of(self, rows: np.ndarray) -> np.ndarray:
        """The passage id (datastore ids) of each row (-1 stays -1)."""
        rows = np.asarray(rows, dtype=np.int64)
        stored = self.stored_ids
        ids = rows + self.id_start if stored is None else np.asarray(stored)[np.maximum(rows, 0)] + self.id_offset
        return np.where(rows >= 0, ids, -1)

    @property
    def deleted(self) -> np.ndarray:
        """Per row, whether ``massiveds delete`` deleted it (its ``deleted.npy``; read once, all False without one)."""
        if self._deleted is None:
            self._deleted = deleted_mask(self.folder, self.count)
        return self._deleted

    def column(self, name: str) -> np.ndarray:
        """A passage column of the whole shard (row = passage_id - id_start), read once: per-passage lookups for evaluation."""
        if name not in self._columns:
            self._columns[name] = np.asarray(self.passages.column(name), dtype=object if name in STRING_COLUMNS else None)
        return self._columns[name]

    def sample_positions(self, seed: int) -> np.ndarray:
        """Each passage's document position in the nested sample of ``seed`` (kept at fraction p iff below p)."""
        key = f"sample:{seed}"
        if key not in self._columns:
            self._columns[key] = doc_positions(self.column("doc_id").tolist(), seed)
        return self._columns[key]




def deleted_mask(folder: Path, count: int) -> np.ndarray:
    """Per row of the shard in ``folder`` (``count`` rows), whether it is listed in the shard's ``deleted.npy``."""
    mask = np.zeros(count, dtype=bool)
    path = folder / ShardFiles.DELETED
    if path.is_file():
        rows = np.load(path, allow_pickle=False)
        if rows.ndim != 1 or (len(rows) and (rows.min() < 0 or rows.max() >= count)):
            raise DatastoreError(f"{path}: not a list of row numbers below {count}; run massiveds verify")
        mask[rows] = True
    return mask


#: Passage columns read as Python strings (the others as NumPy numbers).
STRING_COLUMNS = ("doc_id", "domain", "source", "url", "title", "text")


def check_shard(shard: Shard) -> str | None:
    """Open a shard's index and passages; the reason it cannot be searched, or None."""
    if not shard.folder.is_dir():
        return f"folder {os.path.normpath(shard.folder)} is missing"
    for name in (ShardFiles.INDEX, ShardFiles.PASSAGES):
        if not (shard.folder / name).is_file():
            return f"{name} is missing"
    try:
        ntotal = int(shard.index.ntotal)
    except Exception as exc:  # FAISS raises RuntimeError, but a damaged file can surface in several ways
        return f"index.faiss is unreadable ({_first_line(exc)})"
    if ntotal != shard.count:
        return f"index.faiss holds {ntotal} vectors, the catalog says {shard.count}"
    try:
        rows = len(shard.passages)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for damaged IPC files
        return f"passages.arrow is unreadable ({_first_line(exc)})"
    if rows != shard.count:
        return f"passages.arrow holds {rows} passages, the catalog says {shard.count}"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160] if text else ''}"
