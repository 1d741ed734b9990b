"""JSON Lines input, plain or compressed (.zst, .gz, .bz2, .xz: inferred from the name), streamed."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from typing import IO

import fsspec
import zstandard

from massiveds.extract.records import RawRecord


@contextlib.contextmanager
def open_stream(path: str) -> Iterator[IO[bytes]]:
    """A buffered, line-iterable binary stream of ``path``, decompressed according to its suffix."""
    if path.endswith((".zst", ".zstd")):
        with fsspec.open(path, "rb") as raw:
            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            yield io.BufferedReader(reader, buffer_size=1 << 20)  # type: ignore[arg-type]
    else:
        with fsspec.open(path, "rb", compression="infer") as f:
            yield f


def read_jsonl(path: str) -> Iterator[RawRecord]:
    """Yield one record per non-blank line; a line that is not a JSON object becomes an error record."""
    with open_stream(path) as f:
        for row, raw in enumerate(f):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield RawRecord(row, None, "line is not valid UTF-8")
                continue
            except json.JSONDecodeError as exc:
                yield RawRecord(row, None, f"invalid JSON: {exc.msg}")
                continue
            if not isinstance(obj, dict):
                yield RawRecord(row, None, f"JSON value is a {type(obj).__name__}, not an object")
                continue
            yield RawRecord(row, obj)
