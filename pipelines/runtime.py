"""Start (or join) Ray for a build and run work units on it as Ray tasks."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import read_json, write_json

#: Environment every Ray worker gets: no tokenizer thread pools fighting Ray's own parallelism.
WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false"}
#: Key of a unit's result (and marker) naming the Ray node that ran it.
NODE_KEY = "node"
PASS_THROUGH_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "TRANSFORMERS_OFFLINE", "SENTENCE_TRANSFORMERS_HOME", "OMP_NUM_THREADS",
                    "MASSIVEDS_WORKER_EXIT")
#: A task whose worker process dies (killed, out of memory, node lost) is run again this many times, and an
#: actor is restarted this many times, before the build stops with an error (a re-run then resumes).
#: Ray Data's own default is to retry forever, which turns a unit that always kills its worker into a hang.
#: ``MASSIVEDS_WORKER_RETRIES`` sets it (e.g. higher on preemptible nodes).
WORKER_RETRIES = int(os.environ.get("MASSIVEDS_WORKER_RETRIES", "3"))
#: Ray's errors for a worker, actor, node or object lost, rather than an exception raised by our code.
WORKER_DEATHS = ("ActorDiedError", "RayActorError", "WorkerCrashedError", "OutOfMemoryError", "NodeDiedError", "ObjectLostError")


def worker_death(exc: BaseException) -> str | None:
    """The name of the Ray worker-death error in ``exc``'s chain, or None when it is something else."""
    seen: BaseException | None = exc
    while seen is not None:
        if any(cls.__name__ in WORKER_DEATHS for cls in type(seen).__mro__):
            return type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    return None


def remote_user_error(exc: BaseException) -> MassiveDSError | None:
    """Our own one-line error when ``exc`` is one raised inside a Ray task or actor (Ray wraps it with its traceback)."""
    cause = getattr(exc, "cause", None)  # a RayTaskError keeps the exception the remote code raised
    return cause if isinstance(exc, MassiveDSError) and isinstance(cause, MassiveDSError) else None


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
        ray.init(
            address=address or os.environ.get("RAY_ADDRESS") or "local",
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
            runtime_env={"env_vars": env},
        )
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def current_node() -> str | None:
    """The id of the Ray node this code runs on, or None outside Ray (``--engine local``, tests)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def _run_unit(item: dict[str, Any], step: str, fn: Callable[..., dict[str, Any]], kwargs: dict[str, Any]) -> dict[str, Any]:
    result = fn(item, **kwargs) | {NODE_KEY: current_node()}
    exit_worker_if_asked(step)
    return result


def as_completed(refs: Iterable[Any], in_flight: int) -> Iterator[Any]:
    """The results of Ray tasks as each finishes, submitting (iterating ``refs``) no more than ``in_flight`` ahead.

    The driver blocks in ``ray.wait`` between results, so it takes no CPU from the units while they run.
    """
    import ray

    pending: list[Any] = []
    for ref in refs:
        pending.append(ref)
        if len(pending) >= in_flight:
            ready, pending = ray.wait(pending, num_returns=1)
            yield ray.get(ready[0])
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        yield ray.get(ready[0])


def run_units(
    name: str,
    fn: Callable[..., dict[str, Any]],
    items: list[dict[str, Any]],
    kwargs: dict[str, Any],
    markers: Path,
    on_result: Callable[[dict[str, Any]], None],
    *,
    engine: str = "ray",
    num_cpus: float = 1,
    num_gpus: float = 0,
    memory: int | None = None,
) -> list[dict[str, Any]]:
    """Run ``fn(item, **kwargs)`` for every item, skipping items already done.

    ``engine="ray"`` runs each item as a Ray task; ``"local"`` calls them one after the other in
    this process (for debugging, and to measure Ray's overhead). Each item has a ``unit`` name; its
    result is saved as ``markers/<unit>.json`` once it succeeds, so a re-run after a crash only does
    the units that had not finished. On Ray a result also names the node that ran it (``NODE_KEY``).
    """

    def done(result: dict[str, Any]) -> None:
        write_json(markers / f"{result['unit']}.json", result)
        results[result["unit"]] = result
        on_result(result)
        crash_if_asked(name, len(results))

    results: dict[str, dict[str, Any]] = {}
    todo = []
    for item in items:
        marker = markers / f"{item['unit']}.json"
        if marker.is_file():
            results[item["unit"]] = read_json(marker)
            on_result(results[item["unit"]])
        else:
            todo.append(item)
    if todo and engine == "local":
        for item in todo:
            done(fn(item, **kwargs))
    elif todo:
        import ray

        options: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_retries": WORKER_RETRIES}
        if memory:
            options["memory"] = memory
        task = ray.remote(_run_unit).options(**options)
        shared = ray.put(kwargs)  # once, not once per unit
        # enough queued that a freed CPU never waits on the driver, few enough that 10^5 units are not all specs at once
        in_flight = max(2, int(2 * ray.cluster_resources().get("CPU", 1) / max(num_cpus, 0.01)))
        for result in as_completed((task.remote(item, name, fn, shared) for item in todo), in_flight):
            done(result)
    return [results[i["unit"]] for i in items]


#: Fault injection for the crash tests: ``MASSIVEDS_CRASH_AFTER=<step>:<n>`` kills the build's whole process
#: group (SIGKILL, as a machine failure would) right after the n-th unit of that step is recorded.
CRASH_AFTER = "MASSIVEDS_CRASH_AFTER"


def crash_if_asked(step: str, units_done: int) -> None:
    """Die here if ``MASSIVEDS_CRASH_AFTER`` names this step and count (a no-op otherwise)."""
    if os.environ.get(CRASH_AFTER) == f"{step}:{units_done}":
        os.killpg(os.getpgid(0), signal.SIGKILL)


def count_nodes(nodes: dict[str, int], node: str | None, n: int = 1) -> None:
    """Add ``n`` to ``nodes[node]`` (units or passages a Ray node did); nothing outside Ray."""
    if node is not None:
        nodes[node] = nodes.get(node, 0) + n


#: Fault injection for the worker-death tests: ``MASSIVEDS_WORKER_EXIT=<step>[,<step>...]:<folder>`` makes the
#: first worker process that finishes a unit (or an embedding batch) of each named step exit at once, before
#: returning its result, as a worker killed by the OS would. ``<folder>/<step>`` (holding the worker's pid)
#: records the death, so the retried unit runs normally. Under ``--engine local`` the worker is the build itself.
WORKER_EXIT = "MASSIVEDS_WORKER_EXIT"


def exit_worker_if_asked(step: str) -> None:
    """Exit this process if ``MASSIVEDS_WORKER_EXIT`` names this step and no worker has died in it yet (a no-op otherwise)."""
    steps, _, folder = os.environ.get(WORKER_EXIT, "").partition(":")
    if step not in steps.split(",") or not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(Path(folder) / step, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # only one worker wins, even in parallel
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os._exit(1)


class Stopwatch:
    """Seconds since creation."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
