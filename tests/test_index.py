"""Index planning from data size, and the train-once / add-per-shard contract."""

from __future__ import annotations

import numpy as np
import pytest

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
