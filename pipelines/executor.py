"""Executors run stages: scheduling, resume markers, retries, progress, fault injection and failure reporting.

``Executor`` holds everything that is the same wherever units run; ``LocalExecutor`` runs a stage's
units one after the other in this process (``--engine local``: debugging, tests, measuring Ray's overhead), and
``pipelines.ray_executor.RayExecutor`` runs them as Ray tasks and actors. Stages see only ``map``
(a step over its items) and ``pool`` (a model step over its calls). Stages that run at the same time
(``pipelines.build.run_stages``) each call the executor from their own thread.

Resume: a finished stage leaves ``build/<stage>/_SUCCESS.json`` (its record) and is skipped by a
re-run; a finished unit leaves ``build/<stage>/units[/<step>]/<unit>.json`` (its result) and is not
run again. Failures: a user error (``MassiveDSError``) stays its own one line; anything else ends the
build with one line naming the stage, the step, the unit and the exception, the traceback going to
``build/logs/<stage>.log``; a full disk says which stage and path ran out of space and how much is free.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from rich.progress import Progress
from threadpoolctl import threadpool_limits

from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import DONE_MARKER, mark_done, read_json, write_json
from pipelines.faults import crash_if_asked, exit_worker_if_asked, stall_if_asked
from pipelines.stage import BuildContext, PoolStep, Stage, StageRecord, Step, UnitResult, WorkItem

Item = TypeVar("Item", bound=WorkItem)
Result = TypeVar("Result", bound=UnitResult)


@dataclass
class StageReport:
    """What one stage did in this run: ran or skipped, how long, and a one-line result (the build's summary table)."""

    name: str
    status: str
    seconds: float
    detail: str


@dataclass
class Rerun:
    """A unit (or pool call) run again because the worker running it died: in which stage, when, and on which lost node."""

    stage: str
    unit: str
    #: the Ray error the death came as
    death: str
    submitted: float
    at: float
    #: the node lost with the worker, once the cluster found it lost; None: the worker died on a live node (killed, out of memory)
    node: str | None = None

    @property
    def cause(self) -> str:
        return f"node {self.node[:12]} lost" if self.node else f"worker died ({self.death})"


class UnitFailed(Exception):
    """A unit raised something that is not a user error: where, what, and the traceback for the log (plain values: it crosses processes)."""

    def __init__(self, step: str, unit: str, kind: str, message: str, trace: str, errno_: int | None = None,
                 filename: str | None = None) -> None:
        super().__init__(f"{step} {unit}: {kind}: {message}")
        self.step, self.unit, self.kind, self.message, self.trace = step, unit, kind, message, trace
        self.errno, self.filename = errno_, filename

    def __reduce__(self) -> tuple[type[UnitFailed], tuple[str, str, str, str, str, int | None, str | None]]:
        return UnitFailed, (self.step, self.unit, self.kind, self.message, self.trace, self.errno, self.filename)

    @classmethod
    def of(cls, step: str, unit: str, exc: BaseException) -> UnitFailed:
        """The failure of ``unit`` by ``exc``, raised just now (its traceback is the current one)."""
        oserror = exc if isinstance(exc, OSError) else None
        return cls(step, unit, type(exc).__name__, str(exc), traceback.format_exc(), oserror.errno if oserror else None,
                   str(oserror.filename) if oserror and oserror.filename else None)


def run_call(step: str, fn: Callable[[Item], Result], item: Item, node: str | None = None, threads: int | None = None) -> Result:
    """One unit (or pool call) where it runs: the function (on ``threads`` BLAS and OpenMP threads if given), its node, the death hook.

    A worker process keeps the thread counts its libraries started with (Ray starts a 1-CPU worker with one OpenMP thread),
    so a unit that reserves more CPUs sets them itself.
    """
    stall_if_asked(step, node)
    try:
        with threadpool_limits(threads) if threads else contextlib.nullcontext():
            result = fn(item)
    except MassiveDSError:
        raise
    except Exception as exc:
        raise UnitFailed.of(step, item.unit, exc) from None
    result.node = node
    exit_worker_if_asked(step)
    return result


class Tally:
    """A step's progress bar with rates (sums of result fields per second), and the units or amounts per Ray node."""

    def __init__(self, progress: Progress, name: str, total: int, rates: tuple[str, ...], by: str | None = None) -> None:
        self.progress, self.rates, self.by = progress, rates, by
        self.task = progress.add_task(name, total=total, rate="")
        self.start = time.perf_counter()
        self.sums = dict.fromkeys(rates, 0.0)
        self.nodes: dict[str, int] = {}

    def add(self, result: UnitResult) -> None:
        for key in self.rates:
            self.sums[key] += float(getattr(result, key))
        amount = int(getattr(result, self.by)) if self.by else 1
        if result.node is not None:
            self.nodes[result.node] = self.nodes.get(result.node, 0) + amount
        seconds = max(time.perf_counter() - self.start, 1e-9)
        rate = ", ".join(f"{self.sums[k] / seconds:,.1f} {k}/s" for k in self.rates)
        self.progress.update(self.task, advance=amount, rate=rate)


class Running(threading.local):
    """The stage that runs in this thread and the units (or amounts) per Ray node of its steps: concurrent stages each have their own."""

    def __init__(self) -> None:
        self.stage = ""
        self.nodes: dict[str, dict[str, int]] = {}
        self.tally: Tally | None = None  # the progress bar of the step running
        self.no_room_since = 0.0  # since when no node can run the step's units (0: one can)


class Executor(ABC):
    """Runs a build's stages, several at once from their threads; subclasses say where units and pool calls run (``_units``, ``_pool``)."""

    def __init__(self, build: Path, progress: Progress) -> None:
        self.build, self.progress = build, progress
        self.reports: list[StageReport] = []
        #: The Ray nodes this run's cluster had (alive when Ray started or closed); empty when no cluster was started.
        self.cluster_nodes: set[str] = set()
        #: set when the build is interrupted (Ctrl-C): the running stages stop after the unit each is waiting for
        self.interrupted = threading.Event()
        #: the units run again after their worker died, in the order they were
        self.reruns: list[Rerun] = []
        self._running = Running()
        self._pools_up: dict[str, threading.Event] = {}
        self._pools_lock = threading.Lock()

    # -- what a stage calls ---------------------------------------------------------------------

    def map(self, step: Step[Item, Result], items: Sequence[Item]) -> list[Result]:
        """``step.run`` over every item, skipping units already done; results in item order."""
        markers = self.build / self._running.stage / "units"
        if step.name != self._running.stage:
            markers = markers / step.name
        tally = Tally(self.progress, step.name, len(items), step.rates)
        results: dict[str, Result] = {}
        todo = []
        for item in items:
            marker = markers / f"{item.unit}.json"
            if marker.is_file():
                results[item.unit] = step.result.model_validate(read_json(marker))
                tally.add(results[item.unit])
            else:
                todo.append(item)
        if todo:
            self.started()
            self._running.tally = tally
            for result in self._units(step, todo):
                write_json(markers / f"{result.unit}.json", result.model_dump(mode="json", exclude_unset=True))
                results[result.unit] = result
                tally.add(result)
                crash_if_asked(step.name, len(results))
                self._stop_if_interrupted()
        self._running.nodes[step.name] = tally.nodes
        return [results[i.unit] for i in items]

    def pool(self, step: PoolStep[Item, Result], calls: Sequence[Item], total: int) -> list[Result]:
        """Every call on a pool of long-lived workers (each takes the next call when free); results as they finish.

        ``total`` is what the calls add up to in ``step.rates[0]`` (passages, for embed): the progress bar's end.
        """
        tally = Tally(self.progress, step.name, total, step.rates, by=step.rates[0] if step.rates else None)
        results = []
        if calls:
            self.started()
            self._running.tally = tally
            for result in self._pool(step, calls):
                results.append(result)
                tally.add(result)
                crash_if_asked(step.name, len(results))
                self._stop_if_interrupted()
        self._running.nodes[step.name] = tally.nodes
        return results

    def pool_up(self, stage: str) -> threading.Event:
        """Set once ``stage``'s pool has all its workers (each holding its CPUs or GPU), or once the stage ended without one."""
        with self._pools_lock:
            return self._pools_up.setdefault(stage, threading.Event())

    def _workers_up(self) -> None:
        """Called by ``_pool`` when every worker of the running stage's pool has started."""
        self.pool_up(self._running.stage).set()

    def _say_on_progress(self, text: str) -> None:
        """Show ``text`` in the rate column of the running step's progress bar (a wait, say), until the next unit's rates replace it."""
        if self._running.tally is not None:
            self.progress.update(self._running.tally.task, rate=text)

    def _stop_if_interrupted(self) -> None:
        """End this stage's thread, its last unit kept, when the build was interrupted (Ctrl-C reaches only the main thread)."""
        if self.interrupted.is_set():
            raise KeyboardInterrupt

    # -- what the orchestrator calls --------------------------------------------------------------

    def run_stage(self, stage: Stage, ctx: BuildContext) -> StageRecord:
        """Run ``stage`` unless its completion marker says it is done; keep its record as the marker."""
        folder = self.build / stage.name
        if self.done(stage):
            record = stage.record.model_validate(read_json(folder / DONE_MARKER))
            self.reports.append(StageReport(stage.name, "skipped (done)", 0.0, record.summary))
            self.pool_up(stage.name).set()  # nothing to wait for
            return record
        self._running.stage, self._running.nodes = stage.name, {}
        clock = time.perf_counter()
        try:
            record = stage.run(ctx, self)
        except MassiveDSError:
            raise
        except Exception as exc:
            raise self._one_line(stage.name, exc) from None
        finally:
            self.pool_up(stage.name).set()
        crash_if_asked(f"{stage.name}-ran", 1)
        record.seconds = time.perf_counter() - clock
        record.nodes = {step: nodes for step, nodes in self._running.nodes.items() if nodes}
        mark_done(folder, record.model_dump(mode="json", exclude_unset=True))  # nested catalog records keep their own fields
        self.reports.append(StageReport(stage.name, "ran", record.seconds, record.summary))
        return record

    def done(self, stage: Stage) -> bool:
        """Whether ``stage`` finished in an earlier run (its completion marker is there)."""
        return (self.build / stage.name / DONE_MARKER).is_file()

    @abstractmethod
    def started(self) -> None:
        """Start what units need (Ray, for the Ray executor): from the main thread before a stage not done starts, then a no-op.

        ``map`` and ``pool`` call it too (steps run without the orchestrator, in tests); two stages may call it at once.
        """

    @abstractmethod
    def close(self) -> None:
        """Release what ``started`` took."""

    # -- where units run ------------------------------------------------------------------------

    @abstractmethod
    def _units(self, step: Step[Item, Result], items: Sequence[Item]) -> Iterator[Result]:
        """The results of ``step`` over ``items`` as each finishes; raises UnitFailed, a user error, or a MassiveDSError."""

    @abstractmethod
    def _pool(self, step: PoolStep[Item, Result], calls: Sequence[Item]) -> Iterator[Result]:
        """The results of the pool's calls as each finishes."""

    # -- failures ---------------------------------------------------------------------------------

    def _one_line(self, stage: str, exc: BaseException) -> MassiveDSError:
        """The one-line error a failure of ``stage`` ends the build with (called while handling ``exc``); the traceback goes to the log."""
        failed = exc if isinstance(exc, UnitFailed) else UnitFailed.of("-", "-", exc)
        if failed.errno == errno.ENOSPC:
            where = Path(failed.filename) if failed.filename else self.build
            free = shutil.disk_usage(_existing(where)).free
            return MassiveDSError(f"stage {stage}: no space left on the device of {where} ({free:,} bytes free); free some space "
                                  "and re-run the same command: the build resumes where it stopped")
        log = self.build / "logs" / f"{stage}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} stage {stage}, step {failed.step}, unit {failed.unit}\n{failed.trace}\n")
        unit = f"step {failed.step}, unit {failed.unit}" if isinstance(exc, UnitFailed) else "outside its units"
        first = (failed.message.strip().splitlines() or [""])[0][:300]
        return MassiveDSError(f"stage {stage} failed ({unit}): {failed.kind}: {first}; traceback in {log}; "
                              "finished work is kept: re-run the same command to resume")


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (what ``shutil.disk_usage`` can measure)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


class LocalExecutor(Executor):
    """A stage's units one after the other in this process (in its thread); a pool of one worker with torch's default threads."""

    def started(self) -> None:
        """Nothing to start: units run in this process."""

    def close(self) -> None:
        """Nothing to release."""

    def _units(self, step: Step[Item, Result], items: Sequence[Item]) -> Iterator[Result]:
        threads = os.cpu_count() if step.resources.cpus == "node" else None
        for item in items:
            yield run_call(step.name, step.run, item, threads=threads)

    def _pool(self, step: PoolStep[Item, Result], calls: Sequence[Item]) -> Iterator[Result]:
        worker = step.make(0)
        self._workers_up()
        for call in calls:
            yield run_call(step.name, worker, call)
