"""A datastore's documents reassembled from their passages (``massiveds.store.documents``): what delete and append compare against."""

from __future__ import annotations

import collections
import io
import json
from pathlib import Path

import zstandard

from massiveds.clean.exact_dedup import dedup_key
from massiveds.core.catalog import read_catalog
from massiveds.store.documents import documents
from tests.helpers import REPO


def test_documents_rebuild_the_source_texts_and_split_at_shard_boundaries_without_loss(example_datastore: Path) -> None:
    shards = read_catalog(example_datastore).shards_by_id
    whole = [(d.doc_id, d.text) for d in documents(example_datastore, shards)]
    per_shard = [[(d.doc_id, d.text) for d in documents(example_datastore, shards, k, k + 1)] for k in range(len(shards))]
    assert [doc for docs in per_shard for doc in docs] == whole  # each document once, in the shard of its first passage
    assert len(shards) > 1 and all(per_shard)
    source: dict[str, str] = {}
    for path in sorted((REPO / "manifests/examples/data/jargon").glob("*.jsonl.zst")):
        with path.open("rb") as fh:
            for line in io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(fh), encoding="utf-8"):
                row = json.loads(line)
                source[row["id"]] = row["text"]
    once = [doc for doc, n in collections.Counter(d for d, _ in whole).items() if n == 1]
    rebuilt = dict(whole)
    assert len(once) > 900
    assert all(dedup_key(rebuilt[d]) == dedup_key(source[d]) for d in once)
