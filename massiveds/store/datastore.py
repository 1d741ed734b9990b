"""Open a built datastore and search it: the catalog, the query embedder, and the parts a search reads.

A ``Datastore`` holds its catalog and composes what a search reads, each in its own module: the shards
(``massiveds.store.shard_set``: id routing, passages, tombstones), dense retrieval over them
(``massiveds.store.dense``: FAISS fan-out or the merged index, exact rerank) and BM25
(``massiveds.store.bm25``). ``search`` hands them, over the shards a search may read, to
``massiveds.store.search``, which calls down into them and never back. A shard whose files are missing or
unreadable is skipped with a warning (``ShardSkippedWarning``) unless ``strict``; a writer that replaces the
catalog while a search runs makes it run again on the new one.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from massiveds.core.catalog import Catalog, EmbedderRecord, ShardRecord, open_catalog
from massiveds.core.errors import DatastoreError, MassiveDSError, ShardSkippedWarning, ShardsUnavailableError
from massiveds.core.layout import CATALOG, FORMAT_VERSION, DatastoreLayout
from massiveds.encode.embed import Embedder, differences
from massiveds.store.bm25 import BM25Retriever
from massiveds.store.dense import DenseRetriever
from massiveds.store.hit import Hit, Passage
from massiveds.store.merged import merged_matches, read_merged
from massiveds.store.search import Retrievers, SearchOptions, SearchResult, check_queries, run_search
from massiveds.store.shard import Shard, check_shard
from massiveds.store.shard_set import ShardSet

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


def _shard(root: Path, record: ShardRecord, nprobe: int | None) -> Shard:
    """The shard of a catalog record, in the datastore at ``root`` whose default nprobe is ``nprobe``."""
    return Shard(record, root / record.folder_rel(), record.nprobe_or(nprobe))


class Datastore:
    """A datastore directory opened for search (see ``massiveds.open``)."""

    def __init__(self, root: Path, catalog: Catalog) -> None:
        self.root = root
        self.catalog = catalog
        self.shards = ShardSet(catalog.name, [_shard(root, s, catalog.index.nprobe) for s in catalog.shards_by_id], catalog.embedder.dim)
        self._embedder: Embedder | None = None
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
        return self.shards.num_passages

    @property
    def domains(self) -> list[str]:
        """The domains of the datastore's shards, sorted."""
        return self.shards.domains

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

    @property
    def has_sparse(self) -> bool:
        """Whether the datastore has a BM25 index (search modes ``sparse`` and ``hybrid``)."""
        return self.catalog.sparse is not None

    def dense_over(self, shards: ShardSet) -> DenseRetriever:
        """Dense retrieval over ``shards`` (the merged index when they are every shard and the catalog records one)."""
        merged = self.merged_index if len(shards) == len(self.shards) else None
        return DenseRetriever(shards, self.catalog.index.nprobe, self.catalog.recall, lambda: self.embedder, merged)

    def bm25_over(self, shards: ShardSet) -> BM25Retriever:
        """BM25 over ``shards``, with live idf over every shard of the datastore."""
        if self.catalog.sparse is None:
            raise MassiveDSError(f"{self.name} has no BM25 index, so only search mode 'dense' works; rebuild with sparse.enabled: true")
        return BM25Retriever(shards, self.catalog.sparse, every=self.shards)

    @property
    def dense(self) -> DenseRetriever:
        """Dense retrieval over every shard."""
        return self.dense_over(self.shards)

    @property
    def bm25(self) -> BM25Retriever:
        """BM25 over every shard (MassiveDSError when the datastore has no BM25 index)."""
        return self.bm25_over(self.shards)

    def search_vectors(self, queries: np.ndarray, k: int = 10, nprobe: int | None = None, rerank: str | None = None,
                       rerank_depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, passage ids) per query vector over every shard (``DenseRetriever.search``)."""
        return self.dense.search(queries, k, nprobe, rerank, rerank_depth)

    def passages(self, ids: Sequence[int]) -> list[Passage]:
        """The passages with the given ids (with their shard name), in the order asked (``ShardSet.passages``)."""
        return self.shards.passages(ids)

    def search(self, queries: str | Sequence[str], k: int = 10, **options: Any) -> list[Hit] | list[list[Hit]]:
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
                return self._search_once(list(queries), options)
            except Exception:
                if self.catalog_stamp() == stamp:
                    raise
                self.refresh()
        return self._search_once(list(queries), options)

    def _search_once(self, queries: list[str], options: SearchOptions) -> SearchResult:
        """One search on the catalog in place."""
        check_queries(queries)
        sources, skipped = self.retrievers(options)
        return run_search(sources, queries, options, skipped)

    def retrievers(self, options: SearchOptions) -> tuple[Retrievers, dict[str, str]]:
        """What a search with ``options`` reads (the shards of its domains that can be read), and the shards skipped, with why.

        Raises ShardsUnavailableError when no shard of the ones asked can be searched.
        """
        usable, skipped = self.usable_shards(self.shards.select(options.domains), strict=options.strict)
        if not usable:
            where = f"domain {', '.join(options.domains)}" if options.domains else f"datastore {self.name}"
            reasons = "; ".join(f"{n}: {r}" for n, r in skipped.items())
            raise ShardsUnavailableError(f"no shard of {where} can be searched ({reasons})")
        shards = self.shards.subset(usable)
        bm25 = self.bm25_over(shards) if self.has_sparse else None
        return Retrievers(shards, self.dense_over(shards), bm25, lambda: self.embedder), skipped

    def usable_shards(self, shards: Sequence[Shard] | None = None, strict: bool = False) -> tuple[list[Shard], dict[str, str]]:
        """The shards (of ``shards``, default all) that can be searched and ``{name: reason}`` of those skipped (warned once each).

        Shards are checked in parallel (opening an index memory-maps it); with ``strict`` an unusable
        shard raises DatastoreError.
        """
        shards = self.shards.shards if shards is None else shards
        errors = self.shards.errors
        fresh = [s for s in shards if s.name not in errors]
        if fresh:
            with ThreadPoolExecutor(max_workers=max(1, min(len(fresh), os.cpu_count() or 1))) as pool:
                found = list(pool.map(check_shard, fresh))
            if any(found) and self.catalog_stamp() != self._stamp:
                raise CatalogChangedError(f"{self.root}: the catalog was replaced while this search opened its shards")
            for shard, error in zip(fresh, found, strict=True):
                errors[shard.name] = error
                if error is not None and not strict:
                    warnings.warn(f"shard {shard.name} of {self.name} skipped: {error}", ShardSkippedWarning, stacklevel=3)
        skipped = {s.name: err for s in shards if (err := errors[s.name]) is not None}
        if strict and skipped:
            name, reason = next(iter(skipped.items()))
            raise DatastoreError(f"shard {name} of {self.name} is unusable: {reason} (--strict; drop it to skip unusable shards)")
        return [s for s in shards if s.name not in skipped], skipped
