"""Search with options: candidate retrieval that grows until enough hits survive, then post-processing.

A search reads ``Retrievers`` (the shards it may hit, ``DenseRetriever`` and ``BM25Retriever`` over them, the
query embedder), which ``Datastore.retrievers`` composes for the domains asked; calls go down into them, never
back. One batch of queries is embedded once and searched together in the dense index, the BM25 index or both
fused (``massiveds.store.fusion``), as ``mode`` says. Options that drop hits (``fraction``, ``decontaminate``, ``dedup``)
retrieve more candidates than asked; when fewer than needed survive, the queries short of hits are
searched again with a larger candidate count, until each has enough or its reachable candidates are
exhausted. The post-processing order is subsample (by passage id, before any passage is read) ->
decontaminate -> dedup -> MMR (or top ``k``) -> continuation; the steps over hit lists are the pure
functions of ``massiveds.store.postprocess``.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from massiveds.core.errors import MassiveDSError
from massiveds.encode.embed import Embedder
from massiveds.store.bm25 import BM25Retriever
from massiveds.store.cross_encoder import DEFAULT_DEPTH, cross_encoder
from massiveds.store.cross_encoder import PREFIX as CROSS_ENCODER
from massiveds.store.dense import DenseRetriever
from massiveds.store.fusion import FUSIONS, Fused, candidates, fuse
from massiveds.store.hit import Hit
from massiveds.store.postprocess import (
    GoldIndex,
    attach_continuations,
    continuation_ids,
    decontaminate_hits,
    dedup_hits,
    mmr,
    rerank_hits,
)
from massiveds.store.sampling import check_fraction
from massiveds.store.shard_set import ShardSet


@dataclass(frozen=True)
class Retrievers:
    """What one search reads: the shards it may hit, dense retrieval and BM25 over them, and the query embedder."""

    shards: ShardSet
    dense: DenseRetriever
    #: None when the datastore has no BM25 index
    bm25: BM25Retriever | None
    embedder: Callable[[], Embedder]


#: Most hits one query may ask for, and most candidates one query may retrieve while growing.
MAX_K = 10_000
MAX_CANDIDATES = 100_000
#: MMR chooses ``k`` hits among ``max(MMR_POOL_FACTOR * k, MMR_MIN_POOL)`` candidates.
MMR_POOL_FACTOR, MMR_MIN_POOL = 4, 20
#: What ``rerank`` takes: exact inner product over the dense candidates, a cross-encoder over the hits, or both in that order.
RERANK_FORMS = ("exact", f"{CROSS_ENCODER}<model>", f"exact+{CROSS_ENCODER}<model>")
#: Most hits a cross-encoder may score per query.
MAX_RERANK_DEPTH = 1000
#: Search modes: the dense index, the BM25 index, or both fused (``massiveds.store.fusion``).
MODES = ("dense", "sparse", "hybrid")
#: Hybrid's weight of the dense score: the best of 0, 0.1, ..., 1 on a QA set (BENCHMARKS.md, "Hybrid retrieval").
DEFAULT_ALPHA = 0.5
#: Hybrid takes at least this many candidates from each list, and at least ``HYBRID_DEPTH_FACTOR`` × k.
HYBRID_MIN_DEPTH, HYBRID_DEPTH_FACTOR = 100, 4


@dataclass(frozen=True)
class SearchOptions:
    """How to search: hit count, shards, IVF probes and post-retrieval options (validated by ``create``)."""

    k: int = 10
    nprobe: int | None = None
    domains: tuple[str, ...] | None = None
    dedup: bool = False
    dedup_threshold: float = 0.8
    decontaminate: tuple[str, ...] = ()
    fraction: float | None = None
    seed: int = 0
    mmr: float | None = None
    continuation: bool = False
    rerank: str | None = None
    rerank_depth: int = DEFAULT_DEPTH
    strict: bool = False
    mode: str | None = None
    alpha: float = DEFAULT_ALPHA
    fusion: str = "convex"

    @classmethod
    def create(
        cls,
        k: int = 10,
        nprobe: int | None = None,
        domains: str | Sequence[str] | None = None,
        dedup: bool = False,
        dedup_threshold: float = 0.8,
        decontaminate: str | Sequence[str] | None = None,
        fraction: float | None = None,
        seed: int = 0,
        mmr: float | None = None,
        continuation: bool = False,
        rerank: str | None = None,
        rerank_depth: int = DEFAULT_DEPTH,
        strict: bool = False,
        mode: str | None = None,
        alpha: float | None = None,
        fusion: str = "convex",
    ) -> SearchOptions:
        """Validated options; a bad value raises MassiveDSError naming the option."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise MassiveDSError(f"k must be an integer in [1, {MAX_K}], got {k!r}")
        if nprobe is not None and (isinstance(nprobe, bool) or not isinstance(nprobe, int) or nprobe < 1):
            raise MassiveDSError(f"nprobe must be a positive integer, got {nprobe!r}")
        doms = None if domains is None else ((domains,) if isinstance(domains, str) else tuple(domains))
        if doms is not None and (not doms or not all(isinstance(d, str) and d for d in doms)):
            raise MassiveDSError(f"domains must be one or more domain names, got {domains!r}")
        if not 0 < dedup_threshold <= 1:
            raise MassiveDSError(f"dedup threshold must be in (0, 1], got {dedup_threshold}")
        golds = () if decontaminate is None else ((decontaminate,) if isinstance(decontaminate, str) else tuple(decontaminate))
        if not all(isinstance(g, str) and g.strip() for g in golds):
            raise MassiveDSError("decontaminate: gold texts must be non-empty strings")
        if fraction is not None:
            check_fraction(fraction)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise MassiveDSError(f"seed must be a non-negative integer, got {seed!r}")
        if mmr is not None and not 0 <= mmr <= 1:
            raise MassiveDSError(f"mmr lambda must be in [0, 1] (1 = plain ranking, lower = more diverse), got {mmr}")
        exact, _ = rerank_steps(rerank)
        if isinstance(rerank_depth, bool) or not isinstance(rerank_depth, int) or not 1 <= rerank_depth <= MAX_RERANK_DEPTH:
            raise MassiveDSError(f"rerank_depth must be an integer in [1, {MAX_RERANK_DEPTH}], got {rerank_depth!r}")
        if mode is not None and mode not in MODES:
            raise MassiveDSError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "sparse" and exact:
            raise MassiveDSError("rerank exact refines dense scores and mode sparse has none: drop it, use mode hybrid, or rerank "
                                 f"with a cross-encoder ({CROSS_ENCODER}<model>)")
        alpha = DEFAULT_ALPHA if alpha is None else alpha
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
            raise MassiveDSError(f"alpha (the dense weight of hybrid fusion) must be in [0, 1], got {alpha!r}")
        if fusion not in FUSIONS:
            raise MassiveDSError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        return cls(k, nprobe, doms, bool(dedup), float(dedup_threshold), golds, fraction, seed, mmr, bool(continuation), rerank,
                   rerank_depth, bool(strict), mode, float(alpha), fusion)

    @classmethod
    def fields(cls) -> dict[str, Any]:
        """The options and their types, as declared here: what ``Datastore.search`` and the server take besides the query."""
        return typing.get_type_hints(cls)

    @property
    def exact(self) -> bool:
        """Whether the dense candidates are re-scored by exact inner product (``rerank`` exact)."""
        return rerank_steps(self.rerank)[0]

    @property
    def cross_encoder(self) -> str | None:
        """The cross-encoder that reranks the hits, if ``rerank`` names one."""
        return rerank_steps(self.rerank)[1]

    @property
    def mmr_pool(self) -> int:
        """The hits MMR chooses ``k`` among."""
        return max(MMR_POOL_FACTOR * self.k, MMR_MIN_POOL)

    @property
    def pool(self) -> int:
        """Hits each query needs after filtering: ``k``, the MMR candidate pool, or the cross-encoder's depth when deeper."""
        pool = self.mmr_pool if self.mmr is not None else self.k
        return max(pool, self.rerank_depth) if self.cross_encoder is not None else pool

    def first_fetch(self, deleted_share: float = 0.0) -> int:
        """Candidates to retrieve on the first try, in a datastore with ``deleted_share`` of its passages deleted."""
        fetch = self.pool
        if deleted_share:
            fetch = math.ceil(fetch / (1 - deleted_share) * 1.2) + 4
        if self.fraction is not None and self.fraction < 1:
            fetch = math.ceil(fetch / self.fraction * 1.2) + 4
        if self.dedup or self.decontaminate:
            fetch *= 2
        return min(fetch, MAX_CANDIDATES)


@dataclass
class SearchResult:
    """Hits per query, the shards left out (``{name: reason}``) and per-query counts of what was examined and dropped."""

    hits: list[list[Hit]]
    skipped_shards: dict[str, str] = field(default_factory=dict)
    candidates: list[int] = field(default_factory=list)
    dropped: list[dict[str, int]] = field(default_factory=list)


def rerank_steps(rerank: str | None) -> tuple[bool, str | None]:
    """``rerank`` as (exact rerank of the dense candidates, the cross-encoder after it); raises on a form not in ``RERANK_FORMS``."""
    if rerank is None:
        return False, None
    if isinstance(rerank, str):
        exact, _, model = rerank.partition("+") if rerank.startswith("exact+") else ("", "", rerank)
        if model == "exact" and not exact:
            return True, None
        if model.startswith(CROSS_ENCODER) and model[len(CROSS_ENCODER):].strip():
            return bool(exact), model[len(CROSS_ENCODER):].strip()
    raise MassiveDSError(f"rerank must be one of {', '.join(RERANK_FORMS)}, got {rerank!r}")


def check_queries(queries: Sequence[str]) -> None:
    """Every query must be a non-empty string."""
    for i, q in enumerate(queries):
        if not isinstance(q, str) or not q.strip():
            raise MassiveDSError(f"query {i + 1} is empty; give a non-empty string")


def run_search(sources: Retrievers, queries: list[str], options: SearchOptions, skipped: dict[str, str] | None = None) -> SearchResult:
    """Search ``queries`` (checked by ``check_queries``) in ``sources`` with ``options`` (see the module docstring); ``skipped``:
    the shards left out, and why."""
    skipped = skipped or {}
    if not queries:
        return SearchResult([], skipped)
    shards = sources.shards
    mode = search_mode(sources, options)
    gold = GoldIndex(options.decontaminate) if options.decontaminate else None
    vectors = None if mode == "sparse" else sources.embedder().encode_queries(queries)
    need = options.pool
    kept: list[list[Hit]] = [[] for _ in queries]
    candidates = [0] * len(queries)
    dropped: list[dict[str, int]] = [{} for _ in queries]
    pending = list(range(len(queries)))
    fetch = options.first_fetch(shards.deleted_share)
    reachable = shards.num_passages
    while pending:
        fetch = min(fetch, reachable, MAX_CANDIDATES)
        found = retrieve(sources, mode, [queries[q] for q in pending], None if vectors is None else vectors[pending], fetch, options)
        short = []
        for row, q in enumerate(pending):
            valid = np.nonzero(found.ids[row] >= 0)[0]
            live = valid[~shards.deleted(found.ids[row][valid])] if shards.deleted_share else valid
            sampled = live[in_sample(shards, found.ids[row][live], options.fraction, options.seed)]
            reading = sampled if gold is not None or options.dedup else sampled[:need]  # no later step drops any: read no more
            kept[q], dropped[q] = filter_hits(_hits(shards, found, row, reading, mode), options, gold)
            if options.fraction is not None:
                dropped[q] = {"fraction": len(live) - len(sampled)} | dropped[q]
            candidates[q] = len(valid)
            if len(kept[q]) < need and not exhausted(len(valid), fetch, reachable):
                short.append(q)
        if short:
            fetch = deeper(fetch, need, min(len(kept[q]) for q in short))
        pending = short
    if options.cross_encoder is not None:
        kept = rerank_hits(queries, kept, cross_encoder(options.cross_encoder).scores, options.rerank_depth)
    results = []
    for q in range(len(queries)):
        hits = kept[q]
        if options.mmr is not None:
            pool = hits[: options.mmr_pool]
            hits = mmr(pool, sources.dense.vectors(pool), options.mmr, options.k)
        hits = hits[: options.k]
        if options.continuation:
            hits = _with_continuations(shards, hits)
        results.append(hits)
    return SearchResult(results, skipped, candidates, dropped)


def search_mode(sources: Retrievers, options: SearchOptions) -> str:
    """The mode a search runs in: the one asked, else hybrid where the datastore has a BM25 index and dense where not."""
    if options.mode is None:
        return "dense" if sources.bm25 is None else "hybrid"
    if options.mode != "dense" and sources.bm25 is None:
        raise MassiveDSError(f"search mode {options.mode} needs a BM25 index and {sources.shards.name} has none; use mode dense, "
                             "or rebuild with sparse.enabled: true")
    return options.mode


def exhausted(found: int, fetch: int, reachable: int) -> bool:
    """Whether a query that got ``found`` of ``fetch`` candidates asked has seen every candidate it can reach."""
    return found < fetch or fetch >= min(reachable, MAX_CANDIDATES)


def deeper(fetch: int, need: int, worst: int) -> int:
    """The next candidate count when a query kept only ``worst`` of the ``need`` hits it needs from ``fetch`` candidates."""
    return max(2 * fetch, math.ceil(fetch * need / max(worst, 1) * 1.2))


def retrieve(sources: Retrievers, mode: str, texts: list[str], vectors: np.ndarray | None, fetch: int, options: SearchOptions) -> Fused:
    """The top ``fetch`` candidates of each query in ``mode``: fused scores, ids, and the dense and sparse scores behind them."""
    if mode == "sparse":
        assert sources.bm25 is not None
        scores, ids = sources.bm25.search(texts, fetch)
        return Fused(scores, ids, np.full(scores.shape, np.nan), scores)
    assert vectors is not None
    if mode == "dense":
        scores, ids = sources.dense.search(vectors, k=fetch, nprobe=options.nprobe, rerank="exact" if options.exact else None)
        return Fused(scores, ids, scores, np.full(scores.shape, np.nan))
    assert sources.bm25 is not None
    depth = max(fetch, HYBRID_DEPTH_FACTOR * options.k, HYBRID_MIN_DEPTH)
    dense = sources.dense.search(vectors, k=depth, nprobe=options.nprobe, rerank="exact" if options.exact else None)
    sparse = sources.bm25.search(texts, depth)
    ids = candidates(dense[1], sparse[1])
    return fuse(dense, sparse, ids, sources.dense.scores(vectors, ids), sources.bm25.scores(texts, ids), sources.bm25.bound(texts),
                fetch, options.alpha, options.fusion)


def in_sample(shards: ShardSet, ids: np.ndarray, fraction: float | None, seed: int) -> np.ndarray:
    """Which of ``ids`` (valid passage ids) belong to documents of the nested sample at (``fraction``, ``seed``); all without a fraction.

    Decided by id, before any passage is read: a search at fraction 0.01 looks at ~100 times more candidates than it keeps.
    """
    if fraction is None:
        return np.ones(len(ids), dtype=bool)
    return shards.sample_positions(ids, seed) < fraction


def _hits(shards: ShardSet, found: Fused, row: int, columns: np.ndarray, mode: str) -> list[Hit]:
    """Row ``row``'s candidates at ``columns`` as hits: ``score``; in hybrid mode ``dense_score`` and ``sparse_score`` (0: no term)."""
    hits: list[Hit] = []
    for passage, j in zip(shards.passages([int(found.ids[row][j]) for j in columns]), columns, strict=True):
        hit: Hit = {**passage, "score": float(found.scores[row][j])}
        if mode == "hybrid":  # every candidate was scored by both retrievers
            hit["dense_score"], hit["sparse_score"] = float(found.dense[row][j]), float(found.sparse[row][j])
        hits.append(hit)
    return hits


def filter_hits(hits: list[Hit], options: SearchOptions, gold: GoldIndex | None) -> tuple[list[Hit], dict[str, int]]:
    """Apply the dropping options that read passages, in order; returns the survivors and how many each option dropped."""
    dropped: dict[str, int] = {}
    if gold is not None:
        hits = _counted(dropped, "decontaminate", hits, decontaminate_hits(hits, gold))
    if options.dedup:
        hits = _counted(dropped, "dedup", hits, dedup_hits(hits, options.dedup_threshold))
    return hits, dropped


def _counted(dropped: dict[str, int], step: str, before: list[Hit], after: list[Hit]) -> list[Hit]:
    dropped[step] = len(before) - len(after)
    return after


def _with_continuations(shards: ShardSet, hits: list[Hit]) -> list[Hit]:
    nxt = continuation_ids(hits)
    present = [pid for pid in nxt if shards.has_passage(pid)]
    return attach_continuations(hits, dict(zip(present, shards.passages(present), strict=True)))
