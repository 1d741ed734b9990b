"""decontaminate: documents that hold evaluation items removed, in three steps sharing one config.

    decon-index   one unit        eval sets -> build/decontaminate/index/{ngrams,items}.parquet
    decon-scan    per input file  matches/<unit>.parquet (_ord, doc_id, source, eval_set, item_id, overlap, run)
                                  and build/dropped/decontaminate/<unit>.parquet (one row per document)
    decon-report  one unit        build/decontaminate/report.json: per eval set, items, documents removed,
                                  the items that leaked into most documents
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from massiveds.clean.decontaminate import INDEX_ITEMS, INDEX_NGRAMS, EvalIndex, build_index, read_eval_items, scan_texts
from massiveds.core.layout import write_json
from massiveds.core.manifest import Decontaminate, Manifest
from massiveds.core.schema import DROPPED
from massiveds.encode.chunk import passage_count, spanner_for
from pipelines.parts import PartWriter, read_folder, surviving_documents, write_table
from pipelines.stage import BuildContext, InputItem, Stage, StageRecord, Step, StepRunner, UnitResult, WorkItem

DECON = Path("decontaminate")
MATCHES = pa.schema(
    [
        ("_ord", pa.int64()),
        ("doc_id", pa.string()),
        ("source", pa.string()),
        ("eval_set", pa.string()),
        ("item_id", pa.string()),
        ("overlap", pa.float32()),
        ("run", pa.int32()),
        ("passages", pa.int32()),  # what the document would have added to the datastore
    ]
)


class IndexResult(UnitResult):
    items: int
    ngrams: int
    too_short: int


class ScanResult(UnitResult):
    scanned: int
    removed: int
    passages: int
    matches: int


class ReportResult(UnitResult):
    eval_sets: int
    documents_removed: int


@dataclass(frozen=True)
class IndexEvalSets:
    """decon-index: every eval set (resolved by ``resolve_eval_sets``) read, its n-gram index written as Parquet."""

    build: Path
    eval_sets: tuple[dict[str, Any], ...]
    ngram: int

    def __call__(self, item: WorkItem) -> IndexResult:
        triples = [(spec["name"], item_id, text) for spec in self.eval_sets for item_id, text in read_eval_items(spec)]
        ngrams, items = build_index(triples, self.ngram)
        write_table(self.build / DECON / "index" / "ngrams.parquet", ngrams)
        write_table(self.build / DECON / "index" / "items.parquet", items)
        return IndexResult(unit=item.unit, items=items.num_rows, ngrams=ngrams.num_rows,
                           too_short=int(pc.sum(pc.equal(items.column("ngrams"), 0)).as_py() or 0))


def load_index(build: Path, ngram: int) -> EvalIndex:
    """The eval index written by ``IndexEvalSets``."""
    folder = build / DECON / "index"
    ngrams = pq.read_table(folder / "ngrams.parquet", schema=INDEX_NGRAMS)
    return EvalIndex(ngrams, pq.read_table(folder / "items.parquet", schema=INDEX_ITEMS), ngram)


@dataclass(frozen=True)
class Scan:
    """decon-scan: one documents part scanned against the eval index; its matches and one drop record per contaminated document.

    ``removed`` names earlier clean-up stages whose documents are not scanned. Each match records how
    many passages its document would have made under its manifest's chunking (the embedder resolved
    from ``base_dir``), so the report can say what decontamination took from the datastore.
    """

    build: Path
    manifests: list[Manifest]
    decon: Decontaminate
    removed: tuple[str, ...]
    base_dir: Path | None = None

    def __call__(self, item: InputItem) -> ScanResult:
        manifest, decon, unit = self.manifests[item.manifest], self.decon, item.unit
        spanner = spanner_for(manifest, self.base_dir)
        index = load_index(self.build, decon.ngram)
        matches_out = PartWriter(self.build / DECON / "matches" / f"{unit}.parquet", MATCHES)
        drops_out = PartWriter(self.build / "dropped" / "decontaminate" / f"{unit}.parquet", DROPPED)
        scanned = lost = 0
        for table in surviving_documents(self.build, item, self.removed, ["doc_id", "source", "text", "_ord"]):
            scanned += table.num_rows
            texts = table.column("text").to_pylist()
            found = scan_texts(texts, index, decon.threshold, decon.min_run)
            ords, doc_ids, sources = (table.column(c).to_pylist() for c in ("_ord", "doc_id", "source"))
            rows: list[dict[str, Any]] = []
            drops: list[dict[str, Any]] = []
            for o, d, s, text, ms in zip(ords, doc_ids, sources, texts, found, strict=True):
                if not ms:
                    continue
                passages = passage_count(text, manifest.chunk, spanner)
                lost += passages
                rows.extend({"_ord": o, "doc_id": d, "source": s, "eval_set": index.eval_set[m.item], "item_id": index.item_id[m.item],
                             "overlap": m.overlap, "run": m.run, "passages": passages} for m in ms)
                worst = max(ms, key=lambda m: (m.overlap, m.run))
                reason = "eval_ngram_overlap" if worst.overlap >= decon.threshold else "eval_common_run"
                detail = {"eval_set": index.eval_set[worst.item], "item": index.item_id[worst.item], "overlap": round(worst.overlap, 4),
                          "run": worst.run, "items": len(ms)}
                drops.append({"doc_id": d, "source": s, "stage": "decontaminate", "reason": reason, "duplicate_of": None,
                              "detail": json.dumps(detail)})
            matches_out.write(pa.Table.from_pylist(rows, schema=MATCHES))
            drops_out.write(pa.Table.from_pylist(drops, schema=DROPPED))
        drops_out.commit()
        matches_out.commit()
        return ScanResult(unit=unit, scanned=scanned, removed=drops_out.rows, passages=lost, matches=matches_out.rows)


@dataclass(frozen=True)
class Report:
    """decon-report: the matches aggregated into ``decontaminate/report.json`` (per eval set: items, documents and
    passages removed, the items that leaked into most documents)."""

    build: Path
    top: int = 10

    def __call__(self, item: WorkItem) -> ReportResult:
        items = pq.read_table(self.build / DECON / "index" / "items.parquet", schema=INDEX_ITEMS)
        matches = read_folder(self.build / DECON / "matches", MATCHES)
        report: dict[str, Any] = {}
        for name, n_grams in zip(items.column("eval_set").to_pylist(), items.column("ngrams").to_pylist(), strict=True):
            entry = report.setdefault(name, {"items": 0, "too_short": 0, "documents_removed": 0, "passages_removed": 0,
                                             "items_leaked": 0, "top_items": []})
            entry["items"] += 1
            entry["too_short"] += int(n_grams == 0)
        docs: dict[str, dict[int, int]] = collections.defaultdict(dict)  # per eval set: _ord -> passages
        per_item: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for o, es, iid, n in zip(*(matches.column(c).to_pylist() for c in ("_ord", "eval_set", "item_id", "passages")), strict=True):
            docs[es][o] = n
            per_item[es][iid] += 1
        for name, entry in report.items():
            entry["documents_removed"] = len(docs[name])
            entry["passages_removed"] = sum(docs[name].values())
            entry["items_leaked"] = len(per_item[name])
            entry["top_items"] = [{"item": i, "documents": n} for i, n in per_item[name].most_common(self.top)]
        write_json(self.build / DECON / "report.json", report)
        return ReportResult(unit=item.unit, eval_sets=len(report), documents_removed=sum(len(d) for d in docs.values()))


class DecontaminateRecord(StageRecord):
    items: int
    too_short: int
    scanned: int
    removed: int
    passages_removed: int
    eval_sets: dict[str, Any]


def run_decontaminate(executor: StepRunner, items: list[InputItem], build: Path, manifests: list[Manifest], decon: Decontaminate,
                      eval_sets: list[dict[str, Any]], removed: tuple[str, ...] = (), base_dir: Path | None = None) -> DecontaminateRecord:
    """Index, scan and report through ``executor`` against resolved ``eval_sets``; ``items`` are the documents parts."""
    [index] = executor.map(Step("decon-index", IndexEvalSets(build, tuple(eval_sets), decon.ngram), IndexResult), [WorkItem(unit="index")])
    scans = executor.map(Step("decon-scan", Scan(build, manifests, decon, removed, base_dir), ScanResult), items)
    executor.map(Step("decon-report", Report(build), ReportResult), [WorkItem(unit="report")])
    report = json.loads((build / DECON / "report.json").read_text())
    count, lost = sum(r.removed for r in scans), sum(r.passages for r in scans)
    return DecontaminateRecord(
        items=index.items, too_short=index.too_short, scanned=sum(r.scanned for r in scans), removed=count, passages_removed=lost,
        eval_sets=report,
        summary=f"{count:,} documents ({lost:,} passages) contaminated by {index.items:,} eval items in {len(eval_sets)} sets",
    )


class DecontaminateStage(Stage):
    name = "decontaminate"
    record = DecontaminateRecord
    removes = "decontaminate"

    def applies(self, ctx: BuildContext) -> bool:
        return ctx.manifests.decontaminate is not None

    def run(self, ctx: BuildContext, executor: StepRunner) -> StageRecord:
        decon = ctx.manifests.decontaminate
        assert decon is not None
        return run_decontaminate(executor, ctx.inputs, ctx.build, ctx.manifest_list, decon, ctx.manifests.eval_sets(),
                                 tuple(ctx.removed), ctx.manifests.first.base_dir)
