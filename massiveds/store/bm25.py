"""BM25 over a shard set: top-k, the scores of given passages, and live idf.

``BM25Retriever`` scores the queries' terms in every shard of its set (``ShardBM25``) and keeps the best. With the
catalog's ``live_idf`` (shards appended later were scored with other statistics, ``massiveds.encode.sparse``) each
query term's df is summed over every shard of the datastore, not only the searched ones (``LiveStats``), and each
shard's column of the term is weighted by that idf over the idf the shard was scored with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from massiveds.core.catalog import SparseRecord
from massiveds.encode.sparse import LiveStats, has_sparse, query_terms
from massiveds.store.bm25_index import ShardBM25
from massiveds.store.shard import Shard
from massiveds.store.shard_set import ShardSet


class BM25Retriever:
    """BM25 over the shards of ``shards``: top-k, the score of given passages, and each query's highest possible score."""

    def __init__(self, shards: ShardSet, record: SparseRecord, every: ShardSet | None = None) -> None:
        self.shards = shards
        self.record = record
        #: the shards whose statistics live idf sums: every shard of the datastore, whichever a search reads
        self.every = shards if every is None else every

    def terms(self, queries: Sequence[str]) -> list[list[str]]:
        """Each query's terms, tokenized as the passages were."""
        return query_terms(self.record.tokenizer, queries)

    def live_idf(self, terms: Sequence[Sequence[str]]) -> dict[str, float] | None:
        """Each distinct term's idf now over every shard with a BM25 index (None unless ``live_idf``: stored idf holds)."""
        if not self.record.live_idf:
            return None
        indexes = [s.sparse for s in self.every if has_sparse(s.folder)]
        distinct = sorted({t for words in terms for t in words})
        stats = LiveStats(sum(index.passages for index in indexes), {t: sum(index.df_of(t) for index in indexes) for t in distinct})
        return dict(zip(distinct, stats.idf(distinct).tolist(), strict=True))

    @staticmethod
    def _weights(index: ShardBM25, idf: dict[str, float] | None) -> dict[str, float] | None:
        """Per term of the shard, its live idf over the idf its scores were stored with (None: the stored scores as they are)."""
        if idf is None:
            return None
        return {t: now / stored for t, now in idf.items() if (stored := index.idf_of(t)) is not None}

    def search(self, queries: Sequence[str], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (BM25 scores, passage ids) per query text, best first; a passage matching no term is no hit."""
        terms = self.terms(queries)
        idf = self.live_idf(terms)

        def one(shard: Shard) -> tuple[np.ndarray, np.ndarray]:
            scores, rows = shard.sparse.topk(terms, k, self._weights(shard.sparse, idf))
            return scores, shard.ids_of(rows)

        return self.shards.fan_out(one, k)

    def scores(self, queries: Sequence[str], ids: np.ndarray) -> np.ndarray:
        """The BM25 score of each passage of ``ids`` (one row per query; id -1 scores nan) for its query."""
        terms = self.terms(queries)
        idf = self.live_idf(terms)
        out = np.where(ids >= 0, 0.0, np.nan)
        for shard, where, rows in self.shards.shard_rows(ids.ravel()):
            mine = np.full(ids.shape, -1, dtype=np.int64)  # this shard's rows where its ids are, -1 elsewhere
            mine.flat[where] = rows
            out.flat[where] = shard.sparse.scores_at(terms, mine, self._weights(shard.sparse, idf)).flat[where]
        return out

    def bound(self, queries: Sequence[str]) -> np.ndarray:
        """Per query, the most BM25 can score: the sum of its terms' idf (a term no passage holds adds 0), what hybrid divides by."""
        terms = self.terms(queries)
        live = self.live_idf(terms)
        bounds = np.zeros(len(queries))
        for q, words in enumerate(terms):
            for word in words:
                stored = next((idf for s in self.shards if (idf := s.sparse.idf_of(word)) is not None), None)
                bounds[q] += 0.0 if stored is None else stored if live is None else live[word]
        return bounds
