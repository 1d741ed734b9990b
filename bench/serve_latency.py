"""Latency of the HTTP API: sequential single queries, concurrent clients (coalesced batches), one batched request.

Usage: python bench/serve_latency.py [DATASTORE]   (default: demo-datastore, built by `make demo`; skipped if absent)
Serves the datastore in-process on a free port and prints percentiles; the absolute numbers depend on the
machine (CPU embedding dominates), the ratios (concurrent vs sequential throughput) are what compare.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

QUERIES = ["what is a kludge", "black art", "a program so badly written nobody can maintain it", "spod", "hacker ethic",
           "bit rot", "second-system effect", "bare metal"]


def post(url: str, query: str | list[str], k: int = 10) -> float:
    """Seconds for one POST /search."""
    data = json.dumps({"query": query, "n_docs": k}).encode()
    start = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})) as r:
        json.load(r)
    return time.perf_counter() - start


def pct(values: list[float], p: float) -> float:
    """The p-quantile of values, in milliseconds."""
    return sorted(values)[min(len(values) - 1, int(p * len(values)))] * 1000


def main() -> None:
    """Run the three measurements and print them."""
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "demo-datastore")
    if not (path / "datastore.json").is_file():
        print(f"skipped: no datastore at {path} (run `make demo` or pass a datastore)")
        return
    from massiveds.serve import make_server, open_for_serving

    server = make_server(open_for_serving(path), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/search"
    try:
        for q in QUERIES:
            post(url, q)
        seq = [post(url, QUERIES[i % len(QUERIES)]) for i in range(40)]
        print(f"sequential, 1 query, k=10: p50 {pct(seq, 0.5):.1f} ms  p95 {pct(seq, 0.95):.1f} ms  "
              f"{len(seq) / sum(seq):.1f} req/s")
        start = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            conc = list(pool.map(lambda i: post(url, QUERIES[i % len(QUERIES)]), range(160)))
        wall = time.perf_counter() - start
        print(f"16 concurrent clients:     p50 {pct(conc, 0.5):.1f} ms  p95 {pct(conc, 0.95):.1f} ms  {len(conc) / wall:.1f} req/s")
        batch = statistics.median(post(url, QUERIES * 4) for _ in range(5))
        print(f"one request of 32 queries: {batch * 1000:.1f} ms ({batch * 1000 / 32:.1f} ms per query)")
        stats = server.counters.summary()
        print(f"search calls {stats['search_calls']} for {stats['requests']} requests "
              f"(up to {stats['max_requests_per_call']} requests coalesced into one call)")
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()
