"""Arrow schemas of the tables that flow between stages: the data contracts of the build folder and the shard files."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa

#: Documents table (contract) plus the build-internal ``_ord``: a 63-bit ordinal
#: (source, file, row) that orders documents deterministically, e.g. to pick which copy survives dedup.
DOCUMENTS = pa.schema(
    [
        ("doc_id", pa.string()),
        ("domain", pa.string()),
        ("source", pa.string()),
        ("url", pa.string()),
        ("title", pa.string()),
        ("text", pa.string()),
        ("meta", pa.string()),
        ("_ord", pa.int64()),
    ]
)

#: Passages table (contract); ``passage_id`` is the FAISS id, unique in the datastore.
PASSAGES = pa.schema(
    [
        ("passage_id", pa.int64()),
        ("doc_id", pa.string()),
        ("domain", pa.string()),
        ("source", pa.string()),
        ("url", pa.string()),
        ("title", pa.string()),
        ("text", pa.string()),
        ("n_tokens", pa.int32()),
        ("char_start", pa.int64()),
        ("char_end", pa.int64()),
    ]
)

#: One row per document a stage removed: nothing disappears without a trace.
DROPPED = pa.schema(
    [
        ("doc_id", pa.string()),
        ("source", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("duplicate_of", pa.string()),
        ("detail", pa.string()),
    ]
)

SOURCE_BITS, FILE_BITS, ROW_BITS = 10, 22, 31


def ordinal(source_idx: int, file_idx: int, row: int) -> int:
    """Pack (source, file, row) into the sortable int64 ``_ord``."""
    if source_idx >= 1 << SOURCE_BITS or file_idx >= 1 << FILE_BITS or row >= 1 << ROW_BITS:
        raise ValueError(f"ordinal out of range: source {source_idx}, file {file_idx}, row {row}")
    return (source_idx << (FILE_BITS + ROW_BITS)) | (file_idx << ROW_BITS) | row


def dropped_table(rows: list[dict[str, str | None]]) -> pa.Table:
    """Build a DROPPED table from dicts (missing keys become null)."""
    return pa.Table.from_pylist([{f: r.get(f) for f in DROPPED.names} for r in rows], schema=DROPPED)


def count_drops(dropped: pa.Table, into: Counter[str]) -> None:
    """Add a DROPPED table's rows to ``into``, keyed ``stage:reason`` (the catalog's drop counts)."""
    for stage, reason in zip(dropped.column("stage").to_pylist(), dropped.column("reason").to_pylist(), strict=True):
        into[f"{stage}:{reason}"] += 1
