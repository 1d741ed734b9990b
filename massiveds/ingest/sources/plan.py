"""The download plan of a build: which remote files (and ``hf`` datasets) to fetch, and where they land in the cache.

Remote globs are listed once and the listing is kept in ``build/download/plans/``, so a resumed
build neither lists again nor depends on the network once every file is cached. The cache lives
under ``build/download/``::

    plans/<sha256>.json    each manifest's listing: per source, its files (uri, size, cache path)
    lists/...              URL lists of uri_list sources
    files/<scheme>/<host>/<path>   the fetched files (whole and verified; .<name>.partial while in flight)
    files/hf/...           Parquet parts of format-hf sources (parts.json written last)
    quarantine/...         downloads whose sha256 did not match the manifest
    units/                 work-unit markers of the download stage
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from massiveds.core.errors import ManifestError
from massiveds.core.layout import read_json, write_json
from massiveds.core.manifest import LoadedManifest, Source
from massiveds.ingest.sources.fetch import cache_relpath, expand, fetch, is_remote

DOWNLOAD = "download"
PLAN_VERSION = 1


def _plan_path(loaded: LoadedManifest, cache: str | Path) -> Path:
    """Where the listing of this manifest is kept (one per manifest: several may share a build's cache)."""
    return Path(cache) / "plans" / f"{loaded.sha256[:32]}.json"


def download_cache(build: str | Path) -> Path:
    """The download cache of a build folder: ``<build>/download``."""
    return Path(build) / DOWNLOAD


def needs_download(source: Source) -> bool:
    """True for a source the download stage prepares: a remote URL, a URL list, or any format-hf source."""
    return source.format == "hf" or source.uri_list or is_remote(source.uri)


def _hf_dest(source: Source, uri: str) -> str:
    key = "/".join([uri, source.config or "default", source.split, source.revision or "", source.builder or ""])
    name = uri.rstrip("/").rsplit("/", 1)[-1] or "dataset"
    return f"hf/{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _listed(source: Source, base: Path, cache: Path) -> list[tuple[str, int | None]]:
    """The URLs in a source's URL list (fetched into the cache first when remote), one per non-blank, non-# line."""
    if is_remote(source.uri):
        dest = cache / "lists" / cache_relpath(source.uri)
        fetch(source.uri, dest, storage_options=source.storage_options)
    else:
        dest = base / source.uri
        if not dest.is_file():
            raise ManifestError(f"source {source.label!r}: URL list {dest} not found")
    urls = [line.strip() for line in dest.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if bad := [u for u in urls if not is_remote(u)]:
        raise ManifestError(f"source {source.label!r}: the URL list {source.uri} holds a line that is not a URL: {bad[0]!r}")
    return [(u, None) for u in urls]


def _plan_source(source: Source, base: Path, cache: Path) -> dict[str, Any]:
    if source.format == "hf":
        uri = source.uri if is_remote(source.uri) else str((base / source.uri).resolve())
        return {"kind": "hf", "uri": uri, "dest": _hf_dest(source, uri)}
    files = _listed(source, base, cache) if source.uri_list else expand(source.uri, source.storage_options)
    if source.include is not None:
        keep = re.compile(source.include)
        files = [f for f in files if keep.search(f[0])]
    if not files:
        raise ManifestError(f"source {source.label!r}: no remote file matches {source.uri!r}")
    if source.sha256 is not None and len(files) != 1:
        raise ManifestError(f"source {source.label!r}: sha256 is given but {source.uri!r} matches {len(files)} files")
    return {"kind": "file", "files": [{"uri": uri, "size": size, "dest": cache_relpath(uri)} for uri, size in files]}


def load_plan(loaded: LoadedManifest, cache: str | Path) -> dict[str, Any] | None:
    """The stored download plan of this manifest in the download ``cache``, or None if there is none (or it is another manifest's)."""
    path = _plan_path(loaded, cache)
    if not path.is_file():
        return None
    plan = read_json(path)
    if plan.get("manifest_sha256") != loaded.sha256 or plan.get("version") != PLAN_VERSION:
        return None
    return dict(plan)


def make_plan(loaded: LoadedManifest, build: str | Path) -> dict[str, Any]:
    """List every remote source (globs through fsspec) once and store the listing; reuse a stored one."""
    if (plan := load_plan(loaded, download_cache(build))) is not None:
        return plan
    sources = {
        str(i): _plan_source(s, loaded.base_dir, download_cache(build))
        for i, s in enumerate(loaded.manifest.sources)
        if needs_download(s)
    }
    plan = {"version": PLAN_VERSION, "manifest_sha256": loaded.sha256, "sources": sources}
    if sources:
        write_json(_plan_path(loaded, download_cache(build)), plan)
    return plan


def plan_downloads(loaded: LoadedManifest, build: str | Path) -> list[dict[str, Any]]:
    """The download stage's work units (one per remote file or hf dataset), deduplicated by cache path; [] if all is local."""
    plan = make_plan(loaded, build)
    items: dict[str, dict[str, Any]] = {}
    for idx, entry in plan["sources"].items():
        source = loaded.manifest.sources[int(idx)]
        if entry["kind"] == "hf":
            todo = [{"kind": "hf", "uri": entry["uri"], "dest": entry["dest"], "config": source.config, "split": source.split,
                     "revision": source.revision, "builder": source.builder, "builder_options": source.builder_options}]
        else:
            todo = [{"kind": "file", "uri": f["uri"], "dest": f["dest"], "size": f["size"], "sha256": source.sha256,
                     "storage_options": source.storage_options} for f in entry["files"]]
        for item in todo:
            unit = "dl-" + hashlib.sha256(item["dest"].encode()).hexdigest()[:16]
            items.setdefault(unit, item | {"unit": unit, "source": source.label})
    return list(items.values())
