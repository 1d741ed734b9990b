"""near_dedup: near-duplicate removal (MinHash-LSH), hash-partitioned like exact dedup, in steps sharing one config.

Steps, in order (``P`` = partitions; every folder is under ``build/dedup/near/``)::

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq

from massiveds.clean.components import directed, large_star, small_star, star_members, unsettled
from massiveds.clean.exact_dedup import DUPLICATES
from massiveds.clean.minhash import (
    MinHasher,
    bucket_edges,
    estimate_jaccard,
    exact_jaccard,
    partition_of,
    shingle_sets,
    signature_column,
    signature_matrix,
)
from massiveds.core.errors import MassiveDSError
from massiveds.core.manifest import NearDedup
from massiveds.core.schema import DROPPED
from pipelines.parts import PartWriter, documents_path, ord_file, read_folder, surviving_documents, unit_ord_range, write_table
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
MAX_NEAR_PARTITIONS = 256
#: Compressed documents per partition: its reducers hold ~this much shingle payload in memory.
NEAR_PARTITION_BYTES = 64 << 20


def near_partitions(build: Path, items: list[InputItem], partition_bytes: int = NEAR_PARTITION_BYTES) -> int:
    """Hash partitions for the documents parts ``items``: ~``partition_bytes`` of compressed documents each, <= 4 per part."""
    docs_bytes = sum(documents_path(build, i.unit).stat().st_size for i in items)
    return max(1, min(MAX_NEAR_PARTITIONS, math.ceil(docs_bytes / partition_bytes), len(items) * 4))


@dataclass(frozen=True)
class NearConfig:
    """What every near-dedup step shares: the build folder, the MinHash parameters, the partition count."""

    build: Path
    near: NearDedup
    partitions: int

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

    def scatter(self, stage: str, name: str, schema: pa.Schema) -> Scatter:
        return Scatter(self, stage, name, schema)

    def write_arcs(self, step: int, name: str, a: np.ndarray, b: np.ndarray) -> int:
        """Write undirected edges ``{a, b}`` as directed rows into the partitions of ``cc/s<step>``."""
        node, nbr = directed(a, b)
        out = self.scatter(f"cc/s{step:03d}", name, ARCS)
        out.write(pa.table([pa.array(node, pa.int64()), pa.array(nbr, pa.int64())], schema=ARCS), partition_of(node, self.partitions))
        out.commit()
        return out.rows


class Scatter:
    """Rows routed to hash partitions, one lazily opened Parquet writer per destination partition."""

    def __init__(self, config: NearConfig, stage: str, name: str, schema: pa.Schema) -> None:
        self.config, self.stage, self.name, self.schema = config, stage, name, schema
        self.writers: dict[int, PartWriter] = {}

    def write(self, table: pa.Table, dest: np.ndarray) -> None:
        for p in np.unique(dest):
            if int(p) not in self.writers:
                self.writers[int(p)] = PartWriter(self.config.path(self.stage, f"p{int(p):04d}", f"{self.name}.parquet"), self.schema)
            self.writers[int(p)].write(table.filter(pa.array(dest == p)))

    @property
    def rows(self) -> int:
        return sum(w.rows for w in self.writers.values())

    def commit(self) -> None:
        for w in self.writers.values():
            w.commit()


class SignResult(UnitResult):
    documents: int
    signed: int


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
    """near-map: one documents part signed; band keys to ``bands/p<hash(key)>``, payloads to ``sigs/p<hash(_ord)>``.

    ``removed`` names earlier clean-up stages (``["exact"]``) whose documents are left out.
    """

    config: NearConfig
    removed: tuple[str, ...]

    def __call__(self, item: InputItem) -> SignResult:
        c, near = self.config, self.config.near
        hasher = MinHasher(ngram=near.ngram, num_perm=near.num_perm, bands=near.bands, seed=near.seed)
        bands = c.scatter("bands", item.unit, BANDS)
        sigs_out = c.scatter("sigs", item.unit, c.sig_schema) if near.verify != "none" else None
        docs = signed = 0
        for table in surviving_documents(c.build, item, self.removed, ["text", "_ord"]):
            docs += table.num_rows
            hashes, offsets = hasher.shingles(table.column("text").to_pylist())
            has_words = np.diff(offsets) > 0
            sigs = hasher.signatures_from_shingles(hashes, offsets)[has_words]
            ords = table.column("_ord").to_numpy()[has_words]
            signed += len(ords)
            flat_keys = hasher.band_keys(sigs).reshape(-1)
            flat_ords = np.repeat(ords, near.bands)
            bands.write(pa.table([pa.array(flat_keys, pa.uint64()), pa.array(flat_ords, pa.int64())], schema=BANDS),
                        partition_of(flat_keys, c.partitions))
            if sigs_out is not None:
                payload = signature_column(sigs) if near.verify == "signature" else shingle_sets(hashes, offsets, has_words)
                sigs_out.write(pa.table([pa.array(ords, pa.int64()), payload], schema=sigs_out.schema), partition_of(ords, c.partitions))
        bands.commit()
        if sigs_out is not None:
            sigs_out.commit()
        return SignResult(unit=item.unit, documents=docs, signed=signed)


@dataclass(frozen=True)
class Bands:
    """near-bands: the candidate pairs of one band-key partition, a star per LSH bucket, routed to the next step."""

    config: NearConfig

    def __call__(self, item: PartitionItem) -> BandsResult:
        c, p = self.config, item.partition
        rows = read_folder(c.path("bands", f"p{p:04d}"), BANDS)
        u, v = bucket_edges(rows.column("key").to_numpy(), rows.column("_ord").to_numpy())
        name = f"from-p{p:04d}"
        if c.near.verify != "none":
            out = c.scatter("edges", name, EDGES)
            out.write(pa.table([pa.array(u, pa.int64()), pa.array(v, pa.int64())], schema=EDGES), partition_of(u, c.partitions))
            out.commit()
        else:
            c.write_arcs(0, name, u, v)
        return BandsResult(unit=item.unit, band_rows=rows.num_rows, candidates=len(u))


def _lookup(sig_table: pa.Table, ords: np.ndarray) -> np.ndarray:
    """Row indices of ``ords`` in one partition's payload table (every ord must be there)."""
    have = sig_table.column("_ord").to_numpy()
    order = np.argsort(have, kind="stable")
    pos = np.minimum(np.searchsorted(have[order], ords), max(len(have) - 1, 0))
    if len(ords) and (len(have) == 0 or not np.array_equal(have[order][pos], ords)):
        raise MassiveDSError("near dedup: an edge names a document without a signature; rerun the near-map stage")
    return order[pos] if len(ords) else np.zeros(0, np.int64)


@dataclass(frozen=True)
class Attach:
    """near-attach: the candidate edges ``(u, v)`` of one partition (by ``hash(u)``) joined with ``payload(u)``, routed by ``hash(v)``."""

    config: NearConfig

    def __call__(self, item: PartitionItem) -> EdgesResult:
        c, p = self.config, item.partition
        sig_table = read_folder(c.path("sigs", f"p{p:04d}"), c.sig_schema)
        edges = read_folder(c.path("edges", f"p{p:04d}"), EDGES)
        u, v = edges.column("u").to_numpy(), edges.column("v").to_numpy()
        payload_u = sig_table.column("payload").take(pa.array(_lookup(sig_table, u), pa.int64()))
        out = c.scatter("attached", f"from-p{p:04d}", c.attached_schema)
        out.write(pa.table([pa.array(u, pa.int64()), pa.array(v, pa.int64()), payload_u], schema=c.attached_schema),
                  partition_of(v, c.partitions))
        out.commit()
        return EdgesResult(unit=item.unit, edges=len(u))


@dataclass(frozen=True)
class Verify:
    """near-verify: the candidate edges of one partition (by ``hash(v)``) whose similarity is >= ``threshold``."""

    config: NearConfig

    def __call__(self, item: PartitionItem) -> VerifyResult:
        c, near, p = self.config, self.config.near, item.partition
        sig_table = read_folder(c.path("sigs", f"p{p:04d}"), c.sig_schema)
        attached = read_folder(c.path("attached", f"p{p:04d}"), c.attached_schema)
        u, v = attached.column("u").to_numpy(), attached.column("v").to_numpy()
        payload_v = sig_table.column("payload").take(pa.array(_lookup(sig_table, v), pa.int64()))
        if near.verify == "signature":
            sim = estimate_jaccard(signature_matrix(attached.column("payload_u"), near.num_perm),
                                   signature_matrix(payload_v, near.num_perm))
        else:
            sim = exact_jaccard(attached.column("payload_u"), payload_v)
        keep = sim >= near.threshold
        c.write_arcs(0, f"from-p{p:04d}", u[keep], v[keep])
        return VerifyResult(unit=item.unit, candidates=len(u), verified=int(keep.sum()))


@dataclass(frozen=True)
class Components:
    """near-cc: one connected-components step on one partition, large-star (even step) or small-star (odd step).

    A large-star unit also reports how many of its nodes are ``unsettled`` on input; when the sum over
    partitions is 0, the input of that step is final (stars centred on each component's minimum).
    """

    config: NearConfig

    def __call__(self, item: StepItem) -> ComponentsResult:
        c, p, step = self.config, item.partition, item.step
        rows = read_folder(c.path("cc", f"s{step:03d}", f"p{p:04d}"), ARCS)
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
    """near-clusters: from the settled graph of one partition, (member ``_ord``, cluster = survivor ``_ord``) sorted by ``_ord``."""

    config: NearConfig
    step: int

    def __call__(self, item: PartitionItem) -> ClustersResult:
        c, p = self.config, item.partition
        rows = read_folder(c.path("cc", f"s{self.step:03d}", f"p{p:04d}"), ARCS)
        member, centre = star_members(rows.column("node").to_numpy(), rows.column("nbr").to_numpy())
        table = pa.table([pa.array(member, pa.int64()), pa.array(centre, pa.int64())], schema=CLUSTERS)
        write_table(c.path("clusters", f"p{p:04d}.parquet"), table, row_group_size=65536)
        return ClustersResult(unit=item.unit, removed=len(member))


def _doc_ids(build: Path, unit: str, ords: pa.Array) -> dict[int, tuple[str, str]]:
    table = pq.read_table(documents_path(build, unit), columns=["_ord", "doc_id", "source"], filters=[("_ord", "in", ords.to_pylist())])
    return {o: (d, s) for o, d, s in zip(*(table.column(c).to_pylist() for c in ("_ord", "doc_id", "source")), strict=True)}


@dataclass(frozen=True)
class Resolve:
    """near-resolve: one documents part's near duplicates (by ``_ord``, with survivor doc id and cluster) and drop records.

    ``units`` maps ``"<source_idx>/<file_idx>"`` to the unit name, to find each survivor's doc id.
    """

    config: NearConfig
    units: dict[str, str]

    def __call__(self, item: InputItem) -> ResolveResult:
        build = self.config.build
        lo, hi = unit_ord_range(item.file.source_idx, item.file.file_idx)
        folder = self.config.path("clusters")
        if folder.is_dir() and any(folder.glob("*.parquet")):
            in_range = (pds.field("_ord") >= lo) & (pds.field("_ord") < hi)
            found = pds.dataset(str(folder), format="parquet", schema=CLUSTERS).to_table(filter=in_range).sort_by("_ord")
        else:
            found = CLUSTERS.empty_table()
        ords, clusters = found.column("_ord").combine_chunks(), found.column("cluster").to_pylist()
        own = _doc_ids(build, item.unit, ords) if len(ords) else {}
        survivors: dict[int, tuple[str, str]] = {}
        by_unit: dict[str, list[int]] = {}
        for c, (s_idx, f_idx) in zip(sorted(set(clusters)), ord_file(sorted(set(clusters))), strict=True):
            by_unit.setdefault(self.units[f"{s_idx}/{f_idx}"], []).append(c)
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


def run_near_dedup(executor: StepRunner, items: list[InputItem], config: NearConfig, removed: tuple[str, ...] = (),
                   keep_intermediate: bool = False) -> NearDedupRecord:
    """Run every near-dedup step in order through ``executor``; ``items`` are the documents parts to deduplicate."""
    near, partitions = config.near, config.partitions
    mapped = executor.map(Step("near-map", Sign(config, removed), SignResult), items)
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
    removed_count = sum(r.removed for r in executor.map(Step("near-clusters", Clusters(config, step), ClustersResult), parts))
    unit_names = {f"{i.file.source_idx}/{i.file.file_idx}": i.unit for i in items}
    resolved = executor.map(Step("near-resolve", Resolve(config, unit_names), ResolveResult), items)
    if not keep_intermediate:
        for folder in ("bands", "sigs", "edges", "attached", "cc"):
            shutil.rmtree(config.path(folder), ignore_errors=True)
    duplicates = sum(r.duplicates for r in resolved)
    if duplicates != removed_count:
        raise MassiveDSError(f"near dedup: {removed_count} cluster members but {duplicates} duplicates resolved; rerun the stage")
    signed = sum(r.signed for r in mapped)
    return NearDedupRecord(
        documents=sum(r.documents for r in mapped), signed=signed, candidates=candidates, verified=verified, cc_steps=step + 1,
        duplicates=duplicates, partitions=partitions,
        summary=f"{duplicates:,} near duplicates of {signed:,} documents ({candidates:,} LSH candidates, {verified:,} verified, "
                f"{step + 1} component steps, {partitions} partitions)",
    )


class NearDedupStage(Stage):
    name = "near_dedup"
    record = NearDedupRecord
    removes = "near"

    def applies(self, ctx: BuildContext) -> bool:
        return ctx.manifests.near_dedup[1] is not None

    def run(self, ctx: BuildContext, executor: StepRunner) -> StageRecord:
        parts, near = ctx.manifests.near_dedup
        assert near is not None
        items = [i for i in ctx.inputs if i.manifest in parts]
        config = NearConfig(ctx.build, near, near_partitions(ctx.build, items))
        return run_near_dedup(executor, items, config, tuple(ctx.removed))
