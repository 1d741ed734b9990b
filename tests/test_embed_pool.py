"""The embed stage's actor pool: how many actors and how many torch threads each, and that they fit the nodes."""

from __future__ import annotations

import pytest

from massiveds.core.errors import MassiveDSError
from pipelines.ray_executor import plan_pool


def _fits(node_cpus: list[int], actors: int, threads: int) -> bool:
    """Whether ``actors`` actors of ``threads`` threads fit on these nodes' cores, and Ray can place them (1 CPU each)."""
    return sum(c // threads for c in node_cpus) >= actors and actors <= sum(node_cpus)


@pytest.mark.parametrize(("nodes", "workers", "actors", "threads"), [
    ([2], "auto", 1, 2),        # this machine: one actor on both cores
    ([2], 2, 2, 1),             # two actors of one thread
    ([1, 1], "auto", 1, 1),     # two 1-CPU nodes: an actor of 2 threads would fit on neither
    ([16, 16], "auto", 4, 8),   # one actor per 8 CPUs
    ([16, 16], 2, 2, 16),
    ([16, 8], 2, 2, 8),         # 12 threads each would fit one actor only
    ([64], 3, 3, 21),
])
def test_cpu_actors_fit_the_nodes(nodes: list[int], workers: int | str, actors: int, threads: int) -> None:
    assert plan_pool("auto", workers, nodes, gpus=0) == (actors, 0, threads)
    assert _fits(nodes, actors, threads)


def test_one_fp16_actor_per_gpu_unless_the_manifest_says_cpu() -> None:
    assert plan_pool("auto", "auto", [32], gpus=4) == (4, 1, 4)
    assert plan_pool("cuda", 2, [32], gpus=4) == (2, 1, 4)
    assert plan_pool("cpu", "auto", [32], gpus=4)[:2] == (4, 0)


@pytest.mark.parametrize(("device", "gpus", "message"), [("auto", 0, "has 2 CPUs"), ("auto", 1, "has 1 GPU")])
def test_more_workers_than_the_cluster_holds_is_refused(device: str, gpus: int, message: str) -> None:
    with pytest.raises(MassiveDSError, match=f"embed.workers is 3 but the Ray cluster {message}: set embed.workers to"):
        plan_pool(device, 3, [2], gpus=gpus)
