"""Shared fixtures: an offline, Ray-safe environment; the shipped example built once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.helpers import EXAMPLE, REPO, massiveds


@pytest.fixture(scope="session")
def example_datastore(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped example, built once for the whole session."""
    out = tmp_path_factory.mktemp("example") / "ds"
    massiveds("build", str(EXAMPLE), "--out", str(out))
    return out


def write_small_manifest(folder: Path) -> Path:
    """A two-file slice of the shipped example (real Jargon File entries) with its own copy of the data."""
    data = folder / "data"
    data.mkdir()
    for name in ("jargon-0.jsonl.zst", "jargon-1.jsonl.zst"):
        shutil.copy(REPO / "manifests/examples/data/jargon" / name, data / name)
    manifest = folder / "small.yaml"
    manifest.write_text(
        "name: small\ndomain: wiki\nsources:\n  - uri: data/*.jsonl.zst\n    name: jargon\n    id_field: id\n    title_field: title\n"
        "chunk: {size: 96, min_size: 16}\nshards: {target_passages: 120}\n"
    )
    return manifest


@pytest.fixture()
def small_manifest(tmp_path: Path) -> Path:
    """``write_small_manifest`` in this test's own folder."""
    return write_small_manifest(tmp_path)


@pytest.fixture(scope="session")
def small_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small manifest built once, uninterrupted, on Ray: the reference other builds must equal."""
    folder = tmp_path_factory.mktemp("small-reference")
    out = folder / "ds"
    massiveds("build", str(write_small_manifest(folder)), "--out", str(out))
    return out


@pytest.fixture(scope="session")
def static_model() -> Path:
    """A static embedder distilled from the packaged all-MiniLM-L6-v2, once per checkout (kept in the ignored ``.cache/``)."""
    from massiveds.encode.distill import cached_static

    return cached_static("all-MiniLM-L6-v2", REPO / ".cache")
