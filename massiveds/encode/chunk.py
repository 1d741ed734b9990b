"""Documents to passages: fixed-size windows of words or tokens, with character offsets into the document.

A passage's text is exactly ``document.text[char_start:char_end]``, so every passage can be traced
to its document. Windows hold ``size`` units and advance by ``size - overlap``; a final window that
would add fewer than ``min_size`` new units is merged into the previous passage (as MassiveDS does),
so no document ends in a useless scrap.

Units are whitespace-delimited words (``chunk.unit: words``, MassiveDS's 256-word passages) or
the embedder's own tokens (``chunk.unit: tokens``, RETRO's 64-token chunks), counted with its
fast tokenizer's offsets and no special tokens.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from massiveds.core.manifest import Chunk, Manifest
from massiveds.core.schema import PASSAGES
from massiveds.encode.embed import load_tokenizer

_WORD = re.compile(r"\S+")

#: Passages before ids are assigned: the contract columns minus ``passage_id``, plus the
#: document ordinal and chunk number that fix the id order.
CHUNKS = pa.schema(
    [f for f in PASSAGES if f.name != "passage_id"] + [pa.field("_ord", pa.int64()), pa.field("_chunk", pa.int32())]
)


Spans = list[tuple[int, int]]


def word_spans(text: str) -> Spans:
    """Character spans of the whitespace-delimited words of ``text``."""
    return [m.span() for m in _WORD.finditer(text)]


def token_spanner(tokenizer: Any) -> Callable[[str], Spans]:
    """Character spans of a Hugging Face fast tokenizer's tokens (no special tokens, no length limit)."""
    backend = copy.deepcopy(tokenizer.backend_tokenizer)
    backend.no_truncation()  # tokenizer.json often truncates at the model's length: chunking must see every token
    backend.no_padding()

    def spans(text: str) -> Spans:
        return [(a, b) for a, b in backend.encode(text, add_special_tokens=False).offsets if b > a]

    return spans


def word_windows(text: str, size: int, overlap: int = 0, min_size: int = 0) -> list[tuple[int, int, int]]:
    """(char_start, char_end, n_words) of each passage of ``text``; empty for a text without words."""
    return windows(word_spans(text), size, overlap, min_size)


def windows(spans: Spans, size: int, overlap: int = 0, min_size: int = 0) -> list[tuple[int, int, int]]:
    """(char_start, char_end, n_units) of each window over unit ``spans`` (see the module doc)."""
    n = len(spans)
    if n == 0:
        return []
    step = size - overlap
    windows: list[tuple[int, int]] = []  # word index ranges [start, end)
    start = 0
    while True:
        end = min(start + size, n)
        new_words = end - (windows[-1][1] if windows else 0)
        if windows and end == n and new_words < min_size:
            windows[-1] = (windows[-1][0], end)
        else:
            windows.append((start, end))
        if end == n:
            break
        start += step
    return [(spans[a][0], spans[b - 1][1], b - a) for a, b in windows]


def passage_count(text: str, spec: Chunk, spanner: Callable[[str], Spans] = word_spans) -> int:
    """How many passages ``chunk_documents`` cuts one text into (what dropping the document costs the datastore)."""
    return len(windows(spanner(text), spec.size, spec.overlap, spec.min_size))


def chunk_documents(docs: pa.Table, spec: Chunk, spanner: Callable[[str], Spans] = word_spans) -> pa.Table:
    """Cut every document of a documents table into passages (CHUNKS schema), in document order.

    ``spanner`` gives the unit spans of a text: ``word_spans``, or ``token_spanner(tokenizer)``.
    """
    out: dict[str, list] = {name: [] for name in CHUNKS.names}
    columns = {name: docs.column(name).to_pylist() for name in ("doc_id", "domain", "source", "url", "title", "text", "_ord")}
    for i, text in enumerate(columns["text"]):
        for c, (start, end, n_units) in enumerate(windows(spanner(text), spec.size, spec.overlap, spec.min_size)):
            for name in ("doc_id", "domain", "source", "url", "title", "_ord"):
                out[name].append(columns[name][i])
            out["text"].append(text[start:end])
            out["n_tokens"].append(n_units)
            out["char_start"].append(start)
            out["char_end"].append(end)
            out["_chunk"].append(c)
    return pa.table(out, schema=CHUNKS)


def spanner_for(manifest: Manifest, base_dir: Path | None = None) -> Callable[[str], Spans]:
    """The unit a manifest chunks by: words, or its embedder's tokens (a local model resolved from ``base_dir``)."""
    if manifest.chunk.unit == "tokens":
        return token_spanner(load_tokenizer(manifest.embed.model, base_dir))
    return word_spans
