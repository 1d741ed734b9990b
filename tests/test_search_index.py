"""Sharded search on datastores built by the build's train and add units: fan-out, merged index, exact rerank, recall."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.vectorstore import clustered_vectors, write_vector_datastore
from massiveds.core.catalog import catalog_text, open_catalog
from massiveds.core.errors import DatastoreError, MassiveDSError
from massiveds.core.manifest import Index
from massiveds.encode.index import IndexPlan, add_vectors, plan_index, read_index, set_nprobe
from massiveds.evaluate.recall import RERANK_TARGET, exact_topk, recall_report, recall_summary, shard_sample
from massiveds.ops.merge import merge
from massiveds.ops.merge_index import merge_index
from massiveds.store.datastore import Datastore
from tests.helpers import massiveds as cli

N, DIM = 6000, 32


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    """Embedding-like unit vectors (fp16, as the build stores them)."""
    return clustered_vectors(N, DIM, seed=3, clusters=12, latent=8)


@pytest.fixture(scope="module")
def ivf_plan() -> IndexPlan:
    """A small IVF-PQ with a coarse PQ (4 bytes), so that rerank has something to fix."""
    return plan_index(N, DIM, Index(type="ivfpq", nlist=32, pq_m=4, nbits=6, nprobe=8))


@pytest.fixture(scope="module")
def ivf_store(tmp_path_factory: pytest.TempPathFactory, vectors: np.ndarray, ivf_plan: IndexPlan) -> Path:
    """Three shards of IVF-PQ, trained once and added per shard by ``train_unit`` / ``add_shard_unit``."""
    root = tmp_path_factory.mktemp("ivf") / "ds"
    write_vector_datastore(root, vectors, 3, ivf_plan)
    return root


@pytest.fixture(scope="module")
def flat_store(tmp_path_factory: pytest.TempPathFactory, vectors: np.ndarray) -> Path:
    """The same vectors in three flat shards."""
    root = tmp_path_factory.mktemp("flat") / "ds"
    write_vector_datastore(root, vectors, 3, plan_index(N, DIM, Index(type="flat")))
    return root


def copy_store(src: Path, dest: Path) -> Path:
    """A private copy of a module-scoped store (tests that modify it)."""
    shutil.copytree(src, dest)
    return dest


def assert_same_results(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> None:
    """Equal scores, and equal ids wherever a score is not tied with a neighbour (tied codes may swap)."""
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-6)
    s = a[0]
    tied = np.zeros(s.shape, dtype=bool)
    tied[:, 1:] |= np.isclose(s[:, 1:], s[:, :-1], rtol=0, atol=1e-6)
    tied[:, :-1] |= np.isclose(s[:, :-1], s[:, 1:], rtol=0, atol=1e-6)
    tied[:, -1] = True  # the last may tie with the first one left out
    assert (a[1][~tied] == b[1][~tied]).all()
    for ra, rb in zip(a[1], b[1], strict=True):
        assert set(ra[:-1]) <= set(rb) or set(ra[:-2]) <= set(rb)  # ties at the cut may differ


def test_shards_trained_once_search_like_one_index(ivf_store: Path, vectors: np.ndarray) -> None:
    ds = Datastore.open(ivf_store)
    assert [s.count for s in ds.shards] == [2000, 2000, 2000] and (ivf_store / "trained.faiss").is_file()
    whole = read_index(ivf_store / "trained.faiss", mmap=False)
    add_vectors(whole, vectors, np.arange(N))
    set_nprobe(whole, 8)
    q = np.asarray(vectors[:40], dtype=np.float32)
    assert_same_results(ds.search_vectors(q, 10, nprobe=8), whole.search(q, 10))


def test_merged_index_gives_the_fanout_results(ivf_store: Path, tmp_path: Path, vectors: np.ndarray,
                                              capfd: pytest.CaptureFixture[str]) -> None:
    root = copy_store(ivf_store, tmp_path / "ds")
    q = np.asarray(vectors[100:140], dtype=np.float32)
    fanout = Datastore.open(root)
    before = {p: fanout.search_vectors(q, 20, nprobe=p) for p in (1, 8, 32)}
    before_rr = fanout.search_vectors(q, 10, rerank="exact")
    record = merge_index(root)
    assert record.ntotal == N and record.shards == [s.name for s in fanout.shards]
    catalog = open_catalog(root)
    assert catalog.merged == record and json.loads((root / "datastore.json").read_text())["merged"] == record.as_json()
    assert set(record.files) == {"index.faiss", "index.ivfdata"}
    assert (root / "merged" / "index.ivfdata").stat().st_size == N * (3 + 8)  # PQ4x6 = 3 bytes of code + the id
    capfd.readouterr()
    ds = Datastore.open(root)
    assert ds.merged_index is not None and ds.merged_index.ntotal == N
    assert capfd.readouterr().out == ""  # FAISS's note on the .ivfdata path it opened stays out of stdout (a --json pipe)
    for p, expected in before.items():
        assert_same_results(ds.search_vectors(q, 20, nprobe=p), expected)
    assert_same_results(ds.search_vectors(q, 10, rerank="exact"), before_rr)
    ds.use_merged = False
    assert ds.merged_index is None
    # a catalog whose shards changed since the merge ignores the stale merge
    assert Datastore(root, catalog.but(shards=catalog.shards[:2])).merged_index is None


def test_merge_index_refuses_flat_datastores(flat_store: Path) -> None:
    with pytest.raises(DatastoreError, match="flat index; merge-index merges IVF inverted lists"):
        merge_index(flat_store)
    proc = cli("merge-index", str(flat_store), check=False)
    assert proc.returncode == 2 and "flat index" in proc.stderr


def test_merge_index_of_a_merge_in_place_shifts_ids_and_refuses_separate_trainings(
    ivf_store: Path, ivf_plan: IndexPlan, tmp_path: Path, vectors: np.ndarray
) -> None:
    other = clustered_vectors(N + 2000, DIM, seed=3, clusters=12, latent=8)[N:]  # more of the same topics, no duplicate
    same, own = tmp_path / "same", tmp_path / "own"
    write_vector_datastore(same, other, 2, ivf_plan, trained=ivf_store / "trained.faiss")  # ivf_store's trained index
    write_vector_datastore(own, other, 2, plan_index(len(other), DIM, Index(type="ivfpq", nlist=16, pq_m=8, nbits=6, nprobe=16)))
    q = np.asarray(other[:20], dtype=np.float32)
    mixed = np.concatenate([q, np.asarray(vectors[:20], dtype=np.float32)])
    itself = N + np.arange(20)  # each query vector of ``other`` at its id in the merge

    merge([ivf_store, same], tmp_path / "m")
    ds = Datastore.open(tmp_path / "m")
    assert [s.id_offset for s in ds.shards] == [0, 0, 0, N, N]
    assert (ds.search_vectors(q, 10, rerank="exact")[1][:, 0] == itself).all()
    before = {p: ds.search_vectors(mixed, 20, nprobe=p) for p in (1, 8)}
    record = merge_index(tmp_path / "m")
    assert record.ntotal == N + len(other)
    merged = Datastore.open(tmp_path / "m")
    assert merged.merged_index is not None
    for p, expected in before.items():
        assert_same_results(merged.search_vectors(mixed, 20, nprobe=p), expected)
    assert (merged.search_vectors(q, 10, rerank="exact")[1][:, 0] == itself).all()

    merge([ivf_store, own], tmp_path / "mo")
    ds = Datastore.open(tmp_path / "mo")
    assert [s.nprobe for s in ds.shards] == [8, 8, 8, 16, 16]  # each source's own default nprobe
    assert (ds.search_vectors(q, 10, rerank="exact")[1][:, 0] == itself).all()
    with pytest.raises(DatastoreError, match="shards come from 2 separately trained builds"):
        merge_index(tmp_path / "mo")


def test_exact_topk_streams_to_the_brute_force_answer(ivf_store: Path, vectors: np.ndarray) -> None:
    ds = Datastore.open(ivf_store)
    x = np.asarray(vectors, dtype=np.float32)
    q = x[[5, 2500, 5999]]
    scores, ids = exact_topk(ds, q, 7, exclude=np.array([5, 2500, 5999]))
    full = q @ x.T
    full[[0, 1, 2], [5, 2500, 5999]] = -np.inf
    expected = np.argsort(-full, axis=1)[:, :7]
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, axis=1), rtol=1e-5)
    assert (ids == expected).mean() > 0.95 and not np.isin([5, 2500, 5999], ids).any()


def test_flat_index_has_recall_one_and_a_bad_nprobe_does_not(flat_store: Path, ivf_store: Path) -> None:
    flat = recall_report(Datastore.open(flat_store), 200, ks=[1, 10, 100], rerank=False)
    assert [r.nprobe for r in flat.rows] == [None]
    assert flat.rows[0].recall == {1: 1.0, 10: 1.0, 100: 1.0}
    ivf = recall_report(Datastore.open(ivf_store), 200, nprobes=[1, 32], ks=[10], rerank=False)
    by_probe = {r.nprobe: r.recall[10] for r in ivf.rows}
    assert by_probe[1] < 0.9 and by_probe[1] < by_probe[32]


def test_exact_rerank_improves_ivfpq_recall(ivf_store: Path) -> None:
    report = recall_report(Datastore.open(ivf_store), 200, nprobes=[32], ks=[1, 10], rerank=True, rerank_depth=100)
    plain, reranked = report.rows
    assert not plain.rerank and reranked.rerank
    assert plain.recall[10] < 0.9  # 4-byte codes lose the order
    assert reranked.recall[10] > plain.recall[10] + 0.1 and reranked.recall[1] >= 0.95
    ds = Datastore.open(ivf_store)
    q = np.asarray(ds.shards[1].vectors[:5], dtype=np.float32)
    scores, ids = ds.search_vectors(q, 5, rerank="exact")
    np.testing.assert_allclose(scores, ds.dense.exact_scores(q, ids), rtol=1e-6)  # reranked scores are exact
    assert (np.diff(scores, axis=1) <= 1e-7).all()
    with pytest.raises(MassiveDSError, match="unknown rerank 'fuzzy'"):
        ds.search_vectors(q, 5, rerank="fuzzy")


def test_no_stored_vectors_is_a_clear_error(ivf_store: Path, tmp_path: Path) -> None:
    root = copy_store(ivf_store, tmp_path / "ds")
    (root / "shards" / "synthetic-00001" / "vectors.npy").unlink()
    ds = Datastore.open(root)
    q = np.zeros((1, DIM), dtype=np.float32)
    assert ds.search_vectors(q, 3)[1].shape == (1, 3)  # plain search needs no vectors
    with pytest.raises(DatastoreError, match=r"1 of 3 shards have no stored vectors .*embed.store_vectors: true"):
        ds.search_vectors(q, 3, rerank="exact")
    assert recall_summary(root)["status"] == "skipped"
    proc = cli("eval-recall", str(root), check=False)
    assert proc.returncode == 2 and "no stored vectors" in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2


def test_recall_summary_for_the_catalog(ivf_store: Path, ivf_plan: IndexPlan) -> None:
    summary = recall_summary(ivf_store, catalog=open_catalog(ivf_store), n_queries=100)
    assert summary["status"] == "measured" and summary["nprobe"] == ivf_plan.nprobe == 8 and summary["queries"] == 100
    assert 0 < summary["recall_at_10"] < summary["recall_at_10_rerank"] <= 1
    json.dumps(summary)


def test_the_build_calibrates_the_rerank_depth_search_uses_by_default(ivf_store: Path, tmp_path: Path) -> None:
    """4-byte codes need more than 100 candidates for recall 0.97: the summary finds the depth, the datastore then uses it."""
    root = copy_store(ivf_store, tmp_path / "ds")
    catalog = open_catalog(root)
    summary = recall_summary(root, catalog=catalog, n_queries=200)
    tried = {int(d): r for d, r in summary["rerank_recall_by_depth"].items()}
    depth = summary["rerank_depth"]
    assert list(tried) == [100 * 2**i for i in range(len(tried))] and depth == max(tried)
    assert tried[100] < RERANK_TARGET <= tried[depth] == summary["recall_at_10_rerank"]  # the first depth that reaches the target
    assert Datastore.open(root).dense.rerank_depth(10) == 100  # no calibrated depth in the catalog yet
    (root / "datastore.json").write_text(catalog_text(catalog.but(recall=summary)))
    ds = Datastore.open(root)
    assert ds.dense.rerank_depth(10) == depth and ds.dense.rerank_depth(1) == 100 and ds.dense.rerank_depth(50) == 5 * depth
    report = recall_report(ds, 200, nprobes=[8], ks=[10], rerank=True)
    assert report.rerank_depth == depth and report.rows[1].recall[10] == pytest.approx(tried[depth])
    # an append's new shards are measured at the datastore's depth, not calibrated again: one rerank row, the same figure
    at_depth = recall_summary(root, catalog=catalog, n_queries=200, rerank_depth=depth)
    assert at_depth["rerank_depth"] == depth and at_depth["rerank_recall_by_depth"] == {str(depth): tried[depth]}


def test_recall_summary_of_a_large_datastore_is_measured_on_a_sample_of_shards(ivf_store: Path) -> None:
    catalog = open_catalog(ivf_store)
    per_shard = catalog.shards[0].count
    assert shard_sample(catalog, 10**9) is catalog
    sampled = shard_sample(catalog, 2 * per_shard, seed=3)
    assert 1 <= len(sampled.shards) <= 2 and sampled.num_passages <= 2 * per_shard
    assert all(s in catalog.shards for s in sampled.shards) and sampled.index == catalog.index
    assert len(shard_sample(catalog, 1).shards) == 1  # never empty
    summary = recall_summary(ivf_store, catalog=catalog, n_queries=60, max_vectors=per_shard)
    assert summary["shards_measured"] == 1 and summary["vectors_measured"] == per_shard
    assert 0 < summary["recall_at_10"] < summary["recall_at_10_rerank"] <= 1


def test_eval_recall_command(flat_store: Path) -> None:
    data = json.loads(cli("eval-recall", str(flat_store), "--queries", "50", "--k", "1,10", "--json").stdout)
    assert data["ks"] == [1, 10] and data["queries"] == 50
    assert all(r["recall"]["10"] == 1.0 for r in data["rows"]) and {r["rerank"] for r in data["rows"]} == {False, True}
    text = cli("eval-recall", str(flat_store), "--queries", "20", "--no-rerank").stdout
    assert "recall@100" in text and "1.0000" in text


@pytest.mark.slow
def test_recall_and_rerank_on_the_real_example(example_datastore: Path) -> None:
    """Real all-MiniLM-L6-v2 vectors of the shipped example (flat shards): recall 1 and rerank keeps the order."""
    data = json.loads(cli("eval-recall", str(example_datastore), "--queries", "200", "--json").stdout)
    assert data["queries"] == 200 and all(r["recall"][k] == 1.0 for r in data["rows"] for k in ("1", "10", "100"))
    ds = Datastore.open(example_datastore)
    q = np.asarray(ds.shards[0].vectors[:10], dtype=np.float32)
    plain, reranked = ds.search_vectors(q, 10), ds.search_vectors(q, 10, rerank="exact")
    assert (plain[1][:, 0] == np.arange(10)).all() and (reranked[1][:, 0] == np.arange(10)).all()
    np.testing.assert_allclose(plain[0], reranked[0], atol=1e-3)  # fp32 index vs fp16 stored vectors
    assert recall_summary(example_datastore)["recall_at_10"] == 1.0
