"""WARC archives (plain or gzip'd per record): one record per HTML response, URL from WARC-Target-URI."""

from __future__ import annotations

from collections.abc import Iterator

import fsspec
from warcio.archiveiterator import ArchiveIterator
from warcio.recordloader import ArcWarcRecord

from massiveds.ingest.extract.html import decode_html
from massiveds.ingest.extract.stream import DEFAULT_LIMITS, Limits
from massiveds.ingest.extract.types import RawRecord

HTML_TYPES = ("text/html", "application/xhtml+xml")


def _charset(content_type: str) -> str | None:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            return value.strip("\"' ")
    return None


def _record(row: int, rec: ArcWarcRecord, max_bytes: int | None) -> RawRecord:
    url = rec.rec_headers.get_header("WARC-Target-URI")
    meta = {"warc_record_id": rec.rec_headers.get_header("WARC-Record-ID"), "warc_date": rec.rec_headers.get_header("WARC-Date")}
    if rec.http_headers is not None:
        status = rec.http_headers.get_statuscode()
        content_type = rec.http_headers.get_header("Content-Type") or ""
        if status and not status.startswith("2"):
            return RawRecord(row, None, f"{url}: HTTP status {status}", reason="http_status")
    else:  # a resource record: the content type is the record's own
        status, content_type = None, rec.rec_headers.get_header("Content-Type") or ""
    if content_type.split(";")[0].strip().lower() not in HTML_TYPES:
        return RawRecord(row, None, f"{url}: content type {content_type or 'unknown'!r}", reason="not_html")
    raw = rec.content_stream().read(max_bytes + 1) if max_bytes is not None else rec.content_stream().read()
    if max_bytes is not None and len(raw) > max_bytes:
        return RawRecord(row, None, f"{url}: payload over max_record_bytes ({max_bytes:,})", reason="record_too_large")
    return RawRecord(row, {"text": decode_html(raw, _charset(content_type)), "url": url, "title": None, "http_status": status, **meta})


def read_warc(path: str, limits: Limits = DEFAULT_LIMITS) -> Iterator[RawRecord]:
    """Yield one record per response (or resource) record of the archive; request and metadata records are skipped.

    ``row`` counts every WARC record in the file, so a document's id is stable; non-HTML responses
    and non-2xx statuses become dropped entries (``not_html``, ``http_status``), a payload over
    ``max_record_bytes`` too (``record_too_large``, read no further than that).
    """
    with fsspec.open(path, "rb") as f:
        for row, rec in enumerate(ArchiveIterator(f, arc2warc=True)):
            if rec.rec_type not in ("response", "resource"):
                continue
            try:
                yield _record(row, rec, limits.max_record_bytes)
            except Exception as exc:  # a damaged payload (bad chunking, bad gzip) loses one record only
                yield RawRecord(row, None, f"{type(exc).__name__}: {exc}")
