"""reference: an append's datastore documents, as documents parts that exact and near dedup compare the new ones against.

    reference   per index file   the rows of one file of the datastore's dedup index (``massiveds.clean.dedup_index``:
                                 id, source, digest, MinHash signature; no text), deleted documents
                                 included: build/documents/s0000-f<k>.parquet
                or per shard     where the datastore has no index its signatures could stand in for (built
                                 before the index existed, or signed with other MinHash parameters than the
                                 manifests ask for): the live documents whose first passage the shard holds,
                                 reassembled from their passages (``massiveds.store.documents``); the
                                 dedup_index stage then indexes them, so the next append reads the index

They are source 0 of the append (the new manifests' sources are numbered from 1), so they hold the smallest
``_ord``s: in every exact or near duplicate group the datastore's copy survives, and the dedup stages never
remove one of them (``BuildContext.protected_below``). Chunk and decontamination read only the new parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from massiveds.clean.dedup_index import DEDUP_INDEX, read_index_file, signs_like
from massiveds.core.catalog import DEDUP_DIR, ShardRecord
from massiveds.core.schema import DOCUMENTS, ordinal
from massiveds.ingest.sources.files import InputFile
from massiveds.store.documents import documents
from pipelines.existing import Existing
from pipelines.manifest_set import ManifestSet
from pipelines.parts import INDEX_PART, PartWriter, documents_path, indexed, write_table
from pipelines.stage import BuildContext, InputItem, ReferenceRecord, StageRecord, Step, UnitResult, UnitStage

#: A reference part read off the dedup index: its rows with the ``_ord`` the dedup stages order documents by.
INDEX_REFERENCE = DEDUP_INDEX.append(pa.field("_ord", pa.int64()))

#: Documents written per row group.
BATCH = 1024


class ReferenceResult(UnitResult):
    documents: int


@dataclass(frozen=True)
class WriteReference:
    """The reference step: the documents of one shard of the datastore (by its position in id order) as a documents part."""

    root: Path
    shards: tuple[ShardRecord, ...]
    build: Path

    def __call__(self, item: InputItem) -> ReferenceResult:
        k = item.file.file_idx
        out = PartWriter(documents_path(self.build, item.unit), DOCUMENTS)
        rows: list[dict[str, object]] = []
        for doc in documents(self.root, self.shards, k, k + 1):
            if doc.deleted:
                continue
            rows.append({"doc_id": doc.doc_id, "domain": self.shards[k].domain, "source": doc.source, "url": doc.url, "title": doc.title,
                         "text": doc.text, "meta": None, "_ord": ordinal(0, k, out.rows + len(rows))})
            if len(rows) == BATCH:
                out.write(pa.Table.from_pylist(rows, schema=DOCUMENTS))
                rows = []
        out.write(pa.Table.from_pylist(rows, schema=DOCUMENTS))
        out.commit()
        return ReferenceResult(unit=item.unit, documents=out.rows)


@dataclass(frozen=True)
class CopyIndex:
    """The reference step from the dedup index: one index file's rows, numbered as documents of source 0."""

    root: Path
    build: Path

    def __call__(self, item: InputItem) -> ReferenceResult:
        rows = read_index_file(self.root / item.file.path)
        ords = pa.array(ordinal(0, item.file.file_idx, 0) + np.arange(rows.num_rows, dtype=np.int64))
        rows = rows.append_column("_ord", ords).cast(INDEX_REFERENCE)
        write_table(documents_path(self.build, item.unit), rows, row_group_size=BATCH * 64)
        return ReferenceResult(unit=item.unit, documents=rows.num_rows)


def index_unusable(existing: Existing, manifests: ManifestSet) -> str | None:
    """Why the datastore's dedup index cannot stand in for its documents in this append (None: it can)."""
    record, near = existing.catalog.dedup, manifests.near_dedup[1]
    if record is None:
        return "it has no dedup index"
    if near is not None and not signs_like(record, near):
        return (f"its dedup index was signed with ngram {record.ngram}, num_perm {record.num_perm}, seed {record.seed}, not the "
                f"manifests' {near.ngram}, {near.num_perm}, {near.seed}")
    return None


def index_items(existing: Existing) -> list[InputItem]:
    """One work item per file of the datastore's dedup index, as if each were an input file of source 0."""
    assert existing.catalog.dedup is not None
    return [InputItem.of(InputFile(source_idx=0, file_idx=k, path=f"{DEDUP_DIR}/{name}", rel=f"{DEDUP_DIR}/{name}", source="(datastore)",
                                   format=INDEX_PART, text_field="text", id_field="doc_id", title_field=None, url_field=None), manifest=-1)
            for k, name in enumerate(sorted(existing.catalog.dedup.files))]


def reference_items(shards: Sequence[ShardRecord]) -> list[InputItem]:
    """One work item per shard of the datastore, as if each were an input file of source 0."""
    return [InputItem.of(InputFile(source_idx=0, file_idx=k, path=s.folder_rel(), rel=s.folder_rel(), source="(datastore)",
                                   format="arrow", text_field="text", id_field="doc_id", title_field="title", url_field="url"), manifest=-1)
            for k, s in enumerate(shards)]


class ReferenceStage(UnitStage[InputItem, ReferenceResult]):
    name = "reference"
    record = ReferenceRecord
    needs = ()

    def applies(self, ctx: BuildContext) -> bool:
        return ctx.existing is not None and bool(ctx.manifests.exact_dedup or ctx.manifests.near_dedup[0])

    def plan(self, ctx: BuildContext) -> list[InputItem]:
        assert ctx.existing is not None
        if index_unusable(ctx.existing, ctx.manifests) is None:
            return index_items(ctx.existing)
        return reference_items(ctx.existing.shards)

    def step(self, ctx: BuildContext) -> Step[InputItem, ReferenceResult]:
        existing = ctx.existing
        assert existing is not None
        if index_unusable(existing, ctx.manifests) is None:
            return Step("reference", CopyIndex(existing.root, ctx.build), ReferenceResult, rates=("documents",))
        return Step("reference", WriteReference(existing.root, tuple(existing.shards), ctx.build), ReferenceResult, rates=("documents",))

    def summarize(self, ctx: BuildContext, items: Sequence[InputItem], results: Sequence[ReferenceResult]) -> StageRecord:
        assert ctx.existing is not None
        docs = sum(r.documents for r in results)
        why = index_unusable(ctx.existing, ctx.manifests)
        read = "their dedup index" if all(indexed(i) for i in items) else f"their passages ({why}; this append indexes them)"
        return ReferenceRecord(items=list(items), documents=docs, summary=f"{docs:,} documents of the datastore to deduplicate against, "
                                                                          f"read from {read}")
