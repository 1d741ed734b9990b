"""train: the shared empty index (``trained.faiss``) trained once on a seeded uniform sample of every shard's vectors."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from massiveds.core.layout import atomic_path
from massiveds.encode.index import IndexPlan, plan_index, train_index, write_index
from pipelines.stage import BuildContext, Resources, Stage, StageRecord, Step, StepRunner, UnitResult, UnitStage, WorkItem
from pipelines.stages.embed import vectors_paths
from pipelines.stages.shard import ShardItem, ShardStageRecord


class TrainResult(UnitResult):
    #: the index trained, and why it was chosen
    plan: IndexPlan
    train_sample: int
    #: FAISS's threads while training (the step reserves every CPU of its node)
    threads: int


@dataclass(frozen=True)
class TrainIndex:
    """The train step: sample ``plan.train_sample`` rows uniformly (seed 0) across the shards' vectors, train, write ``dest``."""

    plan: IndexPlan
    shards: tuple[ShardItem, ...]
    paths: dict[str, Path]
    dest: Path

    def __call__(self, item: WorkItem) -> TrainResult:
        sample = None
        if self.plan.type != "flat":
            total = sum(s.count for s in self.shards)
            ids = np.sort(np.random.default_rng(0).choice(total, size=self.plan.train_sample, replace=False))
            pieces = []
            for s in self.shards:
                rows = ids[(ids >= s.id_start) & (ids < s.id_start + s.count)] - s.id_start
                if len(rows):
                    vectors = np.load(self.paths[s.name], mmap_mode="r", allow_pickle=False)
                    pieces.append(np.asarray(vectors[rows], dtype=np.float32))
            sample = np.concatenate(pieces)
        write_index(train_index(self.plan, sample), self.dest)
        return TrainResult(unit=item.unit, plan=self.plan, train_sample=0 if sample is None else len(sample),
                           threads=faiss.omp_get_max_threads())


class TrainRecord(StageRecord):
    #: the index chosen for the datastore's vectors, and why
    plan: IndexPlan
    #: FAISS's threads while training (None: not trained by this build, e.g. an append's existing quantizer)
    threads: int | None = None


class TrainStage(UnitStage[WorkItem, TrainResult]):
    name = "train"
    record = TrainRecord
    needs = ("shard", "embed")

    def plan(self, ctx: BuildContext) -> list[WorkItem]:
        return [WorkItem(unit="trained")]

    def step(self, ctx: BuildContext) -> Step[WorkItem, TrainResult]:
        shards = ctx.record("shard", ShardStageRecord).shards
        paths = vectors_paths(ctx, shards)
        dim = int(np.load(paths[shards[0].name], mmap_mode="r").shape[1])
        plan = plan_index(sum(s.count for s in shards), dim, ctx.manifests.index)
        return Step("train", TrainIndex(plan, tuple(shards), paths, ctx.layout.trained_index), TrainResult, Resources(cpus="node"))

    def summarize(self, ctx: BuildContext, items: Sequence[WorkItem], results: Sequence[TrainResult]) -> TrainRecord:
        [trained] = results
        return TrainRecord(plan=trained.plan, threads=trained.threads,
                           summary=f"{trained.plan.factory} ({trained.plan.reason}); trained on {trained.threads} threads")


class ExistingQuantizerStage(Stage):
    """train, in an append: the datastore's trained quantizer, copied into the build as the index stage's starting point."""

    name = "train"
    record = TrainRecord
    needs = ()

    def run(self, ctx: BuildContext, executor: StepRunner) -> StageRecord:
        existing = ctx.existing
        assert existing is not None, "the existing quantizer is an append's"
        with atomic_path(ctx.layout.trained_index) as tmp:
            shutil.copyfile(existing.root / existing.trained, tmp)
        plan = IndexPlan.from_dict(existing.catalog.index.as_json())
        return TrainRecord(plan=plan, summary=f"{plan.factory}: the datastore's {existing.trained}, not retrained")
