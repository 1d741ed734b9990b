"""Scatter files: one unit's rows routed to the hash partitions of the next step, in one file, read back a partition at a time.

A shuffle in which each of ``U`` units writes one Parquet file per partition makes ``U x P`` small files (and as
many opens when the ``P`` reducers read them back): at 91 input files and 64 partitions, exact dedup wrote and
read 5,824. A scatter file is one per unit: its rows as Arrow IPC record batches grouped by partition, then an
index (partition, offset, length of every batch, sorted by partition), so a reducer reads its partition's
batches of each file with a binary search of the index and one read per batch. Used by exact and near dedup and by
the BM25 build's document frequencies.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import atomic_path

#: Rows a scatter file buffers before writing them out grouped by partition.
SCATTER_FLUSH_BYTES = 64 << 20
SCATTER = ".scatter"
#: A scatter file's last bytes: index entries, partitions it was written for, magic.
_TRAILER = struct.Struct("<qq8s")
_MAGIC = b"MDSSCAT1"


class Scatter:
    """Rows routed to partitions, written to one file as Arrow IPC record batches grouped by partition, then an index.

    Rows are buffered up to ``flush_bytes``, then written sorted by partition: one record batch (an
    encapsulated IPC message) per non-empty partition. ``close`` appends the index (partition, offset,
    length of every batch, sorted by partition, as three int64 arrays) and the trailer.
    """

    def __init__(self, file: BinaryIO, schema: pa.Schema, partitions: int, flush_bytes: int = SCATTER_FLUSH_BYTES) -> None:
        self.file, self.schema, self.partitions, self.flush_bytes = file, schema, partitions, flush_bytes
        self.rows = 0
        self._pending: list[tuple[pa.Table, np.ndarray]] = []
        self._pending_bytes = 0
        self._offset = 0
        self._index: list[tuple[int, int, int]] = []

    def write(self, table: pa.Table, dest: np.ndarray) -> None:
        """Add ``table``'s rows, row ``i`` to partition ``dest[i]``."""
        if not table.num_rows:
            return
        self._pending.append((table, dest))
        self._pending_bytes += table.nbytes
        self.rows += table.num_rows
        if self._pending_bytes >= self.flush_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        dest = np.concatenate([d for _, d in self._pending])
        order = np.argsort(dest, kind="stable")
        table, dest = pa.concat_tables([t for t, _ in self._pending]).take(pa.array(order)), dest[order]
        self._pending, self._pending_bytes = [], 0
        starts = np.flatnonzero(np.concatenate([[True], dest[1:] != dest[:-1]]))
        for start, stop in zip(starts.tolist(), [*starts[1:].tolist(), len(dest)], strict=True):
            for batch in table.slice(start, stop - start).to_batches():
                message = batch.serialize()  # a multiple of 8 bytes: every batch stays 8-byte aligned
                self.file.write(message)
                self._index.append((int(dest[start]), self._offset, message.size))
                self._offset += message.size

    def close(self) -> None:
        """Write what is buffered, then the index and the trailer."""
        self._flush()
        index = np.array(self._index, np.int64).reshape(-1, 3)
        index = index[np.argsort(index[:, 0], kind="stable")]
        self.file.write(np.ascontiguousarray(index.T).tobytes())
        self.file.write(_TRAILER.pack(len(index), self.partitions, _MAGIC))


@dataclass(frozen=True)
class _Column:
    """``n`` int64 values at byte ``at`` of an open file, read on demand (a binary search reads ~log2(n) of them)."""

    fd: int
    at: int
    n: int

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return self.read(i, i + 1)[0]

    def read(self, lo: int, hi: int) -> tuple[int, ...]:
        """Values ``lo`` to ``hi - 1``."""
        return struct.unpack(f"<{hi - lo}q", os.pread(self.fd, 8 * (hi - lo), self.at + 8 * lo))


def read_scatter(path: Path, partition: int, schema: pa.Schema, partitions: int) -> list[pa.RecordBatch]:
    """The record batches of ``partition`` in one scatter file: a binary search of its index, then a read of each batch."""
    fd = os.open(path, os.O_RDONLY)
    try:
        end = os.fstat(fd).st_size - _TRAILER.size
        count, written_for, magic = _TRAILER.unpack(os.pread(fd, _TRAILER.size, end))
        if magic != _MAGIC or written_for != partitions:
            raise MassiveDSError(f"{path} was not written for {partitions} partitions; rebuild with --force")
        parts, offsets, lengths = (_Column(fd, end - 8 * count * (3 - k), count) for k in range(3))
        lo = bisect.bisect_left(parts, partition)
        hi = bisect.bisect_left(parts, partition + 1, lo)
        return [pa.ipc.read_record_batch(pa.py_buffer(os.pread(fd, n, o)), schema)
                for o, n in zip(offsets.read(lo, hi), lengths.read(lo, hi), strict=True)]
    finally:
        os.close(fd)


@contextlib.contextmanager
def scatter_file(path: Path, schema: pa.Schema, partitions: int) -> Iterator[Scatter]:
    """A ``Scatter`` into ``path`` (a ``.scatter`` file), in place when the block ends without error (else none)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        out = Scatter(f, schema, partitions)
        yield out
        out.close()


def read_partition(folder: Path, partition: int, schema: pa.Schema, partitions: int) -> Iterator[pa.RecordBatch]:
    """The rows of ``partition`` in every scatter file of ``folder``, batch by batch, file by file (in name order)."""
    files = sorted(folder.glob("*" + SCATTER)) if folder.is_dir() else []
    for path in files:
        yield from read_scatter(path, partition, schema, partitions)
