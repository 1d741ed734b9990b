"""``massiveds build``: one manifest or several into a datastore, stage by stage (``STAGES``), resumably.

The orchestrator checks the inputs, claims the output directory and its lock, then hands each stage of ``STAGES``
that applies to the executor as soon as the stages it needs are done, several at once (the BM25 stage beside the
embed stage); the executor skips a finished stage, runs the others and keeps their records; later stages read
earlier stages' records from the build context.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import DatastoreLayout, read_json, write_json
from massiveds.core.manifest import LoadedManifest
from massiveds.core.report import progress
from massiveds.core.writer_lock import LOCK_FILE, writer_lock
from pipelines.executor import Executor, LocalExecutor, Rerun, StageReport
from pipelines.manifest_set import ManifestSet
from pipelines.ray_executor import RayExecutor
from pipelines.stage import BuildContext, Stage, StageRecord, input_items
from pipelines.stages.catalog import CatalogStage
from pipelines.stages.chunk import ChunkStage
from pipelines.stages.decontaminate import DecontaminateStage
from pipelines.stages.dedup import ExactDedupStage
from pipelines.stages.dedup_index import DedupIndexStage
from pipelines.stages.download import DownloadStage
from pipelines.stages.embed import EmbedStage
from pipelines.stages.extract import ExtractStage
from pipelines.stages.index import IndexStage
from pipelines.stages.near_dedup import NearDedupStage
from pipelines.stages.shard import ShardStage
from pipelines.stages.sparse import SparseStage
from pipelines.stages.train import TrainStage

#: The stages of a build, in order: download -> extract -> dedup -> near_dedup -> decontaminate -> dedup_index -> chunk ->
#: shard -> sparse -> embed -> train -> index -> catalog (each applies only where the manifests ask for it); dedup_index needs
#: only the clean-up stages, sparse and embed only shard, so each runs beside the stages after it.
STAGES: tuple[Stage, ...] = (
    DownloadStage(), ExtractStage(), ExactDedupStage(), NearDedupStage(), DecontaminateStage(), DedupIndexStage(),
    ChunkStage(), ShardStage(), SparseStage(), EmbedStage(), TrainStage(), IndexStage(), CatalogStage(),
)

#: Seconds the stages that become ready with a model pool's stage wait at most for its workers to start (a GPU node may be slow
#: to come): past it they start anyway.
POOL_HEAD_START_S = 120.0

#: ``s3://bucket/x`` as a ``Path`` reads ``s3:/bucket/x``: a scheme of two or more letters and a colon (not ``C:/``).
URL_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


@dataclass
class BuildResult:
    """A finished build: where it is, and what each stage did in this run."""

    layout: DatastoreLayout
    reports: list[StageReport]
    #: The nodes of the Ray cluster this run used (0: it started none, every stage was done or ran locally).
    nodes: int = 0
    #: The units run again after their worker died (a node lost, a worker killed), in order.
    reruns: list[Rerun] = field(default_factory=list)


def resumes(layout: DatastoreLayout, manifests: ManifestSet, other: str) -> bool:
    """Whether ``layout`` holds a build of these manifests to resume; ``other`` (``{root}``, ``{manifest}``) refuses one of others."""
    path = layout.build / "build.json"
    if not path.is_file():
        return False
    previous = read_json(path)
    if previous.get("manifest_sha256") != manifests.sha256:
        raise MassiveDSError(other.format(root=layout.root, manifest=previous.get("manifest")))
    return True


def claim_record(manifests: ManifestSet) -> dict[str, str]:
    """What ``build/build.json`` records of the manifests a build folder belongs to."""
    return {"manifest": ", ".join(p.path.name for p in manifests.parts), "manifest_sha256": manifests.sha256}


def claim_directory(layout: DatastoreLayout, manifests: ManifestSet) -> None:
    """Take ``layout.root`` for this build: new or empty, or a build of these same manifests (which resumes)."""
    if resumes(layout, manifests, "{root} holds a build of another manifest ({manifest}, changed since?); "
                                  "use a new --out, or --force to start this one over"):
        return
    if layout.root.exists() and any(p.name != LOCK_FILE for p in layout.root.iterdir()):
        raise MassiveDSError(f"{layout.root} exists and is not a massiveds build; choose an empty or new --out")
    write_json(layout.build / "build.json", claim_record(manifests))


def stage_needs(stages: Sequence[Stage]) -> dict[str, set[str]]:
    """The names of the stages each stage needs (all those before it, when it declares none); each must come before it."""
    needs = {}
    for n, stage in enumerate(stages):
        earlier = [s.name for s in stages[:n]]
        declared = earlier if stage.needs is None else stage.needs
        if unknown := [name for name in declared if name not in earlier]:
            raise ValueError(f"stage {stage.name} needs {', '.join(unknown)}: not a stage before it")
        needs[stage.name] = set(declared)
    return needs


def _next_ready(waiting: Sequence[Stage], needs: dict[str, set[str]], settled: set[str]) -> Stage | None:
    """The next stage whose needs are done: one that holds a model pool first (``Stage.holds_pool``), else the first in order."""
    ready = [s for s in waiting if needs[s.name] <= settled]
    return next((s for s in ready if s.holds_pool), ready[0] if ready else None)


def run_stages(ctx: BuildContext, executor: Executor, stages: Sequence[Stage]) -> None:
    """Every stage that applies to this build through ``executor``, each in its own thread once the stages it needs are done.

    ``ctx.records`` and ``ctx.stages`` keep the order of ``stages`` whatever order stages finish in. After a failure
    nothing more starts; the stages running finish (what they did is kept for the re-run), then the first failure is raised.
    """
    needs, names = stage_needs(stages), [s.name for s in stages]
    waiting = list(stages)
    settled: set[str] = set()  # the stages done, and those that do not apply to this build
    records: dict[str, StageRecord] = {}
    running: dict[Future[StageRecord], Stage] = {}
    failure: Exception | None = None
    threads = ThreadPoolExecutor(max_workers=len(stages), thread_name_prefix="stage")
    try:
        while True:
            while failure is None and (stage := _next_ready(waiting, needs, settled)):
                waiting.remove(stage)
                try:
                    if stage.applies(ctx):
                        if not executor.done(stage):
                            executor.started()  # here: Ray's processes die with the thread that started them
                        running[threads.submit(executor.run_stage, stage, ctx)] = stage
                        if stage.holds_pool and not executor.done(stage):
                            executor.pool_up(stage.name).wait(POOL_HEAD_START_S)
                    else:
                        settled.add(stage.name)
                except Exception as exc:
                    failure = exc
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in [f for f in running if f in done]:
                stage = running.pop(future)
                try:
                    records[stage.name] = future.result()
                    settled.add(stage.name)
                except Exception as exc:
                    failure = failure or exc
            ctx.records = {name: records[name] for name in names if name in records}
            ctx.stages = [s for s in stages if s.name in records]
    except BaseException:  # Ctrl-C: the running stages stop after their current unit (on Ray, at once)
        executor.interrupted.set()
        raise
    finally:
        threads.shutdown()  # waits for the stages still running
    if failure is not None:
        raise failure
    executor.reports.sort(key=lambda r: names.index(r.name))  # the summary table in pipeline order


def build(
    manifests: LoadedManifest | list[LoadedManifest],
    out: Path,
    address: str | None = None,
    force: bool = False,
    engine: str = "ray",
    stages: Sequence[Stage] = STAGES,
) -> BuildResult:
    """Build one manifest, or several together, into ``out`` (``force`` wipes a previous build there first).

    ``engine="local"`` runs every unit in this process instead of on Ray (same outputs).
    """
    if URL_LIKE.match(str(out)):
        raise MassiveDSError(
            f"--out must be a directory (local, or on a filesystem every Ray node mounts at the same path), not a URL: {out}; "
            "build there, then copy it to object storage with `massiveds publish`"
        )
    mset = ManifestSet.of(manifests)
    if force and out.exists() and not (out / "build" / "build.json").is_file() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise MassiveDSError(f"{out} is not a massiveds build; refusing to delete it with --force")
    layout = DatastoreLayout(out)
    input_items(mset)  # missing local sources fail before anything is written
    with writer_lock(out, "build"):
        if force:
            for path in [p for p in out.iterdir() if p.name != LOCK_FILE]:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        claim_directory(layout, mset)
        with progress() as bar:
            executor = LocalExecutor(layout.build, bar) if engine == "local" else RayExecutor(layout.build, bar, address)
            try:
                run_stages(BuildContext(mset, layout), executor, stages)
            finally:
                executor.close()
    return BuildResult(layout, executor.reports, len(executor.cluster_nodes), executor.reruns)
