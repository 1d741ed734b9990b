"""The datastore's dedup index (issue 26, point 3): what exact and near dedup know of each document, kept with the datastore,
so that an append reads what it adds and the index, never the old text; deleted documents' rows stay.

The datastore is the small Jargon File slice (real entries) built in this process; appends run in this process too
(``--engine local``), with the function that reassembles documents from passages made to fail, so that a test proves
the old text was not read rather than that it was not needed.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipelines.stages.reference as reference_stage
from massiveds.clean.dedup_index import DEDUP_INDEX, index_record, read_index_file, write_index_file
from massiveds.clean.exact_dedup import text_hashes
from massiveds.clean.minhash import MinHasher, signature_column
from massiveds.core.catalog import DEDUP_DIR, read_catalog, write_catalog
from massiveds.core.manifest import NearDedup, load_manifest
from massiveds.core.passages import PassageFile
from massiveds.core.writer_lock import writer_lock
from massiveds.store.documents import documents
from pipelines.append import append
from tests.conftest import write_small_manifest
from tests.helpers import REPO
from tests.helpers import massiveds as cli
from tests.test_append import read_jsonl_zst

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small slice, built once for this module without Ray (tests change copies)."""
    folder = tmp_path_factory.mktemp("index-base")
    cli("build", str(write_small_manifest(folder)), "--out", str(folder / "ds"), "--engine", "local")
    return folder / "ds"


def index_rows(ds: Path) -> list[dict[str, Any]]:
    """Every row of the datastore's dedup index, by the catalog's files."""
    catalog = read_catalog(ds)
    assert catalog.dedup is not None
    return [r for name in sorted(catalog.dedup.files) for r in read_index_file(ds / DEDUP_DIR / name).to_pylist()]


def write_manifest(folder: Path, rows: list[dict[str, Any]]) -> Path:
    """An append manifest of ``rows`` (real entries and planted copies), deduplicated as the base was."""
    (folder / "new.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = folder / "new.yaml"
    manifest.write_text("name: new\ndomain: wiki\nsources:\n  - {uri: new.jsonl, name: planted, id_field: id, title_field: title}\n"
                        "chunk: {size: 96, min_size: 16}\nshards: {target_passages: 30}\n")
    return manifest


def near_copy(row: dict[str, Any], new_id: str) -> dict[str, Any]:
    """``row`` with one word of its middle changed and another id: a near copy, not an exact one."""
    words = row["text"].split(" ")
    words[len(words) // 2] = "indeed"
    return row | {"id": new_id, "text": " ".join(words)}


def test_the_build_indexes_each_kept_document_with_its_digest_and_signature(base: Path) -> None:
    catalog = read_catalog(base)
    assert catalog.dedup is not None and (catalog.dedup.ngram, catalog.dedup.num_perm, catalog.dedup.seed) == (5, 112, 1)
    rows = {(r["source"], r["doc_id"]): r for r in index_rows(base)}
    assert len(rows) == catalog.dedup.documents == catalog.build.documents_kept == catalog.dedup.signed
    docs = list(documents(base, catalog.shards_by_id, 0, len(catalog.shards)))
    assert {(d.source, d.doc_id) for d in docs} == rows.keys()
    hasher = MinHasher(ngram=5, num_perm=112, bands=14, seed=1)
    for doc in docs[::17]:  # the digest and signature of the document's text as the build kept it
        row = rows[(doc.source, doc.doc_id)]
        assert row["hash"] == text_hashes([doc.text])[0].as_py()
        assert row["signature"] == signature_column(hasher.signatures([doc.text]))[0].as_py()
    assert ": ok" in cli("verify", str(base)).stderr


def test_an_append_drops_copies_of_old_and_deleted_documents_without_reading_old_text(base: Path, tmp_path: Path,
                                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Exact and near copies of live documents, and a near copy of a deleted one whose text compact removed from every file."""
    ds = Path(shutil.copytree(base, tmp_path / "ds"))
    old = [r for r in read_jsonl_zst(REPO / "manifests/examples/data/jargon/jargon-0.jsonl.zst") if len(r["text"].split()) > 150]
    exact_of, near_of, deleted = old[0], old[1], old[2]
    (tmp_path / "gone.txt").write_text(deleted["id"] + "\n")
    cli("delete", str(ds), "--doc-ids", str(tmp_path / "gone.txt"), "--reason", "takedown request")
    cli("compact", str(ds), "--threshold", "0")
    gone = [t for s in read_catalog(ds).shards for d, t in zip(*(PassageFile(ds / s.folder_rel() / "passages.arrow").column(c)
                                                                  for c in ("doc_id", "text")), strict=True) if d == deleted["id"]]
    assert not gone  # its text is in no file of the datastore, yet its row stays in the index
    assert deleted["id"] in {r["doc_id"] for r in index_rows(ds)}
    fresh = read_jsonl_zst(REPO / "manifests/examples/data/jargon/jargon-2.jsonl.zst")[:5]
    planted = [exact_of | {"id": "exact-copy"}, near_copy(near_of, "near-copy"), near_copy(deleted, "near-copy-of-deleted")]
    manifest = write_manifest(tmp_path, [*fresh, *planted])

    def no_old_text(*args: object, **kwargs: object) -> None:
        raise AssertionError("the append read the datastore's passages")

    monkeypatch.setattr(reference_stage, "documents", no_old_text)
    result = append(ds, [load_manifest(manifest)], engine="local")
    catalog = read_catalog(ds)
    (record,) = catalog.appends
    # the datastore's documents wrote only the band keys a new document shares: a few, not one per band of each
    (near,) = [r.detail for r in result.reports if r.name == "near_dedup"]
    shared = int(re.search(r"; ([\d,]+) band keys of the datastore's documents shared", near).group(1).replace(",", ""))  # type: ignore[union-attr]
    everyone = read_catalog(base).dedup.documents * NearDedup().bands  # type: ignore[union-attr]
    assert 0 < shared < everyone / 100, near
    drops = {d["doc_id"]: d for d in pq.read_table(ds / record.table).to_pylist()}
    assert {k: (d["stage"], d["reason"], d["duplicate_of"]) for k, d in drops.items() if k in {r["id"] for r in planted}} == {
        "exact-copy": ("dedup", "exact_duplicate", exact_of["id"]),
        "near-copy": ("near_dedup", "near_duplicate", near_of["id"]),
        "near-copy-of-deleted": ("near_dedup", "near_duplicate", deleted["id"]),
    }
    assert record.documents == len(fresh)
    assert catalog.dedup is not None and catalog.dedup.documents == read_catalog(base).dedup.documents + len(fresh)  # type: ignore[union-attr]
    assert {r["id"] for r in fresh} <= {r["doc_id"] for r in index_rows(ds)}
    assert ": ok" in cli("verify", str(ds)).stderr


def test_subsample_merge_publish_and_pull_carry_the_index(base: Path, tmp_path: Path) -> None:
    cli("subsample", str(base), "--fraction", "0.5", "--seed", "3", "--out", str(tmp_path / "sub"))
    sub = read_catalog(tmp_path / "sub")
    kept = {d for s in sub.shards for d in PassageFile(tmp_path / "sub" / s.folder_rel() / "passages.arrow").column("doc_id")}
    assert sub.dedup is not None and {r["doc_id"] for r in index_rows(tmp_path / "sub")} == kept
    assert 0 < sub.dedup.documents < read_catalog(base).dedup.documents  # type: ignore[union-attr]
    cli("merge", str(base), str(tmp_path / "sub"), "--out", str(tmp_path / "merged"))
    merged = read_catalog(tmp_path / "merged")
    assert merged.dedup is not None and merged.dedup.documents == read_catalog(base).dedup.documents + sub.dedup.documents  # type: ignore[union-attr]
    cli("publish", str(tmp_path / "merged"), str(tmp_path / "published"))
    cli("pull", str(tmp_path / "published"), str(tmp_path / "pulled"))
    assert index_rows(tmp_path / "pulled") == index_rows(tmp_path / "merged")
    for ds in ("sub", "merged", "pulled"):
        assert ": ok" in cli("verify", str(tmp_path / ds)).stderr


def test_a_datastore_without_an_index_gets_one_with_its_first_append(base: Path, tmp_path: Path) -> None:
    """A datastore built before the index: its first append reads the documents from their passages and indexes them too."""
    ds = Path(shutil.copytree(base, tmp_path / "ds"))
    with writer_lock(ds, "test"):
        write_catalog(ds, read_catalog(ds).but(drop=["dedup"]))
    shutil.rmtree(ds / DEDUP_DIR)
    old = [r for r in read_jsonl_zst(REPO / "manifests/examples/data/jargon/jargon-0.jsonl.zst") if len(r["text"].split()) > 150]
    fresh = read_jsonl_zst(REPO / "manifests/examples/data/jargon/jargon-2.jsonl.zst")[:5]
    out = cli("append", str(ds), str(write_manifest(tmp_path, [*fresh[:4], near_copy(old[4], "near-copy")])), "--engine", "local").stderr
    assert "read from their passages (it has no dedup index; this append indexes them)" in " ".join(out.split())
    catalog = read_catalog(ds)
    (record,) = catalog.appends
    assert record.dropped == {"near_dedup:near_duplicate": 1}
    assert catalog.dedup is not None and catalog.dedup.documents == read_catalog(base).build.documents_kept + 4
    assert ": ok" in cli("verify", str(ds)).stderr
    second = write_manifest(tmp_path, [fresh[4], near_copy(old[5], "second-near-copy")])
    again = cli("append", str(ds), str(second), "--engine", "local").stderr
    assert "read from their dedup index" in " ".join(again.split())
    assert read_catalog(ds).appends[-1].dropped == {"near_dedup:near_duplicate": 1}


def test_an_empty_part_counts_no_documents(tmp_path: Path) -> None:
    """A part whose documents were all dropped writes an index file of no rows; the catalog record counts the others."""
    (tmp_path / DEDUP_DIR).mkdir()
    write_index_file(tmp_path / DEDUP_DIR / "empty.parquet", DEDUP_INDEX.empty_table())
    write_index_file(tmp_path / DEDUP_DIR / "two.parquet", pa.table({
        "doc_id": ["a", "b"], "source": ["s", "s"], "hash": [b"0" * 16, b"1" * 16], "signature": [b"\x01" * 8, None]}))
    record = index_record(tmp_path, ["empty.parquet", "two.parquet"], (5, 2, 1))
    assert (record.documents, record.signed, record.num_perm) == (2, 1, 2)
