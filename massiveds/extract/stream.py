"""Byte streams of input files, decompressed by suffix, with truncation detected rather than ignored."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

import fsspec
import zstandard


class TruncatedInput(OSError):
    """A compressed stream that ends before its frame does (a cut download, a partial copy)."""


def _zstd_chunks(raw: IO[bytes], chunk: int = 1 << 20) -> Iterator[bytes]:
    """Decompress a (possibly multi-frame) zstd stream, raising TruncatedInput if it ends mid-frame."""
    dobj = zstandard.ZstdDecompressor().decompressobj()
    frame_open = False
    while data := raw.read(chunk):
        while data:
            out = dobj.decompress(data)
            frame_open = not dobj.eof
            if out:
                yield out
            data = dobj.unused_data if dobj.eof else b""
            if dobj.eof:
                dobj = zstandard.ZstdDecompressor().decompressobj()
                frame_open = False
    if frame_open:
        raise TruncatedInput("zstd stream ends mid-frame (truncated file)")


def iter_lines(path: str) -> Iterator[bytes]:
    """Lines of ``path`` as bytes, decompressed by suffix (.zst, .gz, .bz2, .xz); truncation raises."""
    if not path.endswith((".zst", ".zstd")):
        with fsspec.open(path, "rb", compression="infer") as f:
            yield from f
        return
    with fsspec.open(path, "rb") as raw:
        pending: list[bytes] = []  # pieces of a line that spans blocks (joined once, not per block)
        for block in _zstd_chunks(raw):
            if b"\n" not in block:
                pending.append(block)
                continue
            lines = block.split(b"\n")
            pending.append(lines[0])
            yield b"".join(pending) + b"\n"
            yield from (line + b"\n" for line in lines[1:-1])
            pending = [lines[-1]]
        if tail := b"".join(pending):
            yield tail
