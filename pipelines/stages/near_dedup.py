"""near_dedup: near-duplicate removal (MinHash-LSH), hash-partitioned like exact dedup, in steps sharing one config.

Steps, in order (``P`` = partitions, one per ``NEAR_PARTITION_BYTES`` of compressed documents; every folder
is under ``build/dedup/near/``; each unit writes one scatter file per output, ``-> folder/file: to partition``)::

    near-map       per documents part   signatures -> bands/<unit>: (band key, _ord) to hash(key)
                                          payloads   -> sigs/<unit>:  (_ord, payload) to hash(_ord)
                                          signatures -> signed/<unit>.parquet, for the dedup index
    near-map-reference  per part of an append's reference (its dedup index): the stored signatures' band keys
                        that a new document shares (``new-keys.npy``, from near-map), and their payloads, as near-map
    near-bands     per partition        buckets -> star edges (bucket min u, member v; none between two of an
                                        append's reference documents) -> edges/from-p<p>: to hash(u)
    near-attach    per partition        edges (u, v) joined with payload(u)         -> attached/from-p<p>: to hash(v)
    near-verify    per partition        joined with payload(v); keep if similarity >= threshold
                                                                                    -> cc/s000/from-p<p>: to hash(node)
    near-cc        per partition, step  large-star (even) / small-star (odd)         -> cc/s<k+1>/from-p<p>: to hash(node)
                   until the large-star unit reports 0 unsettled nodes on its input
    near-clusters  per partition        (member, centre = min _ord of the component) -> clusters/from-p<p>:
                                        to the documents part that holds the member
    near-resolve   per documents part   duplicates/<unit> (DUPLICATES + cluster) and
                                        build/dropped/near_dedup/<unit>

A scatter file (``pipelines.scatter``) holds a unit's rows grouped by destination partition, with an index at
its end: the unit for partition ``p`` of the next step reads only ``p``'s rows of each input file. So near-map
writes 2 files per documents part and every later step ``P`` files, whatever ``P`` (not one per pair).

The payload is what ``verify`` needs: ``"jaccard"`` (default) the document's distinct shingle hashes,
for the exact Jaccard similarity of each candidate pair; ``"signature"`` the MinHash signature
(4 * num_perm bytes, an estimate with ±0.04 noise near 0.8); with ``"none"`` near-bands writes its
edges straight to ``cc/s000`` (LSH candidates are linked unchecked, as datatrove does).
The attach/verify join is a two-step shuffle: edges are routed to the partition that holds
``payload(u)``, then to the one that holds ``payload(v)``.
Every unit holds one partition (~1/P of the rows: ~``NEAR_PARTITION_BYTES`` of documents however large
the corpus, since ``P`` grows with it) or one documents part, plus blocks and write buffers of bounded
size, never the corpus; the survivor of each cluster is its smallest ``_ord``, as in exact dedup.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from massiveds.clean.components import directed, large_star, small_star, star_members, unsettled
from massiveds.clean.dedup_index import SIGNATURES
from massiveds.clean.exact_dedup import DUPLICATES
from massiveds.clean.minhash import (
    MinHasher,
    bucket_edges,
    estimate_jaccard,
    exact_jaccard,
    partition_of,
    shingle_sets,
    signature_column,
    signature_lists,
    signature_matrix,
)
from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import write_array
from massiveds.core.manifest import NearDedup
from massiveds.core.scatter import SCATTER, Scatter, read_partition, scatter_file
from massiveds.core.schema import DROPPED, ROW_BITS
from pipelines.parts import PartWriter, documents_path, indexed, signatures_path, surviving_documents, unit_ord_range, write_table
from pipelines.stage import BuildContext, InputItem, Stage, StageRecord, Step, StepRunner, UnitResult
from pipelines.stages.dedup import PartitionItem, partition_items

NEAR = Path("dedup") / "near"
BANDS = pa.schema([("key", pa.uint64()), ("_ord", pa.int64())])
EDGES = pa.schema([("u", pa.int64()), ("v", pa.int64())])
#: The graph of the connected-components steps, as directed rows (each undirected edge twice).
ARCS = pa.schema([("node", pa.int64()), ("nbr", pa.int64())])
CLUSTERS = pa.schema([("_ord", pa.int64()), ("cluster", pa.int64())])
NEAR_DUPLICATES = DUPLICATES.append(pa.field("cluster", pa.int64()))
#: Safety stop for the component rounds (each round halves path lengths; 64 steps is far beyond need).
MAX_CC_STEPS = 64
#: Compressed documents per partition: a reducer's peak RSS is ~0.35 GiB + 3.4x this (BENCHMARKS.md), ~1.2 GiB at 256 MiB.
NEAR_PARTITION_BYTES = 256 << 20
#: Payload bytes per block of candidate edges in attach and verify (verify's temporaries are ~6x this).
BLOCK_BYTES = 16 << 20
#: Most distinct band keys of an append's new documents its reference parts filter by (8 bytes each, in every such unit).
MAX_FILTER_KEYS = 1 << 24


def near_partitions(build: Path, items: list[InputItem], partition_bytes: int = NEAR_PARTITION_BYTES) -> int:
    """Hash partitions for the documents parts ``items``: one per ``partition_bytes`` of compressed documents, at least 1."""
    docs_bytes = sum(documents_path(build, i.unit).stat().st_size for i in items)
    return max(1, math.ceil(docs_bytes / partition_bytes))


def part_key(item: InputItem) -> int:
    """``_ord >> ROW_BITS`` of every document of a documents part: its source and file."""
    return unit_ord_range(item.file.source_idx, item.file.file_idx)[0] >> ROW_BITS


@dataclass(frozen=True)
class NearConfig:
    """What every near-dedup step shares: the build folder, the MinHash parameters, the partition count."""

    build: Path
    near: NearDedup
    partitions: int
    #: documents with a smaller ``_ord`` are never removed, whatever their cluster (``BuildContext.protected_below``)
    keep_below: int = 0
    #: the documents below ``keep_below`` carry their stored MinHash signature as payload, not their shingle set (an append
    #: reading the datastore's dedup index with ``verify: jaccard``): a pair with one of them is compared by the signatures
    reference_signatures: bool = False

    def hasher(self) -> MinHasher:
        """The MinHash of every step: the manifest's parameters."""
        return MinHasher(ngram=self.near.ngram, num_perm=self.near.num_perm, bands=self.near.bands, seed=self.near.seed)

    def path(self, *names: str) -> Path:
        """A path in the near-dedup folder of the build."""
        return self.build.joinpath(NEAR, *names)

    @property
    def payload_type(self) -> pa.DataType:
        return pa.binary(4 * self.near.num_perm) if self.near.verify == "signature" else pa.list_(pa.uint64())

    @property
    def sig_schema(self) -> pa.Schema:
        return pa.schema([("_ord", pa.int64()), ("payload", self.payload_type)])

    @property
    def attached_schema(self) -> pa.Schema:
        return pa.schema([("u", pa.int64()), ("v", pa.int64()), ("payload_u", self.payload_type)])

    def payload_bytes(self, payload: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """Bytes of each row of a payload column."""
        if self.near.verify == "signature":
            return np.full(len(payload), 4 * self.near.num_perm, np.int64)
        return 8 * pc.list_value_length(payload).to_numpy(zero_copy_only=False).astype(np.int64)

    @contextlib.contextmanager
    def scatter(self, folder: str, name: str, schema: pa.Schema, partitions: int | None = None) -> Iterator[Scatter]:
        """A ``Scatter`` into ``<folder>/<name>.scatter``, in place when the block ends without error (else none)."""
        with scatter_file(self.path(folder, name + SCATTER), schema, partitions or self.partitions) as out:
            yield out

    def read(self, folder: str, partition: int, schema: pa.Schema, partitions: int | None = None) -> Iterator[pa.RecordBatch]:
        """The rows of ``partition`` in every scatter file of ``folder``, batch by batch, file by file."""
        yield from read_partition(self.path(folder), partition, schema, partitions or self.partitions)

    def table(self, folder: str, partition: int, schema: pa.Schema, partitions: int | None = None) -> pa.Table:
        """The rows of ``partition`` in every scatter file of ``folder``, as one table."""
        return pa.Table.from_batches(list(self.read(folder, partition, schema, partitions)), schema)

    def add_arcs(self, out: Scatter, a: np.ndarray, b: np.ndarray) -> None:
        """Add undirected edges ``{a, b}`` to ``out`` as directed rows, each to the partition of its node."""
        node, nbr = directed(a, b)
        out.write(pa.table([pa.array(node, pa.int64()), pa.array(nbr, pa.int64())], schema=ARCS), partition_of(node, self.partitions))

    def write_arcs(self, step: int, name: str, a: np.ndarray, b: np.ndarray) -> int:
        """Write undirected edges ``{a, b}`` into ``cc/s<step>/<name>``; returns the rows written."""
        with self.scatter(f"cc/s{step:03d}", name, ARCS) as out:
            self.add_arcs(out, a, b)
        return out.rows


def _blocks(weights: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Consecutive row ranges ``[start, stop)`` whose ``weights`` add up to about ``limit`` (at least one row each)."""
    ends = np.cumsum(weights)
    cuts = np.searchsorted(ends, np.arange(limit, ends[-1] if len(ends) else 0, limit), side="right")
    bounds = np.unique(np.concatenate([[0], cuts, [len(weights)]]))
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))


class SignResult(UnitResult):
    documents: int
    signed: int
    #: (band key, _ord) rows written
    band_rows: int = 0


class BandsResult(UnitResult):
    band_rows: int
    candidates: int


class EdgesResult(UnitResult):
    edges: int


class VerifyResult(UnitResult):
    candidates: int
    verified: int


class StepItem(PartitionItem):
    """One partition in one connected-components step."""

    step: int


class ComponentsResult(UnitResult):
    rows: int
    #: large-star steps (even): nodes not yet settled on input; 0 over every partition ends the rounds
    unsettled: int | None = None


class ClustersResult(UnitResult):
    removed: int


class ResolveResult(UnitResult):
    duplicates: int


@dataclass(frozen=True)
class Sign:
    """near-map: one documents part signed; band keys to ``bands/<unit>``, payloads to ``sigs/<unit>``.

    ``removed`` names earlier clean-up stages (``["exact"]``) whose documents are left out. Each signature is kept in
    ``signed/<unit>`` for the dedup index; a part of an append's reference read off that index is not signed again: its
    stored signatures give its band keys, and stand in for its payload (``NearConfig.reference_signatures``). With
    ``only_keys`` (the sorted band keys of the new documents) such a part writes only the band keys a new document
    shares, and the payloads of the documents that hold one: a bucket without a new document links only reference
    documents, which decides nothing, so near-bands would drop every edge it gives.
    """

    config: NearConfig
    removed: tuple[str, ...]
    only_keys: Path | None = None

    def __call__(self, item: InputItem) -> SignResult:
        c, near = self.config, self.config.near
        hasher = c.hasher()
        from_index = indexed(item)
        wanted = np.load(self.only_keys, allow_pickle=False) if from_index and self.only_keys is not None else None
        docs = signed = band_rows = 0
        with contextlib.ExitStack() as outputs:
            bands = outputs.enter_context(c.scatter("bands", item.unit, BANDS))
            sigs_out = outputs.enter_context(c.scatter("sigs", item.unit, c.sig_schema)) if near.verify != "none" else None
            kept = None if from_index else PartWriter(signatures_path(c.build, item.unit), SIGNATURES)
            for table in surviving_documents(c.build, item, self.removed, ["signature" if from_index else "text", "_ord"]):
                docs += table.num_rows
                if from_index:
                    table = table.filter(pc.is_valid(table.column("signature")))
                    sigs = signature_matrix(table.column("signature").cast(pa.binary(4 * near.num_perm)), near.num_perm)
                    ords = table.column("_ord").to_numpy()
                    payload = signature_column(sigs) if near.verify == "signature" else signature_lists(sigs)
                else:
                    hashes, offsets = hasher.shingles(table.column("text").to_pylist())
                    has_words = np.diff(offsets) > 0
                    sigs = hasher.signatures_from_shingles(hashes, offsets)[has_words]
                    ords = table.column("_ord").to_numpy()[has_words]
                    payload = signature_column(sigs) if near.verify == "signature" else shingle_sets(hashes, offsets, has_words)
                    assert kept is not None
                    kept.write(pa.table([pa.array(ords, pa.int64()), signature_column(sigs).cast(pa.binary())], schema=SIGNATURES))
                signed += len(ords)
                keys = hasher.band_keys(sigs)
                shared = np.ones(keys.shape, dtype=bool) if wanted is None else sorted_member(keys, wanted)
                flat_keys, flat_ords = keys[shared], np.repeat(ords, near.bands)[shared.ravel()]
                band_rows += len(flat_keys)
                bands.write(pa.table([pa.array(flat_keys, pa.uint64()), pa.array(flat_ords, pa.int64())], schema=BANDS),
                            partition_of(flat_keys, c.partitions))
                if sigs_out is not None:
                    if wanted is not None:  # only the payloads a candidate pair can ask for
                        linked = shared.any(axis=1)
                        ords, payload = ords[linked], payload.filter(pa.array(linked))
                    sigs_out.write(pa.table([pa.array(ords, pa.int64()), payload], schema=c.sig_schema), partition_of(ords, c.partitions))
            if kept is not None:
                kept.commit()
        return SignResult(unit=item.unit, documents=docs, signed=signed, band_rows=band_rows)


@dataclass(frozen=True)
class Bands:
    """near-bands: the candidate pairs of one band-key partition, a star per LSH bucket, routed to the next step."""

    config: NearConfig

    def __call__(self, item: PartitionItem) -> BandsResult:
        c, p = self.config, item.partition
        rows = c.table("bands", p, BANDS)
        u, v = bucket_edges(rows.column("key").to_numpy(), rows.column("_ord").to_numpy())
        # a pair of reference documents decides nothing (u < v): neither is removed, and a new document linked to either is
        # removed whether or not they are linked to each other
        new = v >= c.keep_below
        u, v = u[new], v[new]
        name = f"from-p{p:04d}"
        if c.near.verify != "none":
            with c.scatter("edges", name, EDGES) as out:
                out.write(pa.table([pa.array(u, pa.int64()), pa.array(v, pa.int64())], schema=EDGES), partition_of(u, c.partitions))
        else:
            c.write_arcs(0, name, u, v)
        return BandsResult(unit=item.unit, band_rows=rows.num_rows, candidates=len(u))


class Payloads:
    """One partition's payloads, looked up by ``_ord``, kept in the batches they were read in."""

    def __init__(self, config: NearConfig, partition: int) -> None:
        table = config.table("sigs", partition, config.sig_schema)
        self._chunks, self._type = table.column("payload").chunks, config.payload_type
        self._starts = np.cumsum([0, *(len(chunk) for chunk in self._chunks)])
        self.bytes = config.payload_bytes(table.column("payload"))
        have = table.column("_ord").to_numpy()
        self._order = np.argsort(have, kind="stable")
        self._sorted = have[self._order]

    def take(self, rows: np.ndarray) -> pa.Array:
        """The payloads of rows ``rows``, taken batch by batch (Arrow's take on a chunked array first copies it whole)."""
        chunk = np.searchsorted(self._starts, rows, side="right") - 1
        order = np.argsort(chunk, kind="stable")
        by_chunk = [self._chunks[k].take(pa.array(rows[order][chunk[order] == k] - self._starts[k])) for k in np.unique(chunk).tolist()]
        gathered = pa.concat_arrays(by_chunk) if by_chunk else pa.array([], self._type)
        return gathered.take(pa.array(np.argsort(order)))

    def rows(self, ords: np.ndarray) -> np.ndarray:
        """Row indices of ``ords`` (every ord must be there)."""
        if not len(ords):
            return np.zeros(0, np.int64)
        pos = np.minimum(np.searchsorted(self._sorted, ords), max(len(self._sorted) - 1, 0))
        if len(self._sorted) == 0 or not np.array_equal(self._sorted[pos], ords):
            raise MassiveDSError("near dedup: an edge names a document without a signature; rerun the near-map stage")
        return self._order[pos]


@dataclass(frozen=True)
class Attach:
    """near-attach: the candidate edges ``(u, v)`` of one partition (by ``hash(u)``) joined with ``payload(u)``, routed by ``hash(v)``."""

    config: NearConfig

    def __call__(self, item: PartitionItem) -> EdgesResult:
        c, p = self.config, item.partition
        payloads = Payloads(c, p)
        edges = c.table("edges", p, EDGES)
        u, v = edges.column("u").to_numpy(), edges.column("v").to_numpy()
        rows_u = payloads.rows(u)
        with c.scatter("attached", f"from-p{p:04d}", c.attached_schema) as out:
            for a, b in _blocks(payloads.bytes[rows_u], BLOCK_BYTES):
                payload_u = payloads.take(rows_u[a:b])
                out.write(pa.table([pa.array(u[a:b], pa.int64()), pa.array(v[a:b], pa.int64()), payload_u], schema=c.attached_schema),
                          partition_of(v[a:b], c.partitions))
        return EdgesResult(unit=item.unit, edges=len(u))


@dataclass(frozen=True)
class Verify:
    """near-verify: the candidate edges of one partition (by ``hash(v)``) whose similarity is >= ``threshold``."""

    config: NearConfig

    def similarity(self, u: np.ndarray, payload_u: pa.Array, payload_v: pa.Array) -> np.ndarray:
        """Row-wise similarity of two payload columns; ``u``: the ``_ord`` of each row's first document."""
        c, near = self.config, self.config.near
        if near.verify == "signature":
            return estimate_jaccard(signature_matrix(payload_u, near.num_perm), signature_matrix(payload_v, near.num_perm))
        stored = u < c.keep_below if c.reference_signatures else np.zeros(len(u), dtype=bool)
        sim = np.zeros(len(u))
        if not stored.all():
            mask = pa.array(~stored)
            sim[~stored] = exact_jaccard(payload_u.filter(mask), payload_v.filter(mask))
        if stored.any():  # a reference's stored signature against the signature of the new document's shingle set
            mask = pa.array(stored)
            sig_u = pc.list_flatten(payload_u.filter(mask)).to_numpy().astype(np.uint32).reshape(-1, near.num_perm)
            shingles = payload_v.filter(mask)
            offsets = np.concatenate([[0], np.cumsum(pc.list_value_length(shingles).to_numpy(zero_copy_only=False))])
            sim[stored] = estimate_jaccard(sig_u, c.hasher().signatures_from_shingles(pc.list_flatten(shingles).to_numpy(), offsets))
        return sim

    def __call__(self, item: PartitionItem) -> VerifyResult:
        c, p = self.config, item.partition
        payloads = Payloads(c, p)
        candidates = verified = 0
        with c.scatter("cc/s000", f"from-p{p:04d}", ARCS) as out:
            for batch in c.read("attached", p, c.attached_schema):
                u, v, payload_u = batch.column("u").to_numpy(), batch.column("v").to_numpy(), batch.column("payload_u")
                rows_v = payloads.rows(v)
                for a, b in _blocks(c.payload_bytes(payload_u) + payloads.bytes[rows_v], BLOCK_BYTES):
                    payload_v = payloads.take(rows_v[a:b])
                    keep = self.similarity(u[a:b], payload_u.slice(a, b - a), payload_v) >= c.near.threshold
                    c.add_arcs(out, u[a:b][keep], v[a:b][keep])
                    verified += int(keep.sum())
                candidates += len(u)
        return VerifyResult(unit=item.unit, candidates=candidates, verified=verified)


@dataclass(frozen=True)
class Components:
    """near-cc: one connected-components step on one partition, large-star (even step) or small-star (odd step).

    A large-star unit also reports how many of its nodes are ``unsettled`` on input; when the sum over
    partitions is 0, the input of that step is final (stars centred on each component's minimum).
    """

    config: NearConfig

    def __call__(self, item: StepItem) -> ComponentsResult:
        c, p, step = self.config, item.partition, item.step
        rows = c.table(f"cc/s{step:03d}", p, ARCS)
        node, nbr = rows.column("node").to_numpy(), rows.column("nbr").to_numpy()
        open_nodes = None
        if step % 2 == 0:
            open_nodes = unsettled(node, nbr)
            a, b = large_star(node, nbr)
        else:
            a, b = small_star(node, nbr)
        c.write_arcs(step + 1, f"from-p{p:04d}", a, b)
        return ComponentsResult(unit=item.unit, rows=len(node), unsettled=open_nodes)


@dataclass(frozen=True)
class Clusters:
    """near-clusters: from the settled graph of one partition, (member ``_ord``, cluster = survivor ``_ord``).

    Rows go to the documents part that holds the member: ``parts`` are the parts' ``part_key``s, sorted.
    """

    config: NearConfig
    step: int
    parts: tuple[int, ...]

    def __call__(self, item: PartitionItem) -> ClustersResult:
        c, p = self.config, item.partition
        rows = c.table(f"cc/s{self.step:03d}", p, ARCS)
        member, centre = star_members(rows.column("node").to_numpy(), rows.column("nbr").to_numpy())
        kept = member >= c.keep_below
        member, centre = member[kept], centre[kept]
        with c.scatter("clusters", f"from-p{p:04d}", CLUSTERS, len(self.parts)) as out:
            out.write(pa.table([pa.array(member, pa.int64()), pa.array(centre, pa.int64())], schema=CLUSTERS),
                      np.searchsorted(np.array(self.parts, np.int64), member >> ROW_BITS))
        return ClustersResult(unit=item.unit, removed=len(member))


def _doc_ids(build: Path, unit: str, ords: pa.Array) -> dict[int, tuple[str, str]]:
    table = pq.read_table(documents_path(build, unit), columns=["_ord", "doc_id", "source"], filters=[("_ord", "in", ords.to_pylist())])
    return {o: (d, s) for o, d, s in zip(*(table.column(c).to_pylist() for c in ("_ord", "doc_id", "source")), strict=True)}


@dataclass(frozen=True)
class Resolve:
    """near-resolve: one documents part's near duplicates (by ``_ord``, with survivor doc id and cluster) and drop records.

    ``units`` maps each documents part's ``part_key`` to its unit name, to find each survivor's doc id.
    """

    config: NearConfig
    units: dict[int, str]

    def __call__(self, item: InputItem) -> ResolveResult:
        build = self.config.build
        keys = sorted(self.units)
        found = self.config.table("clusters", keys.index(part_key(item)), CLUSTERS, len(keys)).sort_by("_ord")
        ords, clusters = found.column("_ord").combine_chunks(), found.column("cluster").to_pylist()
        own = _doc_ids(build, item.unit, ords) if len(ords) else {}
        survivors: dict[int, tuple[str, str]] = {}
        by_unit: dict[str, list[int]] = {}
        for c in sorted(set(clusters)):
            by_unit.setdefault(self.units[c >> ROW_BITS], []).append(c)
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
        write_table(build / NEAR / "duplicates" / f"{item.unit}.parquet", dups, row_group_size=65536)
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
        write_table(build / "dropped" / "near_dedup" / f"{item.unit}.parquet", dropped)
        return ResolveResult(unit=item.unit, duplicates=dups.num_rows)


class NearDedupRecord(StageRecord):
    documents: int
    signed: int
    candidates: int
    verified: int
    cc_steps: int
    duplicates: int
    partitions: int
    #: an append's reference read off the dedup index: its documents, and the band rows they wrote (those a new one shares)
    reference_documents: int = 0
    reference_band_rows: int = 0


def run_near_dedup(executor: StepRunner, items: list[InputItem], config: NearConfig, removed: tuple[str, ...] = (),
                   keep_intermediate: bool = False) -> NearDedupRecord:
    """Run every near-dedup step in order through ``executor``; ``items`` are the documents parts to deduplicate."""
    near, partitions = config.near, config.partitions
    new = [i for i in items if not indexed(i)]
    mapped = executor.map(Step("near-map", Sign(config, removed), SignResult), new)
    referenced: list[SignResult] = []
    if reference := [i for i in items if indexed(i)]:  # an append's datastore, read off its dedup index
        only_keys = new_band_keys(config)
        referenced = executor.map(Step("near-map-reference", Sign(config, removed, only_keys), SignResult), reference)
    mapped = [*mapped, *referenced]
    parts = partition_items(partitions)
    bands = executor.map(Step("near-bands", Bands(config), BandsResult), parts)
    candidates = verified = sum(r.candidates for r in bands)
    if near.verify != "none":
        executor.map(Step("near-attach", Attach(config), EdgesResult), parts)
        verified = sum(r.verified for r in executor.map(Step("near-verify", Verify(config), VerifyResult), parts))
    step = 0
    while True:
        if step >= MAX_CC_STEPS:
            raise MassiveDSError(f"near dedup: connected components did not settle in {MAX_CC_STEPS} steps")
        steps = [StepItem(unit=f"s{step:03d}-p{p:04d}", partition=p, step=step) for p in range(partitions)]
        results = executor.map(Step("near-cc", Components(config), ComponentsResult), steps)
        if step % 2 == 0 and sum(r.unsettled or 0 for r in results) == 0:
            break
        step += 1
    units = {part_key(i): i.unit for i in items}
    clusters = Clusters(config, step, tuple(sorted(units)))
    removed_count = sum(r.removed for r in executor.map(Step("near-clusters", clusters, ClustersResult), parts))
    resolved = executor.map(Step("near-resolve", Resolve(config, units), ResolveResult), items)
    if not keep_intermediate:
        for folder in ("bands", "sigs", "edges", "attached", "cc", "clusters"):
            shutil.rmtree(config.path(folder), ignore_errors=True)
    duplicates = sum(r.duplicates for r in resolved)
    if duplicates != removed_count:
        raise MassiveDSError(f"near dedup: {removed_count} cluster members but {duplicates} duplicates resolved; rerun the stage")
    signed = sum(r.signed for r in mapped)
    return NearDedupRecord(
        documents=sum(r.documents for r in mapped), signed=signed, candidates=candidates, verified=verified, cc_steps=step + 1,
        duplicates=duplicates, partitions=partitions, reference_documents=sum(r.signed for r in referenced),
        reference_band_rows=sum(r.band_rows for r in referenced),
        summary=f"{duplicates:,} near duplicates of {signed:,} documents ({candidates:,} LSH candidates, {verified:,} verified, "
                f"{step + 1} component steps, {partitions} partitions)"
                + (f"; {sum(r.band_rows for r in referenced):,} band keys of the datastore's documents shared with new ones"
                   if referenced else ""),
    )


def sorted_member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Whether each of ``values`` (any shape) is in ``sorted_set`` (sorted, unique)."""
    if not len(sorted_set):
        return np.zeros(values.shape, dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[at] == values


def new_band_keys(config: NearConfig) -> Path | None:
    """The distinct band keys near-map wrote so far (the new documents'), sorted, in ``new-keys.npy``; None past
    ``MAX_FILTER_KEYS`` (an append as large as its datastore: its reference parts then write every key)."""
    keys, count = [], 0
    for p in range(config.partitions):
        for batch in config.read("bands", p, BANDS):
            keys.append(np.unique(batch.column("key").to_numpy()))
            count += len(keys[-1])
            if count > MAX_FILTER_KEYS:
                return None
    path = config.path("new-keys.npy")
    write_array(path, np.unique(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.uint64))
    return path


class NearDedupStage(Stage):
    name = "near_dedup"
    record = NearDedupRecord
    removes = "near"

    def applies(self, ctx: BuildContext) -> bool:
        return ctx.manifests.near_dedup[1] is not None

    def run(self, ctx: BuildContext, executor: StepRunner) -> StageRecord:
        parts, near = ctx.manifests.near_dedup
        assert near is not None
        items = ctx.reference + [i for i in ctx.inputs if i.manifest in parts]
        config = NearConfig(ctx.build, near, near_partitions(ctx.build, items), ctx.protected_below,
                            reference_signatures=any(indexed(i) for i in ctx.reference))
        return run_near_dedup(executor, items, config, tuple(ctx.removed))
