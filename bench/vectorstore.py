"""A search-only datastore from given vectors, indexed by the build's own train and add units (benchmarks, tests).

It has the catalog, ``trained.faiss`` and per-shard ``index.faiss`` / ``vectors.npy`` a build writes,
but no passages: ``Datastore.search_vectors``, recall and merge-index work on it, text search does not.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import itertools

from massiveds.core.layout import FORMAT_VERSION, DatastoreLayout, file_record, shard_name, write_json
from massiveds.encode.index import IndexPlan
from pipelines.stage import WorkItem
from pipelines.stages.index import AddShard
from pipelines.stages.shard import ShardItem
from pipelines.stages.train import TrainIndex


def clustered_vectors(n: int, dim: int = 384, seed: int = 0, clusters: int = 1000, latent: int = 16, noise: float = 0.25) -> np.ndarray:
    """Embedding-like synthetic vectors (NOT real text embeddings), unit-norm fp16.

    Each of ``clusters`` topics is a random centre plus a random ``latent``-dimensional subspace; a
    point is its topic's centre, a Gaussian offset in that subspace (norm ~0.8) and isotropic noise
    (norm ``noise``): low intrinsic dimension, as sentence embeddings have, so neighbours are meaningful.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32) / np.sqrt(dim)
    bases = rng.normal(size=(clusters, latent, dim)).astype(np.float32) / np.sqrt(dim)
    out = np.empty((n, dim), dtype=np.float16)
    for lo in range(0, n, 100_000):
        hi = min(n, lo + 100_000)
        topic = rng.integers(0, clusters, hi - lo)
        z = rng.normal(size=(hi - lo, latent)).astype(np.float32) * (0.8 / np.sqrt(latent))
        iso = noise / np.sqrt(dim) * rng.normal(size=(hi - lo, dim)).astype(np.float32)
        x = centres[topic] + np.einsum("nl,nld->nd", z, bases[topic]) + iso
        out[lo:hi] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def shard_ranges(n: int, n_shards: int) -> list[tuple[int, int]]:
    """Balanced contiguous id ranges, as the build's shard stage cuts them."""
    bounds = [round(i * n / n_shards) for i in range(n_shards + 1)]
    return list(itertools.pairwise(bounds))


def write_vector_datastore(
    root: Path, vectors: np.ndarray, n_shards: int, plan: IndexPlan, domain: str = "synthetic", trained: Path | None = None
) -> dict[str, Any]:
    """Write ``vectors`` as ``n_shards`` shards under ``root`` and index them with the build's train and index steps.

    ``trained`` reuses another datastore's ``trained.faiss`` instead of training. Returns the catalog
    plus the seconds spent in train and in add.
    """
    layout = DatastoreLayout(root)
    shards = []
    for i, (lo, hi) in enumerate(shard_ranges(len(vectors), n_shards)):
        name = shard_name(domain, i)
        folder = layout.shard(name)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "vectors.npy", np.ascontiguousarray(vectors[lo:hi], dtype=np.float16), allow_pickle=False)
        shards.append(ShardItem(unit=name, name=name, domain=domain, id_start=lo, count=hi - lo))
    paths = {s.name: layout.shard(s.name) / "vectors.npy" for s in shards}
    clock = time.perf_counter()
    if trained is None:
        TrainIndex(plan, tuple(shards), paths, layout.trained_index)(WorkItem(unit="trained"))
    else:
        shutil.copyfile(trained, layout.trained_index)
    train_s = time.perf_counter() - clock
    clock = time.perf_counter()
    add = AddShard(paths, layout.trained_index, layout.shards, plan)
    for s in shards:
        add(s)
    add_s = time.perf_counter() - clock
    catalog = {
        "format_version": FORMAT_VERSION,
        "name": root.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "embedder": {"model": "synthetic", "dim": plan.dim, "normalize": True},
        "index": plan.to_dict(),
        "chunk": None,
        "trained_index": {"file": layout.trained_index.name} | file_record(layout.trained_index),
        "shards": [s.model_dump(include={"name", "domain", "id_start", "count"}) for s in shards],
        "domains": {domain: {"passages": len(vectors), "shards": n_shards}},
    }
    write_json(layout.catalog, catalog)
    return {"catalog": catalog, "train_s": train_s, "add_s": add_s}
