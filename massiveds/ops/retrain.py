"""Retrain a datastore's quantizer on a fresh sample of its stored vectors and re-add every shard, without re-embedding.

An IVF-PQ quantizer trained on the data of the build ages as the datastore changes (appends, deletions,
merges of separately trained builds); ``retrain`` trains the catalog's index plan again on a seeded
uniform sample of the live (not deleted) stored fp16 vectors, writes it as ``trained/retrain-<n>.faiss``
(recorded in the catalog before any shard uses it), then rebuilds each shard's ``index.faiss`` from its
stored vectors with the new quantizer, in the shard's next folder (its other files hard-linked;
``massiveds.ops.shard_folders``), and switches that shard in the catalog, one shard at a time: a crash
leaves every shard searchable with the quantizer its record names, and the command run again retrains anew. At the end the recall is
measured again (and the rerank depth calibrated) and trained indexes no shard uses are removed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from massiveds.core.catalog import CHECKSUMS, FileRecord, ListBalance, ShardRecord, TrainedIndexRecord, open_catalog, write_catalog
from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import ShardFiles
from massiveds.core.writer_lock import locks_datastore
from massiveds.encode.index import IndexPlan, add_vectors, list_balance, read_index, train_index, write_index
from massiveds.evaluate.recall import recall_summary
from massiveds.ops.shard_folders import install, link_files, remove_unnamed, staging
from massiveds.ops.verify import require_catalog_files
from massiveds.store.datastore import Datastore
from massiveds.store.shard import Shard

#: Stored vectors re-added at once (bounds the float32 copy).
ADD_BLOCK = 65536


@dataclass
class Retrained:
    """What a retrain did: the new trained index, the sample it was trained on, recall@10 before and after."""

    trained: str
    sample: int
    shards: int
    recall_before: float | None
    recall_after: float | None


@locks_datastore("retrain")
def retrain(root: Path, sample: int | None = None, seed: int = 0, on_shard: Callable[[str, int], None] | None = None) -> Retrained:
    """Retrain the quantizer of the datastore at ``root`` on ``sample`` stored vectors (default: the plan's) and re-add every shard."""
    catalog = open_catalog(root)
    plan = IndexPlan.model_validate(catalog.index.but(drop=["merged_plans"]).as_json())
    if plan.type == "flat":
        raise MassiveDSError(f"{root} has a Flat index ({plan.factory}): exact search has no quantizer to retrain")
    if any(s.elsewhere for s in catalog.shards):
        raise MassiveDSError(f"{root} references shards of other datastores in place: retrain those, or merge with --copy")
    remove_unnamed(root, catalog)
    require_catalog_files(root, catalog, "retrain")
    ds = Datastore(root, catalog)
    ds.shards.require_vectors()
    vectors = _sample(ds, sample or plan.train_sample, seed)
    rel = next(r for n in range(1, 10_000) if not (root / (r := f"trained/retrain-{n:03d}.faiss")).exists())
    # the plan's sample is a target: --sample, or deletions since the build, may leave fewer live vectors to train on
    write_index(train_index(plan.model_copy(update={"train_sample": len(vectors)}), vectors), root / rel)
    catalog = catalog.but(trained_indexes=[*catalog.trained_indexes, TrainedIndexRecord.of(root, rel)])
    write_catalog(root, catalog)
    before = catalog.recall.figure() if catalog.recall else None
    for shard in ds.shards:
        record = _readd(root, next(s for s in catalog.shards if s.name == shard.name), shard, rel)
        catalog = catalog.but(shards=[record if s.name == shard.name else s for s in catalog.shards], drop=["merged"])
        write_catalog(root, catalog)
        shutil.rmtree(shard.folder)  # no reader opens it from here on: the catalog names the new one
        if on_shard is not None:
            on_shard(shard.name, len(ds.shards))
    (root / CHECKSUMS).unlink(missing_ok=True)  # it lists the files as published; this copy no longer is that
    old = {r.file for r in [catalog.trained_index, *catalog.trained_indexes] if r is not None} - {rel}
    catalog = catalog.but(trained_index=TrainedIndexRecord.of(root, rel), trained_indexes=[])
    catalog = catalog.but(recall=recall_summary(root, catalog=catalog))
    write_catalog(root, catalog)
    for file in old:
        (root / file).unlink(missing_ok=True)
    remove_unnamed(root, catalog)
    return Retrained(rel, len(vectors), len(ds.shards), before, catalog.recall.figure() if catalog.recall else None)


def _readd(root: Path, record: ShardRecord, shard: Shard, trained: str) -> ShardRecord:
    """The shard with its stored vectors added to the new quantizer ``trained``, in its next folder (its other files linked)."""
    index = read_index(root / trained, mmap=False)
    for lo in range(0, shard.count, ADD_BLOCK):
        rows = np.arange(lo, min(shard.count, lo + ADD_BLOCK))
        add_vectors(index, np.asarray(shard.vectors[rows], dtype=np.float32), shard.ids_of(rows))
    staged = staging(root, record)
    link_files(shard.folder, staged, [p.name for p in shard.folder.iterdir() if p.is_file() and p.name != ShardFiles.INDEX])
    write_index(index, staged / ShardFiles.INDEX)
    balance = list_balance(index)
    new = record.but(trained=trained, files=record.files | {ShardFiles.INDEX: FileRecord.of(staged / ShardFiles.INDEX)},
                     list_balance=None if balance is None else ListBalance.model_validate(balance))
    return install(root, staged, record, new)


def _sample(ds: Datastore, n: int, seed: int) -> np.ndarray:
    """``n`` live stored vectors (float32) drawn uniformly without replacement across the shards (all when fewer)."""
    live = [np.flatnonzero(~s.deleted) for s in ds.shards]
    total = sum(len(rows) for rows in live)
    picks = np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
    pieces, offset = [], 0
    for shard, rows in zip(ds.shards, live, strict=True):
        mine = picks[(picks >= offset) & (picks < offset + len(rows))] - offset
        if len(mine):
            pieces.append(np.asarray(shard.vectors[rows[mine]], dtype=np.float32))
        offset += len(rows)
    return np.concatenate(pieces)
