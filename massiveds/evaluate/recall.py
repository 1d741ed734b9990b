"""Recall of a datastore's index against exact search over its stored fp16 vectors.

Queries are stored passage vectors drawn with a seed (each query's own passage is held out of both
the exact and the approximate results), or texts embedded with the datastore's embedder. The exact
top-k is computed by brute force, streamed over the shards' memory-mapped vectors one block at a
time. recall@k is the fraction of the k returned passages whose exact score reaches the k-th exact
score (tie-aware: equal vectors are interchangeable), averaged over queries.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from massiveds.core.catalog import Catalog
from massiveds.core.errors import MassiveDSError
from massiveds.encode.index import as_float32
from massiveds.store.datastore import Datastore
from massiveds.store.dense import base_rerank_depth

DEFAULT_NPROBES = (1, 4, 16, 64)
DEFAULT_KS = (1, 10, 100)
#: Scores within this of the k-th exact score count as hits (fp32 sums in different orders differ by ~1e-7).
TIE_TOLERANCE = 1e-5
#: Query x database scores held at once by the brute force (floats).
EXACT_BLOCK_FLOATS = 1 << 24


@dataclass(frozen=True)
class RecallRow:
    """Recall at each k and throughput for one nprobe, with or without exact rerank."""

    nprobe: int | None
    rerank: bool
    recall: dict[int, float]
    queries_per_s: float


@dataclass(frozen=True)
class RecallReport:
    """What ``massiveds eval-recall`` measured."""

    datastore: str
    index: str
    queries: int
    query_source: str
    ks: list[int]
    default_nprobe: int | None
    rerank_depth: int
    exact_seconds: float
    rows: list[RecallRow]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON)."""
        return asdict(self)


def stored_vectors(ds: Datastore, ids: np.ndarray) -> np.ndarray:
    """The stored vectors of passage ``ids`` as float32, in the order given."""
    out = np.empty((len(ids), ds.shards[0].vectors.shape[1]), dtype=np.float32)
    for shard, where, rows in ds.shards.shard_rows(ids):
        out[where] = shard.vectors[rows]
    return out


def sample_query_ids(ds: Datastore, n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct passage ids drawn uniformly with ``seed`` (all of them when the datastore is smaller)."""
    n = min(n, ds.num_passages)
    picked = np.random.default_rng(seed).choice(ds.num_passages, size=n, replace=False)
    ranks = np.sort(picked)  # positions in id order -> ids (shards may leave gaps between id ranges)
    counts = np.array([s.count for s in ds.shards], dtype=np.int64)
    ends = np.cumsum(counts)
    shard = np.searchsorted(ends, ranks, side="right")
    before = ends - counts
    return np.concatenate([ds.shards[s].ids_of(ranks[shard == s] - before[s]) for s in np.unique(shard)]).astype(np.int64)


def exact_topk(ds: Datastore, queries: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` (scores, ids) by brute force over the stored vectors, one block of one shard in memory at a time.

    ``exclude`` (one passage id per query) is left out of that query's results.
    """
    queries = as_float32(queries)
    nq = len(queries)
    best_s = np.full((nq, k), -np.inf, dtype=np.float32)
    best_i = np.full((nq, k), -1, dtype=np.int64)
    block = max(1024, EXACT_BLOCK_FLOATS // max(1, nq))
    for shard in ds.shards:
        vectors = shard.vectors
        for lo in range(0, shard.count, block):
            hi = min(shard.count, lo + block)
            scores = queries @ np.asarray(vectors[lo:hi], dtype=np.float32).T
            ids = shard.ids_of(np.arange(lo, hi, dtype=np.int64))
            if exclude is not None:
                rows = shard.rows_of(exclude)
                mine = np.nonzero((rows >= lo) & (rows < hi))[0]
                scores[mine, rows[mine] - lo] = -np.inf
            all_s = np.concatenate([best_s, scores], axis=1)
            all_i = np.concatenate([best_i, np.broadcast_to(ids, scores.shape)], axis=1)
            top = np.argpartition(-all_s, k - 1, axis=1)[:, :k] if all_s.shape[1] > k else np.arange(all_s.shape[1])[None].repeat(nq, 0)
            best_s, best_i = np.take_along_axis(all_s, top, axis=1), np.take_along_axis(all_i, top, axis=1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_s, order, axis=1), np.take_along_axis(best_i, order, axis=1)


def recall_at(ds: Datastore, queries: np.ndarray, found: np.ndarray, exact_scores: np.ndarray, k: int) -> float:
    """Tie-aware recall@k of ``found`` ids against the exact top-k scores ``exact_scores`` (see module doc)."""
    top = found[:, :k]
    scores = ds.dense.exact_scores(queries, top)
    hits = (top >= 0) & (scores >= exact_scores[:, k - 1 : k] - TIE_TOLERANCE)
    return float(hits.sum() / (len(found) * k))


def _drop_self(ids: np.ndarray, own: np.ndarray | None, k: int) -> np.ndarray:
    """Each row without the query's own passage id, cut to ``k`` columns."""
    if own is None:
        return ids[:, :k]
    keep = ids != own[:, None]
    out = np.full((len(ids), k), -1, dtype=np.int64)
    for r in range(len(ids)):
        row = ids[r][keep[r]][:k]
        out[r, : len(row)] = row
    return out


@dataclass(frozen=True)
class QuerySet:
    """Queries with their exact top-k: what every recall measurement of one datastore compares against."""

    queries: np.ndarray
    own: np.ndarray | None
    source: str
    ks: list[int]
    exact_scores: np.ndarray
    exact_seconds: float


def query_set(ds: Datastore, n_queries: int, ks: list[int], seed: int = 0, query_texts: list[str] | None = None) -> QuerySet:
    """Stored passage vectors drawn with ``seed`` (own passage held out) or ``query_texts`` embedded, with their exact top-k."""
    ds.shards.require_vectors()
    if query_texts is not None:
        if not query_texts:
            raise MassiveDSError("the query file has no queries")
        queries, own, source = ds.embedder.encode_queries(query_texts), None, "query file texts embedded with the datastore's embedder"
    else:
        own = sample_query_ids(ds, n_queries, seed)
        queries, source = stored_vectors(ds, own), f"stored passage vectors (seed {seed}), own passage held out"
    queries = as_float32(queries)
    limit = ds.num_passages - (1 if own is not None else 0)
    usable = sorted({min(k, limit) for k in ks if k >= 1})
    if not usable or limit < 1:
        raise MassiveDSError(f"{ds.name}: too few passages ({ds.num_passages}) to measure recall")
    clock = time.perf_counter()
    exact_s, _ = exact_topk(ds, queries, usable[-1], exclude=own)
    return QuerySet(queries, own, source, usable, exact_s, time.perf_counter() - clock)


def measure(ds: Datastore, qs: QuerySet, nprobe: int | None, rerank_depth: int | None) -> RecallRow:
    """recall@k of ``qs`` at ``nprobe``, with exact rerank over ``rerank_depth`` candidates (None: no rerank), and queries/s."""
    kmax, extra = qs.ks[-1], 1 if qs.own is not None else 0
    clock = time.perf_counter()
    rerank = "exact" if rerank_depth is not None else None
    _, ids = ds.search_vectors(qs.queries, k=kmax + extra, nprobe=nprobe, rerank=rerank,
                               rerank_depth=None if rerank_depth is None else rerank_depth + extra)
    qps = len(qs.queries) / max(time.perf_counter() - clock, 1e-9)
    found = _drop_self(ids, qs.own, kmax)
    return RecallRow(nprobe, rerank is not None, {k: recall_at(ds, qs.queries, found, qs.exact_scores, k) for k in qs.ks}, qps)


def recall_report(
    ds: Datastore,
    n_queries: int = 1000,
    nprobes: list[int] | None = None,
    ks: list[int] | None = None,
    rerank: bool = True,
    rerank_depth: int | None = None,
    seed: int = 0,
    query_texts: list[str] | None = None,
) -> RecallReport:
    """Recall@k and queries/s of ``ds`` for each nprobe, without and (``rerank``) with exact rerank.

    The rerank depth is ``rerank_depth``, else the datastore's default for the largest k (``DenseRetriever.rerank_depth``).
    """
    qs = query_set(ds, n_queries, list(ks or DEFAULT_KS), seed, query_texts)
    default, nlist = ds.catalog.index.nprobe, ds.catalog.index.nlist
    probes: list[int | None]
    if ds.catalog.index.type == "flat":
        probes = [None]
    else:
        wanted = list(nprobes or DEFAULT_NPROBES) + ([default] if default and not nprobes else [])
        probes = [*sorted({min(p, nlist) if nlist else p for p in wanted})]
    depth = rerank_depth or ds.dense.rerank_depth(qs.ks[-1])
    rows = [measure(ds, qs, nprobe, depth if rr else None) for nprobe in probes for rr in ((False, True) if rerank else (False,))]
    return RecallReport(ds.name, ds.catalog.index.factory, len(qs.queries), qs.source, qs.ks, default, depth, qs.exact_seconds, rows)


def calibrate_rerank_depth(ds: Datastore, qs: QuerySet, nprobe: int | None, target: float) -> tuple[int, dict[int, RecallRow]]:
    """The smallest depth of a doubling ladder from max(4·k, 100) whose reranked recall@k reaches ``target``, and each depth's row.

    The ladder stops at ``MAX_CALIBRATED_DEPTH`` or when a depth covers every passage, whichever comes first.
    """
    k = qs.ks[-1]
    depth, tried = base_rerank_depth(k), {}
    while True:
        tried[depth] = measure(ds, qs, nprobe, depth)
        if tried[depth].recall[k] >= target or depth >= min(MAX_CALIBRATED_DEPTH, ds.num_passages):
            return depth, tried
        depth *= 2


def shard_sample(catalog: Catalog, max_vectors: int, seed: int = 0) -> Catalog:
    """The catalog over a seeded sample of its shards holding at most ``max_vectors`` (at least one shard), or itself if it fits.

    Brute force over every stored vector is what makes a recall measurement exact; past a few million
    vectors it is measured on a sample of whole shards (same trained quantizer and codebooks).
    """
    shards = catalog.shards
    if catalog.num_passages <= max_vectors:
        return catalog
    picked: list[int] = []
    total = 0
    for i in np.random.default_rng(seed).permutation(len(shards)):
        if not picked or total + shards[i].count <= max_vectors:
            picked.append(int(i))
            total += shards[i].count
    return catalog.but(shards=[shards[i] for i in sorted(picked)])


#: The reranked recall@k a build calibrates its default rerank depth to reach, and the deepest rerank it tries.
RERANK_TARGET = 0.97
MAX_CALIBRATED_DEPTH = 6400
#: The fewest passages a build measures its recall on (below, the catalog says it was skipped and why).
MIN_RECALL_PASSAGES = 2


def recall_summary(
    datastore_path: str | Path,
    catalog: Catalog | None = None,
    n_queries: int = 1000,
    k: int = 10,
    seed: int = 0,
    max_vectors: int = 2_000_000,
    rerank_depth: int | None = None,
) -> dict[str, Any]:
    """recall@``k`` at the default nprobe without rerank, and the rerank depth that reaches ``RERANK_TARGET``, for the catalog.

    The depth found is the datastore's default for exact rerank (``DenseRetriever.rerank_depth``): how many
    candidates PQ codes must be rescored depends on the embeddings, so it is measured rather than fixed. With
    ``rerank_depth`` (an append's new shards, measured at the datastore's own depth) nothing is calibrated.

    ``catalog`` lets the build measure before ``datastore.json`` is written; without it the file is read.
    Datastores over ``max_vectors`` are measured on a sample of their shards (``shard_sample``).
    """
    full = Datastore.open(datastore_path).catalog if catalog is None else catalog
    scoped = shard_sample(full, max_vectors, seed)
    ds = Datastore(Path(datastore_path), scoped)
    if not all(s.has_vectors for s in ds.shards):
        return {"status": "skipped", "reason": "no stored vectors (embed.store_vectors: false)"}
    if ds.num_passages < MIN_RECALL_PASSAGES:  # a query is held out of its own results: one passage leaves nothing to find
        return {"status": "skipped", "reason": f"{ds.num_passages} passage(s): too few to measure recall (needs {MIN_RECALL_PASSAGES})"}
    default = ds.catalog.index.nprobe
    qs = query_set(ds, n_queries, [k], seed)
    plain = measure(ds, qs, default, None)
    k_used = qs.ks[0]
    if rerank_depth is None:
        depth, tried = calibrate_rerank_depth(ds, qs, default, RERANK_TARGET)
    else:
        depth, tried = rerank_depth, {rerank_depth: measure(ds, qs, default, rerank_depth)}
    return {
        "status": "measured",
        "k": k_used,
        "nprobe": default,
        "queries": len(qs.queries),
        "query_source": qs.source,
        "shards_measured": len(scoped.shards),
        "vectors_measured": scoped.num_passages,
        f"recall_at_{k_used}": round(plain.recall[k_used], 4),
        f"recall_at_{k_used}_rerank": round(tried[depth].recall[k_used], 4),
        "rerank_depth": depth,
        "rerank_target": RERANK_TARGET,
        "rerank_recall_by_depth": {str(d): round(row.recall[k_used], 4) for d, row in tried.items()},
        "queries_per_s": round(plain.queries_per_s, 1),
        "queries_per_s_rerank": round(tried[depth].queries_per_s, 1),
    }
