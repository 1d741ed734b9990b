"""Parts in the build folder: written batch by batch and renamed when complete; documents parts read back less the removals.

Exact dedup, near dedup and decontamination each write the ``_ord``s they remove (sorted within each
file, so a range filter reads little); a later stage reads an input file's documents part without
the ``_ord``s of the clean-up stages that ran before it (``surviving_documents``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.parquet as pq

from massiveds.core.layout import atomic_path
from massiveds.core.schema import FILE_BITS, ROW_BITS
from massiveds.ingest.sources.files import unit_name
from pipelines.stage import InputItem

#: The format of an append's reference parts read from the datastore's dedup index (``pipelines.stages.reference``).
INDEX_PART = "dedup-index"
#: Where (under ``build/``) each clean-up stage writes the ``_ord``s it removes, by its ``Stage.removes`` key: one file
#: per input file (``{unit}``), so a unit reads its own; exact dedup's reducers write one per hash partition, all read.
REMOVED = {"exact": "dedup/duplicates/*.parquet", "near": "dedup/near/duplicates/{unit}.parquet",
           "decontaminate": "decontaminate/matches/{unit}.parquet"}


class PartWriter:
    """A Parquet file written batch by batch under a temporary name, renamed on ``commit``."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._ctx = atomic_path(path)
        self._tmp = self._ctx.__enter__()
        self._writer = pq.ParquetWriter(str(self._tmp), schema, compression="zstd")
        self.schema = schema
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table)
            self.rows += table.num_rows

    def commit(self) -> None:
        self._writer.close()
        self._ctx.__exit__(None, None, None)

    def abort(self, exc: BaseException) -> None:
        self._writer.close()
        self._ctx.__exit__(type(exc), exc, exc.__traceback__)


def write_table(path: Path, table: pa.Table, row_group_size: int | None = None) -> None:
    """Write one whole Parquet file atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(table, str(tmp), row_group_size=row_group_size)


def read_folder(folder: Path, schema: pa.Schema) -> pa.Table:
    """Every Parquet file of ``folder`` as one table (empty when there is none)."""
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    return pa.concat_tables([pq.read_table(f, schema=schema) for f in files]) if files else schema.empty_table()


def documents_path(build: Path, unit: str) -> Path:
    """The documents part extract wrote for one input file."""
    return build / "documents" / f"{unit}.parquet"


def hashes_path(build: Path, unit: str) -> Path:
    """Exact dedup's digest of each document of a documents part, by ``_ord`` (``dedup_index.HASHES``), for the dedup index."""
    return build / "dedup" / "hashes" / f"{unit}.parquet"


def signatures_path(build: Path, unit: str) -> Path:
    """Near dedup's MinHash signature of each document of a documents part, by ``_ord`` (``dedup_index.SIGNATURES``)."""
    return build / "dedup" / "near" / "signed" / f"{unit}.parquet"


def indexed(item: InputItem) -> bool:
    """Whether a documents part holds a datastore's dedup index rows (digest and signature, no text): an append's reference."""
    return item.file.format == INDEX_PART


def read_documents(path: Path, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """A documents part, one row group at a time."""
    pf = pq.ParquetFile(str(path))
    for i in range(pf.num_row_groups):
        yield pf.read_row_group(i, columns=columns)


def unit_ord_range(source_idx: int, file_idx: int) -> tuple[int, int]:
    """The ``[lo, hi)`` range of ``_ord`` values of one input file's documents."""
    start = (source_idx << (FILE_BITS + ROW_BITS)) | (file_idx << ROW_BITS)
    return start, start + (1 << ROW_BITS)


def ord_file(ords: pa.Array | list[int]) -> list[tuple[int, int]]:
    """(source_idx, file_idx) of each ``_ord``."""
    return [(o >> (FILE_BITS + ROW_BITS), (o >> ROW_BITS) & ((1 << FILE_BITS) - 1)) for o in pa.array(ords, pa.int64()).to_pylist()]


def removed_ords(build: Path, source_idx: int, file_idx: int, removed: Sequence[str]) -> pa.Array:
    """Unique ``_ord``s of one input file removed by the clean-up stages ``removed`` (keys of ``REMOVED``), as int64.

    Its cost is the files it opens: one per per-unit stage, and exact dedup's partitions (few: ~64 MiB of keys each),
    not every removal file of the build (a cost of units x files).
    """
    lo, hi = unit_ord_range(source_idx, file_idx)
    unit = unit_name(source_idx, file_idx)
    files = [str(f) for stage in removed for f in sorted(build.glob(REMOVED[stage].format(unit=unit)))]
    if not files:
        return pa.array([], pa.int64())
    table = pds.dataset(files, format="parquet").to_table(columns=["_ord"], filter=(pds.field("_ord") >= lo) & (pds.field("_ord") < hi))
    return pc.unique(table.column("_ord").combine_chunks().cast(pa.int64()))


def surviving_documents(build: Path, item: InputItem, removed: Sequence[str], columns: list[str] | None = None) -> Iterator[pa.Table]:
    """An input file's documents part, one row group at a time, without the documents the ``removed`` stages took out."""
    drop = removed_ords(build, item.file.source_idx, item.file.file_idx, removed) if removed else pa.array([], pa.int64())
    for table in read_documents(documents_path(build, item.unit), columns):
        yield table.filter(pc.invert(pc.is_in(table.column("_ord"), value_set=drop))) if len(drop) else table
