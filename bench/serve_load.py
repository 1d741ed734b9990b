"""Load on `massiveds serve`: N keep-alive clients for T seconds, for each server, against references measured in the same run.

    python bench/serve_load.py [DATASTORE] [--clients 16,64] [--seconds 30] [-k 10] [--servers asgi,asgi-2]

For each server, one after the other on 127.0.0.1 in its own process (DATASTORE defaults to
demo-datastore, built from the shipped example when absent): `asgi` is `massiveds serve` (FastAPI on
uvicorn), `asgi-N` is `massiveds serve --workers N`. (The former server on the standard library's
ThreadingHTTPServer, `stdlib`, was compared in this script up to commit 87b5978; its figures are in
BENCHMARKS.md.) Each is measured the same way:
in-process `Datastore.search` of one query (the reference: embedding + search, no HTTP) and one HTTP
client sending one query at a time, interleaved query by query so both see the same load; then N
concurrent clients (each a thread with its own keep-alive `http.client` connection) for T seconds, for
each N; then one request of 32 queries. Prints requests, errors (the run fails unless 0), QPS and
p50/p95/p99 latency of each, their ratios to the in-process reference and to the first server, the
servers' coalescing counters, the machine and its load average.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from _common import EXAMPLE, REPO, build, machine
from rich.console import Console

from massiveds.core.report import table

QUERIES = ["what is a kludge", "black art", "a program so badly written nobody can maintain it", "spod", "hacker ethic",
           "bit rot", "second-system effect", "bare metal", "a bug that appears only when you look for it",
           "the canonical example of a foo", "vaporware announced but never shipped", "a hack that works but is ugly"]


@dataclass
class Run:
    """Latencies (seconds) and errors of one measurement, over its wall time."""

    name: str
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0

    def pct(self, p: float) -> float:
        """The p-quantile latency in milliseconds."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    @property
    def qps(self) -> float:
        """Completed requests per second of wall time (for requests made one at a time: of their own time)."""
        return len(self.latencies) / (self.wall or sum(self.latencies))

    def time(self, call: Callable[[], str | None]) -> None:
        """Run one request, recording its latency, or its error."""
        start = time.perf_counter()
        error = call()
        if error is None:
            self.latencies.append(time.perf_counter() - start)
        else:
            self.errors.append(error)


def server_command(name: str, datastore: Path, batch_wait_ms: float) -> list[str]:
    """The command line of server ``name``: asgi or asgi-N (N worker processes)."""
    workers = name.partition("-")[2] or "1"
    return [sys.executable, "-m", "massiveds.cli", "serve", str(datastore), "--port", "0", "--batch-wait-ms", str(batch_wait_ms),
            "--workers", workers]


def start_server(command: list[str]) -> tuple[subprocess.Popen[str], int]:
    """A server on a free port of 127.0.0.1; returns the process and its port once /health answers."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "300"}
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    assert proc.stderr is not None
    for line in proc.stderr:  # "serving NAME (... passages, ... shards) at http://127.0.0.1:PORT ..."
        if m := re.search(r"at http://127\.0\.0\.1:(\d+)", line):
            port = int(m.group(1))
            break
    else:
        raise SystemExit(f"server exited (status {proc.wait()}) before listening")
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # drain, so the server never blocks on stderr
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)  # workers load their model before they accept
    conn.request("GET", "/health")
    if conn.getresponse().status != 200:
        raise SystemExit("server is up but /health is not 200")
    conn.close()
    return proc, port


def post(conn: http.client.HTTPConnection, query: str | list[str], k: int) -> str | None:
    """One POST /search on an open keep-alive connection; None when it answered 200 with k hits per query, else the error."""
    conn.request("POST", "/search", body=json.dumps({"query": query, "n_docs": k}), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    body = json.loads(resp.read())
    if resp.status != 200:
        return f"HTTP {resp.status}: {str(body)[:200]}"
    n = 1 if isinstance(query, str) else len(query)
    return None if [len(ids) for ids in body["results"]["IDs"]] == [k] * n else f"wrong number of hits: {body['results']['IDs']}"


def client_loop(port: int, k: int, deadline: float, offset: int, run: Run, lock: threading.Lock) -> None:
    """One client: sends queries back to back on one connection until ``deadline``, recording each latency or error."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    i = offset
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        try:
            error = post(conn, QUERIES[i % len(QUERIES)], k)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc} (client {offset}, {time.perf_counter() - deadline:+.1f} s from the end)"
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        elapsed = time.perf_counter() - start
        i += 1
        with lock:
            if error is None:
                run.latencies.append(elapsed)
            else:
                run.errors.append(error)
    conn.close()


def load(port: int, clients: int, seconds: float, k: int) -> Run:
    """``clients`` threads sending /search requests for ``seconds``."""
    run, lock = Run(f"{clients} concurrent clients, {seconds:g} s"), threading.Lock()
    start = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(port, k, start + seconds, c, run, lock)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.wall = time.perf_counter() - start
    return run


def in_process(datastore: Path, k: int) -> Callable[[int], str | None]:
    """The reference: ``Datastore.search`` of query ``i`` in this process (embedding + search, no HTTP).

    The datastore is opened by ``open_for_serving`` (which warms the embedder in the main thread) and
    searched from one worker thread, exactly as the server does: on an oversubscribed machine, searches
    in the warmed-up main thread were far slower than in a second thread (860 ms against 42 ms at
    load 5), so any other pattern would not compare.
    """
    from massiveds.serve.engine import open_for_serving

    ds = open_for_serving(datastore)
    pool = ThreadPoolExecutor(1)

    def search(i: int) -> str | None:
        hits = ds.search(QUERIES[i % len(QUERIES)], k=k)
        return None if len(hits) == k else f"{len(hits)} hits"

    for i in range(len(QUERIES)):  # warm up, as the server's first requests
        pool.submit(search, i).result()
    return lambda i: pool.submit(search, i).result()


def measure(name: str, command: list[str], reference_search: Callable[[int], str | None], args: argparse.Namespace,
            ) -> tuple[list[Run], Run, dict[str, int]]:
    """Every run against one server: the interleaved in-process reference and single client, the loads, the batch."""
    proc, port = start_server(command)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for q in QUERIES * args.workers_warmup:  # warm up the server (every worker) the same way
            post(conn, q, args.k)
        reference, single = Run(f"{name}: in-process Datastore.search"), Run(f"{name}: 1 client, 1 query at a time")
        for i in range(args.sequential):  # interleaved, so both see the same load on a shared machine
            reference.time(lambda i=i: reference_search(i))
            single.time(lambda i=i: post(conn, QUERIES[i % len(QUERIES)], args.k))
        conn.close()
        loads = [load(port, clients, args.seconds, args.k) for clients in args.clients]
        for run in loads:
            run.name = f"{name}: {run.name}"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)  # the server closes connections idle that long
        batch = Run(f"{name}: 1 request of 32 queries")
        for _ in range(5):
            batch.time(lambda: post(conn, (QUERIES * 3)[:32], args.k))
        conn.request("GET", "/stats")
        stats = json.loads(conn.getresponse().read())["server"]
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return [single, *loads, batch], reference, stats


def main() -> None:
    """Build or open the datastore, serve it with each server in turn, measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datastore", nargs="?", type=Path, default=REPO / "demo-datastore")
    parser.add_argument("--clients", type=lambda v: [int(c) for c in v.split(",")], default=[16, 64], help="comma-separated")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--servers", default="asgi,asgi-2", help="comma-separated: asgi, asgi-N (N workers)")
    parser.add_argument("--sequential", type=int, default=60, help="queries of the single-client and in-process runs (interleaved)")
    parser.add_argument("--batch-wait-ms", type=float, default=2.0, help="the servers' coalescing wait")
    args = parser.parse_args()
    args.workers_warmup = 4  # several passes, so that each worker of asgi-N has loaded and run its model
    if not (args.datastore / "datastore.json").is_file():
        print(f"building the shipped example into {args.datastore} ...", flush=True)
        build(EXAMPLE, args.datastore)
    load_before = os.getloadavg()
    reference_search = in_process(args.datastore, args.k)
    results = {}
    for name in args.servers.split(","):
        print(f"measuring {name} ...", flush=True)
        results[name] = measure(name, server_command(name, args.datastore, args.batch_wait_ms), reference_search, args)
    load_after = os.getloadavg()

    first = next(iter(results))
    base_runs, base_reference, _ = results[first]
    rows = []
    for runs, reference, _ in results.values():
        for r, b in zip([reference, *runs], [base_reference, *base_runs], strict=True):  # the same run against the first server
            rows.append((r.name, len(r.latencies), len(r.errors), f"{r.qps:.1f}", f"{r.pct(0.5):.1f}", f"{r.pct(0.95):.1f}",
                         f"{r.pct(0.99):.1f}", f"{r.pct(0.5) / reference.pct(0.5):.2f}", f"{r.qps / b.qps:.2f}"))
    console = Console()
    console.print(table(f"massiveds serve under load: {args.datastore.name} ({machine()})",
                        ["run", "requests", "errors", "QPS", "p50 ms", "p95 ms", "p99 ms", "p50 / in-process p50", f"QPS / {first}"], rows))
    for name, (runs, reference, stats) in results.items():
        single = runs[0]
        print(f"{name}: HTTP overhead, 1 client: p50 {single.pct(0.5) - reference.pct(0.5):+.1f} ms "
              f"({single.pct(0.5) / reference.pct(0.5):.2f}x; {single.pct(0.5) - base_runs[0].pct(0.5):+.1f} ms vs {first}); "
              f"{stats['requests']} requests in {stats['search_calls']} search calls, "
              f"up to {stats['max_requests_per_call']} coalesced into one; client errors {stats['client_errors']}, "
              f"server errors {stats['server_errors']}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min); {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"command: python bench/serve_load.py {args.datastore} --clients {','.join(map(str, args.clients))} --seconds {args.seconds:g} "
          f"-k {args.k} --servers {args.servers}")
    errors = [e for runs, _, _ in results.values() for r in runs for e in r.errors]
    if errors:
        print(f"FAILED: {len(errors)} errors, first: {errors[0]}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
