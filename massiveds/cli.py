"""The ``massiveds`` command line: build, search and validate datastores."""

from __future__ import annotations

import enum
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from massiveds.core.errors import MassiveDSError
from massiveds.core.report import console, table
from massiveds.core.writer_lock import DEFAULT_WAIT

if TYPE_CHECKING:
    from massiveds.core.catalog import Catalog, RecallRecord
    from massiveds.ops.stats import ShardStats
    from pipelines.build import BuildResult


class Engine(str, enum.Enum):
    """Where the build's work units run."""

    ray = "ray"
    local = "local"


app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False, help="Build, search and manage retrieval datastores."
)


#: The ``--wait`` of every command that changes a datastore.
Wait = Annotated[float, typer.Option("--wait", min=0.0, help="seconds to wait for another command changing the datastore "
                                     "(delete, append, compact, ...) before giving up")]


def _writer_waits(seconds: float) -> None:
    """This command waits ``seconds`` at most for another writer of its datastore, saying whom it waits for."""
    from massiveds.core.writer_lock import set_wait_policy

    set_wait_policy(seconds, lambda line: console.print(f"[yellow]{line}[/]", highlight=False, soft_wrap=True))


def _read_error(exc: Exception, datastore: Path) -> str:
    """One line for a reader's failure: a file gone because a writer replaced it under the read says so (run it again)."""
    if isinstance(exc, FileNotFoundError):
        return (f"{exc.filename}: gone while this command read {datastore}: a writer (compact, retrain) replaced it; run the command "
                "again (massiveds verify checks the datastore)")
    return str(exc)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True, highlight=False)
    raise typer.Exit(code=2)


@app.command()
def build(
    manifests: Annotated[list[Path], typer.Argument(help="YAML manifest(s); several are built together into one datastore")],
    out: Annotated[Path, typer.Option("--out", "-o", help="datastore directory to create or resume")],
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")] = None,
    force: Annotated[bool, typer.Option("--force", help="delete a previous build in --out and start over")] = False,
    engine: Annotated[Engine, typer.Option(help="ray: stages on Ray (default); local: everything in this process")] = Engine.ray,
    wait: Wait = DEFAULT_WAIT,
) -> None:
    """Build a datastore from manifests; re-running resumes and skips finished stages.

    Several manifests (e.g. one per domain) make one datastore: exact and near dedup and decontamination
    run across all of them, and the index is trained on a sample from every domain.
    """
    from massiveds.core.catalog import read_catalog
    from massiveds.core.manifest import load_manifest

    _writer_waits(wait)
    try:
        loaded = [load_manifest(m) for m in manifests]
        from pipelines.build import build as run_build

        result = run_build(loaded, out, address=address, force=force, engine=engine.value)
    except MassiveDSError as exc:
        _fail(str(exc))
        return
    catalog = read_catalog(out)
    _print_stages(f"build of {catalog.name}", result)
    b = catalog.build
    per_source = [
        (name, c["read"], c["kept"], c["read"] - c["kept"], ", ".join(f"{k.split(':')[1]} {v:,}" for k, v in c.items() if ":" in k))
        for name, c in b.sources.items()
    ]
    console.print(table("sources (extract and filters)", ["source", "read", "kept", "dropped", "reasons"], per_source))
    rows: list[tuple[str, int | str | None]] = [("records read", b.records_read)]
    rows += [(f"dropped {reason}", n) for reason, n in b.dropped.items()]
    rows += [("documents kept", b.documents_kept), ("passages", catalog.num_passages), ("shards", len(catalog.shards)),
             ("index", catalog.index.factory), *_recall_row(catalog.recall)]
    if (sp := catalog.sparse) is not None:
        rows.append(("BM25 index", f"{sp.terms:,} terms, {sp.bytes / max(catalog.num_passages, 1):,.0f} bytes/passage"))
    if result.nodes:
        rows.append(("ray nodes (this run)", result.nodes))
    console.print(table("datastore", ["", "count"], rows))
    if len(catalog.domains) > 1:
        _print_domains("domains", catalog)
    console.print(f"datastore ready: {out}")


@app.command()
def append(
    datastore: Annotated[Path, typer.Argument(help="datastore directory to add to")],
    manifests: Annotated[list[Path], typer.Argument(help="YAML manifest(s) of the new data")],
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")] = None,
    force: Annotated[bool, typer.Option("--force", help="drop an unfinished append of other manifests and start this one")] = False,
    engine: Annotated[Engine, typer.Option(help="ray: stages on Ray (default); local: everything in this process")] = Engine.ray,
    wait: Wait = DEFAULT_WAIT,
) -> None:
    """Add new data as new shards, without retraining: deduplicated against the datastore, its embedder and quantizer; resumable."""
    from massiveds.core.catalog import read_catalog
    from massiveds.core.manifest import load_manifest

    _writer_waits(wait)
    try:
        loaded = [load_manifest(m) for m in manifests]
        from pipelines.append import append as run_append

        result = run_append(datastore, loaded, address=address, engine=engine.value, force=force)
    except MassiveDSError as exc:
        _fail(str(exc))
        return
    catalog = read_catalog(datastore)
    _print_stages(f"append to {catalog.name}", result)
    done = catalog.appends[-1]
    rows: list[tuple[str, object]] = [("records read", done.records_read)]
    rows += [(f"dropped {reason}", n) for reason, n in done.dropped.items()]
    rows += [("documents added", done.documents), ("passages added", done.passages), ("shards added", len(done.shards)),
             ("passages now", catalog.num_passages), ("recall@10 before", _figure(done.recall_before)),
             ("recall@10 after", _figure(done.recall_after))]
    console.print(table("appended", ["", "count"], rows))
    from massiveds.ops.stats import recall_warning

    if warning := recall_warning(catalog, datastore):
        console.print(f"[bold yellow]{warning}[/]", highlight=False)
    console.print(f"datastore updated: {datastore} (drop records: {done.table})", highlight=False)


def _figure(value: float | None) -> str:
    """A measured share as printed in summaries: four decimals (the tables print other floats to one), or "-"."""
    return "-" if value is None else f"{value:.4f}"


def _print_stages(title: str, result: BuildResult) -> None:
    """What each stage of a build or an append did in this run, and what ran again after a worker or a node was lost."""
    console.print(table(title, ["stage", "status", "seconds", "result"], [(r.name, r.status, r.seconds, r.detail) for r in result.reports]))
    if result.reruns:
        import time

        rows = [(r.stage, r.unit, r.cause, time.strftime("%H:%M:%S", time.localtime(r.at))) for r in result.reruns]
        console.print(table("run again after their worker died", ["stage", "unit", "why", "at"], rows))


def _recall_row(recall: RecallRecord | None) -> list[tuple[str, str]]:
    """The build summary's line on the recall measured at the end of the build: the figures, or why it was skipped."""
    if recall is None:
        return []
    if recall.status != "measured":
        return [("recall", f"skipped: {recall.reason}")]
    figures = f"{recall.figure()} ({recall.figure(rerank=True)})"
    return [(f"recall@{recall.k} (with exact rerank of {recall.rerank_depth})", figures)]


def _print_domains(title: str, catalog: Catalog) -> None:
    """Documents, passages, tokens and shards per domain of ``catalog``."""
    rows = [(d, v.documents, v.passages, v.tokens, v.shards) for d, v in catalog.domains.items()]
    console.print(table(title, ["domain", "documents", "passages", "tokens", "shards"], rows))


@app.command()
def search(
    datastore: Annotated[Path, typer.Argument(help="datastore directory")],
    query: Annotated[list[str], typer.Argument(help="one or more query strings (searched as one batch)")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=10_000, help="hits per query")] = 10,
    nprobe: Annotated[int | None, typer.Option(min=1, help="IVF lists to visit (default: the datastore's)")] = None,
    domains: Annotated[list[str] | None, typer.Option("--domains", help="search only these domains (comma-separated or repeated)")] = None,
    dedup: Annotated[bool, typer.Option("--dedup", help="drop near-duplicate hits (MinHash); the best-scored copy stays")] = False,
    dedup_threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="Jaccard similarity from which two hits are copies")] = 0.8,
    decontaminate: Annotated[list[str] | None, typer.Option(
        "--decontaminate", metavar="GOLD",
        help="drop hits overlapping this text (13-gram overlap ≥ 0.8 or a 32-word common run); @FILE reads a file; repeatable")] = None,
    fraction: Annotated[float | None, typer.Option(help="search the nested subsample keeping this fraction of documents")] = None,
    seed: Annotated[int, typer.Option(min=0, help="seed of the --fraction subsample")] = 0,
    mmr: Annotated[float | None, typer.Option("--mmr", min=0.0, max=1.0, metavar="LAMBDA",
                                              help="diversify by maximal marginal relevance (1 = plain ranking)")] = None,
    continuation: Annotated[bool, typer.Option("--continuation", help="add the next passage of the same document to each hit")] = False,
    rerank: Annotated[str | None, typer.Option(help="rerank IVF-PQ candidates: 'exact' (inner product over stored vectors)")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="fail when a shard is missing or unreadable instead of skipping it")] = False,
    mode: Annotated[str | None, typer.Option(
        help="dense, sparse (BM25) or hybrid (both fused); default: hybrid where the datastore has a BM25 index, else dense")] = None,
    alpha: Annotated[float | None, typer.Option(
        help="hybrid: weight of the dense list, 1 = dense only, 0 = BM25 only (default: the measured one, docs/search.md)")] = None,
    fusion: Annotated[str, typer.Option(help="hybrid: 'convex' (dense + BM25 over its bound) or 'rrf' (reciprocal ranks)")] = "convex",
    as_json: Annotated[bool, typer.Option("--json", help="print hits as JSON")] = False,
) -> None:
    """Search a datastore with its own embedder (and its BM25 index) and print ranked passages."""
    import warnings

    import massiveds
    from massiveds.core.errors import ShardSkippedWarning
    from massiveds.store.search import SearchOptions

    try:
        golds = [_read_gold(g) for g in decontaminate or []]
        names = [d.strip() for ds_ in domains or [] for d in ds_.split(",") if d.strip()] or None
        options = SearchOptions.create(k=k, nprobe=nprobe, domains=names, dedup=dedup, dedup_threshold=dedup_threshold,
                                       decontaminate=golds or None, fraction=fraction, seed=seed, mmr=mmr,
                                       continuation=continuation, rerank=rerank, strict=strict, mode=mode, alpha=alpha,
                                       fusion=fusion)
        ds = massiveds.open(datastore)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ShardSkippedWarning)  # reported below, once, on stderr
            result = ds.search_batch(list(query), options)
    except MassiveDSError as exc:
        _fail(str(exc))
        return
    for name, reason in result.skipped_shards.items():
        console.print(f"[bold yellow]warning:[/] shard {name} skipped: {reason}", soft_wrap=True, highlight=False)
    results = result.hits
    if as_json:
        payload = results[0] if len(query) == 1 else [{"query": q, "hits": h} for q, h in zip(query, results, strict=True)]
        sys.stdout.write(json.dumps(payload, ensure_ascii=False, indent=2) + "\n")
        return
    from rich.console import Console

    out = Console()
    for q, hits in zip(query, results, strict=True):
        out.rule(f"[bold]{q}")
        for rank, hit in enumerate(hits, 1):
            title = f" · {hit['title']}" if hit.get("title") else ""
            parts = "" if "dense_score" not in hit else f" [dim](dense {hit['dense_score']:.4f}, bm25 {hit['sparse_score']:.4f})[/]"
            head = f"[bold]{rank:>2}.[/] [cyan]{hit['score']:.4f}[/]{parts} [magenta]{hit['domain']}[/] {hit['doc_id']}{title}"
            out.print(head, highlight=False)
            text = " ".join(hit["text"].split())
            out.print(f"    {text[:400]}{'…' if len(text) > 400 else ''}", highlight=False, soft_wrap=True)
            if hit.get("continuation"):
                cont = " ".join(hit["continuation"]["text"].split())
                out.print(f"    [dim]↳ {cont[:300]}{'…' if len(cont) > 300 else ''}[/]", highlight=False, soft_wrap=True)


def _read_gold(value: str) -> str:
    """A --decontaminate value: the text itself, or the contents of FILE for ``@FILE``."""
    if not value.startswith("@"):
        return value
    path = Path(value[1:])
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MassiveDSError(f"--decontaminate {value}: cannot read {path} ({exc.__class__.__name__})") from None


@app.command()
def validate(manifests: Annotated[list[Path], typer.Argument(help="manifest files")]) -> None:
    """Check manifests (fields, values, that sources resolve) without building anything."""
    from massiveds.core.manifest import load_manifest
    from massiveds.ingest.sources.files import resolve_inputs

    rows = []
    failed = False
    for path in manifests:
        try:
            loaded = load_manifest(path)
            files = resolve_inputs(loaded)
            rows.append((str(path), "ok", loaded.manifest.domain, len(loaded.manifest.sources), len(files)))
        except MassiveDSError as exc:
            failed = True
            console.print(f"[bold red]error:[/] {exc}", soft_wrap=True, highlight=False)
    if rows:
        console.print(table("manifests", ["manifest", "status", "domain", "sources", "files"], rows))
    if failed:
        raise typer.Exit(code=2)


@app.command()
def inspect(
    datastore: Annotated[Path, typer.Argument(help="datastore directory")],
    as_json: Annotated[bool, typer.Option("--json", help="print the statistics as JSON")] = False,
    plot: Annotated[Path | None, typer.Option(help="also write an HTML page with tokens per domain and list sizes")] = None,
) -> None:
    """Per-domain and per-shard statistics: counts, bytes on disk, index, list balance, recall, drops."""
    from massiveds.ops.stats import datastore_stats, list_sizes, recall_warning, write_plot

    try:
        stats = datastore_stats(datastore)
        if plot is not None:
            write_plot(stats, list_sizes(datastore), plot)
    except (MassiveDSError, FileNotFoundError) as exc:
        _fail(_read_error(exc, datastore))
        return
    if as_json:
        sys.stdout.write(json.dumps(stats.to_dict(), indent=2) + "\n")
        return
    from rich.console import Console

    out = Console()
    cat, mib = stats.catalog, 1 << 20
    out.print(f"[bold]{cat.name}[/]: {cat.embedder.model} (dim {cat.embedder.dim}), index {cat.index.factory}, nprobe {cat.index.nprobe}",
              highlight=False)
    columns = ["domain", "documents", "passages", "tokens", "shards", "passages MiB", "index MiB", "vectors MiB", "BM25 MiB"]
    out.print(table("domains", columns,
                    [(name, d.totals.documents, d.totals.passages, d.totals.tokens, d.totals.shards, d.bytes["passages"] / mib,
                      d.bytes["index"] / mib, d.bytes["vectors"] / mib, d.bytes["sparse"] / mib) for name, d in stats.domains.items()]))
    out.print(table("shards", ["shard", "passages", "tokens", "index MiB", "max list", "mean list", "imbalance"],
                    [_shard_row(s) for s in stats.shards]))
    if cat.build.dropped:
        out.print(table("dropped at build", ["stage:reason", "documents"], sorted(cat.build.dropped.items())))
    if cat.deletions:
        pending = sum(s.deleted for s in cat.shards)
        out.print(table(f"deletions ({pending:,} deleted passages still in the files: massiveds compact removes them)",
                        ["when", "by", "reason", "selection", "documents", "passages", "table"],
                        [(d.at, d.by, d.reason, d.selection, d.documents, d.passages, d.table) for d in cat.deletions]))
    if cat.appends:
        out.print(table("appends", ["when", "by", "manifests", "documents", "passages", "shards", "dropped", "recall@10 before", "after"],
                        [(a.at, a.by, ", ".join(m.path for m in a.manifests), a.documents, a.passages, len(a.shards),
                          sum(a.dropped.values()), _figure(a.recall_before), _figure(a.recall_after)) for a in cat.appends]))
    if cat.recall is not None:
        out.print(f"recall: {json.dumps(cat.recall.as_json())}")
    if warning := recall_warning(cat, datastore):
        out.print(f"[bold yellow]{warning}[/]", highlight=False)
    if cat.sparse is not None:
        sp, rate = cat.sparse, (cat.build.model_extra or {}).get("sparse_passages_per_s")
        out.print(f"BM25 ({sp.library}, k1 {sp.k1}, b {sp.b}, {json.dumps(sp.tokenizer.model_dump())}): {sp.terms:,} terms, "
                  f"{sp.bytes / max(cat.num_passages, 1):,.0f} bytes/passage" + (f", built at {rate:,} passages/s" if rate else ""),
                  highlight=False)
    if cat.subsample is not None:
        sub = cat.subsample
        out.print(f"subsample of {sub.parent.name} at fraction {sub.fraction} (seed {sub.seed})")
    if cat.merged_from:
        referenced = [s for s in stats.shards if s.record.folder]
        out.print(f"merge of {', '.join(m.name for m in cat.merged_from)}: "
                  f"{len(referenced)} of {len(stats.shards)} shards referenced in place", highlight=False)
    missing = [s.record for s in stats.shards if not s.present]
    if missing:
        out.print(f"[bold red]{len(missing)} shard folder(s) missing[/], e.g. {missing[0].folder_rel()}", highlight=False)
    if plot is not None:
        out.print(f"plot written to {plot}")


def _shard_row(shard: ShardStats) -> tuple[object, ...]:
    """A row of inspect's shard table: passages, tokens, index MiB and the IVF list balance (none for Flat)."""
    rec, balance = shard.record, shard.record.list_balance
    row = (rec.name, rec.count, rec.tokens, shard.bytes["index"] / (1 << 20))
    return row + ((balance.max_list, balance.mean_list, balance.imbalance) if balance else (None, None, None))


@app.command()
def subsample(
    datastore: Annotated[Path, typer.Argument(help="datastore directory to sample from")],
    fraction: Annotated[float, typer.Option(help="fraction of documents to keep, in (0, 1]")],
    out: Annotated[Path, typer.Option("--out", "-o", help="new datastore directory")],
    seed: Annotated[int, typer.Option(help="sampling seed: same seed, nested samples")] = 0,
) -> None:
    """Write a physical subsample (nested by seed) without re-embedding or retraining."""
    from massiveds.core.catalog import open_catalog
    from massiveds.core.report import progress
    from massiveds.ops.subsample import subsample as run_subsample

    try:
        from massiveds.store.sampling import check_fraction

        check_fraction(fraction)
        parent = open_catalog(datastore)
        with progress() as bar:
            task = bar.add_task("subsample", total=len(parent.shards), rate="")
            catalog = run_subsample(datastore, out, fraction, seed, on_shard=lambda _: bar.update(task, advance=1))
    except (MassiveDSError, FileNotFoundError) as exc:
        _fail(_read_error(exc, datastore))
        return
    rows = [(d, parent.domains[d].documents, v.documents, parent.domains[d].passages, v.passages) for d, v in catalog.domains.items()]
    console.print(table(f"subsample {fraction} (seed {seed})", ["domain", "documents before", "after", "passages before", "after"], rows))
    console.print(f"datastore ready: {out}")


StorageOption = Annotated[
    list[str] | None, typer.Option("--option", "-O", help="fsspec storage option key=value (repeatable), e.g. endpoint_url=http://...")
]
Workers = Annotated[int, typer.Option(min=1, max=256, help="parallel transfers (threads)")]


def _transfer_summary(title: str, report: object, where: str) -> None:
    from massiveds.core.report import human_bytes
    from massiveds.ops.publish import TransferReport

    assert isinstance(report, TransferReport)
    rows = [("files in datastore", report.files), ("size", human_bytes(report.bytes)),
            ("objects transferred", len(report.transferred)), ("objects already there (skipped)", len(report.skipped)),
            ("bytes transferred", human_bytes(report.bytes_transferred)), ("split into parts", report.parts),
            ("seconds", round(report.seconds, 1))]
    console.print(table(title, ["", "value"], rows))
    console.print(f"{title} complete: {where}")


@app.command()
def publish(
    datastore: Annotated[Path, typer.Argument(help="datastore directory")],
    dest: Annotated[str, typer.Argument(help="destination: a folder or any fsspec URL (s3://bucket/prefix, hf://datasets/owner/name/...)")],
    include_build: Annotated[bool, typer.Option("--include-build", help="also publish build/ (stage outputs, drop records)")] = False,
    workers: Workers = 8,
    part_size: Annotated[str | None, typer.Option(help="split larger files into parts (e.g. 20G); default 20 GB for hf://")] = None,
    option: StorageOption = None,
) -> None:
    """Upload a datastore (files in parallel, resumable, datastore.json last); per-file sha256 in checksums.json."""
    from massiveds.core.report import transfer_progress
    from massiveds.ops.publish import parse_size, storage_options_from
    from massiveds.ops.publish import publish as run_publish

    try:
        size = parse_size(part_size) if part_size else None
        opts = storage_options_from(option or [])
        with transfer_progress() as bar:
            task = bar.add_task("publish", total=None, files="")
            report = run_publish(datastore, dest, include_build=include_build, workers=workers, part_size=size, storage_options=opts,
                                 on_bytes=lambda n: bar.advance(task, n))
    except (MassiveDSError, FileNotFoundError) as exc:
        _fail(_read_error(exc, datastore))
        return
    _transfer_summary("publish", report, dest)


@app.command()
def pull(
    src: Annotated[str, typer.Argument(help="a published datastore: folder or fsspec URL")],
    directory: Annotated[Path, typer.Argument(help="local directory to create or complete")],
    workers: Workers = 8,
    option: StorageOption = None,
    wait: Wait = DEFAULT_WAIT,
) -> None:
    """Download a published datastore (resumable, every file verified against its sha256, datastore.json last)."""
    from massiveds.core.report import transfer_progress
    from massiveds.ops.publish import pull as run_pull
    from massiveds.ops.publish import storage_options_from

    _writer_waits(wait)
    try:
        opts = storage_options_from(option or [])
        with transfer_progress() as bar:
            task = bar.add_task("pull", total=None, files="")
            report = run_pull(src, directory, workers=workers, storage_options=opts, on_bytes=lambda n: bar.advance(task, n))
    except MassiveDSError as exc:
        _fail(str(exc))
        return
    _transfer_summary("pull", report, str(directory))


@app.command()
def verify(
    datastore: Annotated[Path, typer.Argument(help="datastore directory")],
    sizes_only: Annotated[bool, typer.Option("--sizes-only", help="check sizes and presence, skip sha256 (fast)")] = False,
) -> None:
    """Check every file of a datastore against its catalog; one line per problem, non-zero exit if any."""
    from massiveds.ops.verify import verify as run_verify

    problems = run_verify(datastore, hashes=not sizes_only)
    for line in problems:
        sys.stdout.write(f"{datastore}/{line}\n" if not line.startswith(str(datastore)) else line + "\n")
    if problems:
        console.print(f"[bold red]{len(problems)} problem(s)[/] in {datastore}", highlight=False)
        raise typer.Exit(code=1)
    console.print(f"{datastore}: ok ({'sizes' if sizes_only else 'sizes and sha256'} of every catalog file)", highlight=False)


@app.command()
def serve(
    datastore: Annotated[Path, typer.Argument(help="datastore directory")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port (0 picks a free one)")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="processes serving the same socket, each with its own embedder")] = 1,
    max_k: Annotated[int, typer.Option("--max-k", min=1, max=10_000, help="largest n_docs a request may ask for")] = 1000,
    max_queries: Annotated[int, typer.Option(min=1, help="most queries in one request")] = 256,
    max_body: Annotated[int, typer.Option(min=1024, help="largest request body in bytes")] = 1 << 20,
    max_queue: Annotated[int, typer.Option(min=1, help="most searches waiting per worker; more are answered 503")] = 1024,
    batch_wait_ms: Annotated[float, typer.Option(min=0.0, help="how long the search thread waits to coalesce requests")] = 2.0,
    strict: Annotated[bool, typer.Option("--strict", help="refuse to start when a shard is missing or unreadable")] = False,
    access_log: Annotated[bool, typer.Option("--access-log", help="log every request on stderr")] = False,
) -> None:
    """Serve a datastore over HTTP: POST /search (MassiveDS-compatible), GET /health, /stats, /docs (OpenAPI) and a search page at /."""
    import warnings

    from massiveds.core.errors import ShardSkippedWarning
    from massiveds.serve.app import create_app
    from massiveds.serve.engine import ServeConfig, check_for_serving, open_for_serving
    from massiveds.serve.run import bind, serve_workers
    from massiveds.serve.run import serve as serve_app

    config = ServeConfig(max_k=max_k, max_queries=max_queries, max_body=max_body, max_queue=max_queue, batch_wait_s=batch_wait_ms / 1000)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ShardSkippedWarning)  # reported below, once, on stderr
            # with several workers each opens and warms up its own; here only the check
            ds = open_for_serving(datastore, strict=strict) if workers == 1 else check_for_serving(datastore, strict=strict)
            app_ = create_app(ds, config) if workers == 1 else None
            sock = bind(host, port)
    except MassiveDSError as exc:
        _fail(str(exc))
        return
    _, skipped = ds.usable_shards()
    for name, reason in skipped.items():
        console.print(f"[bold yellow]warning:[/] shard {name} skipped: {reason}", soft_wrap=True, highlight=False)
    where = f"http://{host}:{sock.getsockname()[1]}"
    console.print(f"serving {ds.name} ({ds.num_passages:,} passages, {len(ds.shards) - len(skipped)} shards, {workers} worker"
                  f"{'s' if workers > 1 else ''}) at {where}  POST /search · GET /health · GET /stats · page {where}/ · API {where}/docs",
                  soft_wrap=True, highlight=False)
    if app_ is not None:
        serve_app(app_, sock, access_log)
    else:
        serve_workers(str(datastore), strict, config, sock, workers, access_log)


@app.command()
def leakage(
    datastore: Annotated[Path, typer.Argument(help="datastore directory")],
    eval_file: Annotated[Path, typer.Option("--eval", help="evaluation items: a JSONL or Parquet file")],
    fields: Annotated[str, typer.Option(help="comma-separated fields whose text makes an item")] = "question,answer",
    id_field: Annotated[str | None, typer.Option(help="field holding the item id (default: row number)")] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="neighbours per item")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """RETRO-style leakage: the longest common word run between each eval item and its top-k neighbours."""
    import massiveds
    from massiveds.clean.decontaminate import read_eval_items
    from massiveds.evaluate.leakage import leakage_report

    fmt = "parquet" if eval_file.suffix == ".parquet" else "jsonl"
    try:
        if not eval_file.is_file():
            raise MassiveDSError(f"{eval_file}: evaluation file not found")
        spec = {"paths": [str(eval_file)], "format": fmt, "fields": [f for f in fields.split(",") if f], "id_field": id_field}
        items = [(i, t) for i, t in read_eval_items(spec) if t.strip()]
        if not items:
            raise MassiveDSError(f"{eval_file}: no item has text in fields {fields!r}; name the right --fields")
        hits = massiveds.open(datastore).search([t for _, t in items], k=k)
    except MassiveDSError as exc:
        _fail(str(exc))
        return
    report = leakage_report(items, hits)  # type: ignore[arg-type]
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        return
    console.print(table(f"leakage of {len(items)} items (top {k} neighbours)", ["overlap bucket", "items"], report["buckets"].items()))
    rows = [(r["item_id"], r["words"], r["longest_run"], f"{r['overlap']:.0%}", r["doc_id"]) for r in report["per_item"]]
    console.print(table("per item", ["item", "words", "longest run", "overlap", "neighbour doc"], rows))


@app.command()
def merge(
    datastores: Annotated[list[Path], typer.Argument(help="datastores to merge (e.g. one per domain)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="new datastore directory")],
    copy: Annotated[bool, typer.Option("--copy", help="copy the shards (ids renumbered): a self-contained datastore")] = False,
) -> None:
    """Merge datastores built with the same embedder into one catalog with unique passage ids.

    Shards are referenced in place (by a path relative to --out: move the datastores together), or copied with --copy.
    """
    from massiveds.core.catalog import open_catalog
    from massiveds.core.report import progress
    from massiveds.ops.merge import merge as run_merge
    from massiveds.ops.merge import sparse_note

    try:
        catalogs = [(d, open_catalog(d)) for d in datastores]
        note = sparse_note(catalogs, copy)
        total = sum(len(c.shards) for _, c in catalogs)
        with progress() as bar:
            task = bar.add_task("merge", total=total, rate="")
            catalog = run_merge(list(datastores), out, copy=copy, on_shard=lambda _: bar.update(task, advance=1))
    except MassiveDSError as exc:
        _fail(str(exc))
        return
    how = "copied" if copy else "referenced in place"
    _print_domains(f"merged {len(datastores)} datastores (shards {how})", catalog)
    if note:
        console.print(f"[bold yellow]note:[/] {note}", soft_wrap=True, highlight=False)
    console.print(f"datastore ready: {out}")


@app.command()
def plan(
    manifests: Annotated[
        list[Path] | None, typer.Argument(help="manifests: their stated source sizes give the vectors; the first gives index and embedder")
    ] = None,
    vectors: Annotated[str | None, typer.Option("--vectors", "-n", help="vectors: 1000000, 2.5M, 1e9, 1B; a comma list compares")] = None,
    dim: Annotated[int | None, typer.Option(min=1, help="embedding dimension (default: the manifest's model, else 384)")] = None,
    memory_gb: Annotated[
        float | None, typer.Option("--memory-gb", min=0.001, help="RAM budget to serve the index (default: index.memory_budget_gb)")
    ] = None,
    embed_rate: Annotated[
        float | None,
        typer.Option("--embed-rate", min=0.001, help="passages/s one GPU embeds (default: 5000, a BERT-base-size model on an H100)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the plans as JSON")] = False,
) -> None:
    """Choose the index for a number of vectors and show why: bytes per vector, RAM to serve, disk, training sample.

    With manifests, also the build's size and embedding GPU-hours; an IVF-PQ plan is shown beside exact Flat search.
    """
    from massiveds.core.manifest import Index, load_manifest
    from massiveds.encode.embed import declared_dimension
    from massiveds.encode.index import flat_report, plan_report
    from massiveds.ops.estimate import H100_EMBED_PASSAGES_PER_S, build_estimate, estimate
    from massiveds.ops.index_report import KNOWN_DIMS, build_table, parse_count, plan_table

    try:
        spec, model, folder = Index(), None, None
        loaded = [load_manifest(m) for m in manifests or []]
        if loaded:
            spec, model, folder = loaded[0].manifest.index, loaded[0].manifest.embed.model, loaded[0].path.parent
        sources = [e for lm in loaded for e in estimate(lm)]
        if vectors is None:
            total = sum(e.passages or 0 for e in sources)
            if not total:
                raise MassiveDSError("give the number of vectors with --vectors N (e.g. --vectors 100M), or manifests with estimated sizes")
            vectors = str(total)
        if dim is None:
            dim = 384 if model is None else KNOWN_DIMS.get(model) or declared_dimension(model, folder)
            if dim is None:
                raise MassiveDSError(f"the dimension of {model!r} is not known here (not a local model folder); give it with --dim")
        reports = [plan_report(parse_count(v), dim, spec, memory_gb) for v in vectors.split(",") if v.strip()]
    except MassiveDSError as exc:
        _fail(str(exc))
        return
    budget = memory_gb if memory_gb is not None else spec.memory_budget_gb
    flats = [flat_report(r.footprint.n_vectors, dim, budget) for r in reports]
    cost = build_estimate(sources, embed_rate or H100_EMBED_PASSAGES_PER_S) if sources else None
    if as_json:
        out_json = {
            "sources": [e.to_dict() for e in sources],
            "build": None if cost is None else cost.to_dict() | {"model": model, "dim": dim},
            "plans": [r.to_dict() for r in reports],
            "flat": [f.to_dict() for f in flats],
        }
        sys.stdout.write(json.dumps(out_json, indent=2) + "\n")
        return
    from rich.console import Console

    out = Console()
    if sources:
        rows = [(e.manifest, e.source, e.documents, e.tokens, e.passages) for e in sources]
        rows.append(("total", "", sum(e.documents or 0 for e in sources), sum(e.tokens or 0 for e in sources),
                     sum(e.passages or 0 for e in sources)))
        out.print(table("expected size (from the manifests' estimated_*)", ["manifest", "source", "documents", "tokens", "passages"], rows))
    if cost is not None:
        out.print(build_table(cost, model or "?", dim, default_rate=embed_rate is None))
    out.print(plan_table([c for f, r in zip(flats, reports, strict=True) for c in ((r,) if r.plan.type == "flat" else (f, r))]))
    for r in reports:
        out.print(f"[bold]{r.footprint.n_vectors:,}[/]: {r.plan.reason}", highlight=False, soft_wrap=True)


def _int_list(text: str | None, what: str) -> list[int] | None:
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


@app.command("distill-embedder")
def distill_embedder(
    source: Annotated[str, typer.Argument(help="a local sentence-transformers model folder (or a packaged offline model name)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="new folder for the static model: name it as embed.model")],
    dims: Annotated[int, typer.Option(help="dimensions of the static vectors (PCA of the source model's)")] = 256,
) -> None:
    """Distil a static embedder (model2vec) from a local model, offline: ~50x a transformer's CPU throughput for a datastore."""
    from massiveds.encode.distill import distill_static

    try:
        console.print(f"distilling {source} into a {dims}-dimension static model (every vocabulary token through the source model)")
        made = distill_static(source, out, dims)
    except MassiveDSError as exc:
        _fail(str(exc))
        return
    from massiveds.core.report import human_bytes

    rows = [("source", made.source), ("static model", str(made.out)), ("dimensions", made.dims), ("vocabulary", f"{made.vocabulary:,}"),
            ("size", human_bytes(made.bytes)), ("seconds", round(made.seconds, 1))]
    console.print(table("distill-embedder", ["", "value"], rows))
    console.print(f"use it in a manifest: embed: {{model: {made.out}}}")


@app.command("eval-recall")
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

    try:
        texts = None
        if query_file is not None:
            if not query_file.is_file():
                raise MassiveDSError(f"{query_file}: no such query file")
            texts = [line.strip() for line in query_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        ds = massiveds.open(datastore)
        report = recall_report(ds, queries, _int_list(nprobe, "--nprobe"), _int_list(k, "--k"), rerank, rerank_depth, seed, texts)
    except MassiveDSError as exc:
        _fail(str(exc))
        return
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
        return
    from rich.console import Console

    Console().print(recall_table(report))
    console.print(f"exact top-{report.ks[-1]} by brute force over the stored vectors: {report.exact_seconds:.1f} s", highlight=False)


@app.command("eval")
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
    rerank: Annotated[str | None, typer.Option(help="'exact': rerank IVF-PQ candidates over stored vectors")] = None,
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
    from massiveds.core.report import progress
    from massiveds.evaluate.evalset import EvalFields, read_eval_set
    from massiveds.evaluate.experiment import EvalPlan, evaluate, parse_sweep
    from massiveds.evaluate.plot import PLOT_KINDS, plot_metric, write_plot
    from massiveds.evaluate.report import table_rows

    try:
        if plot is not None and plot.suffix not in PLOT_KINDS:
            raise MassiveDSError(f"--plot {plot}: name a file ending in {' or '.join(PLOT_KINDS)}")
        given = {"domains": tuple(d.strip() for d in domains.split(",") if d.strip()) if domains else None, "nprobe": nprobe,
                 "rerank": rerank, "dedup": dedup or None, "mmr": mmr, "mode": mode, "alpha": alpha, "fusion": fusion}
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
    except MassiveDSError as exc:
        _fail(str(exc))
        return
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


@app.command()
def delete(
    datastore: Annotated[Path, typer.Argument(help="datastore directory")],
    doc_ids: Annotated[Path | None, typer.Option(help="file of document ids to delete, one per line")] = None,
    source: Annotated[str | None, typer.Option(help="delete every document of this source")] = None,
    match_eval: Annotated[Path | None, typer.Option(help="delete documents containing an item of this eval file (JSONL/Parquet)")] = None,
    fields: Annotated[str, typer.Option(help="--match-eval: comma-separated fields whose text makes an item")] = "question,answer",
    reason: Annotated[str, typer.Option(help="why (kept in the catalog's audit record)")] = "unspecified",
    wait: Wait = DEFAULT_WAIT,
) -> None:
    """Delete documents (all their passages) from every shard at once: searches never return them; `compact` removes them from the files."""
    import time

    from massiveds.ops.delete import Selection, delete_documents

    given = [(how, str(v)) for how, v in (("doc-ids", doc_ids), ("source", source), ("match-eval", match_eval)) if v is not None]
    clock = time.perf_counter()
    _writer_waits(wait)
    try:
        if len(given) != 1:
            raise MassiveDSError("name exactly one of --doc-ids FILE, --source NAME, --match-eval FILE")
        record, found = delete_documents(datastore, Selection(*given[0], tuple(f for f in fields.split(",") if f)), reason)
    except MassiveDSError as exc:
        _fail(str(exc))
        return
    rows = [("documents deleted", f"{len(found.documents):,}"), ("passages deleted", f"{found.passages:,}"),
            ("shards touched", f"{len(found.rows):,}"), ("passages deleted before", f"{found.already:,}"),
            ("seconds", f"{time.perf_counter() - clock:.1f}")]
    console.print(table(f"delete {given[0][0]} {given[0][1]}", ["", "value"], rows))
    if found.finished is not None:
        console.print(f"finished an interrupted deletion first ({found.finished.selection}: {found.finished.documents:,} documents, "
                      f"record: {found.finished.table})", highlight=False, soft_wrap=True)
    if record is None:
        console.print("nothing new to delete", highlight=False)
        return
    console.print(f"searches of {datastore} no longer return them (record: {record.table}); their text stays in the shards' files and in "
                  f"the build folder's parts until `massiveds compact {datastore}` removes it", highlight=False, soft_wrap=True)


@app.command()
def compact(
    datastore: Annotated[Path, typer.Argument(help="datastore directory")],
    threshold: Annotated[float, typer.Option(help="rewrite shards with more than this share deleted (0: every one with any)")] = 0.0,
    wait: Wait = DEFAULT_WAIT,
) -> None:
    """Remove deleted passages from the files: shards rewritten without them (ids kept), disk reclaimed, `verify` clean."""
    from massiveds.core.report import human_bytes, progress
    from massiveds.ops.compact import compact as compact_datastore

    _writer_waits(wait)
    try:
        with progress() as bar:
            task = bar.add_task("compact", total=None, rate="shards")
            reports = compact_datastore(datastore, threshold, lambda _, total: bar.update(task, advance=1, total=total))
    except MassiveDSError as exc:
        _fail(str(exc))
        return
    rows = [(r.shard, f"{r.passages_before:,}", f"{r.passages_after:,}", human_bytes(r.bytes_before), human_bytes(r.bytes_after))
            for r in reports]
    console.print(table(f"compacted {len(reports)} shards", ["shard", "passages before", "after", "bytes before", "after"], rows))
    if not reports:
        console.print(f"no shard has more than {threshold:.0%} of its passages deleted: nothing to rewrite", highlight=False)


@app.command()
def retrain(
    datastore: Annotated[Path, typer.Argument(help="datastore directory with an IVF index and stored vectors")],
    sample: Annotated[int | None, typer.Option(min=1, help="vectors to train on (default: the index plan's train_sample)")] = None,
    seed: Annotated[int, typer.Option(min=0, help="seed of the training sample")] = 0,
    wait: Wait = DEFAULT_WAIT,
) -> None:
    """Train the quantizer again on the datastore's own stored vectors and re-add every shard (no re-embedding), one shard at a time."""
    from massiveds.core.report import progress
    from massiveds.ops.retrain import retrain as retrain_datastore

    _writer_waits(wait)
    try:
        with progress() as bar:
            task = bar.add_task("retrain", total=None, rate="shards")
            done = retrain_datastore(datastore, sample, seed, lambda _, total: bar.update(task, advance=1, total=total))
    except MassiveDSError as exc:
        _fail(str(exc))
        return
    rows = [("trained index", done.trained), ("training sample", f"{done.sample:,}"), ("shards re-added", done.shards),
            ("recall@10 before", _figure(done.recall_before)), ("recall@10 after", _figure(done.recall_after))]
    console.print(table("retrain", ["", "value"], rows))


@app.command("merge-index")
def merge_index_command(
    datastore: Annotated[Path, typer.Argument(help="datastore directory with an IVF index")], wait: Wait = DEFAULT_WAIT
) -> None:
    """Merge the shards' IVF lists into one memory-mapped on-disk index (merged/), searched instead of the fan-out."""
    from massiveds.core.report import human_bytes
    from massiveds.ops.merge_index import merge_index

    _writer_waits(wait)
    try:
        record = merge_index(datastore)
    except MassiveDSError as exc:
        _fail(str(exc))
        return
    size = sum(f.bytes for f in record.files.values())
    console.print(table("merged index", ["", "value"], [
        ("shards merged", len(record.shards)), ("vectors", record.ntotal), ("lists", record.nlist),
        ("files", f"{record.index} + {record.ivfdata}"), ("size", human_bytes(size)), ("seconds", record.seconds),
    ]))
    console.print(f"searches of {datastore} now use {record.index} (memory-mapped)")


def main() -> None:
    """Entry point of the ``massiveds`` script."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
