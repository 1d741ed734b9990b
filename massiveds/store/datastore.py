"""Open a built datastore and search it: embed queries, fan out over shards, merge by score, rerank.

Passage ids are contiguous per shard (the catalog gives each shard's ``id_start`` and ``count``),
so an id leads to its shard by a binary search over the shard starts and to its row directly (also
in the shard's fp16 ``vectors.npy``, which exact rerank reads memory-mapped). A shard merged in place
(``massiveds merge``) lives in another datastore's folder and its files hold that datastore's ids:
its ``id_offset`` is added to the ids its index returns and to the passage ids it reads, so the
merged datastore presents unique ids without rewriting any file. When the catalog
records a merged index (``massiveds merge-index``), searches use it instead of the fan-out.
Search options (domains, subsampling, dedup, decontamination, MMR, continuations) are in
``massiveds.store.search``; a shard whose files are missing or unreadable is skipped with a warning
(``ShardSkippedWarning``) unless ``strict``.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from massiveds.core.catalog import Catalog, EmbedderRecord, ShardRecord, SparseRecord, open_catalog
from massiveds.core.errors import DatastoreError, MassiveDSError, ShardSkippedWarning
from massiveds.core.layout import CATALOG, FORMAT_VERSION, DatastoreLayout
from massiveds.encode.embed import Embedder, differences
from massiveds.encode.index import as_float32, set_nprobe
from massiveds.encode.sparse import has_sparse, lucene_idf, query_terms
from massiveds.store.merged import merged_matches, read_merged
from massiveds.store.search import SearchOptions, SearchResult, run_search
from massiveds.store.shard import Shard, check_shard

#: Times a search runs again when writers replace the catalog under it (each run sees one catalog whole).
READ_RETRIES = 8


class CatalogChangedError(DatastoreError):
    """A shard could not be opened because a writer replaced the catalog that named it: search again on the new one."""


def _stamp_of(path: Path) -> tuple[int, int, int]:
    """A file's identity as a writer's atomic replace changes it: inode, mtime, size (zeros when missing)."""
    try:
        st = path.stat()
    except OSError:
        return (0, 0, 0)
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def base_rerank_depth(k: int) -> int:
    """Candidates rescored by exact rerank when the build measured no depth of its own: max(4·k, 100)."""
    return max(4 * k, 100)


def _shard(root: Path, record: ShardRecord, nprobe: int | None) -> Shard:
    """The shard of a catalog record, in the datastore at ``root`` whose default nprobe is ``nprobe``."""
    return Shard(record.name, record.domain, record.id_start, record.count, root / record.folder_rel(), record.id_offset,
                 record.nprobe_or(nprobe), record.id_span)


class Datastore:
    """A datastore directory opened for search (see ``massiveds.open``)."""

    def __init__(self, root: Path, catalog: Catalog) -> None:
        self.root = root
        self.catalog = catalog
        self.shards = [_shard(root, s, catalog.index.nprobe) for s in catalog.shards_by_id]
        #: Every shard, also in a view over some (``subset``): live idf counts the whole datastore, whatever a search reads.
        self._all_shards = self.shards
        self._starts = np.array([s.id_start for s in self.shards], dtype=np.int64)
        self._embedder: Embedder | None = None
        self._shard_errors: dict[str, str | None] = {}
        self._merged: faiss.Index | None = None
        #: Search the merged index when the catalog records one (False: always fan out over the shards).
        self.use_merged = True
        self._stamp = self.catalog_stamp()

    @classmethod
    def open(cls, path: str | Path) -> Datastore:
        """Open the datastore at ``path``; raises DatastoreError if it is not a complete datastore."""
        layout = DatastoreLayout(path)
        for _ in range(READ_RETRIES):
            before = _stamp_of(layout.catalog)
            catalog = open_catalog(layout.root)
            if catalog.format_version != FORMAT_VERSION:
                raise DatastoreError(f"{path}: datastore format {catalog.format_version} is not {FORMAT_VERSION}; rebuild it")
            ds = cls(layout.root, catalog)
            if _stamp_of(layout.catalog) == before:  # its stamp is that of the catalog it read: a later switch is seen
                return ds
        return ds

    @property
    def name(self) -> str:
        return self.catalog.name

    def catalog_stamp(self) -> tuple[tuple[int, int, int], ...]:
        """Identity of the catalogs this view depends on, as they are on disk now: its own and its merged-in-place shards' datastores'."""
        roots = {self.root} | {(self.root / s.folder_rel()).parent.parent for s in self.catalog.shards if s.elsewhere}
        return tuple(_stamp_of(root / CATALOG) for root in sorted(roots))

    def refresh(self) -> bool:
        """Reopen the datastore when a catalog it depends on was rewritten (a delete, a compact); True when it did.

        A long-lived reader (``serve``) calls it before each search, so a deletion holds from the moment the command
        returns. Searches already running keep the shards they started with: their files stay readable.
        """
        if self.catalog_stamp() == self._stamp:
            return False
        fresh = Datastore.open(self.root)
        fresh.use_merged = self.use_merged
        if self._embedder is not None and not differences(fresh.catalog.embedder, self.catalog.embedder):
            fresh._embedder = self._embedder
        self.__dict__.clear()  # cached properties too
        self.__dict__.update(fresh.__dict__)
        return True

    @property
    def num_passages(self) -> int:
        return sum(s.count for s in self.shards)

    @property
    def embedder(self) -> Embedder:
        """The datastore's own embedder, loaded on first use and checked against the catalog's record of it."""
        if self._embedder is None:
            self.use_embedder(Embedder.from_info(self.catalog.embedder.model_dump(mode="json")))  # defaults included
        assert self._embedder is not None
        return self._embedder

    def use_embedder(self, embedder: Embedder) -> None:
        """Embed queries with ``embedder`` (one loaded model shared by datastores); refused unless it is the datastore's.

        Vectors of another model (or of the same name whose weights changed since the build) are not
        comparable with the stored ones: a search with it would return confident nonsense.
        """
        got = EmbedderRecord.model_validate(embedder.info())
        if diff := differences(self.catalog.embedder, got):
            raise MassiveDSError(f"{self.root}: the query embedder is not the one this datastore was built with ({'; '.join(diff)}); "
                                 "search with the datastore's own model, or rebuild the datastore with this one")
        self._embedder = embedder

    @property
    def merged_index(self) -> faiss.Index | None:
        """The merged on-disk index (memory-mapped), or None when there is none or ``use_merged`` is off."""
        record = self.catalog.merged
        if not self.use_merged or record is None or not merged_matches(record, self.catalog):
            return None
        if self._merged is None:
            self._merged = read_merged(self.root / record.index)
        return self._merged

    def _candidates(self, queries: np.ndarray, k: int, nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``k`` from the merged index or the fan-out over shards (ids -1, scores -inf pad)."""
        merged = self.merged_index
        if merged is not None:
            set_nprobe(merged, nprobe or self.catalog.index.nprobe)
            scores, ids = merged.search(queries, min(k, self.num_passages))
            return np.where(ids < 0, -np.inf, scores), ids

        def one(shard: Shard) -> tuple[np.ndarray, np.ndarray]:
            set_nprobe(shard.index, nprobe or shard.nprobe)
            scores, ids = shard.index.search(queries, min(k, shard.count))
            return scores, (np.where(ids >= 0, ids + shard.id_offset, ids) if shard.id_offset else ids)

        return self._fan_out(one, k)

    def _fan_out(self, one: Callable[[Shard], tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
        """``one`` over every shard in parallel, merged into the top-``k`` (scores, ids) per query, best first (-inf, -1 pad)."""
        workers = max(1, min(len(self.shards), os.cpu_count() or 1))
        if workers == 1:
            results = [one(s) for s in self.shards]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(one, self.shards))
        scores = np.concatenate([r[0] for r in results], axis=1)
        ids = np.concatenate([r[1] for r in results], axis=1)
        scores = np.where(ids < 0, -np.inf, scores)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)

    @property
    def has_sparse(self) -> bool:
        """Whether the datastore has a BM25 index (search modes ``sparse`` and ``hybrid``)."""
        return self.catalog.sparse is not None

    def _bm25(self) -> SparseRecord:
        if self.catalog.sparse is None:
            raise MassiveDSError(f"{self.name} has no BM25 index, so only search mode 'dense' works; rebuild with sparse.enabled: true")
        return self.catalog.sparse

    def _live_idf(self, terms: Sequence[Sequence[str]]) -> dict[str, float] | None:
        """Each distinct term's idf now, over every shard with a BM25 index (None unless the catalog's ``live_idf``: stored idf holds)."""
        if not self._bm25().live_idf:
            return None
        indexes = [s.sparse for s in self._all_shards if has_sparse(s.folder)]
        distinct = sorted({t for words in terms for t in words})
        df = np.array([sum(index.df_of(t) for index in indexes) for t in distinct], dtype=np.int64)
        return dict(zip(distinct, lucene_idf(sum(index.passages for index in indexes), df).tolist(), strict=True))

    @staticmethod
    def _weights(shard: Shard, idf: dict[str, float] | None) -> dict[str, float] | None:
        """Per term of the shard, its live idf over the idf its scores were stored with (None: the stored scores as they are)."""
        if idf is None:
            return None
        return {t: now / stored for t, now in idf.items() if (stored := shard.sparse.idf_of(t)) is not None}

    def search_sparse(self, queries: Sequence[str], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (BM25 scores, passage ids) per query text over all shards, best first; a passage matching no term is no hit."""
        terms = query_terms(self._bm25().tokenizer, queries)
        idf = self._live_idf(terms)

        def one(shard: Shard) -> tuple[np.ndarray, np.ndarray]:
            scores, rows = shard.sparse.topk(terms, k, self._weights(shard, idf))
            return scores, shard.ids_of(rows)

        return self._fan_out(one, k)

    def sparse_scores(self, queries: Sequence[str], ids: np.ndarray) -> np.ndarray:
        """The BM25 score of each passage of ``ids`` (one row per query; id -1 scores nan) for its query."""
        terms = query_terms(self._bm25().tokenizer, queries)
        idf = self._live_idf(terms)
        out = np.where(ids >= 0, 0.0, np.nan)
        for shard, where, rows in self.shard_rows(ids.ravel()):
            mine = np.full(ids.shape, -1, dtype=np.int64)  # this shard's rows where its ids are, -1 elsewhere
            mine.flat[where] = rows
            out.flat[where] = shard.sparse.scores_at(terms, mine, self._weights(shard, idf)).flat[where]
        return out

    def sparse_bound(self, queries: Sequence[str]) -> np.ndarray:
        """Per query, the most BM25 can score: the sum of its terms' idf (a term no passage holds adds 0), what hybrid divides by."""
        terms = query_terms(self._bm25().tokenizer, queries)
        live = self._live_idf(terms)
        bounds = np.zeros(len(queries))
        for q, words in enumerate(terms):
            for word in words:
                stored = next((idf for s in self.shards if (idf := s.sparse.idf_of(word)) is not None), None)
                bounds[q] += 0.0 if stored is None else stored if live is None else live[word]
        return bounds

    def dense_scores(self, queries: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """The exact inner product of each query with each passage of ``ids`` (-inf for id -1): stored vectors, else texts re-embedded."""
        if all(s.has_vectors for s in self.shards):
            return self.exact_scores(queries, ids)
        out = np.full(ids.shape, -np.inf, dtype=np.float32)
        for q in range(len(ids)):
            valid = np.nonzero(ids[q] >= 0)[0]
            vectors = self.passage_vectors(self.passages([int(i) for i in ids[q][valid]]))
            out[q, valid] = vectors @ as_float32(queries[q])
        return out

    def require_vectors(self) -> None:
        """Raise DatastoreError unless every shard has its stored vectors (exact rerank, recall)."""
        missing = [s.name for s in self.shards if not s.has_vectors]
        if missing:
            raise DatastoreError(
                f"{self.name}: {len(missing)} of {len(self.shards)} shards have no stored vectors (e.g. shards/{missing[0]}/vectors.npy); "
                "exact rerank and recall need them: rebuild with embed.store_vectors: true"
            )

    def exact_scores(self, queries: np.ndarray, ids: np.ndarray, block: int = 65536) -> np.ndarray:
        """Exact inner product of each query with the stored vector of each of its ids (shape of ``ids``; -inf for id -1)."""
        queries = as_float32(queries)
        out = np.full(ids.shape, -np.inf, dtype=np.float32)
        for shard, where, rows in self.shard_rows(ids.ravel()):
            q_idx, col = np.unravel_index(where, ids.shape)
            uniq, inverse = np.unique(rows, return_inverse=True)
            vectors = np.asarray(shard.vectors[uniq], dtype=np.float32)  # sorted rows: near-sequential reads of the mmap
            for lo in range(0, len(rows), block):
                sl = slice(lo, lo + block)
                out[q_idx[sl], col[sl]] = np.einsum("ij,ij->i", queries[q_idx[sl]], vectors[inverse[sl]])
        return out

    def rerank_depth(self, k: int) -> int:
        """Candidates exact rerank rescores for top-``k`` by default: the build's calibrated depth scaled to ``k``, ≥ max(4·k, 100)."""
        recall, base = self.catalog.recall, base_rerank_depth(k)
        if recall is None or recall.status != "measured" or not recall.k or not recall.rerank_depth:
            return base
        return max(base, math.ceil(recall.rerank_depth * k / recall.k))

    def search_vectors(
        self, queries: np.ndarray, k: int = 10, nprobe: int | None = None, rerank: str | None = None, rerank_depth: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, passage ids) per query vector over all shards, best first; id -1 pads.

        ``rerank="exact"`` takes the best ``rerank_depth`` candidates of the index (default ``rerank_depth(k)``)
        and orders them by exact inner product with the stored fp16 vectors; the scores returned are then exact.
        """
        queries = as_float32(np.atleast_2d(queries))
        if rerank is None:
            return self._candidates(queries, k, nprobe)
        if rerank != "exact":
            raise MassiveDSError(f"unknown rerank {rerank!r}; the only rerank is 'exact'")
        self.require_vectors()
        depth = max(k, rerank_depth or self.rerank_depth(k))
        _, ids = self._candidates(queries, depth, nprobe)
        scores = self.exact_scores(queries, ids)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)

    def shard_of(self, pid: int) -> tuple[Shard, int] | None:
        """The shard that holds passage id ``pid`` and its row there; None when no shard of this datastore does."""
        s = int(np.searchsorted(self._starts, pid, side="right")) - 1
        row = int(self.shards[s].rows_of(np.array([pid]))[0]) if s >= 0 else -1
        return (self.shards[s], row) if row >= 0 else None

    def shard_rows(self, ids: np.ndarray) -> list[tuple[Shard, np.ndarray, np.ndarray]]:
        """The valid ids of ``ids`` (≥ 0) grouped by shard: (shard, where in ``ids``, rows in the shard), in shard order."""
        ids = np.asarray(ids, dtype=np.int64)
        shard_of = np.searchsorted(self._starts, ids, side="right") - 1
        groups = []
        for s in np.unique(shard_of[ids >= 0]):
            where = np.nonzero((ids >= 0) & (shard_of == s))[0]
            groups.append((self.shards[int(s)], where, self.shards[int(s)].rows_of(ids[where])))
        return groups

    def column_of(self, ids: np.ndarray, name: str) -> np.ndarray:
        """Passage column ``name`` at each id of a 1-d ``ids`` (None where the id is -1), from whole-shard columns read once."""
        out = np.full(len(ids), None, dtype=object)
        for shard, where, rows in self.shard_rows(ids):
            out[where] = shard.column(name)[rows]
        return out

    @functools.cached_property
    def _deleted_ids(self) -> np.ndarray:
        """Every deleted passage id, sorted (read from the shards' tombstones once per opening)."""
        parts = [s.ids_of(np.flatnonzero(s.deleted)) for s in self.shards]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    @property
    def deleted_share(self) -> float:
        """The share of the stored passages that are deleted (0: none, and searches skip the check)."""
        return len(self._deleted_ids) / max(self.num_passages, 1)

    def deleted(self, ids: np.ndarray) -> np.ndarray:
        """Whether each of ``ids`` (passage ids, any shape) was deleted (``massiveds delete``): never a search hit."""
        dead = self._deleted_ids
        if not len(dead):
            return np.zeros(np.shape(ids), dtype=bool)
        pos = np.minimum(np.searchsorted(dead, ids), len(dead) - 1)
        return dead[pos] == ids

    def sample_positions(self, ids: np.ndarray, seed: int) -> np.ndarray:
        """The nested-sample position of each id's document for ``seed`` (kept at fraction p iff below p; inf for id -1)."""
        out = np.full(len(ids), np.inf)
        for shard, where, rows in self.shard_rows(ids):
            out[where] = shard.sample_positions(seed)[rows]
        return out

    def passages(self, ids: list[int]) -> list[dict[str, Any]]:
        """The passages with the given ids (with their shard name), in the order asked."""
        out = []
        for pid in ids:
            if (found := self.shard_of(pid)) is None:
                raise DatastoreError(f"passage id {pid} is not in datastore {self.name}")
            shard, r = found
            row = shard.passages.rows([r])[0]
            if row["passage_id"] + shard.id_offset != pid:
                raise DatastoreError(
                    f"shard {shard.name}: row {r} holds passage {row['passage_id']}, the catalog expects "
                    f"{pid - shard.id_offset}; its files changed since the catalog was written (run massiveds verify)"
                )
            row["passage_id"] = pid
            row["shard"] = shard.name
            out.append(row)
        return out

    def search(self, queries: str | Sequence[str], k: int = 10, **options: Any) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Search text queries; a single string gives one ranked list of hits, a list gives one list per query.

        Each hit has ``passage_id``, ``score``, ``domain``, ``doc_id``, ``source``, ``url``, ``title``,
        ``char_start``, ``char_end``, ``text`` and ``shard`` (and ``continuation`` with ``continuation=True``;
        ``dense_score`` and ``sparse_score`` in hybrid mode). ``options`` are those of
        ``massiveds.store.search.SearchOptions`` (``domains``, ``nprobe``, ``fraction`` and ``seed``, ``dedup``,
        ``decontaminate``, ``mmr``, ``continuation``, ``rerank``, ``strict``, ``mode``, ``alpha``, ``fusion``), by name.
        """
        unknown = sorted(set(options) - set(SearchOptions.fields()))
        if unknown:
            known = ", ".join(SearchOptions.fields())
            raise MassiveDSError(f"unknown search option {', '.join(map(repr, unknown))}; the options are {known}")
        single = isinstance(queries, str)
        texts = [queries] if isinstance(queries, str) else list(queries)
        results = self.search_batch(texts, SearchOptions.create(k=k, **options)).hits
        return results[0] if single else results

    def search_batch(self, queries: Sequence[str], options: SearchOptions) -> SearchResult:
        """Search a batch of queries with ``options`` on the catalog as it is now; the result carries the hits and skipped shards.

        Writers never change a file a catalog names while that catalog is in place, but they remove what the old one named
        once the new one is (compact's old shard folders): a search that meets a missing file after a writer switched the
        catalog runs again, whole, on the new one, so it answers from one catalog and never fails for a writer.
        """
        self.refresh()
        for _ in range(READ_RETRIES):
            stamp = self._stamp
            try:
                return run_search(self, list(queries), options)
            except Exception:
                if self.catalog_stamp() == stamp:
                    raise
                self.refresh()
        return run_search(self, list(queries), options)

    @property
    def domains(self) -> list[str]:
        """The domains of the datastore's shards, sorted."""
        return sorted({s.domain for s in self.shards})

    def select_shards(self, domains: Sequence[str] | None = None) -> list[Shard]:
        """The shards of the given domains (all shards for None); an unknown domain is an error."""
        if domains is None:
            return list(self.shards)
        unknown = sorted(set(domains) - set(self.domains))
        if unknown:
            raise DatastoreError(f"unknown domain {', '.join(map(repr, unknown))}; datastore {self.name} has: {', '.join(self.domains)}")
        return [s for s in self.shards if s.domain in set(domains)]

    def shard_error(self, shard: Shard) -> str | None:
        """Why ``shard`` cannot be searched (a missing or unreadable file, a wrong count), or None; checked once."""
        if shard.name not in self._shard_errors:
            self._shard_errors[shard.name] = check_shard(shard)
        return self._shard_errors[shard.name]

    def usable_shards(self, shards: Sequence[Shard], strict: bool = False) -> tuple[list[Shard], dict[str, str]]:
        """The shards that can be searched and ``{name: reason}`` of those skipped (warned once each).

        Shards are checked in parallel (opening an index memory-maps it); with ``strict`` an unusable
        shard raises DatastoreError.
        """
        fresh = [s for s in shards if s.name not in self._shard_errors]
        if fresh:
            with ThreadPoolExecutor(max_workers=max(1, min(len(fresh), os.cpu_count() or 1))) as pool:
                errors = list(pool.map(check_shard, fresh))
            if any(errors) and self.catalog_stamp() != self._stamp:
                raise CatalogChangedError(f"{self.root}: the catalog was replaced while this search opened its shards")
            for shard, error in zip(fresh, errors, strict=True):
                self._shard_errors[shard.name] = error
                if error is not None and not strict:
                    warnings.warn(f"shard {shard.name} of {self.name} skipped: {error}", ShardSkippedWarning, stacklevel=3)
        skipped = {s.name: err for s in shards if (err := self._shard_errors[s.name]) is not None}
        if strict and skipped:
            name, reason = next(iter(skipped.items()))
            raise DatastoreError(f"shard {name} of {self.name} is unusable: {reason} (--strict; drop it to skip unusable shards)")
        return [s for s in shards if s.name not in skipped], skipped

    def subset(self, shards: Sequence[Shard]) -> Datastore:
        """A view of this datastore over some of its shards (sharing their open indexes), for ``search_vectors``."""
        if len(shards) == len(self.shards):
            return self
        view = copy.copy(self)
        view.use_merged = False  # the merged index covers every shard
        view.shards = list(shards)
        view._starts = np.array([s.id_start for s in view.shards], dtype=np.int64)
        return view

    def has_passage(self, pid: int) -> bool:
        """Whether ``pid`` is a passage id, not deleted, of a shard that can be read."""
        found = self.shard_of(pid)
        return found is not None and self.shard_error(found[0]) is None and not found[0].deleted[found[1]]

    def passage_vectors(self, hits: Sequence[dict[str, Any]]) -> np.ndarray:
        """Vectors of hits: the shard's stored fp16 ``vectors.npy`` rows, else the hit texts re-embedded."""
        out = np.zeros((len(hits), self.catalog.embedder.dim), dtype=np.float32)
        missing = []
        for i, hit in enumerate(hits):
            found = self.shard_of(int(hit["passage_id"]))
            stored = None if found is None else self._vectors_of(found[0])
            if found is None or stored is None:
                missing.append(i)
            else:
                out[i] = stored[found[1]]
        if missing:
            out[missing] = self.embedder.encode_passages([hits[i]["text"] for i in missing])
        return out

    def _vectors_of(self, shard: Shard) -> np.ndarray | None:
        """The shard's stored vectors, or None when it has none or they are unreadable."""
        try:
            vectors = shard.vectors
        except (DatastoreError, OSError, ValueError):
            return None
        return vectors if vectors.shape[1] == self.catalog.embedder.dim else None
