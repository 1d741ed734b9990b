"""Commands that measure a datastore: eval (retrieval quality against size) and eval-recall (the index against brute force)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from massiveds.cli._common import RERANK_HELP, print_json, user_errors
from massiveds.core.errors import MassiveDSError
from massiveds.core.report import console, progress, table


def eval_recall(
    datastore: Annotated[Path, typer.Argument(help="datastore directory")],
    queries: Annotated[int, typer.Option("--queries", min=1, help="stored passage vectors drawn as queries (own passage held out)")] = 1000,
    nprobe: Annotated[str | None, typer.Option(help="comma list of nprobe values (default: 1,4,16,64 and the datastore's)")] = None,
    k: Annotated[str, typer.Option("--k", help="comma list of k for recall@k")] = "1,10,100",
    rerank: Annotated[bool, typer.Option("--rerank/--no-rerank", help="also measure with exact rerank")] = True,
    rerank_depth: Annotated[int | None, typer.Option(min=1, help="rerank depth (default: the build's calibrated one)")] = None,
    query_file: Annotated[Path | None, typer.Option(help="text queries, one per line, embedded with the datastore's embedder")] = None,
    seed: Annotated[int, typer.Option(help="seed of the query sample")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Recall@k and queries/s of the index for each nprobe, with and without exact rerank, against brute force."""
    import massiveds
    from massiveds.evaluate.recall import recall_report
    from massiveds.ops.index_report import recall_table

    with user_errors():
        texts = None
        if query_file is not None:
            if not query_file.is_file():
                raise MassiveDSError(f"{query_file}: no such query file")
            texts = [line.strip() for line in query_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        ds = massiveds.open(datastore)
        report = recall_report(ds, queries, _int_list(nprobe, "--nprobe"), _int_list(k, "--k"), rerank, rerank_depth, seed, texts)
    if as_json:
        print_json(report.to_dict())
        return
    from rich.console import Console

    Console().print(recall_table(report))
    console.print(f"exact top-{report.ks[-1]} by brute force over the stored vectors: {report.exact_seconds:.1f} s", highlight=False)


def eval_command(
    datastores: Annotated[list[Path], typer.Argument(help="one datastore, or several to compare in one table and plot")],
    eval_files: Annotated[list[str], typer.Option("--eval", help="eval set: JSONL file or fsspec URL (repeatable)")],
    query_field: Annotated[str, typer.Option(help="JSON field holding the query")] = "question",
    answers_field: Annotated[str | None, typer.Option(help="field of gold answer strings (a string or a list)")] = "answers",
    gold_doc_field: Annotated[str | None, typer.Option(help="field of gold document ids (a string or a list)")] = None,
    gold_passage_field: Annotated[str | None, typer.Option(help="field of gold passage ids (an integer or a list)")] = None,
    k: Annotated[str, typer.Option("--k", help="comma list of k for recall@k")] = "1,5,10,20,100",
    fractions: Annotated[str, typer.Option(help="comma list of nested document fractions, e.g. 0.01,0.1,1.0")] = "1.0",
    seeds: Annotated[str, typer.Option(help="comma list of subsample seeds (spread over seeds = error bars)")] = "0",
    sweep: Annotated[str | None, typer.Option(help="one search option over values: one curve each, e.g. nprobe=8,32,128")] = None,
    domains: Annotated[str | None, typer.Option(help="search only these domains (comma-separated)")] = None,
    nprobe: Annotated[int | None, typer.Option(min=1, help="IVF lists to visit (default: the datastore's)")] = None,
    rerank: Annotated[str | None, typer.Option(help=RERANK_HELP)] = None,
    rerank_depth: Annotated[int | None, typer.Option(min=1, max=1000, help="with a cross-encoder: hits per query it scores (100)")] = None,
    dedup: Annotated[bool, typer.Option("--dedup", help="drop near-duplicate hits before scoring")] = False,
    mmr: Annotated[float | None, typer.Option("--mmr", min=0.0, max=1.0, metavar="LAMBDA", help="diversify by MMR")] = None,
    mode: Annotated[str | None, typer.Option(help="dense, sparse or hybrid (default: hybrid where there is a BM25 index)")] = None,
    alpha: Annotated[float | None, typer.Option(help="hybrid: weight of the dense list")] = None,
    fusion: Annotated[str | None, typer.Option(help="hybrid: 'convex' or 'rrf'")] = None,
    decontaminate_with_gold: Annotated[bool, typer.Option(
        "--decontaminate-with-gold", help="drop hits overlapping each query's own question and answers (13-gram rules)")] = False,
    bootstrap: Annotated[int, typer.Option(min=1, help="bootstrap resamples of the queries for the 95% intervals")] = 1000,
    json_file: Annotated[Path | None, typer.Option("--json", help="write every number and the exact settings to this file")] = None,
    plot: Annotated[Path | None, typer.Option(help="draw recall against datastore tokens: FILE.png or FILE.html")] = None,
    plot_k: Annotated[int | None, typer.Option(help="the k of the recall drawn (default 10)")] = None,
) -> None:
    """Retrieval quality against datastore size: recall@k and MRR per eval set at nested fractions and seeds, one search each."""
    import massiveds
    from massiveds.evaluate.evalset import EvalFields, read_eval_set
    from massiveds.evaluate.experiment import EvalPlan, evaluate, parse_sweep
    from massiveds.evaluate.plot import PLOT_KINDS, plot_metric, write_plot
    from massiveds.evaluate.report import table_rows

    with user_errors():
        if plot is not None and plot.suffix not in PLOT_KINDS:
            raise MassiveDSError(f"--plot {plot}: name a file ending in {' or '.join(PLOT_KINDS)}")
        given = {"domains": tuple(d.strip() for d in domains.split(",") if d.strip()) if domains else None, "nprobe": nprobe,
                 "rerank": rerank, "rerank_depth": rerank_depth,
                 "dedup": dedup or None, "mmr": mmr, "mode": mode, "alpha": alpha, "fusion": fusion}
        plan = EvalPlan(ks=tuple(sorted(set(_numbers(k, "--k", int)))),
                        fractions=tuple(sorted(set(_numbers(fractions, "--fractions", float)))),
                        seeds=tuple(_numbers(seeds, "--seeds", int)), options={n: v for n, v in given.items() if v is not None},
                        sweep=parse_sweep(sweep) if sweep else None, decontaminate_with_gold=decontaminate_with_gold, bootstrap=bootstrap)
        fields = EvalFields(query_field, answers_field or None, gold_doc_field, gold_passage_field)
        sets = [read_eval_set(f, fields) for f in eval_files]
        names = [s.name for s in sets]
        if len(set(names)) != len(names):
            sets = [read_eval_set(f, fields, name=f"{s.name}-{i + 1}") for i, (f, s) in enumerate(zip(eval_files, sets, strict=True))]
        opened = [(str(p), massiveds.open(p)) for p in datastores]
        total = len(opened) * len(plan.settings()) * len(plan.fractions) * len(plan.seeds) * sum(len(s.items) for s in sets)
        with progress() as bar:
            task = bar.add_task("eval", total=total, rate="queries × fractions × seeds")
            report = evaluate(opened, sets, plan, fields, lambda n: bar.advance(task, n))
        if plot is not None:
            plot_metric(report, plot_k)
    for eval_set in report.eval_sets:
        for kind in eval_set.kinds:
            columns, rows = table_rows(report, eval_set.name, kind)
            title = f"{eval_set.name}: {kind} recall and MRR ({eval_set.items} queries; ± half the 95% bootstrap interval)"
            console.print(table(title, columns, rows))
    hit_domains = sorted({d for p in report.points for d in p.first_hit_domains})
    if len(hit_domains) > 1:
        shares = [(p.datastore, p.eval_set, p.setting, f"{p.fraction:g}", *(f"{p.first_hit_domains.get(d, 0.0):.0%}" for d in hit_domains))
                  for p in report.points]
        console.print(table("where first hits come from (share of queries per domain)",
                            ["datastore", "eval set", "setting", "fraction", *hit_domains], shares))
    if json_file is not None:
        from massiveds.core.layout import atomic_path

        with atomic_path(json_file) as tmp:
            tmp.write_text(report.model_dump_json(indent=1))
        console.print(f"every number and the settings: {json_file}", highlight=False)
    if plot is not None:
        write_plot(report, plot, plot_k)
        console.print(f"plot: {plot}", highlight=False)
    console.print(f"{total:,} rankings scored in {report.seconds:.1f} s", highlight=False)


def _int_list(text: str | None, what: str) -> list[int] | None:
    """An eval-recall list flag (--nprobe, --k): positive integers, or None when not given."""
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise MassiveDSError(f"{what} must be a comma-separated list of integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise MassiveDSError(f"{what} must be positive integers, got {text!r}")
    return values


def _numbers(text: str, what: str, kind: type[int] | type[float]) -> list:  # type: ignore[type-arg]
    """A comma-separated list of numbers of ``kind``; a one-line error naming the flag otherwise."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise MassiveDSError(f"{what} must be a comma-separated list of {kind.__name__}s, got {text!r}") from None
    if not values:
        raise MassiveDSError(f"{what} needs at least one value")
    return values
