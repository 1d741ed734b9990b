"""Bytes to documents: one module per input format, all yielding the same raw-record stream."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from massiveds.extract.code import read_code
from massiveds.extract.html import read_html
from massiveds.extract.jsonl import read_jsonl
from massiveds.extract.latex import read_latex
from massiveds.extract.parquet import read_parquet
from massiveds.extract.records import RawRecord
from massiveds.extract.stream import Limits
from massiveds.extract.text import read_text
from massiveds.extract.warc import read_warc
from massiveds.extract.wikitext import read_wikitext

#: A reader: (local path, limits) -> the file's raw records, in file order.
Reader = Callable[[str, Limits], Iterator[RawRecord]]

#: Format name (as in the manifest) to its reader.
READERS: dict[str, Reader] = {
    "jsonl": read_jsonl,
    "parquet": read_parquet,
    "html": read_html,
    "warc": read_warc,
    "wikitext": read_wikitext,
    "latex": read_latex,
    "code": read_code,
    "text": read_text,
}


def reader_for(fmt: str) -> Reader:
    """The reader of a manifest format."""
    return READERS[fmt]
