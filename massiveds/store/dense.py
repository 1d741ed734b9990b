"""Dense retrieval over a shard set: FAISS top-k per shard merged by score (or one merged index), exact rerank.

IVF-PQ scores are approximate; ``rerank="exact"`` takes the index's best ``rerank_depth`` candidates and orders them
by the exact inner product with the shards' stored fp16 vectors. When the catalog records a merged index
(``massiveds merge-index``) over every shard, searches of the whole datastore use it instead of the fan-out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import faiss
import numpy as np

from massiveds.core.catalog import RecallRecord
from massiveds.core.errors import MassiveDSError
from massiveds.encode.embed import Embedder
from massiveds.encode.index import as_float32, set_nprobe
from massiveds.store.hit import Passage
from massiveds.store.shard import Shard
from massiveds.store.shard_set import ShardSet

#: The rerank modes ``search`` takes.
RERANK_MODES = ("exact",)


def base_rerank_depth(k: int) -> int:
    """Candidates rescored by exact rerank when the build measured no depth of its own: max(4·k, 100)."""
    return max(4 * k, 100)


class DenseRetriever:
    """Inner-product search over ``shards``' FAISS indexes (or ``merged``), and exact scores from their stored vectors."""

    def __init__(self, shards: ShardSet, nprobe: int | None, recall: RecallRecord | None, embedder: Callable[[], Embedder],
                 merged: faiss.Index | None = None) -> None:
        self.shards = shards
        #: nprobe when neither the search nor the shard gives one
        self.nprobe = nprobe
        #: the build's recall measurement, whose calibrated rerank depth ``rerank_depth`` scales
        self.recall = recall
        #: the datastore's embedder, loaded when passages without stored vectors must be embedded again
        self.embedder = embedder
        self.merged = merged

    def rerank_depth(self, k: int) -> int:
        """Candidates exact rerank rescores for top-``k`` by default: the build's calibrated depth scaled to ``k``, ≥ max(4·k, 100)."""
        recall, base = self.recall, base_rerank_depth(k)
        if recall is None or recall.status != "measured" or not recall.k or not recall.rerank_depth:
            return base
        return max(base, math.ceil(recall.rerank_depth * k / recall.k))

    def search(self, queries: np.ndarray, k: int = 10, nprobe: int | None = None, rerank: str | None = None,
               rerank_depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, passage ids) per query vector, best first; id -1 pads.

        ``rerank="exact"`` takes the best ``rerank_depth`` candidates of the index (default ``rerank_depth(k)``)
        and orders them by exact inner product with the stored fp16 vectors; the scores returned are then exact.
        """
        queries = as_float32(np.atleast_2d(queries))
        if rerank is None:
            return self._candidates(queries, k, nprobe)
        if rerank not in RERANK_MODES:
            raise MassiveDSError(f"unknown rerank {rerank!r}; the rerank modes are {', '.join(RERANK_MODES)}")
        self.shards.require_vectors()
        depth = max(k, rerank_depth or self.rerank_depth(k))
        _, ids = self._candidates(queries, depth, nprobe)
        scores = self.exact_scores(queries, ids)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)

    def _candidates(self, queries: np.ndarray, k: int, nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``k`` from the merged index or the fan-out over shards (ids -1, scores -inf pad)."""
        if self.merged is not None:
            set_nprobe(self.merged, nprobe or self.nprobe)
            scores, ids = self.merged.search(queries, min(k, self.shards.num_passages))
            return np.where(ids < 0, -np.inf, scores), ids

        def one(shard: Shard) -> tuple[np.ndarray, np.ndarray]:
            set_nprobe(shard.index, nprobe or shard.nprobe)
            scores, ids = shard.index.search(queries, min(k, shard.count))
            return scores, (np.where(ids >= 0, ids + shard.id_offset, ids) if shard.id_offset else ids)

        return self.shards.fan_out(one, k)

    def exact_scores(self, queries: np.ndarray, ids: np.ndarray, block: int = 65536) -> np.ndarray:
        """Exact inner product of each query with the stored vector of each of its ids (shape of ``ids``; -inf for id -1)."""
        queries = as_float32(queries)
        out = np.full(ids.shape, -np.inf, dtype=np.float32)
        for shard, where, rows in self.shards.shard_rows(ids.ravel()):
            q_idx, col = np.unravel_index(where, ids.shape)
            uniq, inverse = np.unique(rows, return_inverse=True)
            vectors = np.asarray(shard.vectors[uniq], dtype=np.float32)  # sorted rows: near-sequential reads of the mmap
            for lo in range(0, len(rows), block):
                sl = slice(lo, lo + block)
                out[q_idx[sl], col[sl]] = np.einsum("ij,ij->i", queries[q_idx[sl]], vectors[inverse[sl]])
        return out

    def scores(self, queries: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """The exact inner product of each query with each passage of ``ids`` (-inf for id -1): stored vectors, else texts re-embedded."""
        if all(s.has_vectors for s in self.shards):
            return self.exact_scores(queries, ids)
        out = np.full(ids.shape, -np.inf, dtype=np.float32)
        for q in range(len(ids)):
            valid = np.nonzero(ids[q] >= 0)[0]
            vectors = self.vectors(self.shards.passages([int(i) for i in ids[q][valid]]))
            out[q, valid] = vectors @ as_float32(queries[q])
        return out

    def vectors(self, hits: Sequence[Passage]) -> np.ndarray:
        """Vectors of hits: the shard's stored fp16 ``vectors.npy`` rows, else the hit texts re-embedded."""
        out = np.zeros((len(hits), self.shards.dim), dtype=np.float32)
        missing = []
        for i, hit in enumerate(hits):
            found = self.shards.shard_of(int(hit["passage_id"]))
            stored = None if found is None else self.shards.stored_vectors(found[0])
            if found is None or stored is None:
                missing.append(i)
            else:
                out[i] = stored[found[1]]
        if missing:
            out[missing] = self.embedder().encode_passages([hits[i]["text"] for i in missing])
        return out
