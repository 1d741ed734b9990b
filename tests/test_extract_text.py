"""Plain text and Project Gutenberg: headers and licence footers removed, long books streamed in parts."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import zstandard

from massiveds.ingest.extract.text import MAX_PART_CHARS, read_text, split_parts, strip_gutenberg
from tests.helpers import FIXTURES, extract, head_rows, shared


def test_modern_gutenberg_header_and_footer_removed():
    (doc,) = extract(FIXTURES / "text" / "sonnets-gutenberg.txt", "text").docs
    text = doc["text"]
    assert doc["title"] == "The Sonnets"  # from the header's Title: line
    assert text.startswith("THE SONNETS\nby William Shakespeare")
    assert "From fairest creatures we desire increase,\nThat thereby beauty's rose might never die," in text
    assert "Thou that art now the world's fresh ornament," in text
    for junk in ("Project Gutenberg", "START OF", "END OF", "Release Date", "www.gutenberg.org", "copyright"):
        assert junk not in text, junk


def test_early_gutenberg_etext_banner_and_end_line_removed():
    """lcet10.txt (Canterbury corpus, a 1992 Gutenberg etext): one-line banner and a '*End of' line."""
    (doc,) = extract(FIXTURES / "text" / "lcet10-excerpt.txt", "text").docs
    assert "Project Gutenberg" not in doc["text"]
    assert doc["text"].startswith("WORKSHOP ON ELECTRONIC TEXTS")
    assert doc["text"].rstrip().endswith("[A few of the italics (when used for emphasis) were replaced by CAPS mh]")


def test_text_without_markers_is_unchanged():
    play = "ACT I.\n\nScene I. Elsinore.\n\nBarnardo. Who's there?\n"
    assert strip_gutenberg(play) == play.strip()


def _plays(n: int) -> str:
    with shared("raw", "books", "shakespeare-texts.tar.zst").open("rb") as raw, \
            tarfile.open(fileobj=zstandard.ZstdDecompressor().stream_reader(raw), mode="r|") as tar:
        texts = []
        for member in tar:
            if member.isfile() and member.name.endswith("_gut.txt"):
                texts.append(tar.extractfile(member).read().decode("utf-8"))
                if len(texts) == n:
                    return "\n\n".join(texts)
    raise AssertionError("not enough plays")


def test_long_file_is_streamed_in_bounded_parts_with_stable_ids(tmp_path: Path):
    book = _plays(6)  # ~750k characters of real plays
    path = tmp_path / "plays.txt"
    path.write_text(book, encoding="utf-8")
    records = list(read_text(str(path)))
    parts = [r.fields["text"] for r in records]
    assert len(parts) >= 6
    assert all(len(p) <= MAX_PART_CHARS for p in parts)
    assert all(len(p) >= MAX_PART_CHARS // 2 for p in parts[:-1])
    assert "".join(parts) == book  # nothing lost, nothing repeated
    assert all(p.endswith("\n") for p in parts[:-1])  # cut at line ends
    again = extract(path, "text")
    assert [d["doc_id"] for d in again.docs] == [f"plays.txt#{i}" for i in range(len(parts))]
    assert [d["doc_id"] for d in extract(path, "text").docs] == [d["doc_id"] for d in again.docs]


def test_giant_line_is_cut():
    line = "word " * 50_000  # 250k characters, no newline
    parts = list(split_parts(io.StringIO(line), max_chars=100_000))
    assert [len(p) for p in parts] == [100_000, 100_000, 50_000] and "".join(parts) == line


def test_gutenberg_markup_option_on_jsonl(tmp_path: Path):
    rows = [r for r in head_rows(shared("jsonl", "books.jsonl.zst"), 46) if r["title"] == "lcet10.txt"]
    src = tmp_path / "books.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (doc,) = extract(src, "jsonl", markup="gutenberg").docs
    assert rows[0]["text"].startswith("The Project Gutenberg Etext of LOC WORKSHOP ON ELECTRONIC TEXTS")
    assert doc["text"].startswith("WORKSHOP ON ELECTRONIC TEXTS")
    assert "*End of The Project Gutenberg Etext" in rows[0]["text"] and "Project Gutenberg" not in doc["text"]
