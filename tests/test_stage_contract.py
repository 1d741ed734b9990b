"""The stage contract and the executors: a new stage is one module plus its place in the list; failures end in one line."""

from __future__ import annotations

import collections
import errno
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
import pytest
from rich.progress import Progress

from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import DatastoreLayout
from massiveds.core.manifest import load_manifest
from massiveds.core.passages import PassageFile
from pipelines.build import STAGES, build
from pipelines.executor import Executor, LocalExecutor
from pipelines.manifest_set import ManifestSet
from pipelines.ray_executor import RayExecutor
from pipelines.stage import BuildContext, StageRecord, Step, UnitResult, UnitStage
from pipelines.stages.shard import ShardItem, ShardRecord
from tests.helpers import local


class WordsResult(UnitResult):
    domain: str
    words: int


@dataclass(frozen=True)
class CountWords:
    """The toy step: the words of one shard's passages."""

    shards_dir: Path

    def __call__(self, shard: ShardItem) -> WordsResult:
        texts = PassageFile(self.shards_dir / shard.name / "passages.arrow").read_all().column("text")
        words = int(pc.sum(pc.list_value_length(pc.utf8_split_whitespace(texts))).as_py() or 0)
        return WordsResult(unit=shard.name, domain=shard.domain, words=words)


class WordsRecord(StageRecord):
    words_per_domain: dict[str, int]


class WordCount(UnitStage[ShardItem, WordsResult]):
    """A newcomer's stage: words per domain, into the catalog. Its module and its place in the stage list are all it takes."""

    name = "word_count"
    record = WordsRecord

    def plan(self, ctx: BuildContext) -> list[ShardItem]:
        return ctx.record("shard", ShardRecord).shards

    def step(self, ctx: BuildContext) -> Step[ShardItem, WordsResult]:
        return Step("word_count", CountWords(ctx.layout.shards), WordsResult, rates=("words",))

    def summarize(self, ctx: BuildContext, items: Sequence[ShardItem], results: Sequence[WordsResult]) -> WordsRecord:
        per_domain: collections.Counter[str] = collections.Counter()
        for r in results:
            per_domain[r.domain] += r.words
        return WordsRecord(words_per_domain=dict(per_domain), summary=f"{sum(per_domain.values()):,} words")

    def catalog_entries(self, record: StageRecord) -> dict[str, object]:
        assert isinstance(record, WordsRecord)
        return {"words_per_domain": record.words_per_domain}


@pytest.mark.slow
def test_a_new_stage_is_one_module_and_its_place_in_the_list(small_manifest: Path, tmp_path: Path) -> None:
    stages = (*STAGES[:-1], WordCount(), STAGES[-1])  # before the catalog, which it writes into
    out = tmp_path / "ds"
    result = build(load_manifest(small_manifest), out, engine="local", stages=stages)
    names = [r.name for r in result.reports]
    assert names.index("shard") < names.index("word_count") < names.index("catalog")
    catalog = json.loads((out / "datastore.json").read_text())
    texts = [t for p in sorted((out / "shards").glob("*/passages.arrow")) for t in PassageFile(p).column("text")]
    assert catalog["build"]["words_per_domain"] == {"wiki": sum(len(t.split()) for t in texts)}
    assert (out / "build" / "word_count" / "_SUCCESS.json").is_file()
    again = build(load_manifest(small_manifest), out, engine="local", stages=stages)  # a re-run skips it like any stage
    assert {r.name: r.status for r in again.reports}["word_count"] == "skipped (done)"


class Boom(UnitStage[ShardItem, WordsResult]):
    """A stage whose second unit fails the way a bug does (or a full disk)."""

    name = "boom"
    record = WordsRecord

    def __init__(self, error: Exception) -> None:
        self.error = error

    def plan(self, ctx: BuildContext) -> list[ShardItem]:
        return [ShardItem(unit=f"u{i}", name=f"u{i}", domain="wiki", id_start=i, count=1) for i in range(3)]

    def step(self, ctx: BuildContext) -> Step[ShardItem, WordsResult]:
        return Step("boom-step", Explode(self.error), WordsResult)

    def summarize(self, ctx: BuildContext, items: Sequence[ShardItem], results: Sequence[WordsResult]) -> WordsRecord:
        return WordsRecord(words_per_domain={}, summary="")


@dataclass(frozen=True)
class Explode:
    error: Exception

    def __call__(self, shard: ShardItem) -> WordsResult:
        if shard.unit == "u1":
            raise self.error
        return WordsResult(unit=shard.unit, domain=shard.domain, words=0)


def _context(small_manifest: Path, out: Path) -> BuildContext:
    return BuildContext(ManifestSet.of(load_manifest(small_manifest)), DatastoreLayout(out))


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_an_unexpected_error_in_a_unit_is_one_line_naming_stage_step_and_unit(engine: str, small_manifest: Path, tmp_path: Path) -> None:
    build_dir = tmp_path / "out" / "build"
    executor: Executor = local(build_dir) if engine == "local" else RayExecutor(build_dir, Progress(disable=True))
    try:
        with pytest.raises(MassiveDSError) as failed:
            executor.run_stage(Boom(KeyError("the field nobody expected")), _context(small_manifest, tmp_path / "out"))
    finally:
        executor.close()
    message = str(failed.value)
    assert "\n" not in message
    assert re.match(r"stage boom failed \(step boom-step, unit u1\): KeyError: 'the field nobody expected'; traceback in \S+boom\.log; "
                    r"finished work is kept: re-run the same command to resume$", message), message
    log = (build_dir / "logs" / "boom.log").read_text()
    assert "Traceback (most recent call last)" in log and "raise self.error" in log
    assert (build_dir / "boom" / "units" / "boom-step" / "u0.json").is_file()  # the unit before it is kept for the re-run
    assert not (build_dir / "boom" / "_SUCCESS.json").exists()


def test_a_full_disk_says_which_stage_and_path_and_how_much_is_free(small_manifest: Path, tmp_path: Path) -> None:
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "shards" / "wiki-00000" / "index.faiss"))
    with pytest.raises(MassiveDSError) as failed:
        local(tmp_path / "out" / "build").run_stage(Boom(full), _context(small_manifest, tmp_path / "out"))
    assert re.fullmatch(r"stage boom: no space left on the device of \S+index\.faiss \([\d,]+ bytes free\); free some space and re-run "
                        r"the same command: the build resumes where it stopped", str(failed.value)), str(failed.value)


def test_a_user_error_in_a_unit_stays_its_own_line(small_manifest: Path, tmp_path: Path) -> None:
    with pytest.raises(MassiveDSError, match=r"^source 'x': no file$"):
        LocalExecutor(tmp_path / "b", Progress(disable=True)).run_stage(Boom(MassiveDSError("source 'x': no file")),
                                                                       _context(small_manifest, tmp_path))
