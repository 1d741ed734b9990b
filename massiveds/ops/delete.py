"""Delete documents from a built datastore: every passage of them, in every shard, without a rebuild; audited.

**Selection.** Documents by id (a file, one id per line), a whole source, or decontamination against an
eval file by the build's rules (``massiveds.clean.decontaminate``: an item's word 13-grams ≥ 0.8 contained
in the document, or a common run of ≥ 32 words), each document reassembled from its passages' character
spans. Every passage of a selected document goes.

**Tombstones.** A shard with deleted passages holds ``deleted.npy``, its deleted rows (sorted int64), which
every reader (search, eval, subsample, merge, serve) excludes; ``massiveds compact`` then removes them
from the files. A deletion writes its table first, ``deletions/<n>.parquet`` (the deleted documents' ids,
sources and text digests, never their text, by which ``massiveds append`` keeps them out:
``massiveds.clean.deleted``), then the tombstones shard by shard (each atomically), then the catalog: the
shards' ``deleted`` counts and file records, and a ``deletions`` record (when, by whom, why, what was
selected, counts) naming the table. Readers take the tombstones they find, so a kill in between leaves more
deleted, never less; the next delete (the same command run again, or any other) finds the table the catalog
does not name yet and finishes that deletion first. It all runs under the datastore's writer lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from massiveds.clean.decontaminate import EvalIndex, build_index, read_eval_items, scan_texts
from massiveds.clean.deleted import DELETIONS, DeletedDocuments
from massiveds.clean.exact_dedup import text_hashes
from massiveds.core.audit import utc_now, who
from massiveds.core.catalog import CHECKSUMS, Catalog, DeletionRecord, FileRecord, ShardRecord, open_catalog, write_catalog
from massiveds.core.errors import DatastoreError, MassiveDSError
from massiveds.core.layout import ShardFiles, atomic_path, write_array
from massiveds.core.manifest import Decontaminate
from massiveds.core.passages import PassageFile
from massiveds.core.writer_lock import locks_datastore
from massiveds.store.documents import documents
from massiveds.store.shard import deleted_mask

#: The ways to select documents, as the command line names them.
SELECTIONS = ("doc-ids", "source", "match-eval")
#: Documents reassembled and scanned together when matching an eval file.
SCAN_BATCH = 512


@dataclass(frozen=True)
class Selection:
    """What to delete: ``how`` (one of ``SELECTIONS``) and its argument (a file, or a source name)."""

    how: str
    value: str
    #: match-eval: the fields of an eval item whose text is matched
    fields: tuple[str, ...] = ("question", "answer")

    def describe(self) -> str:
        return f"{self.how} {self.value}"


@dataclass
class Deleted:
    """What one deletion did: per shard, the rows newly deleted; the documents (id, source) they belong to."""

    rows: dict[str, np.ndarray]
    documents: list[tuple[str, str]]
    already: int
    #: An interrupted deletion this one finished first.
    finished: DeletionRecord | None = None

    @property
    def passages(self) -> int:
        return sum(len(r) for r in self.rows.values())


@locks_datastore("delete")
def delete_documents(root: Path, selection: Selection, reason: str) -> tuple[DeletionRecord | None, Deleted]:
    """Delete the documents ``selection`` names from the datastore at ``root``; the catalog's new record (None: nothing new).

    A deletion killed before its catalog was written is finished first (``Deleted.finished``), by whichever delete comes next.
    """
    catalog = open_catalog(root)
    for shard in catalog.shards:
        if shard.elsewhere:
            raise MassiveDSError(f"shard {shard.name} of {root} lives in another datastore ({shard.folder}, merged in place): delete "
                                 "there (this datastore sees it), or merge with --copy")
    catalog, finished = finish_interrupted_deletion(root, catalog)
    wanted = _wanted_documents(root, catalog, selection)
    found = find_rows(root, catalog, wanted)
    found.finished = finished
    if not found.documents:
        return None, found
    table = _table_name(catalog)
    _write_table(root / table, found.documents, _text_digests(root, catalog, found), reason, selection.describe())
    return _commit(root, catalog, table, found.rows), found


def _table_name(catalog: Catalog) -> str:
    return f"deletions/{len(catalog.deletions) + 1:05d}.parquet"


def _commit(root: Path, catalog: Catalog, table: str, rows: dict[str, np.ndarray]) -> DeletionRecord:
    """Tombstone ``rows`` (per shard) and record the deletion whose table is written: the catalog, switched last."""
    shards = {s.name: s for s in catalog.shards}
    changed = {}
    for name, new in rows.items():
        folder = root / shards[name].folder_rel()
        union = np.union1d(np.flatnonzero(deleted_mask(folder, shards[name].count)), new).astype(np.int64)
        tombstones = folder / ShardFiles.DELETED
        write_array(tombstones, union)
        changed[name] = shards[name].but(deleted=len(union), files=shards[name].files | {ShardFiles.DELETED: FileRecord.of(tombstones)})
    written = pq.read_table(root / table, columns=["doc_id", "reason", "detail"])
    record = DeletionRecord(at=utc_now(), by=who(), reason=written["reason"][0].as_py(), selection=written["detail"][0].as_py(),
                            documents=written.num_rows, passages=sum(len(r) for r in rows.values()), shards=sorted(changed), table=table,
                            file=FileRecord.of(root / table))
    write_catalog(root, catalog.but(shards=[changed.get(s.name, s) for s in catalog.shards], deletions=[*catalog.deletions, record]))
    (root / CHECKSUMS).unlink(missing_ok=True)  # it lists the files as published; this copy no longer is that
    return record


def finish_interrupted_deletion(root: Path, catalog: Catalog) -> tuple[Catalog, DeletionRecord | None]:
    """Finish a deletion killed after it wrote its table (the first thing it writes) and before its catalog: the catalog after.

    Its documents were all live before it (a deletion lists only documents it newly deletes), so every row of them is its to
    tombstone, whether the killed run got to it or not. Any writer that reads tombstones calls it first (delete, compact).
    """
    table = _table_name(catalog)
    if not (root / table).is_file():
        return catalog, None
    ids = set(pq.read_table(root / table, columns=["doc_id"])["doc_id"].to_pylist())
    rows = {}
    for shard in catalog.shards:
        hit = np.flatnonzero(np.isin(_column(root, shard, "doc_id"), list(ids)))
        if len(hit):
            rows[shard.name] = hit
    record = _commit(root, catalog, table, rows)
    return open_catalog(root), record


def _wanted_documents(root: Path, catalog: Catalog, selection: Selection) -> set[str] | str:
    """The document ids to delete, or (``source``) the source name whose documents all go."""
    if selection.how not in SELECTIONS:
        raise MassiveDSError(f"unknown selection {selection.how!r}; use one of {', '.join(SELECTIONS)}")
    if selection.how == "source":
        sources = {v for s in catalog.shards for v in np.unique(_column(root, s, "source")).tolist()}
        if selection.value not in sources:
            raise MassiveDSError(f"{root} has no source {selection.value!r}; its sources are {', '.join(sorted(sources))}")
        return selection.value
    path = Path(selection.value)
    if not path.is_file():
        wanted = "document ids, one per line" if selection.how == "doc-ids" else "eval items"
        raise MassiveDSError(f"{path}: no such file; give the {wanted}")
    if selection.how == "doc-ids":
        ids = {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
        if not ids:
            raise MassiveDSError(f"{path}: no document id in it (one per line)")
        return ids
    return _matching_documents(root, catalog, path, selection.fields)


def find_rows(root: Path, catalog: Catalog, wanted: set[str] | str) -> Deleted:
    """Per shard, the rows of the wanted documents (by id set, or every row of a source) not deleted before."""
    rows: dict[str, np.ndarray] = {}
    documents: dict[str, str] = {}
    already = 0
    for shard in catalog.shards:
        doc_ids = _column(root, shard, "doc_id")
        sources = _column(root, shard, "source")
        hit = sources == wanted if isinstance(wanted, str) else np.isin(doc_ids, list(wanted))
        gone = deleted_mask(root / shard.folder_rel(), shard.count)
        already += int((hit & gone).sum())
        new = np.flatnonzero(hit & ~gone)
        if len(new):
            rows[shard.name] = new
            documents.update(zip(doc_ids[new].tolist(), sources[new].tolist(), strict=True))
    if isinstance(wanted, set) and not documents and not already and not wanted & {d for _, d in deleted_documents(root, catalog).by_id}:
        raise MassiveDSError(f"none of the {len(wanted)} document ids given is a document of {root}; check the file (one doc_id per line)")
    return Deleted(rows, sorted(documents.items()), already)


def _column(root: Path, shard: ShardRecord, name: str) -> np.ndarray:
    return np.asarray(PassageFile(root / shard.folder_rel() / ShardFiles.PASSAGES).column(name), dtype=object)


def _matching_documents(root: Path, catalog: Catalog, path: Path, fields: tuple[str, ...]) -> set[str]:
    """The documents that contain an item of the eval file at ``path``, by the build's decontamination rules."""
    rules = Decontaminate()
    spec = {"paths": [str(path)], "format": "parquet" if path.suffix == ".parquet" else "jsonl", "fields": list(fields), "id_field": None}
    items = [("eval", i, t) for i, t in read_eval_items(spec) if t.strip()]
    if not items:
        raise MassiveDSError(f"{path}: no item has text in fields {', '.join(fields)}; name the right --fields")
    index = EvalIndex(*build_index(items, rules.ngram), rules.ngram)
    matched: set[str] = set()
    batch: list[tuple[str, str]] = []
    for doc in documents(root, catalog.shards_by_id):
        batch.append((doc.doc_id, doc.text))
        if len(batch) == SCAN_BATCH:
            matched |= _scan(batch, index, rules)
            batch = []
    return matched | _scan(batch, index, rules)


def _scan(docs: list[tuple[str, str]], index: EvalIndex, rules: Decontaminate) -> set[str]:
    matches = scan_texts([text for _, text in docs], index, rules.threshold, rules.min_run)
    return {doc for (doc, _), found in zip(docs, matches, strict=True) if found}


def _text_digests(root: Path, catalog: Catalog, found: Deleted) -> dict[str, bytes]:
    """Each found document's text digest (as exact dedup hashes it), reassembled from the shards that hold its passages."""
    shards = catalog.shards_by_id
    position = {s.name: k for k, s in enumerate(shards)}
    wanted = {doc_id for doc_id, _ in found.documents}
    spans: list[list[int]] = []  # [first, last) shard positions, overlapping ones joined so that no shard is read twice
    for k in sorted(position[name] for name in found.rows):
        first = k - 1 if k > 0 and found.rows[shards[k].name][0] == 0 else k  # its first row may continue a document
        if spans and first <= spans[-1][1]:
            spans[-1][1] = k + 1
        else:
            spans.append([first, k + 1])
    texts: dict[str, str] = {}
    for first, last in spans:
        texts |= {doc.doc_id: doc.text for doc in documents(root, shards, first, last) if doc.doc_id in wanted}
    ids = sorted(texts)
    return dict(zip(ids, text_hashes([texts[i] for i in ids]).to_pylist(), strict=True))


def _write_table(path: Path, documents: list[tuple[str, str]], digests: dict[str, bytes], reason: str, selection: str) -> None:
    """The deleted documents as drop records (the build's ``dropped`` schema) with their text digests: no text."""
    n = len(documents)
    table = pa.table({"doc_id": [d for d, _ in documents], "source": [s for _, s in documents], "stage": ["delete"] * n,
                      "reason": [reason] * n, "duplicate_of": pa.nulls(n, pa.string()), "detail": [selection] * n,
                      "text_hash": [digests.get(d) for d, _ in documents]}, schema=DELETIONS)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def deleted_documents(root: Path, catalog: Catalog) -> DeletedDocuments:
    """Every document the deletions of the datastore at ``root`` removed (ids, sources, text digests): what an append keeps out."""
    deleted = DeletedDocuments()
    for n, record in enumerate(catalog.deletions, 1):
        path = root / record.table
        if not path.is_file():
            raise DatastoreError(f"{path}: the table of deletion {n} is missing; restore it from a published copy "
                                 "(`massiveds verify` lists what else is)")
        deleted.add(pq.read_table(path), f"deletion {n}: {record.reason}")
    return deleted


def require_recorded_deletions(root: Path, catalog: Catalog) -> None:
    """Refuse a catalog whose recorded deletions disagree with the tombstones on disk (a crash between them: run delete again)."""
    for shard in catalog.shards:
        on_disk = int(deleted_mask(root / shard.folder_rel(), shard.count).sum())
        if on_disk != shard.deleted:
            raise DatastoreError(f"shard {shard.name}: {on_disk} passages deleted on disk, the catalog records {shard.deleted}; "
                                 "a delete was interrupted: run it again")
