"""dedup_index: what dedup knows of each kept document, written into the datastore's dedup index (``massiveds.clean.dedup_index``).

    dedup-index   per documents part   the part's documents that every clean-up stage kept, each with the
                                       digest exact dedup computed (build/dedup/hashes/<unit>) and the
                                       signature near dedup computed (build/dedup/near/signed/<unit>):
                                       <datastore>/dedup/<prefix><unit>.parquet

A part exact dedup did not read has its digests computed here from its text; one near dedup did not
sign has no signatures (null). In an append whose reference was reassembled from the datastore's
passages (a datastore without a usable index), the reference parts are indexed too, so the datastore
has a whole index from then on; their files replace the old ones when the append commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from massiveds.clean.dedup_index import DEDUP_INDEX, HASHES, SIGNATURES, near_params, write_index_file
from massiveds.clean.exact_dedup import text_hashes
from massiveds.core.catalog import DEDUP_DIR
from massiveds.core.layout import read_json
from massiveds.core.manifest import NearDedup
from massiveds.core.schema import DOCUMENTS
from pipelines.parts import hashes_path, indexed, signatures_path, surviving_documents
from pipelines.stage import BuildContext, InputItem, StageRecord, Step, UnitResult, UnitStage


class IndexResult(UnitResult):
    documents: int
    signed: int


class IndexStageRecord(StageRecord):
    #: the index files written, under the datastore's (or an append's work folder's) ``dedup/``
    files: list[str]
    documents: int
    signed: int
    #: (ngram, num_perm, seed) of the signatures; None: near dedup did not run
    near: tuple[int, int, int] | None
    #: whether the datastore's own documents were indexed too (an append whose reference was read from their passages)
    reindexed: bool = False


@dataclass(frozen=True)
class WriteIndex:
    """The dedup-index step: one documents part's kept documents, with digest and signature, as one index file."""

    build: Path
    folder: Path
    prefix: str
    removed: tuple[str, ...]

    def __call__(self, item: InputItem) -> IndexResult:
        digests = hashes_path(self.build, item.unit)
        columns = ["_ord", "doc_id", "source"] + ([] if digests.is_file() else ["text"])
        tables = list(surviving_documents(self.build, item, self.removed, columns))
        kept = pa.concat_tables(tables) if tables else DOCUMENTS.empty_table().select(columns)
        if digests.is_file():
            kept = kept.join(pq.read_table(digests, schema=HASHES), "_ord", join_type="left outer")
        else:
            kept = kept.append_column("hash", text_hashes(kept.column("text").to_pylist())).drop_columns(["text"])
        signed = signatures_path(self.build, item.unit)
        sigs = pq.read_table(signed, schema=SIGNATURES) if signed.is_file() else SIGNATURES.empty_table()
        rows = kept.join(sigs, "_ord", join_type="left outer").sort_by("_ord").select(DEDUP_INDEX.names)
        write_index_file(self.folder / f"{self.prefix}{item.unit}.parquet", rows)
        return IndexResult(unit=item.unit, documents=rows.num_rows, signed=rows.num_rows - rows.column("signature").null_count)


def index_prefix(ctx: BuildContext) -> str:
    """What an index file's name starts with: nothing in a build, ``append-<id>-`` in an append (its units are named alike)."""
    return "" if ctx.existing is None else f"append-{read_json(ctx.build / 'build.json')['append_id']}-"


class DedupIndexStage(UnitStage[InputItem, IndexResult]):
    name = "dedup_index"
    record = IndexStageRecord
    needs = ("extract", "dedup", "near_dedup", "decontaminate")

    def applies(self, ctx: BuildContext) -> bool:
        asked = bool(ctx.manifests.exact_dedup or ctx.manifests.near_dedup[0])
        return asked or (ctx.existing is not None and ctx.existing.catalog.dedup is not None)

    def plan(self, ctx: BuildContext) -> list[InputItem]:
        return [i for i in ctx.reference if not indexed(i)] + ctx.inputs

    def step(self, ctx: BuildContext) -> Step[InputItem, IndexResult]:
        return Step("dedup-index", WriteIndex(ctx.build, ctx.layout.root / DEDUP_DIR, index_prefix(ctx), tuple(ctx.removed)), IndexResult,
                    rates=("documents",))

    def summarize(self, ctx: BuildContext, items: Sequence[InputItem], results: Sequence[IndexResult]) -> StageRecord:
        near = ctx.manifests.near_dedup[1]
        documents, signed = sum(r.documents for r in results), sum(r.signed for r in results)
        prefix = index_prefix(ctx)
        return IndexStageRecord(files=[f"{prefix}{i.unit}.parquet" for i in items], documents=documents, signed=signed,
                                near=near_params(near) if isinstance(near, NearDedup) and signed else None,
                                reindexed=any(not indexed(i) for i in ctx.reference),
                                summary=f"{documents:,} documents indexed for dedup, {signed:,} with a MinHash signature")
