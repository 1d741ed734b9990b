"""MediaWiki: wikitext to plain text (mwparserfromhell), and the streaming reader of XML dumps
(``pages-articles.xml[.bz2]``) that yields one record per article page.

Kept: the article's prose, headings (as their text), list items, and the visible text of links.
The parse tree is walked once (removing nodes from it with mwparserfromhell is quadratic).
Dropped: templates (infoboxes, navboxes, citations), ``<ref>`` notes, comments, tables, files and
images, categories, interwiki links, and the trailing reference sections (References, External
links, See also, ...). Redirects and pages outside the article namespace are not documents: the
reader yields them as dropped entries (``redirect``, ``non_article_namespace``), so they are counted.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from urllib.parse import quote

import mwparserfromhell
from mwparserfromhell.nodes import ExternalLink, Heading, HTMLEntity, Node, Tag, Text, Wikilink
from mwparserfromhell.wikicode import Wikicode

from massiveds.ingest.extract.stream import DEFAULT_LIMITS, Limits, open_input
from massiveds.ingest.extract.types import Extracted, RawRecord

#: Link namespaces whose links are media or page metadata, not prose.
DROPPED_LINK_NAMESPACES = {"file", "image", "media", "category"}
#: Tags dropped with their content (``ref`` and comments are already invisible to strip_code).
DROPPED_TAGS = {"table", "gallery", "ref", "references", "timeline", "imagemap", "score", "graph"}
#: Sections that hold references and links rather than article text.
DROPPED_SECTIONS = (
    r"^\s*(references|notes|footnotes|citations|notes and references|references and notes|sources|bibliography|"
    r"external links|see also|further reading)\s*$"
)
_INTERWIKI = re.compile(r"^[a-z]{2,3}(-[a-z]+)*:|^(wikt|wiktionary|commons|wikisource|wikiquote|wikibooks|meta|species|w|s|q|b|n|v|d):",
                        re.IGNORECASE)
_EMPTY_PARENS = re.compile(r"\(\s*[,;:]?\s*\)")
_SPACE_BEFORE_PUNCT = re.compile(r"[ \t]+([,.;:])")
_SPACES = re.compile(r"[ \t]{2,}")
_BLANKS = re.compile(r"\n{3,}")
_PRE_STRIP = re.compile(r"<!--.*?(-->|$)|<ref\b[^>]*/>|<ref\b[^>]*>.*?</ref\s*>", re.DOTALL | re.IGNORECASE)
_TABLE_LINE = re.compile(r"^(\{\||\|\}|\|-|\|\+|\||!)")
_ITALIC_POSSESSIVE = re.compile(r"'''(?=s\b)")  # ''Title'''s: italics closed, then an apostrophe
_QUOTE_MARKS = re.compile(r"'{2,}")
_REDIRECT = re.compile(r"^\s*#redirect", re.IGNORECASE)


def _is_metadata_link(link: Wikilink) -> bool:
    title = str(link.title).strip()
    if title.startswith(":"):  # [[:Category:X]] is a visible link to the page
        return False
    prefix = title.split(":", 1)[0].strip().lower() if ":" in title else ""
    return prefix in DROPPED_LINK_NAMESPACES or bool(_INTERWIKI.match(title))


def _node_text(node: Node) -> str:
    if isinstance(node, Text):
        return node.value
    if isinstance(node, Heading):
        return f"\n\n{_code_text(node.title).strip()}\n"
    if isinstance(node, Wikilink):
        if _is_metadata_link(node):
            return ""
        return _code_text(node.text if node.text is not None else node.title)
    if isinstance(node, ExternalLink):
        return _code_text(node.title) if node.title is not None else ""
    if isinstance(node, HTMLEntity):
        return node.normalize()
    if isinstance(node, Tag):
        name = str(node.tag).strip().lower()
        if name in DROPPED_TAGS:
            return ""
        if name == "br":
            return "\n"
        return _code_text(node.contents) if node.contents is not None else ""
    return ""  # templates, comments, template arguments


def _code_text(code: Wikicode) -> str:
    return "".join(_node_text(node) for node in code.nodes)


def _article_text(code: Wikicode) -> str:
    parts: list[str] = []
    skip_level = 0  # inside a dropped section: skip until a heading at this level or above
    for node in code.nodes:
        if isinstance(node, Heading):
            if skip_level and node.level > skip_level:
                continue
            skip_level = node.level if re.match(DROPPED_SECTIONS, str(node.title), re.IGNORECASE) else 0
        if not skip_level:
            parts.append(_node_text(node))
    return "".join(parts)


def wikitext_to_text(wikitext: str) -> str:
    """Plain text of an article's wikitext: prose and headings kept, templates, refs, tables, files, categories dropped."""
    wikitext = _PRE_STRIP.sub("", wikitext)  # refs and comments, even where the markup around them is malformed
    text = _article_text(mwparserfromhell.parse(wikitext))
    lines = []
    for raw in text.splitlines():
        line = _SPACES.sub(" ", _SPACE_BEFORE_PUNCT.sub(r"\1", _EMPTY_PARENS.sub("", raw))).strip()
        line = _QUOTE_MARKS.sub("", _ITALIC_POSSESSIVE.sub("'", line))  # bold/italic quotes the parser left
        if not _TABLE_LINE.match(line):  # rows of a table the parser could not close
            lines.append(line)
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(el: ET.Element, name: str) -> ET.Element | None:
    for child in el:
        if _local(child.tag) == name:
            return child
    return None


def _text(el: ET.Element | None, default: str | None = None) -> str | None:
    return el.text if el is not None and el.text is not None else default


def _page(row: int, page: ET.Element, url_prefix: str | None) -> RawRecord:
    title = _text(_child(page, "title")) or ""
    ns = (_text(_child(page, "ns")) or "0").strip()
    page_id = _text(_child(page, "id"))
    revision = _child(page, "revision")
    text = _text(_child(revision, "text") if revision is not None else None) or ""
    redirect = _child(page, "redirect")
    if ns != "0":
        return RawRecord(row, None, f"{title!r} is in namespace {ns}", reason="non_article_namespace")
    if redirect is not None or _REDIRECT.match(text):
        target = redirect.get("title") if redirect is not None else text.strip()[:200]
        return RawRecord(row, None, f"{title!r} redirects to {target!r}", reason="redirect")
    url = url_prefix + quote(title.replace(" ", "_"), safe="/:(),'!*-._~") if url_prefix else None
    rev_id = _text(_child(revision, "id")) if revision is not None else None
    stamp = _text(_child(revision, "timestamp")) if revision is not None else None
    return RawRecord(row, {"text": text, "title": title, "url": url, "page_id": page_id, "revision_id": rev_id, "timestamp": stamp})


def read_wikitext(path: str, limits: Limits = DEFAULT_LIMITS) -> Iterator[RawRecord]:
    """Stream a MediaWiki XML dump (plain, .bz2, .gz, .xz) page by page; ``row`` is the page's position in the dump.

    Each page is freed once yielded, so memory stays at one page however large the dump.
    """
    with open_input(path, limits) as f:
        root: ET.Element | None = None
        url_prefix: str | None = None
        row = 0
        for event, el in ET.iterparse(f, events=("start", "end")):
            name = _local(el.tag)
            if event == "start":
                if root is None:
                    root = el
                continue
            if name == "base" and url_prefix is None and el.text:
                url_prefix = el.text.strip().rsplit("/", 1)[0] + "/"
            elif name == "page":
                yield _page(row, el, url_prefix)
                row += 1
                if root is not None:
                    root.clear()


def from_markup(text: str, html_extractor: str) -> Extracted:
    """The ``wikitext`` markup converter (``massiveds.core.formats.MARKUPS``); ``html_extractor`` does not apply."""
    return Extracted(wikitext_to_text(text))
