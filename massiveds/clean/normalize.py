"""Text normalisation and document-level filters over Arrow tables.

Filters never edit a kept document beyond normalisation; they decide keep/drop and say why, so
every removed document is recorded with its reason.
"""

from __future__ import annotations

import json
import re
import unicodedata

import pyarrow as pa
import pyarrow.compute as pc

from massiveds.clean.quality import quality_reason
from massiveds.core.manifest import Filters
from massiveds.core.schema import dropped_table

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_BLANK_LINES = re.compile(r"\n{3,}")
_WORD = re.compile(r"\S+")


def normalize_text(text: str) -> str:
    """Unicode NFC, Unix newlines, no control characters, no trailing spaces, at most one blank line in a row."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _TRAILING_SPACE.sub("\n", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def count_words(text: str) -> int:
    """Whitespace-delimited words, the unit of ``min_words`` and of word chunking."""
    return sum(1 for _ in _WORD.finditer(text))


def normalize_and_filter(docs: pa.Table, filters: Filters) -> tuple[pa.Table, pa.Table]:
    """Normalise every document's text and drop those failing the filters; returns (kept, dropped).

    Drop reasons: ``empty``, ``too_few_words``, then the quality filters of massiveds.clean.quality.
    """
    texts = [normalize_text(t) for t in docs.column("text").to_pylist()]
    reasons: list[str | None] = []
    for text in texts:
        words = text.split()
        if not words:
            reasons.append("empty")
        elif len(words) < filters.min_words:
            reasons.append("too_few_words")
        else:
            reasons.append(quality_reason(text, words, filters))
    docs = docs.set_column(docs.schema.get_field_index("text"), "text", pa.array(texts, pa.string()))
    reason_arr = pa.array(reasons, pa.string())
    keep = pc.is_null(reason_arr)
    drop_rows = docs.filter(pc.invert(keep))
    dropped = dropped_table(
        [
            {"doc_id": d, "source": s, "stage": "filter", "reason": r, "detail": _position(m)}
            for d, s, r, m in zip(
                drop_rows.column("doc_id").to_pylist(),
                drop_rows.column("source").to_pylist(),
                reason_arr.filter(pc.invert(keep)).to_pylist(),
                drop_rows.column("meta").to_pylist(),
                strict=True,
            )
        ]
    )
    return docs.filter(keep), dropped


def _position(meta: str | None) -> str | None:
    """``<file>#<row>`` of a document from its ``meta`` (where extraction put them), for its drop record."""
    fields = json.loads(meta) if meta else {}
    return f"{fields['file']}#{fields['row']}" if "file" in fields and "row" in fields else None
