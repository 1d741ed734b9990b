"""reference: an append's datastore documents, as documents parts that exact and near dedup compare the new ones against.

    reference   per shard   the live documents whose first passage the shard holds, reassembled from their
                            passages (``massiveds.store.documents``): build/documents/s0000-f<shard>.parquet

They are source 0 of the append (the new manifests' sources are numbered from 1), so they hold the smallest
``_ord``s: in every exact or near duplicate group the datastore's copy survives, and the dedup stages never
remove one of them (``BuildContext.protected_below``). Chunk and decontamination read only the new parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from massiveds.core.catalog import ShardRecord
from massiveds.core.schema import DOCUMENTS, ordinal
from massiveds.ingest.sources.files import InputFile
from massiveds.store.documents import documents
from pipelines.parts import PartWriter, documents_path
from pipelines.stage import BuildContext, InputItem, ReferenceRecord, StageRecord, Step, UnitResult, UnitStage

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


def reference_items(shards: Sequence[ShardRecord]) -> list[InputItem]:
    """One work item per shard of the datastore, as if each were an input file of source 0."""
    return [InputItem.of(InputFile(source_idx=0, file_idx=k, path=s.folder_rel(), rel=s.folder_rel(), source="(datastore)",
                                   format="arrow", text_field="text", id_field="doc_id", title_field="title", url_field="url"), manifest=-1)
            for k, s in enumerate(shards)]


class Reference(UnitStage[InputItem, ReferenceResult]):
    name = "reference"
    record = ReferenceRecord
    needs = ()

    def applies(self, ctx: BuildContext) -> bool:
        return ctx.existing is not None and bool(ctx.manifests.exact_dedup or ctx.manifests.near_dedup[0])

    def plan(self, ctx: BuildContext) -> list[InputItem]:
        assert ctx.existing is not None
        return reference_items(ctx.existing.shards)

    def step(self, ctx: BuildContext) -> Step[InputItem, ReferenceResult]:
        assert ctx.existing is not None
        return Step("reference", WriteReference(ctx.existing.root, tuple(ctx.existing.shards), ctx.build), ReferenceResult,
                    rates=("documents",))

    def summarize(self, ctx: BuildContext, items: Sequence[InputItem], results: Sequence[ReferenceResult]) -> StageRecord:
        docs = sum(r.documents for r in results)
        return ReferenceRecord(items=list(items), documents=docs, summary=f"{docs:,} documents of the datastore to deduplicate against")
