"""Vectors to FAISS shard indexes: choose parameters from the data size, train once, add per shard.

Every shard of a datastore is a copy of one trained, empty index (``trained.faiss``: IVF coarse
centroids and PQ codebooks) with that shard's vectors added under their passage ids, so shards
can be searched independently, merged, or subsampled without retraining.

Parameter choice (``auto``):

* ``flat`` (exact inner product) up to ``index.flat_max`` vectors: 4·d bytes per vector.
* ``IVF{nlist},PQ{m}x{nbits}`` above it: nlist is the power of two nearest 4·√N, reduced until
  every centroid has at least 39 training points (FAISS's own minimum); m is the largest divisor of
  d not above min(64, d/4); the training sample is 64·nlist points (at least 39·2^nbits for the PQ
  codebooks), capped at N; nprobe defaults to ≈ 2·√nlist.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from massiveds.errors import MassiveDSError
from massiveds.layout import atomic_path
from massiveds.manifest import Index as IndexSpec

MIN_POINTS_PER_CENTROID = 39
TRAIN_POINTS_PER_CENTROID = 64


@dataclass(frozen=True)
class IndexPlan:
    """The index a datastore uses, with why it was chosen; stored in the catalog."""

    type: str
    dim: int
    metric: str
    factory: str
    nlist: int | None
    pq_m: int | None
    nbits: int | None
    train_sample: int
    nprobe: int | None
    bytes_per_vector: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Catalog record."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexPlan:
        """Inverse of ``to_dict``."""
        return cls(**data)


def _pow2_near(x: float) -> int:
    return 1 << max(0, round(math.log2(max(x, 1.0))))


def _pq_m(dim: int) -> int:
    cap = max(1, min(64, dim // 4))
    return max(m for m in range(1, cap + 1) if dim % m == 0)


def plan_index(n_vectors: int, dim: int, spec: IndexSpec) -> IndexPlan:
    """Choose the index type and parameters for ``n_vectors`` of dimension ``dim`` (see module doc)."""
    kind = spec.type
    if kind == "auto":
        kind = "flat" if n_vectors <= spec.flat_max else "ivfpq"
    if kind == "flat":
        reason = "type: flat" if spec.type == "flat" else f"{n_vectors} vectors <= flat_max {spec.flat_max}: exact search is affordable"
        return IndexPlan("flat", dim, "inner_product", "IDMap2,Flat", None, None, None, 0, None, 4.0 * dim + 8, reason)

    if spec.nlist == "auto":
        nlist = _pow2_near(4 * math.sqrt(n_vectors))
        while nlist > 1 and nlist * MIN_POINTS_PER_CENTROID > n_vectors:
            nlist //= 2
    else:
        nlist = spec.nlist
    m = _pq_m(dim) if spec.pq_m == "auto" else spec.pq_m
    if dim % m:
        raise MassiveDSError(f"index.pq_m {m} does not divide the embedding dimension {dim}; pick a divisor of {dim}")
    nbits = spec.nbits
    needed = max(nlist, 1 << nbits)
    if spec.train_sample == "auto":
        train = min(n_vectors, max(TRAIN_POINTS_PER_CENTROID * nlist, MIN_POINTS_PER_CENTROID * (1 << nbits)))
    else:
        train = min(n_vectors, spec.train_sample)
    if train < needed:
        raise MassiveDSError(
            f"IVF-PQ needs at least {needed} training vectors (nlist {nlist}, 2^nbits {1 << nbits}) but the build has {train}; "
            "use index.type: flat, or lower index.nlist / index.nbits"
        )
    nprobe = min(nlist, max(1, round(2 * math.sqrt(nlist)))) if spec.nprobe == "auto" else min(spec.nprobe, nlist)
    reason = (
        f"{n_vectors} vectors > flat_max {spec.flat_max}" if spec.type == "auto" else "type: ivfpq"
    ) + f"; nlist {nlist} ≈ 4·√N, PQ {m}x{nbits} = {m * nbits // 8} bytes/vector"
    return IndexPlan(
        "ivfpq", dim, "inner_product", f"IVF{nlist},PQ{m}x{nbits}", nlist, m, nbits, train, nprobe,
        m * nbits / 8 + 8, reason,
    )


def as_float32(x: np.ndarray) -> np.ndarray:
    """C-contiguous float32, the only layout FAISS accepts."""
    return np.ascontiguousarray(x, dtype=np.float32)


def train_index(plan: IndexPlan, sample: np.ndarray | None) -> faiss.Index:
    """Build the empty index of ``plan`` and train it on ``sample`` (on GPU when faiss-gpu sees one)."""
    index = faiss.index_factory(plan.dim, plan.factory, faiss.METRIC_INNER_PRODUCT)
    if plan.type == "flat":
        return index
    if sample is None or len(sample) < plan.train_sample:
        raise MassiveDSError(f"training needs {plan.train_sample} vectors, got {0 if sample is None else len(sample)}")
    if hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
        ivf = faiss.extract_index_ivf(index)
        ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(plan.dim))
    index.train(as_float32(sample))
    return index


def add_vectors(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, batch: int = 65536) -> None:
    """Add vectors under their passage ids, in batches to bound temporary memory."""
    for start in range(0, len(ids), batch):
        index.add_with_ids(as_float32(vectors[start : start + batch]), np.ascontiguousarray(ids[start : start + batch], dtype=np.int64))


def write_index(index: faiss.Index, path: Path) -> None:
    """Write an index atomically."""
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def read_index(path: Path, mmap: bool = True) -> faiss.Index:
    """Open an index; IVF inverted lists are memory-mapped when ``mmap`` (flat indexes are loaded)."""
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
    try:
        return faiss.read_index(str(path), flags)
    except RuntimeError:
        if not mmap:
            raise
        return faiss.read_index(str(path))


def set_nprobe(index: faiss.Index, nprobe: int | None) -> None:
    """Set nprobe on an IVF index (no-op for flat)."""
    if nprobe is None:
        return
    with contextlib.suppress(RuntimeError):  # not an IVF index
        faiss.extract_index_ivf(index).nprobe = int(nprobe)


def list_balance(index: faiss.Index) -> dict[str, float] | None:
    """Inverted-list balance of an IVF index: max and mean list size and FAISS's imbalance factor."""
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return None
    invlists = ivf.invlists
    assert invlists is not None
    sizes = np.array([invlists.list_size(i) for i in range(ivf.nlist)], dtype=np.int64)
    return {
        "max_list": int(sizes.max()),
        "mean_list": float(sizes.mean()),
        "empty_lists": int((sizes == 0).sum()),
        "imbalance": float(invlists.imbalance_factor()),
    }
