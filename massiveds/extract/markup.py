"""Markup to plain text: one pure function per markup, shared by the file readers and the
``markup:`` option of tabular sources (jsonl / parquet rows whose text field holds raw markup).

The converters live in their format modules (``html``, ``wikitext``, ``latex``, ``text``) and are
imported on first use, so reading plain JSONL never imports trafilatura or mwparserfromhell.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Extracted:
    """The plain text of one marked-up document, with the title and URL found in the markup."""

    text: str
    title: str | None = None
    url: str | None = None


def convert(markup: str, text: str, *, html_extractor: str = "trafilatura") -> Extracted:
    """Convert ``text`` written in ``markup`` (html, wikitext, latex, gutenberg or none) to plain text."""
    if markup == "none":
        return Extracted(text)
    if markup == "html":
        from massiveds.extract.html import html_to_text

        return html_to_text(text, extractor=html_extractor)
    if markup == "wikitext":
        from massiveds.extract.wikitext import wikitext_to_text

        return Extracted(wikitext_to_text(text))
    if markup == "latex":
        from massiveds.extract.latex import latex_to_text

        return latex_to_text(text)
    if markup == "gutenberg":
        from massiveds.extract.text import strip_gutenberg

        return Extracted(strip_gutenberg(text))
    raise ValueError(f"unknown markup {markup!r}")
