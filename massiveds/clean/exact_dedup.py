"""Exact deduplication by a 128-bit hash of normalised text, as a hash-partitioned map/reduce.

Map: every documents part emits (hash, _ord, doc_id) rows split into ``P`` partitions by hash.
Reduce: each partition alone decides, for each hash, which document survives: the one with the
smallest ``_ord`` (source order, then file order, then row). Memory per reducer is ~N/P rows, never
the whole corpus. Apply: each part drops its rows named by the reducers.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

_SPACE = re.compile(r"\s+")
DUPLICATES = pa.schema([("_ord", pa.int64()), ("doc_id", pa.string()), ("source", pa.string()), ("duplicate_of", pa.string())])
KEYS = pa.schema([("hash", pa.binary(16)), ("_ord", pa.int64()), ("doc_id", pa.string()), ("source", pa.string())])


def dedup_key(text: str) -> str:
    """Text as compared for exact duplicates: NFKC, case-folded, whitespace collapsed."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def text_hashes(texts: list[str]) -> pa.Array:
    """xxh3-128 digests of the dedup keys."""
    return pa.array([xxhash.xxh3_128_digest(dedup_key(t).encode("utf-8")) for t in texts], pa.binary(16))


def document_keys(docs: pa.Table) -> pa.Table:
    """(hash, _ord, doc_id, source) of a documents table: its text hashed, or the ``hash`` column it already has (a dedup index's)."""
    hashes = docs.column("hash") if "hash" in docs.column_names else text_hashes(docs.column("text").to_pylist())
    return pa.table([hashes, docs.column("_ord"), docs.column("doc_id"), docs.column("source")], schema=KEYS)


def key_partitions(keys: pa.Table, partitions: int) -> np.ndarray:
    """The hash partition of each row of keys (``KEYS``): the digest's first 8 bytes modulo ``partitions``."""
    if keys.num_rows == 0:
        return np.zeros(0, np.int64)
    hashes = keys.column("hash").combine_chunks()
    first8 = np.frombuffer(hashes.buffers()[1], dtype=np.uint64, count=len(hashes) * 2, offset=16 * hashes.offset)[::2]
    return (first8 % np.uint64(partitions)).astype(np.int64)


def find_duplicates(keys: pa.Table, keep_below: int = 0) -> pa.Table:
    """For one partition's keys, the rows that are not the first of their hash, with the survivor's doc id.

    Rows with an ``_ord`` below ``keep_below`` are never duplicates (an append's datastore documents: they
    only make later copies duplicates). Output is sorted by ``_ord`` so that each input part can read back just its own range.
    """
    if keys.num_rows == 0:
        return DUPLICATES.empty_table()
    keys = keys.sort_by([("hash", "ascending"), ("_ord", "ascending")])
    hashes = keys.column("hash").to_numpy(zero_copy_only=False)
    first = np.ones(len(hashes), dtype=bool)
    first[1:] = hashes[1:] != hashes[:-1]
    survivor_idx = np.maximum.accumulate(np.where(first, np.arange(len(hashes)), 0))
    dup = ~first & (keys.column("_ord").to_numpy() >= keep_below)
    doc_ids = keys.column("doc_id")
    mask = pa.array(dup)
    table = pa.table(
        [
            keys.column("_ord").filter(mask),
            doc_ids.filter(mask),
            keys.column("source").filter(mask),
            pc.take(doc_ids, pa.array(survivor_idx[dup])),
        ],
        schema=DUPLICATES,
    )
    return table.sort_by("_ord")
