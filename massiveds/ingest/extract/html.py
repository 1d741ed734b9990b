"""HTML pages: main-text extraction (trafilatura by default, resiliparse as an option), title and
canonical URL; the ``html`` reader yields one record per file.

Boilerplate (navigation, headers, footers, scripts, styles, comments sections) is removed by the
extractor; the page's title comes from ``og:title`` or ``<title>``, its URL from
``<link rel=canonical>`` or ``og:url``.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator

import lxml.html
from lxml import etree

from massiveds.ingest.extract.stream import DEFAULT_LIMITS, Limits, open_input
from massiveds.ingest.extract.types import Extracted, RawRecord

_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_PERMALINK = re.compile(r"\s*¶[ \t]*$", re.MULTILINE)  # Sphinx/MkDocs heading anchors
_BLANKS = re.compile(r"\n{3,}")


def decode_html(raw: bytes, declared: str | None = None) -> str:
    """Decode page bytes: the declared (HTTP) charset, else a ``<meta charset>``, else UTF-8 with replacement."""
    match = _CHARSET.search(raw[:4096])
    for name in (declared, match.group(1).decode("ascii") if match else None, "utf-8"):
        if not name:
            continue
        try:
            return raw.decode(codecs.lookup(name).name)
        except (LookupError, UnicodeDecodeError):
            continue
    return raw.decode("utf-8", errors="replace")


def _parse(html: str) -> tuple[lxml.html.HtmlElement | None, str | None]:
    """The page's lxml tree (None if it has none) and the parser's resource-limit error, if it hit one."""
    parser = lxml.html.HTMLParser()
    try:
        root = lxml.html.fromstring(html.encode("utf-8"), parser=parser)
    except (etree.ParserError, ValueError):
        return None, None
    limit = next((e.message for e in parser.error_log if e.type_name == "ERR_RESOURCE_LIMIT"), None)
    return root, limit


def page_metadata(root: lxml.html.HtmlElement | None) -> tuple[str | None, str | None]:
    """The page's (title, canonical URL) from its head; ``None`` where absent."""
    if root is None:
        return None, None

    def first(xpath: str) -> str | None:
        for value in root.xpath(xpath):
            if isinstance(value, str) and value.strip():
                return " ".join(value.split())
        return None

    title = first("//meta[@property='og:title']/@content") or first("//title/text()")
    url = first("//link[translate(@rel,'CANONICAL','canonical')='canonical']/@href") or first("//meta[@property='og:url']/@content")
    return title, url


def _trafilatura(html: str) -> str:
    import trafilatura

    return trafilatura.extract(html, include_comments=False, include_tables=True, deduplicate=False) or ""


def _resiliparse(html: str) -> str:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    return extract_plain_text(HTMLTree.parse(html), main_content=True, alt_texts=False, links=False) or ""


_EXTRACTORS = {"trafilatura": _trafilatura, "resiliparse": _resiliparse}


def html_to_text(html: str, extractor: str = "trafilatura") -> Extracted:
    """The main text of a page (boilerplate, scripts and navigation removed), its title and canonical URL.

    A page the HTML parser gives up on (nested deeper than libxml2's 256 levels) raises ValueError:
    its text would be cut silently, and resiliparse's main-content pass is quadratic in the depth
    (100,000 nested ``div``: hours).
    """
    if extractor not in _EXTRACTORS:
        raise ValueError(f"unknown HTML extractor {extractor!r}; use one of {', '.join(_EXTRACTORS)}")
    if not html.strip():
        return Extracted("")
    root, limit = _parse(html)
    if limit is not None:
        raise ValueError(f"the HTML parser gave up ({limit.split(',')[0].strip()})")
    text = _BLANKS.sub("\n\n", _PERMALINK.sub("", _EXTRACTORS[extractor](html))).strip()
    title, url = page_metadata(root)
    return Extracted(text, title, url)


def read_html(path: str, limits: Limits = DEFAULT_LIMITS) -> Iterator[RawRecord]:
    """Yield the raw page of one HTML file (converted to text by the source's ``markup: html``); a page over
    ``max_record_bytes`` is dropped (``record_too_large``) after reading no more than that."""
    with open_input(path, limits) as f:
        raw = f.read(limits.max_record_bytes + 1) if limits.max_record_bytes is not None else f.read()
    if limits.max_record_bytes is not None and len(raw) > limits.max_record_bytes:
        yield RawRecord(0, None, f"page over max_record_bytes ({limits.max_record_bytes:,})", reason="record_too_large")
        return
    yield RawRecord(0, {"text": decode_html(raw), "title": None, "url": None, "bytes": len(raw)})


def from_markup(text: str, html_extractor: str) -> Extracted:
    """The ``html`` markup converter (``massiveds.core.formats.MARKUPS``)."""
    return html_to_text(text, extractor=html_extractor)
