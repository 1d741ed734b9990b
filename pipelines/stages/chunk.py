"""chunk: each documents part cut into passages, without the documents the clean-up stages removed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
from pydantic import BaseModel

from massiveds.core.errors import MassiveDSError
from massiveds.core.manifest import Manifest
from massiveds.encode.chunk import CHUNKS, chunk_documents, spanner_for
from pipelines.parts import PartWriter, surviving_documents
from pipelines.stage import BuildContext, InputItem, StageRecord, Step, UnitResult, UnitStage


class ChunkResult(UnitResult):
    documents: int
    passages: int
    tokens: int


@dataclass(frozen=True)
class ChunkFiles:
    """The chunk step: one documents part into ``build/passages/<unit>.parquet``.

    ``base_dir`` (the first manifest's folder) resolves a local embedding model whose tokenizer counts tokens.
    """

    build: Path
    manifests: list[Manifest]
    removed: tuple[str, ...]
    base_dir: Path | None = None

    def __call__(self, item: InputItem) -> ChunkResult:
        manifest = self.manifests[item.manifest]
        spanner = spanner_for(manifest, self.base_dir)
        out = PartWriter(self.build / "passages" / f"{item.unit}.parquet", CHUNKS)
        docs = tokens = 0
        for table in surviving_documents(self.build, item, self.removed):
            docs += table.num_rows
            passages = chunk_documents(table, manifest.chunk, spanner)
            tokens += int(pc.sum(passages.column("n_tokens")).as_py() or 0)
            out.write(passages)
        out.commit()
        return ChunkResult(unit=item.unit, documents=docs, passages=out.rows, tokens=tokens)


class PassagesPart(BaseModel):
    """One passages part the chunk step wrote: its file name, rows, manifest and documents."""

    part: str
    rows: int
    manifest: int
    documents: int


class ChunkRecord(StageRecord):
    documents: int
    passages: int
    tokens: int
    parts: list[PassagesPart]


class ChunkStage(UnitStage[InputItem, ChunkResult]):
    name = "chunk"
    record = ChunkRecord

    def plan(self, ctx: BuildContext) -> list[InputItem]:
        return ctx.inputs

    def step(self, ctx: BuildContext) -> Step[InputItem, ChunkResult]:
        # The embedder (whose tokenizer counts tokens) is shared by the set and resolved from the first manifest's folder.
        run = ChunkFiles(ctx.build, ctx.manifest_list, tuple(ctx.removed), ctx.manifests.first.base_dir)
        return Step("chunk", run, ChunkResult, rates=("passages",))

    def summarize(self, ctx: BuildContext, items: Sequence[InputItem], results: Sequence[ChunkResult]) -> ChunkRecord:
        docs, passages = sum(r.documents for r in results), sum(r.passages for r in results)
        tokens = sum(r.tokens for r in results)
        if passages == 0:
            raise MassiveDSError(f"no passages: every document was dropped (see {ctx.layout.dropped}); check the sources and filters")
        parts = [PassagesPart(part=f"{i.unit}.parquet", rows=r.passages, manifest=i.manifest, documents=r.documents)
                 for i, r in zip(items, results, strict=True)]
        units_named = "/".join(dict.fromkeys(m.chunk.unit for m in ctx.manifest_list))
        return ChunkRecord(documents=docs, passages=passages, tokens=tokens, parts=parts,
                           summary=f"{docs:,} documents -> {passages:,} passages ({tokens:,} {units_named})")
