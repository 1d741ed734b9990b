"""The values extraction passes around, in a leaf module that every reader and converter imports (and that imports none of them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from massiveds.ingest.extract.stream import Limits


@dataclass(frozen=True)
class RawRecord:
    """One row of an input file: its 0-based position and either its fields or why it is not a document.

    A record without fields becomes a dropped entry with ``reason`` (``unreadable`` unless the reader
    says more, e.g. ``redirect``, ``binary_file``) and ``error`` as its detail.
    """

    row: int
    fields: dict[str, Any] | None
    error: str | None = None
    reason: str = "unreadable"


@dataclass(frozen=True)
class Extracted:
    """The plain text of one marked-up document, with the title and URL found in the markup."""

    text: str
    title: str | None = None
    url: str | None = None


#: A reader: (local path, limits) -> the file's raw records, in file order.
Reader = Callable[[str, "Limits"], Iterator[RawRecord]]
