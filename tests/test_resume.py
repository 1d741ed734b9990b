"""A build killed mid-way (all its processes, as a crash would) and re-run ends with the same datastore."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import massiveds
from tests.helpers import massiveds as cli

pytestmark = pytest.mark.slow

QUERIES = ["a program nobody can maintain", "hacker humour about computers", "the meaning of a bug"]


def snapshot(out: Path) -> dict:
    ds = massiveds.open(out)
    catalog = json.loads((out / "datastore.json").read_text())
    passages = ds.passages(list(range(ds.num_passages)))
    vectors = np.concatenate([np.load(out / "shards" / s["name"] / "vectors.npy") for s in catalog["shards"]]).astype(np.float32)
    hits = [[h["passage_id"] for h in q] for q in ds.search(QUERIES, k=5)]
    counts = {k: catalog["build"][k] for k in ("records_read", "documents_kept", "dropped")}
    return {
        "passages": passages,
        "vectors": vectors,
        "hits": hits,
        "counts": counts,
        "shards": [(s["name"], s["count"]) for s in catalog["shards"]],
    }


def kill_when(manifest: Path, out: Path, ready, timeout: float = 300, meanwhile=None) -> None:
    """Start a build and SIGKILL its whole process group (driver and Ray) once ``ready(out)`` holds.

    ``meanwhile(out)``, if given, runs once as soon as the build holds its lock, before the kill point.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "massiveds.cli", "build", str(manifest), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + timeout
    lock = out / "build" / "lock"
    try:
        if meanwhile is not None:
            while not (lock.is_file() and lock.read_text().startswith("pid")):
                assert proc.poll() is None and time.time() < deadline, "the build never took its lock"
                time.sleep(0.05)
            meanwhile(out)
        while not ready(out):
            assert proc.poll() is None, "the build finished before the kill point"
            assert time.time() < deadline, "kill point never reached"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(1)


def assert_same_datastore(got_path: Path, want_path: Path) -> None:
    """Same passages, shards, counts, search results; vectors equal up to batch-dependent float noise."""
    want, got = snapshot(want_path), snapshot(got_path)
    assert got["passages"] == want["passages"]
    assert got["shards"] == want["shards"] and got["counts"] == want["counts"]
    np.testing.assert_allclose(got["vectors"], want["vectors"], atol=2e-3)
    assert got["hits"] == want["hits"]


def test_kill_during_embedding_then_resume(small_manifest: Path, small_reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"

    def second_builder_is_refused(o: Path) -> None:
        proc = cli("build", str(small_manifest), "--out", str(o), check=False)
        assert proc.returncode == 2 and "is being built by pid" in proc.stderr

    kill_when(small_manifest, out, lambda o: (o / "build" / "embed" / "embedder.json").is_file(), meanwhile=second_builder_is_refused)
    assert not (out / "datastore.json").exists()
    assert (out / "build" / "chunk" / "_SUCCESS.json").is_file()
    proc = cli("build", str(small_manifest), "--out", str(out))  # the dead builder's lock is taken over
    assert "skipped (done)" in proc.stderr  # extract .. shard were not redone

    assert_same_datastore(out, small_reference)
    assert not list(out.rglob(".*.tmp-*"))


def test_local_engine_builds_the_same_datastore_as_ray(small_manifest: Path, small_reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "local"
    proc = cli("build", str(small_manifest), "--out", str(out), "--engine", "local")
    assert "embed" in proc.stderr
    assert_same_datastore(out, small_reference)


@pytest.mark.parametrize("point", ["extract:1", "near-map:1", "chunk:1", "index:2"])
def test_crash_inside_a_stage_then_resume(point: str, small_manifest: Path, small_reference: Path, tmp_path: Path) -> None:
    """SIGKILL of the whole build right after one unit of a stage is recorded, then the same command again."""
    out = tmp_path / "crashed"
    step, _ = point.split(":")
    proc = subprocess.run([sys.executable, "-m", "massiveds.cli", "build", str(small_manifest), "--out", str(out)],
                          env=os.environ | {"MASSIVEDS_CRASH_AFTER": point}, capture_output=True, start_new_session=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "datastore.json").exists()
    stage = {"near-map": "near_dedup"}.get(step, step)
    assert not (out / "build" / stage / "_SUCCESS.json").exists()
    time.sleep(1)  # Ray's processes of the killed build are gone with its process group
    cli("build", str(small_manifest), "--out", str(out))
    assert_same_datastore(out, small_reference)
