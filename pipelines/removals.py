"""Which documents of a part earlier clean-up stages removed, read back by ``_ord`` range.

Exact dedup, near dedup and decontamination each write tables with an ``_ord`` column (sorted by
``_ord`` within each file, so a range filter reads little). A later stage (near dedup after exact,
decontamination after both, chunking after all) filters a documents part by the union.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds

from massiveds.core.schema import FILE_BITS, ROW_BITS

#: Folders (under ``build/``) of the ``_ord``s each stage removes.
REMOVED = {"exact": "dedup/duplicates", "near": "dedup/near/duplicates", "decontaminate": "decontaminate/matches"}


def unit_ord_range(source_idx: int, file_idx: int) -> tuple[int, int]:
    """The ``[lo, hi)`` range of ``_ord`` values of one input file's documents."""
    start = (source_idx << (FILE_BITS + ROW_BITS)) | (file_idx << ROW_BITS)
    return start, start + (1 << ROW_BITS)


def ord_file(ords: pa.Array | list[int]) -> list[tuple[int, int]]:
    """(source_idx, file_idx) of each ``_ord``."""
    return [(o >> (FILE_BITS + ROW_BITS), (o >> ROW_BITS) & ((1 << FILE_BITS) - 1)) for o in pa.array(ords, pa.int64()).to_pylist()]


def removed_ords(build: Path, source_idx: int, file_idx: int, stages: list[str]) -> pa.Array:
    """Unique ``_ord``s of one input file removed by ``stages`` (keys of ``REMOVED``), as int64."""
    lo, hi = unit_ord_range(source_idx, file_idx)
    found = []
    for stage in stages:
        folder = build / REMOVED[stage]
        if not folder.is_dir() or not any(folder.glob("*.parquet")):
            continue
        dataset = pds.dataset(str(folder), format="parquet")
        found.append(dataset.to_table(columns=["_ord"], filter=(pds.field("_ord") >= lo) & (pds.field("_ord") < hi)).column("_ord"))
    if not found:
        return pa.array([], pa.int64())
    return pc.unique(pa.chunked_array([c for col in found for c in col.chunks], pa.int64()).combine_chunks())
