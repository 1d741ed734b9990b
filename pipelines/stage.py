"""What a build stage is: the one contract every stage of ``pipelines/stages/`` implements.

A stage turns what earlier stages left in the build folder into outputs of its own, in one or more
steps. A step is a typed function over work items (``WorkItem`` in, ``UnitResult`` out: an input
file, a shard, a hash partition each) that reads and writes files and returns a few numbers; it
declares what one unit reserves (``Resources``). A stage plans its items from the ``BuildContext``
(the manifests, the build folder, the records of earlier stages), runs its steps through an
``Executor`` (``pipelines.executor``) and summarises their results into its ``StageRecord``, which
the executor keeps as the stage's completion marker and later stages read back. It names the
earlier stages it reads (``needs``): the build runs stages whose needs are done at the same time.

The stage knows nothing of where its units run: the executor owns scheduling (this process or Ray
tasks), resume markers, retries, progress, fault injection and failure reporting.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from massiveds.core.layout import DatastoreLayout
from massiveds.core.manifest import Manifest
from massiveds.core.schema import ordinal
from massiveds.ingest.sources.files import InputFile, resolve_inputs
from massiveds.ingest.sources.plan import download_cache
from pipelines.existing import Existing
from pipelines.manifest_set import ManifestSet


@dataclass(frozen=True)
class Resources:
    """What one unit of a step reserves where it runs (Ray's scheduling; the local executor runs one unit of a stage at a time)."""

    #: CPUs one unit reserves; ``"node"``: every CPU of the largest node, and as many BLAS and OpenMP threads (FAISS training)
    cpus: float | Literal["node"] = 1.0
    gpus: float = 0.0
    #: bytes of memory, or None for no reservation
    memory: int | None = None


class WorkItem(BaseModel):
    """One unit of work; ``unit`` names it, unique within its step, and names its resume marker."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    unit: str


class UnitResult(BaseModel):
    """What one unit did: kept as its resume marker; ``node`` is the Ray node that ran it (None in this process)."""

    model_config = ConfigDict(extra="forbid")

    unit: str
    node: str | None = None


class StageRecord(BaseModel):
    """What a stage did, kept in ``build/<stage>/_SUCCESS.json``; stages add their own fields."""

    model_config = ConfigDict(extra="forbid")

    summary: str
    seconds: float = 0.0
    #: per step: units (or passages, for embed) each Ray node did
    nodes: dict[str, dict[str, int]] = Field(default_factory=dict)


Item = TypeVar("Item", bound=WorkItem)
Result = TypeVar("Result", bound=UnitResult)
Record = TypeVar("Record", bound=StageRecord)


@dataclass(frozen=True)
class Step(Generic[Item, Result]):
    """One pass of a stage over its items: ``run(item)`` on a worker, typed in and out.

    ``run`` is a picklable callable (a frozen dataclass holding the step's shared settings, or a
    top-level function): Ray ships it to the workers once per step, not once per unit.
    """

    name: str
    run: Callable[[Item], Result]
    result: type[Result]
    resources: Resources = Resources()
    #: result fields whose sums per second the progress bar shows (e.g. ``("read",)`` records/s)
    rates: tuple[str, ...] = ()


class InputItem(WorkItem):
    """One input file of the build, the unit of every per-file step (extract, the dedup maps, scans, chunk)."""

    #: the place, in the build's manifests, of the manifest the file comes from
    manifest: int
    file: InputFile

    @classmethod
    def of(cls, inp: InputFile, manifest: int) -> InputItem:
        """The work item of an input file of the build's ``manifest``-th manifest."""
        return cls(unit=inp.unit, manifest=manifest, file=inp)


@dataclass(frozen=True)
class PoolStep(Generic[Item, Result]):
    """A step run by a fixed pool of long-lived workers that each load a model once, then take calls as they free up.

    ``make(threads)`` builds one worker in the process that runs it (``threads``: its torch threads,
    0 for torch's default); the executor sizes the pool from ``device`` and ``workers`` (``"auto"`` or
    a number). Calls carry no resume markers: what they write is the resume state (see the embed stage).
    """

    name: str
    make: Callable[[int], Callable[[Item], Result]]
    result: type[Result]
    device: str
    workers: int | str
    #: result fields whose sums per second the progress bar shows; the first one also advances it
    rates: tuple[str, ...] = ()


@dataclass
class BuildContext:
    """What a stage may read: the manifests, the datastore and build folders, the input files, earlier stages' records."""

    manifests: ManifestSet
    layout: DatastoreLayout
    #: records of the stages that finished (in this run or before), by name, in the order of the build's stages
    records: dict[str, StageRecord] = field(default_factory=dict)
    #: the stages those records come from, in the same order
    stages: list[Stage] = field(default_factory=list)
    #: the datastore an append adds to (None: a build)
    existing: Existing | None = None

    @property
    def build(self) -> Path:
        return self.layout.build

    @property
    def manifest_list(self) -> list[Manifest]:
        return [p.manifest for p in self.manifests.parts]

    @functools.cached_property
    def inputs(self) -> list[InputItem]:
        """Every input file of every manifest (remote ones from the download cache), sources numbered across the set."""
        return input_items(self.manifests, download_cache(self.build))

    @property
    def removed(self) -> list[str]:
        """The clean-up stages that ran, in order: later stages leave their removals out (``pipelines.parts.REMOVED``)."""
        return [s.removes for s in self.stages if s.removes is not None]

    @property
    def reference(self) -> list[InputItem]:
        """Documents parts the dedup stages compare against but never remove: an append's datastore documents (``ReferenceRecord``)."""
        rec = self.records.get("reference")
        return list(rec.items) if isinstance(rec, ReferenceRecord) else []

    @property
    def protected_below(self) -> int:
        """Dedup never removes a document whose ``_ord`` is below this: the datastore's own documents (source 0) in an append."""
        return 0 if self.existing is None else ordinal(1, 0, 0)

    @property
    def first_id(self) -> int:
        """The first passage id of this build's shards: after the datastore's last in an append."""
        return 0 if self.existing is None else self.existing.first_id

    def record(self, stage: str, kind: type[Record]) -> Record:
        """The record of an earlier stage, as its type."""
        rec = self.records[stage]
        assert isinstance(rec, kind), f"stage {stage} recorded a {type(rec).__name__}, not a {kind.__name__}"
        return rec


class ReferenceRecord(StageRecord):
    """What the reference stage of an append wrote: one documents part per shard of the datastore, never chunked again."""

    items: list[InputItem]
    documents: int


def input_items(manifests: ManifestSet, cache: Path | None = None) -> list[InputItem]:
    """The input files of a set of manifests as work items; without ``cache``, remote sources are checked by syntax only."""
    return [InputItem.of(inp, n)
            for n, (loaded, offset) in enumerate(zip(manifests.parts, manifests.source_offsets(), strict=True))
            for inp in resolve_inputs(loaded, cache=cache, source_offset=offset)]


class StepRunner(Protocol):
    """What a stage asks of an executor (``pipelines.executor``): run a step over its items, or a pool step over its calls."""

    def map(self, step: Step[Item, Result], items: Sequence[Item]) -> list[Result]:
        """``step.run`` over every item not done before; results in item order."""
        ...

    def pool(self, step: PoolStep[Item, Result], calls: Sequence[Item], total: int) -> list[Result]:
        """Every call on a pool of long-lived workers; results as they finish (``total``: the progress bar's end)."""
        ...


class Stage(ABC):
    """One stage of the build: a name, the record type it keeps, the stages it needs, whether it applies, and how it runs."""

    name: ClassVar[str]
    record: ClassVar[type[StageRecord]]
    #: the earlier stages whose records or outputs it reads: it starts once they are done (or do not apply), beside any
    #: other stage whose needs are done; None: every stage before it
    needs: ClassVar[tuple[str, ...] | None] = None
    #: a clean-up stage whose removed ``_ord``s later stages leave out (its key in ``pipelines.parts.REMOVED``)
    removes: ClassVar[str | None] = None
    #: it runs a pool of model workers that hold their CPUs or GPUs for most of the stage: it starts before the stages
    #: that become ready with it, and they start once its workers are up, so that their short tasks fill what the pool
    #: leaves instead of holding its workers back (a race whose winner, and so every stage's time, changed with the size)
    holds_pool: ClassVar[bool] = False

    def applies(self, ctx: BuildContext) -> bool:
        """Whether this build has this stage (a download only for remote sources, dedup only when asked)."""
        return True

    def catalog_entries(self, record: StageRecord) -> dict[str, Any]:
        """What this stage adds to the catalog's ``build`` record (nothing by default)."""
        return {}

    @abstractmethod
    def run(self, ctx: BuildContext, executor: StepRunner) -> StageRecord:
        """Plan the items, run the steps through ``executor.map`` (in order), and summarise them."""


class UnitStage(Stage, Generic[Item, Result]):
    """A stage of one step: ``plan`` the items, ``step`` the function, ``summarize`` the results."""

    @abstractmethod
    def plan(self, ctx: BuildContext) -> list[Item]:
        """The work items of this build."""

    @abstractmethod
    def step(self, ctx: BuildContext) -> Step[Item, Result]:
        """The function run on each item, with its settings bound."""

    @abstractmethod
    def summarize(self, ctx: BuildContext, items: Sequence[Item], results: Sequence[Result]) -> StageRecord:
        """The stage record from every unit's result (in item order)."""

    def run(self, ctx: BuildContext, executor: StepRunner) -> StageRecord:
        items = self.plan(ctx)
        return self.summarize(ctx, items, executor.map(self.step(ctx), items))
