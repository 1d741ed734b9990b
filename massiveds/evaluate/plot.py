"""The scaling figure of an evaluation: recall@k against the tokens of the (sub)sampled datastore, log x, seeds as error bars."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from massiveds.core.errors import MassiveDSError
from massiveds.core.layout import atomic_path
from massiveds.evaluate.report import EvalReport, table_rows

#: Plot file suffixes and what they hold.
PLOT_KINDS = {".png": "a PNG image", ".html": "an HTML page with the figure and the tables"}


def plot_metric(report: EvalReport, k: int | None = None) -> str:
    """The kind of recall drawn: the first gold kind of the first eval set at ``k`` (default 10 if measured, else the largest k)."""
    ks = report.settings.ks
    at = k if k is not None else (10 if 10 in ks else max(ks))
    if at not in ks:
        raise MassiveDSError(f"--plot-k {at} is not one of the k values measured ({', '.join(map(str, ks))})")
    return f"{report.eval_sets[0].kinds[0]}@{at}"


def figure_png(report: EvalReport, k: int | None = None) -> bytes:
    """The figure as PNG bytes: one line per datastore × eval set × setting, mean over seeds, error bars ± one std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    at = plot_metric(report, k).split("@")[1]
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=100)
    lines: dict[tuple[str, str, str], list[tuple[float, float, float]]] = {}
    for p in report.points:
        name = f"{next(s.kinds[0] for s in report.eval_sets if s.name == p.eval_set)}@{at}"
        metric = p.metrics[name]
        lines.setdefault((p.datastore, p.eval_set, p.setting), []).append((sum(p.tokens) / len(p.tokens), metric.mean, metric.std))
    for (datastore, eval_set, setting), xs in lines.items():
        xs.sort()
        label = " · ".join(part for part in (datastore if len(report.datastores) > 1 else "", eval_set, setting) if part)
        ax.errorbar([x for x, _, _ in xs], [y for _, y, _ in xs], yerr=[e for _, _, e in xs], marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("tokens in the datastore (subsampled)")
    ax.set_ylabel(f"recall@{at}")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"recall@{at} vs datastore size ({len(report.settings.seeds)} seed{'s' if len(report.settings.seeds) > 1 else ''})")
    ax.legend(fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_plot(report: EvalReport, path: Path, k: int | None = None) -> None:
    """Write the figure to ``path``: a PNG, or an HTML page with the PNG inline and every summary table (no external files)."""
    if path.suffix not in PLOT_KINDS:
        raise MassiveDSError(f"--plot {path}: name a file ending in {' or '.join(PLOT_KINDS)}")
    png = figure_png(report, k)
    data = png if path.suffix == ".png" else _page(report, png).encode()
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _page(report: EvalReport, png: bytes) -> str:
    """A self-contained HTML page: the figure, then one table per eval set and gold kind."""
    parts = [f"<img alt='recall against datastore size' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"]
    for eval_set in report.eval_sets:
        for kind in eval_set.kinds:
            columns, rows = table_rows(report, eval_set.name, kind)
            head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
            parts.append(f"<h2>{html.escape(eval_set.name)}: {kind} recall</h2><table><tr>{head}</tr>{body}</table>")
    names = ", ".join(html.escape(d.label) for d in report.datastores)
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>massiveds eval</title>"
            "<style>body{font-family:sans-serif;margin:2em;color:#111}table{border-collapse:collapse}"
            "td,th{border:1px solid #999;padding:.2em .6em;text-align:right}</style></head><body>"
            f"<h1>massiveds eval: {names}</h1>{''.join(parts)}</body></html>")
