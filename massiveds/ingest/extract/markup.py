"""Markup to plain text, shared by the file readers and the ``markup:`` option of tabular sources (rows whose text field
holds raw markup): the converter of each markup is named in ``massiveds.core.formats.MARKUPS`` and imported on first use.
"""

from __future__ import annotations

from massiveds.core.formats import MARKUPS, load
from massiveds.ingest.extract.types import Extracted


def convert(markup: str, text: str, *, html_extractor: str = "trafilatura") -> Extracted:
    """Convert ``text`` written in ``markup`` (a ``MARKUPS`` name) to plain text."""
    kind = MARKUPS.get(markup)
    if kind is None:
        raise ValueError(f"unknown markup {markup!r}")
    if kind.converter is None:
        return Extracted(text)
    result: Extracted = load(kind.converter)(text, html_extractor)
    return result
