"""Plain text files (books, dumps), streamed line by line, Project Gutenberg header and licence removed.

A long file is cut into parts of at most ``MAX_PART_CHARS`` characters, each one document: a part
ends at the first paragraph break (blank line) after ``MIN_PART_CHARS``, else at a line break when
the part is full, else mid-line for a single line longer than the limit. The cut depends only on
the file's content, so part ``k`` keeps its doc id (``<file>#<k>``) from one build to the next.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from massiveds.ingest.extract.stream import DEFAULT_LIMITS, Limits, iter_text_pieces
from massiveds.ingest.extract.types import Extracted, RawRecord

MAX_PART_CHARS = 100_000
MIN_PART_CHARS = MAX_PART_CHARS // 2
#: The header can be long in old releases (the "small print" licence comes first).
HEADER_SCAN_LINES = 800
#: ... and never more than this many characters (a file of one giant line must still stream).
HEADER_SCAN_CHARS = 200_000

_START = re.compile(
    r"^\W*(\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG|\*?END\*?THE SMALL PRINT|START OF THE PROJECT GUTENBERG)", re.IGNORECASE
)
_FIRST_LINE = re.compile(r"^\W*(The )?Project Gutenberg('s)? (E-?text|E-?book)\b", re.IGNORECASE)
_END = re.compile(r"^\W*(\*\*\*\s*)?END OF (THE |THIS )?PROJECT GUTENBERG|^\W*End of (the )?Project Gutenberg", re.IGNORECASE)
_TITLE = re.compile(r"^\s*Title:\s*(.+?)\s*$")


def strip_gutenberg_lines(lines: Iterable[str]) -> Iterator[str]:
    """Lines of a Project Gutenberg text without its header (up to the START marker) and licence footer.

    A text without markers passes through unchanged. Only the first ``HEADER_SCAN_LINES`` lines (at
    most ``HEADER_SCAN_CHARS`` characters) are held back while looking for the header's end, so a book
    of any length streams.
    """
    it = iter(lines)
    head: list[str] = []
    size = 0
    for line in it:
        head.append(line)
        size += len(line)
        if len(head) >= HEADER_SCAN_LINES or size >= HEADER_SCAN_CHARS:
            break
    start = next((i for i in range(len(head) - 1, -1, -1) if _START.match(head[i])), None)
    if start is not None:
        head = head[start + 1 :]
    else:
        first = next((i for i, line in enumerate(head) if line.strip()), None)
        if first is not None and _FIRST_LINE.match(head[first]):  # early releases: a one-paragraph banner
            blank = next((i for i in range(first, len(head)) if not head[i].strip()), len(head))
            head = head[blank:]
    for line in _chain(head, it):
        if _END.match(line):
            return
        yield line


def _chain(head: list[str], rest: Iterator[str]) -> Iterator[str]:
    yield from head
    yield from rest


def strip_gutenberg(text: str) -> str:
    """A Gutenberg text without header and licence footer (the pure form of ``strip_gutenberg_lines``)."""
    return "".join(strip_gutenberg_lines(text.splitlines(keepends=True))).strip()


def gutenberg_title(text: str) -> str | None:
    """The ``Title:`` line of a Gutenberg header, if any in the first lines."""
    for line in text.splitlines()[:HEADER_SCAN_LINES]:
        m = _TITLE.match(line)
        if m:
            return m.group(1)
    return None


def split_parts(lines: Iterable[str], max_chars: int = MAX_PART_CHARS) -> Iterator[str]:
    """Group lines into parts of at most ``max_chars`` characters, cut at paragraph breaks where possible."""
    min_chars = max_chars // 2
    part: list[str] = []
    size = 0
    for line in lines:
        while len(line) > max_chars:  # a giant line: cut it where it must be cut
            if part:
                yield "".join(part)
                part, size = [], 0
            yield line[:max_chars]
            line = line[max_chars:]
        if size + len(line) > max_chars or (size >= min_chars and not line.strip()):
            yield "".join(part)
            part, size = [], 0
        part.append(line)
        size += len(line)
    if part:
        yield "".join(part)


def _decoded(pieces: Iterable[bytes]) -> Iterator[str]:
    """UTF-8 pieces of lines as text with Unix newlines; bad bytes become U+FFFD, a piece may end inside a character."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for raw in pieces:
        yield decoder.decode(raw).replace("\r\n", "\n").replace("\r", "\n")
    if tail := decoder.decode(b"", final=True):
        yield tail


def read_text(path: str, limits: Limits = DEFAULT_LIMITS, *, max_chars: int = MAX_PART_CHARS) -> Iterator[RawRecord]:
    """Stream a text file (plain or compressed) as one record per part, Gutenberg header and footer removed.

    Lines are read in pieces of at most ``4 * max_chars`` bytes, so a file of one giant line streams too.
    """
    name = Path(path).name
    lines = _decoded(iter_text_pieces(path, limits, 4 * max_chars))
    header: list[str] = []
    header_chars = 0

    def remember(source: Iterable[str]) -> Iterator[str]:
        nonlocal header_chars
        for line in source:
            if len(header) < HEADER_SCAN_LINES and header_chars < HEADER_SCAN_CHARS:
                header.append(line)
                header_chars += len(line)
            yield line

    title: str | None = None
    for row, part in enumerate(split_parts(strip_gutenberg_lines(remember(lines)), max_chars)):
        if title is None:
            title = gutenberg_title("".join(header)) or name
        yield RawRecord(row, {"text": part, "title": title, "url": None, "part": row})


def from_markup(text: str, html_extractor: str) -> Extracted:
    """The ``gutenberg`` markup converter (``massiveds.core.formats.MARKUPS``); ``html_extractor`` does not apply."""
    return Extracted(strip_gutenberg(text))
