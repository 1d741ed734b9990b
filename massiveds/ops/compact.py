"""Compact a datastore: rewrite the shards whose deleted share exceeds a threshold without their deleted passages.

Passages, fp16 vectors, index entries (IVF codes or Flat vectors, copied) and BM25 rows (scores kept) of
the deleted passages are physically removed; every other passage keeps its id, so search results are those
of before the deletion, minus the deleted (the shard's ``ids.npy`` maps its rows to their ids where the
deletion left gaps, and its record's ``id_span`` keeps the ids it covered). The deleted text is nowhere
in the datastore afterwards, except in shards under the threshold (``--threshold 0``, the default, leaves
none).

Each shard is written into its next folder and the catalog switched to it, shard by shard
(``massiveds.ops.shard_folders``): readers never see a shard half-swapped, and a killed compaction leaves only
folders the next one removes.

The takedown: a compaction also removes what the build folder keeps of the text (``purge_build_text``): its parts
(documents, passages, downloaded inputs, work files), keeping its records and drop tables (ids and digests, no text).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from massiveds.core.catalog import CHECKSUMS, Catalog, DomainTotals, ShardRecord, open_catalog, write_catalog
from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import CATALOG, DONE_MARKER, DatastoreLayout, ShardFiles
from massiveds.core.passages import PassageFile
from massiveds.core.writer_lock import locks_datastore
from massiveds.ops.delete import finish_interrupted_deletion, require_recorded_deletions
from massiveds.ops.shard_folders import install, remove_unnamed, staging
from massiveds.ops.subsample import rewrite_shard
from massiveds.ops.verify import require_catalog_files


@dataclass
class Compacted:
    """One shard rewritten: passages, documents (first passages) and bytes, before and after."""

    shard: str
    passages_before: int
    passages_after: int
    documents_before: int
    documents_after: int
    bytes_before: int
    bytes_after: int


@locks_datastore("compact")
def compact(root: Path, threshold: float = 0.0, on_shard: Callable[[Compacted, int], None] | None = None) -> list[Compacted]:
    """Rewrite every shard of ``root`` with more than ``threshold`` of its passages deleted (``on_shard``: each done, of how many)."""
    if not 0 <= threshold < 1:
        raise MassiveDSError(f"--threshold is the deleted share above which a shard is rewritten, in [0, 1); got {threshold}")
    catalog = open_catalog(root)
    remove_unnamed(root, catalog)
    catalog, _ = finish_interrupted_deletion(root, catalog)
    require_recorded_deletions(root, catalog)
    due = [s for s in catalog.shards if s.deleted and s.deleted / s.count > threshold]
    for shard in due:
        if shard.elsewhere:
            raise MassiveDSError(f"shard {shard.name} lives in another datastore ({shard.folder}, merged in place): compact that one")
    require_catalog_files(root, catalog, "compact")
    done = []
    for shard in due:
        record, report = _compact_shard(root, shard, catalog.sparse is not None)
        catalog = _with_shard(catalog, shard, record, report).but(drop=["merged"])  # its lists hold the removed passages
        write_catalog(root, catalog)
        shutil.rmtree(root / shard.folder_rel())  # no reader opens it from here on: the catalog names the new one
        (root / CHECKSUMS).unlink(missing_ok=True)  # it lists the files as published; this copy no longer is that
        done.append(report)
        if on_shard is not None:
            on_shard(report, len(due))
    remove_unnamed(root, catalog)
    if catalog.deletions:
        purge_build_text(DatastoreLayout(root))
    return done


def _compact_shard(root: Path, shard: ShardRecord, bm25: bool) -> tuple[ShardRecord | None, Compacted]:
    """Write the shard without its deleted passages into its next folder; its new record (None: nothing was left)."""
    folder = root / shard.folder_rel()
    staged = staging(root, shard)
    keep = np.ones(shard.count, dtype=bool)  # rewrite_shard leaves the deleted rows out
    record = rewrite_shard(folder, staged, shard, keep, None, root / shard.trained_rel(), bm25=bm25)
    documents = count_documents(PassageFile(folder / ShardFiles.PASSAGES))
    before, after = sum(f.bytes for f in shard.files.values()), sum(f.bytes for f in record.files.values()) if record.count else 0
    report = Compacted(shard.name, shard.count, record.count, documents, record.documents or 0, before, after)
    if not record.count:
        shutil.rmtree(staged)
        return None, report
    return install(root, staged, shard, record), report


def _with_shard(catalog: Catalog, shard: ShardRecord, record: ShardRecord | None, report: Compacted) -> Catalog:
    """The catalog with ``shard`` replaced by its compacted ``record`` (or dropped) and its domain's totals reduced by what went."""
    gone = {"passages": report.passages_before - report.passages_after, "documents": report.documents_before - report.documents_after,
            "tokens": shard.tokens - (record.tokens if record else 0), "shards": 0 if record else 1}
    totals = catalog.domains[shard.domain].as_json()
    domain = DomainTotals.model_validate({k: v - gone.get(k, 0) for k, v in totals.items()})
    shards = [record if s.name == shard.name else s for s in catalog.shards]
    return catalog.but(shards=[s for s in shards if s is not None], domains=catalog.domains | {shard.domain: domain})


#: What a finished build folder keeps after a takedown: its records and drop tables (ids, reasons and digests; never text).
BUILD_KEEPS = ("build.json", DONE_MARKER)


def purge_build_text(layout: DatastoreLayout) -> list[Path]:
    """Remove every file of a finished build's folder that may hold document text; the files removed.

    Kept: ``build.json``, the stage and unit records (``_SUCCESS.json``: counts and settings), the drop tables under
    ``build/dropped/`` (the build's ``dropped`` schema: ids, reasons, no text) and logs. The rest (documents and
    passages parts, downloaded inputs, dedup and near-dedup work files, and whatever a later stage writes there) goes,
    so a takedown leaves no copy of the text in the datastore folder. The build stays finished (its records say every
    stage is done); ``build --force`` builds it again from the sources.
    """
    build = layout.build
    if not (layout.root / CATALOG).is_file() or not build.is_dir():
        return []
    removed = []
    for path in sorted(p for p in build.rglob("*") if p.is_file()):
        rel = path.relative_to(build)
        if path.name in BUILD_KEEPS or (rel.parts[0] in ("dropped", "logs") and path.suffix in (".parquet", ".log")):
            continue
        path.unlink()
        removed.append(path)
    for folder in sorted((p for p in build.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    return removed


def count_documents(passages: PassageFile) -> int:
    """Documents whose first passage is in a passages file (a document's first passage starts at character 0)."""
    return int((np.asarray(passages.column("char_start")) == 0).sum())
