"""A build killed mid-way (all its processes, as a crash would) and re-run ends with the same datastore.

Kill points (``MASSIVEDS_CRASH_AFTER=<step>:<n>``): extract, near dedup, chunk and index on Ray
(``test_crashed_inside_stages_on_ray_in_turn_then_resumed``); download, exact dedup (map and reduce), shard, embed, vector
consolidation, train, index and catalog with ``--engine local`` (``test_killed_at_every_stage_in_turn_then_resumed``).
Ray worker deaths (``MASSIVEDS_WORKER_EXIT``) while embedding and adding to the index, on Ray
(``test_ray_worker_deaths_while_embedding_and_indexing_are_retried``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import massiveds
from massiveds.core.writer_lock import LOCK_FILE
from massiveds.encode.index import read_index
from tests.conftest import write_small_manifest
from tests.helpers import REPO, end_session
from tests.helpers import massiveds as cli
from tests.servers import file_server

pytestmark = pytest.mark.slow

QUERIES = ["a program nobody can maintain", "hacker humour about computers", "the meaning of a bug"]


def snapshot(out: Path) -> dict:
    ds = massiveds.open(out)
    catalog = json.loads((out / "datastore.json").read_text())
    passages = ds.passages(list(range(ds.num_passages)))
    vectors = np.concatenate([np.load(out / "shards" / s["name"] / "vectors.npy") for s in catalog["shards"]]).astype(np.float32)
    hits = [[h["passage_id"] for h in q] for q in ds.search(QUERIES, k=5)]
    counts = {k: catalog["build"][k] for k in ("records_read", "documents_kept", "dropped")} | {"domains": catalog["domains"]}
    indexed = [read_index(out / "shards" / s["name"] / "index.faiss", mmap=False).ntotal for s in catalog["shards"]]
    return {
        "passages": passages,
        "vectors": vectors,
        "hits": hits,
        "counts": counts,
        "shards": [(s["name"], s["count"]) for s in catalog["shards"]],
        "indexed": indexed,
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
    lock = out / LOCK_FILE
    try:
        if meanwhile is not None:
            while not (lock.is_file() and '"command": "build"' in lock.read_text()):
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
    end_session(proc.pid)


def assert_same_datastore(got_path: Path, want_path: Path) -> None:
    """Same passages, shards, counts, search results; vectors equal up to batch-dependent float noise."""
    want, got = snapshot(want_path), snapshot(got_path)
    assert [p["passage_id"] for p in got["passages"]] == list(range(len(got["passages"])))  # none missing, none twice
    assert got["passages"] == want["passages"]
    assert got["shards"] == want["shards"] and got["counts"] == want["counts"]
    assert got["indexed"] == [count for _, count in got["shards"]]  # every passage in its shard's index, once
    np.testing.assert_allclose(got["vectors"], want["vectors"], atol=2e-3)
    assert got["hits"] == want["hits"]


def test_kill_during_embedding_then_resume(small_manifest: Path, small_reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"

    def second_builder_is_refused(o: Path) -> None:
        proc = cli("build", str(small_manifest), "--out", str(o), "--wait", "0", check=False)
        assert proc.returncode == 2 and "is being changed by build by" in proc.stderr and "pid" in proc.stderr

    kill_when(small_manifest, out, lambda o: any((o / "build" / "embeddings").glob("*/*.npz")), meanwhile=second_builder_is_refused)
    assert not (out / "datastore.json").exists() and not (out / "build" / "embed" / "_SUCCESS.json").exists()
    assert list((out / "build" / "embeddings").glob("*/*.npz"))  # killed after a batch was embedded, before the stage ended
    assert (out / "build" / "chunk" / "_SUCCESS.json").is_file()
    proc = cli("build", str(small_manifest), "--out", str(out))  # the dead builder's lock is taken over
    assert "skipped (done)" in proc.stderr  # extract .. shard were not redone
    assert re.search(r"ray nodes \(this run\)\s*│\s*1\s*│", proc.stderr)  # one machine, whatever runs came before

    assert_same_datastore(out, small_reference)
    assert not list(out.rglob(".*.tmp-*"))


def test_local_engine_builds_the_same_datastore_as_ray(small_manifest: Path, small_reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "local"
    proc = cli("build", str(small_manifest), "--out", str(out), "--engine", "local")
    assert "embed" in proc.stderr
    assert_same_datastore(out, small_reference)


#: The stage a step of the build belongs to, where the step has another name.
STAGE_OF = {"near-map": "near_dedup", "dedup-map": "dedup", "vectors": "embed"}


def crash(manifest: Path, out: Path, point: str, *args: str) -> None:
    """Run the build with ``MASSIVEDS_CRASH_AFTER=point`` and check that it died there (SIGKILL of its process group)."""
    proc = subprocess.Popen([sys.executable, "-m", "massiveds.cli", "build", str(manifest), "--out", str(out), *args],
                            env=os.environ | {"MASSIVEDS_CRASH_AFTER": point}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        end_session(proc.pid)
    assert proc.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    assert not (out / "datastore.json").exists()
    step = point.split(":")[0]
    assert not (out / "build" / STAGE_OF.get(step, step) / "_SUCCESS.json").exists()


#: Kill points on Ray, in build order: inside extract, near dedup, chunk and index.
RAY_KILL_CHAIN = ["extract:1", "near-map:1", "chunk:1", "index:2"]


def test_crashed_inside_stages_on_ray_in_turn_then_resumed(small_manifest: Path, small_reference: Path, tmp_path: Path) -> None:
    """SIGKILL of the whole build (driver and Ray) right after one unit of a stage is recorded, at each point of
    RAY_KILL_CHAIN in turn (each re-run resumes the last kill), then the same command again: the same datastore."""
    out = tmp_path / "crashed"
    for point in RAY_KILL_CHAIN:
        crash(small_manifest, out, point)
    cli("build", str(small_manifest), "--out", str(out))
    assert_same_datastore(out, small_reference)

#: Kill points in build order, one per stage step; ``--engine local`` runs units one by one, so each lands
#: after exactly n units (or, for embed, n embedding parts; for catalog, once all but datastore.json is written).
KILL_CHAIN = ["download:1", "dedup-map:1", "dedup:1", "shard:1", "embed:1", "vectors:1", "train:1", "index:1", "catalog:1"]


def remote_small_manifest(folder: Path, url: str) -> Path:
    """The small manifest with its two files fetched from ``url`` (a URL list), so that its build starts with a download."""
    manifest = write_small_manifest(folder)
    (folder / "urls.txt").write_text("".join(f"{url}/data/jargon-{n}.jsonl.zst\n" for n in range(2)))
    manifest.write_text(manifest.read_text().replace("uri: data/*.jsonl.zst", "uri: urls.txt\n    uri_list: true"))
    return manifest


def test_killed_at_every_stage_in_turn_then_resumed(small_reference: Path, tmp_path: Path) -> None:
    """One build directory killed at each point of KILL_CHAIN in turn, then finished: the same datastore.

    Each re-run of the same command resumes the previous kill and is itself killed at the next point, so
    every point is a kill followed by a resume, for the price of one build.
    """
    files = {f"/data/{p.name}": p.read_bytes() for p in sorted((REPO / "manifests/examples/data/jargon").glob("jargon-[01].jsonl.zst"))}
    out = tmp_path / "ds"
    with file_server(files) as srv:
        manifest = remote_small_manifest(tmp_path, srv.url)
        for point in KILL_CHAIN:
            crash(manifest, out, point, "--engine", "local")
            step, n = point.split(":")
            build = out / "build"
            if step == "embed":
                [part] = list((build / "embeddings").rglob("*.npz"))
                first_part = (part, (part.stat().st_ino, part.stat().st_mtime_ns))
            elif step == "catalog":
                assert (out / "trained.faiss").is_file() and all((s / "shard.json").is_file() for s in (out / "shards").iterdir())
            else:
                stage = STAGE_OF.get(step, step)
                markers = build / stage / "units" / (step if step != stage else "")
                assert len(list(markers.glob("*.json"))) == int(n)
            if step == "vectors":  # the part written before the embed kill was kept, not embedded again
                assert (first_part[0].stat().st_ino, first_part[0].stat().st_mtime_ns) == first_part[1]
        cli("build", str(manifest), "--out", str(out), "--engine", "local")
        assert sorted(path for path, _ in srv.gets) == sorted(files)  # every file fetched once, across all the kills
    embed = json.loads((out / "build" / "embed" / "_SUCCESS.json").read_text())
    passages = json.loads((small_reference / "datastore.json").read_text())["domains"]["wiki"]["passages"]
    assert embed["passages"] == 0 and embed["passages_earlier"] == passages  # no passage embedded twice
    assert_same_datastore(out, small_reference)
    assert not list(out.rglob(".*.tmp-*"))


def test_ray_worker_deaths_while_embedding_and_indexing_are_retried(small_manifest: Path, small_reference: Path, tmp_path: Path) -> None:
    """A model actor dies after embedding a batch and an index-add task's worker dies after its shard: both are redone."""
    out, deaths = tmp_path / "ds", tmp_path / "deaths"
    proc = cli("build", str(small_manifest), "--out", str(out), env={"MASSIVEDS_WORKER_EXIT": f"embed,index:{deaths}"})
    assert "embed" in proc.stderr
    driver = json.loads((out / LOCK_FILE).read_text())["pid"]
    for step in ("embed", "index"):
        assert int((deaths / step).read_text()) != driver  # a Ray worker wrote it just before it exited
    assert_same_datastore(out, small_reference)


def test_a_worker_that_keeps_dying_stops_the_build_with_one_line(small_manifest: Path, tmp_path: Path) -> None:
    """With no retries left, a worker death ends the build with a one-line error naming the stage, not a Ray traceback."""
    out = tmp_path / "ds"
    env = {"MASSIVEDS_WORKER_EXIT": f"extract:{tmp_path / 'deaths'}", "MASSIVEDS_WORKER_RETRIES": "0"}
    proc = cli("build", str(small_manifest), "--out", str(out), env=env, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]  # Ray's own logger prints the worker's traceback above it
    assert last.startswith("error: stage extract: a Ray worker died more than 0 times") and "re-run the same command" in last
    assert (tmp_path / "deaths" / "extract").is_file() and not (out / "build" / "extract" / "_SUCCESS.json").exists()
