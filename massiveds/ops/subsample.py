"""Physical subsampling of a datastore: keep the passages of documents in a nested hash sample.

A document is kept iff ``h(seed, doc_id) < fraction`` (``massiveds.store.sampling``), so subsamples are
nested and agree with query-time subsampling. Nothing is re-embedded or retrained: kept passages,
their fp16 vectors, their index entries (IVF-PQ codes, or Flat vectors) and their BM25 scores (scored
with the parent's statistics, so BM25 ranks as a query-time fraction does) are copied into new
shards, with passage ids renumbered to stay contiguous per shard. Shards a merged datastore references
in place are read where they are; the subsample's shards are its own.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa

from massiveds.clean.dedup_index import carry, index_record
from massiveds.core.catalog import (
    Catalog,
    CatalogRef,
    DomainTotals,
    FileRecord,
    ShardRecord,
    SubsampleRecord,
    TrainedIndexRecord,
    open_catalog,
    write_catalog,
)
from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import DatastoreLayout, ShardFiles, sha256_file, write_array, write_json
from massiveds.core.passages import PassageFile, write_passages
from massiveds.core.writer_lock import creating
from massiveds.encode.index import list_balance, read_index, write_index
from massiveds.encode.sparse import LiveStats, subset_shard
from massiveds.ops.verify import require_catalog_files
from massiveds.store.sampling import check_fraction, keep_mask
from massiveds.store.shard import Shard, deleted_mask


def _ivf_entries(ivf: faiss.IndexIVF, list_no: int) -> tuple[np.ndarray, np.ndarray]:
    invlists: Any = ivf.invlists  # FAISS's SWIG types are opaque to mypy
    n = invlists.list_size(list_no)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros((0, int(invlists.code_size)), np.uint8)
    ids = faiss.rev_swig_ptr(invlists.get_ids(list_no), n).copy()
    codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), n * invlists.code_size).copy()
    return ids, codes.reshape(n, invlists.code_size)


def subset_index(index: faiss.Index, empty: faiss.Index, new_id: Callable[[np.ndarray], np.ndarray]) -> faiss.Index:
    """Copy into ``empty`` (same trained index) the entries of ``index`` whose ``new_id`` is >= 0, renumbered.

    IVF indexes copy their codes list by list (no decoding, no re-encoding); ``IDMap2,Flat``
    indexes copy their raw vectors.
    """
    if isinstance(faiss.downcast_index(index), faiss.IndexIDMap2):
        src: Any = faiss.downcast_index(index)
        ids = faiss.vector_to_array(src.id_map)
        flat: Any = faiss.downcast_index(src.index)
        vectors = faiss.vector_to_array(flat.codes).view(np.float32).reshape(len(ids), flat.d)
        mapped = new_id(ids)
        keep = mapped >= 0
        empty.add_with_ids(np.ascontiguousarray(vectors[keep]), np.ascontiguousarray(mapped[keep]))
        return empty
    src_ivf: Any = faiss.extract_index_ivf(index)
    dst_ivf: Any = faiss.extract_index_ivf(empty)
    added = 0
    for list_no in range(src_ivf.nlist):
        ids, codes = _ivf_entries(src_ivf, list_no)
        mapped = new_id(ids)
        keep = mapped >= 0
        k = int(keep.sum())
        if k:
            kept_ids = np.ascontiguousarray(mapped[keep], dtype=np.int64)
            kept_codes = np.ascontiguousarray(codes[keep])
            dst_ivf.invlists.add_entries(list_no, k, faiss.swig_ptr(kept_ids), faiss.swig_ptr(kept_codes))
            added += k
    dst_ivf.ntotal = added
    empty.ntotal = added
    return empty


def _kept_batches(passages: PassageFile, mask: np.ndarray, first_id: int | None) -> Iterator[pa.Table]:
    """The rows of ``mask``, batch by batch, renumbered from ``first_id`` (None: ids kept)."""
    next_id = first_id
    b = passages.batch_rows
    for i in range(-(-len(mask) // b)):
        batch = pa.Table.from_batches([passages.read_batch(i)])
        keep = mask[i * b : i * b + batch.num_rows]
        kept = batch.filter(pa.array(keep))
        if kept.num_rows and next_id is not None:
            ids = pa.array(np.arange(next_id, next_id + kept.num_rows, dtype=np.int64))
            next_id += kept.num_rows
            kept = kept.set_column(kept.schema.get_field_index("passage_id"), "passage_id", ids)
        if kept.num_rows:
            yield kept


def folder_files(folder: Path) -> dict[str, FileRecord]:
    """Size and sha256 of each file of a shard folder (what its catalog record and ``shard.json`` list)."""
    return {p.name: FileRecord.of(p) for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith(".") and p.name != ShardFiles.INFO}


def rewrite_shard(src_dir: Path, dst_dir: Path, shard: ShardRecord, mask: np.ndarray, first_id: int | None, trained: Path,
                  name: str | None = None, bm25: bool = False, live: LiveStats | None = None) -> ShardRecord:
    """Copy the rows of a shard selected by ``mask`` into ``dst_dir`` with ids from ``first_id`` on; returns its record.

    Deleted passages (``massiveds delete``) are left out. Passages, fp16 vectors, index entries and BM25 scores are
    copied (never re-embedded, re-encoded or re-scored); ``trained`` is the empty trained index the shard was built
    from; ``bm25``: the BM25 index too (its scores kept, or rescaled to ``live``: a ``live_idf`` parent's statistics).
    Used by subsample (a mask), merge (all rows; a merge scores BM25 again itself) and compact (``first_id`` None:
    ids kept, ``ids.npy`` maps rows to ids where they leave gaps). The new shard is self-contained: a merged-in-place
    record's ``folder`` and ``id_offset`` are dropped.
    """
    assert first_id is not None or shard.id_offset == 0, "ids are kept only in a shard that stores its own ids"
    passages = PassageFile(src_dir / ShardFiles.PASSAGES)
    mask = mask & ~deleted_mask(src_dir, len(mask))  # deleted passages never leave their datastore
    kept = int(mask.sum())
    source = Shard(shard, src_dir)
    old_ids = source.ids_of(np.arange(shard.count))
    new_ids = np.full(len(mask), -1, dtype=np.int64)
    new_ids[mask] = old_ids[mask] if first_id is None else np.arange(first_id, first_id + kept)
    id_start = shard.id_start if first_id is None else first_id
    span: dict[str, int] = {}
    if first_id is None and kept != shard.id_end - shard.id_start:
        write_array(dst_dir / ShardFiles.ROW_IDS, new_ids[mask])
        span = {"id_span": shard.id_end - shard.id_start}
    write_passages(dst_dir / ShardFiles.PASSAGES, _kept_batches(passages, mask, first_id))
    if (src_dir / ShardFiles.VECTORS).is_file():
        vectors = np.load(src_dir / ShardFiles.VECTORS, mmap_mode="r", allow_pickle=False)
        write_array(dst_dir / ShardFiles.VECTORS, np.ascontiguousarray(vectors[mask]))
    index = subset_index(read_index(src_dir / ShardFiles.INDEX, mmap=False), read_index(trained, mmap=False),
                         lambda ids: new_ids[source.rows_of(ids + shard.id_offset)])
    write_index(index, dst_dir / ShardFiles.INDEX)
    if bm25:
        subset_shard(src_dir, dst_dir, mask, live)
    files = folder_files(dst_dir)
    tokens = int(np.asarray(passages.column("n_tokens"), dtype=np.int64)[mask].sum())
    documents = int((mask & (np.asarray(passages.column("char_start")) == 0)).sum())  # a document's first passage starts at 0
    record = shard.but(
        drop=["files", "count", "id_start", "tokens", "list_balance", "folder", "id_offset", "deleted", "id_span"],
        name=name or shard.name, id_start=id_start, count=kept, tokens=tokens, documents=documents, list_balance=list_balance(index),
        files=files, **span,
    )
    write_json(dst_dir / ShardFiles.INFO, record.as_json())
    return record


def _subsample_shard(src: Path, dst: DatastoreLayout, shard: ShardRecord, fraction: float, seed: int,
                     first_id: int, bm25: bool, live: LiveStats | None) -> ShardRecord | None:
    src_dir = src / shard.folder_rel()
    mask = keep_mask(PassageFile(src_dir / ShardFiles.PASSAGES).column("doc_id"), fraction, seed) & ~deleted_mask(src_dir, shard.count)
    if not mask.any():
        return None
    return rewrite_shard(src_dir, dst.shard(shard.name), shard, mask, first_id, src / shard.trained_rel(), bm25=bm25, live=live)


def _domains(shards: list[ShardRecord]) -> dict[str, DomainTotals]:
    """Documents, passages, tokens and shards per domain of ``shards`` (records written by ``rewrite_shard``)."""
    domains: dict[str, DomainTotals] = {}
    for s in shards:
        mine = DomainTotals(documents=s.documents or 0, passages=s.count, tokens=s.tokens, shards=1)
        domains[s.domain] = domains[s.domain] + mine if s.domain in domains else mine
    return domains


def subsample(source: Path, out: Path, fraction: float, seed: int, on_shard: Callable[[str], None] | None = None) -> Catalog:
    """Write the subsample of datastore ``source`` at ``fraction`` with ``seed`` to ``out``; returns its catalog."""
    check_fraction(fraction)
    src, dst = DatastoreLayout(source), DatastoreLayout(out)
    catalog = open_catalog(src.root)
    require_catalog_files(src.root, catalog, "subsample")
    trained = catalog.trained_index.file if catalog.trained_index else src.trained_index.name  # a retrained one lives in trained/
    with creating(dst.root, "subsample"):
        dst.shards.mkdir(parents=True, exist_ok=True)
        for rel in {trained} | {s.trained for s in catalog.shards} | {t.file for t in catalog.trained_indexes}:
            (dst.root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src.root / rel, dst.root / rel)
        for rel in [d.table for d in catalog.deletions] + [a.table for a in catalog.appends]:  # the parent's history, with its files
            (dst.root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src.root / rel, dst.root / rel)
        sparse, live = catalog.sparse, None
        if sparse is not None and sparse.live_idf:  # the scores the parent searches with, stored: the copy ranks as the parent does
            live = LiveStats.of([src.root / s.folder_rel() for s in catalog.shards])
            sparse = sparse.but(drop=["live_idf"], passages=live.passages)
        shards: list[ShardRecord] = []
        next_id = 0
        for shard in catalog.shards_by_id:
            record = _subsample_shard(src.root, dst, shard, fraction, seed, next_id, catalog.sparse is not None, live)
            if record is not None:
                shards.append(record)
                next_id += record.count
            if on_shard:
                on_shard(shard.name)
        if not shards:
            shutil.rmtree(dst.root)
            raise MassiveDSError(f"fraction {fraction} with seed {seed} keeps no document of {source}; use a larger fraction")
        changes: dict[str, Any] = {}
        parent = CatalogRef(name=catalog.name, catalog_sha256=sha256_file(src.catalog))
        if catalog.dedup is not None:  # the documents the subsample keeps, deleted ones too: the same draw as their passages'
            kept = carry(src.root, catalog.dedup, dst.root, lambda rows: pa.array(keep_mask(rows.column("doc_id").to_pylist(), fraction,
                                                                                            seed)))
            changes["dedup"] = index_record(dst.root, kept, catalog.dedup.params)
        new = catalog.but(
            drop=["merged"],  # the parent's merged index is not copied: searches fan out
            shards=shards, domains=_domains(shards), trained_index=TrainedIndexRecord.of(dst.root, trained), sparse=sparse,
            subsample=SubsampleRecord(fraction=fraction, seed=seed, parent=parent, previous=catalog.subsample), **changes)
        write_catalog(dst.root, new)
        return new
