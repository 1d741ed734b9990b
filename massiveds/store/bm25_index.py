"""One shard's BM25 index as a search reads it: bm25s's arrays memory-mapped, top-k over a query's posting lists."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from massiveds.core.errors import DatastoreError
from massiveds.encode.sparse import FILES, IDF_FILE, has_sparse


@dataclass(frozen=True)
class ShardBM25:
    """One shard's BM25 index: a bm25s retriever over its passages (rows = passage id − the shard's first id) and each term's idf."""

    retriever: Any
    idf: np.ndarray

    @classmethod
    def load(cls, folder: Path) -> ShardBM25:
        """The BM25 index of a shard folder, its arrays memory-mapped."""
        import bm25s

        if not has_sparse(folder):
            raise DatastoreError(f"{folder} has no BM25 index ({IDF_FILE} and the rest); rebuild with sparse.enabled: true")
        retriever = bm25s.BM25.load(str(folder), mmap=True, show_progress=False, **FILES)
        return cls(retriever, np.load(folder / IDF_FILE, mmap_mode="r", allow_pickle=False))

    @property
    def passages(self) -> int:
        return int(self.retriever.scores["num_docs"])

    def idf_of(self, term: str) -> float | None:
        """The idf the term's scores were stored with (over the datastore then), or None when no passage of this shard holds it."""
        i = self.retriever.vocab_dict.get(term)
        return None if i is None else float(self.idf[i])

    def df_of(self, term: str) -> int:
        """Passages of this shard holding the term (its column's length; 0 when none does): what live idf sums over the shards."""
        i = self.retriever.vocab_dict.get(term)
        indptr = self.retriever.scores["indptr"]
        return 0 if i is None else int(indptr[i + 1] - indptr[i])

    def scores(self, terms: Sequence[str], weights: Mapping[str, float] | None = None) -> np.ndarray | None:
        """Every passage's BM25 score for one query's terms (repeated terms count again, as bm25s counts them), or None if none is here.

        ``weights``: each of the shard's terms' column is multiplied by its weight (live idf), summed in float32 as bm25s sums.
        """
        present = [t for t in terms if t in self.retriever.vocab_dict]
        if not present:
            return None
        if weights is None:
            return self.retriever.get_scores_from_ids(self.retriever.get_tokens_ids(present))
        data, indices, indptr = (self.retriever.scores[key] for key in ("data", "indices", "indptr"))
        out = np.zeros(self.passages, dtype=np.float32)
        for term in present:
            i = self.retriever.vocab_dict[term]
            lo, hi = int(indptr[i]), int(indptr[i + 1])
            out[indices[lo:hi]] += (data[lo:hi] * weights[term]).astype(np.float32)  # a term's rows are distinct: no np.add.at
        return out

    def topk(self, terms: Sequence[Sequence[str]], k: int, weights: Mapping[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, rows) per query's terms, best first, ties in row order; a passage matching no term is no hit (row -1)."""
        k_eff = min(k, self.passages)
        scores = np.full((len(terms), k), -np.inf, dtype=np.float32)
        rows = np.full((len(terms), k), -1, dtype=np.int64)
        for q, words in enumerate(terms):
            every = self.scores(words, weights)
            if every is None or not k_eff:
                continue
            top = self._best(every, words, k_eff)
            top = top[np.lexsort((top, -every[top]))]  # ties in passage order, so shards merge as one index ranks
            top = top[every[top] > 0]
            scores[q, : len(top)] = every[top]
            rows[q, : len(top)] = top
        return scores, rows

    def _best(self, every: np.ndarray, words: Sequence[str], k: int) -> np.ndarray:
        """The rows of the ``k`` highest of ``every`` (one query's scores), unordered.

        Where the query's posting lists hold fewer entries than a quarter of the shard, the selection runs over them
        (a row once per term it holds, so the best ``k`` x terms entries hold the best ``k`` rows) instead of the shard.
        """
        n = len(every)
        if k >= n:
            return np.arange(n)
        indptr, vocab = self.retriever.scores["indptr"], self.retriever.vocab_dict
        spans = [(int(indptr[i]), int(indptr[i + 1])) for i in {vocab[t] for t in words if t in vocab}]
        if sum(hi - lo for lo, hi in spans) * 4 >= n:
            return np.argpartition(-every, k - 1)[:k]
        indices = self.retriever.scores["indices"]
        rows = np.concatenate([indices[lo:hi] for lo, hi in spans])
        m = min(k * len(spans), len(rows))
        picked = rows[np.argpartition(-every[rows], m - 1)[:m]] if m < len(rows) else rows
        unique = np.unique(picked)
        return unique[np.argpartition(-every[unique], k - 1)[:k]] if k < len(unique) else unique

    def scores_at(self, terms: Sequence[Sequence[str]], rows: np.ndarray, weights: Mapping[str, float] | None = None) -> np.ndarray:
        """The BM25 score of each passage of ``rows`` (one row of rows per query; -1 pads, scored nan) for its query's terms.

        Each term's rows are found in its posting list by binary search (a term's passages are stored in row order), so
        scoring a query's few hundred candidates reads what they need, not the shard: summed in float32 in term order,
        as ``scores`` sums, so a passage scores the same either way.
        """
        data, indices, indptr = (self.retriever.scores[key] for key in ("data", "indices", "indptr"))
        vocab = self.retriever.vocab_dict
        out = np.where(rows >= 0, 0.0, np.nan)
        for q, words in enumerate(terms):
            here = rows[q] >= 0
            if not here.any():
                continue
            want, acc = rows[q][here], np.zeros(int(here.sum()), dtype=np.float32)
            for term in words:
                if (i := vocab.get(term)) is None:
                    continue
                lo, hi = int(indptr[i]), int(indptr[i + 1])
                column = indices[lo:hi]
                at = np.minimum(np.searchsorted(column, want), max(hi - lo - 1, 0))
                found = column[at] == want if hi > lo else np.zeros(len(want), dtype=bool)
                score = data[lo:hi][at[found]]
                acc[found] += score if weights is None else (score * weights[term]).astype(np.float32)
            out[q, here] = acc
        return out
