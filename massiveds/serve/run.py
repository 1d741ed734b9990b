"""Listening and running: the socket bound once, uvicorn in this process or in worker processes sharing it, and shutdown.

With ``workers`` > 1 each worker is a fresh process (uvicorn's supervisor) that opens the datastore
itself (``from_environment``): the shard indexes are memory-mapped, so the workers share their pages,
and each has its own embedder and search thread. SIGTERM or SIGINT stops accepting, lets the requests
in flight finish (at most ``GRACE_S``), stops the search thread(s) and exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from dataclasses import asdict

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from massiveds.core.errors import MassiveDSError
from massiveds.serve.app import create_app
from massiveds.serve.engine import ServeConfig, open_for_serving

#: Connections the kernel queues until accepted (capped by net.core.somaxconn): a burst of 64 clients must not be reset.
BACKLOG = 1024
#: Seconds the requests in flight get to finish after SIGTERM.
GRACE_S = 30
#: How a worker process learns what to serve: JSON of the datastore path, ``strict`` and the ``ServeConfig``.
ENV = "MASSIVEDS_SERVE"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0 picks a free one) with a ``BACKLOG``-deep queue."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(BACKLOG)
    except OSError as exc:
        raise MassiveDSError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(app: FastAPI | str, workers: int, access_log: bool) -> uvicorn.Config:
    return uvicorn.Config(app, factory=isinstance(app, str), workers=workers, http="httptools", access_log=access_log,
                          log_level="info" if access_log else "warning", timeout_graceful_shutdown=GRACE_S, lifespan="on")


def serve(app: FastAPI, sock: socket.socket, access_log: bool = False) -> None:
    """Run ``app`` on ``sock`` in this process until SIGTERM or SIGINT, then return (the command exits 0)."""
    for sig in (signal.SIGTERM, signal.SIGINT):  # uvicorn raises the signal again once it has shut down: let that be a no-op
        signal.signal(sig, _stopped)
    uvicorn.Server(_uvicorn_config(app, 1, access_log)).run(sockets=[sock])


def _stopped(signum: int, frame: object) -> None:
    """The signal that stopped the server, raised again by uvicorn after its graceful shutdown: nothing left to do."""


def serve_workers(datastore: str, strict: bool, config: ServeConfig, sock: socket.socket, workers: int, access_log: bool = False) -> None:
    """Run ``workers`` processes on ``sock``, each serving its own ``from_environment`` app, until SIGTERM or SIGINT."""
    os.environ[ENV] = json.dumps({"datastore": datastore, "strict": strict, "config": asdict(config)})
    config_ = _uvicorn_config(f"{__name__}:from_environment", workers, access_log)
    Multiprocess(config_, sockets=[sock]).run()


def from_environment() -> FastAPI:
    """The app of one worker process: the datastore and limits named in ``ENV``, opened and warmed up here."""
    spec = json.loads(os.environ[ENV])
    return create_app(open_for_serving(spec["datastore"], strict=spec["strict"]), ServeConfig(**spec["config"]))
