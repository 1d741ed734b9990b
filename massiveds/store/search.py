"""Search with options: shard selection, candidate retrieval that grows until enough hits survive, post-processing.

One batch of queries is embedded once and searched together (``Datastore.search_vectors`` fans out
over the shards in parallel), in the dense index, the BM25 index (``Datastore.search_sparse``) or both
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from massiveds.core.errors import MassiveDSError, ShardsUnavailableError
from massiveds.encode.embed import Embedder
from massiveds.store.fusion import FUSIONS, Fused, candidates, fuse
from massiveds.store.postprocess import (
    GoldIndex,
    attach_continuations,
    continuation_ids,
    decontaminate_hits,
    dedup_hits,
    mmr,
)
from massiveds.store.sampling import check_fraction
from massiveds.store.shard import Shard

Hit = dict[str, Any]


class Searchable(Protocol):
    """What a search needs of a datastore (``massiveds.store.datastore.Datastore`` is one): no import of it here."""

    @property
    def name(self) -> str: ...

    @property
    def embedder(self) -> Embedder: ...

    def select_shards(self, domains: Sequence[str] | None = None) -> list[Shard]: ...

    def usable_shards(self, shards: Sequence[Shard], strict: bool = False) -> tuple[list[Shard], dict[str, str]]: ...

    def subset(self, shards: Sequence[Shard]) -> Searchable: ...

    def search_vectors(
        self, queries: np.ndarray, k: int = 10, nprobe: int | None = None, rerank: str | None = None, rerank_depth: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    @property
    def has_sparse(self) -> bool: ...

    def search_sparse(self, queries: Sequence[str], k: int = 10) -> tuple[np.ndarray, np.ndarray]: ...

    def sparse_scores(self, queries: Sequence[str], ids: np.ndarray) -> np.ndarray: ...

    def sparse_bound(self, queries: Sequence[str]) -> np.ndarray: ...

    def dense_scores(self, queries: np.ndarray, ids: np.ndarray) -> np.ndarray: ...

    def passages(self, ids: list[int]) -> list[dict[str, Any]]: ...

    def sample_positions(self, ids: np.ndarray, seed: int) -> np.ndarray: ...

    @property
    def deleted_share(self) -> float: ...

    def deleted(self, ids: np.ndarray) -> np.ndarray: ...

    def passage_vectors(self, hits: Sequence[dict[str, Any]]) -> np.ndarray: ...

    def has_passage(self, pid: int) -> bool: ...

#: Most hits one query may ask for, and most candidates one query may retrieve while growing.
MAX_K = 10_000
MAX_CANDIDATES = 100_000
#: MMR chooses ``k`` hits among ``max(MMR_POOL_FACTOR * k, MMR_MIN_POOL)`` candidates.
MMR_POOL_FACTOR, MMR_MIN_POOL = 4, 20
RERANK_MODES = ("exact",)
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
        if rerank is not None and rerank not in RERANK_MODES:
            raise MassiveDSError(f"rerank must be one of {', '.join(RERANK_MODES)}, got {rerank!r}")
        if mode is not None and mode not in MODES:
            raise MassiveDSError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "sparse" and rerank is not None:
            raise MassiveDSError("rerank refines dense scores and mode sparse has none: drop rerank, or use mode hybrid")
        alpha = DEFAULT_ALPHA if alpha is None else alpha
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
            raise MassiveDSError(f"alpha (the dense weight of hybrid fusion) must be in [0, 1], got {alpha!r}")
        if fusion not in FUSIONS:
            raise MassiveDSError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        return cls(k, nprobe, doms, bool(dedup), float(dedup_threshold), golds, fraction, seed, mmr, bool(continuation), rerank,
                   bool(strict), mode, float(alpha), fusion)

    @classmethod
    def fields(cls) -> dict[str, Any]:
        """The options and their types, as declared here: what ``Datastore.search`` and the server take besides the query."""
        return typing.get_type_hints(cls)

    @property
    def pool(self) -> int:
        """Hits each query needs after filtering: ``k``, or the MMR candidate pool."""
        return max(MMR_POOL_FACTOR * self.k, MMR_MIN_POOL) if self.mmr is not None else self.k

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


def check_queries(queries: Sequence[str]) -> None:
    """Every query must be a non-empty string."""
    for i, q in enumerate(queries):
        if not isinstance(q, str) or not q.strip():
            raise MassiveDSError(f"query {i + 1} is empty; give a non-empty string")


def run_search(ds: Searchable, queries: list[str], options: SearchOptions) -> SearchResult:
    """Search ``queries`` in ``ds`` with ``options`` (see the module docstring)."""
    check_queries(queries)
    view, reachable, skipped = searchable_view(ds, options)
    if not queries:
        return SearchResult([], skipped)
    mode = search_mode(ds, options)
    gold = GoldIndex(options.decontaminate) if options.decontaminate else None
    vectors = None if mode == "sparse" else ds.embedder.encode_queries(queries)
    need = options.pool
    kept: list[list[Hit]] = [[] for _ in queries]
    candidates = [0] * len(queries)
    dropped: list[dict[str, int]] = [{} for _ in queries]
    pending = list(range(len(queries)))
    fetch = options.first_fetch(ds.deleted_share)
    while pending:
        fetch = min(fetch, reachable, MAX_CANDIDATES)
        found = retrieve(view, mode, [queries[q] for q in pending], None if vectors is None else vectors[pending], fetch, options)
        short = []
        for row, q in enumerate(pending):
            valid = np.nonzero(found.ids[row] >= 0)[0]
            live = valid[~ds.deleted(found.ids[row][valid])] if ds.deleted_share else valid
            sampled = live[in_sample(ds, found.ids[row][live], options.fraction, options.seed)]
            reading = sampled if gold is not None or options.dedup else sampled[:need]  # no later step drops any: read no more
            kept[q], dropped[q] = filter_hits(_hits(ds, found, row, reading, mode), options, gold)
            if options.fraction is not None:
                dropped[q] = {"fraction": len(live) - len(sampled)} | dropped[q]
            candidates[q] = len(valid)
            if len(kept[q]) < need and not exhausted(len(valid), fetch, reachable):
                short.append(q)
        if short:
            fetch = deeper(fetch, need, min(len(kept[q]) for q in short))
        pending = short
    results = []
    for q in range(len(queries)):
        hits = kept[q]
        if options.mmr is not None:
            pool = hits[: options.pool]
            hits = mmr(pool, ds.passage_vectors(pool), options.mmr, options.k)
        hits = hits[: options.k]
        if options.continuation:
            hits = _with_continuations(ds, hits)
        results.append(hits)
    return SearchResult(results, skipped, candidates, dropped)


def search_mode(ds: Searchable, options: SearchOptions) -> str:
    """The mode a search runs in: the one asked, else hybrid where the datastore has a BM25 index and dense where not."""
    if options.mode is None:
        return "hybrid" if ds.has_sparse else "dense"
    if options.mode != "dense" and not ds.has_sparse:
        raise MassiveDSError(f"search mode {options.mode} needs a BM25 index and {ds.name} has none; use mode dense, "
                             "or rebuild with sparse.enabled: true")
    return options.mode


def searchable_view(ds: Searchable, options: SearchOptions) -> tuple[Searchable, int, dict[str, str]]:
    """The view over the shards a search with ``options`` reads, how many passages it can reach, and the shards skipped.

    Raises ShardsUnavailableError when no shard of the ones asked can be searched.
    """
    shards = ds.select_shards(options.domains)
    usable, skipped = ds.usable_shards(shards, strict=options.strict)
    if not usable:
        where = f"domain {', '.join(options.domains)}" if options.domains else f"datastore {ds.name}"
        reasons = "; ".join(f"{n}: {r}" for n, r in skipped.items())
        raise ShardsUnavailableError(f"no shard of {where} can be searched ({reasons})")
    return ds.subset(usable), sum(s.count for s in usable), skipped


def exhausted(found: int, fetch: int, reachable: int) -> bool:
    """Whether a query that got ``found`` of ``fetch`` candidates asked has seen every candidate it can reach."""
    return found < fetch or fetch >= min(reachable, MAX_CANDIDATES)


def deeper(fetch: int, need: int, worst: int) -> int:
    """The next candidate count when a query kept only ``worst`` of the ``need`` hits it needs from ``fetch`` candidates."""
    return max(2 * fetch, math.ceil(fetch * need / max(worst, 1) * 1.2))


def retrieve(view: Searchable, mode: str, texts: list[str], vectors: np.ndarray | None, fetch: int, options: SearchOptions) -> Fused:
    """The top ``fetch`` candidates of each query in ``mode``: fused scores, ids, and the dense and sparse scores behind them."""
    if mode == "sparse":
        scores, ids = view.search_sparse(texts, fetch)
        return Fused(scores, ids, np.full(scores.shape, np.nan), scores)
    assert vectors is not None
    if mode == "dense":
        scores, ids = view.search_vectors(vectors, k=fetch, nprobe=options.nprobe, rerank=options.rerank)
        return Fused(scores, ids, scores, np.full(scores.shape, np.nan))
    depth = max(fetch, HYBRID_DEPTH_FACTOR * options.k, HYBRID_MIN_DEPTH)
    dense = view.search_vectors(vectors, k=depth, nprobe=options.nprobe, rerank=options.rerank)
    sparse = view.search_sparse(texts, depth)
    ids = candidates(dense[1], sparse[1])
    return fuse(dense, sparse, ids, view.dense_scores(vectors, ids), view.sparse_scores(texts, ids), view.sparse_bound(texts), fetch,
                options.alpha, options.fusion)


def in_sample(ds: Searchable, ids: np.ndarray, fraction: float | None, seed: int) -> np.ndarray:
    """Which of ``ids`` (valid passage ids) belong to documents of the nested sample at (``fraction``, ``seed``); all without a fraction.

    Decided by id, before any passage is read: a search at fraction 0.01 looks at ~100 times more candidates than it keeps.
    """
    if fraction is None:
        return np.ones(len(ids), dtype=bool)
    return ds.sample_positions(ids, seed) < fraction


def _hits(ds: Searchable, found: Fused, row: int, columns: np.ndarray, mode: str) -> list[Hit]:
    """Row ``row``'s candidates at ``columns`` as hits: ``score``; in hybrid mode ``dense_score`` and ``sparse_score`` (0: no term)."""
    hits = ds.passages([int(found.ids[row][j]) for j in columns])
    for hit, j in zip(hits, columns, strict=True):
        hit["score"] = float(found.scores[row][j])
        if mode == "hybrid":  # every candidate was scored by both retrievers
            hit["dense_score"], hit["sparse_score"] = float(found.dense[row][j]), float(found.sparse[row][j])
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


def _with_continuations(ds: Searchable, hits: list[Hit]) -> list[Hit]:
    nxt = continuation_ids(hits)
    present = [pid for pid in nxt if ds.has_passage(pid)]
    return attach_continuations(hits, dict(zip(present, ds.passages(present), strict=True)))
