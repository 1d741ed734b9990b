"""Near-duplicate removal units end to end on a planted corpus of real MEDLINE abstracts."""

from __future__ import annotations

import collections
import itertools
import json
from pathlib import Path

import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest

from massiveds.clean.minhash import true_jaccard
from massiveds.clean.ngrams import ngram_hashes
from massiveds.core.manifest import NearDedup
from pipelines.parts import removed_ords
from pipelines.stages.dedup import FindDuplicates, HashDocuments, PartitionItem
from pipelines.stages.near_dedup import NEAR_DUPLICATES, NearConfig, NearDedupRecord, run_near_dedup
from tests.helpers import local
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
    exact = sum(FindDuplicates(tmp_path)(PartitionItem(unit=f"p{p}", partition=p)).duplicates for p in range(2))
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
