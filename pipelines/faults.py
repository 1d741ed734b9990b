"""Fault injection for the crash and worker-death tests; the executors call these hooks, never the stages.

``MASSIVEDS_CRASH_AFTER=<step>:<n>`` kills the build's whole process group (SIGKILL, as a machine
failure would) right after the n-th unit of that step is recorded (for ``embed``: its n-th call;
``catalog:1``: everything but ``datastore.json`` written); ``<stage>-ran:1``, once the stage's work is
done but before its completion marker (``commit-ran:1``: an append's catalog written, its folder still there).

``MASSIVEDS_WORKER_EXIT=<step>[,<step>...]:<folder>`` makes the first worker process that finishes a
unit (or an embedding call) of each named step exit at once, before returning its result, as a
worker killed by the OS would. ``<folder>/<step>`` (holding the worker's pid) records the death, so
the retried unit runs normally. Under ``--engine local`` the worker is the build itself.

``MASSIVEDS_STALL_ON_NODE=<step>[,<step>...]:<node id>:<folder>`` makes every unit (or embedding call) of the
named steps that runs on that Ray node write ``<folder>/<step>`` and then wait, never finishing: a test removes
the node while the unit runs, as a machine lost mid-unit. Units of those steps on other nodes wait (up to
``STALL_WAIT_S``) until one has stalled there, so that fast units cannot all finish on the head before that node's
first worker starts.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

CRASH_AFTER = "MASSIVEDS_CRASH_AFTER"
WORKER_EXIT = "MASSIVEDS_WORKER_EXIT"
STALL_ON_NODE = "MASSIVEDS_STALL_ON_NODE"
STALL_WAIT_S = 300


def crash_if_asked(step: str, units_done: int) -> None:
    """Die here if ``MASSIVEDS_CRASH_AFTER`` names this step and count (a no-op otherwise)."""
    if os.environ.get(CRASH_AFTER) == f"{step}:{units_done}":
        os.killpg(os.getpgid(0), signal.SIGKILL)


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


def stall_if_asked(step: str, node: str | None) -> None:
    """Never return if ``MASSIVEDS_STALL_ON_NODE`` names this step and node; on another node, wait for that stall."""
    steps, _, rest = os.environ.get(STALL_ON_NODE, "").partition(":")
    on, _, folder = rest.partition(":")
    if step not in steps.split(",") or not folder:
        return
    stalled = Path(folder) / step
    if node is not None and node != on:  # holding this node's CPU sends the step's next units to the named node
        deadline = time.monotonic() + STALL_WAIT_S
        while not stalled.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        return
    stalled.parent.mkdir(parents=True, exist_ok=True)
    stalled.write_text(str(os.getpid()))
    while True:
        time.sleep(60)
