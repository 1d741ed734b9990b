"""`massiveds serve` over HTTP on the shipped example: MassiveDS-compatible /search, /health, /stats, 4xx for bad requests."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import massiveds
from tests.helpers import massiveds as cli
from tests.test_search import linked_copy

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Client:
    """Raw HTTP requests to the server (http.client: full control over headers and bodies)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, json.loads(data) if data else None
        finally:
            conn.close()

    def search(self, payload: Any) -> tuple[int, Any]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.request("POST", "/search", body, {"Content-Type": "application/json"})


@contextlib.contextmanager
def running_server(datastore: Path, log: Path) -> Iterator[Client]:
    """``massiveds serve datastore`` in a subprocess on a free port, up and healthy; stopped (SIGTERM, exit 0) after."""
    port = free_port()
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "massiveds.cli", "serve", str(datastore), "--port", str(port), "--batch-wait-ms", "50"],
            stdout=subprocess.DEVNULL, stderr=err, env=os.environ | {"COLUMNS": "200"},
        )
    client = Client(port)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, f"server exited early:\n{log.read_text()}"
            try:
                status, body = client.request("GET", "/health")
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"server not up after 300 s:\n{log.read_text()}"
            time.sleep(0.5)
        assert body["status"] == "ok" and body["passages"] == massiveds.open(datastore).num_passages
        assert f"http://127.0.0.1:{port}" in log.read_text()
        yield client
    finally:
        proc.terminate()
        try:
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


@pytest.fixture(scope="module")
def server(example_datastore: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    with running_server(example_datastore, tmp_path_factory.mktemp("serve") / "stderr.log") as client:
        yield client


def test_single_query_has_the_massiveds_shape(server: Client, example_datastore: Path) -> None:
    status, body = server.search({"query": "what is a kludge", "n_docs": 3, "domains": "jargon-example"})
    assert status == 200
    res = body["results"]
    assert body["query"] == "what is a kludge" and body["n_docs"] == 3
    assert len(res["IDs"]) == len(res["passages"]) == len(res["scores"]) == len(res["hits"]) == 1
    expected = massiveds.open(example_datastore).search("what is a kludge", k=3)
    assert res["IDs"][0] == [h["passage_id"] for h in expected]
    assert res["passages"][0] == [h["text"] for h in expected]
    assert res["scores"][0] == pytest.approx([h["score"] for h in expected], abs=1e-5)
    assert res["hits"][0][0]["doc_id"] == expected[0]["doc_id"] and res["hits"][0][0]["char_end"] == expected[0]["char_end"]
    assert body["skipped_shards"] == {}


def test_batched_query_and_options(server: Client) -> None:
    queries = ["what is a kludge", "spod", "black art"]
    status, body = server.search({"query": queries, "n_docs": 4, "domains": ["wiki"], "dedup": True, "continuation": True,
                                  "fraction": 0.5, "seed": 2, "mmr": 0.7, "use_rerank": False})
    assert status == 200
    assert body["query"] == queries and body["ignored_fields"] == ["use_rerank"]
    assert [len(ids) for ids in body["results"]["IDs"]] == [4, 4, 4]
    assert all("continuation" in h for hits in body["results"]["hits"] for h in hits)


def test_concurrent_requests_are_coalesced_and_answered_correctly(server: Client) -> None:
    queries = [f"{word} hacker jargon" for word in ("kludge", "spod", "daemon", "foo", "cruft", "hack", "bogus", "wizard")]
    expected = {q: server.search({"query": q, "n_docs": 5})[1]["results"]["IDs"][0] for q in queries}
    barrier = threading.Barrier(len(queries))
    answers: dict[str, Any] = {}

    def ask(q: str) -> None:
        barrier.wait()
        answers[q] = server.search({"query": q, "n_docs": 5})

    threads = [threading.Thread(target=ask, args=(q,)) for q in queries]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(answers[q][0] == 200 and answers[q][1]["results"]["IDs"][0] == expected[q] for q in queries)
    status, stats = server.request("GET", "/stats")
    assert status == 200 and stats["server"]["max_requests_per_call"] >= 2


BAD = [
    (b"{not json", 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b"{}", 400, "'query'"),
    (json.dumps({"query": ""}).encode(), 400, "empty"),
    (json.dumps({"query": ["ok", "  "]}).encode(), 400, "query 2 is empty"),
    (json.dumps({"query": []}).encode(), 400, "'query'"),
    (json.dumps({"query": 42}).encode(), 400, "'query'"),
    (json.dumps({"query": "x", "n_docs": 0}).encode(), 400, "n_docs"),
    (json.dumps({"query": "x", "n_docs": -3}).encode(), 400, "n_docs"),
    (json.dumps({"query": "x", "n_docs": 100000}).encode(), 400, "n_docs"),
    (json.dumps({"query": "x", "n_docs": "5"}).encode(), 400, "n_docs"),
    (b'{"query": "x", "n_docs": NaN}', 400, "n_docs"),
    (json.dumps({"query": "x", "domains": "books"}).encode(), 400, "unknown domain 'books'"),
    (json.dumps({"query": "x", "domains": 3}).encode(), 400, "domains"),
    (json.dumps({"query": "x", "nprobe": 0}).encode(), 400, "nprobe"),
    (json.dumps({"query": "x", "mmr": 3}).encode(), 400, "mmr"),
    (json.dumps({"query": "x", "fraction": 1.5}).encode(), 400, "fraction"),
    (json.dumps({"query": "x", "dedup": "yes"}).encode(), 400, "dedup"),
    (json.dumps({"query": "x", "decontaminate": "too short"}).encode(), 400, "13-gram"),
    (json.dumps({"query": "x", "rerank": "fancy"}).encode(), 400, "rerank"),
    (json.dumps({"query": "x", "mode": "fuzzy"}).encode(), 400, "mode must be one of dense, sparse, hybrid"),
    (json.dumps({"query": "x", "alpha": 1.5}).encode(), 400, "alpha"),
    (json.dumps({"query": "x", "alpha": "half"}).encode(), 400, "'alpha' must be a number"),
    (json.dumps({"query": "x", "fusion": "max"}).encode(), 400, "fusion must be one of convex, rrf"),
    (json.dumps({"query": ["x"] * 1000}).encode(), 400, "at most"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "not valid JSON"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_requests_get_4xx_with_a_message(server: Client, body: bytes, status: int, message: str) -> None:
    got, answer = server.search(body)
    assert got == status and message in answer["error"]


def read_until_closed(sock: socket.socket) -> bytes:
    """Read a whole reply: headers and body may arrive in separate segments."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_protocol_errors_get_4xx_and_the_server_keeps_answering(server: Client) -> None:
    big = json.dumps({"query": "x" * (16 << 20)}).encode()  # far over what socket buffers hold
    status, body = server.search(big)  # http.client sends the whole body before it reads the reply
    assert status == 413 and "limit" in body["error"]
    assert server.request("GET", "/search")[0] == 405
    assert server.request("PUT", "/search", b"{}")[0] == 405
    assert server.request("POST", "/health", b"{}")[0] == 405
    assert server.request("GET", "/nowhere")[0] == 404
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:  # no Content-Length
        s.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_until_closed(s).startswith(b"HTTP/1.1 411")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:  # malformed request line
        s.sendall(b"GET /search HTTP/1.1 extra\r\n\r\n")
        reply = read_until_closed(s)
        assert reply.startswith(b"HTTP/1.1 400") and b'"error"' in reply
    status, _ = server.request("GET", "/" + "x" * 70_000)  # request line over the base class's limit
    assert status == 414
    status, body = server.search({"query": "what is a kludge", "n_docs": 2})
    assert status == 200 and len(body["results"]["IDs"][0]) == 2
    status, stats = server.request("GET", "/stats")
    assert status == 200 and stats["server"]["client_errors"] >= 6 and stats["server"]["server_errors"] == 0


def test_stats_summarises_the_catalog(server: Client, example_datastore: Path) -> None:
    status, stats = server.request("GET", "/stats")
    catalog = json.loads((example_datastore / "datastore.json").read_text())
    assert status == 200
    assert stats["name"] == catalog["name"] and stats["passages"] == sum(s["count"] for s in catalog["shards"])
    assert stats["domains"] == catalog["domains"] and stats["embedder"]["model"] == catalog["embedder"]["model"]
    assert [s["name"] for s in stats["shards"]] == [s["name"] for s in catalog["shards"]]
    assert all(s["status"] == "ok" for s in stats["shards"])
    assert stats["server"]["requests"] >= 1 and stats["server"]["latency_ms"]["p50"] > 0


def test_a_burst_of_connections_is_queued_then_answered(example_datastore: Path) -> None:
    """64 clients connect at once before the server accepts any: the kernel must queue them all, not reset them."""
    from massiveds.store.serve import make_server

    server = make_server(massiveds.open(example_datastore), "127.0.0.1", 0)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    socks: list[socket.socket] = []
    try:
        for _ in range(64):  # nothing accepts yet: each connection waits in the listen queue (with 5 places, the 7th times out)
            socks.append(socket.create_connection(("127.0.0.1", server.server_port), timeout=5))
            socks[-1].sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        serving.start()
        assert [sock.recv(12) for sock in socks] == [b"HTTP/1.1 200"] * 64
    finally:
        for sock in socks:
            sock.close()
        if serving.is_alive():
            server.shutdown()
        server.server_close()


def test_serve_strict_refuses_a_broken_datastore(example_datastore: Path, tmp_path: Path) -> None:
    root = linked_copy(example_datastore, tmp_path / "broken")
    (root / "shards" / "wiki-00002" / "index.faiss").unlink()
    proc = cli("serve", str(root), "--port", str(free_port()), "--strict", check=False, timeout=120)
    assert proc.returncode == 2 and "wiki-00002" in proc.stderr and "index.faiss is missing" in proc.stderr
    assert "Traceback" not in proc.stderr
