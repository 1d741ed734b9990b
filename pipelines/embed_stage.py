"""The embedding stage on Ray Data: passage ranges -> a fixed pool of model actors -> fp16 parts."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from massiveds.embed import Embedder
from massiveds.errors import MassiveDSError
from massiveds.layout import write_json
from pipelines.runtime import WORKER_RETRIES, count_nodes, crash_if_asked, current_node, exit_worker_if_asked
from pipelines.units import covered_rows, read_passage_range, write_embeddings_part

#: Rows read per input block, sorted longest first so that the model batches cut from it hold like lengths;
#: each actor call gets ``ACTOR_BATCHES`` model batches (one progress step and one resumable part).
READ_ROWS = 4096
ACTOR_BATCHES = 16
#: CPUs a read or write task reserves: they wait on the disk far more than they compute.
IO_CPUS = 0.1
#: CPUs a model actor reserves whatever its threads, so that the reads and writes around it always find room
#: (an actor reserving all of a node's CPUs held its last write back by 3 s here) and ``embed.workers`` may
#: equal the CPUs.
ACTOR_CPUS = 1 - IO_CPUS


class EmbedActor:
    """One model per actor; embeds (passage_id, text) batches into (passage_id, fp16 vector, the actor's Ray node)."""

    def __init__(self, spec: dict[str, Any], base_dir: str | None, threads: int, info_path: str) -> None:
        if threads:  # 0: keep torch's default
            os.environ["OMP_NUM_THREADS"] = str(threads)  # Ray set it to 1, and OpenMP reads it once, when torch loads
            import torch

            torch.set_num_threads(threads)
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
        write_json(Path(info_path), self.embedder.info())
        self.node = current_node() or ""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        vectors = self.embedder.encode_passages([str(t) for t in batch["text"]])
        seconds = time.perf_counter() - start  # spread over the rows, so that any later slicing keeps the sum
        exit_worker_if_asked("embed")
        n = len(vectors)
        return {"passage_id": batch["passage_id"], "vector": vectors.astype(np.float16), "node": np.full(n, self.node),
                "model_s": np.full(n, seconds / max(n, 1))}


def _read(batch: pa.Table, shards_dir: str) -> pa.Table:
    items = [json.loads(i) for i in batch.column("item").to_pylist()]
    return pa.concat_tables([read_passage_range(i, Path(shards_dir)) for i in items])


def _write(batch: dict[str, np.ndarray], shards: list[dict[str, Any]], build: str) -> pa.Table:
    ids = np.asarray(batch["passage_id"])
    write_embeddings_part(ids, np.asarray(batch["vector"]), shards, Path(build))
    shard_of = np.searchsorted([s["id_start"] for s in shards], ids, side="right") - 1
    rows = pa.table({"shard": [shards[i]["name"] for i in shard_of], "node": [str(n) for n in batch["node"]], "model_s": batch["model_s"]})
    counts = rows.group_by(["shard", "node"], use_threads=False).aggregate([("model_s", "count"), ("model_s", "sum")])
    return counts.rename_columns(["shard", "node", "rows", "model_s"])


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


def run_embed_local(
    items: list[dict[str, Any]],
    shards: list[dict[str, Any]],
    shards_dir: Path,
    build: Path,
    spec: dict[str, Any],
    base_dir: Path,
    on_rows: Callable[[int], None],
) -> dict[str, Any]:
    """The embed stage in this process: the same reads, model calls and writes, without Ray (results as ``run_embed``'s)."""
    actor = EmbedActor(**_actor_config(spec, base_dir, build, threads=0))
    written: dict[str, int] = {}
    model_s = 0.0
    block = spec["batch_size"] * ACTOR_BATCHES
    parts = 0
    for item in items:
        table = read_passage_range(item, shards_dir)
        for start in range(0, table.num_rows, block):
            piece = table.slice(start, block)
            out = actor(
                {"passage_id": piece.column("passage_id").to_numpy(), "text": np.array(piece.column("text").to_pylist(), dtype=object)}
            )
            model_s += float(out["model_s"].sum())
            for part in write_embeddings_part(out["passage_id"], out["vector"], shards, build):
                written[part["shard"]] = written.get(part["shard"], 0) + part["rows"]
                on_rows(part["rows"])
                parts += 1
                crash_if_asked("embed", parts)
    return {"shards": written, "nodes": {}, "model_seconds": model_s, "actors": 1}


def embed_items(shards: list[dict[str, Any]], build: Path) -> list[dict[str, Any]]:
    """The embed stage's input blocks: windows of ``READ_ROWS`` rows of each shard holding rows no embedding part covers.

    Windows keep their place on a resumed run (a part's rows are scattered over its window, since blocks
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


def _actor_config(spec: dict[str, Any], base_dir: Path, build: Path, threads: int) -> dict[str, Any]:
    return {"spec": spec, "base_dir": str(base_dir), "threads": threads, "info_path": str(build / "embed" / "embedder.json")}


def run_embed(
    items: list[dict[str, Any]],
    shards: list[dict[str, Any]],
    shards_dir: Path,
    build: Path,
    spec: dict[str, Any],
    base_dir: Path,
    workers: int | str,
    on_rows: Callable[[int], None],
) -> dict[str, Any]:
    """Embed the passages of ``items`` (blocks of ``shards``); returns rows written per shard (``shards``) and per Ray node
    (``nodes``), the seconds the models spent encoding (``model_seconds``, summed over the ``actors``).

    A task whose worker dies is run again, and a dead model actor is restarted and its batch retried
    (``WORKER_RETRIES`` times); a batch's parts are written by the task after it, so none is half-written.
    """
    import ray

    actors, gpus, threads = pool_shape(spec["device"], workers)
    ds: ray.data.Dataset = ray.data.from_items([{"item": json.dumps(i)} for i in items], override_num_blocks=max(1, len(items)))
    ds = ds.map_batches(
        _read,  # type: ignore[arg-type]
        batch_size=1,
        batch_format="pyarrow",
        fn_kwargs={"shards_dir": str(shards_dir)},
        max_retries=WORKER_RETRIES,
        num_cpus=IO_CPUS,
    )
    ds = ds.map_batches(
        EmbedActor,
        batch_size=spec["batch_size"] * ACTOR_BATCHES,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        fn_constructor_kwargs=_actor_config(spec, base_dir, build, threads),
        num_gpus=gpus,
        num_cpus=ACTOR_CPUS,
        max_restarts=WORKER_RETRIES,
        max_task_retries=WORKER_RETRIES,
    )
    ds = ds.map_batches(
        _write,  # type: ignore[arg-type]
        batch_size=None,
        batch_format="numpy",
        fn_kwargs={"shards": shards, "build": str(build)},
        max_retries=WORKER_RETRIES,
        num_cpus=IO_CPUS,
    )
    written: dict[str, int] = {}
    nodes: dict[str, int] = {}
    model_s = 0.0
    for parts, row in enumerate(ds.iter_rows(), start=1):
        written[row["shard"]] = written.get(row["shard"], 0) + int(row["rows"])
        count_nodes(nodes, row["node"] or None, int(row["rows"]))
        model_s += float(row["model_s"])
        on_rows(int(row["rows"]))
        crash_if_asked("embed", parts)
    return {"shards": written, "nodes": nodes, "model_seconds": model_s, "actors": actors}
