"""Hostile input inside good sources: truncated, binary, empty, huge and bomb-like files, HTML that hangs a parser.

The end-to-end test builds one manifest whose every source mixes good files (real text from the
shipped example and the fixtures) with bad ones made at test time, and checks that the build
completes, that every bad record is in ``build/dropped/`` with its reason and position (file and
row, or where the file broke), and that for every source ``read == kept + dropped`` exactly. The
unit tests check the bounds that make this safe: memory while skipping a 100 MB line, output of a
zstd bomb, and the line splitter.
"""

from __future__ import annotations

import base64
import bz2
import collections
import gzip
import io
import json
import random
import sys
import tarfile
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

import massiveds
from massiveds.ingest.extract.jsonl import read_jsonl
from massiveds.ingest.extract.stream import ExpansionLimit, Limits, iter_blocks, line_pieces
from massiveds.ingest.extract.text import read_text
from tests.helpers import FIXTURES, REPO, head_rows
from tests.helpers import massiveds as cli

JARGON = REPO / "manifests/examples/data/jargon/jargon-0.jsonl.zst"
#: The build's record limit (4 MB instead of the default 32 MiB, so the oversized files stay small to write).
MAX_RECORD = 4_000_000


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _binary() -> bytes:
    """Real binary data: the start of the Python interpreter's executable (NUL bytes in its header)."""
    return Path(sys.executable).resolve().read_bytes()[:65536]


def _repeated(text: str, size: int) -> str:
    return (text * (size // len(text) + 1))[:size]


def _zstd_bomb(path: Path, prefix: bytes, mib: int) -> None:
    """A zstd file of ``mib`` MiB of one repeated letter: a few KB on disk."""
    with path.open("wb") as f, zstandard.ZstdCompressor(level=1).stream_writer(f) as w:
        w.write(prefix)
        for _ in range(mib):
            w.write(b"a" * (1 << 20))


def _deep_html(text: str) -> str:
    """Real text inside 100,000 nested ``div``s: lxml stops at 256 levels, resiliparse takes hours."""
    return "<html><body>" + "<div>" * 100_000 + f"<p>{text}</p>" + "</div>" * 100_000 + "</body></html>"


def write_inputs(data: Path) -> dict[str, set[str]]:
    """Write every source's files under ``data``; returns each file's path (relative to the manifest) and the
    drop reasons it produces (good files: none, or the filter's for short entries)."""
    rows = head_rows(JARGON, 80)
    cmd_page = (FIXTURES / "html" / "library__cmd.html").read_text(encoding="utf-8")
    prose = " ".join(r["text"] for r in rows)
    expected: dict[str, set[str]] = {}

    def put(rel: str, content: bytes, reasons: set[str] | None = None) -> Path:
        path = data / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        expected[f"data/{rel}"] = reasons or set()
        return path

    # JSON lines: good rows, every kind of bad line, broken and hostile files
    put("records/good.jsonl.zst", zstandard.ZstdCompressor().compress(_jsonl(rows[:12])), {"too_few_words"})  # 3 short entries
    bad_lines = [
        "\ufeff".encode() + _jsonl(rows[12:13]),  # a byte order mark before the first line: not an error
        b"{not json\n",
        _jsonl([{"id": "no-text", "title": "no text field"}]),
        _jsonl([{"id": "number", "text": 42}]),
        _jsonl([{"id": "latin-1", "text": "caf\u00e9 " + prose[:300]}]).replace(b"caf\\u00e9", b"caf\xe9"),
        _jsonl([{"id": "surrogate", "text": "lone SURROGATE " + prose[:300]}]).replace(b"SURROGATE", b"\\ud800"),
        b"[" * 100_000 + b"]" * 100_000 + b"\n",
        b'{"id": "bigint", "text": "x", "n": ' + b"9" * 5000 + b"}\n",
        b"[1, 2]\n\n\n",
        _jsonl([{"id": "blob", "text": base64.b64encode(prose.encode() * 20).decode()}]),  # a 2 MB line, one "word"
        _jsonl(rows[13:14]),
    ]
    put("records/mixed.jsonl", b"".join(bad_lines), {"unreadable", "missing_text", "text_not_string", "too_few_words"})
    frames = b"".join(zstandard.ZstdCompressor().compress(_jsonl(rows[i : i + 3])) for i in range(14, 26, 3))
    put("records/truncated.jsonl.zst", frames[: len(frames) * 5 // 8], {"corrupt_file"})
    gz = gzip.compress(_jsonl(rows[26:34]))
    put("records/truncated.jsonl.gz", gz[: len(gz) * 2 // 3], {"corrupt_file"})
    put("records/empty.jsonl", b"")
    put("records/empty.jsonl.zst", b"")
    put("records/empty.jsonl.gz", gzip.compress(b""))
    put("records/binary.jsonl", _binary(), {"binary_file"})
    huge = put("records/huge.jsonl", b"", {"record_too_large", "too_few_words"})
    with huge.open("w", encoding="utf-8") as f:  # a 100 MB document between two good rows
        f.write(json.dumps(rows[34]) + "\n")
        f.write('{"id": "huge", "text": ' + json.dumps(_repeated(prose + " ", 100 << 20)) + "}\n")
        f.write(json.dumps(rows[35]) + "\n")
    _zstd_bomb(put("records/bomb.jsonl.zst", b"", {"decompression_bomb"}), b'{"id": "bomb", "text": "', 256)
    with zipfile.ZipFile(put("records/bomb.jsonl.zip", b"", {"decompression_bomb"}), "w", zipfile.ZIP_DEFLATED) as z, \
            z.open("bomb.jsonl", "w") as member:
        for _ in range(96):
            member.write(b" " * (1 << 20))

    # HTML pages
    put("pages/bisect.html", (FIXTURES / "html" / "library__bisect.html").read_bytes())
    put("pages/deep.html", _deep_html(prose[:2000]).encode(), {"markup_error"})
    put("pages/empty.html", b"", {"empty"})
    page_gz = gzip.compress(cmd_page.encode())
    put("pages/truncated.html.gz", page_gz[: len(page_gz) // 2], {"corrupt_file"})
    put("pages/huge.html", _repeated(cmd_page, MAX_RECORD + 1000).encode(), {"record_too_large"})

    # raw HTML in a JSON field, through resiliparse
    put("web/pages.jsonl", _jsonl([{"id": "cmd", "html": cmd_page}, {"id": "deep", "html": _deep_html(prose[:2000])}]),
        {"markup_error"})

    # plain text
    put("books/sonnets.txt", (FIXTURES / "text" / "sonnets-gutenberg.txt").read_bytes())
    put("books/blob.txt", base64.b64encode(prose.encode() * 30), {"too_few_words"})  # one 3 MB line without a space
    put("books/binary.txt", _binary(), {"binary_file"})
    lcet = bz2.compress((FIXTURES / "text" / "lcet10-excerpt.txt").read_bytes())
    put("books/truncated.txt.bz2", lcet[: len(lcet) // 2], {"corrupt_file"})

    # LaTeX: a vignette, a tar bomb, a project with one oversized source
    put("papers/tiedtimes.Rnw", (FIXTURES / "latex" / "tiedtimes.Rnw").read_bytes())
    with tarfile.open(put("papers/bomb.tar.gz", b"", {"decompression_bomb"}), "w:gz", compresslevel=1) as tar:
        for i in range(6):
            info = tarfile.TarInfo(f"paper/part{i}.tex")
            info.size = 16 << 20
            tar.addfile(info, io.BytesIO(b"%" * info.size))
    project = io.BytesIO()
    with tarfile.open(fileobj=project, mode="w") as tar:
        for name, body in (("main.tex", (FIXTURES / "latex" / "project" / "main.tex").read_bytes()),
                           ("chapter1.tex", (FIXTURES / "latex" / "project" / "chapter1.tex").read_bytes()),
                           ("table.tex", b"% generated\n" + b"1 & 2 & 3 \\\\\n" * (MAX_RECORD // 12))):
            info = tarfile.TarInfo(f"project/{name}")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    put("papers/project.tar", project.getvalue(), {"record_too_large"})

    # MediaWiki dumps: an entity bomb ("billion laughs") and a cut bz2
    entities = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i else "lol"}">' for i in range(10))
    put("wiki/laughs.xml", f'<?xml version="1.0"?><!DOCTYPE mediawiki [{entities}]><mediawiki><page><title>Lol</title>'
        "<ns>0</ns><revision><text>&lol9;</text></revision></page></mediawiki>".encode(), {"corrupt_file"})
    dump = (FIXTURES / "wiki" / "enwiki-excerpt.xml.bz2").read_bytes()
    put("wiki/excerpt.xml.bz2", dump, {"redirect", "non_article_namespace"})
    put("wiki/truncated.xml.bz2", dump[: len(dump) // 3], {"corrupt_file"})

    # Parquet: good rows, a cut file, a cell over the record limit
    table = pa.Table.from_pylist([{"id": r["id"], "title": r["title"], "text": r["text"]} for r in rows[36:42]])
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    put("table/good.parquet", buf.getvalue().to_pybytes(), {"too_few_words"})
    put("table/truncated.parquet", buf.getvalue().to_pybytes()[:-100], {"corrupt_file"})
    big = pa.Table.from_pylist([{"id": "big-cell", "title": "big", "text": _repeated(prose + " ", MAX_RECORD + 10)}])
    buf = pa.BufferOutputStream()
    pq.write_table(big, buf)
    put("table/big_cell.parquet", buf.getvalue().to_pybytes(), {"record_too_large"})
    return expected


MANIFEST = f"""name: hostile
domain: hostile
sources:
  - {{name: records, uri: "data/records/*", format: jsonl, id_field: id, title_field: title}}
  - {{name: pages, uri: "data/pages/*", format: html}}
  - {{name: web, uri: data/web/pages.jsonl, format: jsonl, id_field: id, text_field: html, markup: html, html_extractor: resiliparse}}
  - {{name: books, uri: "data/books/*", format: text}}
  - {{name: papers, uri: "data/papers/*", format: latex}}
  - {{name: wiki, uri: "data/wiki/*", format: wikitext}}
  - {{name: table, uri: "data/table/*", format: parquet, id_field: id, title_field: title}}
filters: {{max_record_bytes: {MAX_RECORD}}}
chunk: {{size: 256, min_size: 16}}
"""


@pytest.mark.slow
def test_build_completes_and_accounts_for_every_record(tmp_path: Path) -> None:
    expected = write_inputs(tmp_path / "data")
    manifest = tmp_path / "hostile.yaml"
    manifest.write_text(MANIFEST)
    out = tmp_path / "ds"
    cli("build", str(manifest), "--out", str(out), "--engine", "local")

    catalog = json.loads((out / "datastore.json").read_text())
    sources = catalog["build"]["sources"]
    assert set(sources) == {"records", "pages", "web", "books", "papers", "wiki", "table"}
    for name, counts in sources.items():  # in = kept + dropped, exactly, for every source
        dropped = sum(n for key, n in counts.items() if ":" in key)
        assert counts["read"] == counts["kept"] + dropped, (name, counts)
        assert counts["kept"] > 0, (name, counts)

    drops = [row for stage in ("extract", "filter") for f in sorted((out / "build" / "dropped" / stage).glob("*.parquet"))
             for row in pq.read_table(f).to_pylist()]
    per_source = collections.Counter(d["source"] for d in drops)
    assert per_source == {name: counts["read"] - counts["kept"] for name, counts in sources.items() if counts["read"] > counts["kept"]}
    reasons: dict[str, set[str]] = collections.defaultdict(set)
    for d in drops:  # every drop names its file and its row, or where the file broke off
        assert d["reason"] and d["detail"], d
        files = [f for f in expected if d["detail"].startswith((f"{f}#", f"{f}:"))]
        assert len(files) == 1, d
        reasons[files[0]].add(d["reason"])
    assert reasons == {rel: want for rel, want in expected.items() if want}
    mixed = sorted((int(d["detail"].split("#")[1].split(":")[0]), d["reason"]) for d in drops if "/mixed.jsonl#" in d["detail"])
    assert mixed == [(1, "unreadable"), (2, "missing_text"), (3, "text_not_string"), (4, "unreadable"), (5, "unreadable"),
                     (6, "unreadable"), (7, "unreadable"), (8, "unreadable"), (11, "too_few_words")]  # rows 0 and 12 kept

    records = catalog["build"]["dropped"]
    assert records["extract:record_too_large"] >= 4 and records["extract:decompression_bomb"] == 3
    ds = massiveds.open(out)
    [hit] = ds.search("Shakespeare sonnet: from fairest creatures we desire increase", k=1)
    assert hit["source"] == "books"
    [hit] = ds.search("bisect module: array bisection algorithm, insertion in sorted order", k=1)
    assert hit["source"] == "pages"


def test_a_100_mb_line_is_skipped_in_bounded_memory(tmp_path: Path) -> None:
    rows = head_rows(JARGON, 3)
    path = tmp_path / "huge.jsonl"
    prose = " ".join(r["text"] for r in rows)
    big = ('{"text": ' + json.dumps(_repeated(prose, 100 << 20)) + "}\n").encode()
    path.write_bytes(_jsonl(rows[:1]) + big + json.dumps(rows[1]).encode())
    tracemalloc.start()
    try:
        records = list(read_jsonl(str(path), Limits(max_record_bytes=1 << 20, max_expansion_ratio=None)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [r.reason for r in records if r.fields is None] == ["record_too_large"]
    assert [r.fields["id"] for r in records if r.fields] == [rows[0]["id"], rows[1]["id"]]  # the last line has no newline
    assert records[1].error.startswith(f"line of {len(big):,} bytes")
    assert peak < 8 << 20, peak  # one 1 MiB block and one 1 MiB piece, not the 100 MB line


def test_text_of_one_giant_line_streams_in_parts(tmp_path: Path) -> None:
    words = " ".join(r["text"] for r in head_rows(JARGON, 20)).split()
    path = tmp_path / "one-line.txt"
    path.write_text(_repeated(" ".join(words) + " ", 20 << 20), encoding="utf-8")
    tracemalloc.start()
    try:
        sizes = [len(r.fields["text"]) for r in read_text(str(path))]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sum(sizes) == 20 << 20 and max(sizes) == 100_000
    assert peak < 16 << 20, peak


def test_zstd_bomb_stops_at_the_ratio_with_bounded_blocks(tmp_path: Path) -> None:
    path = tmp_path / "bomb.jsonl.zst"
    _zstd_bomb(path, b"", 1024)  # 1 GiB of one letter in ~32 KB
    seen = largest = 0
    with pytest.raises(ExpansionLimit, match=r"expands past 67,108,864 bytes \(max_expansion_ratio 100\)"):
        for block in iter_blocks(str(path), Limits(max_record_bytes=None, max_expansion_ratio=100)):
            seen += len(block)
            largest = max(largest, len(block))
    assert seen <= 64 << 20 and largest <= 1 << 20
    assert sum(len(b) for b in iter_blocks(str(path), Limits(None, None))) == 1 << 30  # no ratio: all of it


def test_line_pieces_keep_every_byte_and_mark_long_lines() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        data = bytes(rng.choice(b"ab\n") for _ in range(rng.randint(0, 80)))
        size, longest = rng.randint(1, 9), rng.randint(1, 12)
        pieces = list(line_pieces([data[i : i + size] for i in range(0, len(data), size)], longest))
        assert b"".join(p for p, _ in pieces) == data and all(len(p) <= longest for p, _ in pieces)
        lines, current, long_lines = [], b"", []
        for piece, ends in pieces:
            if not current:
                long_lines.append(not ends)  # a line over the limit starts with an unfinished piece
            current += piece
            if ends:
                lines.append(current)
                current = b""
        assert lines == data.splitlines(keepends=True) and not current
        assert long_lines == [len(line) > longest for line in lines]
