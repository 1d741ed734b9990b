"""Publish a datastore to any fsspec destination and pull it back: per-file sha256, parallel, resumable, catalog last.

Publishing writes, in this order: every datastore file (in parallel threads; ``build/`` only with
``include_build``), then ``checksums.json`` (size and sha256 of every file, ``datastore.json``
included), then ``datastore.json``. A destination without ``datastore.json`` is not a datastore, so
a half-published one is never taken for complete; re-publishing a changed datastore removes the old
``datastore.json`` first. A file already at the destination with the right size and sha256 is
skipped, so an interrupted publish resumes where it stopped.

A published datastore is self-contained: the shards a merged datastore references in place
(``massiveds merge`` without ``--copy``) are uploaded as its own ``shards/<name>/`` files, and the
published ``datastore.json`` drops their ``folder`` (keeping their ``id_offset``, so ids are the
same). ``pull`` refuses a catalog that references folders outside the datastore.

Where the destination's sha256 comes from: a local folder is hashed; on S3 the digest is stored as
object metadata (``x-amz-meta-sha256``) at upload; on the Hub it is the LFS sha256; otherwise the
object is read back and hashed.

Large files: a file larger than the part size is stored as ``<file>.part-00000``, ``-00001``... and
reassembled (and verified whole) by ``pull``. The part size is ``--part-size`` when given, else
20 GB for ``hf://`` (the Hub's recommended maximum file size; its hard limit is 50 GB) and none for
local folders and object stores (S3 and GCS take objects up to 5 TB through multipart uploads,
which s3fs/gcsfs do by themselves).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import os
import posixpath
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from massiveds.core.catalog import (
    CHECKSUMS,
    Catalog,
    catalog_files,
    catalog_text,
    check_agreement,
    check_paths,
    open_catalog,
    parse_catalog,
    write_catalog_bytes,
)
from massiveds.core.errors import DatastoreError, MassiveDSError
from massiveds.core.layout import CATALOG, ShardFiles, atomic_path, sha256_file, write_json
from massiveds.core.safe_paths import no_symlink, safe_join
from massiveds.core.writer_lock import writer_lock
from massiveds.ingest.sources.fetch import DEFAULT_POLICY, FetchError, RetryPolicy, describe, fetch, is_transient
from massiveds.ops.verify import present_files, verify

#: Part size per destination scheme (bytes); schemes not listed take files whole.
PART_SIZE = {"hf": 20 * 10**9}
PART = "{rel}.part-{i:05d}"
READ_BLOCK = 16 << 20

Progress = Callable[[int], None]
T = TypeVar("T")


@dataclass(frozen=True)
class Piece:
    """One object to upload or download: a whole file, or one part of it (``offset``, ``length``)."""

    rel: str
    remote: str
    offset: int
    length: int
    sha256: str


@dataclass
class TransferReport:
    """What a publish or pull did."""

    files: int = 0
    bytes: int = 0
    transferred: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_transferred: int = 0
    parts: int = 0
    seconds: float = 0.0


def _hash_range(path: Path, offset: int, length: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        left = length
        while left and (block := f.read(min(READ_BLOCK, left))):
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def _entry(path: Path, part_size: int | None) -> dict[str, Any]:
    size = path.stat().st_size
    rec: dict[str, Any] = {"bytes": size, "sha256": sha256_file(path)}
    if part_size and size > part_size:
        rec["parts"] = [{"bytes": min(part_size, size - o), "sha256": _hash_range(path, o, min(part_size, size - o))}
                        for o in range(0, size, part_size)]
    return rec


def self_contained(catalog: Catalog) -> Catalog:
    """The catalog as published: shards merged in place lose their ``folder`` (their files are published under ``shards/<name>/``)."""
    return catalog.but(shards=[s.but(drop=["folder"]) for s in catalog.shards])


def published_catalog(root: Path) -> tuple[bytes, Catalog]:
    """The ``datastore.json`` to publish, as bytes and as read: the local one, without the ``folder`` of shards merged in place."""
    raw = (root / CATALOG).read_bytes()
    catalog = open_catalog(root)
    if all(s.folder is None for s in catalog.shards):
        return raw, catalog
    published = self_contained(catalog)
    return catalog_text(published).encode(), published


def published_files(root: Path, include_build: bool = False) -> dict[str, Path]:
    """Every file to publish but the catalog and ``checksums.json``, by its path at the destination, with its local path.

    The files of shards merged in place (all but their source's ``shard.json``) are published under ``shards/<name>/``,
    so that the published datastore is self-contained.
    """
    files = {rel: no_symlink(root, rel, "file to publish") for rel in present_files(root, include_build) if rel not in (CATALOG, CHECKSUMS)}
    for shard in open_catalog(root).shards:
        if shard.folder is not None:
            folder = root / shard.folder_rel()
            files |= {f"shards/{shard.name}/{p.name}": no_symlink(folder, p.name, "file to publish") for p in sorted(folder.iterdir())
                      if p.is_file() and p.name != ShardFiles.INFO and not p.name.startswith(".")}
    return files


def checksums(root: str | Path, *, include_build: bool = False, part_size: int | None = None, workers: int = 4) -> dict[str, Any]:
    """The ``checksums.json`` of a datastore as published: size and sha256 of every file; refuses a datastore that fails ``verify``."""
    root = Path(root)
    problems = verify(root, hashes=False)
    if problems:
        raise DatastoreError(f"{root}: {len(problems)} problem(s), e.g. {problems[0]}; run massiveds verify {root}")
    local = published_files(root, include_build)
    with cf.ThreadPoolExecutor(max(1, workers)) as pool:
        files = dict(zip(local, pool.map(lambda r: _entry(local[r], part_size), local), strict=True))
    raw, catalog = published_catalog(root)
    for e in catalog_files(catalog):
        if files[e.rel]["sha256"] != e.sha256:
            raise DatastoreError(f"{local[e.rel]}: sha256 differs from the catalog (altered); run massiveds verify {root}")
    files[CATALOG] = {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    return {"format_version": 1, "name": catalog.name, "part_size": part_size, "files": dict(sorted(files.items()))}


def _pieces(listing: dict[str, Any], base: str) -> Iterator[Piece]:
    for rel, rec in listing["files"].items():
        if rel == CATALOG:
            continue
        if "parts" not in rec:
            yield Piece(rel, f"{base}/{rel}", 0, rec["bytes"], rec["sha256"])
            continue
        offset = 0
        for i, part in enumerate(rec["parts"]):
            yield Piece(rel, f"{base}/{PART.format(rel=rel, i=i)}", offset, part["bytes"], part["sha256"])
            offset += part["bytes"]


def _protocol(fs: Any) -> str:
    proto = fs.protocol
    return proto[0] if isinstance(proto, tuple | list) else str(proto)


def _remote_sha256(fs: Any, path: str) -> str | None:
    proto = _protocol(fs)
    if proto in ("s3", "s3a"):
        digest = fs.metadata(path, refresh=True).get("sha256")
        if digest:
            return str(digest)
    if proto == "hf":
        lfs = fs.info(path).get("lfs") or {}
        if lfs.get("sha256"):
            return str(lfs["sha256"])
    h = hashlib.sha256()
    with fs.open(path, "rb", block_size=READ_BLOCK) as f:
        while block := f.read(READ_BLOCK):
            h.update(block)
    return h.hexdigest()


def _already_there(fs: Any, piece: Piece) -> bool:
    try:
        info = fs.info(piece.remote)
    except FileNotFoundError:
        return False
    return info.get("size") == piece.length and _remote_sha256(fs, piece.remote) == piece.sha256


def _put(fs: Any, local: Path, piece: Piece, on_bytes: Progress | None) -> None:
    proto = _protocol(fs)
    whole = piece.offset == 0 and piece.length == local.stat().st_size
    target = f"{piece.remote}.tmp-{uuid.uuid4().hex[:12]}" if proto == "file" else piece.remote  # local: rename when complete
    if proto == "file":
        fs.makedirs(posixpath.dirname(piece.remote), exist_ok=True)
    if whole:
        extra = {"Metadata": {"sha256": piece.sha256}} if proto in ("s3", "s3a") else {}
        fs.put_file(str(local), target, **extra)
    else:
        with open(local, "rb") as src, fs.open(target, "wb") as dst:
            src.seek(piece.offset)
            left = piece.length
            while left and (block := src.read(min(READ_BLOCK, left))):
                dst.write(block)
                left -= len(block)
    if target != piece.remote:
        fs.mv(target, piece.remote)
    if on_bytes is not None:
        on_bytes(piece.length)


def _retrying(what: str, fn: Callable[[], None], policy: RetryPolicy) -> None:
    for attempt in range(1, policy.attempts + 1):
        try:
            fn()
            return
        except Exception as exc:
            if not is_transient(exc) or attempt == policy.attempts:
                raise MassiveDSError(f"{what}: {describe(exc)}") from None
            time.sleep(policy.delay(attempt))


class _Skipped(Exception):
    """An item not started because another failed first."""


def _run(items: list[T], fn: Callable[[T], bool], workers: int) -> list[tuple[T, bool]]:
    """Run ``fn`` over the items on a thread pool, starting none after the first error (then raised); results in order."""
    failed = threading.Event()

    def guarded(item: T) -> bool:
        if failed.is_set():  # a worker that is already running picks up no more items once one has failed
            raise _Skipped
        try:
            return fn(item)
        except BaseException:
            failed.set()
            raise

    with cf.ThreadPoolExecutor(max(1, workers)) as pool:
        futures = [pool.submit(guarded, p) for p in items]
        try:
            return [(p, f.result()) for p, f in zip(items, futures, strict=True)]
        except BaseException as exc:
            pool.shutdown(wait=True, cancel_futures=True)
            errors = [f.exception() for f in futures if f.done() and not f.cancelled()]
            raise next((e for e in errors if e is not None and not isinstance(e, _Skipped)), exc) from None


def part_size_for(dest: str) -> int | None:
    """The default part size of a destination (see the module docstring), None for no splitting."""
    scheme = dest.split("://", 1)[0] if "://" in dest else "file"
    return PART_SIZE.get(scheme)


def publish(
    root: str | Path,
    dest: str,
    *,
    include_build: bool = False,
    workers: int = 8,
    part_size: int | None = None,
    storage_options: dict[str, Any] | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
    on_bytes: Progress | None = None,
    on_piece: Callable[[Piece, bool], None] | None = None,
) -> TransferReport:
    """Upload the datastore at ``root`` to ``dest`` (any fsspec URL or folder), resumably, ``datastore.json`` last."""
    import fsspec

    clock = time.perf_counter()
    root = Path(root)
    part_size = part_size or part_size_for(dest)
    listing = checksums(root, include_build=include_build, part_size=part_size, workers=workers)
    local = published_files(root, include_build)
    fs, base = fsspec.core.url_to_fs(dest, **(storage_options or {}))
    base = base.rstrip("/")
    catalog_remote = f"{base}/{CATALOG}"
    if fs.exists(catalog_remote) and _remote_sha256(fs, catalog_remote) != listing["files"][CATALOG]["sha256"]:
        fs.rm(catalog_remote)  # another version is there: the destination is incomplete until we finish
    report = TransferReport(files=len(listing["files"]), bytes=sum(r["bytes"] for r in listing["files"].values()))
    pieces = list(_pieces(listing, base))
    report.parts = sum(1 for p in pieces if p.remote != f"{base}/{p.rel}")

    def upload(piece: Piece) -> bool:
        if _already_there(fs, piece):
            if on_bytes is not None:
                on_bytes(piece.length)
            moved = False
        else:
            _retrying(f"upload of {piece.rel} to {fs.unstrip_protocol(piece.remote)}",
                      lambda: _put(fs, local[piece.rel], piece, on_bytes), policy)
            moved = True
        if on_piece is not None:
            on_piece(piece, moved)
        return moved

    for piece, moved in _run(pieces, upload, workers):
        (report.transferred if moved else report.skipped).append(piece.remote.removeprefix(base + "/"))
        report.bytes_transferred += piece.length if moved else 0
    with tempfile.TemporaryDirectory(prefix="massiveds-publish-") as scratch:  # checksums.json next to last, the catalog last
        staged = Path(scratch) / CHECKSUMS
        staged.write_text(json.dumps(listing, indent=2) + "\n")
        catalog = Path(scratch) / CATALOG
        catalog.write_bytes(published_catalog(root)[0])
        for rel, path in ((CHECKSUMS, staged), (CATALOG, catalog)):
            last = Piece(rel, f"{base}/{rel}", 0, path.stat().st_size, sha256_file(path))
            _retrying(f"upload of {rel}", lambda path=path, last=last: _put(fs, path, last, None), policy)  # type: ignore[misc]
    report.seconds = time.perf_counter() - clock
    return report


def _well_formed(rec: Any) -> bool:
    return (isinstance(rec, dict) and isinstance(rec.get("bytes"), int) and isinstance(rec.get("sha256"), str)
            and isinstance(rec.get("parts", []), list) and all(_well_formed(p) for p in rec.get("parts", [])))


def _read_published(fs: Any, base: str, src: str) -> tuple[bytes, dict[str, Any]]:
    """The published catalog (raw) and ``checksums.json`` (parsed and shaped as expected), refusing anything else in one line."""
    try:
        catalog = fs.cat_file(f"{base}/{CATALOG}")
    except FileNotFoundError:
        raise DatastoreError(f"{src}: no {CATALOG}: not a datastore, or its publishing has not finished") from None
    try:
        listing = json.loads(fs.cat_file(f"{base}/{CHECKSUMS}"))
    except FileNotFoundError:
        raise DatastoreError(f"{src}: no {CHECKSUMS}: not published by massiveds publish") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatastoreError(f"{src}: {CHECKSUMS} is not JSON ({exc})") from None
    files = listing.get("files") if isinstance(listing, dict) else None
    if not isinstance(files, dict):
        raise DatastoreError(f"{src}: {CHECKSUMS} has no 'files' mapping; not published by massiveds publish")
    bad = [rel for rel, rec in files.items() if not _well_formed(rec)]
    if bad or CATALOG not in files:
        raise DatastoreError(f"{src}: {CHECKSUMS} is malformed (entry {(bad or [CATALOG])[0]!r}); not published by massiveds publish")
    own = files[CATALOG]["sha256"]
    if hashlib.sha256(catalog).hexdigest() != own:
        raise DatastoreError(f"{src}: {CATALOG} does not match {CHECKSUMS} (a publish in progress?); try again later")
    return catalog, listing


def _check_local_source(base: str, listing: dict[str, Any]) -> None:
    """A published folder on this machine holds regular files only: no symlink, whose target could be any local file."""
    folder = Path(base)
    names = [CHECKSUMS, *listing["files"]]
    names += [PART.format(rel=rel, i=i) for rel, rec in listing["files"].items() for i in range(len(rec.get("parts", [])))]
    for rel in names:
        no_symlink(folder, rel, "published file")


def pull(
    src: str,
    root: str | Path,
    *,
    workers: int = 8,
    storage_options: dict[str, Any] | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
    on_bytes: Progress | None = None,
) -> TransferReport:
    """Download the published datastore at ``src`` into ``root``, resumably, verifying every file; ``datastore.json`` last.

    Every path the published files name is checked (``massiveds.core.catalog.check_paths``) before
    anything is written; files download into ``build/pull/files/`` inside ``root`` and move into
    place once all are verified, then ``checksums.json``, then the catalog.
    """
    import fsspec

    clock = time.perf_counter()
    root = Path(root)
    fs, base = fsspec.core.url_to_fs(src, **(storage_options or {}))
    base = base.rstrip("/")
    raw_catalog, listing = _read_published(fs, base, src)
    try:
        data = json.loads(raw_catalog)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatastoreError(f"{src}: {CATALOG} is not JSON ({exc})") from None
    catalog = parse_catalog(data, f"{src}/{CATALOG}", "not a datastore catalog, or one this massiveds cannot read")
    if any(s.folder is not None for s in catalog.shards):
        raise DatastoreError(f"{src}: its {CATALOG} references shard folders outside the datastore; a published datastore is "
                             f"self-contained, so no file outside {root} is read")
    check_paths(root, catalog, listing)
    check_agreement(root, catalog, listing, complete=True)
    if _protocol(fs) == "file":
        _check_local_source(base, listing)
    with writer_lock(root, "pull"):  # after every check: a refused pull writes nothing, not even the folder
        scratch = root / "build" / "pull"
        staged = scratch / "files"
        report = TransferReport(files=len(listing["files"]), bytes=sum(r["bytes"] for r in listing["files"].values()))
        wanted = {rel: rec for rel, rec in listing["files"].items() if rel != CATALOG}

        def holds(path: Path, rec: dict[str, Any]) -> bool:
            return path.is_file() and path.stat().st_size == rec["bytes"] and sha256_file(path) == rec["sha256"]

        def get(rel: str) -> bool:
            rec = wanted[rel]
            if holds(root / rel, rec) or holds(staged / rel, rec):
                if on_bytes is not None:
                    on_bytes(rec["bytes"])
                return False
            uri = fs.unstrip_protocol(f"{base}/{rel}")
            try:
                if "parts" not in rec:
                    fetch(uri, staged / rel, sha256=rec["sha256"], quarantine_dir=scratch / "quarantine", storage_options=storage_options,
                          policy=policy, on_bytes=on_bytes, record=False)
                    return True
                pieces = []
                for i, part in enumerate(rec["parts"]):
                    piece = scratch / "parts" / PART.format(rel=rel, i=i)
                    if not holds(piece, part):
                        fetch(fs.unstrip_protocol(f"{base}/{PART.format(rel=rel, i=i)}"), piece, sha256=part["sha256"],
                              quarantine_dir=scratch / "quarantine", storage_options=storage_options, policy=policy,
                              on_bytes=on_bytes, record=False)
                    pieces.append(piece)
                with atomic_path(staged / rel) as tmp:
                    with open(tmp, "wb") as out:
                        for piece in pieces:
                            with open(piece, "rb") as f:
                                shutil.copyfileobj(f, out, READ_BLOCK)
                    if sha256_file(tmp) != rec["sha256"]:
                        raise DatastoreError(f"{uri}: reassembled parts do not match the published sha256")
                for piece in pieces:
                    piece.unlink()
                return True
            except FetchError as exc:
                raise DatastoreError(str(exc)) from None

        for rel, moved in _run(list(wanted), get, workers):
            (report.transferred if moved else report.skipped).append(rel)
            report.bytes_transferred += wanted[rel]["bytes"] if moved else 0
        old = root / CATALOG
        if old.is_file() and sha256_file(old) != listing["files"][CATALOG]["sha256"]:
            old.unlink()  # another version: the folder is not a datastore again until our catalog lands
        for rel in wanted:
            if (staged / rel).is_file():
                target = safe_join(root, rel, f"{CHECKSUMS} entry")  # checked again: the destination may have changed meanwhile
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged / rel, target)
        write_json(root / CHECKSUMS, listing)
        write_catalog_bytes(root, raw_catalog)
        shutil.rmtree(scratch, ignore_errors=True)
        if (root / "build").is_dir() and not any((root / "build").iterdir()):
            (root / "build").rmdir()
        report.seconds = time.perf_counter() - clock
        return report


def parse_size(text: str) -> int:
    """``'20G'``, ``'512MiB'``, ``'1000'`` -> bytes (k/M/G/T are powers of 1000, Ki/Mi/Gi/Ti of 1024)."""
    units = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
    t = text.strip().lower().removesuffix("b")
    num = t.rstrip("kmgti")
    unit = t[len(num):]
    if unit not in units or not num:
        raise MassiveDSError(f"size {text!r}: use a number with an optional unit (k, M, G, T, Ki, Mi, Gi, Ti)")
    try:
        value = float(num) * units[unit]
    except ValueError:
        raise MassiveDSError(f"size {text!r}: not a number") from None
    if value < 1:
        raise MassiveDSError(f"size {text!r}: must be at least one byte")
    return int(value)


def storage_options_from(pairs: list[str]) -> dict[str, Any]:
    """``['endpoint_url=http://...', 'anon=true']`` -> fsspec storage options (values parsed as JSON when they are JSON)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise MassiveDSError(f"option {pair!r}: write it as key=value")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


