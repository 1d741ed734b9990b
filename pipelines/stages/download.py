"""download: every remote input file (or ``hf`` dataset) into the build's download cache, one unit each.

A unit that finds its file already cached and verified moves no bytes, so a re-run (even without unit
markers) fetches nothing twice. Only builds with remote sources have this stage.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from massiveds.ingest.sources.fetch import CHUNK, RetryPolicy, fetch
from massiveds.ingest.sources.hf import materialize
from massiveds.ingest.sources.plan import download_cache, plan_downloads
from pipelines.stage import BuildContext, Resources, StageRecord, Step, UnitResult, UnitStage, WorkItem


class DownloadItem(WorkItem):
    """One remote file, or one ``hf`` dataset, and where it goes in the cache."""

    kind: str
    uri: str
    dest: str
    source: str
    size: int | None = None
    sha256: str | None = None
    storage_options: dict[str, Any] = Field(default_factory=dict)
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    builder: str | None = None
    builder_options: dict[str, Any] = Field(default_factory=dict)


class DownloadResult(UnitResult):
    """What one download did: bytes in the cache, whether they moved, how many attempts."""

    kind: str
    source: str
    uri: str
    bytes: int
    fetched: bool
    attempts: int
    rows: int | None = None
    parts: int | None = None


@dataclass(frozen=True)
class DownloadFile:
    """The download step: fetch (or materialise) one item into the cache of ``build``."""

    build: Path
    attempts: int = 6
    backoff: float = 0.5
    chunk: int = CHUNK

    def __call__(self, item: DownloadItem) -> DownloadResult:
        cache = download_cache(self.build)
        dest = cache / "files" / item.dest
        if item.kind == "hf":
            listing = materialize(item.uri, dest, config=item.config, split=item.split, revision=item.revision, builder=item.builder,
                                  builder_options=item.builder_options)
            size = sum((dest / p["file"]).stat().st_size for p in listing["parts"])
            return DownloadResult(unit=item.unit, kind="hf", source=item.source, uri=item.uri, rows=listing["rows"],
                                  parts=len(listing["parts"]), bytes=size, fetched=listing["fetched"], attempts=1)
        done = fetch(item.uri, dest, sha256=item.sha256, quarantine_dir=cache / "quarantine", storage_options=item.storage_options,
                     policy=RetryPolicy(attempts=self.attempts, base=self.backoff), chunk=self.chunk)
        return DownloadResult(unit=item.unit, kind="file", source=item.source, uri=item.uri, bytes=done.bytes, fetched=done.fetched,
                              attempts=done.attempts)


class DownloadRecord(StageRecord):
    files: int
    fetched: int
    bytes: int
    bytes_fetched: int
    retries: int
    sources: dict[str, dict[str, int]]


class DownloadStage(UnitStage[DownloadItem, DownloadResult]):
    """Fetch the remote inputs; downloads are I/O bound, so a unit reserves a quarter of a CPU."""

    name = "download"
    record = DownloadRecord

    def applies(self, ctx: BuildContext) -> bool:
        return bool(self.plan(ctx))

    def plan(self, ctx: BuildContext) -> list[DownloadItem]:
        items = {d["unit"]: d for p in ctx.manifests.parts for d in plan_downloads(p, ctx.build)}
        return [DownloadItem.model_validate(d) for d in items.values()]

    def step(self, ctx: BuildContext) -> Step[DownloadItem, DownloadResult]:
        return Step("download", DownloadFile(ctx.build), DownloadResult, Resources(cpus=0.25), rates=("bytes",))

    def summarize(self, ctx: BuildContext, items: Sequence[DownloadItem], results: Sequence[DownloadResult]) -> DownloadRecord:
        return summarize_downloads(results)


def summarize_downloads(results: Sequence[DownloadResult]) -> DownloadRecord:
    """Counts, bytes and retries of a set of downloads, per source."""
    fetched = [r for r in results if r.fetched]
    per_source: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for r in results:
        per_source[r.source].update({"files": 1, "bytes": r.bytes, "fetched": int(r.fetched)})
    total, moved = sum(r.bytes for r in results), sum(r.bytes for r in fetched)
    retried = sum(max(0, r.attempts - 1) for r in results)
    return DownloadRecord(
        files=len(results), fetched=len(fetched), bytes=total, bytes_fetched=moved, retries=retried,
        sources={s: dict(c) for s, c in per_source.items()},
        summary=f"{len(results)} files ({total / 1e6:,.1f} MB): {len(fetched)} fetched, {len(results) - len(fetched)} cached, "
                f"{retried} retries",
    )

