"""The read side of a merged index (``massiveds merge-index``): open it memory-mapped, and tell whether it is current.

The merged index is ``merged/index.faiss`` (quantizer, codebooks, list table) plus
``merged/index.ivfdata`` (FAISS ``OnDiskInvertedLists``), written by ``massiveds.ops.merge_index``.
"""

from __future__ import annotations

import os
from pathlib import Path

import faiss

from massiveds.core.catalog import Catalog, MergedIndexRecord
from massiveds.core.errors import DatastoreError
from massiveds.core.native_output import native_output_to

MERGED_DIR = "merged"
MERGED_INDEX = "index.faiss"
MERGED_DATA = "index.ivfdata"


def read_merged(path: Path) -> faiss.Index:
    """Open a merged index; its ``.ivfdata`` is found beside it and memory-mapped read-only."""
    if not path.is_file() or not path.with_name(MERGED_DATA).is_file():
        raise DatastoreError(f"merged index incomplete: {path} or its {MERGED_DATA} is missing; run 'massiveds merge-index' again")
    with native_output_to(os.devnull, "stdout"):  # FAISS prints the .ivfdata path it settled on to stdout (a --json pipe)
        return faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY)


def merged_matches(record: MergedIndexRecord, catalog: Catalog) -> bool:
    """Whether a merged-index record was made from exactly the catalog's shards (a stale merge is ignored)."""
    return record.shards == [s.name for s in catalog.shards_by_id]
