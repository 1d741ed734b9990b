"""The datastore's dedup index: what exact and near dedup need to know of each document it holds or deleted, never its text.

One row per document: its id and source, the xxh3-128 digest of its text as exact dedup compares it
(``exact_dedup.text_hashes``) and its MinHash signature (``minhash``, ``4 * num_perm`` bytes; null for a
document without words, or when near dedup did not run). The rows live in Parquet files under
``<datastore>/dedup/``, one per documents part of the build or append that kept them, listed in the
catalog's ``dedup`` record with the MinHash parameters of the signatures.

An append compares its new documents with these rows (its ``reference`` stage) instead of reassembling the
datastore's documents from their passages, so it reads what it adds plus ``16 + 4 * num_perm`` bytes per
old document, never the old text. ``massiveds delete`` leaves a deleted document's row: a new exact or
near copy of deleted text is dropped as a duplicate of it. Compact and retrain leave the index as it is,
subsample keeps the rows of the documents it keeps, merge unites its sources' rows when their signatures
were made alike, and publish and pull carry the files with the others the catalog lists.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from massiveds.core.catalog import DEDUP_DIR, DedupIndexRecord, FileRecord
from massiveds.core.layout import atomic_path
from massiveds.core.manifest import NearDedup

DEDUP_INDEX = pa.schema([("doc_id", pa.string()), ("source", pa.string()), ("hash", pa.binary(16)), ("signature", pa.binary())])
#: Per documents part of a build, what the dedup stages computed, by ``_ord``: exact dedup's digests, near dedup's signatures.
HASHES = pa.schema([("_ord", pa.int64()), ("hash", pa.binary(16))])
SIGNATURES = pa.schema([("_ord", pa.int64()), ("signature", pa.binary())])


def signs_like(record: DedupIndexRecord, near: NearDedup) -> bool:
    """Whether the index's signatures are what ``near`` would compute (same shingles, permutations and seed)."""
    return record.params == near_params(near)


def write_index_file(path: Path, rows: pa.Table) -> None:
    """One file of the index (``DEDUP_INDEX`` rows), atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(rows.cast(DEDUP_INDEX), tmp, compression="zstd", row_group_size=65536)


def read_index_file(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """The rows of one index file."""
    return pq.read_table(path, columns=list(columns) if columns else None, schema=DEDUP_INDEX)


def index_record(root: Path, names: Iterable[str], near: tuple[int, int, int] | None) -> DedupIndexRecord:
    """The catalog record of the index files ``names`` (under ``root/dedup``), signatures made with ``near`` = (ngram, num_perm, seed)."""
    files = {name: FileRecord.of(root / DEDUP_DIR / name) for name in sorted(names)}
    documents = signed = 0
    for name in files:
        meta = pq.read_metadata(root / DEDUP_DIR / name)
        documents += meta.num_rows
        signed += meta.num_rows - sum(_nulls(meta.row_group(g)) for g in range(meta.num_row_groups))
    ngram, num_perm, seed = near if near is not None and signed else (None, None, None)
    return DedupIndexRecord(files=files, documents=documents, signed=signed, ngram=ngram, num_perm=num_perm, seed=seed)


def _nulls(group: pq.RowGroupMetaData) -> int:
    """The documents without a signature in one row group (an empty part's file has one with no statistics)."""
    if group.num_rows == 0:
        return 0
    stats = group.column(3).statistics
    assert stats is not None and stats.has_null_count, "index files are written with statistics"
    return int(stats.null_count)


def carry(src_root: Path, record: DedupIndexRecord, dst_root: Path, keep: Callable[[pa.Table], pa.Array] | None = None,
          prefix: str = "") -> list[str]:
    """Write the index files of ``record`` (under ``src_root``) into ``dst_root/dedup``, named ``prefix`` + name; their names.

    ``keep``: the rows to keep of each file (a boolean mask of its rows); without it every file is copied as it is.
    """
    (dst_root / DEDUP_DIR).mkdir(parents=True, exist_ok=True)
    names = []
    for name in sorted(record.files):
        src, dst = src_root / DEDUP_DIR / name, dst_root / DEDUP_DIR / f"{prefix}{name}"
        if keep is None:
            shutil.copyfile(src, dst)
        else:
            rows = read_index_file(src)
            write_index_file(dst, rows.filter(keep(rows)))
        names.append(dst.name)
    return names


def near_params(near: NearDedup) -> tuple[int, int, int]:
    """(ngram, num_perm, seed): what a signature depends on."""
    return near.ngram, near.num_perm, near.seed
