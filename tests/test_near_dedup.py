"""Near-duplicate removal units end to end on a planted corpus of real MEDLINE abstracts."""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest

from massiveds.clean.minhash import true_jaccard
from massiveds.clean.ngrams import ngram_hashes
from massiveds.core import scatter
from massiveds.core.errors import MassiveDSError
from massiveds.core.manifest import NearDedup, load_manifest
from massiveds.core.scatter import Scatter, read_scatter
from massiveds.ingest.sources.files import resolve_inputs
from pipelines.parts import removed_ords
from pipelines.stage import InputItem
from pipelines.stages import extract as extract_stage
from pipelines.stages import near_dedup
from pipelines.stages.dedup import FindDuplicates, HashDocuments, PartitionItem, run_exact_dedup
from pipelines.stages.near_dedup import (
    CLUSTERS,
    NEAR_DUPLICATES,
    NearConfig,
    NearDedupRecord,
    near_partitions,
    run_near_dedup,
)
from tests.helpers import REPO, local
from tests.planted_corpus import Doc, near_dup_corpus, write_parts

PARTS = 3


@pytest.fixture(scope="module")
def corpus() -> list[Doc]:
    return near_dup_corpus()


@pytest.fixture(scope="module")
def truth(corpus: list[Doc]) -> tuple[set[frozenset[str]], dict[frozenset[str], float]]:
    """Pairs at true 5-gram Jaccard >= 0.8, computed from the texts (all pairs), and every pair's J above 0.3."""
    shingles = {d.doc_id: ngram_hashes(d.text, 5, True) for d in corpus}
    sets = {k: set(v.tolist()) for k, v in shingles.items()}
    jac = {}
    for a, b in itertools.combinations(sorted(sets), 2):
        sa, sb = sets[a], sets[b]
        if min(len(sa), len(sb)) < 0.3 * max(len(sa), len(sb)):
            continue
        j = len(sa & sb) / len(sa | sb)
        if j > 0.3:
            jac[frozenset((a, b))] = j
    assert true_jaccard(shingles["orig-0"], shingles["copy-0"]) == 1.0
    return {p for p, j in jac.items() if j >= 0.8}, jac


def _run(tmp: Path, corpus: list[Doc], partitions: int, verify: str = "jaccard") -> tuple[Path, NearDedupRecord]:
    items = write_parts(tmp, corpus, PARTS)
    summary = run_near_dedup(local(tmp), items, NearConfig(tmp, NearDedup(enabled=True, verify=verify), partitions))
    return tmp, summary


def _duplicates(build: Path):
    return pds.dataset(str(build / "dedup" / "near" / "duplicates"), format="parquet", schema=NEAR_DUPLICATES).to_table().sort_by("_ord")


def _predicted_pairs(build: Path) -> set[frozenset[str]]:
    """Every pair of documents put in the same cluster (survivor included)."""
    dups = _duplicates(build)
    clusters: dict[str, set[str]] = collections.defaultdict(set)
    for d, o in zip(dups.column("doc_id").to_pylist(), dups.column("duplicate_of").to_pylist(), strict=True):
        clusters[o] |= {d, o}
    return {frozenset(p) for m in clusters.values() for p in itertools.combinations(sorted(m), 2)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, corpus: list[Doc]) -> dict[int, tuple[Path, NearDedupRecord]]:
    return {p: _run(tmp_path_factory.mktemp(f"near-p{p}"), corpus, p) for p in (1, 4)}


def test_same_result_with_1_and_4_partitions(runs: dict[int, tuple[Path, NearDedupRecord]]) -> None:
    one, four = _duplicates(runs[1][0]), _duplicates(runs[4][0])
    assert one.num_rows > 0
    assert one.equals(four)
    assert runs[1][1].duplicates == runs[4][1].duplicates == one.num_rows


def test_precision_and_recall_on_pairs_at_jaccard_0_8(runs, truth, corpus: list[Doc]) -> None:
    true_pairs, jac = truth
    kinds = collections.Counter(d.kind for d in corpus)
    assert kinds["exact"] == kinds["span5"] == 36 and kinds["unrelated"] == 120
    # the planted edits span the threshold: some pairs above 0.8 that are not exact copies, many just below it
    assert sum(1 for p in true_pairs if jac[p] < 1.0) >= 30
    assert sum(1 for j in jac.values() if 0.7 <= j < 0.8) >= 20
    pred = _predicted_pairs(runs[1][0])
    hit = pred & true_pairs
    precision, recall = len(hit) / len(pred), len(hit) / len(true_pairs)
    near_only = {p for p in true_pairs if jac[p] < 1.0}
    near_recall = len(pred & near_only) / len(near_only)
    print(f"near dedup (verify=jaccard): precision {precision:.3f} recall {recall:.3f} near-copy recall {near_recall:.3f} "
          f"({len(pred)} predicted pairs, {len(true_pairs)} true pairs)")
    assert precision >= 0.95 and recall >= 0.95 and near_recall >= 0.95


def test_no_unrelated_or_distant_copy_removed_and_one_survivor_per_cluster(runs, corpus: list[Doc], truth) -> None:
    build = runs[4][0]
    dups = _duplicates(build)
    removed = set(dups.column("doc_id").to_pylist())
    kind = {d.doc_id: d.kind for d in corpus}
    assert not [d for d in removed if kind[d] in ("unrelated", "sub10", "sub30", "span30")]
    survivors = set(dups.column("duplicate_of").to_pylist())
    assert not survivors & removed  # a survivor is never itself removed
    # the survivor of each cluster is its smallest _ord, and the cluster id is that _ord
    ords = {}
    for f in sorted((build / "documents").glob("*.parquet")):
        t = pq.read_table(f, columns=["doc_id", "_ord"])
        ords |= dict(zip(t.column("doc_id").to_pylist(), t.column("_ord").to_pylist(), strict=True))
    for d, o, c in zip(*(dups.column(k).to_pylist() for k in ("doc_id", "duplicate_of", "cluster")), strict=True):
        assert c == ords[o] < ords[d]
    # identical texts always collide in every band: each original and its exact copy share a cluster
    cluster_of = dict(zip(dups.column("doc_id").to_pylist(), dups.column("duplicate_of").to_pylist(), strict=True))
    for f in range(36):
        a, b = f"orig-{f}", f"copy-{f}"
        assert cluster_of.get(a, a) == cluster_of.get(b, b)


def test_drop_records_and_removed_ords(runs) -> None:
    build = runs[4][0]
    dups = _duplicates(build)
    dropped = pds.dataset(str(build / "dropped" / "near_dedup"), format="parquet").to_table()
    assert dropped.num_rows == dups.num_rows
    assert set(dropped.column("stage").to_pylist()) == {"near_dedup"}
    assert set(dropped.column("reason").to_pylist()) == {"near_duplicate"}
    columns = (dropped.column(c).to_pylist() for c in ("doc_id", "duplicate_of", "detail"))
    by_doc = {d: (o, json.loads(x)) for d, o, x in zip(*columns, strict=True)}
    for d, o, c in zip(*(dups.column(k).to_pylist() for k in ("doc_id", "duplicate_of", "cluster")), strict=True):
        assert by_doc[d] == (o, {"cluster": c})
    # what chunk_unit filters: the _ords of each part, read back by range
    got = sorted(o for p in range(PARTS) for o in removed_ords(build, 0, p, ["near"]).to_pylist())
    assert got == dups.column("_ord").to_pylist()
    assert not (build / "dedup" / "near" / "cc").exists()  # intermediates cleaned up


def test_signature_verification_errs_only_near_the_threshold(tmp_path: Path, corpus: list[Doc], truth) -> None:
    """Signature agreement is an estimate (sd 0.04 near 0.8 with 112 perms): its mistakes stay in the ambiguous band."""
    true_pairs, jac = truth
    build, summary = _run(tmp_path, corpus, 2, verify="signature")
    pred = _predicted_pairs(build)
    hit = pred & true_pairs
    precision, recall = len(hit) / len(pred), len(hit) / len(true_pairs)
    print(f"near dedup (verify=signature): precision {precision:.3f} recall {recall:.3f}")
    clear = {p for p in true_pairs if jac[p] >= 0.9}
    assert len(clear) >= 36 and clear <= pred  # 0.8 is >= 3.5 sd below 0.9: never missed
    assert sum(1 for p in pred if jac.get(p, 0.0) >= 0.6) >= 0.95 * len(pred)  # false pairs are near misses, not unrelated
    assert summary.verified < summary.candidates


def test_after_exact_dedup_only_near_copies_are_left(tmp_path: Path, corpus: list[Doc]) -> None:
    items = write_parts(tmp_path, corpus, PARTS)
    for i in items:
        HashDocuments(tmp_path, 2)(i)
    exact = sum(FindDuplicates(tmp_path, 2)(PartitionItem(unit=f"p{p}", partition=p)).duplicates for p in range(2))
    assert exact == 36
    summary = run_near_dedup(local(tmp_path), items, NearConfig(tmp_path, NearDedup(enabled=True), 2), removed=("exact",))
    assert summary.documents == len(corpus) - 36
    exact_ords = {o for p in range(PARTS) for o in removed_ords(tmp_path, 0, p, ["exact"]).to_pylist()}
    near_ords = set(_duplicates(tmp_path).column("_ord").to_pylist())
    assert not exact_ords & near_ords
    assert len(exact_ords | near_ords) == 36 + summary.duplicates


def test_a_corpus_without_near_duplicates(tmp_path: Path, corpus: list[Doc]) -> None:
    unrelated = [d for d in corpus if d.kind == "unrelated"]
    items = write_parts(tmp_path, unrelated, 2)
    summary = run_near_dedup(local(tmp_path), items, NearConfig(tmp_path, NearDedup(enabled=True), 3))
    assert summary.duplicates == 0 and summary.documents == len(unrelated)
    assert _duplicates(tmp_path).num_rows == 0


def _removals(build: Path) -> list[tuple[str, str, int]]:
    """(doc_id, duplicate_of, cluster) of every near duplicate, sorted."""
    dups = _duplicates(build)
    return sorted(zip(*(dups.column(c).to_pylist() for c in ("doc_id", "duplicate_of", "cluster")), strict=True))


def _digest(rows: list) -> str:
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


#: What near dedup removed from the planted corpus (3 parts) before its shuffles wrote scatter files (one Parquet
#: file per pair of unit and partition then): duplicates and a digest of the sorted (doc_id, duplicate_of, cluster).
PINNED = {"jaccard": (72, "c3facfd463b4fd50"), "signature": (81, "3bb1e56b8fc7735b"), "none": (117, "8c329889e677e8db")}


@pytest.mark.parametrize("verify", ["jaccard", "signature", "none"])
def test_many_partitions_remove_what_one_does_and_what_was_pinned(tmp_path: Path, corpus: list[Doc], verify: str) -> None:
    """P >> 1 (partitions sized from the documents' bytes, far past the parts' count) against P = 1, and the pinned removals."""
    near = NearDedup(enabled=True, verify=verify)
    outputs = []
    for name, size in (("one", None), ("many", 16384)):
        build = tmp_path / name
        items = write_parts(build, corpus, PARTS)
        partitions = 1 if size is None else near_partitions(build, items, size)
        summary = run_near_dedup(local(build), items, NearConfig(build, near, partitions))
        dropped = pds.dataset(str(build / "dropped" / "near_dedup"), format="parquet").to_table().sort_by("doc_id")
        outputs.append((summary.partitions, _duplicates(build), dropped, (summary.documents, summary.signed, summary.duplicates)))
    (one, dups_1, dropped_1, summary_1), (many, dups_n, dropped_n, summary_n) = outputs
    assert one == 1 and many > 4 * PARTS  # more partitions than the old cap (4 per documents part) allowed
    assert dups_n.equals(dups_1) and dropped_n.equals(dropped_1) and summary_n == summary_1
    assert (dups_1.num_rows, _digest(_removals(tmp_path / "one"))) == PINNED[verify]


def test_the_shipped_example_with_many_partitions(tmp_path: Path) -> None:
    """The jargon example as a build deduplicates it (exact first): FOLDOC's copies of Jargon File entries, whatever P."""
    loaded = load_manifest(REPO / "manifests" / "examples" / "jargon.yaml")
    items = [InputItem.of(inp, 0) for inp in resolve_inputs(loaded)]
    for item in items:
        extract_stage.extract_file(item, loaded.manifest, tmp_path)
    run_exact_dedup(local(tmp_path / "exact-markers"), items, tmp_path)
    found = {}
    for partitions in (1, near_partitions(tmp_path, items, 16384)):
        config = NearConfig(tmp_path, loaded.manifest.dedup.near, partitions)
        run_near_dedup(local(tmp_path / f"markers-{partitions}"), items, config, ("exact",))
        found[partitions] = _removals(tmp_path)
    [one, many] = found.values()
    assert len(found) == 2 and one == many
    assert [(d, o) for d, o, _ in one] == [("dict-foldoc:black art", "dict-jargon:black art"), ("dict-foldoc:noddy", "dict-jargon:noddy")]


def test_near_partitions_grow_with_the_documents_without_a_cap(tmp_path: Path, corpus: list[Doc]) -> None:
    items = write_parts(tmp_path, corpus, PARTS)
    size = sum((tmp_path / "documents" / f"{i.unit}.parquet").stat().st_size for i in items)
    assert near_partitions(tmp_path, items) == 1
    assert near_partitions(tmp_path, items, size // 100) in (100, 101)
    assert near_partitions(tmp_path, items[:1], 1) > 256


def test_one_file_per_unit_and_output_whatever_the_partitions(tmp_path: Path, corpus: list[Doc]) -> None:
    partitions = 16
    items = write_parts(tmp_path, corpus, PARTS)
    summary = run_near_dedup(local(tmp_path), items, NearConfig(tmp_path, NearDedup(enabled=True), partitions), keep_intermediate=True)
    near = tmp_path / "dedup" / "near"
    files = {f.relative_to(near).parent.as_posix(): [] for f in near.rglob("*.scatter")}
    for f in near.rglob("*.scatter"):
        files[f.relative_to(near).parent.as_posix()].append(f.name)
    assert sorted(files["bands"]) == sorted(files["sigs"]) == sorted(f"{i.unit}.scatter" for i in items)
    from_partitions = [f"from-p{p:04d}.scatter" for p in range(partitions)]
    for folder in ("edges", "attached", "clusters", *(f"cc/s{k:03d}" for k in range(summary.cc_steps + 1))):
        assert sorted(files.pop(folder)) == from_partitions, folder
    assert set(files) == {"bands", "sigs"}
    assert not list(tmp_path.rglob(".*.tmp-*"))
    # near-clusters routes each member to its own documents part: part k's rows are exactly its duplicates
    for k in range(len(items)):
        rows = pa.Table.from_batches([b for f in (near / "clusters").iterdir() for b in read_scatter(f, k, CLUSTERS, PARTS)], CLUSTERS)
        assert sorted(rows.column("_ord").to_pylist()) == sorted(removed_ords(tmp_path, 0, k, ["near"]).to_pylist())


def test_scatter_round_trip_reads_only_the_asked_partition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    schema = pa.schema([("_ord", pa.int64()), ("payload", pa.list_(pa.uint64()))])
    rng = np.random.default_rng(0)
    partitions, path, written = 50, tmp_path / "x.scatter", []
    with open(path, "wb") as f:
        out = Scatter(f, schema, partitions, flush_bytes=20_000)  # several flushes: a partition's rows in several batches
        for start in range(0, 3000, 300):
            ords = np.arange(start, start + 300)
            payload = pa.array([list(range(int(o) % 7)) for o in ords], pa.list_(pa.uint64()))
            dest = rng.integers(0, partitions - 10, len(ords))  # the last 10 partitions stay empty
            out.write(pa.table([pa.array(ords), payload], schema=schema), dest)
            written.extend(zip(ords.tolist(), payload.to_pylist(), dest.tolist(), strict=True))
        out.close()
    read_bytes = []
    pread = os.pread
    monkeypatch.setattr(scatter.os, "pread", lambda fd, n, at: read_bytes.append(n) or pread(fd, n, at))
    for p in range(partitions):
        read_bytes.clear()
        got = pa.Table.from_batches(read_scatter(path, p, schema, partitions), schema)
        assert list(zip(got.column("_ord").to_pylist(), got.column("payload").to_pylist(), strict=True)) == \
            [(o, x) for o, x, d in written if d == p]  # in the order written
        assert sum(read_bytes) < 0.2 * path.stat().st_size  # this partition's batches and a few index entries, not the file
    with pytest.raises(MassiveDSError, match="not written for 40 partitions"):
        read_scatter(path, 0, schema, 40)


def test_a_failed_unit_leaves_no_scatter_file(tmp_path: Path) -> None:
    config = NearConfig(tmp_path, NearDedup(enabled=True), 4)
    with pytest.raises(RuntimeError), config.scatter("edges", "from-p0000", near_dedup.EDGES) as out:
        out.write(pa.table({"u": [1, 2], "v": [3, 4]}, schema=near_dedup.EDGES), np.array([0, 3]))
        raise RuntimeError("killed")
    assert list(config.path("edges").iterdir()) == []  # neither the file nor its temporary: a re-run writes it anew
    assert config.table("edges", 0, near_dedup.EDGES).num_rows == 0
