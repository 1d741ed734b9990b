"""Bytes to documents: one module per input format, all yielding the same raw-record stream."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from massiveds.extract.jsonl import read_jsonl
from massiveds.extract.parquet import read_parquet
from massiveds.extract.records import RawRecord

Reader = Callable[[str], Iterator[RawRecord]]

#: Format name (as in the manifest) to its reader.
READERS: dict[str, Reader] = {"jsonl": read_jsonl, "parquet": read_parquet}


def reader_for(fmt: str) -> Reader:
    """The reader of a manifest format."""
    return READERS[fmt]
