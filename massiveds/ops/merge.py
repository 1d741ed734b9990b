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
"""

from __future__ import annotations

import collections
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from massiveds.core.catalog import (
    BuildRecord,
    Catalog,
    CatalogRef,
    DomainTotals,
    EmbedderRecord,
    ShardOrigin,
    ShardRecord,
    TrainedIndexRecord,
    open_catalog,
    write_catalog,
)
from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import DatastoreLayout, sha256_file, shard_name, write_json
from massiveds.encode.embed import differences
from massiveds.ops.subsample import rewrite_shard
from massiveds.ops.verify import require_catalog_files


def check_embedders(catalogs: list[tuple[Path, Catalog]]) -> EmbedderRecord:
    """The common embedder of the catalogs; raises naming the first that differs."""
    (first_path, first), *rest = catalogs
    for path, cat in rest:
        if diff := differences(first.embedder, cat.embedder):
            raise MassiveDSError(f"cannot merge {first_path} and {path}: their embedders differ ({'; '.join(diff)}); re-embed one of them")
    return first.embedder


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
        write_json(dst.shard(name) / "shard.json", record.as_json())
    return record


def merge(sources: list[Path], out: Path, copy: bool = False, on_shard: Callable[[str], None] | None = None) -> Catalog:
    """Write the merge of ``sources`` to ``out`` (shards referenced in place, or copied with ``copy``); returns the new catalog."""
    if len(sources) < 2:
        raise MassiveDSError("merge needs at least two datastores")
    catalogs = [(p, open_catalog(p)) for p in sources]
    embedder = check_embedders(catalogs)
    for path, catalog in catalogs:
        require_catalog_files(path, catalog, "merge")
    dst = DatastoreLayout(out)
    if dst.root.exists() and any(dst.root.iterdir()):
        raise MassiveDSError(f"{out} exists and is not empty; choose a new --out")
    dst.root.mkdir(parents=True, exist_ok=True)
    per_domain: collections.Counter[str] = collections.Counter()
    shards: list[ShardRecord] = []
    next_id = 0
    for i, (path, catalog) in enumerate(catalogs):
        for shard in catalog.shards_by_id:
            name = shard_name(shard.domain, per_domain[shard.domain])
            per_domain[shard.domain] += 1
            shards.append(_add_shard(i, path, catalog, shard, dst, name, next_id, copy))
            next_id += shards[-1].count
            if on_shard:
                on_shard(name)
    shutil.copyfile(dst.root / shards[0].trained, dst.trained_index)
    new = _merged_catalog(catalogs, embedder, shards, dst.root)
    write_catalog(dst.root, new)
    return new


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
