"""Search speed of one datastore cut into 1, 4 and 16 shards: fan-out over shard indexes vs the merged on-disk index.

The same ``--vectors`` synthetic embedding-like vectors (NOT real text embeddings) and one trained
IVF-PQ index; each layout is a datastore whose shards were added by the build's ``add_shard_unit``.
For each layout: ``merge-index`` time and peak RSS (in a child process), then batched queries/s and
single-query p50/p99 latency at the default nprobe, fan-out vs merged, and whether both return the
same ids.

Run: ``PYTHONPATH=. python bench/search.py [--vectors 200000] [--nlist 1024] [--pq-m 32] [--queries 300]``.
Not run by CI except at a tiny size (tests/test_bench_smoke.py).
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.vectorstore import clustered_vectors, write_vector_datastore
from massiveds.core.manifest import Index
from massiveds.core.report import table
from massiveds.encode.index import plan_index
from massiveds.store.datastore import Datastore

ROOT = Path(__file__).resolve().parents[1]
out = Console(width=180)


def merge_in_child(root: Path) -> tuple[float, float]:
    """Run merge-index in a fresh process; (seconds, that process's peak RSS in MB: VmHWM, which exec resets)."""
    code = (f"from massiveds.ops.merge_index import merge_index; merge_index({str(root)!r}); "
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    clock = time.perf_counter()
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - clock, int(proc.stdout.split()[-1]) / 1024


def timings(ds: Datastore, q: np.ndarray, k: int, single: int) -> tuple[float, float, float, np.ndarray]:
    """Batched queries/s, single-query p50 and p99 (ms), and the batched ids."""
    ds.search_vectors(q[:8], k)  # open the indexes (mmap) before timing
    clock = time.perf_counter()
    _, ids = ds.search_vectors(q, k)
    qps = len(q) / (time.perf_counter() - clock)
    lat = []
    for row in q[:single]:
        clock = time.perf_counter()
        ds.search_vectors(row[None], k)
        lat.append((time.perf_counter() - clock) * 1000)
    return qps, float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), ids


def main() -> None:
    """Build the three layouts, merge them, time them, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--pq-m", type=int, default=32)
    ap.add_argument("--train-sample", type=int, default=32768)
    ap.add_argument("--shards", default="1,4,16")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("/tmp/massiveds-bench-search"))
    args = ap.parse_args()
    command = "PYTHONPATH=. python bench/search.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    shutil.rmtree(args.out, ignore_errors=True)
    x = clustered_vectors(args.vectors, args.dim, clusters=max(10, args.vectors // 1000))
    plan = plan_index(args.vectors, args.dim, Index(type="ivfpq", nlist=args.nlist, pq_m=args.pq_m, train_sample=args.train_sample))
    q = np.asarray(clustered_vectors(args.queries, args.dim, seed=1, clusters=max(10, args.vectors // 1000)), dtype=np.float32)
    out.print(f"{args.vectors:,} synthetic embedding-like vectors (not real text), d={args.dim}, {plan.factory}, nprobe {plan.nprobe}, "
              f"k={args.k}, {args.queries} queries; {os.cpu_count()} CPUs")
    rows = []
    trained = args.out / "trained.faiss"
    for n_shards in [int(s) for s in args.shards.split(",")]:
        root = args.out / f"s{n_shards}"
        built = write_vector_datastore(root, x, n_shards, plan, trained=trained if trained.is_file() else None)
        if not trained.is_file():
            shutil.copyfile(root / "trained.faiss", trained)
        merge_s, merge_rss = merge_in_child(root)
        fan = Datastore.open(root)
        fan.use_merged = False
        f_qps, f_p50, f_p99, f_ids = timings(fan, q, args.k, args.queries)
        merged = Datastore.open(root)
        assert merged.merged_index is not None
        m_qps, m_p50, m_p99, m_ids = timings(merged, q, args.k, args.queries)
        same = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(f_ids, m_ids, strict=True)]))
        rows.append((n_shards, round(built["add_s"], 1), round(merge_s, 1), round(merge_rss), round(f_qps), round(m_qps), f"{m_qps / f_qps:.2f}x",  # noqa: E501
                     round(f_p50, 2), round(f_p99, 2), round(m_p50, 2), round(m_p99, 2), round(same, 4)))
        out.print(f"{n_shards} shards done", highlight=False)
        shutil.rmtree(root)
    out.print(table(f"fan-out vs merged, {args.vectors:,} vectors, {plan.factory}, nprobe {plan.nprobe}, k={args.k}", [
        "shards", "add s", "merge s", "merge peak RSS MB", "fan-out QPS", "merged QPS", "merged/fan-out", "fan-out p50 ms", "fan-out p99 ms",  # noqa: E501
        "merged p50 ms", "merged p99 ms", "same ids"], rows))
    out.print(f"this process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB; reproduce: {command}", highlight=False)  # noqa: E501


if __name__ == "__main__":
    main()
