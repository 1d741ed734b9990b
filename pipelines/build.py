"""``massiveds build``: the stage graph from one or several manifests to a datastore, resumable stage by stage.

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
import re
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from rich.progress import Progress

from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import FORMAT_VERSION, DatastoreLayout, file_record, mark_done, read_json, shard_name, stage_done, write_json
from massiveds.core.manifest import LoadedManifest, NearDedup
from massiveds.core.report import progress
from massiveds.core.schema import count_drops
from massiveds.encode.index import plan_index
from massiveds.ingest.sources.files import resolve_inputs
from massiveds.ingest.sources.plan import download_cache, plan_downloads
from massiveds.store.recall import recall_summary
from pipelines import units
from pipelines.decontaminate import run_decontaminate
from pipelines.download import run_download
from pipelines.embed_stage import embed_items, run_embed
from pipelines.manifest_set import ManifestSet
from pipelines.near_dedup import near_partitions, run_near_dedup
from pipelines.runtime import (
    NODE_KEY,
    WORKER_RETRIES,
    Stopwatch,
    count_nodes,
    crash_if_asked,
    ray_runtime,
    remote_user_error,
    run_units,
    worker_death,
)

#: ``s3://bucket/x`` as a ``Path`` reads ``s3:/bucket/x``: a scheme of two or more letters and a colon (not ``C:/``).
URL_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")
VERSIONED_PACKAGES = ("massiveds", "faiss-cpu", "faiss-gpu", "sentence-transformers", "torch", "transformers", "pyarrow", "ray")


@dataclass
class StageReport:
    """What one stage did in this run: ran or skipped, how long, and a one-line result."""

    name: str
    status: str
    seconds: float
    detail: str


class Build:
    """One build of a set of manifests (often just one) into an output directory."""

    def __init__(self, manifests: ManifestSet, out: Path, address: str | None = None, engine: str = "ray") -> None:
        self.set = manifests
        self.manifests = [p.manifest for p in manifests.parts]
        self.layout = DatastoreLayout(out)
        self.build = self.layout.build
        self.address = address
        self.engine = engine
        self.reports: list[StageReport] = []
        self._progress: Progress | None = None
        self._resources = contextlib.ExitStack()
        self._current = ""
        self._ray_started = False
        #: Per step of the current stage: units (passages for embed) each Ray node did; kept in the stage marker.
        self._nodes: dict[str, dict[str, int]] = {}

    # -- orchestration -------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Run every stage not yet done; returns the catalog."""
        self._inputs()  # missing local sources fail before anything is written
        self._claim_directory()
        self._resources.enter_context(build_lock(self.build))
        with self._resources, progress() as self._progress:
            downloads = list({d["unit"]: d for p in self.set.parts for d in plan_downloads(p, self.build)}.values())
            if downloads:  # none when every source is local
                self._stage("download", lambda: run_download(self._download_runner, downloads, self.build))
            items = self._inputs(cache=download_cache(self.build))
            extract = self._stage("extract", lambda: self._extract(items))
            removed: list[str] = []  # clean-up stages whose removals later stages skip
            if exact := [i for i in items if i["part"] in self.set.exact_dedup]:
                self._stage("dedup", lambda: self._dedup(exact))
                removed.append("exact")
            near_parts, near = self.set.near_dedup
            if near is not None:
                near_items = [i for i in items if i["part"] in near_parts]
                self._stage("near_dedup", lambda: self._near_dedup(near_items, near, list(removed)))
                removed.append("near")
            if self.set.decontaminate is not None:
                self._stage("decontaminate", lambda: self._decontaminate(items, list(removed)))
                removed.append("decontaminate")
            chunk = self._stage("chunk", lambda: self._chunk(items, removed))
            shards = self._stage("shard", lambda: self._shard(chunk))["shards"]
            embed = self._stage("embed", lambda: self._embed(shards))
            plan = self._stage("train", lambda: self._train(shards))["plan"]
            self._stage("index", lambda: self._index(shards, plan))
            return self._stage("catalog", lambda: self._catalog(extract, shards, embed, plan))["catalog"]

    def _inputs(self, cache: Path | None = None) -> list[dict[str, Any]]:
        """Every input file of every manifest as a work item, sources numbered across the set; ``part`` names its manifest."""
        return [
            inp.to_dict() | {"unit": inp.unit, "part": part}
            for part, (loaded, offset) in enumerate(zip(self.set.parts, self.set.source_offsets(), strict=True))
            for inp in resolve_inputs(loaded, cache=cache, source_offset=offset)
        ]

    def _claim_directory(self) -> None:
        names = ", ".join(p.path.name for p in self.set.parts)
        record = {"manifest": names, "manifest_sha256": self.set.sha256}
        path = self.build / "build.json"
        if path.is_file():
            previous = read_json(path)
            if previous.get("manifest_sha256") != self.set.sha256:
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
        self._nodes = {}
        try:
            result = fn()
        except Exception as exc:
            if (own := remote_user_error(exc)) is not None:
                raise own from None
            if (death := worker_death(exc)) is None:
                raise
            raise MassiveDSError(
                f"stage {name}: a Ray worker died more than {WORKER_RETRIES} times ({death}; out of memory or killed?); "
                "finished work is kept: re-run the same command to resume (MASSIVEDS_WORKER_RETRIES allows more retries)"
            ) from None
        result["seconds"] = clock.seconds
        if self._nodes:
            result["nodes"] = self._nodes
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

        nodes = self._nodes.setdefault(step, {})

        def advance(result: dict[str, Any]) -> None:
            nonlocal rows
            count_nodes(nodes, result.get(NODE_KEY))
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
        kwargs = {"fn": units.extract_unit, "manifests": self.manifests, "build": self.build}
        results = self._units("extract", units.with_manifest, items, kwargs, rate_key="read")
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

    def _near_dedup(self, items: list[dict[str, Any]], near: NearDedup, removed: list[str]) -> dict[str, Any]:
        return run_near_dedup(self._run_step, items, self.build, near, near_partitions(self.build, items), skip=removed)

    def _decontaminate(self, items: list[dict[str, Any]], removed: list[str]) -> dict[str, Any]:
        decon = self.set.decontaminate
        assert decon is not None
        return run_decontaminate(self._run_step, items, self.build, self.manifests, decon, self.set.eval_sets(), skip=removed,
                                 base_dir=self.set.first.base_dir)

    def _chunk(self, items: list[dict[str, Any]], removed: list[str]) -> dict[str, Any]:
        # The embedder (whose tokenizer counts tokens) is shared by the set and resolved from the first manifest's folder.
        kwargs = {"fn": units.chunk_unit, "manifests": self.manifests, "build": self.build, "removed": removed,
                  "base_dir": self.set.first.base_dir}
        results = self._units("chunk", units.with_manifest, items, kwargs, rate_key="passages")
        docs, passages = sum(r["documents"] for r in results), sum(r["passages"] for r in results)
        tokens = sum(r["tokens"] for r in results)
        if passages == 0:
            raise MassiveDSError(f"no passages: every document was dropped (see {self.layout.dropped}); check the sources and filters")
        parts = [{"part": f"{i['unit']}.parquet", "rows": r["passages"], "manifest": i["part"], "documents": r["documents"]}
                 for i, r in zip(items, results, strict=True)]
        units_named = "/".join(dict.fromkeys(m.chunk.unit for m in self.manifests))
        return {
            "documents": docs,
            "passages": passages,
            "tokens": tokens,
            "parts": parts,
            "summary": f"{docs:,} documents -> {passages:,} passages ({tokens:,} {units_named})",
        }

    def _shard(self, chunk: dict[str, Any]) -> dict[str, Any]:
        shards: list[dict[str, Any]] = []
        for part, m in enumerate(self.manifests):  # ids run on across manifests; shard numbers run on within a domain
            first_id = sum(s["count"] for s in shards)
            numbered = sum(s["domain"] == m.domain for s in shards)
            parts = [p for p in chunk["parts"] if p["manifest"] == part]
            shards += plan_shards(parts, m.domain, m.shards.target_passages, first_id=first_id, first_number=numbered)
        for s in shards:
            s["unit"] = s["name"]
        kwargs = {"build": self.build, "shards_dir": self.layout.shards}
        results = self._units("shard", units.write_shard_unit, shards, kwargs, rate_key="passages")
        for s, r in zip(shards, results, strict=True):
            s["tokens"] = r["tokens"]
            del s["slices"]
        target = max(m.shards.target_passages for m in self.manifests)
        return {"shards": shards, "summary": f"{len(shards)} shards of <= {target:,} passages"}

    def _vectors_path(self, shard: dict[str, Any]) -> Path:
        if self.set.embed.store_vectors:
            return self.layout.shard(shard["name"]) / "vectors.npy"
        return self.build / "vectors" / f"{shard['name']}.npy"

    def _embed(self, shards: list[dict[str, Any]]) -> dict[str, Any]:
        consolidated = self.layout.stage("embed") / "units" / "vectors"
        pending = [s for s in shards if not (consolidated / f"{s['unit']}.json").is_file()]
        items = embed_items(pending, self.build)  # rows of a killed run's finished parts are not embedded again
        clock = Stopwatch()
        result: dict[str, Any] = {}
        total = sum(i["rows"] for i in items)
        if items:
            assert self._progress is not None
            task = self._progress.add_task("embed", total=total, rate="")
            tokens = [0]

            def on_rows(n: int, n_tokens: int) -> None:
                done = self._progress.tasks[task].completed + n  # type: ignore[union-attr]
                tokens[0] += n_tokens
                seconds = max(clock.seconds, 1e-9)
                rate = f"{done / seconds:,.1f} passages/s, {tokens[0] / seconds:,.0f} tokens/s"
                self._progress.update(task, completed=done, rate=rate)  # type: ignore[union-attr]

            spec, base_dir = self.set.embed.model_dump(), self.set.first.base_dir
            result = run_embed(items, pending, self.layout.shards, self.build, spec, base_dir, self.set.embed.workers, on_rows,
                               engine=self.engine)
            if self.engine != "local":
                self._nodes["embed"] = result["nodes"]
        embed_seconds = clock.seconds
        # the share of the stage's wall time the models spent encoding: what reads, writes and startup leave them
        busy = result["model_seconds"] / (embed_seconds * result["actors"]) if result and embed_seconds else None
        self._units(
            "vectors",
            units.consolidate_vectors_unit,
            shards,
            {"build": self.build, "paths": {s["name"]: str(self._vectors_path(s)) for s in shards}},
        )
        shutil.rmtree(self.build / "embeddings", ignore_errors=True)
        rate = total / embed_seconds if total else 0.0
        token_rate = result["tokens"] / embed_seconds if result and embed_seconds else 0.0
        info = read_json(self.build / "embed" / "embedder.json")
        earlier = sum(s["count"] for s in shards) - total
        return {
            "embedder": info,
            "passages": total,
            "passages_earlier": earlier,
            "passages_per_s": rate,
            "tokens": result["tokens"] if result else 0,
            "tokens_per_s": token_rate,
            "model_busy": busy,
            "summary": f"{total:,} passages with {info['model']} (dim {info['dim']}), {rate:,.1f} passages/s, {token_rate:,.0f} tokens/s"
            + (f", models busy {busy:.0%} of the stage" if busy is not None else "")
            + (f"; {earlier:,} embedded by an earlier run" if earlier else ""),
        }

    def _train(self, shards: list[dict[str, Any]]) -> dict[str, Any]:
        n = sum(s["count"] for s in shards)
        dim = int(np.load(self._vectors_path(shards[0]), mmap_mode="r").shape[1])
        plan = plan_index(n, dim, self.set.index).to_dict()
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
        if not self.set.embed.store_vectors:
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
        domains: dict[str, dict[str, Any]] = {}
        for part, m in enumerate(self.manifests):
            entry = domains.setdefault(m.domain, {"documents": 0, "passages": 0, "tokens": 0, "shards": 0})
            entry["documents"] += sum(p["documents"] for p in chunk.get("parts", []) if p["manifest"] == part)
        for s in shards:
            entry = domains[s["domain"]]
            entry["passages"] += s["count"]
            entry["tokens"] += s["tokens"]
            entry["shards"] += 1
        catalog = {
            "format_version": FORMAT_VERSION,
            "name": self.set.name,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "embedder": embed["embedder"],
            "index": plan,
            "chunk": self.manifests[0].chunk.model_dump(),
            "trained_index": {"file": self.layout.trained_index.name} | file_record(self.layout.trained_index),
            "shards": shard_records,
            "domains": domains,
            "build": {
                "records_read": extract["read"],
                "documents_kept": chunk.get("documents", 0),
                "dropped": dropped,
                "decontamination": decon["eval_sets"] if decon else None,
                "sources": extract["sources"],
                "embed_passages_per_s": round(embed["passages_per_s"], 2),
                "embed_tokens_per_s": round(embed.get("tokens_per_s", 0.0), 1),
                "embed_model_busy": None if embed["model_busy"] is None else round(embed["model_busy"], 3),
                "stage_seconds": seconds,
                "nodes": self._stage_nodes(),
            },
            "manifests": self.set.records(),
            "versions": _versions(),
        }
        catalog["recall"] = recall_summary(self.layout.root, catalog=catalog)  # recall@10 at the default nprobe
        crash_if_asked("catalog", 1)  # everything but datastore.json is written
        write_json(self.layout.catalog, catalog)
        return {"catalog": catalog, "summary": f"{self.layout.catalog}"}

    def _stage_nodes(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per stage and step, the units (passages for embed) each Ray node did, from the stage markers."""
        out = {}
        for r in self.reports:
            done = stage_done(self.layout.stage(r.name)) or {}
            if done.get("nodes"):
                out[r.name] = done["nodes"]
        return out


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


def plan_shards(
    parts: list[dict[str, Any]], domain: str, target: int, first_id: int = 0, first_number: int = 0
) -> list[dict[str, Any]]:
    """Cut the concatenation of chunk outputs (in order) into balanced shards of at most ``target`` passages.

    Passage ids are ``first_id`` plus positions in that concatenation, so shard ``i`` (named with number
    ``first_number + i``) holds the contiguous id range ``[id_start, id_start + count)`` and carries the
    (part, first row, end row) slices that fill it.
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
        shards.append({"name": shard_name(domain, first_number + i), "domain": domain, "id_start": first_id + lo, "count": hi - lo,
                       "slices": slices})
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


def build(
    manifests: LoadedManifest | list[LoadedManifest], out: Path, address: str | None = None, force: bool = False, engine: str = "ray"
) -> Build:
    """Build one manifest, or several together, into ``out`` (``force`` wipes a previous build there first).

    ``engine="local"`` runs every unit in this process instead of on Ray (same outputs). Returns the finished Build.
    """
    if URL_LIKE.match(str(out)):
        raise MassiveDSError(
            f"--out must be a directory (local, or on a filesystem every Ray node mounts at the same path), not a URL: {out}; "
            "build there, then copy it to object storage with `massiveds publish`"
        )
    mset = ManifestSet.of(manifests)
    if force and out.exists():
        if not (out / "build" / "build.json").is_file() and any(out.iterdir()):
            raise MassiveDSError(f"{out} is not a massiveds build; refusing to delete it with --force")
        shutil.rmtree(out)
    b = Build(mset, out, address, engine)
    b.run()
    return b
