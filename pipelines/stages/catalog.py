"""catalog: ``datastore.json`` written last, from the shards' ``shard.json`` and the records of the stages before it."""

from __future__ import annotations

import collections
import datetime as dt
import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from massiveds.clean.dedup_index import index_record
from massiveds.core.catalog import Catalog, TrainedIndexRecord, catalog_text, install_catalog, parse_catalog
from massiveds.core.layout import CATALOG, FORMAT_VERSION, TRAINED_INDEX, DatastoreLayout, ShardFiles, atomic_path, read_json
from massiveds.core.schema import count_drops
from massiveds.encode.sparse import CorpusStats
from massiveds.encode.sparse import catalog_record as sparse_catalog
from massiveds.evaluate.recall import recall_summary
from pipelines.stage import BuildContext, Stage, StageRecord, Step, StepRunner, UnitResult, WorkItem
from pipelines.stages.chunk import ChunkRecord
from pipelines.stages.decontaminate import DecontaminateRecord
from pipelines.stages.dedup_index import IndexStageRecord
from pipelines.stages.embed import EmbedRecord
from pipelines.stages.extract import ExtractRecord
from pipelines.stages.shard import ShardItem, ShardStageRecord
from pipelines.stages.sparse import SparseRecord
from pipelines.stages.train import TrainRecord

VERSIONED_PACKAGES = ("massiveds", "faiss-cpu", "faiss-gpu", "sentence-transformers", "torch", "transformers", "pyarrow", "ray")


def dropped_counts(layout: DatastoreLayout) -> dict[str, int]:
    """Dropped documents per ``stage:reason``, counted from the drop records under ``build/dropped``."""
    counts: collections.Counter[str] = collections.Counter()
    for path in sorted(layout.dropped.rglob("*.parquet")):
        count_drops(pq.read_table(path, columns=["stage", "reason"]), counts)
    return dict(sorted(counts.items()))


def versions() -> dict[str, str]:
    """The installed versions of the packages a datastore's contents depend on."""
    out = {}
    for pkg in VERSIONED_PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


class WriteResult(UnitResult):
    recall: dict[str, Any]


@dataclass(frozen=True)
class WriteCatalog:
    """The catalog step: the catalog with the recall measured on the datastore it describes, staged in the build folder.

    The stage then moves it into place as ``datastore.json``: everything else is written by then.
    """

    catalog: Catalog
    root: Path
    staged: Path

    def __call__(self, item: WorkItem) -> WriteResult:
        recall = recall_summary(self.root, catalog=self.catalog)  # recall@10 at the default nprobe
        with atomic_path(self.staged) as tmp:
            tmp.write_text(catalog_text(self.catalog.but(recall=recall)))
        return WriteResult(unit=item.unit, recall=recall)


class CatalogStageRecord(StageRecord):
    catalog: Catalog


class CatalogStage(Stage):
    name = "catalog"
    record = CatalogStageRecord

    def run(self, ctx: BuildContext, executor: StepRunner) -> StageRecord:
        staged = ctx.build / "catalog" / CATALOG
        executor.map(Step("catalog", WriteCatalog(assemble(ctx), ctx.layout.root, staged), WriteResult), [WorkItem(unit="catalog")])
        catalog = parse_catalog(read_json(staged), str(staged), "a build bug: please report it")
        install_catalog(staged, ctx.layout.root)
        return CatalogStageRecord(catalog=catalog, summary=str(ctx.layout.catalog))


def domain_totals(ctx: BuildContext, shards: Sequence[ShardItem]) -> dict[str, dict[str, int]]:
    """Documents (kept by chunk), passages, tokens and shards per domain of this build's ``shards``."""
    chunk = ctx.record("chunk", ChunkRecord)
    domains: dict[str, dict[str, int]] = {}
    for part, m in enumerate(ctx.manifest_list):
        entry = domains.setdefault(m.domain, {"documents": 0, "passages": 0, "tokens": 0, "shards": 0})
        entry["documents"] += sum(p.documents for p in chunk.parts if p.manifest == part)
    for s in shards:
        entry = domains[s.domain]
        entry["passages"] += s.count
        entry["tokens"] += s.tokens
        entry["shards"] += 1
    return domains


def assemble(ctx: BuildContext) -> Catalog:
    """The catalog of a finished build (without its recall, measured on the datastore it describes)."""
    layout, manifests = ctx.layout, ctx.manifest_list
    shards = ctx.record("shard", ShardStageRecord).shards
    chunk, extract = ctx.record("chunk", ChunkRecord), ctx.record("extract", ExtractRecord)
    embed, plan = ctx.record("embed", EmbedRecord), ctx.record("train", TrainRecord).plan
    decon, sparse, index = ctx.records.get("decontaminate"), ctx.records.get("sparse"), ctx.records.get("dedup_index")
    records = []
    for s in shards:
        info = read_json(layout.shard(s.name) / ShardFiles.INFO)
        records.append({k: info[k] for k in ("name", "domain", "id_start", "count", "list_balance", "files")} | {"tokens": s.tokens})
    return parse_catalog({
        "format_version": FORMAT_VERSION,
        "name": ctx.manifests.name,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "embedder": embed.embedder.as_json(),
        "index": plan.to_dict(),
        "chunk": manifests[0].chunk.model_dump(),
        "trained_index": TrainedIndexRecord.of(layout.root, TRAINED_INDEX).as_json(),
        "shards": records,
        "domains": domain_totals(ctx, shards),
        "build": {
            "records_read": extract.read,
            "documents_kept": chunk.documents,
            "dropped": dropped_counts(layout),
            "decontamination": decon.eval_sets if isinstance(decon, DecontaminateRecord) else None,
            "sources": extract.sources,
            "embed_passages_per_s": round(embed.passages_per_s, 2),
            "embed_tokens_per_s": round(embed.tokens_per_s, 1),
            "embed_model_busy": None if embed.model_busy is None else round(embed.model_busy, 3),
            "stage_seconds": {name: round(r.seconds, 2) for name, r in ctx.records.items()},
            "nodes": {name: r.nodes for name, r in ctx.records.items() if r.nodes},
        } | {k: v for stage in ctx.stages for k, v in stage.catalog_entries(ctx.records[stage.name]).items()},
        "manifests": ctx.manifests.records(),
        "versions": versions(),
    } | ({"sparse": sparse_catalog(ctx.manifests.sparse, CorpusStats(sparse.passages, sparse.avg_length), sparse.terms, sparse.bytes)}
         if isinstance(sparse, SparseRecord) else {})
      | ({"dedup": index_record(layout.root, index.files, index.near).as_json()} if isinstance(index, IndexStageRecord) else {}),
        f"{layout.root}: the catalog being built", "a build bug: please report it")
