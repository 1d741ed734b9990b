"""One writer at a time: the exclusive lock every change to a datastore holds from before it reads the catalog it changes.

The lock is ``flock`` on ``<datastore>/.writer.lock``. The kernel releases it when its holder exits, however it
exits (a SIGKILL included), so a dead holder never leaves a stale lock; the file stays, holding the last holder's
command, user@host, pid and start time, which a waiter reads only while someone holds the lock. Readers never take
it: every writer keeps the datastore readable at every instant (docs/reliability.md says how).

A process holds a datastore's lock once, re-entrantly: the command that took it may call another operation that
takes it, and the threads of its stages write under it. ``require_writer`` is what catalog writers call, so a
writer that forgot the lock fails at once instead of racing.

flock works on local filesystems and on NFS v4 (where the kernel maps it to a byte-range lock); it does not lock
across machines on filesystems without such locks (some FUSE mounts): keep a datastore that several machines
change on local disk or NFS.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from massiveds.core.audit import utc_now, who
from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import CATALOG, remove_temporaries

#: The lock file in a datastore's folder; never published, never in the catalog.
LOCK_FILE = ".writer.lock"
#: How long a writer waits for another by default (seconds).
DEFAULT_WAIT = 600.0
#: How often a waiter tries again (seconds).
POLL = 0.05


class DatastoreBusyError(MassiveDSError):
    """Another writer held the datastore's lock for longer than this one would wait."""


@dataclass
class _Held:
    fd: int
    depth: int


@dataclass
class WaitPolicy:
    """How a writer of this process waits: at most ``seconds``, telling ``report`` who it waits for (once per holder)."""

    seconds: float = DEFAULT_WAIT
    report: Callable[[str], None] | None = None


_held: dict[Path, _Held] = {}
_guard = threading.Lock()
_policy = WaitPolicy()


def set_wait_policy(seconds: float, report: Callable[[str], None] | None = None) -> None:
    """How the writers of this process wait for another (the command line's ``--wait``)."""
    if seconds < 0:
        raise MassiveDSError(f"--wait is how many seconds to wait for another writer, 0 or more; got {seconds}")
    _policy.seconds, _policy.report = seconds, report


def _key(root: str | Path) -> Path:
    return Path(root).resolve()


def holds_writer_lock(root: str | Path) -> bool:
    """Whether this process holds the writer lock of the datastore at ``root``."""
    with _guard:
        return _key(root) in _held


def require_writer(root: str | Path, what: str) -> None:
    """Refuse (a bug, not a user error) to change the datastore at ``root`` without its writer lock."""
    if not holds_writer_lock(root):
        raise RuntimeError(f"{what} of {root} without its writer lock: take massiveds.core.writer_lock.writer_lock first")


def holder(root: str | Path) -> str:
    """Who holds (or last held) the lock of ``root``, as written in its lock file: '<command> by user@host, pid N, since T'."""
    try:
        info = json.loads((Path(root) / LOCK_FILE).read_text())
        return f"{info['command']} by {info['by']}, pid {info['pid']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another writer (who, it has not written yet)"


@contextlib.contextmanager
def writer_lock(root: str | Path, command: str) -> Iterator[None]:
    """Hold the writer lock of the datastore at ``root`` (created if missing) for ``command``; wait as ``set_wait_policy`` says."""
    key = _key(root)
    with _guard:
        mine = _held.get(key)
        if mine is not None:
            mine.depth += 1
    if mine is None:
        mine = _acquire(key, command)
    try:
        yield
    finally:
        with _guard:
            mine.depth -= 1
            done = mine.depth == 0
            if done:
                del _held[key]
        if done:
            os.close(mine.fd)  # closing the last descriptor of the open file releases the flock


def _require_empty(out: Path) -> None:
    if out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise MassiveDSError(f"{out} exists and is not empty; choose a new --out")


@contextlib.contextmanager
def creating(out: Path, command: str) -> Iterator[None]:
    """Hold the writer lock of the datastore ``command`` creates at ``out``, which must be a new or an empty folder."""
    _require_empty(out)  # before the lock file is made: a folder of other files is left as it was
    with writer_lock(out, command):
        _require_empty(out)
        yield


P = ParamSpec("P")
R = TypeVar("R")


def locks_datastore(command: str) -> Callable[[Callable[Concatenate[Path, P], R]], Callable[Concatenate[Path, P], R]]:
    """Run an operation whose first argument is a datastore folder under that datastore's writer lock, as ``command``."""

    def wrap(operation: Callable[Concatenate[Path, P], R]) -> Callable[Concatenate[Path, P], R]:
        @functools.wraps(operation)
        def locked(root: Path, /, *args: P.args, **kwargs: P.kwargs) -> R:
            with writer_lock(root, command):
                return operation(root, *args, **kwargs)

        return locked

    return wrap


def _acquire(key: Path, command: str) -> _Held:
    key.mkdir(parents=True, exist_ok=True)
    fd = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        _wait_for(fd, key, command)
        info = json.dumps({"command": command, "by": who(), "pid": os.getpid(), "since": utc_now()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    if (key / CATALOG).is_file():
        remove_temporaries(key)  # a killed writer's half-written files: no writer works here but us
    held = _Held(fd, 1)
    with _guard:
        _held[key] = held
    return held


def _wait_for(fd: int, root: Path, command: str) -> None:
    """Take the flock on ``fd``, waiting at most the policy's seconds; report each new holder waited for."""
    deadline = time.monotonic() + _policy.seconds
    reported = None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        now = holder(root)
        if time.monotonic() >= deadline:
            raise DatastoreBusyError(f"{root} is being changed by {now}; {command} waited {_policy.seconds:g} s: run it again "
                                     "when that is done, or give --wait more seconds")
        if now != reported and _policy.report is not None:
            _policy.report(f"{command}: waiting for {now}")
        reported = now
        time.sleep(POLL)
