"""Raw records (one per input row, or an error) and their mapping onto the documents table."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from massiveds.core.schema import DOCUMENTS, dropped_table, ordinal
from massiveds.ingest.extract.markup import convert
from massiveds.ingest.extract.types import Extracted, RawRecord
from massiveds.ingest.sources.files import InputFile

#: Extra fields are kept in ``meta`` only when their JSON form is this short (large payloads such
#: as raw HTML stay in the source files, which the doc id points back to).
META_VALUE_MAX_CHARS = 512


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _row_markup(fields: dict[str, Any], inp: InputFile) -> str:
    own = fields.get(inp.markup_field) if inp.markup_field else None
    return own if isinstance(own, str) and own else inp.markup


def _too_large(text: str, max_bytes: int | None) -> int | None:
    """The UTF-8 size of ``text`` when it is over ``max_bytes``, else None (encoding only texts that might be)."""
    if max_bytes is None or len(text) * 4 <= max_bytes:
        return None
    size = len(text.encode("utf-8", errors="surrogatepass"))
    return size if size > max_bytes else None


def _short_json(value: Any) -> str | None:
    """The JSON form of an extra field when it is short enough for ``meta``; None when long or not encodable."""
    try:
        encoded = json.dumps(value, default=str)
    except (ValueError, RecursionError):  # nested deeper than the encoder goes
        return None
    return encoded if len(encoded) <= META_VALUE_MAX_CHARS else None


def records_to_documents(
    records: list[RawRecord], inp: InputFile, domain: str, max_record_bytes: int | None = None
) -> tuple[pa.Table, pa.Table]:
    """Map raw records of one input file onto (documents, dropped) tables.

    ``inp`` is the input file the records come from. A doc id is the source's own id when the manifest
    names ``id_field``, otherwise ``<file relative to the manifest>#<row>``: stable across runs.
    A text over ``max_record_bytes`` is dropped (``record_too_large``) before any conversion.
    When the source (or the row's ``markup_field``) names a markup, the text is converted to plain
    text here; the title and URL found in the markup fill in for missing title and URL fields.
    """
    named = {inp.text_field, inp.id_field, inp.title_field, inp.url_field}
    docs: list[dict[str, Any]] = []
    dropped: list[dict[str, str | None]] = []

    def drop(doc_id: str, reason: str, detail: str) -> None:
        dropped.append({"doc_id": doc_id, "source": inp.source, "stage": "extract", "reason": reason, "detail": detail[:1000]})

    for rec in records:
        position = f"{inp.rel}#{rec.row}"
        fields = rec.fields
        own_id = _as_text(fields.get(inp.id_field)) if fields is not None and inp.id_field else None
        doc_id = own_id or position
        if fields is None:
            drop(doc_id, rec.reason, f"{position}: {rec.error}")
            continue
        text = fields.get(inp.text_field)
        if not isinstance(text, str):
            reason = "missing_text" if text is None else "text_not_string"
            drop(doc_id, reason, f"{position}: field {inp.text_field!r}")
            continue
        if (size := _too_large(text, max_record_bytes)) is not None:
            drop(doc_id, "record_too_large", f"{position}: field {inp.text_field!r} holds {size:,} bytes, over max_record_bytes")
            continue
        markup = _row_markup(fields, inp)
        extracted = Extracted(text)
        if markup != "none":
            try:
                extracted = convert(markup, text, html_extractor=inp.html_extractor)
            except Exception as exc:  # one malformed document must not stop the file
                drop(doc_id, "markup_error", f"{position}: {markup}: {type(exc).__name__}: {exc}")
                continue
        meta: dict[str, Any] = {"file": inp.rel, "row": rec.row}
        if markup != "none":
            meta["markup"] = markup
        for key, value in fields.items():
            if key not in named and (encoded := _short_json(value)) is not None:
                meta[key] = json.loads(encoded)
        docs.append(
            {
                "doc_id": doc_id,
                "domain": domain,
                "source": inp.source,
                "url": (_as_text(fields.get(inp.url_field)) if inp.url_field else None) or extracted.url,
                "title": (_as_text(fields.get(inp.title_field)) if inp.title_field else None) or extracted.title,
                "text": extracted.text,
                "meta": json.dumps(meta, ensure_ascii=False),
                "_ord": ordinal(inp.source_idx, inp.file_idx, rec.row),
            }
        )
    return pa.Table.from_pylist(docs, schema=DOCUMENTS), dropped_table(dropped)
