"""Parquet input, streamed one row group batch at a time."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow.parquet as pq

from massiveds.ingest.extract.stream import DEFAULT_LIMITS, Limits
from massiveds.ingest.extract.types import RawRecord


def read_parquet(path: str, limits: Limits = DEFAULT_LIMITS, *, batch_rows: int = 4096) -> Iterator[RawRecord]:
    """Yield one record per row, never holding more than one batch of the file in memory.

    A cell is read whole (Parquet has no smaller unit): ``records_to_documents`` drops a text over
    ``limits.max_record_bytes``.
    """
    row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        for fields in batch.to_pylist():
            yield RawRecord(row, fields)
            row += 1
