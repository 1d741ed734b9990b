"""Deleting documents from a built datastore and compacting it: seconds, bytes, and search speed before and after.

    python bench/living.py --work /tmp/hybrid-work [--share 0.01] [--queries 300]

Copies the datastore ``bench/hybrid.py --work DIR`` built (real qa_forum, web_html and wiki text, BM25 on)
and, in one process, measures queries/s of one batch of queries (text from the datastore's own passages)
per mode, then deletes ``--share`` of its documents (drawn with a seed, by id file, as a takedown would
be), measures again, compacts, and measures again. Queries are embedded once beforehand (every side
gets the vectors for free). Not run by CI except at a tiny size
(tests/test_bench_smoke.py).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import load_average, machine
from rich.console import Console

from massiveds.core.report import table
from massiveds.ops.compact import compact
from massiveds.ops.delete import Selection, delete_documents
from massiveds.store.datastore import Datastore
from massiveds.store.search import SearchOptions

MODES = ("dense", "hybrid")


def qps(ds: Datastore, queries: list[str], mode: str, repeats: int = 3) -> float:
    """Queries per second of one batch search of ``queries`` at k=10 (best of ``repeats``, after a warm-up)."""
    options = SearchOptions.create(k=10, mode=mode)
    ds.search_batch(queries[:16], options)
    best = float("inf")
    for _ in range(repeats):
        clock = time.perf_counter()
        ds.search_batch(queries, options)
        best = min(best, time.perf_counter() - clock)
    return len(queries) / best


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "shards").rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="the folder of a bench/hybrid.py --work run (its datastore)")
    parser.add_argument("--share", type=float, default=0.01, help="share of the documents to delete")
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    console = Console(width=200)
    scratch = Path(tempfile.mkdtemp(prefix="massiveds-living-"))
    try:
        root = Path(shutil.copytree(args.work / "ds", scratch / "ds", ignore=shutil.ignore_patterns("build")))
        ds = Datastore.open(root)
        rng = np.random.default_rng(0)
        passages = [p for s in ds.shards for p in s.passages.read_all().select(["doc_id", "text"]).to_pylist()]
        queries = [" ".join(passages[int(i)]["text"].split()[:12]) for i in rng.choice(len(passages), args.queries, replace=False)]
        vectors, row = ds.embedder.encode_queries(queries), {q: i for i, q in enumerate(queries)}
        ds.embedder.encode_queries = lambda texts: vectors[[row[t] for t in texts]]  # type: ignore[method-assign]
        documents = sorted({p["doc_id"] for p in passages})
        victims = rng.choice(documents, max(1, round(args.share * len(documents))), replace=False)
        (scratch / "ids.txt").write_text("\n".join(victims) + "\n")
        console.print(f"{ds.num_passages:,} passages, {len(documents):,} documents, {len(queries)} queries ({machine()}; "
                      f"load {load_average()})")
        rows = [("built", "", f"{folder_bytes(root):,}", *(f"{qps(ds, queries, m):,.0f}" for m in MODES))]
        clock = time.perf_counter()
        record, found = delete_documents(root, Selection("doc-ids", str(scratch / "ids.txt")), "bench")
        seconds = time.perf_counter() - clock
        assert record is not None
        rows.append((f"delete {len(found.documents):,} documents ({found.passages:,} passages)", f"{seconds:.2f}",
                     f"{folder_bytes(root):,}", *(f"{qps(ds, queries, m):,.0f}" for m in MODES)))
        clock = time.perf_counter()
        reports = compact(root)
        seconds = time.perf_counter() - clock
        rows.append((f"compact {len(reports)} shards", f"{seconds:.2f}", f"{folder_bytes(root):,}",
                     *(f"{qps(ds, queries, m):,.0f}" for m in MODES)))
        console.print(table(f"delete {args.share:.0%} of the documents, then compact (load {load_average()})",
                            ["step", "seconds", "shard bytes", *(f"{m} queries/s" for m in MODES)], rows))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
