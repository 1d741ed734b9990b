"""commit: an append's new shards moved into the datastore and the catalog switched to include them, last.

Until the catalog is written the datastore is the one the append started from: the new shard folders
moved under ``shards/`` are not in its catalog, so no reader sees them, and the same append run again
moves what is left and writes the catalog. The catalog gains the new shards, their domains' totals, the
BM25 statistics over all shards (``live_idf``: search rescales the older shards' scores), the new dedup
index files, and an ``appends`` record: who, when, the manifests, counts, drops (``appends/<n>.parquet``),
the datastore's recall@10 before and the new shards' recall@10 with its quantizer (measured on them
alone and at the datastore's own rerank depth, so the commit costs what was appended; a fall between the two
is the new data drifting from what the quantizer was trained on). The catalog's ``recall`` stays the datastore's as last measured whole.
"""

from __future__ import annotations

import collections
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from massiveds.clean.dedup_index import index_record
from massiveds.core.audit import utc_now, who
from massiveds.core.catalog import (
    DEDUP_DIR,
    AppendRecord,
    Catalog,
    DedupIndexRecord,
    DomainTotals,
    FileRecord,
    ManifestRecord,
    RecallRecord,
    ShardRecord,
    read_catalog,
    write_catalog,
)
from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import TRAINED_INDEX, DatastoreLayout, ShardFiles, atomic_path, read_json
from massiveds.core.schema import DROPPED, count_drops
from massiveds.encode.embed import differences
from massiveds.evaluate.recall import recall_summary
from massiveds.ops.shard_folders import remove_unnamed
from pipelines.existing import Existing
from pipelines.stage import BuildContext, Stage, StageRecord, Step, StepRunner, UnitResult, WorkItem
from pipelines.stages.catalog import domain_totals
from pipelines.stages.chunk import ChunkRecord
from pipelines.stages.dedup_index import IndexStageRecord
from pipelines.stages.embed import EmbedRecord
from pipelines.stages.extract import ExtractRecord
from pipelines.stages.shard import ShardItem, ShardStageRecord
from pipelines.stages.sparse import SparseRecord


class CommitRecord(StageRecord):
    append: AppendRecord


def _move(src: Path, dst: Path) -> None:
    """Move a new shard's folder or index file into the datastore (again after a crash: one moved there is not in the catalog)."""
    if src.exists():
        if dst.is_dir():
            shutil.rmtree(dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    elif not dst.exists():
        raise MassiveDSError(f"new {src.name} is neither in {src.parent} nor in {dst.parent}; run the append again with --force")


def dedup_index(root: Path, catalog: Catalog, written: IndexStageRecord | None) -> DedupIndexRecord | None:
    """The datastore's dedup index after the append: its files and the new ones (or the new ones alone, where the append
    indexed the datastore's documents again from their passages)."""
    if written is None:
        return catalog.dedup
    old = catalog.dedup if catalog.dedup is not None and not written.reindexed else None
    near = old.params if old is not None and old.params is not None else written.near
    assert written.near in (None, near), "the reference stage reads an index signed alike, or indexes the datastore again"
    added = index_record(root, written.files, near)
    return added if old is None else old.plus(added)


def _shard_record(folder: Path, shard: ShardItem, trained: str) -> ShardRecord:
    info = read_json(folder / ShardFiles.INFO)
    record = {k: info[k] for k in ("name", "domain", "id_start", "count", "list_balance", "files")} | {"tokens": shard.tokens}
    return ShardRecord.model_validate(record | ({"trained": trained} if trained != TRAINED_INDEX else {}))


def _domains(catalog: Catalog, ctx: BuildContext, shards: list[ShardItem]) -> dict[str, DomainTotals]:
    """The catalog's domain totals plus the new documents, passages, tokens and shards."""
    out = dict(catalog.domains)
    for domain, totals in domain_totals(ctx, shards).items():
        new = DomainTotals.model_validate(totals)
        out[domain] = out[domain] + new if domain in out else new
    return out


class MoveResult(UnitResult):
    dropped: dict[str, int]


@dataclass(frozen=True)
class MoveShards:
    """The commit step: the new shards moved under the datastore's ``shards/`` and the append's drop records written there.

    Nothing of it is seen before the catalog names it, so a crash after it leaves the datastore as it was.
    """

    work: DatastoreLayout
    root: Path
    shards: tuple[str, ...]
    table: str
    #: the dedup index files the append wrote (under its work folder's ``dedup/``)
    index_files: tuple[str, ...] = ()

    def __call__(self, item: WorkItem) -> MoveResult:
        for name in self.shards:
            _move(self.work.shard(name), self.root / "shards" / name)
        for name in self.index_files:
            _move(self.work.root / DEDUP_DIR / name, self.root / DEDUP_DIR / name)
        files = sorted(self.work.dropped.rglob("*.parquet"))
        drops = pa.concat_tables([pq.read_table(f, schema=DROPPED) for f in files]) if files else DROPPED.empty_table()
        with atomic_path(self.root / self.table) as tmp:
            pq.write_table(drops, tmp, compression="zstd")
        counts: collections.Counter[str] = collections.Counter()
        count_drops(drops, counts)
        return MoveResult(unit=item.unit, dropped=dict(sorted(counts.items())))


def append_table(append_id: str) -> str:
    """Where an append's drop records go, relative to the datastore: also how the catalog names that append."""
    return f"appends/{append_id}.parquet"


def committed(catalog: Catalog, append_id: str) -> AppendRecord | None:
    """The catalog's record of append ``append_id``, once its commit wrote it."""
    return next((a for a in catalog.appends if a.table == append_table(append_id)), None)


class CommitStage(Stage):
    name = "commit"
    record = CommitRecord

    def run(self, ctx: BuildContext, executor: StepRunner) -> StageRecord:
        existing = ctx.existing
        assert existing is not None, "commit ends an append"
        root, started = existing.root, existing.catalog
        table = append_table(read_json(ctx.build / "build.json")["append_id"])
        catalog = read_catalog(root)  # as it is now: a delete may have come in the meantime
        if done := committed(catalog, read_json(ctx.build / "build.json")["append_id"]):  # a crash after the catalog was written
            return CommitRecord(append=done, summary=f"{root}: already committed at {done.at}")
        if catalog.trained_index != started.trained_index or Existing(root, catalog).first_id != existing.first_id:
            raise MassiveDSError(f"{root} was retrained or appended to while this append ran; run it again with --force")
        embed = ctx.record("embed", EmbedRecord)
        if diff := differences(catalog.embedder, embed.embedder):
            raise MassiveDSError(f"the model the manifests name is not the one {root} was embedded with ({'; '.join(diff)}); "
                                 "append with the datastore's embedder")
        shards = ctx.record("shard", ShardStageRecord).shards
        written = ctx.records.get("dedup_index")
        written = written if isinstance(written, IndexStageRecord) else None
        index_files = tuple(written.files) if written else ()
        [moved] = executor.map(Step("commit", MoveShards(ctx.layout, root, tuple(s.name for s in shards), table, index_files), MoveResult),
                               [WorkItem(unit="commit")])
        records = [_shard_record(root / "shards" / s.name, s, existing.trained) for s in shards]
        chunk, extract = ctx.record("chunk", ChunkRecord), ctx.record("extract", ExtractRecord)
        changes: dict[str, Any] = {"shards": [*catalog.shards, *records], "domains": _domains(catalog, ctx, shards)}
        if (index := dedup_index(root, catalog, written)) is not None:
            changes["dedup"] = index
        sparse = ctx.records.get("sparse")
        if isinstance(sparse, SparseRecord) and catalog.sparse is not None:
            changes["sparse"] = catalog.sparse.but(passages=sparse.passages, terms=sparse.terms, bytes=catalog.sparse.bytes + sparse.bytes,
                                                   live_idf=True)
        new = catalog.but(**changes)
        # the new shards alone, at the datastore's own rerank depth: its cost follows the append
        depth = catalog.recall.rerank_depth if catalog.recall is not None and catalog.recall.status == "measured" else None
        appended = recall_summary(root, catalog=new.but(shards=records), rerank_depth=depth)
        record = AppendRecord(
            at=utc_now(), by=who(), manifests=[ManifestRecord.model_validate(m) for m in ctx.manifests.records()],
            records_read=extract.read, documents=chunk.documents, passages=chunk.passages, tokens=chunk.tokens,
            shards=[s.name for s in shards], dropped=moved.dropped, table=table, file=FileRecord.of(root / table), trained=existing.trained,
            recall_before=catalog.recall.figure() if catalog.recall else None, recall_after=RecallRecord.model_validate(appended).figure(),
            seconds=round(sum(r.seconds for r in ctx.records.values()), 2),
        )
        write_catalog(root, new := new.but(appends=[*catalog.appends, record]))
        remove_unnamed(root, new)  # index files replaced, or moved in by a killed append that started over
        return CommitRecord(append=record, summary=f"{len(shards)} shards, {chunk.passages:,} passages added to {root}")
