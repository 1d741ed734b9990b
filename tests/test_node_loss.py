"""A cluster build goes on when a node dies (issue 32): on a local cluster of one-CPU nodes (``ray.cluster_utils``), a
worker node is removed while a unit of one step runs on it (``MASSIVEDS_STALL_ON_NODE`` holds that unit there, so the
loss lands mid-unit every time), and the build finishes by itself with the datastore of an undisturbed build.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from massiveds.core.native_output import native_output_to
from tests.conftest import write_small_manifest
from tests.test_resume import assert_same_datastore


@pytest.fixture()
def cluster() -> Iterator[Any]:
    """A head node of one CPU, torn down even on failure (tests add the worker nodes they remove)."""
    from ray.cluster_utils import Cluster

    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                         "_system_config": {"worker_niceness": 0}})
    try:
        yield made
    finally:
        made.shutdown()


def build_losing_a_node(cluster: Any, step: str, tmp_path: Path, then: str = "", env: dict[str, str] | None = None
                        ) -> tuple[subprocess.CompletedProcess[str], Path, dict[str, str]]:
    """Build the small manifest on ``cluster`` plus a worker node, removed once a unit of ``step`` runs on it.

    ``then="add"`` adds a fresh node right after. Returns the finished build's process, its datastore and the nodes' ids
    (``lost``, and ``added``).
    """
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    manifest = write_small_manifest(tmp_path)
    manifest.write_text(manifest.read_text() + "embed: {workers: 2}\n")  # one model actor on each node
    out, stalls = tmp_path / "ds", tmp_path / "stalls"
    run_env = os.environ | {"COLUMNS": "200", "MASSIVEDS_STALL_ON_NODE": f"{step}:{worker.node_id}:{stalls}"} | (env or {})
    cmd = [sys.executable, "-m", "massiveds.cli", "build", str(manifest), "--out", str(out), "--address", cluster.address]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=run_env) as proc:
        deadline = time.monotonic() + 600
        while not (stalls / step).exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"no unit of {step} ran on the worker node: {proc.stderr.read()[-3000:]}")  # type: ignore[union-attr]
            time.sleep(0.1)
        cluster.remove_node(worker)
        nodes = {"lost": worker.node_id}
        if then == "add":
            nodes["added"] = cluster.add_node(num_cpus=1).node_id
        stdout, stderr = proc.communicate(timeout=900)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), out, nodes


@pytest.mark.slow
@pytest.mark.parametrize("step", ["extract", "near-map", "embed", "index"])
def test_a_build_goes_on_when_a_node_is_lost_mid_unit(cluster: Any, step: str, small_reference: Path, tmp_path: Path) -> None:
    proc, out, nodes = build_losing_a_node(cluster, step, tmp_path, then="add" if step == "extract" else "")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lost = nodes["lost"][:12]
    assert len(re.findall(rf"node {lost} lost during stage \w+ at \d\d:\d\d:\d\d", proc.stderr)) == 1  # said once, as found
    reruns = re.findall(r"│ (\w+)\s+│ ([^│]+?)\s+│ node (\w+) lost\s+│ \d\d:\d\d:\d\d │", proc.stderr)
    assert reruns and {node for _, _, node in reruns} == {lost}
    assert all(unit.startswith(step) or stage == step for stage, unit, _ in reruns)  # only the units it held ran again
    assert not re.search(r"\(raylet\)|\.cc:\d+|Traceback", proc.stderr)  # Ray's own lines went to the build's log
    assert_same_datastore(out, small_reference)
    if "added" in nodes:  # a node that joins mid-build gets work
        used = json.loads((out / "datastore.json").read_text())["build"]["nodes"]
        assert any(nodes["added"] in per_node for steps in used.values() for per_node in steps.values())


@pytest.mark.slow
def test_a_stage_with_no_node_left_waits_then_ends_in_one_line(tmp_path: Path) -> None:
    """The head runs no units (0 CPUs): once the only worker node is lost, no node can run extract's units."""
    from ray.cluster_utils import Cluster

    head = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        proc, out, _ = build_losing_a_node(head, "extract", tmp_path, env={"MASSIVEDS_NODE_WAIT_S": "5"})
    finally:
        head.shutdown()
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: stage extract: no node of the cluster has had 1 CPU free for 5 s (nodes lost: 1)")
    assert "re-run the same command" in last and not (out / "build" / "extract" / "_SUCCESS.json").exists()


def test_native_stderr_goes_to_the_log_and_python_stderr_stays(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "logs" / "ray.log"
    log.parent.mkdir()
    with native_output_to(log, "stderr"):
        os.write(2, b"[2026-12-07 12:00:00,000 E 1 2] core_worker.cc:42: a native line\n")
        print("progress for the person", file=sys.stderr)
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "progress for the person" in err and "after" in err and "core_worker.cc" not in err
    assert log.read_text() == "[2026-12-07 12:00:00,000 E 1 2] core_worker.cc:42: a native line\n"
