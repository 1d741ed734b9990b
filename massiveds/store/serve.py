"""HTTP API over ``Datastore.search_batch``: POST /search (MassiveDS-compatible), GET /health, GET /stats.

Built on the standard library's ``ThreadingHTTPServer``: the work per request is embedding and FAISS
search, not HTTP parsing, so a framework would add dependencies without adding speed; and owning the
request handling lets every bad request (malformed JSON, oversized body, bad values) end in a 4xx
with a one-line message. One thread per connection parses and validates; a single search thread
(``Batcher``) takes the queued requests, coalesces those with the same options into one embedding +
search call, and hands each request its part of the result. The datastore is opened once at start,
its shard indexes memory-mapped and checked, and the embedder warmed up.

Request (``POST /search``, JSON object; only ``query`` is required)::

    {"query": "text" | ["text", ...], "n_docs": 10, "domains": null | "wiki" | ["wiki", ...],
     "nprobe": null, "dedup": false, "dedup_threshold": 0.8, "decontaminate": null | "gold" | [...],
     "fraction": null, "seed": 0, "mmr": null, "continuation": false, "rerank": null, "strict": false}

``domains`` may also be the datastore's name, meaning all domains (MassiveDS clients send a name).
Response: MassiveDS's shape, one inner list per query even for a single query, plus full hits::

    {"message": str, "query": <as sent>, "n_docs": int, "nprobe": int | null,
     "results": {"IDs": [[passage_id, ...]], "passages": [[text, ...]], "scores": [[float, ...]],
                 "hits": [[{passage_id, score, domain, doc_id, source, url, title, char_start, char_end, text, shard, ...}]]},
     "skipped_shards": {name: reason}, "ignored_fields": [...], "took_ms": float}

Errors are ``{"error": message}`` with 400 (bad JSON or values, unknown domain), 404 (unknown path),
405 (wrong method), 411 (no Content-Length), 413 (body over the limit), 503 (no readable shard, or
the search did not finish in time); 500 only for a bug, and the server keeps answering.
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from massiveds.core.errors import DatastoreError, MassiveDSError, ShardsUnavailableError
from massiveds.store.datastore import Datastore, Shard
from massiveds.store.search import SearchOptions, SearchResult, check_queries, json_type_error

#: The search options a request may set by name: every ``SearchOptions`` field but ``k`` (``n_docs``) and ``domains`` (own rules).
OPTION_FIELDS = tuple(name for name in SearchOptions.fields() if name not in ("k", "domains"))
KNOWN_FIELDS = {"query", "n_docs", "domains", *OPTION_FIELDS}
#: Seconds a connection stays open after an error reply to take in the body the client is still sending.
LINGER_S = 10.0


@dataclass(frozen=True)
class ServeConfig:
    """Limits and batching of the server."""

    max_k: int = 1000
    max_queries: int = 256
    max_body: int = 1 << 20
    batch_wait_s: float = 0.002
    max_batch_queries: int = 512
    timeout_s: float = 120.0
    access_log: bool = False


class BadRequest(Exception):
    """A request the client must fix: answered with ``status`` and a one-line message."""

    def __init__(self, message: str, status: int = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class SearchRequest:
    """A validated /search request."""

    queries: list[str]
    options: SearchOptions
    ignored: list[str]
    single: bool


def parse_search_request(body: bytes, ds: Datastore, config: ServeConfig) -> SearchRequest:
    """Validate a /search body against the datastore and the limits; raises BadRequest."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadRequest(f"body is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(payload, dict):
        raise BadRequest("body must be a JSON object with at least 'query'")
    query = payload.get("query")
    if isinstance(query, str):
        queries = [query]
    elif isinstance(query, list) and query and all(isinstance(q, str) for q in query):
        queries = list(query)
    else:
        raise BadRequest("'query' must be a non-empty string or a non-empty list of strings")
    if len(queries) > config.max_queries:
        raise BadRequest(f"at most {config.max_queries} queries per request, got {len(queries)}")
    n_docs = payload.get("n_docs", 10)
    if isinstance(n_docs, bool) or not isinstance(n_docs, int) or not 1 <= n_docs <= config.max_k:
        raise BadRequest(f"'n_docs' must be an integer in [1, {config.max_k}], got {n_docs!r}")
    kwargs: dict[str, Any] = {}
    for name in OPTION_FIELDS:
        value = payload.get(name)
        if value is None:
            continue
        if (problem := json_type_error(name, value)) is not None:
            raise BadRequest(problem)
        kwargs[name] = value
    domains = _domains(payload.get("domains"), ds)
    try:
        check_queries(queries)
        if domains is not None:
            ds.select_shards(domains)
        options = SearchOptions.create(k=n_docs, domains=domains, **kwargs)
    except MassiveDSError as exc:
        raise BadRequest(str(exc)) from None
    return SearchRequest(queries, options, sorted(set(payload) - KNOWN_FIELDS), isinstance(query, str))


def _domains(value: Any, ds: Datastore) -> list[str] | None:
    """Requested domains; None (or the datastore's own name, as MassiveDS clients send) means all."""
    if value is None or value == ds.name or value == [ds.name]:
        return None
    if isinstance(value, str):
        return [d.strip() for d in value.split(",") if d.strip()] or None
    if isinstance(value, list) and value and all(isinstance(d, str) and d for d in value):
        return list(value)
    raise BadRequest(f"'domains' must be a domain name or a list of them, got {value!r}")


def search_response(request: SearchRequest, result: SearchResult, took_ms: float, name: str) -> dict[str, Any]:
    """The MassiveDS-compatible response body (plus full hits) of one request."""
    single = request.single
    what = f"'{request.queries[0]}'" if single else f"{len(request.queries)} queries"
    return {
        "message": f"Search completed for {what} from {name}",
        "query": request.queries[0] if single else request.queries,
        "n_docs": request.options.k,
        "nprobe": request.options.nprobe,
        "results": {
            "IDs": [[h["passage_id"] for h in hits] for hits in result.hits],
            "passages": [[h["text"] for h in hits] for hits in result.hits],
            "scores": [[h["score"] for h in hits] for hits in result.hits],
            "hits": result.hits,
        },
        "skipped_shards": result.skipped_shards,
        "ignored_fields": request.ignored,
        "took_ms": round(took_ms, 3),
    }


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
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=2000))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def summary(self) -> dict[str, Any]:
        """Counts and latency percentiles of the recent requests."""
        with self.lock:
            lat = sorted(self.latencies_ms)
            return {
                "uptime_s": round(time.time() - self.started, 1),
                "requests": self.requests,
                "queries": self.queries,
                "search_calls": self.search_calls,
                "max_requests_per_call": self.coalesced_max,
                "client_errors": self.client_errors,
                "server_errors": self.server_errors,
                "latency_ms": {"p50": _percentile(lat, 0.5), "p95": _percentile(lat, 0.95), "p99": _percentile(lat, 0.99), "n": len(lat)},
            }


def _percentile(ordered: Sequence[float], p: float) -> float | None:
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 3) if ordered else None


class Batcher:
    """The single search thread: coalesces queued requests with equal options into one ``search_batch`` call."""

    def __init__(self, ds: Datastore, config: ServeConfig, counters: Counters) -> None:
        self.ds, self.config, self.counters = ds, config, counters
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="massiveds-search", daemon=True)
        self._thread.start()

    def submit(self, queries: list[str], options: SearchOptions) -> Future[SearchResult]:
        """Queue a search; the future gets its result or its error."""
        job = _Job(queries, options)
        self._queue.put(job)
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


class SearchServer(ThreadingHTTPServer):
    """The HTTP server holding the open datastore, its search thread and counters."""

    daemon_threads = True
    allow_reuse_address = True
    #: Connections the kernel queues until accepted (capped by net.core.somaxconn); socketserver's 5 made a burst
    #: of 64 clients lose connections to resets (bench/serve_load.py --clients 64).
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], ds: Datastore, config: ServeConfig) -> None:
        super().__init__(address, Handler)
        self.ds, self.config = ds, config
        self.counters = Counters()
        self.batcher = Batcher(ds, config, self.counters)

    def server_close(self) -> None:
        """Stop the search thread, then close the socket."""
        self.batcher.close()
        super().server_close()

    def health(self) -> tuple[int, dict[str, Any]]:
        """Status and body of /health."""
        usable, skipped = self.ds.usable_shards(self.ds.shards)
        body = {
            "status": "ok" if usable else "unavailable",
            "datastore": self.ds.name,
            "passages": sum(s.count for s in usable),
            "shards": len(usable),
            "skipped_shards": skipped,
        }
        return (HTTPStatus.OK if usable else HTTPStatus.SERVICE_UNAVAILABLE), body

    def stats(self) -> dict[str, Any]:
        """Body of /stats: a catalog summary, shard status and server counters."""
        cat = self.ds.catalog
        index = cat.index
        return {
            "name": self.ds.name,
            "format_version": cat.format_version,
            "created": cat.created,
            "embedder": cat.embedder.as_json(),
            "index": {"type": index.type, "factory": index.factory, "nlist": index.nlist, "pq_m": index.pq_m, "nprobe": index.nprobe},
            "passages": self.ds.num_passages,
            "domains": {name: totals.as_json() for name, totals in cat.domains.items()},
            "documents_kept": cat.build.documents_kept,
            "dropped": cat.build.dropped,
            "shards": [self._shard_status(s) for s in self.ds.shards],
            "limits": {"max_n_docs": self.config.max_k, "max_queries": self.config.max_queries, "max_body_bytes": self.config.max_body},
            "server": self.counters.summary(),
        }


    def _shard_status(self, shard: Shard) -> dict[str, Any]:
        err = self.ds.shard_error(shard)
        status = "ok" if err is None else "skipped"
        return {"name": shard.name, "domain": shard.domain, "passages": shard.count, "status": status, "reason": err}


class Handler(BaseHTTPRequestHandler):
    """One connection: routes, size limits, JSON in and out."""

    server: SearchServer
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a client may take to send its request
    wbufsize = 1 << 16  # status, headers and body leave in one write, flushed after each request
    disable_nagle_algorithm = True  # keep-alive clients must not wait on delayed ACKs
    unread = 0  # bytes of a refused body still on their way: read and dropped before closing

    def finish(self) -> None:
        """Send the reply, drop a refused body the client is still sending, then close.

        Closing a socket with unread data resets the connection, and a client still writing its body
        (``http.client``, ``requests``) then fails with a broken pipe instead of reading our 413.
        """
        if self.unread and not self.wfile.closed:
            self.wfile.flush()
            discard_input(self.connection, self.rfile, self.unread, LINGER_S)
        super().finish()

    def do_GET(self) -> None:
        """GET /health and /stats."""
        path = self.path.split("?", 1)[0]
        if path == "/health":
            status, body = self.server.health()
            self._send(status, body)
        elif path == "/stats":
            self._send(HTTPStatus.OK, self.server.stats())
        elif path == "/search":
            self._error(BadRequest("use POST /search with a JSON body", HTTPStatus.METHOD_NOT_ALLOWED))
        else:
            self._error(BadRequest(f"no such endpoint {path!r}; try POST /search, GET /health, GET /stats", HTTPStatus.NOT_FOUND))

    def do_POST(self) -> None:
        """POST /search."""
        path = self.path.split("?", 1)[0]
        start = time.perf_counter()
        try:
            body = self._read_body()
            if path != "/search":
                known = path in ("/health", "/stats")
                raise BadRequest(f"use GET {path}" if known else f"no such endpoint {path!r}; try POST /search",
                                 HTTPStatus.METHOD_NOT_ALLOWED if known else HTTPStatus.NOT_FOUND)
            request = parse_search_request(body, self.server.ds, self.server.config)
            result = self._search(request)
        except BadRequest as exc:
            self._error(exc)
            return
        took = (time.perf_counter() - start) * 1000
        counters = self.server.counters
        with counters.lock:
            counters.requests += 1
            counters.queries += len(request.queries)
            counters.latencies_ms.append(took)
        self._send(HTTPStatus.OK, search_response(request, result, took, self.server.ds.name))

    def _not_allowed(self) -> None:
        if "Content-Length" in self.headers:  # keep the connection in step: the body is not the next request
            with contextlib.suppress(BadRequest):
                self._read_body()
        self._error(BadRequest(f"method {self.command} is not allowed; use POST /search, GET /health, GET /stats",
                               HTTPStatus.METHOD_NOT_ALLOWED))

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _not_allowed

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            self.close_connection = True
            raise BadRequest("chunked bodies are not accepted; send Content-Length", HTTPStatus.LENGTH_REQUIRED)
        raw = self.headers.get("Content-Length")
        if raw is None:
            self.close_connection = True
            raise BadRequest("Content-Length is required", HTTPStatus.LENGTH_REQUIRED)
        try:
            length = int(raw)
        except ValueError:
            self.close_connection = True
            raise BadRequest(f"bad Content-Length {raw!r}") from None
        if length < 0:
            self.close_connection = True
            raise BadRequest(f"bad Content-Length {raw!r}")
        if length > self.server.config.max_body:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            self.unread = length
            limit = self.server.config.max_body
            raise BadRequest(f"body of {length} bytes is over the {limit}-byte limit", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            raise BadRequest(f"body ended after {len(body)} of {length} bytes")
        return body

    def _search(self, request: SearchRequest) -> SearchResult:
        future = self.server.batcher.submit(request.queries, request.options)
        try:
            return future.result(timeout=self.server.config.timeout_s)
        except FutureTimeout:
            raise BadRequest(f"search did not finish in {self.server.config.timeout_s:.0f} s", HTTPStatus.SERVICE_UNAVAILABLE) from None
        except ShardsUnavailableError as exc:
            raise BadRequest(str(exc), HTTPStatus.SERVICE_UNAVAILABLE) from None
        except MassiveDSError as exc:
            raise BadRequest(str(exc)) from None
        except Exception as exc:  # a bug: answer 500 with its message, keep serving
            raise BadRequest(f"internal error: {type(exc).__name__}: {exc}", HTTPStatus.INTERNAL_SERVER_ERROR) from None

    def _error(self, exc: BadRequest) -> None:
        with self.server.counters.lock:
            if exc.status >= 500:
                self.server.counters.server_errors += 1
            else:
                self.server.counters.client_errors += 1
        self._send(exc.status, {"error": str(exc)})

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors the base class detects (bad request line, URI or headers too long) as JSON, like ours."""
        self.close_connection = True
        self.request_version = self.protocol_version  # a status line even when the request line could not be parsed
        self._send(code, {"error": message or HTTPStatus(code).phrase})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        """Access log on stderr only when asked (``--access-log``)."""
        if self.server.config.access_log:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")


def discard_input(sock: socket.socket, rfile: Any, nbytes: int, seconds: float) -> None:
    """Read and drop up to ``nbytes`` from a connection whose answer is sent, for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    try:
        sock.shutdown(socket.SHUT_WR)
        while nbytes > 0 and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            chunk = rfile.read1(min(nbytes, 1 << 16))
            if not chunk:
                return
            nbytes -= len(chunk)
    except OSError:  # the client went away: nothing left to protect
        pass


def open_for_serving(path: str | Path, strict: bool = False) -> Datastore:
    """Open a datastore, memory-map and check every shard (skipped ones are warned about), warm the embedder."""
    ds = Datastore.open(path)
    usable, _ = ds.usable_shards(ds.shards, strict=strict)
    if not usable:
        raise DatastoreError(f"{path}: no shard can be read; nothing to serve")
    ds.embedder.encode_queries(["warm up"])
    return ds


def make_server(ds: Datastore, host: str = "127.0.0.1", port: int = 8000, config: ServeConfig | None = None) -> SearchServer:
    """A bound server over an open datastore (``serve_forever`` to run it; port 0 picks a free port)."""
    try:
        return SearchServer((host, port), ds, config or ServeConfig())
    except OSError as exc:
        raise MassiveDSError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None


def run(server: SearchServer) -> None:
    """Serve until SIGINT or SIGTERM, then shut down cleanly."""

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
