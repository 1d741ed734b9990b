"""Commands that read a datastore for queries: search, serve, leakage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from massiveds.cli._common import RERANK_HELP, print_json, user_errors
from massiveds.cli.present import print_skipped
from massiveds.core.errors import MassiveDSError
from massiveds.core.report import console, table


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
    rerank: Annotated[str | None, typer.Option(help=RERANK_HELP)] = None,
    rerank_depth: Annotated[int, typer.Option(min=1, max=1000, help="with a cross-encoder: hits per query it scores")] = 100,
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

    with user_errors():
        golds = [_read_gold(g) for g in decontaminate or []]
        names = [d.strip() for ds_ in domains or [] for d in ds_.split(",") if d.strip()] or None
        options = SearchOptions.create(k=k, nprobe=nprobe, domains=names, dedup=dedup, dedup_threshold=dedup_threshold,
                                       decontaminate=golds or None, fraction=fraction, seed=seed, mmr=mmr,
                                       continuation=continuation, rerank=rerank, rerank_depth=rerank_depth, strict=strict, mode=mode,
                                       alpha=alpha, fusion=fusion)
        ds = massiveds.open(datastore)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ShardSkippedWarning)  # reported below, once, on stderr
            result = ds.search_batch(list(query), options)
    print_skipped(result.skipped_shards)
    results = result.hits
    if as_json:
        print_json(results[0] if len(query) == 1 else [{"query": q, "hits": h} for q, h in zip(query, results, strict=True)],
                   ensure_ascii=False)
        return
    from rich.console import Console

    out = Console()
    for q, hits in zip(query, results, strict=True):
        out.rule(f"[bold]{q}")
        for rank, hit in enumerate(hits, 1):
            title = f" · {hit['title']}" if hit.get("title") else ""
            parts = "" if "dense_score" not in hit else f" [dim](dense {hit['dense_score']:.4f}, bm25 {hit['sparse_score']:.4f})[/]"
            if "rerank_score" in hit:
                parts += f" [dim](reranked {hit['rerank_score']:.4f})[/]"
            head = f"[bold]{rank:>2}.[/] [cyan]{hit['score']:.4f}[/]{parts} [magenta]{hit['domain']}[/] {hit['doc_id']}{title}"
            out.print(head, highlight=False)
            text = " ".join(hit["text"].split())
            out.print(f"    {text[:400]}{'…' if len(text) > 400 else ''}", highlight=False, soft_wrap=True)
            if after := hit.get("continuation"):
                cont = " ".join(after["text"].split())
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
    with user_errors(), warnings.catch_warnings():
        warnings.simplefilter("ignore", ShardSkippedWarning)  # reported below, once, on stderr
        # with several workers each opens and warms up its own; here only the check
        ds = open_for_serving(datastore, strict=strict) if workers == 1 else check_for_serving(datastore, strict=strict)
        app_ = create_app(ds, config) if workers == 1 else None
        sock = bind(host, port)
    _, skipped = ds.usable_shards()
    print_skipped(skipped)
    where = f"http://{host}:{sock.getsockname()[1]}"
    console.print(f"serving {ds.name} ({ds.num_passages:,} passages, {len(ds.shards) - len(skipped)} shards, {workers} worker"
                  f"{'s' if workers > 1 else ''}) at {where}  POST /search · GET /health · GET /stats · page {where}/ · API {where}/docs",
                  soft_wrap=True, highlight=False)
    if app_ is not None:
        serve_app(app_, sock, access_log)
    else:
        serve_workers(str(datastore), strict, config, sock, workers, access_log)


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
    with user_errors():
        if not eval_file.is_file():
            raise MassiveDSError(f"{eval_file}: evaluation file not found")
        spec = {"paths": [str(eval_file)], "format": fmt, "fields": [f for f in fields.split(",") if f], "id_field": id_field}
        items = [(i, t) for i, t in read_eval_items(spec) if t.strip()]
        if not items:
            raise MassiveDSError(f"{eval_file}: no item has text in fields {fields!r}; name the right --fields")
        hits = massiveds.open(datastore).search([t for _, t in items], k=k)
    report = leakage_report(items, hits)  # type: ignore[arg-type]
    if as_json:
        print_json(report, ensure_ascii=False)
        return
    console.print(table(f"leakage of {len(items)} items (top {k} neighbours)", ["overlap bucket", "items"], report["buckets"].items()))
    rows = [(r["item_id"], r["words"], r["longest_run"], f"{r['overlap']:.0%}", r["doc_id"]) for r in report["per_item"]]
    console.print(table("per item", ["item", "words", "longest run", "overlap", "neighbour doc"], rows))
