"""Compact a datastore: rewrite the shards whose deleted share exceeds a threshold without their deleted passages.

Passages, fp16 vectors, index entries (IVF codes or Flat vectors, copied) and BM25 rows (scores kept) of
the deleted passages are physically removed; every other passage keeps its id, so search results are those
of before the deletion, minus the deleted (the shard's ``ids.npy`` maps its rows to their ids where the
deletion left gaps, and its record's ``id_span`` keeps the ids it covered). The deleted text is nowhere
in the datastore afterwards, except in shards under the threshold (``--threshold 0``, the default, leaves
none).

Each shard is written into ``shards/.<name>.compact``, swapped with its folder (the old one goes to
``shards/.<name>.old``), and the catalog is rewritten after each shard; a crash between the two renames
leaves the old folder aside, which the next ``compact`` puts back before anything else.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from massiveds.core.catalog import CHECKSUMS, Catalog, DomainTotals, ShardRecord, open_catalog, write_catalog
from massiveds.core.errors import MassiveDSError
from massiveds.core.passages import PassageFile
from massiveds.ops.delete import require_recorded_deletions
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


def compact(root: Path, threshold: float = 0.0, on_shard: Callable[[Compacted, int], None] | None = None) -> list[Compacted]:
    """Rewrite every shard of ``root`` with more than ``threshold`` of its passages deleted (``on_shard``: each done, of how many)."""
    if not 0 <= threshold < 1:
        raise MassiveDSError(f"--threshold is the deleted share above which a shard is rewritten, in [0, 1); got {threshold}")
    _restore_interrupted(root)
    catalog = open_catalog(root)
    require_recorded_deletions(root, catalog)
    due = [s for s in catalog.shards if s.deleted and s.deleted / s.count > threshold]
    for shard in due:
        if shard.folder is not None:
            raise MassiveDSError(f"shard {shard.name} lives in another datastore ({shard.folder}, merged in place): compact that one")
    require_catalog_files(root, catalog, "compact")
    done = []
    for shard in due:
        record, report = _compact_shard(root, shard, catalog.sparse is not None)
        catalog = _with_shard(catalog, shard, record, report)
        write_catalog(root, catalog)
        shutil.rmtree(root / "shards" / f".{shard.name}.old")
        (root / CHECKSUMS).unlink(missing_ok=True)  # it lists the files as published; this copy no longer is that
        done.append(report)
        if on_shard is not None:
            on_shard(report, len(due))
    return done


def _compact_shard(root: Path, shard: ShardRecord, bm25: bool) -> tuple[ShardRecord | None, Compacted]:
    """Write the shard without its deleted passages and swap it in; its new record (None: nothing was left)."""
    folder = root / shard.folder_rel()
    staged, old = folder.parent / f".{shard.name}.compact", folder.parent / f".{shard.name}.old"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir()
    keep = np.ones(shard.count, dtype=bool)  # rewrite_shard leaves the deleted rows out
    record = rewrite_shard(folder, staged, shard, keep, None, root / shard.trained_rel(), bm25=bm25)
    documents = count_documents(PassageFile(folder / "passages.arrow"))
    before, after = sum(f.bytes for f in shard.files.values()), sum(f.bytes for f in record.files.values()) if record.count else 0
    report = Compacted(shard.name, shard.count, record.count, documents, record.documents or 0, before, after)
    folder.rename(old)
    if record.count:
        staged.rename(folder)
        return record, report
    shutil.rmtree(staged)
    return None, report


def _with_shard(catalog: Catalog, shard: ShardRecord, record: ShardRecord | None, report: Compacted) -> Catalog:
    """The catalog with ``shard`` replaced by its compacted ``record`` (or dropped) and its domain's totals reduced by what went."""
    gone = {"passages": report.passages_before - report.passages_after, "documents": report.documents_before - report.documents_after,
            "tokens": shard.tokens - (record.tokens if record else 0), "shards": 0 if record else 1}
    totals = catalog.domains[shard.domain].as_json()
    domain = DomainTotals.model_validate({k: v - gone.get(k, 0) for k, v in totals.items()})
    shards = [record if s.name == shard.name else s for s in catalog.shards]
    return catalog.but(shards=[s for s in shards if s is not None], domains=catalog.domains | {shard.domain: domain})


def _restore_interrupted(root: Path) -> None:
    """Put back a shard folder a crashed compaction left aside (``.<name>.old`` without ``<name>``)."""
    shards = root / "shards"
    for old in sorted(shards.glob(".*.old")) if shards.is_dir() else []:
        name = old.name[1 : -len(".old")]
        if not (shards / name).exists():
            old.rename(shards / name)
        else:
            shutil.rmtree(old)
    for staged in sorted(shards.glob(".*.compact")) if shards.is_dir() else []:
        shutil.rmtree(staged)


def count_documents(passages: PassageFile) -> int:
    """Documents whose first passage is in a passages file (a document's first passage starts at character 0)."""
    return int((np.asarray(passages.column("char_start")) == 0).sum())
