"""A shard's passages on disk: an Arrow IPC file of fixed-size, zstd-compressed record batches.

Fixed batch sizes make row lookup O(1): row r lives in batch r // B at offset r % B, and only that
batch is read and decompressed (the file is memory-mapped).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from massiveds.core.layout import atomic_path
from massiveds.core.schema import PASSAGES

#: Rows per record batch. A search reads one whole batch per hit it returns, so batches are small; at 128 rows
#: zstd packs the text as tightly as at 1024 (BENCHMARKS.md, "A billion tokens").
BATCH_ROWS = 128
_META_KEY = b"massiveds.batch_rows"


def fixed_batches(tables: Iterable[pa.Table], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Re-cut a stream of tables into record batches of exactly ``batch_rows`` (the last may be short)."""
    buf: list[pa.Table] = []
    n = 0
    for table in tables:
        buf.append(table)
        n += table.num_rows
        while n >= batch_rows:
            joined = pa.concat_tables(buf)
            yield joined.slice(0, batch_rows).combine_chunks().to_batches()[0]
            buf, n = [joined.slice(batch_rows)], joined.num_rows - batch_rows
    if n:
        yield pa.concat_tables(buf).combine_chunks().to_batches()[0]


def write_passages(path: Path, tables: Iterable[pa.Table], batch_rows: int = BATCH_ROWS) -> int:
    """Write passage tables (PASSAGES columns, in id order) as one IPC file, atomically; returns rows written."""
    schema = PASSAGES.with_metadata({_META_KEY: str(batch_rows).encode()})
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    rows = 0
    cast = (t.select(PASSAGES.names).cast(PASSAGES) for t in tables)
    with atomic_path(path) as tmp, pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema, options=options) as writer:
        for batch in fixed_batches(cast, batch_rows):
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


class PassageFile:
    """Random access to one shard's passages by row number."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
        meta = self._reader.schema.metadata or {}
        self.batch_rows = int(meta.get(_META_KEY, BATCH_ROWS))
        self._cache: dict[int, pa.RecordBatch] = {}

    def __len__(self) -> int:
        batches = self._reader.num_record_batches
        if batches == 0:
            return 0
        return (batches - 1) * self.batch_rows + self.read_batch(batches - 1).num_rows

    @property
    def num_batches(self) -> int:
        return int(self._reader.num_record_batches)

    def read_batch(self, i: int) -> pa.RecordBatch:
        """Record batch ``i`` (rows ``i*batch_rows`` onwards), cached: search hits cluster in few batches."""
        if i not in self._cache:
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[i] = self._reader.get_batch(i)
        return self._cache[i]

    def rows(self, rows: Iterable[int]) -> list[dict[str, Any]]:
        """The passages at the given row numbers, as dicts, in the order asked."""
        out = []
        for r in rows:
            batch = self.read_batch(r // self.batch_rows)
            out.append(batch.slice(r % self.batch_rows, 1).to_pylist()[0])
        return out

    def iter_column(self, name: str) -> Iterator[list[Any]]:
        """One column of the whole shard, batch after batch (for build passes over a shard, not for search)."""
        for i in range(self._reader.num_record_batches):
            yield self._reader.get_batch(i).column(name).to_pylist()

    def column(self, name: str) -> list[Any]:
        """One column of the whole shard (for sampling and stats, not for search)."""
        return [value for batch in self.iter_column(name) for value in batch]

    def read_all(self) -> pa.Table:
        """The whole shard (for inspection and tests, not for search)."""
        return self._reader.read_all()
