"""Reports as the commands print them: stage and transfer summaries, domain tables, recall lines, figures."""

from __future__ import annotations

from typing import TYPE_CHECKING

from massiveds.core.report import console, human_bytes, table

if TYPE_CHECKING:
    from massiveds.core.catalog import Catalog, RecallRecord
    from massiveds.ops.publish import TransferReport
    from massiveds.ops.stats import ShardStats
    from pipelines.build import BuildResult


def figure(value: float | None) -> str:
    """A measured share as printed in summaries: four decimals (the tables print other floats to one), or "-"."""
    return "-" if value is None else f"{value:.4f}"


def print_stages(title: str, result: BuildResult) -> None:
    """What each stage of a build or an append did in this run, and what ran again after a worker or a node was lost."""
    console.print(table(title, ["stage", "status", "seconds", "result"], [(r.name, r.status, r.seconds, r.detail) for r in result.reports]))
    if result.reruns:
        import time

        rows = [(r.stage, r.unit, r.cause, time.strftime("%H:%M:%S", time.localtime(r.at))) for r in result.reruns]
        console.print(table("run again after their worker died", ["stage", "unit", "why", "at"], rows))


def recall_row(recall: RecallRecord | None) -> list[tuple[str, str]]:
    """The build summary's line on the recall measured at the end of the build: the figures, or why it was skipped."""
    if recall is None:
        return []
    if recall.status != "measured":
        return [("recall", f"skipped: {recall.reason}")]
    figures = f"{recall.figure()} ({recall.figure(rerank=True)})"
    return [(f"recall@{recall.k} (with exact rerank of {recall.rerank_depth})", figures)]


def print_domains(title: str, catalog: Catalog) -> None:
    """Documents, passages, tokens and shards per domain of ``catalog``."""
    rows = [(d, v.documents, v.passages, v.tokens, v.shards) for d, v in catalog.domains.items()]
    console.print(table(title, ["domain", "documents", "passages", "tokens", "shards"], rows))


def shard_row(shard: ShardStats) -> tuple[object, ...]:
    """A row of inspect's shard table: passages, tokens, index MiB and the IVF list balance (none for Flat)."""
    rec, balance = shard.record, shard.record.list_balance
    row = (rec.name, rec.count, rec.tokens, shard.bytes["index"] / (1 << 20))
    return row + ((balance.max_list, balance.mean_list, balance.imbalance) if balance else (None, None, None))


def print_transfer(title: str, report: TransferReport, where: str) -> None:
    """What a publish or a pull moved and skipped, then that it is complete."""
    rows = [("files in datastore", report.files), ("size", human_bytes(report.bytes)),
            ("objects transferred", len(report.transferred)), ("objects already there (skipped)", len(report.skipped)),
            ("bytes transferred", human_bytes(report.bytes_transferred)), ("split into parts", report.parts),
            ("seconds", round(report.seconds, 1))]
    console.print(table(title, ["", "value"], rows))
    console.print(f"{title} complete: {where}")


def print_skipped(skipped: dict[str, str]) -> None:
    """One warning line per shard a search leaves out, with why."""
    for name, reason in skipped.items():
        console.print(f"[bold yellow]warning:[/] shard {name} skipped: {reason}", soft_wrap=True, highlight=False)
