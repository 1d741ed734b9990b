"""embed: every passage embedded by a fixed pool of model workers, written as fp16 parts, then one ``vectors.npy`` per shard.

    embed     pool call per slice   a worker reads its slice of a ``READ_ROWS``-passage window of a
                                    shard (sorted longest first, so model batches hold like lengths),
                                    embeds it and writes build/embeddings/<shard>/<ids>.npz
    vectors   per shard             the shard's parts gathered into fp16 ``vectors.npy`` in id order

Resume: the parts on disk are the state. A window's rows that no finished part covers are embedded
(``only``); a killed build's parts are kept, so no passage is embedded twice.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from massiveds.core.catalog import EmbedderRecord
from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import ShardFiles, atomic_path, read_json, write_array, write_json
from massiveds.core.manifest import Embed as EmbedSpec
from massiveds.core.passages import PassageFile
from massiveds.encode.embed import DEFAULT_BATCH, Embedder, EmbedderKind, declared_kind, resolve_model
from massiveds.encode.static import is_static_folder
from pipelines.stage import BuildContext, PoolStep, Stage, StageRecord, Step, StepRunner, UnitResult, WorkItem
from pipelines.stages.shard import ShardItem, ShardStageRecord

#: Rows of a shard read as one window, sorted longest first so that the model batches cut from it hold like
#: lengths; a call embeds ``CALL_BATCHES`` model batches of a window (one progress step, one resumable part).
READ_ROWS = 4096
CALL_BATCHES = 16


class Window(WorkItem):
    """Rows ``[start, stop)`` of a shard that still need vectors (all of them, or those in ``only``)."""

    shard: str
    start: int
    stop: int
    rows: int
    only: list[int] | None = None


class EmbedCall(Window):
    """One model call: slice ``slice`` (of ``CALL_BATCHES`` model batches) of a window."""

    slice: int


class EmbedResult(UnitResult):
    """What one call did: passages embedded, tokens the model read, seconds in the model, the worker that did it."""

    passages: int
    tokens: int
    model_s: float
    worker: str


def read_passage_range(window: Window, shards_dir: Path, by_length: bool = True) -> pa.Table:
    """(passage_id, text) of a window's rows, longest text first (``by_length``): model batches cut in this order hold like lengths.

    A static model pads nothing, so its windows keep their order.
    """
    pf = PassageFile(shards_dir / window.shard / ShardFiles.PASSAGES)
    b = pf.batch_rows
    batches = [pf.read_batch(i) for i in range(window.start // b, (window.stop - 1) // b + 1)]
    table = pa.Table.from_batches(batches).select(["passage_id", "text"])
    table = table.slice(window.start - (window.start // b) * b, window.stop - window.start)
    if window.only is not None:  # a resumed window: the rows no finished part covers
        table = table.take(pa.array(np.asarray(window.only, dtype=np.int64) - window.start))
    if not by_length:
        return table
    return table.take(pc.array_sort_indices(pc.utf8_length(table.column("text")), order="descending"))


def write_embeddings_part(ids: np.ndarray, vectors: np.ndarray, shards: Sequence[ShardItem], build: Path) -> dict[str, int]:
    """Write a batch of embeddings as fp16 ``.npz`` parts, one per shard the batch touches; rows written per shard.

    A batch's ids are not a contiguous range (windows are sorted by length), so a part is named by its id
    range and a digest of its ids: two batches of one range never share a file.
    """
    out = {}
    for shard in shards:
        mask = (ids >= shard.id_start) & (ids < shard.id_start + shard.count)
        if not mask.any():
            continue
        part_ids = ids[mask].astype(np.int64)
        digest = hashlib.blake2b(np.sort(part_ids).tobytes(), digest_size=8).hexdigest()
        path = build / "embeddings" / shard.name / f"{part_ids.min():012d}-{part_ids.max():012d}-{digest}.npz"
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, ids=part_ids, vectors=vectors[mask].astype(np.float16))
        out[shard.name] = int(mask.sum())
    return out


def covered_rows(shard: ShardItem, build: Path) -> np.ndarray:
    """Which rows of a shard finished embedding parts cover (bool per row): a killed build's parts are kept."""
    covered = np.zeros(shard.count, dtype=bool)
    for part in (build / "embeddings" / shard.name).glob("*.npz"):
        with np.load(part, allow_pickle=False) as z:
            covered[z["ids"] - shard.id_start] = True
    return covered


def windows(shards: Sequence[ShardItem], build: Path) -> list[Window]:
    """The ``READ_ROWS``-row windows of each shard that hold rows no embedding part covers.

    Windows keep their place on a resumed run (a part's rows are scattered over its window, since windows
    are sorted by length), and a partly done window lists the rows still to embed in ``only``.
    """
    out = []
    for s in shards:
        covered = covered_rows(s, build)
        for start in range(0, s.count, READ_ROWS):
            stop = min(start + READ_ROWS, s.count)
            todo = np.flatnonzero(~covered[start:stop]) + start
            if len(todo):
                out.append(Window(unit=f"{s.name}@{start}", shard=s.name, start=start, stop=stop, rows=len(todo),
                                  only=todo.tolist() if len(todo) < stop - start else None))
    return out


def batch_size_of(spec: EmbedSpec, kind: EmbedderKind) -> int:
    """The manifest's model batch size, or the default for the model's kind."""
    return DEFAULT_BATCH[kind] if spec.batch_size == "auto" else spec.batch_size


def calls_of(windows: Sequence[Window], batch_size: int) -> list[EmbedCall]:
    """The model calls that embed ``windows``: each window's rows, in slices of ``CALL_BATCHES`` batches."""
    call_rows = batch_size * CALL_BATCHES
    return [EmbedCall(**w.model_dump() | {"unit": f"{w.unit}#{k}"}, slice=k) for w in windows for k in range(math.ceil(w.rows / call_rows))]


class EmbedWorker:
    """One model; a call reads its slice of a passage window, embeds it and writes the vectors as fp16 parts.

    The worker reads and writes for itself and returns only what it did, so nothing but a few numbers
    crosses between it and the driver. It keeps its last sorted window: the next call is mostly the same
    window's next slice. A model that cannot load fails the first call with its one-line error (a Ray
    actor whose constructor fails is restarted and retried in vain).
    """

    def __init__(self, spec: EmbedSpec, base_dir: Path | None, threads: int, build: Path, shards: Sequence[ShardItem],
                 shards_dir: Path) -> None:
        kind = declared_kind(spec.model, base_dir)
        if threads:  # 0: keep torch's default
            os.environ["OMP_NUM_THREADS"] = str(threads)  # Ray set it to 1, and OpenMP reads it once, when torch loads
            os.environ["RAYON_NUM_THREADS"] = str(threads)  # the tokenizers' thread pool, made on its first parallel call
            if not is_static_folder(resolve_model(spec.model, base_dir)):  # torch runs this model (a static folder: NumPy)
                import torch

                torch.set_num_threads(threads)
        if kind == "static" and threads != 1:  # a static model's time goes to tokenizing: give it the worker's threads
            os.environ["TOKENIZERS_PARALLELISM"] = "true"
        self.failed: str | None = None
        self.name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.build, self.shards, self.shards_dir = build, list(shards), shards_dir
        batch_size = batch_size_of(spec, kind)
        self.call_rows = batch_size * CALL_BATCHES
        self.by_length = kind == "transformer"
        self.window: tuple[tuple[str, int, int], pa.Table] | None = None
        try:
            self.embedder = Embedder(spec.model, device=spec.device, normalize=spec.normalize, max_length=spec.max_length,
                                     query_prefix=spec.query_prefix, passage_prefix=spec.passage_prefix, batch_size=batch_size,
                                     base_dir=base_dir)
        except MassiveDSError as exc:
            self.failed = str(exc)
            return
        write_json(self.build / "embed" / "embedder.json", self.embedder.info())

    def __call__(self, call: EmbedCall) -> EmbedResult:
        if self.failed:
            raise MassiveDSError(self.failed)
        key = (call.shard, call.start, call.stop)
        if self.window is None or self.window[0] != key:
            self.window = (key, read_passage_range(call, self.shards_dir, self.by_length))
        rows = self.window[1].slice(call.slice * self.call_rows, self.call_rows)
        texts = rows.column("text").to_pylist()
        start = time.perf_counter()
        vectors, tokens = self.embedder.encode_passages_counted(texts)
        seconds = time.perf_counter() - start
        write_embeddings_part(rows.column("passage_id").to_numpy(), vectors, self.shards, self.build)
        return EmbedResult(unit=call.unit, passages=len(rows), tokens=tokens, model_s=seconds, worker=self.name)


@dataclass(frozen=True)
class EmbedWorkers:
    """Makes the pool's workers (in the process each runs in) from the build's embedder settings."""

    spec: EmbedSpec
    base_dir: Path | None
    build: Path
    shards: tuple[ShardItem, ...]
    shards_dir: Path

    def __call__(self, threads: int) -> EmbedWorker:
        return EmbedWorker(self.spec, self.base_dir, threads, self.build, self.shards, self.shards_dir)


class VectorsResult(UnitResult):
    vectors: int


@dataclass(frozen=True)
class GatherVectors:
    """vectors: a shard's embedding parts gathered into one fp16 ``vectors.npy`` in id order, checking none is missing."""

    build: Path
    paths: dict[str, Path]

    def __call__(self, shard: ShardItem) -> VectorsResult:
        ids_list, vec_list = [], []
        for p in sorted((self.build / "embeddings" / shard.name).glob("*.npz")):
            with np.load(p, allow_pickle=False) as z:
                ids_list.append(z["ids"])
                vec_list.append(z["vectors"])
        ids = np.concatenate(ids_list) if ids_list else np.zeros(0, np.int64)
        uniq, first = np.unique(ids, return_index=True)
        expected = np.arange(shard.id_start, shard.id_start + shard.count, dtype=np.int64)
        if len(uniq) != len(expected) or not np.array_equal(uniq, expected):
            raise RuntimeError(f"shard {shard.name}: embeddings cover {len(uniq)} of {shard.count} passages")
        vectors = np.concatenate(vec_list)[first]
        write_array(self.paths[shard.name], np.ascontiguousarray(vectors, dtype=np.float16))
        return VectorsResult(unit=shard.name, vectors=len(vectors))


def vectors_paths(ctx: BuildContext, shards: Sequence[ShardItem]) -> dict[str, Path]:
    """Where each shard's consolidated vectors live: in the shard (``embed.store_vectors``) or in the build folder."""
    if ctx.manifests.embed.store_vectors:
        return {s.name: ctx.layout.shard(s.name) / ShardFiles.VECTORS for s in shards}
    return {s.name: ctx.build / "vectors" / f"{s.name}.npy" for s in shards}


class EmbedRecord(StageRecord):
    embedder: EmbedderRecord
    passages: int
    passages_earlier: int
    passages_per_s: float
    tokens: int
    tokens_per_s: float
    #: the share of the embed step's wall time the models spent encoding (what reads, writes and startup leave them)
    model_busy: float | None


class EmbedStage(Stage):
    name = "embed"
    record = EmbedRecord
    needs = ("shard",)
    holds_pool = True

    def run(self, ctx: BuildContext, executor: StepRunner) -> StageRecord:
        shards = ctx.record("shard", ShardStageRecord).shards
        todo = windows(shards, ctx.build)  # rows of a killed run's finished parts are not embedded again
        spec, total = ctx.manifests.embed, sum(w.rows for w in todo)
        workers = EmbedWorkers(spec, ctx.manifests.first.base_dir, ctx.build, tuple(shards), ctx.layout.shards)
        step = PoolStep("embed", workers, EmbedResult, spec.device, spec.workers, rates=("passages", "tokens"))
        clock = time.perf_counter()
        batch_size = batch_size_of(spec, declared_kind(spec.model, ctx.manifests.first.base_dir))
        results = executor.pool(step, calls_of(todo, batch_size), total)
        seconds = time.perf_counter() - clock
        paths = vectors_paths(ctx, shards)
        executor.map(Step("vectors", GatherVectors(ctx.build, paths), VectorsResult), shards)
        shutil.rmtree(ctx.build / "embeddings", ignore_errors=True)
        tokens, model_s = sum(r.tokens for r in results), sum(r.model_s for r in results)
        actors = len({r.worker for r in results})
        busy = model_s / (seconds * actors) if results and seconds else None
        rate, token_rate = (total / seconds, tokens / seconds) if total and seconds else (0.0, 0.0)
        info = EmbedderRecord.model_validate(read_json(ctx.build / "embed" / "embedder.json"))
        earlier = sum(s.count for s in shards) - total
        return EmbedRecord(
            embedder=info, passages=total, passages_earlier=earlier, passages_per_s=rate, tokens=tokens, tokens_per_s=token_rate,
            model_busy=busy,
            summary=f"{total:,} passages with {info.model} ({info.kind}, dim {info.dim}), "
            f"{rate:,.1f} passages/s, {token_rate:,.0f} tokens/s"
            + (f", models busy {busy:.0%} of the stage" if busy is not None else "")
            + (f"; {earlier:,} embedded by an earlier run" if earlier else ""),
        )
