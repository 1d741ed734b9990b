"""Near-duplicate removal (MinHash-LSH) as Ray-free work units, hash-partitioned like exact dedup.

Stages, in order (``P`` = partitions; every folder is under ``build/dedup/near/``)::

    near-map       per documents part   signatures -> bands/p<b>/<unit> (band key, _ord), b = hash(key)
                                          payloads   -> sigs/p<b>/<unit>  (_ord, payload), b = hash(_ord)
    near-bands     per partition        buckets -> star edges (bucket min, member)  -> edges/p<hash(u)>/
    near-attach    per partition        edges (u, v) joined with payload(u)         -> attached/p<hash(v)>/
    near-verify    per partition        joined with payload(v); keep if similarity >= threshold -> cc/s000/
    near-cc        per partition, step  large-star (even) / small-star (odd)         -> cc/s<k+1>/
                   until the large-star unit reports 0 unsettled nodes on its input
    near-clusters  per partition        (member, centre = min _ord of the component) -> clusters/p<b>
    near-resolve   per documents part   duplicates/<unit> (DUPLICATES + cluster) and
                                        build/dropped/near_dedup/<unit>

The payload is what ``verify`` needs: ``"jaccard"`` (default) the document's distinct shingle hashes,
for the exact Jaccard similarity of each candidate pair; ``"signature"`` the MinHash signature
(4 * num_perm bytes, an estimate with ±0.04 noise near 0.8); with ``"none"`` near-bands writes its
edges straight to ``cc/s000`` (LSH candidates are linked unchecked, as datatrove does).
The attach/verify join is a two-step shuffle: edges are routed to the partition that holds
``payload(u)``, then to the one that holds ``payload(v)``.
Every unit holds one partition (~1/P of the rows) or one documents part in memory, never the
corpus; the survivor of each cluster is its smallest ``_ord``, as in exact dedup.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.parquet as pq

from massiveds.clean.components import directed, large_star, small_star, star_members, unsettled
from massiveds.clean.exact_dedup import DUPLICATES
from massiveds.clean.minhash import MinHasher, bucket_edges, estimate_jaccard, partition_of
from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import atomic_path
from massiveds.core.manifest import NearDedup
from massiveds.core.schema import DROPPED
from pipelines.removals import ord_file, removed_ords, unit_ord_range
from pipelines.units import Runner, _documents, _PartWriter

NEAR = Path("dedup") / "near"
BANDS = pa.schema([("key", pa.uint64()), ("_ord", pa.int64())])
EDGES = pa.schema([("u", pa.int64()), ("v", pa.int64())])
ROWS = pa.schema([("node", pa.int64()), ("nbr", pa.int64())])
CLUSTERS = pa.schema([("_ord", pa.int64()), ("cluster", pa.int64())])
NEAR_DUPLICATES = DUPLICATES.append(pa.field("cluster", pa.int64()))
#: Safety stop for the component rounds (each round halves path lengths; 64 steps is far beyond need).
MAX_CC_STEPS = 64
MAX_NEAR_PARTITIONS = 256
#: Compressed documents per partition: its reducers hold ~this much shingle payload in memory.
NEAR_PARTITION_BYTES = 64 << 20


def near_partitions(build: Path, items: list[dict[str, Any]], partition_bytes: int = NEAR_PARTITION_BYTES) -> int:
    """Hash partitions for the documents parts ``items``: ~``partition_bytes`` of compressed documents each, <= 4 per part."""
    docs_bytes = sum((build / "documents" / f"{i['unit']}.parquet").stat().st_size for i in items)
    return max(1, min(MAX_NEAR_PARTITIONS, math.ceil(docs_bytes / partition_bytes), len(items) * 4))


def _payload_type(near: NearDedup) -> pa.DataType:
    return pa.binary(4 * near.num_perm) if near.verify == "signature" else pa.list_(pa.uint64())


def _sig_schema(near: NearDedup) -> pa.Schema:
    return pa.schema([("_ord", pa.int64()), ("payload", _payload_type(near))])


def _attached_schema(near: NearDedup) -> pa.Schema:
    return pa.schema([("u", pa.int64()), ("v", pa.int64()), ("payload_u", _payload_type(near))])


def _hasher(near: NearDedup) -> MinHasher:
    return MinHasher(ngram=near.ngram, num_perm=near.num_perm, bands=near.bands, seed=near.seed)


def _sig_column(sigs: np.ndarray) -> pa.Array:
    n, k = sigs.shape
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(4 * k), n, [None, pa.py_buffer(np.ascontiguousarray(sigs).tobytes())])


def _sig_matrix(column: pa.ChunkedArray | pa.Array, num_perm: int) -> np.ndarray:
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.zeros((0, num_perm), np.uint32)
    width = 4 * num_perm
    flat = np.frombuffer(arr.buffers()[1], dtype=np.uint32, count=len(arr) * num_perm, offset=arr.offset * width)
    return flat.reshape(len(arr), num_perm)


def _shingle_sets(hashes: np.ndarray, offsets: np.ndarray, keep: np.ndarray) -> pa.Array:
    """Each kept document's distinct shingle hashes (sorted), as a list<uint64> column."""
    sets = [np.unique(hashes[offsets[i] : offsets[i + 1]]) for i in np.flatnonzero(keep)]
    lengths = np.array([len(x) for x in sets], dtype=np.int32)
    values = np.concatenate(sets) if sets else np.zeros(0, np.uint64)
    return pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)), pa.array(values, pa.uint64()))


def exact_jaccard(a: pa.Array, b: pa.Array) -> np.ndarray:
    """Row-wise Jaccard similarity of two list<uint64> columns of distinct sorted hashes, vectorised."""
    a = a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a
    b = b.combine_chunks() if isinstance(b, pa.ChunkedArray) else b
    n = len(a)
    if n == 0:
        return np.zeros(0)
    len_a = pc.list_value_length(a).to_numpy(zero_copy_only=False).astype(np.int64)
    len_b = pc.list_value_length(b).to_numpy(zero_copy_only=False).astype(np.int64)
    row = np.concatenate([np.repeat(np.arange(n), len_a), np.repeat(np.arange(n), len_b)])
    values = np.concatenate([pc.list_flatten(a).to_numpy(), pc.list_flatten(b).to_numpy()])
    order = np.lexsort((values, row))
    row, values = row[order], values[order]
    repeated = (row[1:] == row[:-1]) & (values[1:] == values[:-1])  # a value in both sets of one row
    inter = np.bincount(row[1:][repeated], minlength=n)
    union = len_a + len_b - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def _part(build: Path, *names: str) -> Path:
    return build.joinpath(NEAR, *names)


def _read_folder(folder: Path, schema: pa.Schema) -> pa.Table:
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    return pa.concat_tables([pq.read_table(f, schema=schema) for f in files]) if files else schema.empty_table()


class _Scatter:
    """Rows routed to hash partitions, one lazily opened Parquet writer per destination partition."""

    def __init__(self, build: Path, stage: str, name: str, schema: pa.Schema) -> None:
        self.build, self.stage, self.name, self.schema = build, stage, name, schema
        self.writers: dict[int, _PartWriter] = {}

    def write(self, table: pa.Table, dest: np.ndarray) -> None:
        for p in np.unique(dest):
            if int(p) not in self.writers:
                path = _part(self.build, self.stage, f"p{int(p):04d}", f"{self.name}.parquet")
                self.writers[int(p)] = _PartWriter(path, self.schema)
            self.writers[int(p)].write(table.filter(pa.array(dest == p)))

    @property
    def rows(self) -> int:
        return sum(w.rows for w in self.writers.values())

    def commit(self) -> None:
        for w in self.writers.values():
            w.commit()


def _write_rows(build: Path, step: int, name: str, a: np.ndarray, b: np.ndarray, partitions: int) -> int:
    """Write undirected edges ``{a, b}`` as directed rows into the partitions of ``cc/s<step>``."""
    node, nbr = directed(a, b)
    out = _Scatter(build, f"cc/s{step:03d}", name, ROWS)
    out.write(pa.table([pa.array(node, pa.int64()), pa.array(nbr, pa.int64())], schema=ROWS), partition_of(node, partitions))
    out.commit()
    return out.rows


# -- units ------------------------------------------------------------------------------------


def near_map_unit(item: dict[str, Any], build: Path, near: NearDedup, partitions: int, skip: list[str]) -> dict[str, Any]:
    """Sign one documents part: band keys to ``bands/p<hash(key)>``, signatures to ``sigs/p<hash(_ord)>``.

    ``skip`` names earlier removals (``["exact"]``) whose documents are left out.
    """
    unit = item["unit"]
    hasher = _hasher(near)
    drop = removed_ords(build, item["source_idx"], item["file_idx"], skip) if skip else pa.array([], pa.int64())
    bands = _Scatter(build, "bands", unit, BANDS)
    sigs_out = _Scatter(build, "sigs", unit, _sig_schema(near)) if near.verify != "none" else None
    docs = signed = 0
    for table in _documents(build / "documents" / f"{unit}.parquet", ["text", "_ord"]):
        if len(drop):
            table = table.filter(pc.invert(pc.is_in(table.column("_ord"), value_set=drop)))
        docs += table.num_rows
        hashes, offsets = hasher.shingles(table.column("text").to_pylist())
        has_words = np.diff(offsets) > 0
        sigs = hasher.signatures_from_shingles(hashes, offsets)[has_words]
        ords = table.column("_ord").to_numpy()[has_words]
        signed += len(ords)
        keys = hasher.band_keys(sigs)
        flat_keys = keys.reshape(-1)
        flat_ords = np.repeat(ords, near.bands)
        bands.write(pa.table([pa.array(flat_keys, pa.uint64()), pa.array(flat_ords, pa.int64())], schema=BANDS),
                    partition_of(flat_keys, partitions))
        if sigs_out is not None:
            payload = _sig_column(sigs) if near.verify == "signature" else _shingle_sets(hashes, offsets, has_words)
            sigs_out.write(pa.table([pa.array(ords, pa.int64()), payload], schema=sigs_out.schema), partition_of(ords, partitions))
    bands.commit()
    if sigs_out is not None:
        sigs_out.commit()
    return {"unit": unit, "documents": docs, "signed": signed}


def near_bands_unit(item: dict[str, Any], build: Path, partitions: int, verify: str) -> dict[str, Any]:
    """Candidate pairs of one band-key partition: a star per LSH bucket, routed to the next step."""
    p = item["partition"]
    rows = _read_folder(_part(build, "bands", f"p{p:04d}"), BANDS)
    u, v = bucket_edges(rows.column("key").to_numpy(), rows.column("_ord").to_numpy())
    name = f"from-p{p:04d}"
    if verify != "none":
        out = _Scatter(build, "edges", name, EDGES)
        out.write(pa.table([pa.array(u, pa.int64()), pa.array(v, pa.int64())], schema=EDGES), partition_of(u, partitions))
        out.commit()
    else:
        _write_rows(build, 0, name, u, v, partitions)
    return {"unit": f"p{p:04d}", "band_rows": rows.num_rows, "candidates": len(u)}


def _lookup(sig_table: pa.Table, ords: np.ndarray) -> np.ndarray:
    """Row indices of ``ords`` in one partition's payload table (every ord must be there)."""
    have = sig_table.column("_ord").to_numpy()
    order = np.argsort(have, kind="stable")
    pos = np.minimum(np.searchsorted(have[order], ords), max(len(have) - 1, 0))
    if len(ords) and (len(have) == 0 or not np.array_equal(have[order][pos], ords)):
        raise MassiveDSError("near dedup: an edge names a document without a signature; rerun the near-map stage")
    return order[pos] if len(ords) else np.zeros(0, np.int64)


def near_attach_unit(item: dict[str, Any], build: Path, near: NearDedup, partitions: int) -> dict[str, Any]:
    """Join the candidate edges ``(u, v)`` of one partition (by ``hash(u)``) with ``payload(u)``; route by ``hash(v)``."""
    p = item["partition"]
    sig_table = _read_folder(_part(build, "sigs", f"p{p:04d}"), _sig_schema(near))
    edges = _read_folder(_part(build, "edges", f"p{p:04d}"), EDGES)
    u, v = edges.column("u").to_numpy(), edges.column("v").to_numpy()
    payload_u = sig_table.column("payload").take(pa.array(_lookup(sig_table, u), pa.int64()))
    schema = _attached_schema(near)
    out = _Scatter(build, "attached", f"from-p{p:04d}", schema)
    out.write(pa.table([pa.array(u, pa.int64()), pa.array(v, pa.int64()), payload_u], schema=schema), partition_of(v, partitions))
    out.commit()
    return {"unit": f"p{p:04d}", "edges": len(u)}


def near_verify_unit(item: dict[str, Any], build: Path, near: NearDedup, partitions: int) -> dict[str, Any]:
    """Keep the candidate edges of one partition (by ``hash(v)``) whose similarity is >= ``threshold``."""
    p = item["partition"]
    sig_table = _read_folder(_part(build, "sigs", f"p{p:04d}"), _sig_schema(near))
    attached = _read_folder(_part(build, "attached", f"p{p:04d}"), _attached_schema(near))
    u, v = attached.column("u").to_numpy(), attached.column("v").to_numpy()
    payload_v = sig_table.column("payload").take(pa.array(_lookup(sig_table, v), pa.int64()))
    if near.verify == "signature":
        sim = estimate_jaccard(_sig_matrix(attached.column("payload_u"), near.num_perm), _sig_matrix(payload_v, near.num_perm))
    else:
        sim = exact_jaccard(attached.column("payload_u"), payload_v)
    keep = sim >= near.threshold
    _write_rows(build, 0, f"from-p{p:04d}", u[keep], v[keep], partitions)
    return {"unit": f"p{p:04d}", "candidates": len(u), "verified": int(keep.sum())}


def near_cc_unit(item: dict[str, Any], build: Path, partitions: int) -> dict[str, Any]:
    """One connected-components step on one partition: large-star (even step) or small-star (odd step).

    A large-star unit also reports how many of its nodes are ``unsettled`` on input; when the sum
    over partitions is 0, the input of that step is final (stars centred on each component's minimum).
    """
    p, step = item["partition"], item["step"]
    rows = _read_folder(_part(build, "cc", f"s{step:03d}", f"p{p:04d}"), ROWS)
    node, nbr = rows.column("node").to_numpy(), rows.column("nbr").to_numpy()
    result: dict[str, Any] = {"unit": item["unit"], "rows": len(node)}
    if step % 2 == 0:
        result["unsettled"] = unsettled(node, nbr)
        a, b = large_star(node, nbr)
    else:
        a, b = small_star(node, nbr)
    _write_rows(build, step + 1, f"from-p{p:04d}", a, b, partitions)
    return result


def near_clusters_unit(item: dict[str, Any], build: Path, step: int) -> dict[str, Any]:
    """From the settled graph of one partition: (member ``_ord``, cluster = survivor ``_ord``), sorted by ``_ord``."""
    p = item["partition"]
    rows = _read_folder(_part(build, "cc", f"s{step:03d}", f"p{p:04d}"), ROWS)
    member, centre = star_members(rows.column("node").to_numpy(), rows.column("nbr").to_numpy())
    with atomic_path(_part(build, "clusters", f"p{p:04d}.parquet")) as tmp:
        table = pa.table([pa.array(member, pa.int64()), pa.array(centre, pa.int64())], schema=CLUSTERS)
        pq.write_table(table, str(tmp), row_group_size=65536)
    return {"unit": f"p{p:04d}", "removed": len(member)}


def _doc_ids(build: Path, unit: str, ords: pa.Array) -> dict[int, tuple[str, str]]:
    path = build / "documents" / f"{unit}.parquet"
    table = pq.read_table(path, columns=["_ord", "doc_id", "source"], filters=[("_ord", "in", ords.to_pylist())])
    return {o: (d, s) for o, d, s in zip(*(table.column(c).to_pylist() for c in ("_ord", "doc_id", "source")), strict=True)}


def near_resolve_unit(item: dict[str, Any], build: Path, units: dict[str, str]) -> dict[str, Any]:
    """Write one documents part's near duplicates (by ``_ord``, with survivor doc id and cluster) and drop records.

    ``units`` maps ``"<source_idx>/<file_idx>"`` to the unit name, to find each survivor's doc id.
    """
    unit = item["unit"]
    lo, hi = unit_ord_range(item["source_idx"], item["file_idx"])
    folder = _part(build, "clusters")
    if folder.is_dir() and any(folder.glob("*.parquet")):
        in_range = (pds.field("_ord") >= lo) & (pds.field("_ord") < hi)
        found = pds.dataset(str(folder), format="parquet", schema=CLUSTERS).to_table(filter=in_range)
        found = found.sort_by("_ord")
    else:
        found = CLUSTERS.empty_table()
    ords, clusters = found.column("_ord").combine_chunks(), found.column("cluster").to_pylist()
    own = _doc_ids(build, unit, ords) if len(ords) else {}
    survivors: dict[int, tuple[str, str]] = {}
    by_unit: dict[str, list[int]] = {}
    for c, (s_idx, f_idx) in zip(sorted(set(clusters)), ord_file(sorted(set(clusters))), strict=True):
        by_unit.setdefault(units[f"{s_idx}/{f_idx}"], []).append(c)
    for other, cs in by_unit.items():
        survivors |= _doc_ids(build, other, pa.array(cs, pa.int64()))
    ord_list = ords.to_pylist()
    dups = pa.table(
        [
            pa.array(ord_list, pa.int64()),
            pa.array([own[o][0] for o in ord_list], pa.string()),
            pa.array([own[o][1] for o in ord_list], pa.string()),
            pa.array([survivors[c][0] for c in clusters], pa.string()),
            pa.array(clusters, pa.int64()),
        ],
        schema=NEAR_DUPLICATES,
    )
    with atomic_path(build / NEAR / "duplicates" / f"{unit}.parquet") as tmp:
        pq.write_table(dups, str(tmp), row_group_size=65536)
    dropped = pa.table(
        [
            dups.column("doc_id"),
            dups.column("source"),
            pa.array(["near_dedup"] * dups.num_rows, pa.string()),
            pa.array(["near_duplicate"] * dups.num_rows, pa.string()),
            dups.column("duplicate_of"),
            pa.array([json.dumps({"cluster": c}) for c in clusters], pa.string()),
        ],
        schema=DROPPED,
    )
    with atomic_path(build / "dropped" / "near_dedup" / f"{unit}.parquet") as tmp:
        pq.write_table(dropped, str(tmp))
    return {"unit": unit, "duplicates": dups.num_rows}


# -- driver -----------------------------------------------------------------------------------


def run_serial(name: str, fn: Callable[..., dict[str, Any]], items: list[dict[str, Any]], kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """A ``Runner`` that calls the units one after the other in this process (tests, benchmarks)."""
    return [fn(i, **kwargs) for i in items]


def _partition_items(partitions: int, prefix: str = "") -> list[dict[str, Any]]:
    return [{"unit": f"{prefix}p{p:04d}", "partition": p} for p in range(partitions)]


def run_near_dedup(run: Runner, items: list[dict[str, Any]], build: Path, near: NearDedup, partitions: int,
                   skip: list[str] | None = None, keep_intermediate: bool = False) -> dict[str, Any]:
    """Run every near-dedup unit in order with ``run(stage, fn, items, kwargs)``; returns the stage summary.

    ``items`` are the documents parts (``unit``, ``source_idx``, ``file_idx``), as for ``chunk_unit``.
    """
    skip = list(skip or [])
    docs = [{"unit": i["unit"], "source_idx": i["source_idx"], "file_idx": i["file_idx"]} for i in items]
    mapped = run("near-map", near_map_unit, docs, {"build": build, "near": near, "partitions": partitions, "skip": skip})
    parts = _partition_items(partitions)
    bands = run("near-bands", near_bands_unit, parts, {"build": build, "partitions": partitions, "verify": near.verify})
    candidates = sum(r["candidates"] for r in bands)
    verified = candidates
    if near.verify != "none":
        run("near-attach", near_attach_unit, parts, {"build": build, "near": near, "partitions": partitions})
        checked = run("near-verify", near_verify_unit, parts, {"build": build, "near": near, "partitions": partitions})
        verified = sum(r["verified"] for r in checked)
    step = 0
    while True:
        if step >= MAX_CC_STEPS:
            raise MassiveDSError(f"near dedup: connected components did not settle in {MAX_CC_STEPS} steps")
        steps = [{"unit": f"s{step:03d}-p{p:04d}", "partition": p, "step": step} for p in range(partitions)]
        results = run("near-cc", near_cc_unit, steps, {"build": build, "partitions": partitions})
        if step % 2 == 0 and sum(r["unsettled"] for r in results) == 0:
            break
        step += 1
    removed = sum(r["removed"] for r in run("near-clusters", near_clusters_unit, parts, {"build": build, "step": step}))
    unit_names = {f"{i['source_idx']}/{i['file_idx']}": i["unit"] for i in items}
    resolved = run("near-resolve", near_resolve_unit, docs, {"build": build, "units": unit_names})
    if not keep_intermediate:
        for folder in ("bands", "sigs", "edges", "attached", "cc"):
            shutil.rmtree(_part(build, folder), ignore_errors=True)
    duplicates = sum(r["duplicates"] for r in resolved)
    if duplicates != removed:
        raise MassiveDSError(f"near dedup: {removed} cluster members but {duplicates} duplicates resolved; rerun the stage")
    signed = sum(r["signed"] for r in mapped)
    return {
        "documents": sum(r["documents"] for r in mapped),
        "signed": signed,
        "candidates": candidates,
        "verified": verified,
        "cc_steps": step + 1,
        "duplicates": duplicates,
        "partitions": partitions,
        "summary": f"{duplicates:,} near duplicates of {signed:,} documents ({candidates:,} LSH candidates, {verified:,} verified, "
                   f"{step + 1} component steps, {partitions} partitions)",
    }

