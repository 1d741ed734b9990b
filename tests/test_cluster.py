"""A build on a two-node Ray cluster (``massiveds build --address``) equals the single-node build and uses both nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.ray_executor import ray_runtime
from tests.helpers import EXAMPLE
from tests.helpers import massiveds as cli
from tests.test_resume import assert_same_datastore


@pytest.fixture()
def two_node_cluster() -> Iterator[tuple[str, set[str]]]:
    """A head and a worker node of one CPU each on this machine: (address, node ids); torn down even on failure."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            "_system_config": {"worker_niceness": 0}})  # as docs/cluster.md advises
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster.address, {cluster.head_node.node_id, worker.node_id}
    finally:
        cluster.shutdown()


@pytest.mark.slow
def test_build_on_a_two_node_cluster(two_node_cluster: tuple[str, set[str]], small_manifest: Path, small_reference: Path,
                                     tmp_path: Path) -> None:
    address, node_ids = two_node_cluster
    out = tmp_path / "ds"
    proc = cli("build", str(small_manifest), "--out", str(out), "--address", address)
    assert "ray nodes" in proc.stderr
    assert_same_datastore(out, small_reference)

    nodes = json.loads((out / "datastore.json").read_text())["build"]["nodes"]
    used = {node for steps in nodes.values() for per_node in steps.values() for node in per_node}
    assert used == node_ids  # every unit ran on a node of this cluster, and both nodes got work
    assert {"extract", "chunk", "embed", "index"} <= nodes.keys()
    assert sum(nodes["extract"]["extract"].values()) == 2  # one unit per input file
    catalog = json.loads((out / "datastore.json").read_text())
    assert sum(nodes["embed"]["embed"].values()) == sum(s["count"] for s in catalog["shards"])  # passages per node
    # the stage markers keep the same record, so a resumed build reports where the finished stages ran
    marker = json.loads((out / "build" / "extract" / "_SUCCESS.json").read_text())
    assert marker["nodes"] == nodes["extract"]


def test_out_cannot_be_an_object_store_url(tmp_path: Path) -> None:
    """A cluster build writes to a shared filesystem; ``s3://`` as --out is refused, not made a local folder ``s3:``."""
    proc = subprocess.run([sys.executable, "-m", "massiveds.cli", "build", str(EXAMPLE), "--out", "s3://bucket/ds"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not a URL" in proc.stderr and "massiveds publish" in proc.stderr
    assert not any(tmp_path.iterdir())


def niceness() -> int:
    return os.nice(0)


def test_the_builds_own_ray_runs_its_workers_at_the_drivers_priority() -> None:
    """Ray starts workers at nice 15: any other load on the machine would take the CPUs from the build's workers (a build of
    the small manifest took 15x as long beside two busy processes; BENCHMARKS.md)."""
    import ray

    with ray_runtime():
        assert ray.get(ray.remote(num_cpus=1)(niceness).remote()) == niceness()
