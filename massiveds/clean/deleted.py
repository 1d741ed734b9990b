"""Deleted documents stay deleted: an append drops a new document that is one the datastore deleted.

``massiveds delete`` records, for each document it removes, its id, its source and the xxh3-128 digest of
its text as exact dedup compares it (``exact_dedup.text_hashes``), never the text. A new document is a
deleted one when its text has a recorded digest (a copy under any id, in any source: a takedown follows
the text into the next dump), or when its source re-uses the name and document id of a deleted one (an
updated version of the same document). Ids alone are not compared across sources: unrelated sources
often number their documents the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from massiveds.clean.exact_dedup import text_hashes
from massiveds.core.schema import DROPPED, dropped_table

#: A deletion table: the build's drop records of the deleted documents, with their text digests.
DELETIONS = DROPPED.append(pa.field("text_hash", pa.binary(16)))


@dataclass
class DeletedDocuments:
    """What every deletion of a datastore removed, as an append compares new documents with it."""

    #: (source, doc_id) of a deleted document -> why it went ("deletion <n>: <reason>")
    by_id: dict[tuple[str, str], str] = field(default_factory=dict)
    #: text digest of a deleted document -> (its doc_id, why it went)
    by_hash: dict[bytes, tuple[str, str]] = field(default_factory=dict)

    def add(self, table: pa.Table, why: str) -> None:
        """Take in one deletion table (``DELETIONS``; one written before digests were recorded has ids only)."""
        digests = table.column("text_hash").to_pylist() if "text_hash" in table.column_names else [None] * table.num_rows
        for doc_id, source, digest in zip(table.column("doc_id").to_pylist(), table.column("source").to_pylist(), digests, strict=True):
            self.by_id[(source, doc_id)] = why
            if digest is not None:
                self.by_hash[digest] = (doc_id, why)

    def __bool__(self) -> bool:
        return bool(self.by_id)

    def split(self, docs: pa.Table) -> tuple[pa.Table, pa.Table]:
        """(the documents of ``docs`` that were never deleted, drop records of those that were)."""
        if not self or docs.num_rows == 0:
            return docs, dropped_table([])
        ids, sources = docs.column("doc_id").to_pylist(), docs.column("source").to_pylist()
        digests = text_hashes(docs.column("text").to_pylist()).to_pylist() if self.by_hash else [None] * docs.num_rows
        drops, gone = [], np.zeros(docs.num_rows, dtype=bool)
        for i, (doc_id, source, digest) in enumerate(zip(ids, sources, digests, strict=True)):
            if (hit := self.by_hash.get(digest)) is not None:
                of, why = hit
            elif (why_id := self.by_id.get((source, doc_id))) is not None:
                of, why = doc_id, why_id
            else:
                continue
            gone[i] = True
            drops.append({"doc_id": doc_id, "source": source, "stage": "extract", "reason": "deleted", "duplicate_of": of, "detail": why})
        return docs.filter(pa.array(~gone)), dropped_table(drops)
