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
from typing import Any

import numpy as np

from massiveds.core.catalog import open_catalog
from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import DatastoreLayout, file_record, sha256_file, shard_name, stored_id_start, write_json
from massiveds.ops.subsample import rewrite_shard
from massiveds.ops.verify import require_catalog_files

EMBEDDER_KEYS = ("model", "dim", "normalize", "max_length", "query_prefix", "passage_prefix")


def _load(path: Path) -> dict[str, Any]:
    return open_catalog(path)


def check_embedders(catalogs: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    """The common embedder of the catalogs; raises naming the first that differs."""
    (first_path, first), *rest = catalogs
    want = {k: first["embedder"].get(k) for k in EMBEDDER_KEYS}
    for path, cat in rest:
        got = {k: cat["embedder"].get(k) for k in EMBEDDER_KEYS}
        if got != want:
            diff = ", ".join(f"{k}: {want[k]!r} vs {got[k]!r}" for k in EMBEDDER_KEYS if want[k] != got[k])
            raise MassiveDSError(f"cannot merge {first_path} and {path}: their embedders differ ({diff}); re-embed one of them")
    return first["embedder"]


def _referenced(src: DatastoreLayout, dst: DatastoreLayout, shard: dict[str, Any], name: str, first_id: int) -> dict[str, Any]:
    """The record of ``shard`` of ``src`` referenced in place by ``dst`` as shard ``name`` with ids from ``first_id`` on."""
    folder = os.path.relpath(src.shard_folder(shard).resolve(), dst.root.resolve())
    rest = {k: v for k, v in shard.items() if k not in ("name", "id_start", "id_offset", "folder")}
    return {"name": name} | rest | {"id_start": first_id, "id_offset": first_id - stored_id_start(shard), "folder": Path(folder).as_posix()}


def merge(sources: list[Path], out: Path, copy: bool = False, on_shard: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write the merge of ``sources`` to ``out`` (shards referenced in place, or copied with ``copy``); returns the new catalog."""
    if len(sources) < 2:
        raise MassiveDSError("merge needs at least two datastores")
    catalogs = [(p, _load(p)) for p in sources]
    embedder = check_embedders(catalogs)
    for path, catalog in catalogs:
        require_catalog_files(path, catalog, "merge")
    dst = DatastoreLayout(out)
    if dst.root.exists() and any(dst.root.iterdir()):
        raise MassiveDSError(f"{out} exists and is not empty; choose a new --out")
    dst.root.mkdir(parents=True, exist_ok=True)
    per_domain: collections.Counter[str] = collections.Counter()
    shards, next_id = [], 0
    domains: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    dropped: collections.Counter[str] = collections.Counter()
    for i, (path, catalog) in enumerate(catalogs):
        src = DatastoreLayout(path)
        nprobe = catalog["index"].get("nprobe")
        for shard in sorted(catalog["shards"], key=lambda s: s["id_start"]):
            trained = src.shard_trained(shard)
            trained_rel = f"trained/{i:03d}-{trained.stem}.faiss"
            if not (dst.root / trained_rel).is_file():
                (dst.root / trained_rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(trained, dst.root / trained_rel)
            name = shard_name(shard["domain"], per_domain[shard["domain"]])
            per_domain[shard["domain"]] += 1
            if copy:
                everything = np.ones(shard["count"], dtype=bool)
                record = rewrite_shard(src.shard_folder(shard), dst.shard(name), shard, everything, next_id, trained, name)
            else:
                record = _referenced(src, dst, shard, name, next_id)
            record |= {"trained": trained_rel, "nprobe": shard.get("nprobe", nprobe),
                       "merged_from": {"datastore": catalog["name"], "shard": shard["name"]}}
            if copy:
                write_json(dst.shard(name) / "shard.json", record)
            shards.append(record)
            next_id += record["count"]
            if on_shard:
                on_shard(name)
        for domain, totals in catalog["domains"].items():
            domains[domain].update({k: v for k, v in totals.items() if isinstance(v, int)})
        dropped.update(catalog.get("build", {}).get("dropped", {}))
    first = catalogs[0][1]
    shutil.copyfile(dst.root / shards[0]["trained"], dst.trained_index)
    new = {
        "format_version": first["format_version"],
        "name": "+".join(c["name"] for _, c in catalogs),
        "created": first["created"],
        "embedder": embedder,
        "index": first["index"] | {"merged_plans": [c["index"] for _, c in catalogs]},
        "chunk": first["chunk"],
        "trained_index": {"file": dst.trained_index.name} | file_record(dst.trained_index),
        "trained_indexes": [{"file": rel} | file_record(dst.root / rel) for rel in sorted({s["trained"] for s in shards})],
        "shards": shards,
        "domains": {d: dict(c) for d, c in domains.items()},
        "build": {"dropped": dict(sorted(dropped.items()))},
        "merged_from": [{"name": c["name"], "catalog_sha256": sha256_file(DatastoreLayout(p).catalog)} for p, c in catalogs],
        "manifests": [m for _, c in catalogs for m in c.get("manifests", [])],
        "versions": first.get("versions", {}),
    }
    write_json(dst.catalog, new)
    return new
