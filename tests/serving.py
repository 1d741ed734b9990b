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

    def __init__(self, port: int, timeout: float = 120) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.timeout = timeout

    def raw(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
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


#: Seconds an in-process server may take to start, or to stop once told to: it loads nothing, so this only catches a hang.
THREAD_SERVER_S = 60


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
    settled = threading.Event()  # set once the server has started, or its thread has ended without starting

    async def startup(sockets: list[socket.socket] | None = None) -> None:
        await uvicorn.Server.startup(server, sockets=sockets)
        settled.set()

    def run() -> None:
        try:
            server.run(sockets=[sock])
        finally:
            settled.set()

    server.startup = startup  # type: ignore[method-assign]
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert settled.wait(THREAD_SERVER_S), f"the server thread neither started nor ended in {THREAD_SERVER_S} s"
        assert server.started, "the server thread ended without starting (its exception is reported with the test)"
        yield Client(sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(THREAD_SERVER_S)
        sock.close()
        assert not thread.is_alive(), f"the server thread did not stop within {THREAD_SERVER_S} s of should_exit"
