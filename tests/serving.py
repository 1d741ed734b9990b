"""`massiveds serve` started for a test: a free port, raw HTTP requests, the server up and healthy, stopped with SIGTERM."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import massiveds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Client:
    """Raw HTTP requests to the server (http.client: full control over headers and bodies)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def raw(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        status, _, data = self.raw(method, path, body, headers)
        return status, json.loads(data) if data else None

    def search(self, payload: Any) -> tuple[int, Any]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.request("POST", "/search", body, {"Content-Type": "application/json"})


@contextlib.contextmanager
def running_server(datastore: Path, log: Path, *extra: str) -> Iterator[Client]:
    """``massiveds serve datastore`` in a subprocess on a free port, up and healthy; stopped (SIGTERM, exit 0) after."""
    port = free_port()
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "massiveds.cli", "serve", str(datastore), "--port", str(port), "--batch-wait-ms", "50", *extra],
            stdout=subprocess.DEVNULL, stderr=err, env=os.environ | {"COLUMNS": "200"},
        )
    client = Client(port)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, f"server exited early:\n{log.read_text()}"
            with contextlib.suppress(OSError):
                status, body = client.request("GET", "/health")
                if status == 200:
                    break
            assert time.monotonic() < deadline, f"server not up after 300 s:\n{log.read_text()}"
            time.sleep(0.5)
        assert body["status"] == "ok" and body["passages"] == massiveds.open(datastore).num_passages
        assert f"http://127.0.0.1:{port}" in log.read_text()
        yield client
    finally:
        proc.terminate()
        try:
            assert proc.wait(timeout=40) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()


@contextlib.contextmanager
def serving_in_thread(datastore: Path) -> Iterator[Client]:
    """The app over ``datastore`` on uvicorn in a thread of this process (a free port), for the duration of the block."""
    import threading

    import uvicorn

    from massiveds.serve.app import create_app
    from massiveds.serve.engine import ServeConfig, open_for_serving
    from massiveds.serve.run import bind

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(open_for_serving(datastore), ServeConfig()), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        yield Client(sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
