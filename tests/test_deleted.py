"""What keeps deleted documents out of appends (``massiveds.clean.deleted``), on real Jargon File entries."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import zstandard

from massiveds.clean.deleted import DELETIONS, DeletedDocuments
from massiveds.clean.exact_dedup import text_hashes
from massiveds.core.schema import DOCUMENTS
from tests.helpers import REPO


def entries(n: int) -> list[dict[str, str]]:
    with (REPO / "manifests/examples/data/jargon/jargon-1.jsonl.zst").open("rb") as fh:
        lines = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(fh), encoding="utf-8")
        return [json.loads(line) for line, _ in zip(lines, range(n), strict=False)]


def docs(rows: list[tuple[str, str, str]]) -> pa.Table:
    return pa.Table.from_pylist([{"doc_id": d, "domain": "wiki", "source": s, "text": t, "_ord": i} for i, (d, s, t) in enumerate(rows)],
                                schema=DOCUMENTS)


def test_a_deleted_text_is_dropped_under_any_id_and_spacing_and_an_id_only_in_its_own_source() -> None:
    gone, kept = entries(2)
    table = pa.table({"doc_id": [gone["id"]], "source": ["jargon"], "stage": ["delete"], "reason": ["takedown"],
                      "duplicate_of": pa.nulls(1, pa.string()), "detail": ["doc-ids ids.txt"],
                      "text_hash": text_hashes([gone["text"]])}, schema=DELETIONS)
    deleted = DeletedDocuments()
    deleted.add(table, "deletion 1: takedown")
    new = docs([("copy", "mirror", "  " + gone["text"].upper().replace(" ", "\n")),  # the same text as exact dedup compares it
                (gone["id"], "jargon", kept["text"]),  # a revised version under its own source and id
                (gone["id"], "other", kept["text"]),  # the id in another source: another document
                (kept["id"], "jargon", kept["text"])])
    survivors, drops = deleted.split(new)
    assert [(d, s) for d, s in zip(survivors.column("doc_id").to_pylist(), survivors.column("source").to_pylist(), strict=True)] == [
        (gone["id"], "other"), (kept["id"], "jargon")]
    assert [(r["doc_id"], r["reason"], r["duplicate_of"], r["detail"]) for r in drops.to_pylist()] == [
        ("copy", "deleted", gone["id"], "deletion 1: takedown"), (gone["id"], "deleted", gone["id"], "deletion 1: takedown")]


def test_a_table_written_before_digests_keeps_out_by_source_and_id_only() -> None:
    gone, kept = entries(2)
    deleted = DeletedDocuments()
    deleted.add(pa.table({"doc_id": [gone["id"]], "source": ["jargon"]}), "deletion 1: old")
    survivors, drops = deleted.split(docs([("copy", "mirror", gone["text"]), (gone["id"], "jargon", kept["text"])]))
    assert survivors.column("doc_id").to_pylist() == ["copy"] and drops.column("doc_id").to_pylist() == [gone["id"]]
    assert DeletedDocuments().split(docs([("a", "b", kept["text"])]))[0].num_rows == 1  # nothing deleted: nothing dropped
