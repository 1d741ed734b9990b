"""sparse: a BM25 index per shard, scored with the whole datastore's statistics, in three steps (``massiveds.encode.sparse``).

    sparse-count   per shard       tokenize once: build/sparse/count/<shard>/ (token ids, passage
                                   lengths, the shard's vocabulary with its document frequencies)
    sparse-df      per partition   the shards' vocabulary rows of one hash partition of the terms
                                   summed: build/sparse/df/p<n>.parquet (P = one per
                                   8 shards, ``df_partitions``), each shard's
                                   vocabulary scatter file read once
    sparse-index   per shard       the shard's bm25s index with the datastore's N, avgdl and df:
                                   shards/<shard>/sparse.*

In an append, ``sparse-base`` first writes each of the datastore's shards' vocabulary (its terms and their
document frequency in the shard, read off the BM25 index it holds: no passage is tokenized again) where
sparse-df sums it with the new shards': the new shards are scored with N and df over the whole datastore
and the datastore's average length, and search rescales the older shards' scores to the same statistics
(``live_idf`` in the catalog, ``massiveds.encode.sparse``).

It needs no model and only the shards, so it runs beside the embed stage (Ray tasks on CPUs while
the model pool holds the GPUs); the index stage's ``shard.json`` then records its files with the rest of the shard's.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from massiveds.core.layout import ShardFiles
from massiveds.core.manifest import Sparse as SparseSpec
from massiveds.core.passages import PassageFile
from massiveds.encode.sparse import (
    CorpusStats,
    CountFiles,
    ShardCounts,
    count_shard,
    df_partitions,
    index_shard,
    indexed_passages,
    shard_vocabulary,
    sum_partition,
    write_vocab,
)
from pipelines.stage import BuildContext, Stage, StageRecord, Step, StepRunner, UnitResult, WorkItem
from pipelines.stages.dedup import PartitionItem, partition_items
from pipelines.stages.shard import ShardItem, ShardStageRecord


class CountResult(UnitResult):
    passages: int
    tokens: int
    terms: int


class BaseItem(WorkItem):
    """A shard of the datastore an append adds to (``unit``: ``base-<name>``), by its folder relative to the datastore."""

    folder: str


class BaseResult(UnitResult):
    passages: int


class SumResult(UnitResult):
    terms: int


class IndexResult(UnitResult):
    passages: int
    bytes: int


def base_items(ctx: BuildContext) -> list[BaseItem]:
    """The shards of the datastore an append adds to, as sparse-base items (none in a build)."""
    return [BaseItem(unit=f"base-{s.name}", folder=s.folder_rel()) for s in ctx.existing.shards] if ctx.existing else []


def count_files(build: Path, shard: str) -> CountFiles:
    """Where sparse-count leaves one shard's counts."""
    return CountFiles(build / "sparse" / "count" / shard)


def df_files(build: Path, partitions: int) -> list[Path]:
    """The datastore df of each hash partition of the terms, in partition order."""
    return [build / "sparse" / "df" / f"p{p:04d}.parquet" for p in range(partitions)]


@dataclass(frozen=True)
class CountShard:
    """sparse-count: one shard's passages tokenized; its token ids, lengths and vocabulary written."""

    build: Path
    shards_dir: Path
    spec: SparseSpec
    partitions: int

    def __call__(self, shard: ShardItem) -> CountResult:
        texts = PassageFile(self.shards_dir / shard.name / ShardFiles.PASSAGES).iter_column("text")
        counts = count_shard(texts, self.spec.tokenizer, count_files(self.build, shard.name), self.partitions)
        return CountResult(unit=shard.name, passages=counts.passages, tokens=counts.tokens, terms=counts.terms)


@dataclass(frozen=True)
class BaseVocab:
    """sparse-base: one shard of the datastore an append adds to, its vocabulary and document frequencies as sparse-count writes them."""

    build: Path
    root: Path
    partitions: int

    def __call__(self, item: BaseItem) -> BaseResult:
        folder = self.root / item.folder
        terms, df = shard_vocabulary(folder)
        write_vocab(count_files(self.build, item.unit).vocab, terms, df, self.partitions)
        return BaseResult(unit=item.unit, passages=indexed_passages(folder))


@dataclass(frozen=True)
class SumDf:
    """sparse-df: the datastore df of one hash partition of the terms."""

    vocab_files: tuple[Path, ...]
    outputs: tuple[Path, ...]

    def __call__(self, item: PartitionItem) -> SumResult:
        terms = sum_partition(self.vocab_files, len(self.outputs), item.partition, self.outputs[item.partition])
        return SumResult(unit=item.unit, terms=terms)


@dataclass(frozen=True)
class IndexShard:
    """sparse-index: one shard's bm25s index, scored with the datastore's statistics."""

    build: Path
    shards_dir: Path
    spec: SparseSpec
    stats: CorpusStats
    partitions: tuple[Path, ...]

    def __call__(self, shard: ShardItem) -> IndexResult:
        size = index_shard(count_files(self.build, shard.name), self.partitions, self.stats, self.spec, self.shards_dir / shard.name)
        return IndexResult(unit=shard.name, passages=shard.count, bytes=size)


class SparseRecord(StageRecord):
    passages: int
    tokens: int
    #: distinct terms over the datastore
    terms: int
    partitions: int
    avg_length: float
    bytes: int


class SparseStage(Stage):
    name = "sparse"
    record = SparseRecord
    needs = ("shard",)

    def applies(self, ctx: BuildContext) -> bool:
        return ctx.manifests.sparse.enabled

    def run(self, ctx: BuildContext, executor: StepRunner) -> StageRecord:
        spec, build, shards_dir = ctx.manifests.sparse, ctx.build, ctx.layout.shards
        shards = ctx.record("shard", ShardStageRecord).shards
        base = base_items(ctx)
        partitions = df_partitions(len(base) + len(shards))
        based = executor.map(Step("sparse-base", BaseVocab(build, ctx.existing.root, partitions), BaseResult), base) if ctx.existing else []
        counted = executor.map(Step("sparse-count", CountShard(build, shards_dir, spec, partitions), CountResult, rates=("passages",)),
                               shards)
        outputs = tuple(df_files(build, partitions))
        vocab_files = tuple(count_files(build, s.unit).vocab for s in [*base, *shards])
        summed = executor.map(Step("sparse-df", SumDf(vocab_files, outputs), SumResult, rates=("terms",)),
                              partition_items(partitions, "sparse-"))
        stats = CorpusStats.of([ShardCounts(c.passages, c.tokens, c.terms) for c in counted])
        passages, tokens = stats.passages, sum(c.tokens for c in counted)
        if ctx.existing is not None:  # N over the whole datastore, and its length normalisation (fixed at its build)
            assert ctx.existing.catalog.sparse is not None
            stats = CorpusStats(passages + sum(b.passages for b in based), ctx.existing.catalog.sparse.avg_length)
        indexed = executor.map(Step("sparse-index", IndexShard(build, shards_dir, spec, stats, outputs), IndexResult, rates=("passages",)),
                               shards)
        shutil.rmtree(build / "sparse", ignore_errors=True)
        terms, size = sum(s.terms for s in summed), sum(r.bytes for r in indexed)
        per = size / max(passages, 1)
        return SparseRecord(passages=stats.passages, tokens=tokens, terms=terms, partitions=partitions, avg_length=stats.avg_length,
                            bytes=size, summary=f"BM25 over {passages:,} passages, {terms:,} terms, {per:,.0f} bytes/passage")

    def catalog_entries(self, record: StageRecord) -> dict[str, Any]:
        if not isinstance(record, SparseRecord) or not record.seconds:
            return {}
        return {"sparse_passages_per_s": round(record.passages / record.seconds, 1)}
