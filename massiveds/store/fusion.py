"""Hybrid retrieval: a dense and a BM25 candidate list per query fused into one ranking.

The candidates are the union of the two lists, each scored by both retrievers: its exact inner product
with the query (over the stored vectors) and its BM25 score (0 when it holds no query term). Then:

* ``convex`` (default): fused = alpha · dense + (1 − alpha) · BM25 / bound, where bound is the most BM25
  can score for the query: the sum of its terms' idf, since BM25's term-frequency factor stays below 1.
  Both parts are functions of the query and the passage alone, so the fused scores order all passages
  in one way: a candidate ranks the same whatever else was retrieved, and a query-time fraction, a
  physical subsample and a deeper search agree. Bruch et al. (TOIS 2023) find a convex combination of
  scores normalised by their theoretical range the better fusion, ahead of reciprocal-rank fusion.
* ``rrf``: alpha / (RRF_K + dense rank) + (1 − alpha) / (RRF_K + BM25 rank), ranks counted from 1 in the
  two lists and a candidate missing from a list adding 0 for it (at alpha = 0.5, half of Cormack et al.'s
  RRF). It depends on the lists retrieved.

Ties go to the smaller passage id: alpha = 1 ranks by exact dense score, alpha = 0 by BM25.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FUSIONS = ("convex", "rrf")
#: Cormack et al.'s constant: it damps the weight of the first few ranks.
RRF_K = 60


@dataclass(frozen=True)
class Fused:
    """Top candidates per query: fused scores and ids (-inf, -1 pad), and each one's dense and BM25 scores (nan where not scored)."""

    scores: np.ndarray
    ids: np.ndarray
    dense: np.ndarray
    sparse: np.ndarray


def candidates(dense_ids: np.ndarray, sparse_ids: np.ndarray) -> np.ndarray:
    """The union of each query's two candidate lists, ids ascending, -1 padded to the longest."""
    rows = [np.unique(np.concatenate([d[d >= 0], s[s >= 0]])) for d, s in zip(dense_ids, sparse_ids, strict=True)]
    out = np.full((len(rows), max([len(r) for r in rows] + [1])), -1, dtype=np.int64)
    for q, row in enumerate(rows):
        out[q, : len(row)] = row
    return out


def _ranks(ids: np.ndarray, listed: np.ndarray) -> np.ndarray:
    """The 1-based rank of each of ``ids`` (one row per query) in that query's ``listed`` row; inf where absent."""
    out = np.full(ids.shape, np.inf)
    for q in range(len(ids)):
        where = {int(i): r for r, i in enumerate(listed[q], 1) if i >= 0}
        out[q] = [where.get(int(i), np.inf) for i in ids[q]]
    return out


def fuse(dense_list: tuple[np.ndarray, np.ndarray], sparse_list: tuple[np.ndarray, np.ndarray], ids: np.ndarray, dense: np.ndarray,
         sparse: np.ndarray, bound: np.ndarray, k: int, alpha: float, method: str = "convex") -> Fused:
    """The top-``k`` of candidates ``ids`` (``candidates`` of the two (scores, ids) lists) by fused score.

    ``dense`` and ``sparse`` are every candidate's scores from both retrievers, ``bound`` each query's BM25 bound.
    """
    assert method in FUSIONS, method
    assert 0 <= alpha <= 1, alpha
    valid = ids >= 0
    if method == "convex":
        with np.errstate(divide="ignore", invalid="ignore"):
            normalised = np.where(bound[:, None] > 0, sparse / bound[:, None], 0.0)
        fused = alpha * np.where(valid, dense, 0.0) + (1 - alpha) * np.where(valid, normalised, 0.0)
    else:
        fused = alpha / (RRF_K + _ranks(ids, dense_list[1])) + (1 - alpha) / (RRF_K + _ranks(ids, sparse_list[1]))
    fused = np.where(valid, fused, -np.inf)
    order = np.lexsort((ids, -fused), axis=-1)[:, :k]  # per query: best fused score first, then the smaller id

    def pick(a: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a, order, axis=1)

    return Fused(pick(fused), pick(ids), pick(np.where(valid, dense, np.nan)), pick(sparse))
