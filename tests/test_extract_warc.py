"""WARC reading on an archive built here with warcio from real pages (Python docs fixtures)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from tests.helpers import FIXTURES, extract

BISECT = "https://docs.python.org/3.11/library/bisect.html"
CMD = "https://docs.python.org/3.11/library/cmd.html"


def _response(writer: WARCWriter, url: str, payload: bytes, content_type: str, status: str = "200 OK") -> None:
    http = StatusAndHeaders(status, [("Content-Type", content_type), ("Content-Length", str(len(payload)))], protocol="HTTP/1.1")
    writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(payload), http_headers=http))


def _build(path: Path, gzip: bool) -> None:
    with path.open("wb") as f:
        writer = WARCWriter(f, gzip=gzip)
        writer.write_record(writer.create_warcinfo_record(path.name, {"software": "massiveds tests"}))
        request = StatusAndHeaders("GET /3.11/library/bisect.html HTTP/1.1", [("Host", "docs.python.org")], is_http_request=True)
        writer.write_record(writer.create_warc_record(BISECT, "request", http_headers=request))
        _response(writer, BISECT, (FIXTURES / "html" / "library__bisect.html").read_bytes(), "text/html; charset=utf-8")
        _response(writer, "https://docs.python.org/3.11/_static/py.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml")
        _response(writer, "https://docs.python.org/3.11/missing.html", b"<html><body>Not Found</body></html>", "text/html", "404 Not Found")
        _response(writer, CMD, (FIXTURES / "html" / "library__cmd.html").read_bytes(), "text/html")


@pytest.mark.parametrize("name, gzip", [("pages.warc.gz", True), ("pages.warc", False)])
def test_warc_html_responses_become_documents(tmp_path: Path, name: str, gzip: bool):
    path = tmp_path / name
    _build(path, gzip)
    result = extract(path, "warc")
    assert [d["url"] for d in result.docs] == [BISECT, CMD]  # WARC-Target-URI, not the page's canonical link
    bisect, cmd = result.docs
    assert bisect["title"].startswith("bisect — Array bisection algorithm")
    assert "This module provides support for maintaining a list in sorted order" in " ".join(bisect["text"].split())
    assert "Previous topic" not in bisect["text"] and "<script" not in bisect["text"]
    assert "line-oriented command interpreters" in cmd["text"]
    assert bisect["meta"]["warc_record_id"].startswith("<urn:uuid:")
    assert result.reasons() == {"not_html": 1, "http_status": 1}
    # row = position of the record in the archive (warcinfo 0, request 1, ...): stable ids
    assert [d["doc_id"] for d in result.docs] == [f"{name}#2", f"{name}#5"]
