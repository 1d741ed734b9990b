"""The Ray executor: units as Ray tasks, model pools as Ray actors. All of the build's Ray wiring is here.

Ray starts before the first stage not done in an earlier run (a fully resumed build never starts it),
in the build's main thread (its processes die with the thread that starts them): a new local Ray
instance by default, or the cluster at ``--address`` / ``RAY_ADDRESS``; Ray's own lines go to
``build/logs/ray.log``, not the terminal. A unit is one task with its step's resources; the driver
submits a bounded number ahead and blocks in ``ray.wait`` between results, taking no CPU from the
units. A pool is a set of actors (one per GPU, else one per 8 CPUs, CPUs shared out as torch threads),
each taking the next call when free. Stages that run at the same time share the cluster through Ray's
resources: the BM25 stage's tasks take the CPUs that the embed pool's actors (one CPU each) leave.
Their threads wake every ``POLL_S`` to stop at once when the build is interrupted (Ctrl-C reaches only
the main thread).

Lost nodes and dead workers: a unit whose worker dies runs again, here rather than by Ray's retries, after
a wait that doubles with each of its deaths; a death on a node the cluster then finds lost is the node's,
and the unit runs again on the nodes left as often as nodes are lost. A unit that kills its worker on a
live node (out of memory, killed) ends the build after ``WORKER_RETRIES`` retries. A pool actor that dies
is replaced wherever the cluster has room (a node that joins takes it), and only its call runs again:
the embed stage's finished calls wrote their parts. Each loss is printed once, as it is found, and the
summary lists every unit run again and why. When no node left can run a stage's units, the stage waits
``NODE_WAIT_S`` for one (its progress bar counts down), then ends the build in one line; a re-run resumes.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from rich.progress import Progress

from massiveds.core.errors import MassiveDSError
from massiveds.core.native_output import native_output_to
from pipelines.executor import Executor, Rerun, UnitFailed, run_call
from pipelines.stage import PoolStep, Step, UnitResult, WorkItem

Item = TypeVar("Item", bound=WorkItem)
Result = TypeVar("Result", bound=UnitResult)

#: Environment every Ray worker gets: no tokenizer thread pools fighting Ray's own parallelism.
WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false"}
PASS_THROUGH_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "TRANSFORMERS_OFFLINE", "SENTENCE_TRANSFORMERS_HOME", "OMP_NUM_THREADS",
                    "MASSIVEDS_WORKER_EXIT", "MASSIVEDS_STALL_ON_NODE")
#: A unit (or pool call) whose worker dies on a live node (killed, out of memory) runs again this many times
#: before the build stops with an error (a re-run then resumes); retrying forever would turn a unit that always
#: kills its worker into a hang. Deaths with a lost node do not count. ``MASSIVEDS_WORKER_RETRIES`` sets it.
WORKER_RETRIES = int(os.environ.get("MASSIVEDS_WORKER_RETRIES", "3"))
#: Ray's errors for a worker, actor, node or object lost, rather than an exception raised by our code.
WORKER_DEATHS = ("ActorDiedError", "RayActorError", "WorkerCrashedError", "OutOfMemoryError", "NodeDiedError", "ObjectLostError")
#: The file of the build's ``logs`` folder that Ray's own lines go to.
RAY_LOG = "ray.log"
#: Seconds a stage waits on Ray before it checks whether the build was interrupted.
POLL_S = 1.0
#: Seconds a stage waits, when no node of the cluster can run its units, for one that can (a node added, a
#: preempted machine back) before the build ends; ``MASSIVEDS_NODE_WAIT_S`` sets it.
NODE_WAIT_S = float(os.environ.get("MASSIVEDS_NODE_WAIT_S", "600"))
#: Seconds before a unit whose worker died runs again, doubled at each death of its own: a unit sent back at once
#: could land on a dying node the cluster does not know dead yet.
RETRY_BACKOFF_S = 1.0
#: Seconds the cluster may take to find a node dead after the deaths of the workers on it.
NODE_NOTICE_S = 20.0


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
def ray_runtime(address: str | None = None, log: Path | None = None) -> Iterator[None]:
    """A new local Ray instance by default, or the cluster at ``address`` / ``RAY_ADDRESS``; shut down if we started it.

    Without an address the build starts its own Ray ("local") rather than joining whatever Ray happens to be
    running on the machine, so its workers are its own children: they see its environment and die with it.
    ``log``: where Ray's own lines go while it runs (its core and the processes of a local instance write to file
    descriptor 2; the progress bars and one-line errors stay on the terminal).
    """
    import ray

    env = dict(WORKER_ENV) | {k: os.environ[k] for k in PASS_THROUGH_ENV if k in os.environ}
    started = not ray.is_initialized()
    with contextlib.ExitStack() as stack:
        if started:
            if log is not None:
                log.parent.mkdir(parents=True, exist_ok=True)
                stack.enter_context(native_output_to(log, "stderr"))
            target = address or os.environ.get("RAY_ADDRESS") or "local"
            # Ray runs its workers at nice 15 by default, so any other load on the machine would starve the build's
            # own workers; a cluster we join keeps its settings
            own: dict[str, Any] = {"_system_config": {"worker_niceness": 0}} if target == "local" else {}
            try:
                ray.init(address=target, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                         runtime_env={"env_vars": env}, **own)
            except Exception as exc:  # Ray raises a bare Exception when its node times out starting
                where = f"the cluster at {target}" if target != "local" else "a local Ray"
                raise MassiveDSError(f"{where} did not start ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                                     f"Ray's own log: {log or 'stderr'}; re-run the same command to resume (on a loaded machine, "
                                     "once the load is gone)") from None
            stack.callback(ray.shutdown)
        yield


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

    def ready(self) -> str:
        """The node this worker runs on, once its model is loaded: it takes calls from then on."""
        return self.node


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


class RayExecutor(Executor):
    """Units as Ray tasks with their step's resources, pools as Ray actors; Ray starts with the first unit."""

    def __init__(self, build: Path, progress: Progress, address: str | None = None) -> None:
        super().__init__(build, progress)
        self.address = address
        self._ray: contextlib.ExitStack | None = None
        self._starting = threading.Lock()
        #: the nodes of this run's cluster found lost, and when
        self.lost_nodes: dict[str, float] = {}
        self._nodes_lock = threading.Lock()

    def started(self) -> None:
        with self._starting:
            if self._ray is None:
                stack = contextlib.ExitStack()
                stack.enter_context(ray_runtime(self.address, self.build / "logs" / RAY_LOG))
                self._ray = stack  # only once Ray is up: close() then has a cluster to ask
                self.cluster_nodes |= alive_nodes()

    def close(self) -> None:
        if self._ray is not None:
            for rerun in self.reruns:  # a loss found after the unit ran again still explains its death
                self._explain(rerun)
            self.cluster_nodes |= alive_nodes()
            self._ray.close()
            self._ray = None

    def _units(self, step: Step[Item, Result], items: Sequence[Item]) -> Iterator[Result]:
        import ray

        res = step.resources
        threads = max(int(n["Resources"].get("CPU", 1)) for n in ray.nodes() if n["Alive"]) if res.cpus == "node" else None
        cpus = threads or res.cpus
        options: dict[str, Any] = {"num_cpus": cpus, "num_gpus": res.gpus, "max_retries": 0}  # deaths are retried here, per unit
        if res.memory:
            options["memory"] = res.memory
        task: Any = ray.remote(_task).options(**options)
        shared = ray.put(step)  # once, not once per unit
        # enough queued that a freed CPU never waits on the driver, few enough that 10^5 units are not all specs at once
        in_flight = max(2, int(2 * ray.cluster_resources().get("CPU", 1) / max(float(cpus), 0.01)))
        need = {"CPU": float(cpus), "GPU": float(res.gpus)}
        todo: deque[Item] = deque(items)
        later: list[tuple[float, Item]] = []  # units whose worker died, and when they may run again
        pending: dict[Any, tuple[Item, float]] = {}  # a task, its unit, and when it was submitted
        failure: BaseException | None = None
        while pending or (failure is None and (todo or later)):
            now = time.monotonic()
            if failure is None:
                todo.extendleft(item for at, item in later if at <= now)
                later = [(at, item) for at, item in later if at > now]
                while todo and len(pending) < in_flight:
                    item = todo.popleft()
                    pending[task.remote(shared, item, threads)] = (item, time.time())
            if not pending:
                self._wait_before_retry(later)
                continue
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            if not ready:
                self._stop_if_interrupted()
                self._check_capacity(need, busy=False)
                continue
            item, submitted = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except Exception as exc:
                delay = None if failure else self._worker_died(_label(step.name, self._running.stage, item), exc, submitted)
                if delay is not None:
                    later.append((time.monotonic() + delay, item))
                else:  # the units already running finish (their work stays done for the re-run); nothing more starts
                    failure = failure or unwrapped(exc, self._running.stage)
                continue
            self._capacity_ok()
            yield result
        if failure is not None:
            raise failure

    def _pool(self, step: PoolStep[Item, Result], calls: Sequence[Item]) -> Iterator[Result]:
        """The calls on a pool of actors, each taking the next call when free.

        An actor that dies (its node lost, the process killed) is replaced by a new one wherever the cluster has room,
        and only the call it had is run again; the pool shrinks to what the nodes left can hold. Its calls count deaths
        as units do (``_worker_died``).
        """
        import ray

        node_cpus = [int(n["Resources"].get("CPU", 0)) for n in _alive()]
        gpus_now = int(ray.cluster_resources().get("GPU", 0))
        workers = step.workers
        if self._note_lost_nodes() and workers != "auto":  # the workers asked for, as many as the nodes left can hold
            workers = min(int(workers), gpus_now if step.device != "cpu" and gpus_now else max(1, sum(node_cpus)))
        size, gpus, threads = plan_pool(step.device, workers, node_cpus, gpus_now)
        remote = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=0, max_task_retries=0)(_PoolActor)
        need = {"CPU": 1.0, "GPU": float(gpus)}
        todo: deque[Item] = deque(calls)
        later: list[tuple[float, Item]] = []
        starting: dict[Any, Any] = {}  # an actor's ready() call, and the actor
        idle: list[Any] = []
        busy: dict[Any, tuple[Any, Item, float]] = {}  # a call, its actor, its item, and when it was submitted
        handles: list[Any] = []

        def start() -> None:
            actor: Any = remote.remote(step, threads)
            handles.append(actor)
            starting[actor.ready.remote()] = actor

        def retire(actor: Any) -> None:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)

        for _ in range(size):
            start()
        try:
            while todo or later or busy:
                now = time.monotonic()
                todo.extendleft(item for at, item in later if at <= now)
                later = [(at, item) for at, item in later if at > now]
                while idle and todo:
                    actor, item = idle.pop(), todo.popleft()
                    busy[actor.call.remote(item)] = (actor, item, time.time())
                if not busy and not starting:
                    self._wait_before_retry(later)
                    continue
                ready, _ = ray.wait([*busy, *starting], num_returns=1, timeout=POLL_S)
                if not ready:
                    self._stop_if_interrupted()
                    self._check_capacity(need, busy=bool(busy))
                    continue
                ref = ready[0]
                if ref in starting:
                    actor = starting.pop(ref)
                    try:
                        ray.get(ref)
                        idle.append(actor)
                        if not starting:
                            self._workers_up()
                    except Exception as exc:
                        if worker_death(exc) is None:
                            raise
                        retire(actor)
                        if self._worker_died("(a new worker)", exc, time.time()) is None:  # a worker that cannot start
                            raise
                        start()
                    continue
                actor, item, submitted = busy.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:
                    if (delay := self._worker_died(_label(step.name, self._running.stage, item), exc, submitted)) is None:
                        raise
                    later.append((time.monotonic() + delay, item))
                    retire(actor)
                    start()
                    continue
                idle.append(actor)
                self._capacity_ok()
                yield result
        except Exception as exc:
            raise unwrapped(exc, self._running.stage) from None
        finally:
            for handle in handles:  # the models' memory and GPUs go back before the next stages
                retire(handle)

    # -- deaths and lost nodes --------------------------------------------------------------------

    def _worker_died(self, unit: str, exc: BaseException, submitted: float) -> float | None:
        """Note that the worker running ``unit`` died (``exc``): the seconds to wait before it runs again, or None to give up.

        ``exc`` that is not a worker death (an error of the unit's own) is None at once. A death on a node lost since
        the unit was submitted is the node's, not the unit's: the unit runs again on the nodes left. A unit that kills
        its worker on a live node (out of memory, killed) runs again ``WORKER_RETRIES`` times, each after twice the
        wait of the one before, before the build ends; retrying forever would turn such a unit into a hang.
        """
        death = worker_death(exc)
        if death is None:
            return None
        stage, now = self._running.stage, time.time()
        rerun = Rerun(stage, unit, death, submitted, now, self._node_lost_between(submitted, now))
        own = [r for r in self.reruns if r.stage == stage and r.unit == unit and self._explain(r) is None]
        if rerun.node is None and len(own) >= WORKER_RETRIES:  # before giving up, give the cluster time to find the node lost
            deadline = time.monotonic() + NODE_NOTICE_S
            while rerun.node is None and time.monotonic() < deadline:
                self.interrupted.wait(POLL_S)
                self._stop_if_interrupted()
                rerun.node = self._node_lost_between(submitted, now)
            if rerun.node is None:
                return None
        self.reruns.append(rerun)
        return RETRY_BACKOFF_S * (1 if rerun.node else 2 ** len(own))

    def _node_lost_between(self, submitted: float, died: float) -> str | None:
        """A node found lost after ``submitted`` and no later than ``NODE_NOTICE_S`` after ``died``: the likely cause of a death.

        A worker's death reaches the driver before the cluster marks its node dead (it misses a few health checks first).
        """
        return next((node for node, at in self._note_lost_nodes().items() if submitted <= at <= died + NODE_NOTICE_S), None)

    def _explain(self, rerun: Rerun) -> str | None:
        """The node lost with ``rerun``'s worker, once found (filled in)."""
        rerun.node = rerun.node or self._node_lost_between(rerun.submitted, rerun.at)
        return rerun.node

    def _note_lost_nodes(self) -> dict[str, float]:
        """The nodes of this run's cluster lost so far and when each was found lost; a new loss gets its own line above the bars."""
        with self._nodes_lock:  # stages that run at once report a loss once
            alive = alive_nodes()
            for node in sorted(self.cluster_nodes - alive - self.lost_nodes.keys()):
                self.lost_nodes[node] = time.time()
                self.progress.console.print(f"node {node[:12]} lost during stage {self._running.stage} at "
                                            f"{time.strftime('%H:%M:%S')}: its units run again on the nodes left", highlight=False)
            self.cluster_nodes |= alive  # a node added mid-build is one of ours too
            return dict(self.lost_nodes)

    def _wait_before_retry(self, later: list[tuple[float, Item]]) -> None:
        """Sleep until the first unit waiting to run again may (or the build is interrupted)."""
        self.interrupted.wait(max(0.0, min(at for at, _ in later) - time.monotonic()) if later else POLL_S)
        self._stop_if_interrupted()

    def _check_capacity(self, need: dict[str, float], busy: bool) -> None:
        """While nothing is running, whether any live node can run a unit needing ``need``; none for ``NODE_WAIT_S`` ends the build.

        Ray queues a task or actor no node can hold until one joins; the progress bar says how long the build waits.
        """
        if busy or any(all(n["Resources"].get(k, 0.0) >= v for k, v in need.items() if v) for n in _alive()):
            self._capacity_ok()
            return
        self._running.no_room_since = self._running.no_room_since or time.monotonic()
        left = NODE_WAIT_S - (time.monotonic() - self._running.no_room_since)
        want = " and ".join(f"{v:g} {k}" for k, v in need.items() if v)
        if left <= 0:
            raise MassiveDSError(f"stage {self._running.stage}: no node of the cluster has had {want} free for {NODE_WAIT_S:.0f} s "
                                 f"(nodes lost: {len(self.lost_nodes)}); finished work is kept: add nodes and re-run the same command "
                                 "to resume (MASSIVEDS_NODE_WAIT_S waits longer)")
        self._say_on_progress(f"waiting for a node with {want}: {left:.0f} s left")

    def _capacity_ok(self) -> None:
        self._running.no_room_since = 0.0


def _label(step: str, stage: str, item: WorkItem) -> str:
    """A unit as the summary names it: with its step where the stage has several."""
    return item.unit if step == stage else f"{step} {item.unit}"


def _alive() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n["Alive"]]
