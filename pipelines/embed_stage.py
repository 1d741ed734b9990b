"""The embedding stage: a fixed pool of model actors, each reading a slice of passages, embedding it and writing fp16 parts."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import write_json
from massiveds.encode.embed import Embedder
from pipelines.runtime import WORKER_RETRIES, count_nodes, crash_if_asked, current_node, exit_worker_if_asked
from pipelines.units import covered_rows, read_passage_range, write_embeddings_part

#: Rows of a shard read as one window, sorted longest first so that the model batches cut from it hold like
#: lengths; a call embeds ``CALL_BATCHES`` model batches of a window (one progress step and one resumable part).
READ_ROWS = 4096
CALL_BATCHES = 16


class EmbedWorker:
    """One model; a call reads its slice of a passage window, embeds it and writes the vectors as fp16 parts.

    The worker reads and writes for itself and returns only what it wrote, so nothing but a few numbers
    crosses between it and the driver, and the driver waits without polling while the models run.
    """

    def __init__(self, spec: dict[str, Any], base_dir: str | None, threads: int, build: str, shards: list[dict[str, Any]],
                 shards_dir: str) -> None:
        if threads:  # 0: keep torch's default
            os.environ["OMP_NUM_THREADS"] = str(threads)  # Ray set it to 1, and OpenMP reads it once, when torch loads
            import torch

            torch.set_num_threads(threads)
        self.failed: str | None = None
        try:
            self.embedder = Embedder(
                spec["model"],
                device=spec["device"],
                normalize=spec["normalize"],
                max_length=spec["max_length"],
                query_prefix=spec["query_prefix"],
                passage_prefix=spec["passage_prefix"],
                batch_size=spec["batch_size"],
                base_dir=Path(base_dir) if base_dir else None,
            )
        except MassiveDSError as exc:  # raised by the calls: Ray would restart a failed constructor and retry it in vain
            self.failed = str(exc)
            return
        self.build, self.shards, self.shards_dir = Path(build), shards, Path(shards_dir)
        self.call_rows = spec["batch_size"] * CALL_BATCHES
        self.window: tuple[tuple[str, int, int], pa.Table] | None = None
        write_json(self.build / "embed" / "embedder.json", self.embedder.info())
        self.node = current_node()

    def embed(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        """Embed slice ``call["slice"]`` of the window ``call`` names; per part written: shard, rows, tokens, node, model seconds."""
        if self.failed:
            raise MassiveDSError(self.failed)
        rows = self._window(call).slice(call["slice"] * self.call_rows, self.call_rows)
        texts = rows.column("text").to_pylist()
        start = time.perf_counter()
        vectors = self.embedder.encode_passages(texts)
        seconds = time.perf_counter() - start
        tokens = self.embedder.count_passage_tokens(texts)
        exit_worker_if_asked("embed")
        parts = write_embeddings_part(rows.column("passage_id").to_numpy(), vectors, self.shards, self.build)
        share = [p["rows"] / len(rows) for p in parts]
        return [p | {"node": self.node, "model_s": seconds * f, "tokens": round(tokens * f)} for p, f in zip(parts, share, strict=True)]


    def _window(self, call: dict[str, Any]) -> pa.Table:
        """The window ``call`` slices, sorted; kept for the next call, which is mostly the same window's next slice
        (a window is ~12 ms to read and sort, 5 % of a 1,024-passage call on a GPU)."""
        key = (call["shard"], call["start"], call["stop"])
        if self.window is None or self.window[0] != key:
            self.window = (key, read_passage_range(call, self.shards_dir))
        return self.window[1]


def embed_calls(items: list[dict[str, Any]], batch_size: int) -> list[dict[str, Any]]:
    """The model calls that embed ``items`` (windows from ``embed_items``): each window's rows, in slices of ``CALL_BATCHES`` batches."""
    call_rows = batch_size * CALL_BATCHES
    return [i | {"slice": k} for i in items for k in range(math.ceil(i["rows"] / call_rows))]


def pool_shape(device: str, workers: int | str) -> tuple[int, int, int]:
    """(actors, GPUs per actor, torch threads per actor) on the running Ray cluster."""
    import ray

    node_cpus = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"]]
    return plan_pool(device, workers, node_cpus, int(ray.cluster_resources().get("GPU", 0)))


def plan_pool(device: str, workers: int | str, node_cpus: list[int], gpus: int) -> tuple[int, int, int]:
    """The actor pool for nodes of ``node_cpus`` CPUs and ``gpus`` GPUs in all; ``workers`` is ``embed.workers``.

    One actor per GPU (fp16, 4 torch threads), else one per 8 CPUs, with the CPUs shared out among the
    actors as torch threads, no more than one node holds.
    """
    on_gpus = device != "cpu" and gpus > 0
    have, unit = (gpus, "GPU") if on_gpus else (max(1, sum(node_cpus)), "CPU")
    unit += "" if have == 1 else "s"
    actors = (gpus if on_gpus else max(1, have // 8)) if workers == "auto" else int(workers)
    if actors > have:
        raise MassiveDSError(f"embed.workers is {actors} but the Ray cluster has {have} {unit}: set embed.workers to {have} or fewer")
    if on_gpus:
        return actors, 1, 4
    threads = have // actors
    while threads > 1 and sum(c // threads for c in node_cpus) < actors:
        threads -= 1
    return actors, 0, threads


def embed_items(shards: list[dict[str, Any]], build: Path) -> list[dict[str, Any]]:
    """The embed stage's windows: ``READ_ROWS`` rows of each shard holding rows no embedding part covers.

    Windows keep their place on a resumed run (a part's rows are scattered over its window, since windows
    are sorted by length), and a partly done window lists the rows still to embed in ``only``.
    """
    items = []
    for s in shards:
        covered = covered_rows(s, build)
        for start in range(0, s["count"], READ_ROWS):
            stop = min(start + READ_ROWS, s["count"])
            todo = np.flatnonzero(~covered[start:stop]) + start
            if len(todo) == 0:
                continue
            items.append({"shard": s["name"], "start": start, "stop": stop, "rows": len(todo)})
            if len(todo) < stop - start:
                items[-1]["only"] = todo.tolist()
    return items


def _tally(results: Iterable[list[dict[str, Any]]], actors: int, on_rows: Callable[[int, int], None]) -> dict[str, Any]:
    """Sum the calls' parts as they come: rows per shard (``shards``) and per Ray node (``nodes``), tokens, model seconds."""
    written: dict[str, int] = {}
    nodes: dict[str, int] = {}
    model_s, tokens, parts = 0.0, 0, 0
    for result in results:
        for part in result:
            written[part["shard"]] = written.get(part["shard"], 0) + part["rows"]
            count_nodes(nodes, part["node"], part["rows"])
            model_s += part["model_s"]
            tokens += part["tokens"]
            on_rows(part["rows"], part["tokens"])
            parts += 1
            crash_if_asked("embed", parts)
    return {"shards": written, "nodes": nodes, "model_seconds": model_s, "tokens": tokens, "actors": actors}


def run_embed(
    items: list[dict[str, Any]],
    shards: list[dict[str, Any]],
    shards_dir: Path,
    build: Path,
    spec: dict[str, Any],
    base_dir: Path,
    workers: int | str,
    on_rows: Callable[[int, int], None],
    engine: str = "ray",
) -> dict[str, Any]:
    """Embed the passages of ``items`` (windows of ``shards``) on a fixed pool of Ray actors; ``on_rows(passages, tokens)``
    follows each part. Returns rows written per shard (``shards``) and per Ray node (``nodes``), the ``tokens`` the
    models read and the seconds they spent encoding (``model_seconds``, summed over the ``actors``).

    Each actor takes the next call as soon as it is free; the driver blocks on the results. A dead actor
    is restarted and its call retried (``WORKER_RETRIES`` times); a call writes its parts atomically after
    its model call, so a retried call rewrites the same files and none is half-written. ``engine="local"``
    makes the same calls one after the other in this process, without Ray.
    """
    config: dict[str, Any] = {"spec": spec, "base_dir": str(base_dir), "build": str(build), "shards": shards, "shards_dir": str(shards_dir)}
    calls = embed_calls(items, spec["batch_size"])
    if engine == "local":
        worker = EmbedWorker(**config, threads=0)
        return _tally((worker.embed(call) for call in calls), 1, on_rows)
    import ray
    from ray.util import ActorPool

    actors, gpus, threads = pool_shape(spec["device"], workers)
    remote = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=WORKER_RETRIES, max_task_retries=WORKER_RETRIES)(EmbedWorker)
    handles: list[Any] = [remote.remote(**config, threads=threads) for _ in range(actors)]
    result = _tally(ActorPool(handles).map_unordered(lambda actor, call: actor.embed.remote(call), calls), actors, on_rows)
    for handle in handles:  # the models' memory and GPUs go back before the index stages (on an error the build ends)
        ray.kill(handle)
    return result
