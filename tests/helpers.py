"""Test helpers: paths to shipped and shared real data, the CLI runner, one-input extraction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.progress import Progress

from massiveds.clean.normalize import normalize_and_filter
from massiveds.core.manifest import Filters, Source
from massiveds.ingest.extract import reader_for
from massiveds.ingest.extract.records import records_to_documents
from massiveds.ingest.extract.stream import Limits
from massiveds.ingest.sources.files import InputFile
from pipelines.executor import LocalExecutor

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "manifests" / "examples" / "jargon.yaml"
#: The project's shared real data, checked out beside the repository (see ../shared/data/README.md).
SHARED_DATA = REPO.parent / "shared" / "data"
FIXTURES = Path(__file__).parent / "fixtures"


@dataclass
class Extraction:
    """Kept documents (dicts) and dropped entries (dicts) of one input."""

    docs: list[dict[str, Any]]
    dropped: list[dict[str, Any]]

    def reasons(self) -> dict[str, int]:
        """Count of dropped entries per reason."""
        out: dict[str, int] = {}
        for d in self.dropped:
            out[d["reason"]] = out.get(d["reason"], 0) + 1
        return out

    def by_title(self, title: str) -> dict[str, Any]:
        """The kept document with this title."""
        return next(d for d in self.docs if d["title"] == title)


def input_for(path: Path, fmt: str, **source: Any) -> InputFile:
    """The ``InputFile`` of one path under a source with these manifest fields."""
    src = Source.model_validate({"uri": str(path), "format": fmt, **source})
    return InputFile(0, 0, str(path), path.name, src.label, src.format, src.text_field, src.id_field, src.title_field,
                     src.url_field, src.markup, src.markup_field, src.html_extractor)


def local(build: Path) -> LocalExecutor:
    """The in-process executor over ``build``, without a live progress display (steps run through it as in a build)."""
    return LocalExecutor(build, Progress(disable=True))


def extract(path: Path, fmt: str, filters: Filters | None = None, **source: Any) -> Extraction:
    """Read, map and filter one input like the build's extract step (``extract_file``), without writing files."""
    inp = input_for(path, fmt, **source)
    filters = filters or Filters()
    limits = Limits.of(filters)
    docs, dropped = records_to_documents(list(reader_for(fmt)(str(path), limits)), inp, "test", limits.max_record_bytes)
    kept, filtered = normalize_and_filter(docs, filters)
    rows = kept.to_pylist()
    for row in rows:
        row["meta"] = json.loads(row["meta"])
    return Extraction(rows, dropped.to_pylist() + filtered.to_pylist())


def shared(*parts: str) -> Path:
    """A path in the shared data; the test is skipped where ../shared is not checked out."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path


def head_rows(path: Path, n: int) -> list[dict[str, Any]]:
    """The first ``n`` rows of a (zstd-compressed) JSONL file."""
    import io

    import zstandard

    rows: list[dict[str, Any]] = []
    with path.open("rb") as raw, io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw), encoding="utf-8") as f:
        for line in f:
            rows.append(json.loads(line))
            if len(rows) == n:
                break
    return rows


def massiveds(*args: str, check: bool = True, timeout: int = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh process (so every build starts and stops its own Ray), with ``env`` added to ours."""
    env = os.environ | {"COLUMNS": "200"} | (env or {})
    proc = subprocess.run([sys.executable, "-m", "massiveds.cli", *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"massiveds {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
