"""``massiveds build``: the stage graph from a manifest to a datastore, resumable stage by stage.

extract -> dedup (map, reduce) -> chunk -> shard -> embed -> train -> index -> catalog

Every stage records a completion marker (``build/<stage>/_SUCCESS.json``) holding its results,
and every per-file or per-shard unit inside a stage records its own marker, so a re-run skips
finished stages and finished units and a killed build resumes where it stopped.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import fcntl
import importlib.metadata
import math
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from rich.progress import Progress

from massiveds.errors import MassiveDSError
from massiveds.index import plan_index
from massiveds.layout import FORMAT_VERSION, DatastoreLayout, file_record, mark_done, read_json, shard_name, stage_done, write_json
from massiveds.manifest import LoadedManifest
from massiveds.recall import recall_summary
from massiveds.report import progress
from massiveds.schema import count_drops
from massiveds.sources.files import resolve_inputs
from massiveds.sources.plan import download_cache, plan_downloads
from pipelines import units
from pipelines.decontaminate import run_decontaminate
from pipelines.download import run_download
from pipelines.embed_stage import run_embed, run_embed_local
from pipelines.near_dedup import near_partitions, run_near_dedup
from pipelines.runtime import Stopwatch, ray_runtime, run_units

VERSIONED_PACKAGES = ("massiveds", "faiss-cpu", "faiss-gpu", "sentence-transformers", "torch", "transformers", "pyarrow", "ray")


@dataclass
class StageReport:
    """What one stage did in this run: ran or skipped, how long, and a one-line result."""

    name: str
    status: str
    seconds: float
    detail: str


class Build:
    """One build of a manifest into an output directory."""

    def __init__(self, loaded: LoadedManifest, out: Path, address: str | None = None, engine: str = "ray") -> None:
        self.loaded = loaded
        self.manifest = loaded.manifest
        self.layout = DatastoreLayout(out)
        self.build = self.layout.build
        self.address = address
        self.engine = engine
        self.reports: list[StageReport] = []
        self._progress: Progress | None = None
        self._resources = contextlib.ExitStack()
        self._current = ""
        self._ray_started = False

    # -- orchestration -------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Run every stage not yet done; returns the catalog."""
        resolve_inputs(self.loaded)  # missing local sources fail before anything is written
        self._claim_directory()
        self._resources.enter_context(build_lock(self.build))
        with self._resources, progress() as self._progress:
            downloads = plan_downloads(self.loaded, self.build)  # [] when every source is local
            if downloads:
                self._stage("download", lambda: run_download(self._download_runner, downloads, self.build))
            inputs = resolve_inputs(self.loaded, cache=download_cache(self.build))
            items = [inp.to_dict() | {"unit": inp.unit} for inp in inputs]
            extract = self._stage("extract", lambda: self._extract(items))
            removed: list[str] = []  # clean-up stages whose removals later stages skip
            if self.manifest.dedup.exact:
                self._stage("dedup", lambda: self._dedup(items))
                removed.append("exact")
            if self.manifest.dedup.near.enabled:
                self._stage("near_dedup", lambda: self._near_dedup(items, list(removed)))
                removed.append("near")
            if self.manifest.decontaminate.eval_sets:
                self._stage("decontaminate", lambda: self._decontaminate(items, list(removed)))
                removed.append("decontaminate")
            chunk = self._stage("chunk", lambda: self._chunk(items, removed))
            shards = self._stage("shard", lambda: self._shard(chunk))["shards"]
            embed = self._stage("embed", lambda: self._embed(shards))
            plan = self._stage("train", lambda: self._train(shards))["plan"]
            self._stage("index", lambda: self._index(shards, plan))
            return self._stage("catalog", lambda: self._catalog(extract, shards, embed, plan))["catalog"]

    def _claim_directory(self) -> None:
        record = {"manifest": self.loaded.path.name, "manifest_sha256": self.loaded.sha256}
        path = self.build / "build.json"
        if path.is_file():
            previous = read_json(path)
            if previous.get("manifest_sha256") != self.loaded.sha256:
                raise MassiveDSError(
                    f"{self.layout.root} holds a build of another manifest ({previous.get('manifest')}, changed since?); "
                    "use a new --out, or --force to start this one over"
                )
            return
        if self.layout.root.exists() and any(self.layout.root.iterdir()):
            raise MassiveDSError(f"{self.layout.root} exists and is not a massiveds build; choose an empty or new --out")
        write_json(path, record)

    def _stage(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        self._current = name
        folder = self.layout.stage(name)
        done = stage_done(folder)
        if done is not None:
            self.reports.append(StageReport(name, "skipped (done)", 0.0, done["summary"]))
            return done
        if not self._ray_started and self.engine == "ray":  # Ray starts only when some stage has work to do
            self._resources.enter_context(ray_runtime(self.address))
            self._ray_started = True
        clock = Stopwatch()
        result = fn()
        result["seconds"] = clock.seconds
        mark_done(folder, result)
        self.reports.append(StageReport(name, "ran", result["seconds"], result["summary"]))
        return result

    def _units(
        self,
        step: str,
        fn: Callable[..., dict[str, Any]],
        items: list[dict[str, Any]],
        kwargs: dict[str, Any],
        rate_key: str | None = None,
        **resources: Any,
    ) -> list[dict[str, Any]]:
        """Run one step of the current stage over its work units, with a progress bar and per-unit resume."""
        assert self._progress is not None
        task = self._progress.add_task(step, total=len(items), rate="")
        clock = Stopwatch()
        rows = 0

        def advance(result: dict[str, Any]) -> None:
            nonlocal rows
            rows += int(result.get(rate_key, 0)) if rate_key else 0
            rate = f"{rows / max(clock.seconds, 1e-9):,.0f} {rate_key}/s" if rate_key else ""
            self._progress.update(task, advance=1, rate=rate)  # type: ignore[union-attr]

        markers = self.layout.stage(self._current) / "units"
        if step != self._current:
            markers = markers / step
        return run_units(step, fn, items, kwargs, markers, advance, engine=self.engine, **resources)

    def _download_runner(
        self, step: str, fn: Callable[..., dict[str, Any]], items: list[dict[str, Any]], kwargs: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Downloads are I/O bound: a quarter CPU each, so several run per core."""
        return self._units(step, fn, items, kwargs, rate_key="bytes", num_cpus=0.25)

    def _run_step(
        self, step: str, fn: Callable[..., dict[str, Any]], items: list[dict[str, Any]], kwargs: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """``_units`` in the ``run(step, fn, items, kwargs)`` shape that multi-step stage drivers take."""
        return self._units(step, fn, items, kwargs)

    # -- stages ----------------------------------------------------------------------------

    def _extract(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        results = self._units("extract", units.extract_unit, items, {"manifest": self.manifest, "build": self.build}, rate_key="read")
        per_source: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        dropped: collections.Counter[str] = collections.Counter()
        for r in results:
            per_source[r["source"]].update({"read": r["read"], "kept": r["kept"]} | r["dropped"])
            dropped.update(r["dropped"])
        read, kept = sum(r["read"] for r in results), sum(r["kept"] for r in results)
        return {
            "read": read,
            "kept": kept,
            "dropped": dict(dropped),
            "sources": {s: dict(c) for s, c in per_source.items()},
            "summary": f"{len(items)} files, {read:,} records -> {kept:,} documents",
        }

    def _dedup(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return units.run_exact_dedup(self._run_step, items, self.build)

    def _near_dedup(self, items: list[dict[str, Any]], removed: list[str]) -> dict[str, Any]:
        partitions = near_partitions(self.build, items)
        return run_near_dedup(self._run_step, items, self.build, self.manifest.dedup.near, partitions, skip=removed)

    def _decontaminate(self, items: list[dict[str, Any]], removed: list[str]) -> dict[str, Any]:
        return run_decontaminate(self._run_step, items, self.build, self.manifest.decontaminate, self.loaded.base_dir, skip=removed)

    def _chunk(self, items: list[dict[str, Any]], removed: list[str]) -> dict[str, Any]:
        kwargs = {"manifest": self.manifest, "build": self.build, "removed": removed, "base_dir": self.loaded.base_dir}
        results = self._units("chunk", units.chunk_unit, items, kwargs, rate_key="passages")
        docs, passages = sum(r["documents"] for r in results), sum(r["passages"] for r in results)
        tokens = sum(r["tokens"] for r in results)
        if passages == 0:
            raise MassiveDSError(f"no passages: every document was dropped (see {self.layout.dropped}); check the sources and filters")
        parts = [{"part": f"{i['unit']}.parquet", "rows": r["passages"]} for i, r in zip(items, results, strict=True)]
        return {
            "documents": docs,
            "passages": passages,
            "tokens": tokens,
            "parts": parts,
            "summary": f"{docs:,} documents -> {passages:,} passages ({tokens:,} {self.manifest.chunk.unit})",
        }

    def _shard(self, chunk: dict[str, Any]) -> dict[str, Any]:
        shards = plan_shards(chunk["parts"], self.manifest.domain, self.manifest.shards.target_passages)
        for s in shards:
            s["unit"] = s["name"]
        kwargs = {"build": self.build, "shards_dir": self.layout.shards}
        results = self._units("shard", units.write_shard_unit, shards, kwargs, rate_key="passages")
        for s, r in zip(shards, results, strict=True):
            s["tokens"] = r["tokens"]
            del s["slices"]
        return {"shards": shards, "summary": f"{len(shards)} shards of <= {self.manifest.shards.target_passages:,} passages"}

    def _vectors_path(self, shard: dict[str, Any]) -> Path:
        if self.manifest.embed.store_vectors:
            return self.layout.shard(shard["name"]) / "vectors.npy"
        return self.build / "vectors" / f"{shard['name']}.npy"

    def _embed(self, shards: list[dict[str, Any]]) -> dict[str, Any]:
        markers = self.layout.stage("embed") / "units"
        pending = [s for s in shards if not (markers / f"{s['unit']}.json").is_file()]
        for s in pending:
            shutil.rmtree(self.build / "embeddings" / s["name"], ignore_errors=True)
        clock = Stopwatch()
        total = sum(s["count"] for s in pending)
        if pending:
            assert self._progress is not None
            task = self._progress.add_task("embed", total=total, rate="")

            def on_rows(n: int) -> None:
                done = self._progress.tasks[task].completed + n  # type: ignore[union-attr]
                self._progress.update(task, completed=done, rate=f"{done / max(clock.seconds, 1e-9):,.1f} passages/s")  # type: ignore[union-attr]

            spec = self.manifest.embed.model_dump()
            if self.engine == "local":
                run_embed_local(pending, self.layout.shards, self.build, spec, self.loaded.base_dir, on_rows)
            else:
                run_embed(pending, self.layout.shards, self.build, spec, self.loaded.base_dir, self.manifest.embed.workers, on_rows)
        embed_seconds = clock.seconds
        self._units(
            "vectors",
            units.consolidate_vectors_unit,
            shards,
            {"build": self.build, "paths": {s["name"]: str(self._vectors_path(s)) for s in shards}},
        )
        shutil.rmtree(self.build / "embeddings", ignore_errors=True)
        rate = total / embed_seconds if total else 0.0
        info = read_json(self.build / "embed" / "embedder.json")
        return {
            "embedder": info,
            "passages": total,
            "passages_per_s": rate,
            "summary": f"{total:,} passages with {info['model']} (dim {info['dim']}), {rate:,.1f} passages/s",
        }

    def _train(self, shards: list[dict[str, Any]]) -> dict[str, Any]:
        n = sum(s["count"] for s in shards)
        dim = int(np.load(self._vectors_path(shards[0]), mmap_mode="r").shape[1])
        plan = plan_index(n, dim, self.manifest.index).to_dict()
        item = {"unit": "trained"}
        kwargs = {
            "plan": plan,
            "shards": shards,
            "paths": {s["name"]: str(self._vectors_path(s)) for s in shards},
            "dest": self.layout.trained_index,
        }
        self._units("train", units.train_unit, [item], kwargs)
        return {"plan": plan, "summary": f"{plan['factory']} ({plan['reason']})"}

    def _index(self, shards: list[dict[str, Any]], plan: dict[str, Any]) -> dict[str, Any]:
        kwargs = {
            "paths": {s["name"]: str(self._vectors_path(s)) for s in shards},
            "trained_path": self.layout.trained_index,
            "shards_dir": self.layout.shards,
            "plan": plan,
        }
        results = self._units("index", units.add_shard_unit, shards, kwargs, rate_key="vectors")
        if not self.manifest.embed.store_vectors:
            shutil.rmtree(self.build / "vectors", ignore_errors=True)
        total = sum(r["vectors"] for r in results)
        return {"vectors": total, "summary": f"{total:,} vectors added to {len(shards)} shard indexes"}

    def _catalog(
        self, extract: dict[str, Any], shards: list[dict[str, Any]], embed: dict[str, Any], plan: dict[str, Any]
    ) -> dict[str, Any]:
        shard_records = []
        for s in shards:
            info = read_json(self.layout.shard(s["name"]) / "shard.json")
            shard_records.append(
                {k: info[k] for k in ("name", "domain", "id_start", "count", "list_balance", "files")} | {"tokens": s["tokens"]}
            )
        chunk = stage_done(self.layout.stage("chunk")) or {}
        dropped = dropped_counts(self.layout)
        decon = stage_done(self.layout.stage("decontaminate"))
        seconds = {r.name: round(r.seconds, 2) for r in self.reports}
        catalog = {
            "format_version": FORMAT_VERSION,
            "name": self.manifest.name,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "embedder": embed["embedder"],
            "index": plan,
            "chunk": self.manifest.chunk.model_dump(),
            "trained_index": {"file": self.layout.trained_index.name} | file_record(self.layout.trained_index),
            "shards": shard_records,
            "domains": {
                self.manifest.domain: {
                    "documents": chunk.get("documents", 0),
                    "passages": sum(s["count"] for s in shards),
                    "tokens": sum(s["tokens"] for s in shards),
                    "shards": len(shards),
                }
            },
            "build": {
                "records_read": extract["read"],
                "documents_kept": chunk.get("documents", 0),
                "dropped": dropped,
                "decontamination": decon["eval_sets"] if decon else None,
                "sources": extract["sources"],
                "embed_passages_per_s": round(embed["passages_per_s"], 2),
                "stage_seconds": seconds,
            },
            "manifests": [self.loaded.record()],
            "versions": _versions(),
        }
        catalog["recall"] = recall_summary(self.layout.root, catalog=catalog)  # recall@10 at the default nprobe
        write_json(self.layout.catalog, catalog)
        return {"catalog": catalog, "summary": f"{self.layout.catalog}"}


@contextlib.contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder/lock`` for one builder; the OS releases it if the builder dies."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise MassiveDSError(f"{folder.parent} is being built by {holder}; wait for it to finish or stop it") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def plan_shards(parts: list[dict[str, Any]], domain: str, target: int) -> list[dict[str, Any]]:
    """Cut the concatenation of chunk outputs (in order) into balanced shards of at most ``target`` passages.

    Passage ids are positions in that concatenation, so shard ``i`` holds the contiguous id range
    ``[id_start, id_start + count)`` and carries the (part, first row, end row) slices that fill it.
    """
    total = sum(p["rows"] for p in parts)
    n_shards = max(1, math.ceil(total / target))
    bounds = [round(i * total / n_shards) for i in range(n_shards + 1)]
    shards = []
    offsets = np.cumsum([0] + [p["rows"] for p in parts])
    for i in range(n_shards):
        lo, hi = bounds[i], bounds[i + 1]
        slices = []
        for p, part in enumerate(parts):
            a, b = max(lo, int(offsets[p])), min(hi, int(offsets[p + 1]))
            if a < b:
                slices.append([part["part"], a - int(offsets[p]), b - int(offsets[p])])
        shards.append({"name": shard_name(domain, i), "domain": domain, "id_start": lo, "count": hi - lo, "slices": slices})
    return shards


def dropped_counts(layout: DatastoreLayout) -> dict[str, int]:
    """Dropped documents per ``stage:reason``, counted from the drop records under ``build/dropped``."""
    counts: collections.Counter[str] = collections.Counter()
    for path in sorted(layout.dropped.rglob("*.parquet")):
        count_drops(pq.read_table(path, columns=["stage", "reason"]), counts)
    return dict(sorted(counts.items()))


def _versions() -> dict[str, str]:
    out = {}
    for pkg in VERSIONED_PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def build(manifest: LoadedManifest, out: Path, address: str | None = None, force: bool = False, engine: str = "ray") -> Build:
    """Build ``manifest`` into ``out`` (``force`` wipes a previous build there first); returns the finished Build.

    ``engine="local"`` runs every unit in this process instead of on Ray (same outputs).
    """
    if force and out.exists():
        if not (out / "build" / "build.json").is_file() and any(out.iterdir()):
            raise MassiveDSError(f"{out} is not a massiveds build; refusing to delete it with --force")
        shutil.rmtree(out)
    b = Build(manifest, out, address, engine)
    b.run()
    return b
