"""Merging datastores: one catalog, unique contiguous ids, same hits as each source, embedders checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import massiveds
from tests.helpers import massiveds as cli

pytestmark = pytest.mark.slow


def test_merge_renumbers_ids_and_searches_both(example_datastore: Path, small_reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged"
    cli("merge", str(example_datastore), str(small_reference), "--out", str(out))
    a, b, merged = massiveds.open(example_datastore), massiveds.open(small_reference), massiveds.open(out)
    assert merged.num_passages == a.num_passages + b.num_passages
    everything = merged.passages(list(range(merged.num_passages)))
    assert [p["passage_id"] for p in everything] == list(range(merged.num_passages))
    strip = ("passage_id", "shard")
    expected = a.passages(list(range(a.num_passages))) + b.passages(list(range(b.num_passages)))
    assert [{k: v for k, v in p.items() if k not in strip} for p in everything] == [
        {k: v for k, v in p.items() if k not in strip} for p in expected
    ]
    catalog = json.loads((out / "datastore.json").read_text())
    assert [m["name"] for m in catalog["merged_from"]] == ["jargon-example", "small"]
    assert len({s["name"] for s in catalog["shards"]}) == len(catalog["shards"])
    assert catalog["domains"]["wiki"]["passages"] == merged.num_passages
    query = "A robot that searches web pages and netnews looking for valid email addresses"
    top = merged.search(query, k=2)
    assert {h["doc_id"] for h in top} == {"dict-jargon:address harvester"}  # the entry is in both sources
    assert {h["passage_id"] < a.num_passages for h in top} == {True, False}
    assert top[0]["score"] == pytest.approx(a.search(query, k=1)[0]["score"], abs=1e-4)


def test_merge_refuses_different_embedders(example_datastore: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    catalog = json.loads((example_datastore / "datastore.json").read_text())
    catalog["embedder"]["model"] = "intfloat/e5-base-v2"
    (other / "datastore.json").write_text(json.dumps(catalog))
    shutil.copytree(example_datastore / "shards", other / "shards")
    proc = cli("merge", str(example_datastore), str(other), "--out", str(tmp_path / "m"), check=False)
    assert proc.returncode == 2
    assert "embedders differ (model: 'all-MiniLM-L6-v2' vs 'intfloat/e5-base-v2')" in proc.stderr
    assert not (tmp_path / "m").exists()
