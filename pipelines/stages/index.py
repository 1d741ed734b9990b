"""index: each shard's vectors added to a copy of the trained index, written with the shard's ``shard.json``."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from massiveds.core.layout import ShardFiles, file_record, write_json
from massiveds.encode.index import IndexPlan, add_vectors, assigns_through_graph, list_balance, read_index, write_index
from pipelines.stage import BuildContext, StageRecord, Step, UnitResult, UnitStage
from pipelines.stages.embed import vectors_paths
from pipelines.stages.shard import ShardItem, ShardStageRecord
from pipelines.stages.train import TrainRecord


class AddResult(UnitResult):
    vectors: int
    #: whether each vector's list was found through a graph of the centroids (``assigns_through_graph``)
    graph_assigned: bool = False


@dataclass(frozen=True)
class AddShard:
    """The index step: one shard's vectors added to a copy of ``trained_path``; its ``index.faiss`` and ``shard.json`` written."""

    paths: dict[str, Path]
    trained_path: Path
    shards_dir: Path
    plan: IndexPlan

    def __call__(self, shard: ShardItem) -> AddResult:
        shard_dir = self.shards_dir / shard.name
        index = read_index(self.trained_path, mmap=False)
        vectors = np.load(self.paths[shard.name], mmap_mode="r", allow_pickle=False)
        add_vectors(index, vectors, np.arange(shard.id_start, shard.id_start + shard.count, dtype=np.int64))
        write_index(index, shard_dir / ShardFiles.INDEX)
        files = {p.name: file_record(p) for p in sorted(shard_dir.iterdir()) if p.is_file() and p.name != ShardFiles.INFO}
        write_json(shard_dir / ShardFiles.INFO, {"name": shard.name, "domain": shard.domain, "id_start": shard.id_start,
                                                 "count": shard.count, "tokens": shard.tokens, "index": self.plan.factory,
                                                 "list_balance": list_balance(index), "files": files})
        return AddResult(unit=shard.name, vectors=int(index.ntotal), graph_assigned=assigns_through_graph(index))


class IndexRecord(StageRecord):
    vectors: int


class IndexStage(UnitStage[ShardItem, AddResult]):
    name = "index"
    record = IndexRecord
    # needs every stage before it (the default): shard.json lists the files each of them left in the shard (sparse.*, vectors.npy)

    def plan(self, ctx: BuildContext) -> list[ShardItem]:
        return ctx.record("shard", ShardStageRecord).shards

    def step(self, ctx: BuildContext) -> Step[ShardItem, AddResult]:
        shards = self.plan(ctx)
        plan = ctx.record("train", TrainRecord).plan
        return Step("index", AddShard(vectors_paths(ctx, shards), ctx.layout.trained_index, ctx.layout.shards, plan), AddResult,
                    rates=("vectors",))

    def summarize(self, ctx: BuildContext, items: Sequence[ShardItem], results: Sequence[AddResult]) -> IndexRecord:
        if not ctx.manifests.embed.store_vectors:
            shutil.rmtree(ctx.build / "vectors", ignore_errors=True)
        total = sum(r.vectors for r in results)
        nlist = ctx.record("train", TrainRecord).plan.nlist
        how = f"; lists found through an HNSW graph of the {nlist:,} centroids" if nlist and all(r.graph_assigned for r in results) else ""
        return IndexRecord(vectors=total, summary=f"{total:,} vectors added to {len(items)} shard indexes{how}")
