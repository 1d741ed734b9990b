"""Work units of the build: plain functions, one input file or one shard each, no Ray inside.

Each unit reads its inputs from the build folder, calls the stage functions of ``massiveds`` on
Arrow batches, writes its outputs under temporary names that are renamed when complete, and
returns a small metadata dict. ``pipelines.build`` schedules them on Ray; tests and benchmarks can
call them directly in one process.
"""

from __future__ import annotations

import collections
import hashlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from massiveds.clean.exact_dedup import KEYS, find_duplicates, partition_keys
from massiveds.clean.normalize import normalize_and_filter
from massiveds.core.layout import atomic_path, file_record, write_json
from massiveds.core.manifest import Manifest
from massiveds.core.passages import PassageFile, write_passages
from massiveds.core.schema import DOCUMENTS, DROPPED, count_drops, dropped_table
from massiveds.encode.chunk import CHUNKS, Spans, chunk_documents, token_spanner, word_spans
from massiveds.encode.embed import load_tokenizer
from massiveds.encode.index import IndexPlan, add_vectors, list_balance, read_index, train_index, write_index
from massiveds.ingest.extract import reader_for
from massiveds.ingest.extract.records import records_to_documents
from massiveds.ingest.extract.stream import InputError, Limits
from massiveds.ingest.extract.types import RawRecord
from pipelines.removals import removed_ords

READ_BATCH = 2048
MAX_DEDUP_PARTITIONS = 64

#: Runs one step's units: ``run(step, fn, items, kwargs)`` calls ``fn(item, **kwargs)`` per item, returns the results in order.
Runner = Callable[[str, Callable[..., dict[str, Any]], list[dict[str, Any]], dict[str, Any]], list[dict[str, Any]]]


class _PartWriter:
    """A Parquet file written batch by batch under a temporary name, renamed on ``commit``."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._ctx = atomic_path(path)
        self._tmp = self._ctx.__enter__()
        self._writer = pq.ParquetWriter(str(self._tmp), schema, compression="zstd")
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


def with_manifest(item: dict[str, Any], fn: Callable[..., dict[str, Any]], manifests: list[Manifest], **kwargs: Any) -> dict[str, Any]:
    """Call a per-file unit with the manifest its file comes from (``item["part"]``, the manifest's place in the build)."""
    return fn(item, manifests[item["part"]], **kwargs)


def _until_broken(records: Iterator[RawRecord], on_break: Callable[[Exception], None]) -> Iterator[RawRecord]:
    """The records of a reader until it raises; the error goes to ``on_break`` (the caller's own errors are not caught)."""
    try:
        yield from records
    except Exception as exc:  # a corrupt file must not stop the build: what was read is kept, the break recorded
        on_break(exc)


def extract_unit(inp: dict[str, Any], manifest: Manifest, build: Path) -> dict[str, Any]:
    """Read one input file, map it to documents, normalise and filter; write its documents and drops.

    A file that breaks off mid-way (truncated, corrupt, a decompression bomb, binary) keeps the
    documents read before the break and records the unread rest as one dropped entry with its
    position, counted as one record read: ``read == kept + dropped`` for every file.
    """
    unit = inp["unit"]
    limits = Limits.of(manifest.filters)
    docs_out = _PartWriter(build / "documents" / f"{unit}.parquet", DOCUMENTS)
    drops_out = _PartWriter(build / "dropped" / "extract" / f"{unit}.parquet", DROPPED)
    reasons: collections.Counter[str] = collections.Counter()
    read = 0
    buffer: list[RawRecord] = []

    def flush() -> None:
        docs, dropped = records_to_documents(buffer, inp, manifest.domain, limits.max_record_bytes)
        kept, filtered = normalize_and_filter(docs, manifest.filters)
        for table in (dropped, filtered):
            drops_out.write(table)
            count_drops(table, reasons)
        docs_out.write(kept)
        buffer.clear()

    def record_break(exc: Exception) -> None:
        nonlocal read
        broken = dropped_table(
            [
                {
                    "doc_id": f"{inp['rel']}#after-{read}",
                    "source": inp["source"],
                    "stage": "extract",
                    "reason": exc.reason if isinstance(exc, InputError) else "corrupt_file",
                    "detail": f"{inp['rel']}: after {read:,} records: {type(exc).__name__}: {exc}"[:1000],
                }
            ]
        )
        drops_out.write(broken)
        count_drops(broken, reasons)
        read += 1  # the unread rest counts as one record, dropped

    try:
        for record in _until_broken(reader_for(inp["format"])(inp["path"], limits), record_break):
            buffer.append(record)
            read += 1
            if len(buffer) >= READ_BATCH:
                flush()
        flush()
    except BaseException as exc:
        docs_out.abort(exc)
        drops_out.abort(exc)
        raise
    drops_out.commit()
    docs_out.commit()  # the documents file is the unit's completion marker: renamed last
    return {"unit": unit, "source": inp["source"], "read": read, "kept": docs_out.rows, "dropped": dict(reasons)}


def _documents(path: Path, columns: list[str] | None = None) -> Iterator[pa.Table]:
    pf = pq.ParquetFile(str(path))
    for i in range(pf.num_row_groups):
        yield pf.read_row_group(i, columns=columns)


def dedup_map_unit(item: dict[str, Any], build: Path, partitions: int) -> dict[str, Any]:
    """Hash one documents part and append its keys to the hash partitions (exact-dedup map step)."""
    unit = item["unit"]
    writers: dict[int, _PartWriter] = {}
    for table in _documents(build / "documents" / f"{unit}.parquet", ["doc_id", "source", "text", "_ord"]):
        for bucket, keys in partition_keys(table, partitions).items():
            if bucket not in writers:
                writers[bucket] = _PartWriter(build / "dedup" / "keys" / f"p{bucket:04d}" / f"{unit}.parquet", KEYS)
            writers[bucket].write(keys)
    for w in writers.values():
        w.commit()
    return {"unit": unit, "partitions": len(writers)}


def dedup_reduce_unit(item: dict[str, Any], build: Path) -> dict[str, Any]:
    """Find the duplicates within one hash partition; write them (by ``_ord``) and their drop records."""
    partition = item["partition"]
    folder = build / "dedup" / "keys" / f"p{partition:04d}"
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    keys = pa.concat_tables([pq.read_table(f, schema=KEYS) for f in files]) if files else KEYS.empty_table()
    dups = find_duplicates(keys)
    with atomic_path(build / "dedup" / "duplicates" / f"p{partition:04d}.parquet") as tmp:
        pq.write_table(dups, str(tmp), row_group_size=65536)
    dropped = dropped_table(
        [
            {"doc_id": d, "source": s, "stage": "dedup", "reason": "exact_duplicate", "duplicate_of": o}
            for d, s, o in zip(
                dups.column("doc_id").to_pylist(), dups.column("source").to_pylist(), dups.column("duplicate_of").to_pylist(), strict=True
            )
        ]
    )
    with atomic_path(build / "dropped" / "dedup" / f"p{partition:04d}.parquet") as tmp:
        pq.write_table(dropped, str(tmp))
    return {"unit": f"p{partition:04d}", "keys": keys.num_rows, "duplicates": dups.num_rows}


def spanner_for(manifest: Manifest, base_dir: Path | None = None) -> Callable[[str], Spans]:
    """The unit spans the manifest chunks by: words, or its embedder's tokens (model resolved from ``base_dir``)."""
    if manifest.chunk.unit == "tokens":
        return token_spanner(load_tokenizer(manifest.embed.model, base_dir))
    return word_spans


def run_exact_dedup(run: Runner, items: list[dict[str, Any]], build: Path) -> dict[str, Any]:
    """Exact dedup over the documents parts ``items``: map into one hash partition per part (at most 64), then reduce."""
    partitions = max(1, min(MAX_DEDUP_PARTITIONS, len(items)))
    run("dedup-map", dedup_map_unit, [{"unit": i["unit"]} for i in items], {"build": build, "partitions": partitions})
    reduce_items = [{"unit": f"p{p:04d}", "partition": p} for p in range(partitions)]
    dups = sum(r["duplicates"] for r in run("dedup", dedup_reduce_unit, reduce_items, {"build": build}))
    shutil.rmtree(build / "dedup" / "keys", ignore_errors=True)
    return {"duplicates": dups, "partitions": partitions, "summary": f"{dups:,} exact duplicates in {partitions} hash partitions"}


def chunk_unit(inp: dict[str, Any], manifest: Manifest, build: Path, removed: list[str], base_dir: Path | None = None) -> dict[str, Any]:
    """Cut one documents part into passages, leaving out the documents the ``removed`` clean-up stages dropped.

    ``base_dir`` (the manifest's folder) resolves a local embedding model whose tokenizer counts tokens.
    """
    unit = inp["unit"]
    drop_ords = removed_ords(build, inp["source_idx"], inp["file_idx"], removed)
    spanner = spanner_for(manifest, base_dir)
    out = _PartWriter(build / "passages" / f"{unit}.parquet", CHUNKS)
    docs = tokens = 0
    for table in _documents(build / "documents" / f"{unit}.parquet"):
        if len(drop_ords):
            table = table.filter(pc.invert(pc.is_in(table.column("_ord"), value_set=drop_ords)))
        docs += table.num_rows
        passages = chunk_documents(table, manifest.chunk, spanner)
        tokens += int(pc.sum(passages.column("n_tokens")).as_py() or 0)
        out.write(passages)
    out.commit()
    return {"unit": unit, "documents": docs, "passages": out.rows, "tokens": tokens}


def write_shard_unit(shard: dict[str, Any], build: Path, shards_dir: Path) -> dict[str, Any]:
    """Write one shard's passages (ids ``id_start`` onwards) from its slices of the chunk outputs."""

    tokens = 0

    def tables() -> Iterator[pa.Table]:
        nonlocal tokens
        next_id = shard["id_start"]
        for part, start, stop in shard["slices"]:
            pf = pq.ParquetFile(str(build / "passages" / part))
            row = 0
            for batch in pf.iter_batches(batch_size=8192):
                lo, hi = max(start, row), min(stop, row + batch.num_rows)
                if lo < hi:
                    piece = pa.Table.from_batches([batch.slice(lo - row, hi - lo)])
                    ids = pa.array(np.arange(next_id, next_id + piece.num_rows, dtype=np.int64))
                    next_id += piece.num_rows
                    tokens += int(pc.sum(piece.column("n_tokens")).as_py() or 0)
                    yield piece.append_column("passage_id", ids)
                row += batch.num_rows
                if row >= stop:
                    break

    rows = write_passages(shards_dir / shard["name"] / "passages.arrow", tables())
    if rows != shard["count"]:
        raise RuntimeError(f"shard {shard['name']}: wrote {rows} passages, expected {shard['count']}")
    return {"unit": shard["name"], "passages": rows, "tokens": tokens}


def read_passage_range(item: dict[str, Any], shards_dir: Path) -> pa.Table:
    """(passage_id, text) of rows [start, stop) of one shard (or of its rows ``only``), longest text first: an embed block.

    Model batches are cut from the block in this order, so each holds passages of like length and little
    padding (on real text, batches of 64 cut from 1,024 rows in id order are 4 % padding; from 4,096
    sorted rows, 1 %).
    """
    pf = PassageFile(shards_dir / item["shard"] / "passages.arrow")
    b = pf.batch_rows
    batches = [pf.read_batch(i) for i in range(item["start"] // b, (item["stop"] - 1) // b + 1)]
    table = pa.Table.from_batches(batches).select(["passage_id", "text"])
    offset = item["start"] - (item["start"] // b) * b
    table = table.slice(offset, item["stop"] - item["start"])
    if "only" in item:  # a resumed block: the rows no finished part covers
        table = table.take(pa.array(np.asarray(item["only"], dtype=np.int64) - item["start"]))
    return table.take(pc.array_sort_indices(pc.utf8_length(table.column("text")), order="descending"))


def write_embeddings_part(ids: np.ndarray, vectors: np.ndarray, shards: list[dict[str, Any]], build: Path) -> list[dict[str, Any]]:
    """Write a batch of embeddings as fp16 ``.npz`` parts, one per shard the batch touches.

    A batch's ids are not a contiguous range (blocks are sorted by length), so a part is named by its id
    range and a digest of its ids: two batches of one range never share a file.
    """
    out = []
    for shard in shards:
        mask = (ids >= shard["id_start"]) & (ids < shard["id_start"] + shard["count"])
        if not mask.any():
            continue
        part_ids = ids[mask].astype(np.int64)
        digest = hashlib.blake2b(np.sort(part_ids).tobytes(), digest_size=8).hexdigest()
        path = build / "embeddings" / shard["name"] / f"{part_ids.min():012d}-{part_ids.max():012d}-{digest}.npz"
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, ids=part_ids, vectors=vectors[mask].astype(np.float16))
        out.append({"shard": shard["name"], "rows": int(mask.sum())})
    return out


def covered_rows(shard: dict[str, Any], build: Path) -> np.ndarray:
    """Which rows of a shard finished embedding parts cover (bool per row): a killed build's parts are kept."""
    covered = np.zeros(shard["count"], dtype=bool)
    for part in (build / "embeddings" / shard["name"]).glob("*.npz"):
        with np.load(part, allow_pickle=False) as z:
            covered[z["ids"] - shard["id_start"]] = True
    return covered


def consolidate_vectors_unit(shard: dict[str, Any], build: Path, paths: dict[str, str]) -> dict[str, Any]:
    """Gather a shard's embedding parts into one fp16 ``vectors.npy`` in id order, checking none is missing."""
    dest = Path(paths[shard["name"]])
    parts = sorted((build / "embeddings" / shard["name"]).glob("*.npz"))
    ids_list, vec_list = [], []
    for p in parts:
        with np.load(p, allow_pickle=False) as z:
            ids_list.append(z["ids"])
            vec_list.append(z["vectors"])
    ids = np.concatenate(ids_list) if ids_list else np.zeros(0, np.int64)
    uniq, first = np.unique(ids, return_index=True)
    expected = np.arange(shard["id_start"], shard["id_start"] + shard["count"], dtype=np.int64)
    if len(uniq) != len(expected) or not np.array_equal(uniq, expected):
        raise RuntimeError(f"shard {shard['name']}: embeddings cover {len(uniq)} of {shard['count']} passages")
    vectors = np.concatenate(vec_list)[first]
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(vectors, dtype=np.float16), allow_pickle=False)
    return {"unit": shard["name"], "vectors": len(vectors)}


def train_unit(
    item: dict[str, Any], plan: dict[str, Any], shards: list[dict[str, Any]], paths: dict[str, str], dest: Path
) -> dict[str, Any]:
    """Train the shared empty index on a seeded uniform sample of all passages' vectors; write ``trained.faiss``."""
    index_plan = IndexPlan.from_dict(plan)
    sample = None
    if index_plan.type != "flat":
        total = sum(s["count"] for s in shards)
        ids = np.sort(np.random.default_rng(0).choice(total, size=index_plan.train_sample, replace=False))
        pieces = []
        for s in shards:
            rows = ids[(ids >= s["id_start"]) & (ids < s["id_start"] + s["count"])] - s["id_start"]
            if len(rows):
                pieces.append(np.asarray(np.load(paths[s["name"]], mmap_mode="r", allow_pickle=False)[rows], dtype=np.float32))
        sample = np.concatenate(pieces)
    write_index(train_index(index_plan, sample), dest)
    return {"unit": item["unit"], "train_sample": 0 if sample is None else len(sample)}


def add_shard_unit(
    shard: dict[str, Any], paths: dict[str, str], trained_path: Path, shards_dir: Path, plan: dict[str, Any]
) -> dict[str, Any]:
    """Add one shard's vectors to a copy of the trained index and write the shard's index and shard.json."""
    shard_dir = shards_dir / shard["name"]
    index = read_index(trained_path, mmap=False)
    vectors = np.load(paths[shard["name"]], mmap_mode="r", allow_pickle=False)
    ids = np.arange(shard["id_start"], shard["id_start"] + shard["count"], dtype=np.int64)
    add_vectors(index, vectors, ids)
    write_index(index, shard_dir / "index.faiss")
    files = {p.name: file_record(p) for p in sorted(shard_dir.iterdir()) if p.is_file() and p.name != "shard.json"}
    info = {
        "name": shard["name"],
        "domain": shard["domain"],
        "id_start": shard["id_start"],
        "count": shard["count"],
        "tokens": shard["tokens"],
        "index": IndexPlan.from_dict(plan).factory,
        "list_balance": list_balance(index),
        "files": files,
    }
    write_json(shard_dir / "shard.json", info)
    return {"unit": shard["name"], "vectors": int(index.ntotal)}
