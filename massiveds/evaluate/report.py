"""What ``massiveds eval`` reports: every number and the exact settings, as a JSON-round-tripping model, and its tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Metric(Model):
    """One metric at one point: mean over seeds, spread over seeds, bootstrap interval over queries, and each seed's value."""

    mean: float
    std: float
    ci_low: float
    ci_high: float
    per_seed: list[float]


class Point(Model):
    """One datastore × eval set × setting × fraction: the sampled datastore's size, the metrics, where first hits come from."""

    datastore: str
    eval_set: str
    #: the swept option and its value (``nprobe=32``), or "" when nothing is swept
    setting: str
    fraction: float
    #: per seed: tokens and passages of the searched shards' documents kept at ``fraction``
    tokens: list[int]
    passages: list[int]
    #: ``answer@10``, ``doc@5``, ``answer_mrr@10``, ...
    metrics: dict[str, Metric]
    #: share of the queries' first hits from each domain (mean over seeds)
    first_hit_domains: dict[str, float]
    #: per criterion, per seed, per query: the rank of the first relevant hit (0: none in the top max k)
    ranks: dict[str, list[list[int]]]


class DatastoreInfo(Model):
    """A datastore evaluated: where, which catalog (sha256 of ``datastore.json``), its embedder and index as recorded."""

    label: str
    path: str
    name: str
    catalog_sha256: str
    passages: int
    tokens: int
    embedder: dict[str, Any]
    index: dict[str, Any]
    sparse: dict[str, Any] | None


class EvalSetInfo(Model):
    """An eval set: its name, where it was read from, the sha256 of its bytes, its size and kinds of gold."""

    name: str
    source: str
    sha256: str
    items: int
    kinds: list[str]
    fields: dict[str, str | None]


class Settings(Model):
    """How the evaluation ran: k values, fractions, seeds, search options, the sweep, bootstrap size."""

    ks: list[int]
    fractions: list[float]
    seeds: list[int]
    options: dict[str, Any]
    sweep: dict[str, list[Any]] | None
    decontaminate_with_gold: bool
    bootstrap: int


class EvalReport(Model):
    """The whole result of one ``massiveds eval`` run."""

    created: str
    versions: dict[str, str]
    settings: Settings
    datastores: list[DatastoreInfo]
    eval_sets: list[EvalSetInfo]
    points: list[Point]
    seconds: float


def metric_names(kinds: Sequence[str], ks: Sequence[int], mrr_k: int) -> list[str]:
    """The metric names reported for a set with gold ``kinds``: recall at each k, then MRR, per kind."""
    return [f"{kind}@{k}" for kind in kinds for k in ks] + [f"{kind}_mrr@{mrr_k}" for kind in kinds]


def table_rows(report: EvalReport, eval_set: str, kind: str) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of the summary table of one eval set and gold kind: one row per datastore, setting and fraction."""
    several = len(report.datastores) > 1
    swept = report.settings.sweep is not None
    names = [m for m in next(p for p in report.points if p.eval_set == eval_set).metrics if m.startswith(f"{kind}@")
             or m.startswith(f"{kind}_mrr@")]
    columns = (["datastore"] if several else []) + (["setting"] if swept else []) + ["fraction", "tokens"] + names
    rows = []
    for p in report.points:
        if p.eval_set != eval_set:
            continue
        cells = ([p.datastore] if several else []) + ([p.setting] if swept else [])
        cells += [f"{p.fraction:g}", f"{sum(p.tokens) / len(p.tokens):,.0f}"]
        cells += [f"{p.metrics[m].mean:.3f} ±{(p.metrics[m].ci_high - p.metrics[m].ci_low) / 2:.3f}" for m in names]
        rows.append(cells)
    return columns, rows
