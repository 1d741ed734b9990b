"""``massiveds append``: new data as new shards of a built datastore, deduplicated against it, its shards untouched; killed and resumed.

The datastore is the small Jargon File slice (two files) with its BM25 index; the new data are real entries of a third
file of the shipped example plus a planted copy of an entry the datastore already holds (under another id).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import zstandard

from massiveds.clean.exact_dedup import dedup_key
from massiveds.core.catalog import read_catalog, write_catalog
from massiveds.core.layout import sha256_file
from massiveds.core.manifest import Sparse
from massiveds.core.passages import PassageFile
from massiveds.core.writer_lock import writer_lock
from massiveds.encode.sparse import CorpusStats, CountFiles, count_shard, df_partitions, index_shards
from massiveds.ops.stats import RECALL_DROP_WARNING, recall_warning
from massiveds.store.datastore import Datastore
from tests.conftest import write_small_manifest
from tests.helpers import REPO
from tests.helpers import massiveds as cli

pytestmark = pytest.mark.slow

NEW_RECORDS = 30
MODES = ("dense", "sparse", "hybrid")


def read_jsonl_zst(path: Path) -> list[dict[str, Any]]:
    with path.open("rb") as fh:
        return [json.loads(line) for line in io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(fh), encoding="utf-8")]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small slice built with a BM25 index, once for this module (tests append to copies)."""
    folder = tmp_path_factory.mktemp("append-base")
    manifest = write_small_manifest(folder)
    manifest.write_text(manifest.read_text() + "sparse: {enabled: true}\n")
    cli("build", str(manifest), "--out", str(folder / "ds"), "--engine", "local")
    return folder / "ds"


@pytest.fixture(scope="module")
def new_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real entries the datastore lacks, and a copy of one it holds (id ``planted-copy``): the manifest of an append."""
    folder = tmp_path_factory.mktemp("append-new")
    rows = read_jsonl_zst(REPO / "manifests/examples/data/jargon/jargon-2.jsonl.zst")[:NEW_RECORDS]
    long = [r for r in read_jsonl_zst(REPO / "manifests/examples/data/jargon/jargon-0.jsonl.zst") if len(r["text"].split()) > 150]
    old, near = long[0], long[1]
    words = near["text"].split(" ")
    words[len(words) // 2] = "indeed"  # one word changed: a near copy, not an exact one
    (folder / "new.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    planted = [old | {"id": "planted-copy"}, near | {"id": "planted-near-copy", "text": " ".join(words)}]
    (folder / "planted.jsonl").write_text("".join(json.dumps(r) + "\n" for r in planted))
    (folder / "near-copied-of").write_text(near["id"])
    manifest = folder / "more.yaml"
    manifest.write_text(
        "name: more\ndomain: wiki\nsources:\n"
        "  - {uri: new.jsonl, name: jargon-more, id_field: id, title_field: title}\n"
        "  - {uri: planted.jsonl, name: planted, id_field: id, title_field: title}\n"
        "chunk: {size: 96, min_size: 16}\nshards: {target_passages: 30}\nsparse: {enabled: true}\n"
    )
    (folder / "copied-of").write_text(old["id"])
    return manifest


def files_of(root: Path) -> dict[str, str]:
    """sha256 of every file under ``shards/`` and of the trained index."""
    paths = sorted([*(root / "shards").rglob("*"), root / "trained.faiss"])
    return {str(p.relative_to(root)): sha256_file(p) for p in paths if p.is_file()}


@pytest.fixture(scope="module")
def appended(base: Path, new_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A copy of the base with the new manifest appended (on Ray, uninterrupted), and the base's files before."""
    ds = Path(shutil.copytree(base, tmp_path_factory.mktemp("appended") / "ds"))
    before = files_of(ds)
    out = cli("append", str(ds), str(new_manifest))
    assert "datastore updated" in out.stderr
    return ds, before


def test_append_adds_new_documents_beside_old_ones_and_drops_copies_of_them(appended: tuple[Path, dict[str, str]], base: Path,
                                                                             new_manifest: Path) -> None:
    ds_path, before = appended
    old, new = read_catalog(base), read_catalog(ds_path)
    assert {k: v for k, v in files_of(ds_path).items() if k in before} == before  # no existing file rewritten
    assert new.shards[: len(old.shards)] == old.shards
    added = new.shards[len(old.shards):]
    assert added and added[0].id_start == max(s.id_end for s in old.shards)
    assert all(a.id_end == b.id_start for a, b in itertools.pairwise(added))
    (record,) = new.appends
    assert record.shards == [s.name for s in added] and record.passages == sum(s.count for s in added)
    assert record.dropped.get("dedup:exact_duplicate") == 1 and record.dropped.get("near_dedup:near_duplicate") == 1
    assert record.recall_after is not None
    drops = {d["doc_id"]: d for d in pq.read_table(ds_path / record.table).to_pylist()}
    copied_of = (new_manifest.parent / "copied-of").read_text()
    assert drops["planted-copy"] == {"doc_id": "planted-copy", "source": "planted", "stage": "dedup", "reason": "exact_duplicate",
                                     "duplicate_of": copied_of, "detail": None}
    near = drops["planted-near-copy"]
    assert (near["stage"], near["reason"], near["duplicate_of"]) == ("near_dedup", "near_duplicate",
                                                                     (new_manifest.parent / "near-copied-of").read_text())

    def texts(shards: list[Any]) -> dict[str, str]:
        out: dict[str, str] = {}
        for s in shards:
            f = PassageFile(ds_path / "shards" / s.name / "passages.arrow")
            for doc, text in zip(f.column("doc_id"), f.column("text"), strict=True):
                out[doc] = out.get(doc, "") + " " + text
        return out

    old_docs, new_docs = texts(old.shards), texts(added)
    assert not old_docs.keys() & new_docs.keys()
    assert not {dedup_key(t) for t in old_docs.values()} & {dedup_key(t) for t in new_docs.values()}
    assert new.domains["wiki"].passages == old.domains["wiki"].passages + record.passages
    ds = Datastore.open(ds_path)
    for doc in [sorted(new_docs)[3], sorted(old_docs)[7]]:
        query = " ".join((new_docs | old_docs)[doc].split()[:40])
        for mode in MODES:
            assert doc in [h["doc_id"] for h in ds.search([query], k=5, mode=mode)[0]], (doc, mode)
    assert ": ok" in cli("verify", str(ds_path)).stderr
    shown = cli("inspect", str(ds_path)).stdout
    assert "appends" in shown and "more.yaml" in shown


def test_bm25_after_an_append_scores_as_if_every_shard_had_the_datastores_statistics(appended: tuple[Path, dict[str, str]],
                                                                                      tmp_path: Path) -> None:
    """The older shards' scores, rescaled at query time, equal those of the same shards all scored with N and df over everything."""
    ds_path, _ = appended
    catalog = read_catalog(ds_path)
    assert catalog.sparse is not None and catalog.sparse.live_idf and catalog.sparse.passages == catalog.num_passages
    ref = Path(shutil.copytree(ds_path, tmp_path / "rescored"))
    spec = Sparse(enabled=True, k1=catalog.sparse.k1, b=catalog.sparse.b, tokenizer=catalog.sparse.tokenizer)
    counts = [CountFiles(tmp_path / "count" / s.name) for s in catalog.shards]
    for s, c in zip(catalog.shards, counts, strict=True):
        count_shard(PassageFile(ref / "shards" / s.name / "passages.arrow").iter_column("text"), spec.tokenizer, c,
                    df_partitions(len(counts)))
    stats = CorpusStats(catalog.sparse.passages, catalog.sparse.avg_length)
    index_shards(counts, [ref / "shards" / s.name for s in catalog.shards], [c.vocab for c in counts], stats, spec, tmp_path / "work")
    with writer_lock(ref, "test"):
        write_catalog(ref, catalog.but(sparse=catalog.sparse.but(live_idf=False)))
    queries = ["a program so badly written that nobody can maintain it", "hacker humour", "mumble frotz", "the kernel of an OS"]
    live, rescored = Datastore.open(ds_path), Datastore.open(ref)
    (live_scores, live_ids), (ref_scores, ref_ids) = live.bm25.search(queries, 20), rescored.bm25.search(queries, 20)
    np.testing.assert_allclose(live_scores, ref_scores, rtol=1e-4)
    for q in range(len(queries)):  # the same ranking, up to the order of passages whose scores tie to float precision
        def ranking(scores: np.ndarray, ids: np.ndarray, q: int = q) -> list[tuple[float, int]]:
            return sorted(zip((-np.round(scores[q], 4)).tolist(), ids[q].tolist(), strict=True))[:15]

        assert ranking(live_scores, live_ids) == ranking(ref_scores, ref_ids)
    np.testing.assert_allclose(live.bm25.bound(queries), rescored.bm25.bound(queries), rtol=1e-5)


def test_a_subsample_after_an_append_ranks_as_the_query_time_fraction_does(appended: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """The copy stores the older shards' scores rescaled to the parent's statistics now, so it needs no live idf of its own."""
    parent_path, _ = appended
    cli("subsample", str(parent_path), "--fraction", "0.5", "--seed", "3", "--out", str(tmp_path / "sub"))
    parent, sub = Datastore.open(parent_path), Datastore.open(tmp_path / "sub")
    assert sub.catalog.sparse is not None and not sub.catalog.sparse.live_idf and sub.catalog.appends == parent.catalog.appends
    for query in ["a program so badly written that nobody can maintain it", "hacker humour", "mumble frotz"]:
        for mode in ("sparse", "hybrid"):
            physical = sub.search(query, k=10, mode=mode)
            at_query = parent.search(query, k=10, mode=mode, fraction=0.5, seed=3)
            assert [(h["doc_id"], h["char_start"]) for h in physical] == [(h["doc_id"], h["char_start"]) for h in at_query], (query, mode)
            np.testing.assert_allclose([h["score"] for h in physical], [h["score"] for h in at_query], rtol=1e-5)
    assert ": ok" in cli("verify", str(tmp_path / "sub")).stderr


def test_append_refuses_another_embedder_in_one_line(base: Path, new_manifest: Path, tmp_path: Path) -> None:
    ds = Path(shutil.copytree(base, tmp_path / "ds"))
    other = tmp_path / "other.yaml"
    text = new_manifest.read_text()
    for name in ("new.jsonl", "planted.jsonl"):
        text = text.replace(name, str(new_manifest.parent / name))
    other.write_text(text + "embed: {model: sentence-transformers/all-mpnet-base-v2}\n")
    before = (ds / "datastore.json").read_bytes()
    failed = cli("append", str(ds), str(other), check=False)
    assert failed.returncode != 0 and "embed.model" in failed.stderr and "Traceback" not in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    assert (ds / "datastore.json").read_bytes() == before and not (ds / "build" / "append").exists()


def test_append_refuses_to_skip_an_eval_set_the_datastore_was_cleaned_of(base: Path, new_manifest: Path, tmp_path: Path) -> None:
    ds = Path(shutil.copytree(base, tmp_path / "ds"))
    catalog = read_catalog(ds)
    with writer_lock(ds, "test"):
        write_catalog(ds, catalog.but(build=catalog.build.but(decontamination={"squad-dev": {"items": 3}})))
    failed = cli("append", str(ds), str(new_manifest), check=False)
    assert failed.returncode != 0 and "squad-dev" in failed.stderr and len(failed.stderr.strip().splitlines()) == 1


def test_recall_warning_after_appends_with_one_quantizer(appended: tuple[Path, dict[str, str]]) -> None:
    """inspect's warning: recall@10 fell by more than the margin over the appends encoded with the current quantizer."""
    ds_path, _ = appended
    catalog = read_catalog(ds_path)
    (done,) = catalog.appends
    assert recall_warning(catalog, ds_path) is None
    fallen = catalog.but(appends=[done.but(recall_before=0.95, recall_after=0.95 - 2 * RECALL_DROP_WARNING)])
    assert f"massiveds retrain {ds_path}" in (recall_warning(fallen, ds_path) or "")
    retrained = fallen.but(trained_index=fallen.trained_index.but(file="trained/retrain-1.faiss") if fallen.trained_index else None)
    assert recall_warning(retrained, ds_path) is None  # a retrain since: those appends no longer count


def test_documents_deleted_from_the_datastore_stay_out_of_an_append(base: Path, tmp_path: Path) -> None:
    """A takedown holds through later appends: a copy of a deleted document under another id and source, and a new version of one
    under its own source and id, are dropped as ``deleted`` (naming the deletion); a document that shares only an id is added."""
    ds = Path(shutil.copytree(base, tmp_path / "ds"))
    long = [r for r in read_jsonl_zst(REPO / "manifests/examples/data/jargon/jargon-0.jsonl.zst") if len(r["text"].split()) > 150]
    copied, updated = long[2], long[3]
    (tmp_path / "gone.txt").write_text(f"{copied['id']}\n{updated['id']}\n")
    cli("delete", str(ds), "--doc-ids", str(tmp_path / "gone.txt"), "--reason", "takedown request")
    more = read_jsonl_zst(REPO / "manifests/examples/data/jargon/jargon-2.jsonl.zst")
    fresh, unseen = more[:3], more[3]
    rows = {"mirror.jsonl": [copied | {"id": "mirrored"}, *fresh],  # the deleted text under another id and source
            "update.jsonl": [updated | {"text": updated["text"] + " (Revised entry.)"}],  # the deleted id in its own source
            "other.jsonl": [unseen | {"id": copied["id"]}]}  # the deleted id, in another source, with another text
    for name, records in rows.items():
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in records))
    manifest = tmp_path / "again.yaml"
    manifest.write_text("name: again\ndomain: wiki\nsources:\n"
                        "  - {uri: mirror.jsonl, name: mirror, id_field: id, title_field: title}\n"
                        "  - {uri: update.jsonl, name: jargon, id_field: id, title_field: title}\n"
                        "  - {uri: other.jsonl, name: other, id_field: id, title_field: title}\n"
                        "chunk: {size: 96, min_size: 16}\nshards: {target_passages: 30}\nsparse: {enabled: true}\n")
    cli("append", str(ds), str(manifest), "--engine", "local")
    catalog = read_catalog(ds)
    (record,) = catalog.appends
    assert record.dropped.get("extract:deleted") == 2
    drops = {(d["source"], d["doc_id"]): d for d in pq.read_table(ds / record.table).to_pylist() if d["reason"] == "deleted"}
    assert drops.keys() == {("mirror", "mirrored"), ("jargon", updated["id"])}
    assert drops[("mirror", "mirrored")]["duplicate_of"] == copied["id"]
    assert {d["detail"] for d in drops.values()} == {"deletion 1: takedown request"}
    added = {doc for s in catalog.shards[-len(record.shards):]
             for doc in PassageFile(ds / "shards" / s.name / "passages.arrow").column("doc_id")}
    assert added == {r["id"] for r in fresh} | {copied["id"]}  # the last: source 'other', another text


#: Kill points of an append in order (``--engine local``: each lands after exactly n units): the reference documents, exact
#: dedup, an embedding part, a shard index, and the commit step (new shards moved in, catalog not yet written).
KILL_CHAIN = ["reference:1", "dedup:1", "embed:1", "index:1", "commit:1"]


def test_a_killed_append_leaves_the_datastore_as_it_was_and_resumes(base: Path, new_manifest: Path,
                                                                     appended: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    ds_path = Path(shutil.copytree(base, tmp_path / "ds"))
    catalog_before = (ds_path / "datastore.json").read_bytes()
    queries = ["a program nobody can maintain", "hacker humour"]
    hits_before = [[h["passage_id"] for h in q] for q in Datastore.open(ds_path).search(queries, k=5, mode="hybrid")]
    for point in KILL_CHAIN:
        proc = subprocess.run([sys.executable, "-m", "massiveds.cli", "append", str(ds_path), str(new_manifest), "--engine", "local"],
                              capture_output=True, env=os.environ | {"MASSIVEDS_CRASH_AFTER": point}, start_new_session=True)
        assert proc.returncode == -signal.SIGKILL, (point, proc.stderr.decode()[-2000:])
        assert (ds_path / "datastore.json").read_bytes() == catalog_before, point
        hits = [[h["passage_id"] for h in q] for q in Datastore.open(ds_path).search(queries, k=5, mode="hybrid")]
        assert hits == hits_before, point
    cli("append", str(ds_path), str(new_manifest), "--engine", "local")
    done, reference = read_catalog(ds_path), read_catalog(appended[0])
    def shape(catalog: Any) -> list[tuple[Any, ...]]:
        return [(s.name, s.id_start, s.count, s.files) for s in catalog.shards]

    assert shape(done) == shape(reference)
    assert done.appends[0].dropped == reference.appends[0].dropped
    assert not (ds_path / "build" / "append").exists() and not list(ds_path.rglob(".*.tmp-*"))


def test_an_append_killed_after_its_commit_finishes_on_the_next_run_without_adding_twice(base: Path, new_manifest: Path,
                                                                                          tmp_path: Path) -> None:
    """Killed between writing the catalog and removing its folder, the append's re-run sees its own commit: it ends, adds nothing."""
    ds_path = Path(shutil.copytree(base, tmp_path / "ds"))
    command = [sys.executable, "-m", "massiveds.cli", "append", str(ds_path), str(new_manifest), "--engine", "local"]
    proc = subprocess.run(command, capture_output=True, env=os.environ | {"MASSIVEDS_CRASH_AFTER": "commit-ran:1"}, start_new_session=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    committed = read_catalog(ds_path)
    assert len(committed.appends) == 1 and (ds_path / "build" / "append").exists()  # committed, not cleaned up
    again = cli("append", str(ds_path), str(new_manifest), "--engine", "local")
    assert "already committed" in again.stderr + again.stdout
    assert read_catalog(ds_path).appends == committed.appends and read_catalog(ds_path).shards == committed.shards
    assert not (ds_path / "build" / "append").exists()
