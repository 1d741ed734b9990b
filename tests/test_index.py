"""Index planning from data size, and the train-once / add-per-shard contract."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from massiveds.core.errors import MassiveDSError
from massiveds.core.manifest import Index
from massiveds.encode.index import add_vectors, plan_index, read_index, set_nprobe, train_index, write_index


def test_flat_below_threshold_and_ivfpq_above() -> None:
    small = plan_index(50_000, 384, Index())
    assert small.type == "flat" and small.factory == "IDMap2,Flat" and small.bytes_per_vector == 4 * 384 + 8
    big = plan_index(1_000_000, 384, Index())
    assert big.type == "ivfpq"
    assert big.nlist == 4096  # power of two nearest 4*sqrt(1e6) = 4000
    assert big.pq_m == 64 and 384 % big.pq_m == 0
    assert big.factory == "IVF4096,PQ64x8"
    assert big.train_sample == 64 * 4096
    assert big.nprobe == 128
    assert big.bytes_per_vector == 64 + 8
    assert "1000000 vectors > flat_max" in big.reason


def test_nlist_shrinks_until_every_centroid_has_39_points() -> None:
    plan = plan_index(20_000, 768, Index(type="ivfpq", nbits=6))
    assert plan.nlist == 512 and plan.nlist * 39 <= 20_000
    assert plan.pq_m == 64
    tiny = plan_index(3_000, 384, Index(type="ivfpq", nbits=4))
    assert tiny.nlist * 39 <= 3_000 and tiny.train_sample <= 3_000


def test_explicit_parameters_and_clear_errors() -> None:
    plan = plan_index(10_000, 384, Index(type="ivfpq", nlist=32, pq_m=48, nbits=6, train_sample=5_000, nprobe=64))
    assert (plan.nlist, plan.pq_m, plan.nbits, plan.train_sample, plan.nprobe) == (32, 48, 6, 5_000, 32)
    with pytest.raises(MassiveDSError, match="pq_m 50 does not divide the embedding dimension 384"):
        plan_index(100_000, 384, Index(type="ivfpq", pq_m=50))
    with pytest.raises(MassiveDSError, match="needs at least 256 training vectors"):
        plan_index(200, 384, Index(type="ivfpq", nlist=4))


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors around 20 centres, the shape sentence embeddings have."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim))
    x = centres[rng.integers(0, 20, n)] + 0.5 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_shards_added_to_one_trained_index_search_like_one_index(tmp_path) -> None:
    x = clustered(3_000, 64, 0)
    plan = plan_index(len(x), 64, Index(type="ivfpq", nlist=16, pq_m=16, nbits=6))
    trained = train_index(plan, x[: plan.train_sample])
    write_index(trained, tmp_path / "trained.faiss")
    whole = read_index(tmp_path / "trained.faiss", mmap=False)
    add_vectors(whole, x, np.arange(len(x)))
    shards = []
    for lo, hi in [(0, 1000), (1000, 2200), (2200, 3000)]:
        shard = read_index(tmp_path / "trained.faiss", mmap=False)
        add_vectors(shard, x[lo:hi], np.arange(lo, hi), batch=300)
        write_index(shard, tmp_path / f"s{lo}.faiss")
        shards.append(read_index(tmp_path / f"s{lo}.faiss"))  # memory-mapped, as search opens them
    q = clustered(20, 64, 1)
    for index in [whole, *shards]:
        set_nprobe(index, 4)
    d_whole, i_whole = whole.search(q, 10)
    results = [s.search(q, 10) for s in shards]
    d = np.concatenate([r[0] for r in results], axis=1)
    i = np.concatenate([r[1] for r in results], axis=1)
    order = np.argsort(-d, axis=1, kind="stable")[:, :10]
    np.testing.assert_allclose(np.take_along_axis(d, order, axis=1), d_whole, rtol=1e-5)
    assert (np.take_along_axis(i, order, axis=1) == i_whole).mean() > 0.98  # equal scores may swap ties


def test_many_lists_are_trained_in_two_levels_and_the_plan_says_so() -> None:
    big, small = plan_index(50_000_000, 256, Index()), plan_index(2_000_000, 256, Index())
    assert big.nlist is not None and big.nlist >= 8192 and big.coarse_training == "two-level" and "two levels" in big.reason
    assert small.nlist is not None and small.nlist < 8192 and small.coarse_training == "kmeans" and "two levels" not in small.reason
    assert plan_index(50_000_000, 256, Index(coarse_training="kmeans")).coarse_training == "kmeans"


@pytest.mark.parametrize(("opq", "n", "lists"), [(False, 12_000, 100), (True, 3_000, 40)])  # OPQ's own training is the slow part
def test_two_level_training_finds_what_one_k_means_finds(opq: bool, n: int, lists: int) -> None:
    """Same vectors, same plan but for the training: two-level centroids fill every list and recall as one k-means does."""
    from bench.vectorstore import clustered_vectors
    from massiveds.encode.index import two_level_centroids

    vectors = clustered_vectors(n, 32, seed=5, clusters=40, latent=8).astype(np.float32)
    queries = vectors[:200] + np.random.default_rng(0).normal(scale=0.05, size=(200, 32)).astype(np.float32)
    exact = vectors @ queries.T
    truth = np.argsort(-exact, axis=0)[:10].T
    centroids = two_level_centroids(vectors, lists)
    assert centroids.shape == (lists, 32) and len(np.unique(centroids.round(5), axis=0)) == lists
    recalls = {}
    for levels in ("kmeans", "two-level"):  # each on one thread: OPQ's many small BLAS calls crawl when threads contend
        plan = plan_index(len(vectors), 32, Index(type="ivfpq", nlist=lists, pq_m=8, nbits=6, opq=opq, coarse_training=levels))
        with threadpool_limits(1):
            index = train_index(plan, vectors)
        add_vectors(index, vectors, np.arange(len(vectors)))
        set_nprobe(index, 10)
        _, got = index.search(queries, 10)
        recalls[levels] = np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, truth, strict=True)])
    assert recalls["two-level"] >= recalls["kmeans"] - 0.05 and recalls["two-level"] > 0.5, recalls


def test_many_lists_are_found_through_a_centroid_graph_and_the_flat_quantizer_stays(tmp_path: Path,
                                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding to 1,024+ lists walks an HNSW graph of the centroids: nearly every vector lands in the list a full scan
    picks (with a search breadth of 1, visibly fewer do: the graph is what assigns), and the index written keeps its
    flat quantizer (searches compare a query with every centroid)."""
    import faiss

    from bench.vectorstore import clustered_vectors
    from massiveds.encode import index as index_module

    vectors = clustered_vectors(30_000, 32, seed=3, clusters=300, latent=8).astype(np.float32)
    lists = index_module.ASSIGN_GRAPH_MIN_LISTS
    empty = faiss.index_factory(32, f"IVF{lists},Flat", faiss.METRIC_INNER_PRODUCT)
    faiss.extract_index_ivf(empty).quantizer.add(vectors[np.random.default_rng(0).choice(len(vectors), lists, replace=False)])
    faiss.extract_index_ivf(empty).is_trained = True
    write_index(empty, tmp_path / "trained.faiss")
    assert index_module.assigns_through_graph(empty) and not index_module.assigns_through_graph(faiss.index_factory(32, "IVF64,Flat"))

    def agreement(ef: int) -> float:
        monkeypatch.setattr(index_module, "ASSIGN_GRAPH_EF", ef)
        index = read_index(tmp_path / "trained.faiss", mmap=False)
        add_vectors(index, vectors, np.arange(len(vectors)), batch=7_000)
        ivf = faiss.extract_index_ivf(index)
        quantizer = faiss.downcast_index(ivf.quantizer)
        assert isinstance(quantizer, faiss.IndexFlat) and quantizer.ntotal == lists
        _, full_scan = quantizer.search(vectors, 1)
        placed = np.empty(len(vectors), dtype=np.int64)
        for lst in range(lists):
            placed[faiss.rev_swig_ptr(ivf.invlists.get_ids(lst), ivf.invlists.list_size(lst))] = lst
        write_index(index, tmp_path / "added.faiss")
        assert isinstance(faiss.downcast_index(faiss.extract_index_ivf(read_index(tmp_path / "added.faiss")).quantizer), faiss.IndexFlat)
        return float((placed == full_scan[:, 0]).mean())

    assert agreement(index_module.ASSIGN_GRAPH_EF) >= 0.99 and agreement(1) < 0.99


def test_the_train_step_runs_faiss_on_every_core_of_its_node(example_datastore: Path) -> None:
    """A Ray worker starts with one OpenMP thread: the train step reserves its node's CPUs and trains on all of them."""
    record = json.loads((example_datastore / "build" / "train" / "_SUCCESS.json").read_text())
    assert record["threads"] == os.cpu_count() and f"trained on {os.cpu_count()} threads" in record["summary"]
