"""The Ray executor: units as Ray tasks, model pools as Ray actors. All of the build's Ray wiring is here.

Ray starts before the first stage not done in an earlier run (a fully resumed build never starts it),
in the build's main thread (its processes die with the thread that starts them): a new local Ray
instance by default, or the cluster at ``--address`` / ``RAY_ADDRESS``. A unit is one task with
its step's resources and ``WORKER_RETRIES`` retries; the driver submits a bounded number ahead and
blocks in ``ray.wait`` between results, taking no CPU from the units. A pool is a fixed set of actors
(one per GPU, else one per 8 CPUs, CPUs shared out as torch threads), each taking the next call when
free; a dead actor is restarted and its call retried. Stages that run at the same time share the
cluster through Ray's resources: the BM25 stage's tasks take the CPUs that the embed pool's actors
(one CPU each) leave. Their threads wake every ``POLL_S`` to stop at once when the build is
interrupted (Ctrl-C reaches only the main thread).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from rich.progress import Progress

from massiveds.core.errors import MassiveDSError
from pipelines.executor import Executor, UnitFailed, run_call
from pipelines.stage import PoolStep, Step, UnitResult, WorkItem

Item = TypeVar("Item", bound=WorkItem)
Result = TypeVar("Result", bound=UnitResult)

#: Environment every Ray worker gets: no tokenizer thread pools fighting Ray's own parallelism.
WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false"}
PASS_THROUGH_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "TRANSFORMERS_OFFLINE", "SENTENCE_TRANSFORMERS_HOME", "OMP_NUM_THREADS",
                    "MASSIVEDS_WORKER_EXIT")
#: A task whose worker process dies (killed, out of memory, node lost) is run again this many times, and an
#: actor is restarted this many times, before the build stops with an error (a re-run then resumes); retrying
#: forever would turn a unit that always kills its worker into a hang. ``MASSIVEDS_WORKER_RETRIES`` sets it.
WORKER_RETRIES = int(os.environ.get("MASSIVEDS_WORKER_RETRIES", "3"))
#: Ray's errors for a worker, actor, node or object lost, rather than an exception raised by our code.
WORKER_DEATHS = ("ActorDiedError", "RayActorError", "WorkerCrashedError", "OutOfMemoryError", "NodeDiedError", "ObjectLostError")
#: Seconds a stage waits on Ray before it checks whether the build was interrupted.
POLL_S = 1.0


def worker_death(exc: BaseException) -> str | None:
    """The name of the Ray worker-death error in ``exc``'s chain, or None when it is something else."""
    seen: BaseException | None = exc
    while seen is not None:
        if any(cls.__name__ in WORKER_DEATHS for cls in type(seen).__mro__):
            return type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    return None


def unwrapped(exc: BaseException, stage: str) -> BaseException:
    """What a failed Ray task or actor call means for the build: our own error it raised, or a worker death in one line."""
    cause = getattr(exc, "cause", None)  # a RayTaskError keeps the exception the remote code raised
    if isinstance(cause, MassiveDSError | UnitFailed):
        return cause
    if (death := worker_death(exc)) is not None:
        return MassiveDSError(
            f"stage {stage}: a Ray worker died more than {WORKER_RETRIES} times ({death}; out of memory or killed?); "
            "finished work is kept: re-run the same command to resume (MASSIVEDS_WORKER_RETRIES allows more retries)"
        )
    return exc


@contextlib.contextmanager
def ray_runtime(address: str | None = None) -> Iterator[None]:
    """A new local Ray instance by default, or the cluster at ``address`` / ``RAY_ADDRESS``; shut down if we started it.

    Without an address the build starts its own Ray ("local") rather than joining whatever Ray happens to be
    running on the machine, so its workers are its own children: they see its environment and die with it.
    """
    import ray

    env = dict(WORKER_ENV) | {k: os.environ[k] for k in PASS_THROUGH_ENV if k in os.environ}
    started = not ray.is_initialized()
    if started:
        target = address or os.environ.get("RAY_ADDRESS") or "local"
        # Ray runs its workers at nice 15 by default, so any other load on the machine would starve the build's
        # own workers; a cluster we join keeps its settings
        own: dict[str, Any] = {"_system_config": {"worker_niceness": 0}} if target == "local" else {}
        ray.init(address=target, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                 runtime_env={"env_vars": env}, **own)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def alive_nodes() -> set[str]:
    """The ids of the cluster's nodes alive now."""
    import ray

    return {str(n["NodeID"]) for n in ray.nodes() if n["Alive"]}


def current_node() -> str:
    """The id of the Ray node this code runs on."""
    import ray

    return str(ray.get_runtime_context().get_node_id())


def _task(step: Step[Item, Result], item: Item, threads: int | None) -> Result:
    return run_call(step.name, step.run, item, current_node(), threads)


class _PoolActor:
    """One pool worker in a Ray actor: built once from the step (a model load), then one call at a time."""

    def __init__(self, step: PoolStep[Any, Any], threads: int) -> None:
        self.step = step
        self.worker = step.make(threads)
        self.node = current_node()

    def call(self, item: WorkItem) -> UnitResult:
        return run_call(self.step.name, self.worker, item, self.node)


def plan_pool(device: str, workers: int | str, node_cpus: list[int], gpus: int) -> tuple[int, int, int]:
    """(actors, GPUs per actor, torch threads per actor) for nodes of ``node_cpus`` CPUs and ``gpus`` GPUs in all.

    One actor per GPU (fp16, 4 torch threads), else one per 8 CPUs, with the CPUs shared out among the
    actors as torch threads, no more than one node holds; ``workers`` (``embed.workers``) overrides the count.
    """
    on_gpus = device != "cpu" and gpus > 0
    have, unit = (gpus, "GPU") if on_gpus else (max(1, sum(node_cpus)), "CPU")
    unit += "" if have == 1 else "s"
    actors = (gpus if on_gpus else max(1, have // 8)) if workers == "auto" else int(workers)
    if actors > have:
        raise MassiveDSError(f"embed.workers is {actors} but the Ray cluster has {have} {unit}: set embed.workers to {have} or fewer")
    if on_gpus:
        return actors, 1, 4
    threads = have // actors
    while threads > 1 and sum(c // threads for c in node_cpus) < actors:
        threads -= 1
    return actors, 0, threads


def _as_completed(refs: Iterable[Any], in_flight: int, stage: str, interrupted: threading.Event) -> Iterator[Any]:
    """The results of Ray tasks as each finishes, submitting (iterating ``refs``) no more than ``in_flight`` ahead.

    The driver blocks in ``ray.wait`` between results, and raises KeyboardInterrupt once ``interrupted`` is
    set. When one fails, nothing more is submitted, the units already submitted (at most ``in_flight``)
    are let finish and their results yielded (their work stays done for the re-run), then the failure is raised.
    """
    import ray

    pending: list[Any] = []

    def next_result() -> Iterator[Any]:
        nonlocal pending
        ready: list[Any] = []
        while not ready:
            if interrupted.is_set():
                raise KeyboardInterrupt
            ready, pending = ray.wait(pending, num_returns=1, timeout=POLL_S)
        try:
            yield ray.get(ready[0])
        except Exception as exc:
            failure = unwrapped(exc, stage)
            for ref in pending:
                with contextlib.suppress(Exception):
                    yield ray.get(ref)
            raise failure from None

    for ref in refs:
        pending.append(ref)
        if len(pending) >= in_flight:
            yield from next_result()
    while pending:
        yield from next_result()


class RayExecutor(Executor):
    """Units as Ray tasks with their step's resources, pools as Ray actors; Ray starts with the first unit."""

    def __init__(self, build: Path, progress: Progress, address: str | None = None) -> None:
        super().__init__(build, progress)
        self.address = address
        self._ray: contextlib.ExitStack | None = None
        self._starting = threading.Lock()

    def started(self) -> None:
        with self._starting:
            if self._ray is None:
                self._ray = contextlib.ExitStack()
                self._ray.enter_context(ray_runtime(self.address))
                self.cluster_nodes |= alive_nodes()

    def close(self) -> None:
        if self._ray is not None:
            self.cluster_nodes |= alive_nodes()
            self._ray.close()
            self._ray = None

    def _units(self, step: Step[Item, Result], items: Sequence[Item]) -> Iterator[Result]:
        import ray

        res = step.resources
        threads = max(int(n["Resources"].get("CPU", 1)) for n in ray.nodes() if n["Alive"]) if res.cpus == "node" else None
        cpus = threads or res.cpus
        options: dict[str, Any] = {"num_cpus": cpus, "num_gpus": res.gpus, "max_retries": WORKER_RETRIES}
        if res.memory:
            options["memory"] = res.memory
        task: Any = ray.remote(_task).options(**options)
        shared = ray.put(step)  # once, not once per unit
        # enough queued that a freed CPU never waits on the driver, few enough that 10^5 units are not all specs at once
        in_flight = max(2, int(2 * ray.cluster_resources().get("CPU", 1) / max(float(cpus), 0.01)))
        yield from _as_completed((task.remote(shared, item, threads) for item in items), in_flight, self._running.stage, self.interrupted)

    def _pool(self, step: PoolStep[Item, Result], calls: Sequence[Item]) -> Iterator[Result]:
        import ray
        from ray.util import ActorPool

        node_cpus = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"]]
        actors, gpus, threads = plan_pool(step.device, step.workers, node_cpus, int(ray.cluster_resources().get("GPU", 0)))
        remote = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=WORKER_RETRIES, max_task_retries=WORKER_RETRIES)(_PoolActor)
        handles: list[Any] = [remote.remote(step, threads) for _ in range(actors)]
        pool = ActorPool(handles)
        try:
            for call in calls:
                pool.submit(lambda actor, c: actor.call.remote(c), call)
            while pool.has_next():
                try:
                    yield pool.get_next_unordered(timeout=POLL_S)
                except TimeoutError:
                    self._stop_if_interrupted()
        except Exception as exc:
            raise unwrapped(exc, self._running.stage) from None
        finally:
            for handle in handles:  # the models' memory and GPUs go back before the next stages
                ray.kill(handle)
