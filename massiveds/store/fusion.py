"""Hybrid retrieval: a dense and a sparse (BM25) candidate list per query fused into one ranking.

Each list scores on its own scale (inner products, BM25 sums), so scores are made comparable first:

* ``convex`` (default): each list's scores min-max normalised per query to [0, 1] (a list of one
  score, or of equal scores, normalises to 1), a candidate missing from a list counting 0 there;
  fused = alpha · dense + (1 − alpha) · sparse. Bruch et al. (TOIS 2023) find a tuned convex
  combination beats reciprocal-rank fusion.
* ``rrf``: reciprocal-rank fusion, fused = alpha / (RRF_K + dense rank) + (1 − alpha) / (RRF_K + sparse rank),
  ranks from 1, a missing candidate contributing 0 (at alpha = 0.5, half of Cormack et al.'s RRF).

Ties go to the list with the larger weight (its rank, then the other's), so alpha = 1 ranks exactly as
the dense list and alpha = 0 exactly as the sparse one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FUSIONS = ("convex", "rrf")
#: Cormack et al.'s constant: it damps the weight of the first few ranks.
RRF_K = 60


@dataclass(frozen=True)
class Fused:
    """Top candidates per query: fused scores and ids (-inf, -1 pad), and each one's dense and sparse scores (nan where absent)."""

    scores: np.ndarray
    ids: np.ndarray
    dense: np.ndarray
    sparse: np.ndarray


def _normalised(scores: np.ndarray) -> np.ndarray:
    low, high = float(scores.min()), float(scores.max())
    return np.ones_like(scores) if high <= low else (scores - low) / (high - low)


def fuse(dense: tuple[np.ndarray, np.ndarray], sparse: tuple[np.ndarray, np.ndarray], k: int, alpha: float,
         method: str = "convex") -> Fused:
    """The top-``k`` fused candidates of each query from its dense and sparse (scores, ids) lists (id -1 pads either)."""
    assert method in FUSIONS, method
    assert 0 <= alpha <= 1, alpha
    nq = len(dense[1])
    out = Fused(np.full((nq, k), -np.inf), np.full((nq, k), -1, dtype=np.int64), np.full((nq, k), np.nan), np.full((nq, k), np.nan))
    for q in range(nq):
        lists = []
        for scores, ids in (dense, sparse):
            keep = ids[q] >= 0
            lists.append((ids[q][keep], scores[q][keep].astype(np.float64)))
        union = np.unique(np.concatenate([lists[0][0], lists[1][0]]))
        if not len(union):
            continue
        raw = np.full((2, len(union)), np.nan)
        rank = np.full((2, len(union)), np.inf)
        part = np.zeros((2, len(union)))
        for side, (ids, scores) in enumerate(lists):
            if not len(ids):
                continue
            at = np.searchsorted(union, ids)
            raw[side, at] = scores
            rank[side, at] = np.arange(1, len(ids) + 1)
            part[side, at] = _normalised(scores) if method == "convex" else 1.0 / (RRF_K + rank[side, at])
        fused = alpha * part[0] + (1 - alpha) * part[1]
        first, second = (rank[0], rank[1]) if alpha >= 0.5 else (rank[1], rank[0])
        order = np.lexsort((second, first, -fused))[:k]
        n = len(order)
        out.scores[q, :n], out.ids[q, :n] = fused[order], union[order]
        out.dense[q, :n], out.sparse[q, :n] = raw[0, order], raw[1, order]
    return out
