"""Merge datastores (e.g. one build per domain) into one: one catalog over all their shards.

Embedders must be identical (model, dimension, normalisation, max length, prefixes): vectors from
different embedders are not comparable, so such a merge is refused. Passage ids of the merge are
unique and contiguous per shard, in source order. By default shards are referenced in place: the
catalog records each shard's folder relative to the merged datastore (so the datastores can be
moved together) and an ``id_offset`` that search adds to the ids stored in its files, which are
left untouched. With ``copy`` the shards are copied with their ids renumbered (index entries are
copied, never re-encoded: see ``massiveds.ops.subsample.rewrite_shard``), making a self-contained
datastore. Each source's trained index is copied beside the catalog, and each shard keeps its
source's default nprobe (separately trained builds may differ).

BM25 indexes are scored with their datastore's statistics, so a merge's shards would not compare:
with ``copy``, when every source has one with the same settings (k1, b, tokenizer), they are scored
again with the statistics of the merge (``massiveds.encode.sparse.rescore``); sources whose settings
differ are refused. Shards referenced in place keep their files untouched, so that merge has no BM25
index (``sparse_note`` says why).

The sources' deletion records come along with their tables (ids, sources and text digests of what
they deleted), so the merge's audit trail is theirs and an append to it keeps those documents out.
"""

from __future__ import annotations

import collections
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from massiveds.clean.dedup_index import carry, index_record
from massiveds.core.catalog import (
    BuildRecord,
    Catalog,
    CatalogRef,
    DedupIndexRecord,
    DeletionRecord,
    DomainTotals,
    EmbedderRecord,
    ShardOrigin,
    ShardRecord,
    TrainedIndexRecord,
    open_catalog,
    write_catalog,
)
from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import DatastoreLayout, ShardFiles, sha256_file, shard_name, write_json
from massiveds.core.manifest import Sparse
from massiveds.core.writer_lock import creating
from massiveds.encode.embed import differences
from massiveds.encode.sparse import rescore
from massiveds.ops.subsample import folder_files, rewrite_shard
from massiveds.ops.verify import require_catalog_files


def check_embedders(catalogs: list[tuple[Path, Catalog]]) -> EmbedderRecord:
    """The common embedder of the catalogs; raises naming the first that differs."""
    (first_path, first), *rest = catalogs
    for path, cat in rest:
        if diff := differences(first.embedder, cat.embedder):
            raise MassiveDSError(f"cannot merge {first_path} and {path}: their embedders differ ({'; '.join(diff)}); re-embed one of them")
    return first.embedder


def check_sparse(catalogs: list[tuple[Path, Catalog]]) -> Sparse | None:
    """The BM25 settings every source shares (None when a source has no BM25 index); raises naming the first that differs."""
    (first_path, first), *rest = catalogs
    if any(cat.sparse is None for _, cat in catalogs):
        return None
    assert first.sparse is not None
    settings = (first.sparse.method, first.sparse.k1, first.sparse.b, first.sparse.tokenizer)
    for path, cat in rest:
        assert cat.sparse is not None
        if (cat.sparse.method, cat.sparse.k1, cat.sparse.b, cat.sparse.tokenizer) != settings:
            raise MassiveDSError(f"cannot merge {first_path} and {path}: their BM25 indexes differ (k1, b or tokenizer); rebuild one with "
                                 "the other's sparse section")
    return Sparse(enabled=True, k1=first.sparse.k1, b=first.sparse.b, tokenizer=first.sparse.tokenizer)


def sparse_note(catalogs: list[tuple[Path, Catalog]], copy: bool) -> str | None:
    """Why a merge has no BM25 index though a source has one (None when that is not the case)."""
    having = [p for p, cat in catalogs if cat.sparse is not None]
    if not having:
        return None
    if len(having) < len(catalogs):
        return f"the merge has no BM25 index: {len(catalogs) - len(having)} of {len(catalogs)} sources have none (dense search only)"
    if not copy:
        return ("the merge has no BM25 index: BM25 scores follow their datastore's statistics and shards referenced in place are not "
                "rewritten; merge with --copy to score them again over the merged passages")
    return None


def _referenced(src: Path, dst: Path, shard: ShardRecord, name: str, first_id: int) -> ShardRecord:
    """The record of ``shard`` of the datastore ``src`` referenced in place by ``dst`` as shard ``name`` with ids from ``first_id`` on."""
    folder = os.path.relpath((src / shard.folder_rel()).resolve(), dst.resolve())
    return shard.but(drop=["id_start", "id_offset", "folder"], name=name, id_start=first_id,
                     id_offset=first_id - shard.stored_id_start, folder=Path(folder).as_posix())


def _add_shard(i: int, src: Path, catalog: Catalog, shard: ShardRecord, dst: DatastoreLayout, name: str, first_id: int,
               copy: bool) -> ShardRecord:
    """Shard ``name`` of the merge: ``shard`` of source ``i`` (at ``src``) copied or referenced, with its trained index and origin."""
    trained = src / shard.trained_rel()
    trained_rel = f"trained/{i:03d}-{trained.stem}.faiss"
    if not (dst.root / trained_rel).is_file():
        (dst.root / trained_rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(trained, dst.root / trained_rel)
    if copy:
        everything = np.ones(shard.count, dtype=bool)
        record = rewrite_shard(src / shard.folder_rel(), dst.shard(name), shard, everything, first_id, trained, name)
    else:
        record = _referenced(src, dst.root, shard, name, first_id)
    record = record.but(trained=trained_rel, nprobe=shard.nprobe_or(catalog.index.nprobe),
                        merged_from=ShardOrigin(datastore=catalog.name, shard=shard.name))
    if copy:
        write_json(dst.shard(name) / ShardFiles.INFO, record.as_json())
    return record


def merge(sources: list[Path], out: Path, copy: bool = False, on_shard: Callable[[str], None] | None = None) -> Catalog:
    """Write the merge of ``sources`` to ``out`` (shards referenced in place, or copied with ``copy``); returns the new catalog."""
    if len(sources) < 2:
        raise MassiveDSError("merge needs at least two datastores")
    catalogs = [(p, open_catalog(p)) for p in sources]
    embedder = check_embedders(catalogs)
    sparse = check_sparse(catalogs) if copy else None
    for path, catalog in catalogs:
        require_catalog_files(path, catalog, "merge")
    dst = DatastoreLayout(out)
    with creating(dst.root, "merge"):
        per_domain: collections.Counter[str] = collections.Counter()
        shards: list[ShardRecord] = []
        renamed: dict[tuple[int, str], str] = {}
        next_id = 0
        for i, (path, catalog) in enumerate(catalogs):
            for shard in catalog.shards_by_id:
                name = renamed[(i, shard.name)] = shard_name(shard.domain, per_domain[shard.domain])
                per_domain[shard.domain] += 1
                shards.append(_add_shard(i, path, catalog, shard, dst, name, next_id, copy))
                next_id = shards[-1].id_end
                if on_shard:
                    on_shard(name)
        shutil.copyfile(dst.root / shards[0].trained, dst.trained_index)
        record = None
        if sparse is not None:
            folders = [dst.shard(s.name) for s in shards]
            record = rescore([(folder / ShardFiles.PASSAGES, folder) for folder in folders], sparse, dst.root / ".sparse-work")
            shards = [s.but(files=folder_files(dst.shard(s.name))) for s in shards]
            for s in shards:
                write_json(dst.shard(s.name) / ShardFiles.INFO, s.as_json())
        new = _merged_catalog(catalogs, embedder, shards, dst.root)
        if deletions := _carry_deletions(catalogs, renamed, dst.root):
            new = new.but(deletions=deletions)  # set only when there are any: a merge without keeps the catalog format
        if record is not None:
            new = new.but(sparse=record)
        if (index := _carry_dedup_index(catalogs, dst.root)) is not None:
            new = new.but(dedup=index)
        write_catalog(dst.root, new)
        return new


def _carry_dedup_index(catalogs: list[tuple[Path, Catalog]], root: Path) -> DedupIndexRecord | None:
    """Every source's dedup index files under ``root/dedup`` (``m<i>-`` before each name), when every source has one and their
    signatures were made alike; else none (the merge's first append then reads its documents, and indexes them)."""
    records = [c.dedup for _, c in catalogs]
    present = [r for r in records if r is not None]
    params = {r.params for r in present if r.params is not None}
    if len(present) < len(records) or len(params) > 1:
        return None
    names = []
    for i, (path, catalog) in enumerate(catalogs):
        assert catalog.dedup is not None
        names += carry(path, catalog.dedup, root, prefix=f"m{i:03d}-")
    return index_record(root, names, next(iter(params), None))


def _carry_deletions(catalogs: list[tuple[Path, Catalog]], renamed: dict[tuple[int, str], str], root: Path) -> list[DeletionRecord]:
    """Every source's deletion records, their tables copied under ``root`` (numbered anew) and their shards named as in the merge.

    The merge keeps the sources' audit trail, and its appends keep out what the sources deleted (the tables' text digests).
    """
    carried: list[DeletionRecord] = []
    for i, (path, catalog) in enumerate(catalogs):
        for record in catalog.deletions:
            table = f"deletions/{len(carried) + 1:05d}.parquet"
            (root / table).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path / record.table, root / table)
            carried.append(record.but(table=table, shards=[renamed[(i, s)] for s in record.shards if (i, s) in renamed]))
    return carried


def _merged_catalog(catalogs: list[tuple[Path, Catalog]], embedder: EmbedderRecord, shards: list[ShardRecord], root: Path) -> Catalog:
    """The catalog of the merge at ``root`` of ``catalogs`` into ``shards``: the first source's settings, every source's totals."""
    first = catalogs[0][1]
    domains: dict[str, DomainTotals] = {}
    dropped: collections.Counter[str] = collections.Counter()
    for _, catalog in catalogs:
        for domain, totals in catalog.domains.items():
            domains[domain] = domains[domain] + totals if domain in domains else totals
        dropped.update(catalog.build.dropped)
    return Catalog(
        format_version=first.format_version,
        name="+".join(c.name for _, c in catalogs),
        created=first.created,
        embedder=embedder,
        index=first.index.but(merged_plans=[c.index for _, c in catalogs]),
        chunk=first.chunk,
        trained_index=TrainedIndexRecord.of(root, DatastoreLayout(root).trained_index.name),
        trained_indexes=[TrainedIndexRecord.of(root, rel) for rel in sorted({s.trained for s in shards})],
        shards=shards,
        domains=domains,
        build=BuildRecord(dropped=dict(sorted(dropped.items()))),
        merged_from=[CatalogRef(name=c.name, catalog_sha256=sha256_file(DatastoreLayout(p).catalog)) for p, c in catalogs],
        manifests=[m for _, c in catalogs for m in c.manifests],
        versions=first.versions,
    )
