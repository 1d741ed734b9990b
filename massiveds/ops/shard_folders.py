"""Shard folders that writers replace whole: a changed shard is written into its next folder and switched to by the catalog.

A shard a writer rewrites (``compact``, ``retrain``) goes into ``shards/<name>.v<n>`` (``n`` one more than the folder the
catalog names), staged as ``shards/.<name>.v<n>.tmp`` and renamed there; then the catalog is switched to it, then the
old folder is removed. No file a catalog names changes while that catalog is in place, so a reader sees one catalog's
shards whole; a reader still on the old catalog that opens a file after the removal finds it missing and searches
again on the new one. A writer killed anywhere leaves at most files and folders no catalog names, which the next
writer removes (``remove_unnamed``) before it reads anything.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from massiveds.core.catalog import COMPACTED, DEDUP_DIR, Catalog, ShardRecord
from massiveds.store.merged import MERGED_DIR


def next_folder(shard: ShardRecord) -> str:
    """The folder a rewrite of ``shard`` goes into, relative to the datastore: ``shards/<name>.v<generation + 1>``."""
    return f"shards/{shard.name}.v{shard.generation + 1}"


def staging(root: Path, shard: ShardRecord) -> Path:
    """An empty folder to write the rewrite of ``shard`` into (what a killed writer left there is removed first)."""
    staged = root / "shards" / f".{shard.name}.v{shard.generation + 1}.tmp"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir()
    return staged


def install(root: Path, staged: Path, shard: ShardRecord, record: ShardRecord) -> ShardRecord:
    """Rename ``staged`` into the next folder of ``shard``; ``record`` (the rewrite's) with that folder, for the catalog to switch to."""
    target = root / next_folder(shard)
    shutil.rmtree(target, ignore_errors=True)  # a killed writer's, never named by a catalog
    staged.rename(target)
    return record.but(folder=next_folder(shard))


def link_files(src: Path, dst: Path, names: Iterable[str]) -> None:
    """Hard-link the files ``names`` of ``src`` into ``dst`` (copied where the filesystem has no links): unchanged files cost no space."""
    for name in names:
        try:
            os.link(src / name, dst / name)
        except OSError:
            shutil.copy2(src / name, dst / name)


def remove_unnamed(root: Path, catalog: Catalog) -> None:
    """Remove what a killed or finished rewrite left that ``catalog`` does not name: shard folders, ``merged/``, trained indexes,
    dedup index files (an append that indexed the datastore again replaces them)."""
    _remove_replaced(root, catalog)
    indexed = set(catalog.dedup.files) if catalog.dedup is not None else set()
    for path in sorted((root / DEDUP_DIR).glob("*.parquet")):
        if path.name not in indexed:
            path.unlink()
    if catalog.merged is None:  # a compact or retrain rewrote the shard indexes it was made from
        shutil.rmtree(root / MERGED_DIR, ignore_errors=True)
    named = {r.file for r in [catalog.trained_index, *catalog.trained_indexes] if r is not None} | {s.trained for s in catalog.shards}
    for path in sorted((root / "trained").glob("retrain-*.faiss")):
        if f"trained/{path.name}" not in named:
            path.unlink()


def _remove_replaced(root: Path, catalog: Catalog) -> None:
    """Remove every folder of a shard of ``catalog`` that it does not name (old ones, killed writers' new ones), and staged ones."""
    shards = root / "shards"
    if not shards.is_dir():
        return
    named = {s.name: Path(s.folder_rel()).name for s in catalog.shards if not s.elsewhere}
    for folder in sorted(p for p in shards.iterdir() if p.is_dir()):
        found = COMPACTED.fullmatch(f"shards/{folder.name}")
        name = found.group(1) if found else folder.name
        staged = folder.name.startswith(".") and folder.name.endswith(".tmp")
        if staged or (name in named and named[name] != folder.name):
            shutil.rmtree(folder)
