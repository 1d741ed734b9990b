"""``massiveds retrain``: a quantizer trained on other data is replaced by one trained on the datastore's own stored vectors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from bench.vectorstore import clustered_vectors, write_vector_datastore
from massiveds.core.errors import MassiveDSError
from massiveds.core.manifest import Index
from massiveds.encode.index import plan_index
from massiveds.evaluate.recall import recall_summary
from massiveds.ops.retrain import retrain
from massiveds.ops.verify import verify
from massiveds.store.datastore import Datastore
from tests.helpers import massiveds as cli

N, DIM = 6000, 32


def test_retrain_on_own_vectors_restores_recall_and_switches_every_shard(tmp_path: Path) -> None:
    plan = plan_index(N, DIM, Index(type="ivfpq", nlist=32, pq_m=8, nbits=6, nprobe=4))
    other, own = tmp_path / "other", tmp_path / "own"
    write_vector_datastore(other, clustered_vectors(N, DIM, seed=99, clusters=12, latent=8), 1, plan)  # data that drifted away
    vectors = clustered_vectors(N, DIM, seed=3, clusters=12, latent=8)
    write_vector_datastore(own, vectors, 3, plan, trained=other / "trained.faiss")
    stale = recall_summary(own)["recall_at_10"]
    problems = verify(own)  # the bench writer leaves vectors.npy out of its catalog: retrain adds no problem of its own
    queries = vectors[:20].astype(np.float32)
    exact_before = Datastore.open(own).dense.exact_scores(queries, np.arange(20)[:, None])
    done = retrain(own, seed=1)
    fresh = recall_summary(own)["recall_at_10"]
    assert fresh > stale + 0.1, (stale, fresh)
    catalog = json.loads((own / "datastore.json").read_text())
    assert catalog["trained_index"]["file"] == done.trained and catalog["trained_indexes"] == []
    assert {s["trained"] for s in catalog["shards"]} == {done.trained} and not (own / "trained.faiss").exists()
    assert catalog["recall"]["status"] == "measured" and done.recall_after == catalog["recall"]["recall_at_10"]
    assert {re.sub(r"(shards/[^/]+)\.v1/", r"\1/", p) for p in verify(own)} <= set(problems)  # each shard now in its next folder
    ds = Datastore.open(own)
    assert ds.num_passages == N and all(int(s.index.ntotal) == s.count for s in ds.shards)
    _, ids = ds.search_vectors(queries, k=1, nprobe=32, rerank="exact")
    assert (ids[:, 0] == np.arange(20)).all()  # each stored vector is found under its own id
    np.testing.assert_array_equal(ds.dense.exact_scores(queries, np.arange(20)[:, None]), exact_before)


def test_flat_datastores_have_nothing_to_retrain(tmp_path: Path) -> None:
    write_vector_datastore(tmp_path / "flat", clustered_vectors(500, DIM, seed=1), 1, plan_index(500, DIM, Index(type="flat")))
    with pytest.raises(MassiveDSError, match="Flat index"):
        retrain(tmp_path / "flat")
    proc = cli("retrain", str(tmp_path / "flat"), check=False)
    assert proc.returncode == 2 and "exact search has no quantizer to retrain" in proc.stderr and "Traceback" not in proc.stderr


def test_retrain_on_fewer_live_vectors_than_the_plan_sampled(tmp_path: Path) -> None:
    """``--sample`` below the plan's, or deletions since the build, leave fewer vectors than the build trained on: retrain uses them."""
    plan = plan_index(N, DIM, Index(type="ivfpq", nlist=32, pq_m=8, nbits=6, nprobe=4))
    vectors = clustered_vectors(N, DIM, seed=3, clusters=12, latent=8)
    write_vector_datastore(tmp_path / "ds", vectors, 2, plan)
    done = retrain(tmp_path / "ds", sample=plan.train_sample // 2, seed=1)
    assert done.sample == plan.train_sample // 2 and done.recall_after is not None and done.recall_after > 0.3  # nprobe 4 of 32 lists
    _, ids = Datastore.open(tmp_path / "ds").search_vectors(vectors[:20].astype(np.float32), k=1, nprobe=32, rerank="exact")
    assert (ids[:, 0] == np.arange(20)).all()
