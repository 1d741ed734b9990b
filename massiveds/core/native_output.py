"""Where native code's output goes: C and C++ libraries (FAISS, Ray's core, gRPC) write to file descriptors 1
and 2 below Python, so redirecting ``sys.stdout`` or ``sys.stderr`` does not reach them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator
from pathlib import Path

_FD = {"stdout": 1, "stderr": 2}


def _flush_c_stdio() -> None:
    """Flush C's stdio buffers (printf to a pipe or file is buffered), so lines written so far land where they were meant."""
    ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def native_output_to(target: Path | str, stream: str = "stderr") -> Iterator[None]:
    """While it lasts, what native code writes to ``stream`` ("stdout" or "stderr") is appended to ``target``
    (``os.devnull`` drops it), and Python's ``sys.stdout`` / ``sys.stderr`` still write where they did.
    """
    fd, python_stream = _FD[stream], getattr(sys, stream)
    python_stream.flush()
    _flush_c_stdio()
    original = os.dup(fd)
    with open(target, "ab") as sink:
        os.dup2(sink.fileno(), fd)
    encoding = getattr(python_stream, "encoding", None) or "utf-8"
    setattr(sys, stream, open(original, "w", buffering=1, encoding=encoding, errors="backslashreplace", closefd=False))  # noqa: SIM115
    try:
        yield
    finally:
        getattr(sys, stream).flush()
        _flush_c_stdio()
        setattr(sys, stream, python_stream)
        os.dup2(original, fd)
        os.close(original)
