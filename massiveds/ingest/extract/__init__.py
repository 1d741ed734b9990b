"""Bytes to documents: one module per input format, all yielding the same raw-record stream (``types.RawRecord``).

Which module reads which format is ``massiveds.core.formats.FORMATS``; ``reader_for`` imports a reader
on first use.
"""

from __future__ import annotations

from massiveds.core.formats import FORMATS, load
from massiveds.ingest.extract.types import Reader


def reader_for(fmt: str) -> Reader:
    """The reader of a manifest format (one with a reader: every format but ``hf``, which arrives as Parquet)."""
    target = FORMATS[fmt].reader
    if target is None:
        raise ValueError(f"format {fmt!r} has no file reader")
    reader: Reader = load(target)
    return reader
