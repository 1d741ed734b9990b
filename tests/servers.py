"""Network servers the I/O tests start on 127.0.0.1: a static HTTP file server with faults, and moto's S3 server."""

from __future__ import annotations

import collections
import contextlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class FileServer:
    """Serves ``files`` (path -> bytes) over HTTP with Range support, counting every request, with switchable faults."""

    files: dict[str, bytes]
    ranges: bool = True
    drop_once: set[str] = field(default_factory=set)
    fail_next: dict[str, collections.deque[int]] = field(default_factory=dict)
    hits: collections.Counter[str] = field(default_factory=collections.Counter)
    gets: list[tuple[str, str | None]] = field(default_factory=list)
    url: str = ""

    def total_hits(self) -> int:
        """Requests of any method to any path."""
        return sum(self.hits.values())


def _handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _serve(self, body: bool) -> None:
            path = self.path.split("?", 1)[0]
            state.hits[path] += 1
            if body:
                state.gets.append((path, self.headers.get("Range")))
            codes = state.fail_next.get(path)
            if codes:
                self.send_error(codes.popleft())
                return
            data = state.files.get(path)
            if data is None:
                self.send_error(404)
                return
            start, end, status = 0, len(data), 200
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
            if m and state.ranges:
                start = int(m.group(1))
                end = min(len(data), int(m.group(2)) + 1) if m.group(2) else len(data)
                status = 206
            payload = data[start:end]
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Accept-Ranges", "bytes" if state.ranges else "none")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
            self.end_headers()
            if not body:
                return
            if path in state.drop_once:
                state.drop_once.discard(path)
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._serve(True)

        def do_HEAD(self) -> None:
            self._serve(False)

    return Handler


@contextlib.contextmanager
def file_server(files: dict[str, bytes], **faults: Any) -> Iterator[FileServer]:
    """A FileServer running in a thread on 127.0.0.1 (a free port) for the duration of the block."""
    state = FileServer(files=files, **faults)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def s3_server() -> Iterator[dict[str, Any]]:
    """moto's S3 API server on 127.0.0.1; yields the s3fs storage options that reach it."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield {"endpoint_url": f"http://{host}:{port}", "key": "testing", "secret": "testing",
               "client_kwargs": {"region_name": "eu-west-1"}}
    finally:
        server.stop()
