"""`massiveds serve` over HTTP on the shipped example: MassiveDS-compatible /search, /health, /stats, 4xx for bad requests.

Also: the passage context and inspect routes, the OpenAPI schema (every search option with its type and
default) and a client made from nothing but that schema, hostile requests (never a 5xx, the server stays
up), the body limit, the bounded queue, the listen backlog, and several worker processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import massiveds
from tests.helpers import massiveds as cli
from tests.serving import Client, free_port, running_server
from tests.test_search import linked_copy

pytestmark = pytest.mark.slow


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
    assert set(res["hits"][0][0]) == set(expected[0])  # the hit as the library gives it: no field added or lost
    assert body["skipped_shards"] == {}


def test_any_content_type_is_read_as_json(server: Client) -> None:
    """``curl -d`` sends application/x-www-form-urlencoded: the body is JSON whatever the header says."""
    body = json.dumps({"query": "black art", "n_docs": 2}).encode()
    for headers in ({"Content-Type": "application/x-www-form-urlencoded"}, {"Content-Type": "text/plain"}, {}):
        status, answer = server.request("POST", "/search", body, headers)
        assert status == 200 and len(answer["results"]["IDs"][0]) == 2


def test_batched_query_and_options(server: Client) -> None:
    queries = ["what is a kludge", "spod", "black art"]
    status, body = server.search({"query": queries, "n_docs": 4, "domains": ["wiki"], "dedup": True, "continuation": True,
                                  "fraction": 0.5, "seed": 2, "mmr": 0.7, "use_rerank": False})
    assert status == 200
    assert body["query"] == queries and body["ignored_fields"] == ["use_rerank"]
    assert [len(ids) for ids in body["results"]["IDs"]] == [4, 4, 4]
    assert all("continuation" in h for hits in body["results"]["hits"] for h in hits)


def test_hybrid_options_reach_the_search(server: Client, example_datastore: Path) -> None:
    ds = massiveds.open(example_datastore)
    for options in ({"mode": "sparse"}, {"mode": "dense"}, {"mode": "hybrid", "alpha": 0.2, "fusion": "rrf"}):
        status, body = server.search({"query": "bit rot", "n_docs": 5, **options})
        assert status == 200 and body["results"]["IDs"][0] == [h["passage_id"] for h in ds.search("bit rot", k=5, **options)]
    hit = server.search({"query": "bit rot", "n_docs": 1, "mode": "hybrid"})[1]["results"]["hits"][0][0]
    assert {"dense_score", "sparse_score"} <= set(hit)


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
    (b'{"query": "\xff"}', 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b"{}", 400, "'query'"),
    (json.dumps({"query": ""}).encode(), 400, "empty"),
    (json.dumps({"query": ["ok", "  "]}).encode(), 400, "query 2 is empty"),
    (json.dumps({"query": []}).encode(), 400, "'query'"),
    (json.dumps({"query": 42}).encode(), 400, "'query'"),
    (json.dumps({"query": ["a", 3]}).encode(), 400, "'query'"),
    (json.dumps({"query": "x", "n_docs": 0}).encode(), 400, "n_docs"),
    (json.dumps({"query": "x", "n_docs": -3}).encode(), 400, "n_docs"),
    (json.dumps({"query": "x", "n_docs": 100000}).encode(), 400, "n_docs"),
    (json.dumps({"query": "x", "n_docs": "5"}).encode(), 400, "n_docs"),
    (json.dumps({"query": "x", "n_docs": 5.0}).encode(), 400, "n_docs"),
    (json.dumps({"query": "x", "n_docs": True}).encode(), 400, "n_docs"),
    (b'{"query": "x", "n_docs": NaN}', 400, "n_docs"),
    (b'{"query": "x", "n_docs": 1e400}', 400, "n_docs"),
    (b'{"query": "x", "alpha": NaN}', 400, "alpha"),
    (b'{"query": "x", "fraction": Infinity}', 400, "fraction"),
    (b'{"query": "x", "mmr": -Infinity}', 400, "mmr"),
    (json.dumps({"query": "x", "domains": "books"}).encode(), 400, "unknown domain 'books'"),
    (json.dumps({"query": "x", "domains": 3}).encode(), 400, "domains"),
    (json.dumps({"query": "x", "domains": ["wiki", ""]}).encode(), 400, "domains"),
    (json.dumps({"query": "x", "nprobe": 0}).encode(), 400, "nprobe"),
    (json.dumps({"query": "x", "nprobe": "8"}).encode(), 400, "'nprobe' must be an integer"),
    (json.dumps({"query": "x", "mmr": 3}).encode(), 400, "mmr"),
    (json.dumps({"query": "x", "fraction": 1.5}).encode(), 400, "fraction"),
    (json.dumps({"query": "x", "seed": -1}).encode(), 400, "seed"),
    (json.dumps({"query": "x", "dedup": "yes"}).encode(), 400, "dedup"),
    (json.dumps({"query": "x", "dedup": 1}).encode(), 400, "'dedup' must be true or false"),
    (json.dumps({"query": "x", "decontaminate": "too short"}).encode(), 400, "13-gram"),
    (json.dumps({"query": "x", "decontaminate": [1, 2]}).encode(), 400, "'decontaminate' must be a string or a list of strings"),
    (json.dumps({"query": "x", "rerank": "fancy"}).encode(), 400, "rerank"),
    (json.dumps({"query": "x", "mode": "fuzzy"}).encode(), 400, "mode must be one of dense, sparse, hybrid"),
    (json.dumps({"query": "x", "mode": "sparse", "rerank": "exact"}).encode(), 400, "rerank exact refines dense scores"),
    (json.dumps({"query": "x", "alpha": 1.5}).encode(), 400, "alpha"),
    (json.dumps({"query": "x", "alpha": "half"}).encode(), 400, "'alpha' must be a number"),
    (json.dumps({"query": "x", "fusion": "max"}).encode(), 400, "fusion must be one of convex, rrf"),
    (json.dumps({"query": "x", "fusion": None}).encode(), 400, "fusion"),
    (json.dumps({"query": ["x"] * 1000}).encode(), 400, "at most"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "not valid JSON"),
    (b'{"query": "x", "extra": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", 400, "not valid JSON"),
    (b"", 400, "body is empty"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_requests_get_4xx_with_a_message(server: Client, body: bytes, status: int, message: str) -> None:
    got, answer = server.search(body)
    assert got == status and message in answer["error"] and "\n" not in answer["error"]


def test_unknown_fields_of_any_shape_are_ignored(server: Client) -> None:
    status, body = server.search({"query": "spod", "n_docs": 1, "a": {"b": [None, 1.5, {"c": "d"}]}, "z": None})
    assert status == 200 and body["ignored_fields"] == ["a", "z"]


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
    for method, path in (("GET", "/search"), ("PUT", "/search"), ("DELETE", "/search"), ("PATCH", "/search"), ("OPTIONS", "/search"),
                         ("POST", "/health"), ("POST", "/stats"), ("DELETE", "/")):
        status, body = server.request(method, path, b"{}")
        assert status == 405 and f"method {method} is not allowed" in body["error"], (method, path)
    for path in ("/nowhere", "/search/x", "/static/../datastore.json", "/static/nothing.js", "/passages/99999999/context"):
        status, body = server.request("GET", path)
        assert status == 404 and body["error"], path
    assert server.request("GET", "/passages/abc/context") == (400, {"error": "'passage_id': Input should be a valid integer, "
                                                                           "unable to parse string as an integer, got 'abc'"})
    for path in ("/passages/-1/context", "/passages/" + "9" * 30 + "/context"):
        status, body = server.request("GET", path)
        assert status == 400 and "'passage_id': Input should be" in body["error"], path
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:  # no Content-Length: an empty body (RFC 9112)
        s.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = read_until_closed(s)
        assert reply.startswith(b"HTTP/1.1 400") and b"body is empty" in reply
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:  # over the limit: refused before the body is sent
        s.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n")
        assert s.recv(12) == b"HTTP/1.1 413"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:  # chunked: refused once past the limit
        s.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"a" * 65536
        with contextlib.suppress(OSError):  # the server may stop reading once it has answered
            for _ in range(32):
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            s.sendall(b"0\r\n\r\n")
        assert s.recv(12) == b"HTTP/1.1 413"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:  # malformed request line: uvicorn's own 400
        s.sendall(b"GET /search HTTP/1.1 extra\r\n\r\n")
        assert read_until_closed(s).startswith(b"HTTP/1.1 400")
    status, _, _ = server.raw("GET", "/" + "x" * 70_000)  # request line over the parser's limit: uvicorn's plain-text 400
    assert 400 <= status < 500
    status, body = server.search({"query": "what is a kludge", "n_docs": 2})
    assert status == 200 and len(body["results"]["IDs"][0]) == 2
    status, stats = server.request("GET", "/stats")
    assert status == 200 and stats["server"]["client_errors"] >= 10 and stats["server"]["server_errors"] == 0


def test_stats_summarises_the_catalog(server: Client, example_datastore: Path) -> None:
    server.search({"query": "spod", "n_docs": 1})
    status, stats = server.request("GET", "/stats")
    catalog = json.loads((example_datastore / "datastore.json").read_text())
    assert status == 200
    assert stats["name"] == catalog["name"] and stats["passages"] == sum(s["count"] for s in catalog["shards"])
    assert stats["domains"] == catalog["domains"] and stats["embedder"]["model"] == catalog["embedder"]["model"]
    assert [s["name"] for s in stats["shards"]] == [s["name"] for s in catalog["shards"]]
    assert all(s["status"] == "ok" for s in stats["shards"])
    assert stats["dropped"] == catalog["build"]["dropped"]
    assert stats["server"]["requests"] >= 1 and stats["server"]["latency_ms"]["p50"] > 0


def test_context_gives_the_neighbours_of_the_same_document(server: Client, example_datastore: Path) -> None:
    ds = massiveds.open(example_datastore)
    hit = ds.search("what is a kludge", k=1, continuation=True)[0]
    status, ctx = server.request("GET", f"/passages/{hit['passage_id']}/context")
    assert status == 200 and ctx["passage"]["text"] == hit["text"]
    assert ctx["next"] == hit["continuation"]
    first = ds.passages([0])[0]  # the first passage of the datastore has no previous one
    status, ctx = server.request("GET", "/passages/0/context")
    assert status == 200 and ctx["previous"] is None and ctx["passage"]["doc_id"] == first["doc_id"]
    nxt = ds.passages([1])[0]
    assert ctx["next"] == (nxt if nxt["doc_id"] == first["doc_id"] else None)


def test_inspect_and_its_plot(server: Client, example_datastore: Path) -> None:
    status, inspect = server.request("GET", "/inspect")
    assert status == 200 and inspect["name"] == "jargon-example"
    on_disk = sum((example_datastore / "shards" / "wiki-00000" / f).stat().st_size for f in ("passages.arrow", "index.faiss"))
    shard = next(s for s in inspect["shards"] if s["name"] == "wiki-00000")
    assert shard["bytes"]["passages"] + shard["bytes"]["index"] == on_disk
    status, headers, page = server.raw("GET", "/inspect/plot")
    assert status == 200 and headers["content-type"].startswith("text/html") and b"tokens per domain" in page


def test_the_page_and_docs_are_served_from_the_package(server: Client) -> None:
    for path, kind in (("/", "text/html"), ("/static/app.js", "javascript"), ("/static/app.css", "text/css"), ("/docs", "text/html"),
                       ("/docs-assets/swagger-ui-bundle.js", "javascript"), ("/docs-assets/swagger-ui.css", "text/css")):
        status, headers, data = server.raw("GET", path)
        assert status == 200 and kind in headers["content-type"] and data, path
        if path in ("/", "/docs"):  # nothing from a CDN: every script and style is this server's
            assert b"src=\"http" not in data and b"href=\"http" not in data, path


def schema_errors(value: Any, schema: dict[str, Any], spec: dict[str, Any], where: str = "$") -> list[str]:
    """Where ``value`` does not match the JSON-schema subset OpenAPI models use ($ref, anyOf, type, properties, required, items, enum)."""
    if "$ref" in schema:
        return schema_errors(value, spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]], spec, where)
    if "anyOf" in schema:
        tries = [schema_errors(value, s, spec, where) for s in schema["anyOf"]]
        return [] if any(not t for t in tries) else [f"{where}: matches no choice ({tries})"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} not in {schema['enum']}"]
    kinds = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float), "boolean": bool, "null": type(None)}
    kind = schema.get("type")
    if kind is not None and (not isinstance(value, kinds[kind]) or (kind in ("integer", "number") and isinstance(value, bool))):
        return [f"{where}: {value!r} is not {kind}"]
    errors = [f"{where}: no {name}" for name in schema.get("required", []) if name not in value]
    for name, sub in schema.get("properties", {}).items():
        if isinstance(value, dict) and name in value:
            errors += schema_errors(value[name], sub, spec, f"{where}.{name}")
    if kind == "array" and "items" in schema:
        errors += [e for i, v in enumerate(value) for e in schema_errors(v, schema["items"], spec, f"{where}[{i}]")]
    return errors


def test_openapi_lists_every_option_with_its_type_and_default(server: Client) -> None:
    from massiveds.serve.models import OPTION_FIELDS
    from massiveds.store.search import SearchOptions

    status, spec = server.request("GET", "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    assert {"/search", "/health", "/stats", "/passages/{passage_id}/context", "/inspect", "/inspect/plot"} <= set(spec["paths"])
    request = spec["components"]["schemas"]["SearchRequest"]
    assert request["required"] == ["query"] and request["properties"]["n_docs"]["default"] == 10
    defaults = {f.name: f.default for f in dataclasses.fields(SearchOptions)}
    json_type = {int: "integer", float: "number", bool: "boolean", str: "string"}
    for name in OPTION_FIELDS:
        prop = request["properties"][name]
        assert prop["description"], name
        expected_default = None if isinstance(defaults[name], tuple) else defaults[name]
        assert prop["default"] == expected_default, name
        types = {s.get("type") for s in prop.get("anyOf", [prop])}
        hint = SearchOptions.fields()[name]
        declared = {json_type[t] for t in (*(hint.__args__ if hasattr(hint, "__args__") else ()), hint) if t in json_type}
        assert declared <= types | ({"string"} if "enum" in str(prop) else set()), (name, prop)
    assert spec["paths"]["/search"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/SearchRequest")
    mode = request["properties"]["mode"]["anyOf"][0]
    assert mode["enum"] == ["dense", "sparse", "hybrid"]


def test_a_client_made_from_the_schema_alone_can_search(server: Client) -> None:
    """Read /openapi.json as a generated client would: the operation, its request body (every field at its default) and its reply."""
    _, spec = server.request("GET", "/openapi.json")
    path, operation = next((p, ops["post"]) for p, ops in spec["paths"].items() if "post" in ops)
    body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    request_schema = spec["components"]["schemas"][body_schema["$ref"].rsplit("/", 1)[-1]]
    payload = {name: prop["default"] for name, prop in request_schema["properties"].items() if "default" in prop}
    for name in request_schema["required"]:
        payload[name] = "what is a kludge" if "string" in json.dumps(request_schema["properties"][name]) else None
    assert schema_errors(payload, body_schema, spec) == []
    status, answer = server.request("POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    assert status == 200 and len(answer["results"]["IDs"][0]) == payload["n_docs"]
    assert schema_errors(answer, operation["responses"]["200"]["content"]["application/json"]["schema"], spec) == []
    status, bad = server.search({"query": "x", "n_docs": 0})
    assert schema_errors(bad, operation["responses"]["400"]["content"]["application/json"]["schema"], spec) == []


def test_a_full_queue_answers_503(example_datastore: Path) -> None:
    """With ``max_queue`` searches waiting, the next request is refused at once instead of waiting behind them."""
    from massiveds.serve.engine import Batcher, Counters, QueueFull, ServeConfig
    from massiveds.store.search import SearchOptions

    ds = massiveds.open(example_datastore)
    gate, searching = threading.Event(), threading.Event()
    search_batch = ds.search_batch

    def held(queries: list[str], options: Any) -> Any:
        searching.set()
        gate.wait(60)
        return search_batch(queries, options)

    ds.search_batch = held  # type: ignore[method-assign]
    counters = Counters()
    batcher = Batcher(ds, ServeConfig(max_queue=2, batch_wait_s=0), counters)
    options = SearchOptions.create(k=2)
    try:
        first = batcher.submit(["spod"], options)
        assert searching.wait(30)  # the search thread holds the first one
        waiting = [batcher.submit(["black art"], options), batcher.submit(["bit rot"], options)]
        with pytest.raises(QueueFull, match="2 searches are queued"):
            batcher.submit(["kludge"], options)
        gate.set()
        assert [len(f.result(60).hits[0]) for f in (first, *waiting)] == [2, 2, 2]
        assert counters.summary()["rejected_busy"] == 1
        assert len(batcher.submit(["kludge"], options).result(60).hits[0]) == 2  # room again
    finally:
        gate.set()
        batcher.close()


def test_a_burst_of_connections_is_queued_then_answered(example_datastore: Path) -> None:
    """64 clients connect at once before the server accepts any: the kernel must queue them all, not reset them."""
    import uvicorn

    from massiveds.serve.app import create_app
    from massiveds.serve.engine import ServeConfig
    from massiveds.serve.run import bind

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(massiveds.open(example_datastore), ServeConfig()), log_level="warning"))
    serving = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    socks: list[socket.socket] = []
    try:
        for _ in range(64):  # nothing accepts yet: each connection waits in the listen queue (with 5 places, the 7th times out)
            socks.append(socket.create_connection(sock.getsockname(), timeout=5))
            socks[-1].sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        serving.start()
        for s in socks:
            s.settimeout(60)
        assert [s.recv(12) for s in socks] == [b"HTTP/1.1 200"] * 64
    finally:
        for s in socks:
            s.close()
        server.should_exit = True
        serving.join(30)
        sock.close()


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def worker_answering_while(client: Client, stopped: int) -> int:
    """The pid of the worker that answers /stats while worker ``stopped`` is frozen (SIGSTOP): it cannot accept, so another must."""
    os.kill(stopped, signal.SIGSTOP)
    try:
        status, body = Client(client.port, timeout=30).request("GET", "/stats")
    except TimeoutError:
        raise AssertionError(f"no worker but {stopped} accepts connections: none answered in 30 s while it was stopped") from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stopped, signal.SIGCONT)
    assert status == 200 and alive(stopped), f"worker {stopped} was replaced while stopped: the answer proves nothing"
    return int(body["server"]["pid"])


def test_several_workers_share_the_port_and_stop_on_sigterm(example_datastore: Path, tmp_path: Path) -> None:
    """Each of two workers accepts on the shared port: with the one that answered frozen, the other answers, and back."""
    with running_server(example_datastore, tmp_path / "stderr.log", "--workers", "2") as client:
        assert "2 workers" in (tmp_path / "stderr.log").read_text()
        answers = [client.search({"query": q, "n_docs": 3}) for q in ("spod", "black art", "bit rot", "kludge")]
        assert [(status, len(body["results"]["IDs"][0])) for status, body in answers] == [(200, 3)] * 4
        first = int(client.request("GET", "/stats")[1]["server"]["pid"])
        second = worker_answering_while(client, first)
        assert second != first and worker_answering_while(client, second) == first
    assert not alive(first) and not alive(second)  # the workers ended with the server


def test_serve_strict_refuses_a_broken_datastore(example_datastore: Path, tmp_path: Path) -> None:
    root = linked_copy(example_datastore, tmp_path / "broken")
    (root / "shards" / "wiki-00002" / "index.faiss").unlink()
    for workers in ("1", "2"):
        proc = cli("serve", str(root), "--port", str(free_port()), "--strict", "--workers", workers, check=False, timeout=120)
        assert proc.returncode == 2 and "wiki-00002" in proc.stderr and "index.faiss is missing" in proc.stderr
        assert "Traceback" not in proc.stderr
