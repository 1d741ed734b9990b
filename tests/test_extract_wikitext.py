"""MediaWiki dump extraction on a real enwiki excerpt (fixture: 3 articles, 2 redirects, 1 project page)."""

from __future__ import annotations

import bz2
import json
import re
from pathlib import Path

import pyarrow.parquet as pq

from massiveds.core.manifest import Manifest
from massiveds.ingest.extract.wikitext import read_wikitext, wikitext_to_text
from pipelines.stage import InputItem
from pipelines.stages.extract import extract_file
from tests.helpers import FIXTURES, extract, head_rows, shared

DUMP = FIXTURES / "wiki" / "enwiki-excerpt.xml.bz2"
MARKUP_LEFTOVERS = ("{{", "}}", "<ref", "</ref>", "[[", "]]", "Category:", "Infobox", "cite news", "{|", "|-", "<!--", "thumb|")


def test_articles_extracted_redirects_and_other_namespaces_counted():
    result = extract(DUMP, "wikitext")
    assert sorted(d["title"] for d in result.docs) == ["Abstract (law)", "Actrius", "Agnostida"]
    assert result.reasons() == {"redirect": 2, "non_article_namespace": 1}
    redirect = next(d for d in result.dropped if d["reason"] == "redirect")
    assert "'AccessibleComputing' redirects to 'Computer accessibility'" in redirect["detail"]


def test_article_text_is_prose_with_headings():
    actrius = extract(DUMP, "wikitext").by_title("Actrius")
    text = actrius["text"]
    assert text.startswith("Actresses (Catalan: Actrius) is a 1997 Catalan language Spanish drama film produced and directed by")
    assert "\nSynopsis\n" in text and "\nReception\n" in text  # headings kept as text, on their own line
    assert "Núria Espert as Glòria Marc" in text  # list items kept
    for junk in MARKUP_LEFTOVERS:
        assert junk not in text, junk
    assert "External links" not in text and "1997 films" not in text  # reference sections and categories dropped
    assert actrius["url"] == "https://en.wikipedia.org/wiki/Actrius"
    assert actrius["meta"]["page_id"] == "330"


def test_dump_is_streamed_page_by_page(tmp_path: Path):
    """A dump cut off mid-way still yields the pages before the cut, then fails: it is never read whole first."""
    xml = bz2.decompress(DUMP.read_bytes())
    cut = tmp_path / "cut.xml"
    cut.write_bytes(xml[: xml.index(b"<title>Agnostida</title>")])
    records = read_wikitext(str(cut))
    titles = [r.fields["title"] for r in (next(records) for _ in range(4)) if r.fields]
    assert titles == ["Actrius"]


def test_extract_unit_writes_documents_and_drops(tmp_path: Path):
    """The build's extract unit on a wikitext source: documents, and redirects recorded as drops."""
    manifest = Manifest.model_validate({"name": "wiki", "domain": "wiki", "sources": [{"uri": str(DUMP), "format": "wikitext"}]})
    from tests.helpers import input_for

    summary = extract_file(InputItem.of(input_for(DUMP, "wikitext"), 0), manifest, tmp_path)
    assert summary.kept == 3 and summary.dropped == {"extract:redirect": 2, "extract:non_article_namespace": 1}
    docs = pq.read_table(tmp_path / "documents" / "s0000-f0000000.parquet").to_pylist()
    assert {d["title"] for d in docs} == {"Abstract (law)", "Actrius", "Agnostida"}


def test_jsonl_rows_with_their_own_markup_field(tmp_path: Path):
    """wiki.jsonl mixes enwiki rows (markup: wikitext) and dictionary rows (no markup): ``markup_field`` picks per row."""
    rows = [r for r in head_rows(shared("jsonl", "wiki.jsonl.zst"), 3000) if r.get("markup") == "wikitext"][:5]
    rows += head_rows(shared("jsonl", "wiki.jsonl.zst"), 5)
    src = tmp_path / "wiki.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = extract(src, "jsonl", markup_field="markup", title_field="title", id_field="id")
    by_id = {d["doc_id"]: d for d in result.docs}
    plain = 0
    for row in rows:
        doc = by_id.get(row["id"])
        if row.get("markup") == "wikitext":
            assert doc is not None and doc["meta"]["markup"] == "wikitext"
            assert "{{" not in doc["text"] and "[[" not in doc["text"] and "'''" not in doc["text"]
        elif doc is not None:  # no markup: the row's text as it is, but for trailing spaces and runs of blank lines
            lines = "\n".join(line.rstrip(" \t") for line in row["text"].split("\n"))
            assert "markup" not in doc["meta"] and doc["text"] == re.sub(r"\n{3,}", "\n\n", lines).strip()
            plain += 1
    assert plain >= 3  # FOLDOC rows, whose "{Honeywell}" links and indented "<language>" tags are text, not markup


def test_wikitext_to_text_is_the_shared_pure_function():
    raw = next(r.fields["text"] for r in read_wikitext(str(DUMP)) if r.fields and r.fields["title"] == "Agnostida")
    text = wikitext_to_text(raw)
    assert "Agnostida is an order of arthropod" in text
    assert "{{" not in text and "<ref" not in text
