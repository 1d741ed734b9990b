"""The stage contract and the executors: a new stage is one module plus its place in the list; stages start once the stages they
need are done, at the same time as others; failures end in one line."""

from __future__ import annotations

import collections
import errno
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pyarrow.compute as pc
import pytest
from rich.progress import Progress

from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import DatastoreLayout
from massiveds.core.manifest import load_manifest
from massiveds.core.passages import PassageFile
from pipelines import build as build_module
from pipelines.build import STAGES, build, run_stages, stage_needs
from pipelines.executor import Executor, LocalExecutor
from pipelines.manifest_set import ManifestSet
from pipelines.ray_executor import RayExecutor
from pipelines.stage import BuildContext, PoolStep, Resources, Stage, StageRecord, Step, StepRunner, UnitResult, UnitStage, WorkItem
from pipelines.stages.shard import ShardItem, ShardStageRecord
from tests.helpers import local


class WordsResult(UnitResult):
    domain: str
    words: int


@dataclass(frozen=True)
class CountWords:
    """The toy step: the words of one shard's passages."""

    shards_dir: Path

    def __call__(self, shard: ShardItem) -> WordsResult:
        texts = PassageFile(self.shards_dir / shard.name / "passages.arrow").read_all().column("text")
        words = int(pc.sum(pc.list_value_length(pc.utf8_split_whitespace(texts))).as_py() or 0)
        return WordsResult(unit=shard.name, domain=shard.domain, words=words)


class WordsRecord(StageRecord):
    words_per_domain: dict[str, int]


class WordCount(UnitStage[ShardItem, WordsResult]):
    """A newcomer's stage: words per domain, into the catalog. Its module and its place in the stage list are all it takes."""

    name = "word_count"
    record = WordsRecord

    def plan(self, ctx: BuildContext) -> list[ShardItem]:
        return ctx.record("shard", ShardStageRecord).shards

    def step(self, ctx: BuildContext) -> Step[ShardItem, WordsResult]:
        return Step("word_count", CountWords(ctx.layout.shards), WordsResult, rates=("words",))

    def summarize(self, ctx: BuildContext, items: Sequence[ShardItem], results: Sequence[WordsResult]) -> WordsRecord:
        per_domain: collections.Counter[str] = collections.Counter()
        for r in results:
            per_domain[r.domain] += r.words
        return WordsRecord(words_per_domain=dict(per_domain), summary=f"{sum(per_domain.values()):,} words")

    def catalog_entries(self, record: StageRecord) -> dict[str, object]:
        assert isinstance(record, WordsRecord)
        return {"words_per_domain": record.words_per_domain}


@pytest.mark.slow
def test_a_new_stage_is_one_module_and_its_place_in_the_list(small_manifest: Path, tmp_path: Path) -> None:
    stages = (*STAGES[:-1], WordCount(), STAGES[-1])  # before the catalog, which it writes into
    out = tmp_path / "ds"
    result = build(load_manifest(small_manifest), out, engine="local", stages=stages)
    names = [r.name for r in result.reports]
    assert names.index("shard") < names.index("word_count") < names.index("catalog")
    catalog = json.loads((out / "datastore.json").read_text())
    texts = [t for p in sorted((out / "shards").glob("*/passages.arrow")) for t in PassageFile(p).column("text")]
    assert catalog["build"]["words_per_domain"] == {"wiki": sum(len(t.split()) for t in texts)}
    assert (out / "build" / "word_count" / "_SUCCESS.json").is_file()
    again = build(load_manifest(small_manifest), out, engine="local", stages=stages)  # a re-run skips it like any stage
    assert {r.name: r.status for r in again.reports}["word_count"] == "skipped (done)"


class Boom(UnitStage[ShardItem, WordsResult]):
    """A stage whose second unit fails the way a bug does (or a full disk)."""

    name = "boom"
    record = WordsRecord

    def __init__(self, error: Exception) -> None:
        self.error = error

    def plan(self, ctx: BuildContext) -> list[ShardItem]:
        return [ShardItem(unit=f"u{i}", name=f"u{i}", domain="wiki", id_start=i, count=1) for i in range(3)]

    def step(self, ctx: BuildContext) -> Step[ShardItem, WordsResult]:
        return Step("boom-step", Explode(self.error), WordsResult)

    def summarize(self, ctx: BuildContext, items: Sequence[ShardItem], results: Sequence[WordsResult]) -> WordsRecord:
        return WordsRecord(words_per_domain={}, summary="")


@dataclass(frozen=True)
class Explode:
    error: Exception

    def __call__(self, shard: ShardItem) -> WordsResult:
        if shard.unit == "u1":
            raise self.error
        return WordsResult(unit=shard.unit, domain=shard.domain, words=0)


def _context(small_manifest: Path, out: Path) -> BuildContext:
    return BuildContext(ManifestSet.of(load_manifest(small_manifest)), DatastoreLayout(out))


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_an_unexpected_error_in_a_unit_is_one_line_naming_stage_step_and_unit(engine: str, small_manifest: Path, tmp_path: Path) -> None:
    build_dir = tmp_path / "out" / "build"
    executor: Executor = local(build_dir) if engine == "local" else RayExecutor(build_dir, Progress(disable=True))
    try:
        with pytest.raises(MassiveDSError) as failed:
            executor.run_stage(Boom(KeyError("the field nobody expected")), _context(small_manifest, tmp_path / "out"))
    finally:
        executor.close()
    message = str(failed.value)
    assert "\n" not in message
    assert re.match(r"stage boom failed \(step boom-step, unit u1\): KeyError: 'the field nobody expected'; traceback in \S+boom\.log; "
                    r"finished work is kept: re-run the same command to resume$", message), message
    log = (build_dir / "logs" / "boom.log").read_text()
    assert "Traceback (most recent call last)" in log and "raise self.error" in log
    assert (build_dir / "boom" / "units" / "boom-step" / "u0.json").is_file()  # the unit before it is kept for the re-run
    assert not (build_dir / "boom" / "_SUCCESS.json").exists()


def test_a_full_disk_says_which_stage_and_path_and_how_much_is_free(small_manifest: Path, tmp_path: Path) -> None:
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "shards" / "wiki-00000" / "index.faiss"))
    with pytest.raises(MassiveDSError) as failed:
        local(tmp_path / "out" / "build").run_stage(Boom(full), _context(small_manifest, tmp_path / "out"))
    assert re.fullmatch(r"stage boom: no space left on the device of \S+index\.faiss \([\d,]+ bytes free\); free some space and re-run "
                        r"the same command: the build resumes where it stopped", str(failed.value)), str(failed.value)


def test_a_user_error_in_a_unit_stays_its_own_line(small_manifest: Path, tmp_path: Path) -> None:
    with pytest.raises(MassiveDSError, match=r"^source 'x': no file$"):
        LocalExecutor(tmp_path / "b", Progress(disable=True)).run_stage(Boom(MassiveDSError("source 'x': no file")),
                                                                       _context(small_manifest, tmp_path))


#: Seconds a toy unit waits for another stage to be handed to the executor (its ``<stage>.entered`` mark): a scheduler that
#: starts the stages whose needs are done together hands both over at once, before either's unit runs; only one that runs
#: them one after the other leaves the mark missing.
START_S = 60.0
#: Seconds a toy unit waits for a mark of a stage already handed over: only a hang reaches it.
HANG_S = 300.0


@dataclass(frozen=True)
class Mark:
    """A toy unit: marks its start in ``folder``, waits for the marks ``waits``, marks its end or failure (``fails``: until ``fixed``)."""

    folder: Path
    waits: tuple[str, ...]
    fails: bool

    def __call__(self, item: WorkItem) -> UnitResult:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"{item.unit}.started").touch()
        try:
            for wait in self.waits:
                self._wait(item.unit, wait)
            if self.fails and not (self.folder / "fixed").exists():
                raise RuntimeError("a bug in one of two stages running at the same time")
        except Exception:
            (self.folder / f"{item.unit}.failed").touch()  # whatever failed it: a unit waiting for its failure goes on
            raise
        (self.folder / f"{item.unit}.done").touch()
        return UnitResult(unit=item.unit)

    def _wait(self, unit: str, mark: str) -> None:
        """Wait for ``mark`` to appear in the folder, or raise TimeoutError saying what it means that it did not."""
        handed_over = mark.endswith(".entered")
        limit = START_S if handed_over else HANG_S
        deadline = time.monotonic() + limit
        while not (self.folder / mark).exists():
            if time.monotonic() > deadline:
                why = "the stages ran one after the other" if handed_over else "a stage hangs"
                raise TimeoutError(f"{unit} waited {limit:.0f} s for {mark}: {why}")
            time.sleep(0.02)


class Toy(UnitStage[WorkItem, UnitResult]):
    """A toy stage of ``units`` units of ``Mark`` (named ``<stage><n>``), each waiting for the marks ``waits``."""

    record = StageRecord
    units: ClassVar[int] = 1
    waits: ClassVar[tuple[str, ...]] = ()
    fails: ClassVar[bool] = False

    def plan(self, ctx: BuildContext) -> list[WorkItem]:
        return [WorkItem(unit=f"{self.name}{n}") for n in range(self.units)]

    def step(self, ctx: BuildContext) -> Step[WorkItem, UnitResult]:
        return Step(self.name, Mark(ctx.build / "marks", self.waits, self.fails), UnitResult, Resources(cpus=0.25))

    def summarize(self, ctx: BuildContext, items: Sequence[WorkItem], results: Sequence[UnitResult]) -> StageRecord:
        return StageRecord(summary=f"{len(results)} units")


class Base(Toy):
    name = "base"


class Absent(Toy):
    """A stage this build does not have: what needs it does not wait for it."""

    name = "absent"

    def applies(self, ctx: BuildContext) -> bool:
        return False


class Left(Toy):
    """Runs beside ``right`` (it waits for right's unit to start) and ends after it."""

    name = "left"
    needs = ("base", "absent")
    waits = ("right.entered", "right0.started", "right0.done")


class Right(Toy):
    name = "right"
    needs = ("base",)
    waits = ("left.entered", "left0.started")


class AfterLeft(Toy):
    name = "after_left"
    needs = ("left",)


class Last(Toy):
    """Declares no needs: it starts once every stage before it is done."""

    name = "last"


def _executor(engine: str, build_dir: Path) -> Executor:
    """The engine's executor, marking ``<stage>.entered`` in the build's marks when a stage is handed to it (the driver's event)."""
    executor = local(build_dir) if engine == "local" else RayExecutor(build_dir, Progress(disable=True))
    run_stage = executor.run_stage

    def entered(stage: Stage, ctx: BuildContext) -> StageRecord:
        (ctx.build / "marks").mkdir(parents=True, exist_ok=True)
        (ctx.build / "marks" / f"{stage.name}.entered").touch()
        return run_stage(stage, ctx)

    executor.run_stage = entered  # type: ignore[method-assign]
    return executor


def _started_after(marks: Path, unit: str, build_dir: Path, stages: Sequence[str]) -> bool:
    """Whether ``unit`` started after each of ``stages`` had left its completion marker."""
    started = (marks / f"{unit}.started").stat().st_mtime_ns
    return all(started >= (build_dir / s / "_SUCCESS.json").stat().st_mtime_ns for s in stages)


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_stages_whose_needs_are_done_run_at_the_same_time_and_the_others_wait(engine: str, small_manifest: Path,
                                                                              tmp_path: Path) -> None:
    ctx = _context(small_manifest, tmp_path / "out")
    stages = (Base(), Absent(), Left(), Right(), AfterLeft(), Last())
    executor = _executor(engine, ctx.build)
    try:
        run_stages(ctx, executor, stages)  # left and right each wait for the other's start: one after the other, they time out
    finally:
        executor.close()
    marks = ctx.build / "marks"
    assert (marks / "right0.done").stat().st_mtime_ns <= (marks / "left0.done").stat().st_mtime_ns  # right finished first
    assert _started_after(marks, "left0", ctx.build, ["base"]) and _started_after(marks, "right0", ctx.build, ["base"])
    assert _started_after(marks, "after_left0", ctx.build, ["left"])
    assert _started_after(marks, "last0", ctx.build, ["base", "left", "right", "after_left"])
    order = ["base", "left", "right", "after_left", "last"]  # the order of the list, not the order they finished in
    assert list(ctx.records) == order and [s.name for s in ctx.stages] == order
    assert [r.name for r in executor.reports] == order


@dataclass(frozen=True)
class SlowModel:
    """A pool worker whose model takes ``load_s`` to load; it marks ``pool.up`` once loaded, then marks its calls as ``Mark`` does."""

    folder: Path
    load_s: float = 1.0

    def __call__(self, threads: int) -> Mark:
        time.sleep(self.load_s)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "pool.up").touch()
        return Mark(self.folder, (), False)


class Filler(Toy):
    """Short tasks that become ready with ``pooled``, listed before it."""

    name = "filler"
    needs = ("base",)
    units = 2


class Pooled(Stage):
    """A stage with a pool of one model worker, like embed."""

    name = "pooled"
    record = StageRecord
    needs = ("base",)
    holds_pool = True

    def run(self, ctx: BuildContext, executor: StepRunner) -> StageRecord:
        step = PoolStep("pooled", SlowModel(ctx.build / "marks"), UnitResult, "cpu", 1)
        results = executor.pool(step, [WorkItem(unit="pooled0")], 1)
        return StageRecord(summary=f"{len(results)} calls")


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_model_pool_starts_before_the_tasks_that_become_ready_with_it(engine: str, small_manifest: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _context(small_manifest, tmp_path / "out")
    executor = _executor(engine, ctx.build)
    try:
        run_stages(ctx, executor, (Base(), Filler(), Pooled()))
    finally:
        executor.close()
    marks = ctx.build / "marks"
    up = (marks / "pool.up").stat().st_mtime_ns
    assert all((marks / f"filler{n}.started").stat().st_mtime_ns >= up for n in range(2))  # listed first, started after the model
    assert (marks / "pooled0.done").is_file() and list(ctx.records) == ["base", "filler", "pooled"]
    monkeypatch.setattr(build_module, "POOL_HEAD_START_S", 600.0)  # a done pool stage must not be waited for: a hang if it is
    again, executor = _context(small_manifest, tmp_path / "out"), _executor(engine, ctx.build)
    clock = time.monotonic()
    try:
        run_stages(again, executor, (Base(), Filler(), Pooled()))
    finally:
        executor.close()
    assert time.monotonic() - clock < 300 and {r.status for r in executor.reports} == {"skipped (done)"}


class Boomer(Toy):
    """Fails once ``steady`` runs beside it."""

    name = "boomer"
    needs = ("base",)
    waits = ("steady.entered", "steady0.started")
    fails = True


class Steady(Toy):
    """Runs beside ``boomer``; its second unit runs on after boomer failed."""

    name = "steady"
    needs = ("base",)
    units = 2
    waits = ("boomer.entered", "boomer0.started", "boomer0.failed")


class AfterBoth(Toy):
    name = "after_both"
    needs = ("boomer", "steady")


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_failure_beside_a_running_stage_lets_it_finish_starts_nothing_and_resumes(engine: str, small_manifest: Path,
                                                                                    tmp_path: Path) -> None:
    stages = (Base(), Boomer(), Steady(), AfterBoth())
    ctx = _context(small_manifest, tmp_path / "out")
    executor = _executor(engine, ctx.build)
    try:
        with pytest.raises(MassiveDSError) as failed:
            run_stages(ctx, executor, stages)
    finally:
        executor.close()
    assert re.fullmatch(r"stage boomer failed \(step boomer, unit boomer0\): RuntimeError: a bug in one of two stages running at the "
                        r"same time; traceback in \S+boomer\.log; finished work is kept: re-run the same command to resume",
                        str(failed.value)), str(failed.value)
    marks = ctx.build / "marks"
    assert (marks / "steady1.done").is_file()  # it waited for boomer's failure: steady ran on after it
    assert (ctx.build / "steady" / "units" / "steady1.json").is_file() and (ctx.build / "steady" / "_SUCCESS.json").is_file()
    assert not (ctx.build / "boomer" / "_SUCCESS.json").exists() and not (marks / "after_both0.started").exists()

    (marks / "fixed").touch()
    again, executor = _context(small_manifest, tmp_path / "out"), _executor(engine, ctx.build)
    try:
        run_stages(again, executor, stages)
    finally:
        executor.close()
    assert {r.name: r.status for r in executor.reports} == {"base": "skipped (done)", "boomer": "ran", "steady": "skipped (done)",
                                                            "after_both": "ran"}
    assert list(again.records) == ["base", "boomer", "steady", "after_both"]


def test_a_stage_needs_only_stages_before_it() -> None:
    needs = stage_needs(STAGES)
    assert needs["sparse"] == needs["embed"] == {"shard"}  # so they run at the same time
    assert needs["catalog"] == {s.name for s in STAGES[:-1]}  # no needs declared: every stage before it
    with pytest.raises(ValueError, match=r"^stage after_left needs left: not a stage before it$"):
        stage_needs((Base(), Absent(), AfterLeft(), Left()))
    with pytest.raises(ValueError, match=r"^stage right needs base: not a stage before it$"):
        stage_needs((Right(),))
