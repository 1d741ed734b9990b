"""Resolve manifest sources (paths and globs relative to the manifest) into ordered input files."""

from __future__ import annotations

import glob
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from massiveds.errors import ManifestError
from massiveds.layout import sha256_file
from massiveds.manifest import LoadedManifest, Source

#: Formats whose reader also takes a directory (one repository, one LaTeX project) as one input.
DIRECTORY_FORMATS = ("latex", "code")


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
        return f"s{self.source_idx:04d}-f{self.file_idx:07d}"

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, to ship the file to a Ray worker."""
        return asdict(self)


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def _expand(source: Source, base: Path) -> list[Path]:
    if "://" in source.uri:
        raise ManifestError(
            f"source {source.label!r}: remote URIs ({source.uri}) are not supported yet; use a local path or glob"
        )
    pattern = Path(source.uri) if Path(source.uri).is_absolute() else base / source.uri
    matches = sorted(Path(p) for p in glob.glob(str(pattern), recursive=True))
    files = [p for p in matches if p.is_file() or (source.format in DIRECTORY_FORMATS and p.is_dir())]
    dirs = {p for p in files if p.is_dir()}
    files = [p for p in files if not dirs.intersection(p.parents)]  # a matched directory is read whole, once
    if not files:
        raise ManifestError(f"source {source.label!r}: no file matches {source.uri!r} (relative to {base})")
    if source.sha256 is not None:
        if len(files) != 1:
            raise ManifestError(f"source {source.label!r}: sha256 is given but {source.uri!r} matches {len(files)} files")
        actual = sha256_file(files[0])
        if actual != source.sha256.lower():
            raise ManifestError(f"source {source.label!r}: sha256 mismatch for {files[0]} (got {actual}); fix the file or the manifest")
    return files


def resolve_inputs(loaded: LoadedManifest) -> list[InputFile]:
    """All input files of a manifest, in source order then path order (this order is the dedup priority)."""
    base = loaded.base_dir
    inputs = []
    for s_idx, source in enumerate(loaded.manifest.sources):
        for f_idx, path in enumerate(_expand(source, base)):
            inputs.append(
                InputFile(
                    source_idx=s_idx,
                    file_idx=f_idx,
                    path=str(path),
                    rel=_relative(path, base),
                    source=source.label,
                    format=source.format,
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
