"""extract: each input file read, mapped onto documents, normalised and filtered; one documents part per file.

In an append, documents the datastore deleted are dropped here too (reason ``deleted``, ``massiveds.clean.deleted``).

A file that breaks off mid-way (truncated, corrupt, a decompression bomb, binary) keeps the documents
read before the break and records the unread rest as one dropped entry with its position, counted as
one record read: ``read == kept + dropped`` for every file.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from massiveds.clean.deleted import DeletedDocuments
from massiveds.clean.normalize import normalize_and_filter
from massiveds.core.manifest import Manifest
from massiveds.core.schema import DOCUMENTS, DROPPED, count_drops, dropped_table
from massiveds.ingest.extract import reader_for
from massiveds.ingest.extract.records import records_to_documents
from massiveds.ingest.extract.stream import InputError, Limits
from massiveds.ingest.extract.types import RawRecord
from pipelines.parts import PartWriter, documents_path
from pipelines.stage import BuildContext, InputItem, StageRecord, Step, UnitResult, UnitStage

READ_BATCH = 2048


class ExtractResult(UnitResult):
    """Records read, documents kept, and drops by reason, of one input file."""

    source: str
    read: int
    kept: int
    dropped: dict[str, int]


def _until_broken(records: Iterator[RawRecord], on_break: Callable[[Exception], None]) -> Iterator[RawRecord]:
    """The records of a reader until it raises; the error goes to ``on_break`` (the caller's own errors are not caught)."""
    try:
        yield from records
    except Exception as exc:  # a corrupt file must not stop the build: what was read is kept, the break recorded
        on_break(exc)


def extract_file(item: InputItem, manifest: Manifest, build: Path, deleted: DeletedDocuments | None = None) -> ExtractResult:
    """Read one input file, map it to documents, normalise and filter (and drop ``deleted`` ones); write its documents part and drops."""
    inp = item.file
    deleted = deleted or DeletedDocuments()  # none: nothing is dropped for it
    limits = Limits.of(manifest.filters)
    docs_out = PartWriter(documents_path(build, item.unit), DOCUMENTS)
    drops_out = PartWriter(build / "dropped" / "extract" / f"{item.unit}.parquet", DROPPED)
    reasons: collections.Counter[str] = collections.Counter()
    read = 0
    buffer: list[RawRecord] = []

    def flush() -> None:
        docs, dropped = records_to_documents(buffer, inp, manifest.domain, limits.max_record_bytes)
        kept, filtered = normalize_and_filter(docs, manifest.filters)
        kept, denied = deleted.split(kept)
        for table in (dropped, filtered, denied):
            drops_out.write(table)
            count_drops(table, reasons)
        docs_out.write(kept)
        buffer.clear()

    def record_break(exc: Exception) -> None:
        nonlocal read
        reason = exc.reason if isinstance(exc, InputError) else "corrupt_file"
        broken = dropped_table([{"doc_id": f"{inp.rel}#after-{read}", "source": inp.source, "stage": "extract", "reason": reason,
                                 "detail": f"{inp.rel}: after {read:,} records: {type(exc).__name__}: {exc}"[:1000]}])
        drops_out.write(broken)
        count_drops(broken, reasons)
        read += 1  # the unread rest counts as one record, dropped

    try:
        for record in _until_broken(reader_for(inp.format)(inp.path, limits), record_break):
            buffer.append(record)
            read += 1
            if len(buffer) >= READ_BATCH:
                flush()
        flush()
    except BaseException as exc:
        docs_out.abort(exc)
        drops_out.abort(exc)
        raise
    drops_out.commit()
    docs_out.commit()  # the documents file is the unit's completion marker: renamed last
    return ExtractResult(unit=item.unit, source=inp.source, read=read, kept=docs_out.rows, dropped=dict(reasons))


@dataclass(frozen=True)
class ExtractFiles:
    """The extract step: ``extract_file`` with the manifest each file comes from (and, in an append, the deleted documents)."""

    manifests: list[Manifest]
    build: Path
    deleted: DeletedDocuments | None = None

    def __call__(self, item: InputItem) -> ExtractResult:
        return extract_file(item, self.manifests[item.manifest], self.build, self.deleted)


class ExtractRecord(StageRecord):
    read: int
    kept: int
    dropped: dict[str, int]
    sources: dict[str, dict[str, int]]


class ExtractStage(UnitStage[InputItem, ExtractResult]):
    name = "extract"
    record = ExtractRecord

    def plan(self, ctx: BuildContext) -> list[InputItem]:
        return ctx.inputs

    def step(self, ctx: BuildContext) -> Step[InputItem, ExtractResult]:
        deleted = ctx.existing.deleted if ctx.existing is not None else None
        return Step("extract", ExtractFiles(ctx.manifest_list, ctx.build, deleted), ExtractResult, rates=("read",))

    def summarize(self, ctx: BuildContext, items: Sequence[InputItem], results: Sequence[ExtractResult]) -> ExtractRecord:
        per_source: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        dropped: collections.Counter[str] = collections.Counter()
        for r in results:
            per_source[r.source].update({"read": r.read, "kept": r.kept} | r.dropped)
            dropped.update(r.dropped)
        read, kept = sum(r.read for r in results), sum(r.kept for r in results)
        return ExtractRecord(read=read, kept=kept, dropped=dict(dropped), sources={s: dict(c) for s, c in per_source.items()},
                             summary=f"{len(items)} files, {read:,} records -> {kept:,} documents")
