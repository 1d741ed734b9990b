"""Commands that make a datastore or plan one: build, append, validate, plan, distill-embedder."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from massiveds.cli._common import Wait, print_json, user_errors, writer_waits
from massiveds.cli.present import figure, print_domains, print_stages, recall_row
from massiveds.core.report import console, human_bytes, table
from massiveds.core.writer_lock import DEFAULT_WAIT


class Engine(str, enum.Enum):
    """Where the build's work units run."""

    ray = "ray"
    local = "local"


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

    writer_waits(wait)
    with user_errors():
        loaded = [load_manifest(m) for m in manifests]
        from pipelines.build import build as run_build

        result = run_build(loaded, out, address=address, force=force, engine=engine.value)
    catalog = read_catalog(out)
    print_stages(f"build of {catalog.name}", result)
    b = catalog.build
    per_source = [
        (name, c["read"], c["kept"], c["read"] - c["kept"], ", ".join(f"{k.split(':')[1]} {v:,}" for k, v in c.items() if ":" in k))
        for name, c in b.sources.items()
    ]
    console.print(table("sources (extract and filters)", ["source", "read", "kept", "dropped", "reasons"], per_source))
    rows: list[tuple[str, int | str | None]] = [("records read", b.records_read)]
    rows += [(f"dropped {reason}", n) for reason, n in b.dropped.items()]
    rows += [("documents kept", b.documents_kept), ("passages", catalog.num_passages), ("shards", len(catalog.shards)),
             ("index", catalog.index.factory), *recall_row(catalog.recall)]
    if (sp := catalog.sparse) is not None:
        rows.append(("BM25 index", f"{sp.terms:,} terms, {sp.bytes / max(catalog.num_passages, 1):,.0f} bytes/passage"))
    if result.nodes:
        rows.append(("ray nodes (this run)", result.nodes))
    console.print(table("datastore", ["", "count"], rows))
    if len(catalog.domains) > 1:
        print_domains("domains", catalog)
    console.print(f"datastore ready: {out}")


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

    writer_waits(wait)
    with user_errors():
        loaded = [load_manifest(m) for m in manifests]
        from pipelines.append import append as run_append

        result = run_append(datastore, loaded, address=address, engine=engine.value, force=force)
    catalog = read_catalog(datastore)
    print_stages(f"append to {catalog.name}", result)
    done = catalog.appends[-1]
    rows: list[tuple[str, object]] = [("records read", done.records_read)]
    rows += [(f"dropped {reason}", n) for reason, n in done.dropped.items()]
    rows += [("documents added", done.documents), ("passages added", done.passages), ("shards added", len(done.shards)),
             ("passages now", catalog.num_passages), ("recall@10 before", figure(done.recall_before)),
             ("recall@10 after", figure(done.recall_after))]
    console.print(table("appended", ["", "count"], rows))
    from massiveds.ops.stats import recall_warning

    if warning := recall_warning(catalog, datastore):
        console.print(f"[bold yellow]{warning}[/]", highlight=False)
    console.print(f"datastore updated: {datastore} (drop records: {done.table})", highlight=False)


def validate(manifests: Annotated[list[Path], typer.Argument(help="manifest files")]) -> None:
    """Check manifests (fields, values, that sources resolve) without building anything."""
    from massiveds.core.manifest import load_manifest
    from massiveds.ingest.sources.files import resolve_inputs

    rows = []
    failures: list[str] = []
    for path in manifests:
        with user_errors(failures=failures):
            loaded = load_manifest(path)
            files = resolve_inputs(loaded)
            rows.append((str(path), "ok", loaded.manifest.domain, len(loaded.manifest.sources), len(files)))
    if rows:
        console.print(table("manifests", ["manifest", "status", "domain", "sources", "files"], rows))
    if failures:
        raise typer.Exit(code=2)


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
    from massiveds.core.manifest import load_manifest
    from massiveds.ops.index_report import build_table, parse_count, plan_table
    from massiveds.ops.plan import plan_datastore

    with user_errors():
        loaded = [load_manifest(m) for m in manifests or []]
        counts = None if vectors is None else [parse_count(v) for v in vectors.split(",") if v.strip()]
        planned = plan_datastore(loaded, counts, dim, memory_gb, embed_rate)
    if as_json:
        print_json(planned.to_dict())
        return
    from rich.console import Console

    out = Console()
    if planned.sources:
        rows = [(e.manifest, e.source, e.documents, e.tokens, e.passages) for e in planned.sources]
        rows.append(("total", "", *planned.source_totals()))
        out.print(table("expected size (from the manifests' estimated_*)", ["manifest", "source", "documents", "tokens", "passages"], rows))
    if planned.build is not None:
        out.print(build_table(planned.build, planned.model or "?", planned.dim, default_rate=embed_rate is None))
    pairs = zip(planned.flats, planned.plans, strict=True)
    out.print(plan_table([c for f, r in pairs for c in ((r,) if r.plan.type == "flat" else (f, r))]))
    for r in planned.plans:
        out.print(f"[bold]{r.footprint.n_vectors:,}[/]: {r.plan.reason}", highlight=False, soft_wrap=True)


def distill_embedder(
    source: Annotated[str, typer.Argument(help="a local sentence-transformers model folder (or a packaged offline model name)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="new folder for the static model: name it as embed.model")],
    dims: Annotated[int, typer.Option(help="dimensions of the static vectors (PCA of the source model's)")] = 256,
) -> None:
    """Distil a static embedder (model2vec) from a local model, offline: ~50x a transformer's CPU throughput for a datastore."""
    from massiveds.encode.distill import distill_static

    with user_errors():
        console.print(f"distilling {source} into a {dims}-dimension static model (every vocabulary token through the source model)")
        made = distill_static(source, out, dims)
    rows = [("source", made.source), ("static model", str(made.out)), ("dimensions", made.dims), ("vocabulary", f"{made.vocabulary:,}"),
            ("size", human_bytes(made.bytes)), ("seconds", round(made.seconds, 1))]
    console.print(table("distill-embedder", ["", "value"], rows))
    console.print(f"use it in a manifest: embed: {{model: {made.out}}}")
