"""Merge the shards' IVF inverted lists into one on-disk index, streamed one shard at a time.

Every shard must be a copy of the same trained index, so that their inverted lists can be
concatenated list by list: a merge of separately trained builds is refused (search fans out over
its shards instead). The ids of a shard merged in place are shifted by its ``id_offset`` as they
are copied, so the merged index returns the datastore's ids. The merged index is
``merged/index.faiss`` (quantizer, codebooks, list table) plus ``merged/index.ivfdata`` (FAISS
``OnDiskInvertedLists``: for each list its codes, then its ids), memory-mapped at search time. The
merge first reads every shard's list sizes, lays out the data file with exact list capacities,
then copies one shard's lists at a time into place with ``pwrite``: peak memory is one shard's
lists, whatever the number of shards.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from massiveds.core.catalog import FileRecord, MergedIndexRecord, ShardRecord, open_catalog, read_catalog, write_catalog
from massiveds.core.errors import DatastoreError
from massiveds.core.layout import DatastoreLayout, ShardFiles, atomic_path, sha256_file
from massiveds.core.writer_lock import locks_datastore
from massiveds.encode.index import ivf_list_sizes, read_index, write_index
from massiveds.ops.shard_folders import remove_unnamed
from massiveds.ops.verify import require_catalog_files
from massiveds.store.merged import MERGED_DATA, MERGED_DIR, MERGED_INDEX


def _ivf(index: faiss.Index, where: Path) -> faiss.IndexIVF:
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        raise DatastoreError(f"{where}: not an IVF index; merge-index merges IVF inverted lists (flat shards are searched by fan-out)") from None  # noqa: E501


def _copy_lists(
    fd: int, invlists: Any, shard_sizes: np.ndarray, offsets: list[int], capacity: list[int], filled: list[int], code_size: int,
    id_offset: int,
) -> None:
    """Write one shard's lists after what earlier shards wrote: list j's codes at offset, its ids + ``id_offset`` after the codes."""
    for j in np.nonzero(shard_sizes)[0].tolist():
        n = int(shard_sizes[j])
        codes_ptr, ids_ptr = invlists.get_codes(j), invlists.get_ids(j)
        codes, ids = faiss.rev_swig_ptr(codes_ptr, n * code_size), faiss.rev_swig_ptr(ids_ptr, n)
        os.pwrite(fd, codes.tobytes(), offsets[j] + filled[j] * code_size)
        os.pwrite(fd, (ids + id_offset).tobytes() if id_offset else ids.tobytes(), offsets[j] + capacity[j] * code_size + filled[j] * 8)
        invlists.release_codes(j, codes_ptr)
        invlists.release_ids(j, ids_ptr)
        filled[j] += n


def _common_trained(layout: DatastoreLayout, shards: list[ShardRecord]) -> Path:
    """The trained index every shard was built from; refuses shards of separately trained builds (their lists differ)."""
    paths = sorted({layout.root / s.trained_rel() for s in shards})
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatastoreError(f"{missing[0]}: trained index missing; run massiveds verify {layout.root}")
    digests = {sha256_file(p) for p in paths}
    if len(digests) > 1:
        raise DatastoreError(
            f"{layout.root}: its shards come from {len(digests)} separately trained builds (merged datastores); their IVF lists "
            "cannot be merged into one index, so search fans out over the shards"
        )
    return paths[0]


@locks_datastore("merge-index")
def merge_index(root: Path) -> MergedIndexRecord:
    """Merge the IVF shard indexes of the datastore at ``root`` into ``merged/``; record it in the catalog and return the record."""
    layout = DatastoreLayout(root)
    catalog = open_catalog(layout.root)
    remove_unnamed(layout.root, catalog)
    if catalog.index.type == "flat":
        raise DatastoreError(f"{root}: flat index; merge-index merges IVF inverted lists (flat shards are searched by fan-out)")
    require_catalog_files(layout.root, catalog, "merge-index")
    clock = time.perf_counter()
    shards = catalog.shards_by_id
    paths = [layout.root / s.folder_rel() / ShardFiles.INDEX for s in shards]
    trained_path = _common_trained(layout, shards)
    trained = read_index(trained_path, mmap=False)
    ivf = _ivf(trained, trained_path)
    nlist, code_size = int(ivf.nlist), int(ivf.code_size)

    per_shard = []  # list sizes of every shard: nlist x 8 bytes each, never the codes
    for path in paths:
        index = read_index(path)
        shard_ivf = _ivf(index, path)
        if shard_ivf.nlist != nlist or shard_ivf.code_size != code_size:
            raise DatastoreError(f"{path}: nlist/code size differ from {trained_path.name}; the shard was not built from it")
        shard_sizes = ivf_list_sizes(index)
        assert shard_sizes is not None  # _ivf above checked that it is an IVF index
        per_shard.append(shard_sizes)
        del index
    sizes = np.zeros(nlist, dtype=np.int64)
    for shard_sizes in per_shard:
        sizes += shard_sizes
    entry = code_size + 8
    offsets: list[int] = np.concatenate([[0], np.cumsum(sizes * entry)[:-1]]).astype(np.int64).tolist()  # set_all_lists_sizes' layout
    capacity: list[int] = [int(v) for v in sizes]

    with atomic_path(layout.root / MERGED_DIR) as tmp:
        tmp.mkdir()
        data = tmp / MERGED_DATA
        total = int((sizes * entry).sum())
        invlists: Any = faiss.OnDiskInvertedLists(nlist, code_size, str(data))
        sizes_u64 = np.ascontiguousarray(sizes, dtype=np.uint64)  # held: swig_ptr does not keep the array alive
        invlists.set_all_lists_sizes(faiss.swig_ptr(sizes_u64))  # the list table only
        invlists.totsize = total
        table = invlists.lists  # keep the vector alive while its elements are read
        for j in (0, nlist // 2, nlist - 1):  # the layout we write into must be FAISS's
            item = table.at(j)
            if (item.offset, item.capacity) != (offsets[j], capacity[j]):
                raise RuntimeError(f"OnDiskInvertedLists layout differs from the expected one at list {j}")
        del table
        filled = [0] * nlist
        fd = os.open(data, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.ftruncate(fd, total)
            for shard, path, shard_sizes in zip(shards, paths, per_shard, strict=True):
                index = read_index(path)
                _copy_lists(fd, faiss.extract_index_ivf(index).invlists, shard_sizes, offsets, capacity, filled, code_size,
                            shard.id_offset)
                del index  # unmap this shard before the next
            os.fsync(fd)
        finally:
            os.close(fd)
        ivf.replace_invlists(invlists, True)
        invlists.this.disown()
        ivf.ntotal = trained.ntotal = int(sizes.sum())
        write_index(trained, tmp / MERGED_INDEX)
        del trained, ivf
    folder = layout.root / MERGED_DIR
    record = MergedIndexRecord(
        index=f"{MERGED_DIR}/{MERGED_INDEX}",
        ivfdata=f"{MERGED_DIR}/{MERGED_DATA}",
        ntotal=int(sizes.sum()),
        nlist=nlist,
        shards=[s.name for s in shards],
        files={p.name: FileRecord.of(p) for p in sorted(folder.iterdir()) if p.is_file()},
        seconds=round(time.perf_counter() - clock, 2),
    )
    if record.ntotal != catalog.num_passages:
        raise DatastoreError(f"merged {record.ntotal} vectors but the catalog's shards hold {catalog.num_passages}")
    write_catalog(layout.root, read_catalog(layout.root).but(merged=record))  # re-read: write only our field
    return record
