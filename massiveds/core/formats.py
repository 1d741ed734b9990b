"""The registry of input formats and markups: the one list the manifest validates against and extraction dispatches on.

Each entry names its implementation as ``"module:function"``, imported on first use: the manifest
(this layer) never imports the extractors, and reading plain JSONL never imports trafilatura or
mwparserfromhell. A new input format is one module in ``massiveds/ingest/extract/`` with a reader
``(path, limits) -> Iterator[RawRecord]`` plus one ``InputFormat`` entry here; a new markup is a
converter ``(text, html_extractor) -> Extracted`` plus one ``Markup`` entry.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

EXTRACT = "massiveds.ingest.extract"


@dataclass(frozen=True)
class InputFormat:
    """One value of a source's ``format``."""

    name: str
    help: str
    #: ``module:function`` of the reader; None for ``hf``, which the download stage turns into Parquet parts.
    reader: str | None
    #: The markup its text is in unless the source says otherwise.
    markup: str = "none"
    #: Read by a file reader of ours: records always carry ``text``, ``title`` and ``url``, mapped by default.
    file_records: bool = False
    #: A directory (a LaTeX project, a code repository) is one input, not a folder of inputs.
    directories: bool = False


@dataclass(frozen=True)
class Markup:
    """One value of a source's ``markup``: what the text field holds, turned into plain text at extraction."""

    name: str
    help: str
    #: ``module:function`` of the converter; None when the text is used as is.
    converter: str | None


FORMATS: dict[str, InputFormat] = {f.name: f for f in (
    InputFormat("jsonl", "JSON lines, plain or compressed (.zst, .gz, .bz2, .xz, .zip), one record per line",
                f"{EXTRACT}.jsonl:read_jsonl"),
    InputFormat("parquet", "Parquet files, one record per row", f"{EXTRACT}.parquet:read_parquet"),
    InputFormat("hf", "a Hugging Face dataset (hub or save_to_disk folder), materialised as Parquet by the download stage", None),
    InputFormat("html", "HTML pages, one document per file", f"{EXTRACT}.html:read_html", markup="html", file_records=True),
    InputFormat("warc", "WARC archives, one document per HTML response", f"{EXTRACT}.warc:read_warc", markup="html",
                file_records=True),
    InputFormat("wikitext", "MediaWiki XML dumps (pages-articles.xml[.bz2]), one document per article",
                f"{EXTRACT}.wikitext:read_wikitext", markup="wikitext", file_records=True),
    InputFormat("latex", "LaTeX sources: a .tex/.Rnw file, a project folder or an arXiv-style tarball", f"{EXTRACT}.latex:read_latex",
                markup="latex", file_records=True, directories=True),
    InputFormat("code", "source code: a repository folder (or files of a glob), one document per source file",
                f"{EXTRACT}.code:read_code", file_records=True, directories=True),
    InputFormat("text", "plain text files (books, dumps), long files cut into parts at paragraph breaks", f"{EXTRACT}.text:read_text",
                file_records=True),
)}

MARKUPS: dict[str, Markup] = {m.name: m for m in (
    Markup("none", "plain text, used as is", None),
    Markup("html", "HTML: main text without boilerplate (trafilatura or resiliparse), title and canonical URL",
           f"{EXTRACT}.html:from_markup"),
    Markup("wikitext", "MediaWiki markup: templates, tables and references removed", f"{EXTRACT}.wikitext:from_markup"),
    Markup("latex", "LaTeX source: text with math kept as LaTeX, the title from \\title", f"{EXTRACT}.latex:from_markup"),
    Markup("gutenberg", "a Project Gutenberg text: header and licence footer removed", f"{EXTRACT}.text:from_markup"),
)}


@functools.cache
def load(target: str) -> Callable[..., Any]:
    """The function ``"module:function"`` names (imported once)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
