"""The shards a search reads, in passage-id order, and everything a search asks of them by passage id.

Passage ids are contiguous per shard (the catalog gives each shard's ``id_start`` and ``count``), so an id leads to
its shard by a binary search over the shard starts (``shard_of``, ``shard_rows``: written once, here) and to its row
directly, also in the shard's fp16 ``vectors.npy``. A shard merged in place (``massiveds merge``) lives in another
datastore's folder and its files hold that datastore's ids: its ``id_offset`` is added to the ids it returns and
the passage ids it reads. Tombstones (``massiveds delete``) and nested-sample positions are looked up the same way.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import numpy as np

from massiveds.core.errors import DatastoreError
from massiveds.store.hit import Passage
from massiveds.store.shard import Shard, check_shard


class ShardSet:
    """Some shards of datastore ``name`` (all, or those of a search), with id routing, passage reads and tombstones."""

    def __init__(self, name: str, shards: Sequence[Shard], dim: int, errors: dict[str, str | None] | None = None) -> None:
        self.name = name
        self.shards = list(shards)
        #: the dimension of the datastore's vectors: stored vectors of another are not used
        self.dim = dim
        #: why each shard checked so far cannot be read (None: it can), shared by the sets of one opened datastore
        self.errors: dict[str, str | None] = {} if errors is None else errors
        self._starts = np.array([s.id_start for s in self.shards], dtype=np.int64)

    def __iter__(self) -> Iterator[Shard]:
        return iter(self.shards)

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, i: int) -> Shard:
        return self.shards[i]

    def subset(self, shards: Sequence[Shard]) -> ShardSet:
        """A set over some of these shards (sharing their open files and the record of their errors)."""
        return self if len(shards) == len(self.shards) else ShardSet(self.name, shards, self.dim, self.errors)

    @property
    def num_passages(self) -> int:
        return sum(s.count for s in self.shards)

    @property
    def domains(self) -> list[str]:
        """The domains of the shards, sorted."""
        return sorted({s.domain for s in self.shards})

    def select(self, domains: Sequence[str] | None = None) -> list[Shard]:
        """The shards of the given domains (all shards for None); an unknown domain is an error."""
        if domains is None:
            return list(self.shards)
        unknown = sorted(set(domains) - set(self.domains))
        if unknown:
            raise DatastoreError(f"unknown domain {', '.join(map(repr, unknown))}; datastore {self.name} has: {', '.join(self.domains)}")
        return [s for s in self.shards if s.domain in set(domains)]

    def error(self, shard: Shard) -> str | None:
        """Why ``shard`` cannot be searched (a missing or unreadable file, a wrong count), or None; checked once."""
        if shard.name not in self.errors:
            self.errors[shard.name] = check_shard(shard)
        return self.errors[shard.name]

    # -- ids to shards --------------------------------------------------------------------------

    def shard_of(self, pid: int) -> tuple[Shard, int] | None:
        """The shard that holds passage id ``pid`` and its row there; None when no shard of this set does."""
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

    def fan_out(self, one: Callable[[Shard], tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
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

    # -- what a search reads by id --------------------------------------------------------------

    def passages(self, ids: Sequence[int]) -> list[Passage]:
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
            out.append(cast(Passage, row))
        return out

    def has_passage(self, pid: int) -> bool:
        """Whether ``pid`` is a passage id, not deleted, of a shard that can be read."""
        found = self.shard_of(pid)
        return found is not None and self.error(found[0]) is None and not found[0].deleted[found[1]]

    def column_of(self, ids: np.ndarray, name: str) -> np.ndarray:
        """Passage column ``name`` at each id of a 1-d ``ids`` (None where the id is -1), from whole-shard columns read once."""
        out = np.full(len(ids), None, dtype=object)
        for shard, where, rows in self.shard_rows(ids):
            out[where] = shard.column(name)[rows]
        return out

    def sample_positions(self, ids: np.ndarray, seed: int) -> np.ndarray:
        """The nested-sample position of each id's document for ``seed`` (kept at fraction p iff below p; inf for id -1)."""
        out = np.full(len(ids), np.inf)
        for shard, where, rows in self.shard_rows(ids):
            out[where] = shard.sample_positions(seed)[rows]
        return out

    @functools.cached_property
    def _deleted_ids(self) -> np.ndarray:
        """Every deleted passage id, sorted (read from the shards' tombstones once per set)."""
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

    # -- stored vectors -------------------------------------------------------------------------

    def require_vectors(self) -> None:
        """Raise DatastoreError unless every shard has its stored vectors (exact rerank, recall)."""
        missing = [s.name for s in self.shards if not s.has_vectors]
        if missing:
            raise DatastoreError(
                f"{self.name}: {len(missing)} of {len(self.shards)} shards have no stored vectors (e.g. shards/{missing[0]}/vectors.npy); "
                "exact rerank and recall need them: rebuild with embed.store_vectors: true"
            )

    def stored_vectors(self, shard: Shard) -> np.ndarray | None:
        """The shard's stored vectors, or None when it has none, they are unreadable or of another dimension."""
        try:
            vectors = shard.vectors
        except (DatastoreError, OSError, ValueError):
            return None
        return vectors if vectors.shape[1] == self.dim else None
