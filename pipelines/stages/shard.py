"""shard: the passages parts cut into shards of at most ``shards.target_passages``, ids contiguous per shard."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from massiveds.core.catalog import ShardSpan
from massiveds.core.layout import ShardFiles
from massiveds.core.passages import write_passages
from massiveds.encode.sharding import PlannedShard, plan_shards
from pipelines.stage import BuildContext, StageRecord, Step, UnitResult, UnitStage, WorkItem
from pipelines.stages.chunk import ChunkRecord


class ShardItem(WorkItem, ShardSpan):
    """One shard of the datastore (``unit`` is its name): what the embed, train, index and catalog stages work on."""

    tokens: int = 0


class ShardPlan(ShardItem, PlannedShard):
    """A shard to write, with the (part, first row, end row) slices of the passages parts that fill it."""

    @classmethod
    def of(cls, planned: PlannedShard) -> ShardPlan:
        return cls(unit=planned.name, **planned.model_dump())


class WriteResult(UnitResult):
    passages: int
    tokens: int


@dataclass(frozen=True)
class WriteShard:
    """The shard step: one shard's ``passages.arrow`` (ids ``id_start`` onwards) from its slices of the passages parts."""

    build: Path
    shards_dir: Path

    def __call__(self, shard: ShardPlan) -> WriteResult:
        tokens = 0

        def tables() -> Iterator[pa.Table]:
            nonlocal tokens
            next_id = shard.id_start
            for part, start, stop in shard.slices:
                row = 0
                for batch in pq.ParquetFile(str(self.build / "passages" / part)).iter_batches(batch_size=8192):
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

        rows = write_passages(self.shards_dir / shard.name / ShardFiles.PASSAGES, tables())
        if rows != shard.count:
            raise RuntimeError(f"shard {shard.name}: wrote {rows} passages, expected {shard.count}")
        return WriteResult(unit=shard.name, passages=rows, tokens=tokens)


class ShardStageRecord(StageRecord):
    shards: list[ShardItem]


class ShardStage(UnitStage[ShardPlan, WriteResult]):
    name = "shard"
    record = ShardStageRecord

    def plan(self, ctx: BuildContext) -> list[ShardPlan]:
        chunk = ctx.record("chunk", ChunkRecord)
        planned: list[PlannedShard] = []
        existing = ctx.existing
        for part, m in enumerate(ctx.manifest_list):  # ids run on across manifests; shard numbers run on within a domain
            first_id = ctx.first_id + sum(s.count for s in planned)
            numbered = (existing.first_number(m.domain) if existing else 0) + sum(s.domain == m.domain for s in planned)
            parts = [(p.part, p.rows) for p in chunk.parts if p.manifest == part]
            planned += plan_shards(parts, m.domain, m.shards.target_passages, first_id=first_id, first_number=numbered)
        return [ShardPlan.of(s) for s in planned]

    def step(self, ctx: BuildContext) -> Step[ShardPlan, WriteResult]:
        return Step("shard", WriteShard(ctx.build, ctx.layout.shards), WriteResult, rates=("passages",))

    def summarize(self, ctx: BuildContext, items: Sequence[ShardPlan], results: Sequence[WriteResult]) -> ShardStageRecord:
        shards = [ShardItem(unit=s.unit, name=s.name, domain=s.domain, id_start=s.id_start, count=s.count, tokens=r.tokens)
                  for s, r in zip(items, results, strict=True)]
        target = max(m.shards.target_passages for m in ctx.manifest_list)
        return ShardStageRecord(shards=shards, summary=f"{len(shards)} shards of <= {target:,} passages")
