"""Byte streams of input files: decompressed, bounded, and cut into lines of bounded size.

Compression is inferred from the file name (``.zst``, ``.gz``, ``.bz2``, ``.xz``, ``.zip``: every
member in order) or, for formats that name nothing (arXiv sources), from the first bytes. Whatever
goes wrong raises an ``InputError`` whose ``reason`` becomes the drop reason of the rest of the file:
a stream that ends mid-frame (``corrupt_file``), one that expands past ``Limits.max_expansion_ratio``
times its size (``decompression_bomb``), text input with NUL bytes at its start (``binary_file``).
A line longer than ``Limits.max_record_bytes`` is never held whole: it comes out in pieces.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

import fsspec
import zstandard

from massiveds.core.manifest import Filters

#: Decompressed bytes read per block.
BLOCK = 1 << 20
#: Compressed bytes handed to the zstd decoder per call (see ``_zstd_chunks``).
ZSTD_STEP = 512
#: A compressed input is checked against the expansion ratio only once it has expanded past this
#: (a small file of zeros is harmless, whatever its ratio).
EXPANSION_FLOOR = 64 << 20
#: Text input whose first bytes hold a NUL byte is binary (git's rule): JSON and text never hold one.
SNIFF_BYTES = 8192

_SUFFIXES = {".zst": "zstd", ".zstd": "zstd", ".tzst": "zstd", ".gz": "gzip", ".tgz": "gzip", ".bz2": "bz2", ".xz": "xz",
             ".zip": "zip"}
_MAGIC = {b"\x28\xb5\x2f\xfd": "zstd", b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz", b"PK\x03\x04": "zip"}


class InputError(OSError):
    """An input that cannot be read to its end; ``reason`` is the drop reason recorded for the rest of it."""

    reason = "corrupt_file"


class TruncatedInput(InputError):
    """A compressed stream that ends before its frame does (a cut download, a partial copy)."""


class ExpansionLimit(InputError):
    """A compressed input that expands far beyond any real text (a zip or tar bomb)."""

    reason = "decompression_bomb"


class BinaryInput(InputError):
    """Text input (JSON lines, plain text) that holds NUL bytes at its start: binary data."""

    reason = "binary_file"


@dataclass(frozen=True)
class Limits:
    """What one input may cost: the largest record read, and how far a compressed file may expand (None: no bound)."""

    max_record_bytes: int | None
    max_expansion_ratio: float | None

    @classmethod
    def of(cls, filters: Filters) -> Limits:
        """The limits a manifest's ``filters:`` section sets."""
        return cls(filters.max_record_bytes, filters.max_expansion_ratio)


#: The limits of a manifest that sets none (``Filters``' defaults).
DEFAULT_LIMITS = Limits.of(Filters())


@dataclass(frozen=True)
class LongLine:
    """A line longer than ``max_record_bytes``, skipped without being held: its length in bytes."""

    nbytes: int


def compression_of(path: str, head: bytes | None = None) -> str | None:
    """The compression of ``path``: by its first bytes when ``head`` is given, else by its suffix."""
    if head is not None:
        return next((name for magic, name in _MAGIC.items() if head.startswith(magic)), None)
    lower = path.lower()
    return next((name for suffix, name in _SUFFIXES.items() if lower.endswith(suffix)), None)


def _blocks_of(data: bytes) -> Iterator[bytes]:
    if len(data) <= BLOCK:
        yield data
        return
    for start in range(0, len(data), BLOCK):
        yield data[start : start + BLOCK]


def _zstd_chunks(raw: IO[bytes], chunk: int = BLOCK) -> Iterator[bytes]:
    """Decompress a (possibly multi-frame) zstd stream in blocks of about ``BLOCK`` bytes, raising TruncatedInput
    if it ends mid-frame.

    Input goes in ``ZSTD_STEP``-byte steps: a zstd block of 4 bytes can stand for 128 KiB, so one call
    never produces more than ``ZSTD_STEP / 4 * 128 KiB`` (16 MiB), however hostile the file.
    """
    dobj = zstandard.ZstdDecompressor().decompressobj()
    frame_open = False
    out: list[bytes] = []
    size = 0
    while data := raw.read(chunk):
        view = memoryview(data)
        for start in range(0, len(view), ZSTD_STEP):
            step = view[start : start + ZSTD_STEP]
            while step:
                got = dobj.decompress(step)
                frame_open = not dobj.eof
                if got:
                    out.append(got)
                    size += len(got)
                step = memoryview(dobj.unused_data) if dobj.eof else memoryview(b"")
                if dobj.eof:
                    dobj = zstandard.ZstdDecompressor().decompressobj()
                    frame_open = False
            if size >= BLOCK:
                yield from _blocks_of(b"".join(out))
                out, size = [], 0
    if out:
        yield from _blocks_of(b"".join(out))
    if frame_open:
        raise TruncatedInput("zstd stream ends mid-frame (truncated file)")


def _read_blocks(f: IO[bytes] | io.BufferedIOBase) -> Iterator[bytes]:
    while block := f.read(BLOCK):
        yield block


def _decompressed(raw: IO[bytes], compression: str | None) -> Iterator[bytes]:
    if compression == "zstd":
        yield from _zstd_chunks(raw)
    elif compression == "zip":
        with zipfile.ZipFile(raw) as archive:
            for info in archive.infolist():
                if not info.is_dir():
                    with archive.open(info) as member:
                        yield from _read_blocks(member)
    elif compression is None:
        yield from _read_blocks(raw)
    elif compression == "gzip":
        with gzip.GzipFile(fileobj=raw) as f:
            yield from _read_blocks(f)
    else:
        with (bz2.BZ2File if compression == "bz2" else lzma.LZMAFile)(raw) as f:
            yield from _read_blocks(f)


def iter_blocks(path: str, limits: Limits = DEFAULT_LIMITS, *, by_content: bool = False) -> Iterator[bytes]:
    """The decompressed bytes of ``path`` in blocks; raises ExpansionLimit when they outgrow the file's size times the ratio.

    ``by_content`` infers the compression from the first bytes instead of the name.
    """
    fs, local = fsspec.core.url_to_fs(path)
    size = fs.size(local)
    with fs.open(local, "rb") as raw:
        if by_content:
            compression = compression_of(path, raw.read(8))
            raw.seek(0)
        else:
            compression = compression_of(path)
        ceiling = None
        if compression is not None and limits.max_expansion_ratio is not None:
            ceiling = max(EXPANSION_FLOOR, int(limits.max_expansion_ratio * size))
        total = 0
        for block in _decompressed(raw, compression):
            total += len(block)
            if ceiling is not None and total > ceiling:
                raise ExpansionLimit(
                    f"{compression} stream of {size:,} bytes expands past {ceiling:,} bytes "
                    f"(max_expansion_ratio {limits.max_expansion_ratio:g}): stopped there"
                )
            yield block


class _BlockReader(io.RawIOBase):
    """A readable file over an iterator of byte blocks (for readers that want a file: tar, HTML, XML)."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks
        self._rest = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not len(self._rest):
            block = next(self._blocks, None)
            if block is None:
                return 0
            self._rest = memoryview(block)
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._blocks.close()  # type: ignore[attr-defined]  # a generator: closes the file under it
        super().close()


def open_input(path: str, limits: Limits = DEFAULT_LIMITS, *, by_content: bool = False) -> io.BufferedReader:
    """``iter_blocks`` as a buffered binary file (decompressed, bounded); close it when done."""
    return io.BufferedReader(_BlockReader(iter_blocks(path, limits, by_content=by_content)), buffer_size=BLOCK)


def _sniffed(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """Pass text blocks through, raising BinaryInput if the first bytes hold a NUL byte."""
    first = True
    for block in blocks:
        if first and (nul := block.find(b"\x00", 0, SNIFF_BYTES)) >= 0:
            raise BinaryInput(f"NUL byte at offset {nul}: binary data, not text")
        first = False
        yield block


def _cut(data: bytes, size: int, ends_line: bool) -> Iterator[tuple[bytes, bool]]:
    """``data`` in slices of at most ``size`` bytes, the last one marked ``ends_line``."""
    for start in range(0, len(data), size):
        yield data[start : start + size], ends_line and start + size >= len(data)


def line_pieces(blocks: Iterable[bytes], max_bytes: int) -> Iterator[tuple[bytes, bool]]:
    """The lines of a byte stream as ``(piece, ends_line)``.

    A line of at most ``max_bytes`` (its newline included) comes whole; a longer one comes in pieces
    of at most ``max_bytes``, all but the last marked unfinished, handed out as they are read: memory
    stays at one block plus ``max_bytes``, however long the line.
    """
    pending: list[bytes] = []  # the start of the current line, while it may still fit
    size = 0
    spilling = False  # the current line is over max_bytes: its bytes go out as they come
    for block in blocks:
        *complete, tail = block.split(b"\n")
        for part in complete:
            line = part + b"\n"
            if spilling:
                yield from _cut(line, max_bytes, True)
                spilling = False
            elif pending and size + len(line) <= max_bytes:
                yield b"".join(pending) + line, True
            elif pending:
                for start in pending:
                    yield from _cut(start, max_bytes, False)
                yield from _cut(line, max_bytes, True)
            elif len(line) <= max_bytes:
                yield line, True
            else:
                yield from _cut(line, max_bytes, True)
            pending, size = [], 0
        if not tail:
            continue
        if spilling:
            yield from _cut(tail, max_bytes, False)
            continue
        pending.append(tail)
        size += len(tail)
        if size > max_bytes:
            for start in pending:
                yield from _cut(start, max_bytes, False)
            pending, size, spilling = [], 0, True
    if pending:
        yield b"".join(pending), True
    elif spilling:
        yield b"", True


def iter_lines(path: str, limits: Limits = DEFAULT_LIMITS) -> Iterator[bytes | LongLine]:
    """Lines of a text file as bytes, decompressed by suffix; a line over ``max_record_bytes`` comes as a LongLine."""
    longest = limits.max_record_bytes or 1 << 62
    skipped = 0
    for piece, ends in line_pieces(_sniffed(iter_blocks(path, limits)), longest):
        if skipped or not ends:
            skipped += len(piece)
            if ends:
                yield LongLine(skipped)
                skipped = 0
            continue
        yield piece


def iter_text_pieces(path: str, limits: Limits, piece_bytes: int) -> Iterator[bytes]:
    """Lines of a text file, decompressed by suffix, a long line cut into pieces of ``piece_bytes`` (plain text's parts)."""
    for piece, _ in line_pieces(_sniffed(iter_blocks(path, limits)), piece_bytes):
        if piece:  # the empty end mark of a long last line
            yield piece
