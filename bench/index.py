"""Index build and recall at scale: massiveds train + per-shard add vs a plain FAISS script, recall vs nprobe, vs Flat shards.

On ``--vectors`` synthetic embedding-like vectors (``bench.vectorstore.clustered_vectors``: unit-norm,
low intrinsic dimension; NOT real text embeddings, which this CPU embeds at ~20 passages/s), or with
``--real DATASTORE`` on the stored fp16 vectors of a built datastore (real text embeddings, e.g. from
``bench/embed.py --sources ... --keep DATASTORE``):

1. build time: the build's own ``train_unit`` + ``add_shard_unit`` per shard (sample read from the
   shards' fp16 files, per-shard index and shard.json with checksums) vs a plain FAISS script with the
   identical factory, training sample and vectors (one index, ``train`` + ``add_with_ids``);
2. bytes per vector of the index (codes + ids), from the files and from the plan;
3. recall@1/10/100 vs nprobe relative to brute force, without and with exact rerank (``massiveds.evaluate.recall``);
4. a MassiveDS-style Flat index per shard: its memory and queries/s next to ours.

Run: ``PYTHONPATH=. python bench/index.py [--vectors 1000000] [--shards 4] [--nlist auto] [--pq-m auto]
[--train-sample auto] [--queries 500] [--real DATASTORE]``. Not run by CI except at a tiny size
(tests/test_bench_smoke.py).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.vectorstore import clustered_vectors, shard_ranges, write_vector_datastore
from massiveds.core.manifest import Index
from massiveds.core.report import table
from massiveds.encode.index import plan_index, set_nprobe
from massiveds.evaluate.recall import recall_report, sample_query_ids, stored_vectors
from massiveds.ops.index_report import recall_table
from massiveds.store.datastore import Datastore

out = Console(width=180)


def auto_int(text: str) -> int | str:
    """``auto`` or a positive integer."""
    return text if text == "auto" else int(text)


def real_vectors(path: Path) -> np.ndarray:
    """Every stored fp16 vector of the datastore at ``path``, in passage-id order."""
    return np.concatenate([np.asarray(s.vectors) for s in Datastore.open(path).shards])  # shards come in id order


def plain_faiss(x: np.ndarray, factory: str, train_sample: int, path: Path) -> tuple[float, float, faiss.Index]:
    """The reference script: same factory, same seeded sample, one index, add everything with ids, written to ``path``."""
    clock = time.perf_counter()
    rows = np.sort(np.random.default_rng(0).choice(len(x), size=train_sample, replace=False))
    index = faiss.index_factory(x.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    index.train(np.ascontiguousarray(x[rows], dtype=np.float32))
    train_s = time.perf_counter() - clock
    clock = time.perf_counter()
    for lo in range(0, len(x), 65536):
        hi = min(len(x), lo + 65536)
        index.add_with_ids(np.ascontiguousarray(x[lo:hi], dtype=np.float32), np.arange(lo, hi, dtype=np.int64))
    faiss.write_index(index, str(path))
    return train_s, time.perf_counter() - clock, index


def flat_shards(x: np.ndarray, n_shards: int, queries: np.ndarray, k: int) -> tuple[int, float]:
    """MassiveDS-style exact search: one IndexFlatIP per shard, fan-out and merge; (bytes, queries/s)."""
    shards = []
    for lo, hi in shard_ranges(len(x), n_shards):
        index = faiss.IndexIDMap(faiss.IndexFlatIP(x.shape[1]))
        index.add_with_ids(np.ascontiguousarray(x[lo:hi], dtype=np.float32), np.arange(lo, hi, dtype=np.int64))
        shards.append(index)
    clock = time.perf_counter()
    results = [s.search(queries, k) for s in shards]
    scores = np.concatenate([r[0] for r in results], axis=1)
    np.argsort(-scores, axis=1)[:, :k]
    qps = len(queries) / (time.perf_counter() - clock)
    return len(x) * (x.shape[1] * 4 + 8), qps


def main() -> None:
    """Run the benchmark and print its tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--nlist", type=auto_int, default="auto")
    ap.add_argument("--pq-m", type=auto_int, default="auto")
    ap.add_argument("--train-sample", type=auto_int, default="auto")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--out", type=Path, default=Path("/tmp/massiveds-bench-index"))
    ap.add_argument("--real", type=Path, help="use the stored vectors of this built datastore instead of synthetic ones")
    args = ap.parse_args()
    command = "PYTHONPATH=. python bench/index.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])

    shutil.rmtree(args.out, ignore_errors=True)
    clock = time.perf_counter()
    if args.real:
        x, kind = real_vectors(args.real), f"real text embeddings from {args.real}"
    else:
        x, kind = clustered_vectors(args.vectors, args.dim, clusters=max(10, args.vectors // 1000)), "synthetic embedding-like vectors"
    args.vectors, args.dim = x.shape
    gen_s = time.perf_counter() - clock
    plan = plan_index(args.vectors, args.dim, Index(type="ivfpq", nlist=args.nlist, pq_m=args.pq_m, train_sample=args.train_sample))
    print(f"{args.vectors:,} {kind}, d={args.dim}, {gen_s:.0f} s to load; "
          f"plan {plan.factory}, train sample {plan.train_sample:,}, nprobe {plan.nprobe}; {os.cpu_count()} CPUs, "
          f"FAISS {faiss.__version__} with {faiss.omp_get_max_threads()} threads", flush=True)

    ours = write_vector_datastore(args.out, x, args.shards, plan)
    print(f"ours: train {ours['train_s']:.1f} s, add {ours['add_s']:.1f} s", flush=True)
    plain_path = args.out.with_name(f"{args.out.name}-plain.faiss")  # beside --out: two runs at once do not share it
    p_train, p_add, plain = plain_faiss(x, plan.factory, plan.train_sample, plain_path)
    print(f"plain: train {p_train:.1f} s, add {p_add:.1f} s", flush=True)
    ours_total, plain_total = ours["train_s"] + ours["add_s"], p_train + p_add
    index_bytes = sum((args.out / "shards" / s["name"] / "index.faiss").stat().st_size for s in ours["catalog"]["shards"])
    plain_bytes = plain_path.stat().st_size
    out.print(table(f"build: massiveds ({args.shards} shards) vs plain FAISS, {plan.factory}, {args.vectors:,} vectors", ["", "massiveds", "plain FAISS", "ratio"], [  # noqa: E501
        ("train (s)", round(ours["train_s"], 1), round(p_train, 1), f"{ours['train_s'] / p_train:.2f}x"),
        ("add (s)", round(ours["add_s"], 1), round(p_add, 1), f"{ours['add_s'] / p_add:.2f}x"),
        ("train + add (s)", round(ours_total, 1), round(plain_total, 1), f"{ours_total / plain_total:.2f}x"),
        ("index bytes / vector (files)", round(index_bytes / args.vectors, 1), round(plain_bytes / args.vectors, 1), f"{index_bytes / plain_bytes:.2f}x"),  # noqa: E501
        ("plan bytes / vector (codes + id)", plan.bytes_per_vector, plan.bytes_per_vector, "1.00x"),
    ]))
    plain_path.unlink()

    ds = Datastore.open(args.out)
    ids = sample_query_ids(ds, args.queries, seed=0)
    q = stored_vectors(ds, ids)
    set_nprobe(plain, plan.nprobe)
    _, plain_ids = plain.search(q, 11)
    _, our_ids = ds.search_vectors(q, 11)
    same = float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(plain_ids, our_ids, strict=True)]))
    print(f"top-11 overlap of massiveds shards vs the plain index at nprobe {plan.nprobe}: {same:.4f}", flush=True)
    del plain

    report = recall_report(ds, args.queries, nprobes=sorted({1, 4, 16, 64, plan.nprobe or 1}), ks=[1, 10, 100], rerank=True)
    out.print(recall_table(report))
    print(f"exact top-100 by brute force: {report.exact_seconds:.1f} s for {report.queries} queries", flush=True)

    flat_bytes, flat_qps = flat_shards(x, args.shards, q, 10)
    default = next(r for r in report.rows if r.nprobe == plan.nprobe and not r.rerank)
    reranked = next(r for r in report.rows if r.nprobe == plan.nprobe and r.rerank)
    ours_ram = plan.bytes_per_vector * args.vectors
    out.print(table(f"vs MassiveDS-style Flat per shard ({args.shards} shards, {args.vectors:,} vectors, k=10)",
                ["", "RAM", "bytes/vector", "recall@10", "queries/s", "RAM ratio", "QPS ratio"], [
        ("Flat per shard (exact)", f"{flat_bytes / 2**20:,.0f} MB", flat_bytes / args.vectors, "1.0000", round(flat_qps, 1), "1.00x", "1.00x"),  # noqa: E501
        (f"{plan.factory} nprobe {plan.nprobe}", f"{ours_ram / 2**20:,.0f} MB", plan.bytes_per_vector, f"{default.recall[10]:.4f}",
         round(default.queries_per_s, 1), f"{ours_ram / flat_bytes:.3f}x", f"{default.queries_per_s / flat_qps:.1f}x"),
        (f"  + exact rerank (depth {report.rerank_depth}, fp16 on disk)", f"{ours_ram / 2**20:,.0f} MB", plan.bytes_per_vector,
         f"{reranked.recall[10]:.4f}", round(reranked.queries_per_s, 1), f"{ours_ram / flat_bytes:.3f}x", f"{reranked.queries_per_s / flat_qps:.1f}x"),  # noqa: E501
    ]))
    print(f"reproduce: {command}")


if __name__ == "__main__":
    main()
