"""Decontamination as Ray-free work units: index the eval sets once, scan every documents part, report.

    decon-index   one unit        eval sets -> build/decontaminate/index/{ngrams,items}.parquet
    decon-scan    per part        matches/<unit>.parquet (_ord, doc_id, source, eval_set, item_id, overlap, run)
                                  and build/dropped/decontaminate/<unit>.parquet (one row per document)
    decon-report  one unit        build/decontaminate/report.json: per eval set, items, documents removed,
                                  the items that leaked into most documents
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from massiveds.clean.decontaminate import INDEX_ITEMS, INDEX_NGRAMS, EvalIndex, build_index, read_eval_items, scan_texts
from massiveds.core.layout import atomic_path, write_json
from massiveds.core.manifest import Decontaminate, Manifest
from massiveds.core.schema import DROPPED
from massiveds.encode.chunk import passage_count
from pipelines.near_dedup import Runner
from pipelines.removals import removed_ords
from pipelines.units import _documents, _PartWriter, spanner_for, with_manifest

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


def decon_index_unit(item: dict[str, Any], build: Path, eval_sets: list[dict[str, Any]], ngram: int) -> dict[str, Any]:
    """Read every eval set (resolved by ``resolve_eval_sets``) and write the n-gram index as Parquet."""
    triples = [(spec["name"], item_id, text) for spec in eval_sets for item_id, text in read_eval_items(spec)]
    ngrams, items = build_index(triples, ngram)
    folder = build / DECON / "index"
    with atomic_path(folder / "ngrams.parquet") as tmp:
        pq.write_table(ngrams, str(tmp))
    with atomic_path(folder / "items.parquet") as tmp:
        pq.write_table(items, str(tmp))
    return {"unit": item["unit"], "items": items.num_rows, "ngrams": ngrams.num_rows,
            "too_short": int(pc.sum(pc.equal(items.column("ngrams"), 0)).as_py() or 0)}


def load_index(build: Path, ngram: int) -> EvalIndex:
    """The eval index written by ``decon_index_unit``."""
    folder = build / DECON / "index"
    ngrams = pq.read_table(folder / "ngrams.parquet", schema=INDEX_NGRAMS)
    return EvalIndex(ngrams, pq.read_table(folder / "items.parquet", schema=INDEX_ITEMS), ngram)


def decon_scan_unit(
    item: dict[str, Any], manifest: Manifest, build: Path, decon: Decontaminate, skip: list[str], base_dir: Path | None = None
) -> dict[str, Any]:
    """Scan one documents part against the eval index; write its matches and one drop record per contaminated document.

    ``skip`` names earlier removals (``["exact", "near"]``) whose documents are not scanned. Each match
    records how many passages its document would have made under ``manifest``'s chunking (the embedder
    resolved from ``base_dir``), so the report can say what decontamination took from the datastore.
    """
    spanner = spanner_for(manifest, base_dir)
    unit = item["unit"]
    index = load_index(build, decon.ngram)
    drop = removed_ords(build, item["source_idx"], item["file_idx"], skip) if skip else pa.array([], pa.int64())
    matches_out = _PartWriter(build / DECON / "matches" / f"{unit}.parquet", MATCHES)
    drops_out = _PartWriter(build / "dropped" / "decontaminate" / f"{unit}.parquet", DROPPED)
    scanned = lost = 0
    for table in _documents(build / "documents" / f"{unit}.parquet", ["doc_id", "source", "text", "_ord"]):
        if len(drop):
            table = table.filter(pc.invert(pc.is_in(table.column("_ord"), value_set=drop)))
        scanned += table.num_rows
        found = scan_texts(table.column("text").to_pylist(), index, decon.threshold, decon.min_run)
        ords, doc_ids, sources = (table.column(c).to_pylist() for c in ("_ord", "doc_id", "source"))
        rows: list[dict[str, Any]] = []
        drops: list[dict[str, Any]] = []
        texts = table.column("text").to_pylist()
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
    return {"unit": unit, "scanned": scanned, "removed": drops_out.rows, "passages": lost, "matches": matches_out.rows}


def decon_report_unit(item: dict[str, Any], build: Path, top: int = 10) -> dict[str, Any]:
    """Aggregate the matches into ``decontaminate/report.json``: per eval set, items, documents and passages removed, top leaked items."""
    items = pq.read_table(build / DECON / "index" / "items.parquet", schema=INDEX_ITEMS)
    files = sorted((build / DECON / "matches").glob("*.parquet"))
    matches = pa.concat_tables([pq.read_table(f, schema=MATCHES) for f in files]) if files else MATCHES.empty_table()
    report: dict[str, Any] = {}
    for name, n_grams in zip(items.column("eval_set").to_pylist(), items.column("ngrams").to_pylist(), strict=True):
        entry = report.setdefault(name, {"items": 0, "too_short": 0, "documents_removed": 0, "passages_removed": 0, "items_leaked": 0,
                                         "top_items": []})
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
        entry["top_items"] = [{"item": i, "documents": n} for i, n in per_item[name].most_common(top)]
    write_json(build / DECON / "report.json", report)
    return {"unit": item["unit"], "eval_sets": len(report), "documents_removed": sum(len(d) for d in docs.values())}


def run_decontaminate(run: Runner, items: list[dict[str, Any]], build: Path, manifests: list[Manifest], decon: Decontaminate,
                      eval_sets: list[dict[str, Any]], skip: list[str] | None = None, base_dir: Path | None = None) -> dict[str, Any]:
    """Run index, scan and report with ``run(stage, fn, items, kwargs)`` against resolved ``eval_sets``; returns the summary.

    ``items`` carry ``part``, the position of their manifest in ``manifests`` (whose chunking counts lost passages).
    """
    index = run("decon-index", decon_index_unit, [{"unit": "index"}], {"build": build, "eval_sets": eval_sets, "ngram": decon.ngram})[0]
    docs = [{"unit": i["unit"], "source_idx": i["source_idx"], "file_idx": i["file_idx"], "part": i["part"]} for i in items]
    scans = run("decon-scan", with_manifest, docs, {"fn": decon_scan_unit, "manifests": manifests, "build": build, "decon": decon,
                                                    "skip": list(skip or []), "base_dir": base_dir})
    run("decon-report", decon_report_unit, [{"unit": "report"}], {"build": build})
    report = json.loads((build / DECON / "report.json").read_text())
    removed, lost = sum(r["removed"] for r in scans), sum(r["passages"] for r in scans)
    return {
        "items": index["items"],
        "too_short": index["too_short"],
        "scanned": sum(r["scanned"] for r in scans),
        "removed": removed,
        "passages_removed": lost,
        "eval_sets": report,
        "summary": f"{removed:,} documents ({lost:,} passages) contaminated by {index['items']:,} eval items in {len(eval_sets)} sets",
    }
