"""Resolve manifest sources into ordered input files: local paths and globs, and remote sources from the download cache.

A remote source (``https://``, ``s3://``, ``hf://``...) or a format-hf source is read from the files
the download stage put in the build's cache (see ``massiveds.ingest.sources.plan``): pass ``cache=`` once
that stage has run. Without ``cache`` such sources are checked by syntax only and yield no files,
which is what ``massiveds validate`` needs (no network).
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from massiveds.core.errors import ManifestError, MassiveDSError
from massiveds.core.formats import FORMATS
from massiveds.core.layout import sha256_file
from massiveds.core.manifest import LoadedManifest, Source
from massiveds.ingest.sources.hf import parts_of
from massiveds.ingest.sources.plan import load_plan, needs_download


@dataclass(frozen=True)
class InputFile:
    """One file to extract: its position in the build (for stable ids and ordering) and its source."""

    source_idx: int
    file_idx: int
    path: str
    rel: str
    source: str
    format: str
    text_field: str
    id_field: str | None
    title_field: str | None
    url_field: str | None
    markup: str = "none"
    markup_field: str | None = None
    html_extractor: str = "trafilatura"

    @property
    def unit(self) -> str:
        """Name of this file's work unit in every per-file build stage."""
        return unit_name(self.source_idx, self.file_idx)


def unit_name(source_idx: int, file_idx: int) -> str:
    """The work unit (and per-file output name) of the ``file_idx``-th input file of source ``source_idx``."""
    return f"s{source_idx:04d}-f{file_idx:07d}"


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def _expand(source: Source, base: Path) -> list[Path]:
    pattern = Path(source.uri) if Path(source.uri).is_absolute() else base / source.uri
    matches = sorted(Path(p) for p in glob.glob(str(pattern), recursive=True))
    files = [p for p in matches if p.is_file() or (FORMATS[source.format].directories and p.is_dir())]
    dirs = {p for p in files if p.is_dir()}
    files = [p for p in files if not dirs.intersection(p.parents)]  # a matched directory is read whole, once
    if source.include is not None:
        keep = re.compile(source.include)
        files = [p for p in files if keep.search(p.as_posix())]
    if not files:
        raise ManifestError(f"source {source.label!r}: no file matches {source.uri!r} (relative to {base})")
    if source.sha256 is not None:
        if len(files) != 1:
            raise ManifestError(f"source {source.label!r}: sha256 is given but {source.uri!r} matches {len(files)} files")
        actual = sha256_file(files[0])
        if actual != source.sha256.lower():
            raise ManifestError(f"source {source.label!r}: sha256 mismatch for {files[0]} (got {actual}); fix the file or the manifest")
    return files


def _cached(source: Source, entry: dict[str, Any] | None, cache: Path) -> list[tuple[Path, str, str]]:
    """(local path, rel, format) of a downloaded source's files, checking that each is in the cache."""
    if entry is None:
        raise MassiveDSError(f"source {source.label!r}: not in the download plan under {cache}; run the download stage first")
    if entry["kind"] == "hf":
        parts = parts_of(cache / "files" / entry["dest"])
        tag = f"{source.config or 'default'}/{source.split}"
        return [(p, f"{source.uri}/{tag}/{p.name}", "parquet") for p in parts]
    out = []
    for f in entry["files"]:
        path = cache / "files" / f["dest"]
        if not path.is_file():
            raise MassiveDSError(f"source {source.label!r}: {f['uri']} is not downloaded yet ({path}); run the download stage first")
        out.append((path, f["uri"], source.format))
    return out


def resolve_inputs(loaded: LoadedManifest, cache: str | Path | None = None, source_offset: int = 0) -> list[InputFile]:
    """All input files of a manifest, in source order then path order (this order is the dedup priority).

    ``cache`` is the build's download cache (``massiveds.ingest.sources.plan.download_cache(build)``); without
    it, remote and format-hf sources are only checked by syntax and contribute no files.
    ``source_offset`` numbers the sources after those of the manifests before this one in a build.
    """
    base = loaded.base_dir
    plan = load_plan(loaded, cache) if cache is not None else None
    if cache is not None and plan is None and any(needs_download(s) for s in loaded.manifest.sources):
        raise MassiveDSError(f"no download plan for this manifest under {cache}; run the download stage first")
    inputs = []
    for s_idx, source in enumerate(loaded.manifest.sources):
        if needs_download(source):
            if plan is None:
                continue
            files = _cached(source, plan["sources"].get(str(s_idx)), Path(cache))  # type: ignore[arg-type]
        else:
            files = [(p, _relative(p, base), source.format) for p in _expand(source, base)]
        for f_idx, (path, rel, fmt) in enumerate(files):
            inputs.append(
                InputFile(
                    source_idx=source_offset + s_idx,
                    file_idx=f_idx,
                    path=str(path),
                    rel=rel,
                    source=source.label,
                    format=fmt,
                    text_field=source.text_field,
                    id_field=source.id_field,
                    title_field=source.title_field,
                    url_field=source.url_field,
                    markup=source.markup,
                    markup_field=source.markup_field,
                    html_extractor=source.html_extractor,
                )
            )
    return inputs
