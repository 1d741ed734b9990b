"""Fetch one remote file (http(s), s3, hf, any fsspec URL) into a local cache: ranged, retried, resumed, verified.

A file is written to ``.<name>.partial`` beside its final path and renamed only when it is complete
and (when a digest is given) verified, so a cached file is always whole. A partial file left by a
killed run is continued from its last byte when the backend can read from an offset (HTTP Range,
S3/HF ranged GETs), else restarted. Transient failures (dropped connections, timeouts, 5xx, 429)
are retried with exponential backoff; permanent ones (404, 403, bad URL) fail at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import sha256_file, write_json

#: Bytes read per request (one HTTP Range / S3 ranged GET each); a failed request loses at most this much.
CHUNK = 16 << 20
#: HTTP statuses worth retrying: timeouts, throttling and server errors.
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Exception class names (anywhere in the chain) that mean the connection, not the request, failed.
_TRANSIENT_NAMES = re.compile(r"Connection|Timeout|Payload|Disconnected|IncompleteRead|ProtocolError|ReadError|EndpointConnection")
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


class FetchError(MassiveDSError):
    """A remote file that could not be fetched (after retries, or at once for a permanent error)."""


class ChecksumMismatch(FetchError):
    """A fetched file whose sha256 is not the one the manifest pins."""


class IncompleteTransfer(OSError):
    """The transfer ended before the size the server announced (retried, resumed)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: attempt ``n`` waits ``base * factor**(n-1)`` seconds (at most ``max_delay``), jittered."""

    attempts: int = 6
    base: float = 0.5
    factor: float = 2.0
    max_delay: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.max_delay, self.base * self.factor ** (attempt - 1)) * random.uniform(0.5, 1.0)


DEFAULT_POLICY = RetryPolicy()


@dataclass(frozen=True)
class FetchResult:
    """What one fetch did: where the file is, its size and digest, and whether bytes moved."""

    uri: str
    path: str
    bytes: int
    sha256: str
    fetched: bool
    attempts: int
    resumed_from: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (for work-unit results)."""
        return asdict(self)


def is_remote(uri: str) -> bool:
    """True for a URL with a scheme (``s3://``, ``https://``, ``hf://``...), false for a path or ``file://``."""
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    return bool(scheme) and scheme != "file"


def has_glob(uri: str) -> bool:
    """True if the URI's path holds glob characters (``?`` counts only outside http(s), where it starts a query)."""
    scheme, _, rest = uri.partition("://")
    magic = "*[" if scheme in ("http", "https") else "*?["
    return any(c in rest for c in magic)


def cache_relpath(uri: str) -> str:
    """Where a remote file lives inside the download cache: ``<scheme>/<host>/<path>`` (a query adds a hash)."""
    parts = urlsplit(uri)
    segments = [s for s in parts.path.split("/") if s not in ("", ".", "..")]
    host = re.sub(r"[^A-Za-z0-9._-]", "_", parts.netloc) or "_"
    name = "/".join(re.sub(r"[^A-Za-z0-9._@=+-]", "_", s) for s in segments) or "index"
    if parts.query:  # the hash goes before the suffixes, which name the compression and format
        head, _, last = name.rpartition("/")
        stem, dot, suffixes = last.partition(".")
        last = f"{stem}-{hashlib.sha256(parts.query.encode()).hexdigest()[:12]}{dot}{suffixes}"
        name = f"{head}/{last}" if head else last
    return f"{parts.scheme}/{host}/{name}"


def _status(exc: BaseException) -> int | None:
    for attr in ("status", "status_code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 100 <= value < 600:
            return value
    response = getattr(exc, "response", None)
    value = getattr(response, "status_code", None) if response is not None else None
    if isinstance(value, int):
        return value
    if isinstance(response, dict):  # botocore ClientError
        code = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code if isinstance(code, int) else None
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_transient(exc: BaseException) -> bool:
    """Whether a failure is worth retrying: an HTTP status decides when one is known, else the kind of error."""
    chain = list(_chain(exc))
    for e in chain:
        status = _status(e)
        if status is not None:
            return status in TRANSIENT_STATUS
    for e in chain:
        if isinstance(e, IncompleteTransfer | ConnectionError | TimeoutError):
            return True
        if any(_TRANSIENT_NAMES.search(k.__name__) for k in type(e).__mro__ if k not in (Exception, BaseException, object)):
            return True
    return not isinstance(exc, _PERMANENT) and isinstance(exc, OSError)


def _connection_failure(exc: BaseException) -> BaseException | None:
    """The error under ``exc`` that says the connection failed (refused, no such host, timed out), if any."""
    for e in list(_chain(exc))[1:]:
        if isinstance(e, ConnectionError | TimeoutError) or any("Connect" in k.__name__ for k in type(e).__mro__):
            return e
    return None


def describe(exc: BaseException) -> str:
    """One line for a failure: its type, its HTTP status when known, and its message."""
    status = next((s for e in _chain(exc) if (s := _status(e)) is not None), None)
    if status is None and (cause := _connection_failure(exc)) is not None:  # fsspec reports it as "not found"
        return f"cannot connect ({type(cause).__name__}: {' '.join(str(cause).split())[:300]})"
    if isinstance(exc, FileNotFoundError):
        return f"not found{f' (HTTP {status})' if status else ''}"
    if isinstance(exc, PermissionError):
        return f"access denied{f' (HTTP {status})' if status else ''}"
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}{f' (HTTP {status})' if status else ''}: {text}" if text else type(exc).__name__


def partial_path(dest: Path) -> Path:
    """The stable temporary name a download is written under (kept across runs so it can be resumed)."""
    return dest.with_name(f".{dest.name}.partial")


def record_path(dest: Path) -> Path:
    """The sidecar recording a cached file's origin, size and sha256 (so a hit needs no re-hash)."""
    return dest.with_name(f".{dest.name}.fetch.json")


def cached(dest: Path, sha256: str | None) -> dict[str, Any] | None:
    """The record of a complete cached file that satisfies ``sha256`` (when given), else None."""
    rec_path = record_path(dest)
    if not dest.is_file() or not rec_path.is_file():
        return None
    rec = json.loads(rec_path.read_text())
    if rec.get("bytes") != dest.stat().st_size:
        return None
    if sha256 is not None and rec.get("sha256") != sha256.lower():
        return None
    return dict(rec)


def quarantine(path: Path, folder: Path, name: str) -> Path:
    """Move a bad file into ``folder`` under ``name`` (made unique), and return where it went."""
    target = folder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target = target.with_name(f"{target.name}.{int(time.time() * 1000)}")
    shutil.move(str(path), target)
    return target


def _open(fs: Any, path: str, chunk: int, stream: bool) -> Any:
    if stream:
        return fs.open(path, "rb", block_size=0)
    try:
        return fs.open(path, "rb", block_size=chunk, cache_type="none")
    except TypeError:  # a backend without cache_type
        return fs.open(path, "rb", block_size=chunk)


def _transfer(fs: Any, path: str, partial: Path, chunk: int, stream: bool, on_bytes: Callable[[int], None] | None) -> int:
    """Copy the remote file into ``partial``, continuing from its current length when possible; returns the start offset."""
    offset = partial.stat().st_size if partial.exists() else 0
    with _open(fs, path, chunk, stream) as src:
        size = getattr(src, "size", None)
        if offset and (stream or size is None or offset > size):
            offset = 0  # cannot continue this one: start over
        if offset:
            src.seek(offset)
        with open(partial, "r+b" if partial.exists() else "wb") as out:
            out.seek(offset)
            out.truncate()
            while block := src.read(chunk):
                out.write(block)
                if on_bytes is not None:
                    on_bytes(len(block))
        got = partial.stat().st_size
        if size is not None and got != size:
            raise IncompleteTransfer(f"got {got} of {size} bytes")
    return offset


def _no_ranges(exc: BaseException) -> bool:
    return isinstance(exc, ValueError) and "range requests" in str(exc)


def fetch(
    uri: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    quarantine_dir: str | Path | None = None,
    storage_options: dict[str, Any] | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
    chunk: int = CHUNK,
    on_bytes: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    record: bool = True,
) -> FetchResult:
    """Download ``uri`` to ``dest`` unless a verified copy is already there; raise FetchError with one line on failure.

    ``record=False`` writes no ``.<name>.fetch.json`` sidecar (the caller keeps its own record) and
    so never takes an existing ``dest`` as cached.
    """
    import fsspec

    dest = Path(dest)
    want = sha256.lower() if sha256 else None
    if record and (rec := cached(dest, want)) is not None:
        return FetchResult(uri, str(dest), rec["bytes"], rec["sha256"], False, 0, 0)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in (dest, record_path(dest)):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    partial = partial_path(dest)
    try:
        fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    except (ValueError, ImportError) as exc:
        raise FetchError(f"{uri}: cannot open this URL ({describe(exc)})") from None
    attempt, stream, resumed_from = 0, False, 0
    while True:
        attempt += 1
        try:
            resumed_from = _transfer(fs, path, partial, chunk, stream, on_bytes)
            break
        except Exception as exc:
            if _no_ranges(exc) and not stream:  # the server ignores Range: read it as one stream from byte 0
                stream, attempt = True, attempt - 1
                partial.unlink(missing_ok=True)
                continue
            if not is_transient(exc):
                partial.unlink(missing_ok=True)
                raise FetchError(f"{uri}: {describe(exc)} (not retried)") from None
            if attempt >= policy.attempts:
                raise FetchError(f"{uri}: gave up after {attempt} attempts: {describe(exc)}") from None
            sleep(policy.delay(attempt))
    digest = sha256_file(partial)
    if want is not None and digest != want:
        where = partial
        if quarantine_dir is not None:
            where = quarantine(partial, Path(quarantine_dir), cache_relpath(uri))
        raise ChecksumMismatch(f"{uri}: sha256 mismatch: manifest says {want}, downloaded file has {digest}; quarantined at {where}")
    size = partial.stat().st_size
    os.replace(partial, dest)
    if record:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_json(record_path(dest), {"uri": uri, "bytes": size, "sha256": digest, "fetched": when})
    return FetchResult(uri, str(dest), size, digest, True, attempt, resumed_from)


def expand(uri: str, storage_options: dict[str, Any] | None = None) -> list[tuple[str, int | None]]:
    """The remote files a URI names, sorted, with sizes when listed: a glob is expanded through fsspec, a plain URI is itself."""
    import fsspec

    if not has_glob(uri):
        return [(uri, None)]
    scheme = uri.split("://", 1)[0]
    if scheme in ("http", "https"):
        raise FetchError(f"{uri}: http(s) has no file listing, so it cannot be globbed; list the URLs one by one")
    try:
        fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
        found = fs.glob(path, detail=True)
    except Exception as exc:
        raise FetchError(f"{uri}: cannot list ({describe(exc)})") from None
    files = sorted((p, info) for p, info in found.items() if info.get("type", "file") != "directory")
    return [(fs.unstrip_protocol(p) if "://" not in p else p, info.get("size")) for p, info in files]
