"""Progress bars and summary tables for long-running commands (rich, on stderr)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

console = Console(stderr=True)
#: Redraws per second of a progress display: rich's default of 10 costs a measurable share of a core in a
#: terminal, taken on a small machine from the embed stage's model threads (BENCHMARKS.md, "Embed stage").
REFRESH_PER_SECOND = 2


def progress() -> Progress:
    """A progress display showing rows done / total, rate and ETA."""
    return Progress(
        TextColumn("[bold]{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        refresh_per_second=REFRESH_PER_SECOND,
    )


def transfer_progress() -> Progress:
    """A progress display for byte transfers: bytes done / total, speed and ETA."""
    return Progress(
        TextColumn("[bold]{task.description:<10}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[files]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        refresh_per_second=REFRESH_PER_SECOND,
    )


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A summary table; numbers are right-aligned and thousands-separated."""
    t = Table(title=title, title_justify="left")
    rows = [list(r) for r in rows]
    for i, name in enumerate(columns):
        numeric = bool(rows) and all(isinstance(r[i], int | float) for r in rows if r[i] is not None)
        t.add_column(name, justify="right" if numeric else "left")
    for r in rows:
        t.add_row(*[f"{v:,}" if isinstance(v, int) else f"{v:,.1f}" if isinstance(v, float) else "" if v is None else str(v) for v in r])
    return t


def human_bytes(n: float) -> str:
    """Bytes for people in powers of 1024 (KB, MB, GB, TB, PB), as every command prints sizes."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1024
    return f"{n:.2f} PB"
