"""The search side of the server: the datastore opened once, and one search thread that coalesces requests.

Every request waits on a ``Future`` from ``Batcher.submit``; the search thread takes the queued
requests, groups those with equal options, and answers each group with one embedding + search call
(``Datastore.search_batch``). The queue is bounded: a full one refuses new requests (``QueueFull``, a 503)
instead of letting latency grow without limit.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from massiveds.core.errors import DatastoreError
from massiveds.store.datastore import Datastore
from massiveds.store.search import SearchOptions, SearchResult


@dataclass(frozen=True)
class ServeConfig:
    """Limits and batching of the server."""

    max_k: int = 1000
    max_queries: int = 256
    max_body: int = 1 << 20
    max_queue: int = 1024
    batch_wait_s: float = 0.002
    max_batch_queries: int = 512
    timeout_s: float = 120.0


class QueueFull(Exception):
    """The search queue holds ``max_queue`` requests already: the client should retry later."""


@dataclass
class _Job:
    queries: list[str]
    options: SearchOptions
    future: Future[SearchResult] = field(default_factory=Future)


@dataclass
class Counters:
    """Request and batching counts, and recent latencies, for /stats."""

    started: float = field(default_factory=time.time)
    requests: int = 0
    queries: int = 0
    search_calls: int = 0
    coalesced_max: int = 0
    client_errors: int = 0
    server_errors: int = 0
    rejected_busy: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=2000))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def error(self, status: int) -> None:
        """Count one error reply."""
        with self.lock:
            if status >= 500:
                self.server_errors += 1
            else:
                self.client_errors += 1

    def answered(self, queries: int, took_ms: float) -> None:
        """Count one answered search request."""
        with self.lock:
            self.requests += 1
            self.queries += queries
            self.latencies_ms.append(took_ms)

    def summary(self) -> dict[str, Any]:
        """Counts and latency percentiles of the recent requests."""
        with self.lock:
            lat = sorted(self.latencies_ms)
            return {
                "pid": os.getpid(),  # with --workers, the worker that answered
                "uptime_s": round(time.time() - self.started, 1),
                "requests": self.requests,
                "queries": self.queries,
                "search_calls": self.search_calls,
                "max_requests_per_call": self.coalesced_max,
                "client_errors": self.client_errors,
                "server_errors": self.server_errors,
                "rejected_busy": self.rejected_busy,
                "latency_ms": {"p50": _percentile(lat, 0.5), "p95": _percentile(lat, 0.95), "p99": _percentile(lat, 0.99), "n": len(lat)},
            }


def _percentile(ordered: Sequence[float], p: float) -> float | None:
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 3) if ordered else None


class Batcher:
    """The single search thread: coalesces queued requests with equal options into one ``search_batch`` call."""

    def __init__(self, ds: Datastore, config: ServeConfig, counters: Counters) -> None:
        self.ds, self.config, self.counters = ds, config, counters
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=config.max_queue)
        self._thread = threading.Thread(target=self._run, name="massiveds-search", daemon=True)
        self._thread.start()

    def submit(self, queries: list[str], options: SearchOptions) -> Future[SearchResult]:
        """Queue a search; the future gets its result or its error. Raises QueueFull when ``max_queue`` requests wait."""
        job = _Job(queries, options)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            with self.counters.lock:
                self.counters.rejected_busy += 1
            raise QueueFull(f"{self.config.max_queue} searches are queued already; retry later") from None
        return job.future

    def close(self) -> None:
        """Stop the search thread after the queued work."""
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _next_batch(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs, n, deadline = [first], len(first.queries), time.monotonic() + self.config.batch_wait_s
        while n < self.config.max_batch_queries:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            n += len(job.queries)
        return jobs, False

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            jobs, stop = self._next_batch(first)
            groups: dict[SearchOptions, list[_Job]] = {}
            for job in jobs:
                if job.future.set_running_or_notify_cancel():  # a request that timed out is not searched
                    groups.setdefault(job.options, []).append(job)
            for options, group in groups.items():
                self._search(options, group)
            if stop:
                return

    def _search(self, options: SearchOptions, jobs: Sequence[_Job]) -> None:
        queries = [q for job in jobs for q in job.queries]
        with self.counters.lock:
            self.counters.search_calls += 1
            self.counters.coalesced_max = max(self.counters.coalesced_max, len(jobs))
        try:
            result = self.ds.search_batch(queries, options)
        except Exception as exc:  # every error goes back to its requests; the thread keeps serving
            for job in jobs:
                job.future.set_exception(exc)
            return
        start = 0
        for job in jobs:
            end = start + len(job.queries)
            part = SearchResult(result.hits[start:end], result.skipped_shards, result.candidates[start:end], result.dropped[start:end])
            job.future.set_result(part)
            start = end


def check_for_serving(path: str | Path, strict: bool = False) -> Datastore:
    """Open a datastore, memory-map and check every shard (skipped ones are warned about); refuse one with no readable shard."""
    ds = Datastore.open(path)
    usable, _ = ds.usable_shards(strict=strict)
    if not usable:
        raise DatastoreError(f"{path}: no shard can be read; nothing to serve")
    return ds


def open_for_serving(path: str | Path, strict: bool = False) -> Datastore:
    """``check_for_serving``, then one search in the datastore's default mode (hybrid where it has BM25 indexes), so that the
    first requests do not wait for the model, every shard's index and BM25 vocabulary to load (the first hybrid search of a
    3.5 M-passage datastore took 4 s more than the next: BENCHMARKS.md)."""
    ds = check_for_serving(path, strict)
    ds.search(["warm up"], k=1, strict=strict)
    return ds
