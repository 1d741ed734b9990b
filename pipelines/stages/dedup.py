"""dedup: exact duplicates across the documents of every manifest that asks for it, in two steps.

    dedup-map   per input file    hash each document's normalised text into one of P partitions
                                  (P = files up to 64, or one per 4 M documents if that is more):
                                  build/dedup/keys/<unit>.scatter (``pipelines.scatter``), and
                                  each digest for the dedup index: build/dedup/hashes/<unit>.parquet
                                  (a part of an append's reference read off the datastore's dedup
                                  index has its digests already)
    dedup       per partition     the duplicates in it (the survivor is the smallest ``_ord``):
                                  build/dedup/duplicates/p<b>.parquet and their drop records
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from massiveds.clean.dedup_index import HASHES
from massiveds.clean.exact_dedup import KEYS, document_keys, find_duplicates, key_partitions
from massiveds.core.scatter import SCATTER, read_partition, scatter_file
from massiveds.core.schema import dropped_table
from pipelines.parts import PartWriter, documents_path, hashes_path, indexed, read_documents, write_table
from pipelines.stage import BuildContext, InputItem, Stage, StageRecord, Step, StepRunner, UnitResult, WorkItem

#: Where dedup-map writes each part's keys, a scatter file per part.
KEYS_DIR = Path("dedup") / "keys"
#: Partitions of exact dedup at most, unless its keys need more (``exact_partitions``).
MAX_DEDUP_PARTITIONS = 64
#: Keys a reducer holds at most (each a 16-byte digest, an _ord, a doc id and a source): past 64 partitions they grow with the documents.
KEYS_PER_PARTITION = 4_000_000


class PartitionItem(WorkItem):
    """One hash partition of a shuffle."""

    partition: int


class MapResult(UnitResult):
    partitions: int


class ReduceResult(UnitResult):
    keys: int
    duplicates: int


@dataclass(frozen=True)
class HashDocuments:
    """dedup-map: one documents part's keys routed to the hash partitions, in one scatter file."""

    build: Path
    partitions: int

    def __call__(self, item: InputItem) -> MapResult:
        from_index = indexed(item)
        digests = None if from_index else PartWriter(hashes_path(self.build, item.unit), HASHES)  # kept for the dedup index
        filled: set[int] = set()
        with scatter_file(self.build / KEYS_DIR / f"{item.unit}{SCATTER}", KEYS, self.partitions) as out:
            columns = ["doc_id", "source", "hash" if from_index else "text", "_ord"]
            for table in read_documents(documents_path(self.build, item.unit), columns):
                keys = document_keys(table)
                if digests is not None:
                    digests.write(keys.select(HASHES.names))
                buckets = key_partitions(keys, self.partitions)
                filled.update(np.unique(buckets).tolist())
                out.write(keys, buckets)
        if digests is not None:
            digests.commit()
        return MapResult(unit=item.unit, partitions=len(filled))


@dataclass(frozen=True)
class FindDuplicates:
    """dedup (reduce): the duplicates within one hash partition, written by ``_ord``, with their drop records."""

    build: Path
    partitions: int
    #: documents with a smaller ``_ord`` are never removed (``BuildContext.protected_below``)
    keep_below: int = 0

    def __call__(self, item: PartitionItem) -> ReduceResult:
        name = f"p{item.partition:04d}"
        keys = pa.Table.from_batches(list(read_partition(self.build / KEYS_DIR, item.partition, KEYS, self.partitions)), KEYS)
        dups = find_duplicates(keys, self.keep_below)
        write_table(self.build / "dedup" / "duplicates" / f"{name}.parquet", dups, row_group_size=65536)
        columns = [dups.column(c).to_pylist() for c in ("doc_id", "source", "duplicate_of")]
        dropped = dropped_table([{"doc_id": d, "source": s, "stage": "dedup", "reason": "exact_duplicate", "duplicate_of": o}
                                 for d, s, o in zip(*columns, strict=True)])
        write_table(self.build / "dropped" / "dedup" / f"{name}.parquet", dropped)
        return ReduceResult(unit=name, keys=keys.num_rows, duplicates=dups.num_rows)


def partition_items(partitions: int, prefix: str = "") -> list[PartitionItem]:
    """The work items of a shuffle's reduce side: one per partition."""
    return [PartitionItem(unit=f"{prefix}p{p:04d}", partition=p) for p in range(partitions)]


class DedupRecord(StageRecord):
    duplicates: int
    partitions: int


def exact_items(ctx: BuildContext) -> list[InputItem]:
    """The documents parts exact dedup reads: the manifests' that ask for it, after an append's datastore documents (none if none asks)."""
    asking = [i for i in ctx.inputs if i.manifest in ctx.manifests.exact_dedup]
    return ctx.reference + asking if asking else []


def exact_partitions(build: Path, items: list[InputItem]) -> int:
    """Hash partitions of exact dedup: one per part up to 64 (the map's parallelism), more where a reducer would hold over
    ``KEYS_PER_PARTITION`` keys (its memory stays bounded whatever the corpus)."""
    documents = sum(pq.read_metadata(documents_path(build, i.unit)).num_rows for i in items)
    return max(1, min(MAX_DEDUP_PARTITIONS, len(items)), math.ceil(documents / KEYS_PER_PARTITION))


def run_exact_dedup(executor: StepRunner, items: list[InputItem], build: Path, keep_below: int = 0) -> DedupRecord:
    """Exact dedup over the documents parts ``items``: map into hash partitions (``exact_partitions``), then reduce.

    Documents with an ``_ord`` below ``keep_below`` are never removed.
    """
    partitions = exact_partitions(build, items)
    executor.map(Step("dedup-map", HashDocuments(build, partitions), MapResult), items)
    reduced = executor.map(Step("dedup", FindDuplicates(build, partitions, keep_below), ReduceResult), partition_items(partitions))
    dups = sum(r.duplicates for r in reduced)
    shutil.rmtree(build / KEYS_DIR, ignore_errors=True)
    return DedupRecord(duplicates=dups, partitions=partitions, summary=f"{dups:,} exact duplicates in {partitions} hash partitions")


class ExactDedupStage(Stage):
    name = "dedup"
    record = DedupRecord
    removes = "exact"

    def applies(self, ctx: BuildContext) -> bool:
        return bool(exact_items(ctx))

    def run(self, ctx: BuildContext, executor: StepRunner) -> StageRecord:
        return run_exact_dedup(executor, exact_items(ctx), ctx.build, ctx.protected_below)

