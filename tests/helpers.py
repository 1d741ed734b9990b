"""Test helpers: paths to shipped and shared real data, the CLI runner, one-input extraction, killed builds, exact-search oracles."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import pytest
from rich.progress import Progress

from massiveds.clean.normalize import normalize_and_filter
from massiveds.core.manifest import Filters, Source
from massiveds.ingest.extract import reader_for
from massiveds.ingest.extract.records import records_to_documents
from massiveds.ingest.extract.stream import Limits
from massiveds.ingest.sources.files import InputFile
from pipelines.executor import LocalExecutor

if TYPE_CHECKING:
    from massiveds.store.datastore import Datastore

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


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test, except in CI (``CI`` set), where a test that cannot run is a failure: a skip would pass unseen."""
    if os.environ.get("CI"):
        pytest.fail(f"cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def shared(*parts: str) -> Path:
    """A path in the shared data; the test is skipped where ../shared is not checked out (and fails in CI)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        skip_or_fail(f"shared data not found: {path}")
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


def session_processes(sid: int) -> list[int]:
    """The live (not zombie) processes of session ``sid``, from /proc: a build started in a session of its own and its Ray."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, _pgrp, session = stat.read_text().rsplit(")", 1)[1].split()[:4]
        except OSError:  # the process ended while listed
            continue
        if int(session) == sid and state not in "ZX":
            pids.append(int(stat.parent.name))
    return pids


def end_session(sid: int, timeout: float = 60) -> None:
    """SIGKILL what is left of a killed build's session and wait until none of it runs, or fail naming what does.

    Killing the build's process group ends the driver and Ray's own processes, not Ray's workers: each has a process group
    of its own and exits by itself up to 30 s later. A crash of the machine leaves nothing, so neither does this.
    """
    deadline = time.monotonic() + timeout
    while left := session_processes(sid):
        assert time.monotonic() < deadline, f"processes {left} of the killed build (session {sid}) still run after {timeout:.0f} s"
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def coarse_index(ds: Datastore, m: int = 48, nbits: int = 4) -> Datastore:
    """``ds`` with each shard's index replaced, in memory, by a coarse PQ of the same vectors and ids: rerank has something to fix.

    The example's Flat index is exact, so plain and reranked searches of it agree whether rerank works or not.
    """
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # k-means of 417 points: one thread takes 0.03 s, several beside busy processes seconds
    try:
        for shard in ds.shards:
            exact = shard.index
            vectors = exact.index.reconstruct_n(0, exact.ntotal)
            pq = faiss.IndexPQ(vectors.shape[1], m, nbits, faiss.METRIC_INNER_PRODUCT)
            pq.pq.cp.verbose = False
            pq.train(vectors)
            coarse = faiss.IndexIDMap2(pq)
            coarse.add_with_ids(vectors, faiss.vector_to_array(exact.id_map))
            shard._index = coarse
    finally:
        faiss.omp_set_num_threads(threads)
    return ds


def exact_scores(ds: Datastore, query: str) -> tuple[np.ndarray, np.ndarray]:
    """Every passage id of ``ds`` and its inner product with ``query``'s vector, by brute force over the stored vectors (an oracle)."""
    vector = ds.embedder.encode_queries([query])[0]
    ids = np.concatenate([np.arange(s.id_start, s.id_start + s.count) for s in ds.shards])
    scores = np.concatenate([np.asarray(s.vectors, dtype=np.float32) @ vector for s in ds.shards])
    return ids, scores


def exact_top(ds: Datastore, query: str, k: int) -> tuple[list[int], np.ndarray]:
    """The ``k`` passage ids of ``ds`` nearest ``query`` by brute force, best first, and their scores: what exact rerank must give."""
    ids, scores = exact_scores(ds, query)
    order = np.argsort(-scores, kind="stable")[:k]
    return ids[order].tolist(), scores[order]
