"""Training the coarse quantizer: the train step's threads, and one-level k-means vs two-level centroids at 4,096 to 65,536 lists.

    PYTHONPATH=. python bench/train.py [--lists 4096,16384,65536] [--dim 256] [--kmeans-up-to 4096] [--queries 300]

For each list count, the plan that ``massiveds plan`` makes for a datastore of that many lists (its training sample,
PQ, OPQ and coarse quantizer as ``plan_index`` chooses them for ``lists²/16`` vectors, the 4·√N rule inverted) is
trained on synthetic embedding-like vectors (``bench.vectorstore.clustered_vectors``: unit norm, low intrinsic
dimension; NOT real text embeddings): with ``coarse_training: two-level`` always, and with one-level ``kmeans`` up
to ``--kmeans-up-to`` lists (its cost grows with lists × sample). Each trained index is filled with the sample and
searched at the plan's nprobe; recall@10 is against brute force over the same vectors. The thread rows train the
smallest plan on 1 thread and on every core, through ``threadpoolctl`` as the build's train step does.

Prints a table and writes ``--out`` (JSON). Not run by CI except at a tiny size (tests/test_bench_smoke.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import load_average, machine
from rich.console import Console
from vectorstore import clustered_vectors

from massiveds.core.manifest import Index
from massiveds.core.report import table
from massiveds.encode.index import IndexPlan, add_vectors, plan_index, set_nprobe, train_index

out = Console(width=200)


def plan_for(lists: int, dim: int, levels: str, sample: int | None) -> IndexPlan:
    """The plan of a datastore with ``lists`` IVF lists (``lists²/16`` vectors), trained with ``levels``."""
    spec = Index(type="ivfpq", nlist=lists, coarse_training=levels, **({"train_sample": sample} if sample else {}))
    return plan_index(lists * lists // 16, dim, spec)


def recall_at_10(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, nprobe: int) -> float:
    """recall@10 of ``index`` holding ``vectors`` against brute force, at ``nprobe``."""
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(queries, 10)
    set_nprobe(index, nprobe)
    _, got = index.search(queries, 10)
    return float(np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, truth, strict=True)]))


def run(plan: IndexPlan, vectors: np.ndarray, queries: np.ndarray, threads: int) -> dict[str, Any]:
    """Train ``plan`` on ``vectors`` with ``threads`` threads; seconds, and recall@10 once filled with them."""
    with threadpool_limits(threads):
        clock = time.perf_counter()
        index = train_index(plan, vectors)
        seconds = time.perf_counter() - clock
        add_vectors(index, vectors, np.arange(len(vectors)))
        assert plan.nprobe is not None
        recall = recall_at_10(index, vectors, queries, plan.nprobe)
    return {"lists": plan.nlist, "training": plan.coarse_training, "sample": len(vectors), "factory": plan.factory, "threads": threads,
            "seconds": round(seconds, 3), "nprobe": plan.nprobe, "recall_at_10": round(recall, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lists", default="4096,16384,65536", help="comma-separated IVF list counts")
    parser.add_argument("--dim", type=int, default=256, help="vector dimension (256: the distilled static embedder's)")
    parser.add_argument("--sample", type=int, default=None, help="training sample (default: the plan's, 64 per list, at most 2^22)")
    parser.add_argument("--kmeans-up-to", type=int, default=4096, help="largest list count also trained with one-level k-means")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("/tmp/massiveds-bench-train.json"))
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    lists = [int(v) for v in args.lists.split(",")]
    load = load_average()
    rows: list[dict[str, Any]] = []
    for n in lists:
        kinds = ["two-level"] + (["kmeans"] if n <= args.kmeans_up_to else [])
        plan = plan_for(n, args.dim, "two-level", args.sample)
        vectors = clustered_vectors(plan.train_sample, args.dim, seed=n, clusters=max(64, n // 16)).astype(np.float32)
        queries = vectors[np.random.default_rng(1).choice(len(vectors), size=args.queries, replace=False)]
        queries = queries + np.random.default_rng(2).normal(scale=0.05, size=queries.shape).astype(np.float32)
        for levels in kinds:
            rows.append(run(plan_for(n, args.dim, levels, args.sample), vectors, queries, cores))
            out.print(rows[-1], highlight=False)
        if n == lists[0] and cores > 1:
            rows.append(run(plan_for(n, args.dim, kinds[-1], args.sample), vectors, queries, 1))
            out.print(rows[-1], highlight=False)
    by = {(r["lists"], r["training"], r["threads"]): r for r in rows}
    shown = []
    for r in rows:
        one = by.get((r["lists"], "kmeans", r["threads"]))
        ratio = f"{r['seconds'] / one['seconds']:.3f}" if one and one["seconds"] and r["training"] == "two-level" else ""
        shown.append((r["lists"], r["training"], f"{r['sample']:,}", r["factory"], r["threads"], f"{r['seconds']:.1f}", ratio, r["nprobe"],
                       f"{r['recall_at_10']:.3f}"))
    out.print(table(f"training the coarse quantizer ({machine()}, load {load})",
                    ["lists", "training", "sample", "factory", "threads", "seconds", "vs kmeans", "nprobe", "recall@10"], shown))
    args.out.write_text(json.dumps({"machine": machine(), "load": load, "rows": rows}, indent=1))
    out.print(f"results: {args.out}")


if __name__ == "__main__":
    main()
