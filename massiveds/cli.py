"""The ``massiveds`` command line: build, search and validate datastores; plan, evaluate and merge indexes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from massiveds.errors import MassiveDSError
from massiveds.report import console, table

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False, help="Build, search and manage retrieval datastores."
)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True, highlight=False)
    raise typer.Exit(code=2)


@app.command()
def build(
    manifest: Annotated[Path, typer.Argument(help="YAML manifest of the build")],
    out: Annotated[Path, typer.Option("--out", "-o", help="datastore directory to create or resume")],
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")] = None,
    force: Annotated[bool, typer.Option("--force", help="delete a previous build in --out and start over")] = False,
) -> None:
    """Build a datastore from a manifest; re-running resumes and skips finished stages."""
    from massiveds.manifest import load_manifest

    try:
        loaded = load_manifest(manifest)
        from pipelines.build import build as run_build

        result = run_build(loaded, out, address=address, force=force)
    except MassiveDSError as exc:
        _fail(str(exc))
        return
    catalog = json.loads((out / "datastore.json").read_text())
    console.print(table(f"build of {loaded.manifest.name}", ["stage", "status", "seconds", "result"],
                        [(r.name, r.status, r.seconds, r.detail) for r in result.reports]))
    b = catalog["build"]
    rows: list[tuple[str, int | str]] = [("records read", b["records_read"])]
    rows += [(f"dropped {reason}", n) for reason, n in b["dropped"].items()]
    rows += [("documents kept", b["documents_kept"]),
             ("passages", sum(s["count"] for s in catalog["shards"])),
             ("shards", len(catalog["shards"])),
             ("index", catalog["index"]["factory"])]
    console.print(table("datastore", ["", "count"], rows))
    console.print(f"datastore ready: {out}")


@app.command()
def search(
    datastore: Annotated[Path, typer.Argument(help="datastore directory")],
    query: Annotated[list[str], typer.Argument(help="one or more query strings")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=10_000, help="hits per query")] = 10,
    nprobe: Annotated[int | None, typer.Option(min=1, help="IVF lists to visit (default: the datastore's)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print hits as JSON")] = False,
) -> None:
    """Search a datastore with its own embedder and print ranked passages."""
    import massiveds

    try:
        ds = massiveds.open(datastore)
        results = ds.search(list(query), k=k, nprobe=nprobe)
    except MassiveDSError as exc:
        _fail(str(exc))
        return
    if as_json:
        payload = results[0] if len(query) == 1 else [{"query": q, "hits": h} for q, h in zip(query, results, strict=True)]
        sys.stdout.write(json.dumps(payload, ensure_ascii=False, indent=2) + "\n")
        return
    from rich.console import Console

    out = Console()
    for q, hits in zip(query, results, strict=True):
        out.rule(f"[bold]{q}")
        assert isinstance(hits, list)
        for rank, hit in enumerate(hits, 1):
            title = f" · {hit['title']}" if hit.get("title") else ""
            head = f"[bold]{rank:>2}.[/] [cyan]{hit['score']:.4f}[/] [magenta]{hit['domain']}[/] {hit['doc_id']}{title}"
            out.print(head, highlight=False)
            text = " ".join(hit["text"].split())
            out.print(f"    {text[:400]}{'…' if len(text) > 400 else ''}", highlight=False, soft_wrap=True)


@app.command()
def validate(manifests: Annotated[list[Path], typer.Argument(help="manifest files")]) -> None:
    """Check manifests (fields, values, that sources resolve) without building anything."""
    from massiveds.manifest import load_manifest
    from massiveds.sources.files import resolve_inputs

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
def plan(
    manifest: Annotated[Path | None, typer.Argument(help="manifest whose index section (and embedder) to plan with")] = None,
    vectors: Annotated[str | None, typer.Option("--vectors", "-n", help="vectors: 1000000, 2.5M, 1e9, 1B; a comma list compares")] = None,
    dim: Annotated[int | None, typer.Option(min=1, help="embedding dimension (default: the manifest's model, else 384)")] = None,
    memory_gb: Annotated[
        float | None, typer.Option("--memory-gb", min=0.001, help="RAM budget to serve the index (default: index.memory_budget_gb)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the plans as JSON")] = False,
) -> None:
    """Choose the index for a number of vectors and show why: bytes per vector, RAM to serve, disk, training sample."""
    from massiveds.index import plan_report
    from massiveds.index_report import KNOWN_DIMS, parse_count, plan_table
    from massiveds.manifest import Index, load_manifest

    try:
        spec, model = Index(), None
        if manifest is not None:
            loaded = load_manifest(manifest)
            spec, model = loaded.manifest.index, loaded.manifest.embed.model
        if vectors is None:
            raise MassiveDSError("give the number of vectors with --vectors N (e.g. --vectors 100M)")
        if dim is None:
            if model is not None and model not in KNOWN_DIMS:
                raise MassiveDSError(f"the dimension of {model!r} is not known here; give it with --dim")
            dim = KNOWN_DIMS.get(model or "", 384)
        reports = [plan_report(parse_count(v), dim, spec, memory_gb) for v in vectors.split(",") if v.strip()]
    except MassiveDSError as exc:
        _fail(str(exc))
        return
    if as_json:
        sys.stdout.write(json.dumps([r.to_dict() for r in reports], indent=2) + "\n")
        return
    from rich.console import Console

    out = Console()
    out.print(plan_table(reports))
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


@app.command("eval-recall")
def eval_recall(
    datastore: Annotated[Path, typer.Argument(help="datastore directory")],
    queries: Annotated[int, typer.Option("--queries", min=1, help="stored passage vectors drawn as queries (own passage held out)")] = 1000,
    nprobe: Annotated[str | None, typer.Option(help="comma list of nprobe values (default: 1,4,16,64 and the datastore's)")] = None,
    k: Annotated[str, typer.Option("--k", help="comma list of k for recall@k")] = "1,10,100",
    rerank: Annotated[bool, typer.Option("--rerank/--no-rerank", help="also measure with exact rerank")] = True,
    rerank_depth: Annotated[int | None, typer.Option(min=1, help="candidates rescored by rerank (default max(4k, 100))")] = None,
    query_file: Annotated[Path | None, typer.Option(help="text queries, one per line, embedded with the datastore's embedder")] = None,
    seed: Annotated[int, typer.Option(help="seed of the query sample")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Recall@k and queries/s of the index for each nprobe, with and without exact rerank, against brute force."""
    import massiveds
    from massiveds.index_report import recall_table
    from massiveds.recall import evaluate

    try:
        texts = None
        if query_file is not None:
            if not query_file.is_file():
                raise MassiveDSError(f"{query_file}: no such query file")
            texts = [line.strip() for line in query_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        ds = massiveds.open(datastore)
        report = evaluate(ds, queries, _int_list(nprobe, "--nprobe"), _int_list(k, "--k"), rerank, rerank_depth, seed, texts)
    except MassiveDSError as exc:
        _fail(str(exc))
        return
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
        return
    from rich.console import Console

    Console().print(recall_table(report))
    console.print(f"exact top-{report.ks[-1]} by brute force over the stored vectors: {report.exact_seconds:.1f} s", highlight=False)


@app.command("merge-index")
def merge_index_command(datastore: Annotated[Path, typer.Argument(help="datastore directory with an IVF index")]) -> None:
    """Merge the shards' IVF lists into one memory-mapped on-disk index (merged/), searched instead of the fan-out."""
    from massiveds.index_report import human_bytes
    from massiveds.merge_index import merge_index

    try:
        record = merge_index(datastore)
    except MassiveDSError as exc:
        _fail(str(exc))
        return
    size = sum(f["bytes"] for f in record["files"].values())
    console.print(table("merged index", ["", "value"], [
        ("shards merged", len(record["shards"])), ("vectors", record["ntotal"]), ("lists", record["nlist"]),
        ("files", f"{record['index']} + {record['ivfdata']}"), ("size", human_bytes(size)), ("seconds", record["seconds"]),
    ]))
    console.print(f"searches of {datastore} now use {record['index']} (memory-mapped)")


def main() -> None:
    """Entry point of the ``massiveds`` script."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
