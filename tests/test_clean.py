"""Normalisation, the min_words filter and exact dedup (map/reduce over hash partitions)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import zstandard

from massiveds.clean.exact_dedup import dedup_key, document_keys, find_duplicates, key_partitions
from massiveds.clean.normalize import count_words, normalize_and_filter, normalize_text
from massiveds.core.manifest import Filters
from massiveds.core.schema import DOCUMENTS
from tests.helpers import REPO


def jargon_entries(n: int) -> list[dict]:
    """Real entries of the Jargon File shipped with the example."""
    path = REPO / "manifests/examples/data/jargon/jargon-0.jsonl.zst"
    lines = zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read().decode().splitlines()
    return [json.loads(line) for line in lines[:n]]


def docs_table(texts: list[str]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {"doc_id": f"d{i}", "domain": "wiki", "source": "s", "url": None, "title": None, "text": t, "meta": "{}", "_ord": i}
            for i, t in enumerate(texts)
        ],
        schema=DOCUMENTS,
    )


def test_normalize_text() -> None:
    raw = "Caf\u0065\u0301 \r\nline two\t \n\n\n\n\x07end  "
    assert normalize_text(raw) == "Caf\u00e9\nline two\n\nend"
    assert count_words("  a b\n\tc ") == 3


def test_min_words_filter_records_reasons() -> None:
    entries = jargon_entries(30)
    texts = [e["text"] for e in entries] + ["", "too short to keep"]
    kept, dropped = normalize_and_filter(docs_table(texts), Filters(min_words=20))
    expected_kept = [i for i, t in enumerate(texts) if len(t.split()) >= 20]
    assert kept.column("doc_id").to_pylist() == [f"d{i}" for i in expected_kept]
    reasons = dict(zip(dropped.column("doc_id").to_pylist(), dropped.column("reason").to_pylist(), strict=True))
    assert reasons[f"d{len(texts) - 2}"] == "empty"
    assert reasons[f"d{len(texts) - 1}"] == "too_few_words"
    assert kept.num_rows + dropped.num_rows == len(texts)
    assert set(dropped.column("stage").to_pylist()) == {"filter"}


def test_dedup_key_ignores_case_and_whitespace_only() -> None:
    assert dedup_key("Hello,\n  World") == dedup_key("hello, world")
    assert dedup_key("hello, world") != dedup_key("hello world")


def run_dedup(texts: list[str], partitions: int, parts: int) -> dict[str, str]:
    """Exact dedup as the build runs it: partition keys of several parts, reduce each partition."""
    table = docs_table(texts)
    buckets: dict[int, list[pa.Table]] = {}
    step = -(-table.num_rows // parts)
    for start in range(0, table.num_rows, step):
        keys = document_keys(table.slice(start, step))
        parts = key_partitions(keys, partitions)
        for b in np.unique(parts).tolist():
            buckets.setdefault(b, []).append(keys.filter(pa.array(parts == b)))
    dups = [find_duplicates(pa.concat_tables(tables)) for tables in buckets.values()]
    out = pa.concat_tables(dups)
    assert out.column("_ord").to_pylist() == sorted(out.column("_ord").to_pylist()) or len(dups) > 1
    return dict(zip(out.column("doc_id").to_pylist(), out.column("duplicate_of").to_pylist(), strict=True))


@pytest.mark.parametrize(("partitions", "parts"), [(1, 1), (4, 3), (16, 7)])
def test_exact_dedup_keeps_first_copy_whatever_the_partitioning(partitions: int, parts: int) -> None:
    entries = [e["text"] for e in jargon_entries(40)]
    texts = [*entries, entries[3], entries[3].upper(), "  " + entries[10].replace(" ", "\n") + " ", entries[10] + " (edited)"]
    dups = run_dedup(texts, partitions, parts)
    n = len(entries)
    assert dups == {f"d{n}": "d3", f"d{n + 1}": "d3", f"d{n + 2}": "d10"}
