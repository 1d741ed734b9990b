"""What a cross-encoder rerank costs on this machine: pairs/s, and the latency it adds to one query at each depth.

The model is the packaged all-MiniLM-L6-v2 transformer with a fresh one-output head (made here, offline, unless
``--model`` names a CrossEncoder): the architecture and size of ``cross-encoder/ms-marco-MiniLM-L6-v2``, so the cost
is that model's; its scores mean nothing. Queries are the first words of random passages of the datastore. For
each depth, single queries are searched without and with the rerank, alternated, and the p50s compared.

Run: ``PYTHONPATH=. python bench/rerank.py [--datastore DS] [--depths 25,50,100] [--queries 40]`` (without
``--datastore`` the shipped example is built first). Smoke-run by tests/test_bench_smoke.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import EXAMPLE, build, machine
from massiveds.core.report import table
from massiveds.store.cross_encoder import cross_encoder
from massiveds.store.datastore import Datastore

out = Console(width=180)


def fresh_head_model(folder: Path) -> str:
    """MiniLM's transformer with a seeded fresh head, saved as a CrossEncoder in ``folder`` (made once)."""
    if not (folder / "config.json").is_file():
        import torch
        from sentence_transformers import CrossEncoder

        from massiveds.encode.embed import resolve_model

        torch.manual_seed(0)
        CrossEncoder(resolve_model("all-MiniLM-L6-v2"), num_labels=1, device="cpu").save(str(folder))
    return str(folder)


def sample_queries(ds: Datastore, n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` queries (the first 8 words of random passages) and the texts of those passages."""
    texts = [t for s in ds.shards for t in s.passages.column("text")]
    picked = np.random.default_rng(seed).choice(len(texts), size=min(n, len(texts)), replace=False)
    return [" ".join(texts[int(i)].split()[:8]) for i in picked], [texts[int(i)] for i in picked]


def p50_ms(seconds: list[float]) -> float:
    return float(np.percentile(seconds, 50)) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datastore", type=Path, help="datastore to search (default: the shipped example, built in --work)")
    ap.add_argument("--model", help="a CrossEncoder folder or cached hub name (default: MiniLM with a fresh head, made in --work)")
    ap.add_argument("--depths", default="25,50,100", help="comma list of rerank depths")
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--pairs", type=int, default=1000, help="pairs scored in one call for the pairs/s figure")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--work", type=Path, default=Path("/tmp/massiveds-bench-rerank"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    root = args.datastore
    if root is None:
        root = args.work / "example"
        if not (root / "datastore.json").is_file():
            out.print(f"building the example into {root} ...")
            build(EXAMPLE, root, "--engine", "local")
    model = args.model or fresh_head_model(args.work / "minilm-fresh-head")
    ds = Datastore.open(root)
    queries, texts = sample_queries(ds, args.queries)
    clock = time.perf_counter()
    scorer = cross_encoder(model)
    load_s = time.perf_counter() - clock
    pairs = [(queries[i % len(queries)], texts[(i * 7) % len(texts)]) for i in range(args.pairs)]
    scorer.scores(pairs[:32])  # warm-up
    clock = time.perf_counter()
    scorer.scores(pairs)
    pairs_s = len(pairs) / (time.perf_counter() - clock)
    ds.search(queries[0], k=args.k)  # warm-up: indexes and embedder loaded
    rows = []
    for depth in (int(d) for d in args.depths.split(",")):
        plain: list[float] = []
        reranked: list[float] = []
        for q in queries:  # alternated, so drift in the machine's load falls on both
            for times, options in ((plain, {}), (reranked, {"rerank": f"cross-encoder:{model}", "rerank_depth": depth})):
                clock = time.perf_counter()
                ds.search(q, k=args.k, **options)
                times.append(time.perf_counter() - clock)
        base, with_rerank = p50_ms(plain), p50_ms(reranked)
        rows.append((depth, f"{base:.1f}", f"{with_rerank:.1f}", f"{with_rerank - base:.1f}", f"{with_rerank / base:.1f}x",
                     f"{depth / max(with_rerank - base, 1e-9) * 1000:,.0f}"))
    out.print(f"{ds.num_passages:,} passages, {len(queries)} queries, k={args.k}; model {model} loaded in {load_s:.1f} s; "
              f"{pairs_s:,.0f} pairs/s in one call of {len(pairs):,} pairs; {machine()}")
    out.print(table("cross-encoder rerank (one query at a time, p50)",
                    ["depth", "search ms", "with rerank ms", "added ms", "with / without", "pairs/s in a query"], rows))


if __name__ == "__main__":
    main()
