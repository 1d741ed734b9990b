"""``massiveds append``: new manifests built into new shards of an existing datastore, with its embedder and quantizer.

The stages are the build's, with three changes (``APPEND_STAGES``): ``reference`` lays the datastore's
documents beside the new ones so that exact and near dedup drop new copies of them (never them): the rows of
its dedup index, not its text, where it has one (``massiveds.clean.dedup_index``), the
datastore's trained quantizer stands in for training, and ``commit`` replaces the catalog stage. The
work happens in ``<datastore>/build/append/``, a build folder of its own with the same resume markers:
killed anywhere, the datastore is unchanged (and searchable) until ``commit`` writes its catalog, and the
same command resumes. New passage ids follow the datastore's largest; no existing shard file is written.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from massiveds.core.catalog import open_catalog
from massiveds.core.layout import DatastoreLayout, read_json, write_json
from massiveds.core.manifest import LoadedManifest
from massiveds.core.report import console, progress
from massiveds.core.writer_lock import locks_datastore
from pipelines.build import BuildResult, claim_record, resumes, run_stages
from pipelines.executor import LocalExecutor
from pipelines.existing import Existing
from pipelines.manifest_set import ManifestSet
from pipelines.ray_executor import RayExecutor
from pipelines.stage import BuildContext, Stage, input_items
from pipelines.stages.chunk import ChunkStage
from pipelines.stages.commit import CommitStage, committed
from pipelines.stages.decontaminate import DecontaminateStage
from pipelines.stages.dedup import ExactDedupStage
from pipelines.stages.dedup_index import DedupIndexStage
from pipelines.stages.download import DownloadStage
from pipelines.stages.embed import EmbedStage
from pipelines.stages.extract import ExtractStage
from pipelines.stages.index import IndexStage
from pipelines.stages.near_dedup import NearDedupStage
from pipelines.stages.reference import ReferenceStage
from pipelines.stages.shard import ShardStage
from pipelines.stages.sparse import SparseStage
from pipelines.stages.train import ExistingQuantizerStage

#: The stages of an append, in order; ``reference`` runs beside download and extract.
APPEND_STAGES: tuple[Stage, ...] = (
    DownloadStage(), ExtractStage(), ReferenceStage(), ExactDedupStage(), NearDedupStage(), DecontaminateStage(), DedupIndexStage(),
    ChunkStage(), ShardStage(), SparseStage(), EmbedStage(), ExistingQuantizerStage(), IndexStage(), CommitStage(),
)


def work_layout(root: Path) -> DatastoreLayout:
    """Where an append of ``root`` works: a build folder and new shards of its own, inside the datastore's build folder."""
    return DatastoreLayout(root / "build" / "append")


def based_on(existing: Existing) -> dict[str, object]:
    """What an append's work depends on of the datastore: the quantizer its shards are indexed with, the next id, the deletions."""
    return {"trained": existing.trained, "first_id": existing.first_id, "deletions": len(existing.catalog.deletions)}


def claim(work: DatastoreLayout, manifests: ManifestSet, existing: Existing) -> None:
    """Take the append folder for these manifests: new, or an unfinished append of the same ones (which resumes).

    An unfinished append whose datastore changed since (a retrain, a delete: other writers may run between a killed append
    and its re-run) starts over: its new shards would be indexed with another quantizer, or keep deleted documents.
    """
    if resumes(work, manifests, "{root} holds an unfinished append of other manifests ({manifest}); "
                                "run that one again to finish it, or add --force to drop it and start this one"):
        claimed = read_json(work.build / "build.json")
        if claimed.get("based_on") == based_on(existing) or committed(existing.catalog, claimed["append_id"]):
            return  # the same datastore, or the one its own commit made (killed before cleaning up): it resumes to the end
        console.print(f"{work.root.parent.parent} changed since this append started: starting it over", highlight=False)
        shutil.rmtree(work.root)
        named = {Path(s.folder_rel()).name for s in existing.catalog.shards}
        for folder in sorted((existing.root / "shards").iterdir()):  # new shards the killed commit had moved in, no catalog naming them
            if folder.is_dir() and not folder.name.startswith(".") and folder.name not in named:
                shutil.rmtree(folder)
    append_id = f"{len(existing.catalog.appends) + 1:05d}-{uuid.uuid4().hex[:8]}"
    write_json(work.build / "build.json", claim_record(manifests) | {"append_id": append_id, "based_on": based_on(existing)})


@locks_datastore("append")
def append(root: Path, manifests: list[LoadedManifest], address: str | None = None, engine: str = "ray",
           force: bool = False) -> BuildResult:
    """Build ``manifests`` into new shards of the datastore at ``root``, then into its catalog (``force``: drop an unfinished append)."""
    existing = Existing(root, open_catalog(root))
    mset = ManifestSet.of(manifests, first_source=1)
    existing.check(mset)
    input_items(mset)  # missing local sources fail before anything is written
    work = work_layout(root)
    if force and work.root.exists():
        shutil.rmtree(work.root)
    with progress() as bar:
        claim(work, mset, existing)
        executor = LocalExecutor(work.build, bar) if engine == "local" else RayExecutor(work.build, bar, address)
        try:
            run_stages(BuildContext(mset, work, existing=existing), executor, APPEND_STAGES)
        finally:
            executor.close()
    shutil.rmtree(work.root, ignore_errors=True)
    return BuildResult(DatastoreLayout(root), executor.reports, len(executor.cluster_nodes), executor.reruns)
