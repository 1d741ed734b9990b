"""Tables for the index commands: ``plan``, ``eval-recall`` and ``merge-index``."""

from __future__ import annotations

import re
from typing import Any

from rich.table import Table

from massiveds.core.errors import MassiveDSError
from massiveds.core.report import human_bytes
from massiveds.encode.index import PlanReport
from massiveds.evaluate.recall import RecallReport
from massiveds.ops.estimate import BuildEstimate

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}


def parse_count(text: str) -> int:
    """A vector count such as ``250000``, ``2.5M``, ``1e9``, ``1B`` or ``10_000``."""
    m = re.fullmatch(r"\s*([0-9][0-9_]*(?:\.[0-9]+)?(?:e[0-9]+)?)\s*([kmbgt]?)\s*", text.lower())
    if not m:
        raise MassiveDSError(f"cannot read {text!r} as a number of vectors; write e.g. 1000000, 2.5M, 1e9 or 1B")
    value = float(m.group(1).replace("_", "")) * _SUFFIX[m.group(2)]
    if value < 1:
        raise MassiveDSError(f"number of vectors must be at least 1, got {text!r}")
    return int(value)


def human_count(n: int) -> str:
    """1000000 -> 1M, 2500000000 -> 2.5B, 4234954387 -> 4.23B (three significant digits)."""
    for value, unit in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "k")):
        if n >= value:
            return f"{n / value:.3g}{unit}"
    return str(n)


def _budget(r: PlanReport) -> str:
    if r.plan.memory_budget_gb is None:
        return "-"
    return f"{r.plan.memory_budget_gb:g} GB ({'fits' if r.fits_budget else 'OVER'})"


def _train(r: PlanReport) -> str:
    return f"{r.plan.train_sample:,} ({human_bytes(r.footprint.train_sample_bytes)} fp32)" if r.plan.train_sample else "-"


def plan_table(reports: list[PlanReport]) -> Table:
    """One column per plan (an index for a number of vectors): its parameters and what it costs."""
    t = Table(title="index plan", title_justify="left")
    t.add_column("")
    for r in reports:
        kind = "Flat" if r.plan.type == "flat" else "IVF-PQ"
        t.add_column(f"{kind}, {human_count(r.footprint.n_vectors)} x {r.plan.dim}", justify="right")
    rows: list[tuple[str, Any]] = [
        ("index", lambda r: r.plan.factory),
        ("nlist", lambda r: f"{r.plan.nlist:,}" if r.plan.nlist else "-"),
        ("coarse quantizer", lambda r: r.plan.coarse or "-"),
        ("OPQ", lambda r: "yes" if r.plan.opq else "no"),
        ("PQ", lambda r: f"{r.plan.pq_m}x{r.plan.nbits}" if r.plan.pq_m else "-"),
        ("bytes / vector (codes + id)", lambda r: f"{r.plan.bytes_per_vector:g}"),
        ("quantizer + codebooks", lambda r: human_bytes(r.footprint.quantizer_bytes)),
        ("RAM to serve (lists resident)", lambda r: human_bytes(r.footprint.serve_bytes)),
        ("memory budget", _budget),
        ("index on disk", lambda r: human_bytes(r.footprint.index_disk_bytes)),
        ("fp16 vectors on disk (rerank)", lambda r: human_bytes(r.footprint.fp16_vectors_disk_bytes)),
        ("training sample", _train),
        ("default nprobe", lambda r: f"{r.plan.nprobe:,}" if r.plan.nprobe else "-"),
    ]
    for label, get in rows:
        t.add_row(label, *[str(get(r)) for r in reports])
    return t


def build_table(cost: BuildEstimate, model: str, dim: int, default_rate: bool) -> Table:
    """What the build takes before the index: passages, text, fp16 vectors, embedding GPU-hours."""
    t = Table(title="build estimate (from the manifests)", title_justify="left")
    t.add_column("")
    t.add_column("", justify="right")
    rate = f"{cost.embed_passages_per_s:,.0f} passages/s per GPU" + (" (H100, BERT-base size; --embed-rate)" if default_rate else "")
    for label, value in (
        ("passages", f"{cost.passages:,}"),
        ("tokens", f"{cost.tokens:,}"),
        ("passage text (UTF-8, before zstd)", human_bytes(cost.text_bytes)),
        ("fp16 vectors", human_bytes(cost.passages * dim * 2)),
        ("embedder", f"{model} (dim {dim})"),
        ("embedding rate", rate),
        ("embedding GPU-hours", f"{cost.embed_gpu_hours:,.0f}"),
    ):
        t.add_row(label, value)
    return t


def recall_table(report: RecallReport) -> Table:
    """One row per (nprobe, rerank): recall@k and queries/s."""
    t = Table(title=f"recall of {report.datastore} ({report.index}, {report.queries} queries: {report.query_source})", title_justify="left")
    for name in ["nprobe", "rerank", *[f"recall@{k}" for k in report.ks], "queries/s"]:
        t.add_column(name, justify="left" if name == "rerank" else "right")
    for row in report.rows:
        probe = "-" if row.nprobe is None else f"{row.nprobe}{' (default)' if row.nprobe == report.default_nprobe else ''}"
        rerank = f"exact (depth {report.rerank_depth})" if row.rerank else "no"
        t.add_row(probe, rerank, *[f"{row.recall[k]:.4f}" for k in report.ks], f"{row.queries_per_s:,.0f}")
    return t

