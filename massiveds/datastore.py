"""Open a built datastore and search it: embed queries, fan out over shards, merge by score.

Passage ids are contiguous per shard (the catalog gives each shard's ``id_start`` and ``count``),
so an id leads to its shard by a binary search over the shard starts and to its row directly.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from massiveds.embed import Embedder
from massiveds.errors import DatastoreError
from massiveds.index import as_float32, read_index, set_nprobe
from massiveds.layout import FORMAT_VERSION, DatastoreLayout, read_json
from massiveds.passages import PassageFile


@dataclass
class Shard:
    """One shard of an open datastore; its index and passages are opened on first use."""

    name: str
    domain: str
    id_start: int
    count: int
    folder: Path
    _index: faiss.Index | None = field(default=None, repr=False)
    _passages: PassageFile | None = field(default=None, repr=False)

    @property
    def index(self) -> faiss.Index:
        if self._index is None:
            self._index = read_index(self.folder / "index.faiss")
        return self._index

    @property
    def passages(self) -> PassageFile:
        if self._passages is None:
            self._passages = PassageFile(self.folder / "passages.arrow")
        return self._passages


class Datastore:
    """A datastore directory opened for search (see ``massiveds.open``)."""

    def __init__(self, root: Path, catalog: dict[str, Any]) -> None:
        self.root = root
        self.catalog = catalog
        self.shards = [
            Shard(s["name"], s["domain"], int(s["id_start"]), int(s["count"]), root / "shards" / s["name"])
            for s in sorted(catalog["shards"], key=lambda s: int(s["id_start"]))
        ]
        self._starts = np.array([s.id_start for s in self.shards], dtype=np.int64)
        self._embedder: Embedder | None = None

    @classmethod
    def open(cls, path: str | Path) -> Datastore:
        """Open the datastore at ``path``; raises DatastoreError if it is not a complete datastore."""
        layout = DatastoreLayout(path)
        if not layout.catalog.is_file():
            raise DatastoreError(f"{path}: not a datastore (no datastore.json); build one with 'massiveds build'")
        catalog = read_json(layout.catalog)
        if catalog.get("format_version") != FORMAT_VERSION:
            raise DatastoreError(f"{path}: datastore format {catalog.get('format_version')} is not {FORMAT_VERSION}; rebuild it")
        return cls(layout.root, catalog)

    @property
    def name(self) -> str:
        return str(self.catalog["name"])

    @property
    def num_passages(self) -> int:
        return sum(s.count for s in self.shards)

    @property
    def embedder(self) -> Embedder:
        """The datastore's own embedder, loaded on first use."""
        if self._embedder is None:
            self._embedder = Embedder.from_info(self.catalog["embedder"])
        return self._embedder

    def search_vectors(self, queries: np.ndarray, k: int = 10, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, passage ids) per query vector over all shards, best first; id -1 pads."""
        queries = as_float32(queries)
        nprobe = nprobe or self.catalog["index"].get("nprobe")

        def one(shard: Shard) -> tuple[np.ndarray, np.ndarray]:
            set_nprobe(shard.index, nprobe)
            return shard.index.search(queries, min(k, shard.count))

        workers = max(1, min(len(self.shards), os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(one, self.shards))
        scores = np.concatenate([r[0] for r in results], axis=1)
        ids = np.concatenate([r[1] for r in results], axis=1)
        scores = np.where(ids < 0, -np.inf, scores)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)

    def passages(self, ids: list[int]) -> list[dict[str, Any]]:
        """The passages with the given ids (with their shard name), in the order asked."""
        out = []
        for pid in ids:
            s = int(np.searchsorted(self._starts, pid, side="right")) - 1
            if s < 0 or pid >= self.shards[s].id_start + self.shards[s].count:
                raise DatastoreError(f"passage id {pid} is not in datastore {self.name}")
            shard = self.shards[s]
            row = shard.passages.rows([pid - shard.id_start])[0]
            row["shard"] = shard.name
            out.append(row)
        return out

    def search(self, queries: str | list[str], k: int = 10, nprobe: int | None = None) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Search text queries; a single string gives one ranked list of hits, a list gives one list per query.

        Each hit has ``passage_id``, ``score``, ``domain``, ``doc_id``, ``source``, ``url``, ``title``,
        ``char_start``, ``char_end``, ``text`` and ``shard``.
        """
        single = isinstance(queries, str)
        texts = [queries] if isinstance(queries, str) else list(queries)
        scores, ids = self.search_vectors(self.embedder.encode_queries(texts), k=k, nprobe=nprobe)
        results = []
        for q_scores, q_ids in zip(scores, ids, strict=True):
            keep = [(float(s), int(i)) for s, i in zip(q_scores, q_ids, strict=True) if i >= 0]
            hits = self.passages([i for _, i in keep])
            for hit, (score, _) in zip(hits, keep, strict=True):
                hit["score"] = score
            results.append(hits)
        return results[0] if single else results


