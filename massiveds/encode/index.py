"""Vectors to FAISS shard indexes: choose parameters from the data size, train once, add per shard.

Every shard of a datastore is a copy of one trained, empty index (``trained.faiss``: IVF coarse
centroids and PQ codebooks) with that shard's vectors added under their passage ids, so shards
can be searched independently, merged, or subsampled without retraining.

Parameter choice (``auto``; ``plan_index``, printed by ``massiveds plan``):

* ``flat`` (exact inner product, ``IDMap2,Flat``) up to ``index.flat_max`` vectors (200 000) when it
  fits ``index.memory_budget_gb``: 4·d + 8 bytes per vector (plus ~40 for the id map).
* ``IVF{nlist},PQ{m}x{nbits}`` above it. nlist is the power of two nearest 4·√N up to 10 M vectors
  and 16·√N above (at most 2^20), halved until every centroid has 39 training points. From 65 536
  lists the coarse quantizer is an HNSW graph (``IVF{nlist}_HNSW32``: assigning a query or a vector
  costs log(nlist), not nlist) and PQ gets an OPQ rotation (``OPQ{m},...``), as in FAISS's
  billion-scale recipes. m is the largest divisor of d not above min(64, d/4); with a memory budget,
  the largest such divisor (at least 8) whose codes, ids and quantizer fit it. The training sample is
  64·nlist, capped at 2^22 vectors but never below 30·nlist (and at least 39·2^nbits for the PQ
  codebooks). nprobe defaults to ≈ 2·√nlist (at most 1024). Each vector costs m·nbits/8 code bytes
  plus an 8-byte id in the inverted lists. From 1,024 lists on, adding finds each vector's list through an HNSW
  graph of the centroids built for the add (``_graph_quantizer``), so adding costs log(nlist) per vector while the
  index keeps its flat quantizer for search.

Tiers at d = 384 (all-MiniLM-L6-v2), no budget; RAM = lists resident + quantizer, fp16 = stored
vectors for exact rerank, train = float32 training sample:

==========  ==================================  =====  =========  ==========  ===================
vectors     index                               B/vec  RAM        fp16 disk   train sample
==========  ==================================  =====  =========  ==========  ===================
1 M         IVF4096,PQ64x8                      72     75 MB      0.7 GB      262 144 (0.4 GB)
100 M       OPQ64,IVF131072_HNSW32,PQ64x8       72     6.9 GB     72 GB       4.2 M (6 GB)
1 B         OPQ64,IVF524288_HNSW32,PQ64x8       72     68 GB      715 GB      15.7 M (22.5 GB)
10 B        OPQ64,IVF1048576_HNSW32,PQ64x8      72     672 GB     7.0 TB      31.5 M (45 GB)
10 B, 512G  OPQ32,IVF1048576_HNSW32,PQ32x8      40     374 GB     7.0 TB      31.5 M (45 GB)
==========  ==================================  =====  =========  ==========  ===================

At d = 768 the RAM is the same per vector (PQ64 = 64 bytes) and fp16 disk and training sample
double; 10 B vectors at d = 768 with ``memory_budget_gb: 512`` get PQ32 (40 B/vector, 376 GB).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from massiveds.core.catalog import IndexRecord
from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import atomic_path
from massiveds.core.manifest import Index as IndexSpec

MIN_POINTS_PER_CENTROID = 39
TRAIN_POINTS_PER_CENTROID = 64
#: Fewest training points per centroid accepted when the sample is capped (FAISS warns below 39, recipes use 30+).
MIN_TRAIN_PER_CENTROID = 30
#: The training sample stops growing at 64·nlist here (6.4 GB of float32 at d=384) unless 30·nlist needs more.
TRAIN_CAP = 1 << 22
#: Above this many vectors nlist grows as 16·√N (with an HNSW coarse quantizer) instead of 4·√N.
LARGE_N = 10_000_000
MAX_NLIST = 1 << 20
#: From this many lists the coarse quantizer is an HNSW graph and PQ gets an OPQ rotation (``auto``).
HNSW_MIN_NLIST = 65536
#: From this many lists ``coarse_training: auto`` trains the centroids in two levels.
TWO_LEVEL_MIN_NLIST = 8192
#: Residuals a PQ code is trained on (FAISS's ``max_points_per_centroid`` for PQ).
PQ_TRAIN_PER_CODE = 256
HNSW_M = 32
MAX_NPROBE = 1024
#: The smallest PQ accepted when fitting a memory budget (bytes of code per vector).
MIN_PQ_M = 8
GB = 1 << 30
#: ``IDMap2,Flat`` keeps a hash map from id to row beside the vectors (about this many bytes per entry).
IDMAP2_MAP_BYTES = 40


class IndexPlan(IndexRecord):
    """The index a datastore uses, with why it was chosen: the catalog's ``index`` record, made by ``plan_index``."""

    def to_dict(self) -> dict[str, Any]:
        """Catalog record."""
        return self.as_json()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexPlan:
        """Inverse of ``to_dict``."""
        return cls.model_validate(data)


@dataclass(frozen=True)
class Footprint:
    """Bytes an index of ``n_vectors`` takes: to serve from RAM, on disk, and to train."""

    n_vectors: int
    bytes_per_vector: float
    vectors_bytes: int
    quantizer_bytes: int
    serve_bytes: int
    index_disk_bytes: int
    fp16_vectors_disk_bytes: int
    train_sample_bytes: int

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON)."""
        return asdict(self)


@dataclass(frozen=True)
class PlanReport:
    """A plan with its footprint and whether it fits the memory budget: what ``massiveds plan`` prints."""

    plan: IndexPlan
    footprint: Footprint
    fits_budget: bool | None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON)."""
        return {"plan": self.plan.to_dict(), "footprint": self.footprint.to_dict(), "fits_budget": self.fits_budget}


def _pow2_near(x: float) -> int:
    return 1 << max(0, round(math.log2(max(x, 1.0))))


def _divisors_desc(dim: int, cap: int) -> list[int]:
    return [m for m in range(min(cap, dim), 0, -1) if dim % m == 0]


def _pq_m(dim: int) -> int:
    return _divisors_desc(dim, max(1, min(64, dim // 4)))[0]


def _auto_nlist(n_vectors: int) -> int:
    nlist = min(MAX_NLIST, _pow2_near((16 if n_vectors > LARGE_N else 4) * math.sqrt(n_vectors)))
    while nlist > 1 and nlist * MIN_POINTS_PER_CENTROID > n_vectors:
        nlist //= 2
    return nlist


def _auto_train(n_vectors: int, nlist: int, nbits: int) -> int:
    target = max(MIN_TRAIN_PER_CENTROID * nlist, min(TRAIN_POINTS_PER_CENTROID * nlist, TRAIN_CAP))
    return min(n_vectors, max(target, MIN_POINTS_PER_CENTROID * (1 << nbits)))


def quantizer_bytes(dim: int, nlist: int, coarse: str, pq_m: int, nbits: int, opq: bool) -> int:
    """RAM of everything but the per-vector codes: centroids, HNSW graph, list headers, PQ codebooks, OPQ matrix."""
    graph = nlist * (2 * HNSW_M * 4 + 16) if coarse == "hnsw" else 0
    return nlist * dim * 4 + graph + nlist * 48 + (1 << nbits) * dim * 4 + (dim * dim * 4 if opq else 0)


def footprint(plan: IndexPlan, n_vectors: int) -> Footprint:
    """Memory and disk of ``plan`` holding ``n_vectors`` (IVF lists resident; fp16 vectors kept for rerank)."""
    per_vector = plan.bytes_per_vector
    vectors = math.ceil(n_vectors * per_vector)
    if plan.type == "flat":
        quant = 0
        serve = vectors + n_vectors * IDMAP2_MAP_BYTES
    else:
        assert plan.nlist is not None and plan.pq_m is not None and plan.nbits is not None
        quant = quantizer_bytes(plan.dim, plan.nlist, plan.coarse or "flat", plan.pq_m, plan.nbits, plan.opq)
        serve = vectors + quant
    fp16, train = n_vectors * plan.dim * 2, plan.train_sample * plan.dim * 4
    return Footprint(n_vectors, per_vector, vectors, quant, serve, vectors + quant, fp16, train)


def _flat_plan(n_vectors: int, dim: int, reason: str, budget: float | None) -> IndexPlan:
    return IndexPlan(type="flat", dim=dim, metric="inner_product", factory="IDMap2,Flat", nlist=None, pq_m=None, nbits=None, train_sample=0,
                     nprobe=None, bytes_per_vector=4.0 * dim + 8, reason=reason, coarse=None, opq=False, memory_budget_gb=budget)


def _fits(n_vectors: int, dim: int, nlist: int, coarse: str, m: int, nbits: int, opq: bool, budget: float) -> bool:
    codes = n_vectors * (math.ceil(m * nbits / 8) + 8)
    return codes + quantizer_bytes(dim, nlist, coarse, m, nbits, opq) <= budget * GB


def plan_index(n_vectors: int, dim: int, spec: IndexSpec, memory_budget_gb: float | None = None) -> IndexPlan:
    """Choose the index type and parameters for ``n_vectors`` of dimension ``dim`` within the memory budget (see module doc).

    ``memory_budget_gb`` overrides ``spec.memory_budget_gb``; None means no limit.
    """
    budget = memory_budget_gb if memory_budget_gb is not None else spec.memory_budget_gb
    kind = spec.type
    flat_bytes = n_vectors * (4 * dim + 8 + IDMAP2_MAP_BYTES)
    if kind == "auto":
        small = n_vectors <= spec.flat_max
        kind = "flat" if small and (budget is None or flat_bytes <= budget * GB) else "ivfpq"
    if kind == "flat":
        if budget is not None and flat_bytes > budget * GB:
            raise MassiveDSError(
                f"a flat index of {n_vectors} vectors (dim {dim}) needs {flat_bytes / GB:.2f} GB, over index.memory_budget_gb {budget}; "
                "use index.type: auto or ivfpq"
            )
        if spec.type == "flat":
            reason = "type: flat"
        else:
            reason = f"{n_vectors} vectors <= flat_max {spec.flat_max}: exact search is affordable"
            reason += f" ({flat_bytes / GB:.2f} GB within the {budget} GB budget)" if budget is not None else ""
        return _flat_plan(n_vectors, dim, reason, budget)

    nlist = _auto_nlist(n_vectors) if spec.nlist == "auto" else spec.nlist
    coarse = ("hnsw" if nlist >= HNSW_MIN_NLIST else "flat") if spec.coarse == "auto" else spec.coarse
    opq = nlist >= HNSW_MIN_NLIST if spec.opq == "auto" else bool(spec.opq)
    levels = ("two-level" if nlist >= TWO_LEVEL_MIN_NLIST else "kmeans") if spec.coarse_training == "auto" else spec.coarse_training
    nbits = spec.nbits
    budget_note = ""
    if spec.pq_m != "auto":
        m = spec.pq_m
        if dim % m:
            raise MassiveDSError(f"index.pq_m {m} does not divide the embedding dimension {dim}; pick a divisor of {dim}")
        if budget is not None and not _fits(n_vectors, dim, nlist, coarse, m, nbits, opq, budget):
            raise MassiveDSError(f"PQ{m}x{nbits} over {n_vectors} vectors does not fit index.memory_budget_gb {budget}; lower index.pq_m")
    else:
        m = _pq_m(dim)
        if budget is not None:
            candidates = [c for c in _divisors_desc(dim, m) if c >= min(MIN_PQ_M, dim)]
            fitting = [c for c in candidates if _fits(n_vectors, dim, nlist, coarse, c, nbits, opq, budget)]
            if not fitting:
                smallest = min(MIN_PQ_M, dim)
                need = n_vectors * (math.ceil(smallest * nbits / 8) + 8) + quantizer_bytes(dim, nlist, coarse, smallest, nbits, opq)
                raise MassiveDSError(
                    f"{n_vectors} vectors need at least {need / GB:.1f} GB even with PQ{smallest}x{nbits}, over index.memory_budget_gb "
                    f"{budget}; raise the budget or split the datastore"
                )
            if fitting[0] != m:
                budget_note = f", PQ{m} would exceed the {budget} GB budget"
            m = fitting[0]
    needed = max(nlist, 1 << nbits)
    train = _auto_train(n_vectors, nlist, nbits) if spec.train_sample == "auto" else min(n_vectors, spec.train_sample)
    if train < needed:
        raise MassiveDSError(
            f"IVF-PQ needs at least {needed} training vectors (nlist {nlist}, 2^nbits {1 << nbits}) but the build has {train}; "
            "use index.type: flat, or lower index.nlist / index.nbits"
        )
    nprobe = min(nlist, MAX_NPROBE, max(1, round(2 * math.sqrt(nlist)))) if spec.nprobe == "auto" else min(spec.nprobe, nlist)
    code = math.ceil(m * nbits / 8)
    quant = f"IVF{nlist}_HNSW{HNSW_M}" if coarse == "hnsw" else f"IVF{nlist}"
    factory = f"{f'OPQ{m},' if opq else ''}{quant},PQ{m}x{nbits}"
    if spec.type == "auto":
        why = f"{n_vectors} vectors > flat_max {spec.flat_max}" if n_vectors > spec.flat_max else "a flat index exceeds the memory budget"
    else:
        why = "type: ivfpq"
    rule = "16·√N" if n_vectors > LARGE_N else "4·√N"
    why += f"; nlist {nlist}" + (f" ≈ {rule}" if spec.nlist == "auto" else "")
    why += f"; {'HNSW' if coarse == 'hnsw' else 'flat'} coarse quantizer" + ("; OPQ rotation" if opq else "")
    if levels == "two-level":
        groups = math.isqrt(nlist)
        why += f"; centroids trained in two levels ({groups} groups, then the lists within each: ~{nlist // (2 * groups)}x less work)"
    why += f"; PQ {m}x{nbits} = {code} bytes/vector{budget_note}"
    return IndexPlan(type="ivfpq", dim=dim, metric="inner_product", factory=factory, nlist=nlist, pq_m=m, nbits=nbits, train_sample=train,
                     nprobe=nprobe, bytes_per_vector=code + 8, reason=why, coarse=coarse, opq=opq, memory_budget_gb=budget,
                     coarse_training=levels)


def plan_report(n_vectors: int, dim: int, spec: IndexSpec | None = None, memory_budget_gb: float | None = None) -> PlanReport:
    """The plan for ``n_vectors`` with its footprint and budget check; a pure function (``massiveds plan``)."""
    plan = plan_index(n_vectors, dim, spec or IndexSpec(), memory_budget_gb)
    fp = footprint(plan, n_vectors)
    budget = plan.memory_budget_gb
    return PlanReport(plan, fp, None if budget is None else fp.serve_bytes <= budget * GB)


def flat_report(n_vectors: int, dim: int, memory_budget_gb: float | None = None) -> PlanReport:
    """An exact ``IDMap2,Flat`` index of ``n_vectors`` whatever its size: the reference cost an IVF-PQ plan avoids."""
    plan = _flat_plan(n_vectors, dim, "exact search, for comparison", memory_budget_gb)
    fp = footprint(plan, n_vectors)
    return PlanReport(plan, fp, None if memory_budget_gb is None else fp.serve_bytes <= memory_budget_gb * GB)


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
    sample = as_float32(sample)
    ivfpq: Any = faiss.downcast_index(faiss.extract_index_ivf(index))
    if hasattr(ivfpq, "do_polysemous_training"):  # IVF-PQ
        ivfpq.do_polysemous_training = False  # FAISS's default with 8-bit codes: seconds per sub-quantizer, for a search we never run
    if plan.coarse_training == "two-level":
        assert plan.nbits is not None
        _train_two_level(index, sample, plan.nbits)
    else:
        index.train(sample)
    return index


def _train_two_level(index: faiss.Index, sample: np.ndarray, nbits: int) -> None:
    """Train ``index`` with its IVF centroids from ``two_level_centroids``: FAISS's own train then finds its quantizer full
    (``Level1Quantizer`` skips a quantizer holding ``nlist`` trained centroids) and trains only the rest: PQ on residuals."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):  # OPQ: rotate first, then the IVF-PQ below sees rotated vectors
        chain: Any = index.chain
        for k in range(chain.size()):
            transform = chain.at(k)
            transform.train(sample)
            sample = transform.apply(sample)
        _train_two_level(index.index, sample, nbits)
        index.is_trained = True
        return
    ivf = faiss.extract_index_ivf(index)
    centroids = two_level_centroids(sample, int(ivf.nlist))
    ivf.quantizer.train(centroids)
    ivf.quantizer.add(centroids)
    assert ivf.quantizer.ntotal == ivf.nlist
    # PQ trains on at most 256 points per code (FAISS's own cap): assigning the whole sample to every list first would
    # cost as much as the one-level k-means this replaces
    keep = np.random.default_rng(0).permutation(len(sample))[: PQ_TRAIN_PER_CODE << nbits]
    index.train(np.ascontiguousarray(sample[np.sort(keep)]))


def two_level_centroids(sample: np.ndarray, nlist: int, niter: int = 20, seed: int = 1234) -> np.ndarray:
    """``nlist`` inner-product k-means centroids of ``sample`` in two levels: ``g = ⌊√nlist⌋`` group centroids, then each group's
    points split into lists, as many as the group's share of the sample (at least one each; rounding keeps the total).

    One k-means over every list costs n·nlist distances an iteration; this costs n·g for the groups plus Σ n_i·l_i within
    them, about n·(g + nlist/g) ≈ 2·n·√nlist: 64x less at 16,384 lists. The centroids are a little worse (a point's list
    is chosen within its group), which nprobe absorbs: BENCHMARKS.md, "Training the coarse quantizer", has the recall.
    """
    n, dim = sample.shape
    groups = min(math.isqrt(nlist), n)
    top = faiss.Kmeans(dim, groups, niter=niter, seed=seed, spherical=True, max_points_per_centroid=1 << 30, min_points_per_centroid=1)
    top.train(sample)
    assert top.centroids is not None
    _, assign = top.index.search(sample, 1)
    assign = assign.ravel()
    sizes = np.bincount(assign, minlength=groups)
    quota = sizes / n * nlist
    share = np.where(sizes > 0, np.maximum(1, np.floor(quota)), 0).astype(np.int64)
    while share.sum() < nlist:  # what rounding left over goes to the groups furthest below their quota
        share[np.argmax(quota - share)] += 1
    while share.sum() > nlist:  # the minimum of one list a group went over: take back from the largest
        share[np.argmax(share)] -= 1
    share = np.minimum(share, sizes)  # never more lists than points in a group
    order = np.argsort(assign, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    pieces = []
    for g in range(groups):
        if share[g] == 0:
            continue
        points = sample[order[bounds[g] : bounds[g + 1]]]
        if share[g] == 1:
            pieces.append(top.centroids[g : g + 1])
            continue
        inner = faiss.Kmeans(dim, int(share[g]), niter=niter, seed=seed + g, spherical=True, max_points_per_centroid=1 << 30,
                             min_points_per_centroid=1)
        inner.train(points)
        assert inner.centroids is not None
        pieces.append(inner.centroids)
    centroids = np.ascontiguousarray(np.concatenate(pieces), dtype=np.float32)
    if len(centroids) < nlist:  # groups smaller than their share: the missing lists are sample points not yet centroids
        extra = sample[np.random.default_rng(seed).choice(n, size=nlist - len(centroids), replace=False)]
        centroids = np.concatenate([centroids, extra])
    return centroids[:nlist]


#: from this many lists on, ``add_vectors`` finds each vector's list through an HNSW graph of the centroids
ASSIGN_GRAPH_MIN_LISTS = 1024
#: the graph's search breadth: more than 99.5 % of vectors reach the list a full scan finds
ASSIGN_GRAPH_EF = 16


def assigns_through_graph(index: faiss.Index) -> bool:
    """Whether ``add_vectors`` finds lists through a centroid graph: an IVF index of a flat quantizer, many lists."""
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:  # no IVF inside (flat)
        return False
    return ivf.nlist >= ASSIGN_GRAPH_MIN_LISTS and isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexFlat)


@contextlib.contextmanager
def _graph_quantizer(index: faiss.Index) -> Iterator[None]:
    """Within the block, ``index`` assigns vectors to lists through an HNSW graph of its centroids, then its flat quantizer
    is back. A flat quantizer compares a vector with every centroid, so adding costs grow with nlist (∝ √N); the graph
    visits about efSearch·log(nlist). Searches keep the flat quantizer: queries are few and want the exact lists."""
    if not assigns_through_graph(index):
        yield
        return
    ivf = faiss.extract_index_ivf(index)
    flat = ivf.quantizer
    graph = faiss.IndexHNSWFlat(ivf.d, HNSW_M, ivf.metric_type)
    graph.hnsw.efSearch = ASSIGN_GRAPH_EF
    graph.add(flat.reconstruct_n(0, flat.ntotal))
    ivf.quantizer = graph  # a borrowed pointer: ``graph`` outlives the block, and the flat one is put back below
    try:
        yield
    finally:
        ivf.quantizer = flat


def add_vectors(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, batch: int = 65536) -> None:
    """Add vectors under their passage ids, in batches to bound temporary memory, through ``_graph_quantizer``."""
    with _graph_quantizer(index):
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
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:  # not an IVF index
        return
    ivf.nprobe = int(nprobe)
    quantizer = faiss.downcast_index(ivf.quantizer)
    if isinstance(quantizer, faiss.IndexHNSW):  # the graph must explore at least as many centroids as are probed
        quantizer.hnsw.efSearch = max(64, 2 * int(nprobe))


def ivf_list_sizes(index: faiss.Index) -> np.ndarray | None:
    """Entries in each inverted list of an IVF index (None for a flat index)."""
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return None
    invlists = ivf.invlists
    assert invlists is not None
    return np.fromiter((invlists.list_size(i) for i in range(ivf.nlist)), dtype=np.int64, count=ivf.nlist)


def list_balance(index: faiss.Index) -> dict[str, float] | None:
    """Inverted-list balance of an IVF index: max and mean list size and FAISS's imbalance factor."""
    sizes = ivf_list_sizes(index)
    if sizes is None:
        return None
    invlists = faiss.extract_index_ivf(index).invlists
    assert invlists is not None
    return {
        "max_list": int(sizes.max()),
        "mean_list": float(sizes.mean()),
        "empty_lists": int((sizes == 0).sum()),
        "imbalance": float(invlists.imbalance_factor()),
    }
