"""Commands that look after datastores: inspect, subsample, publish, pull, verify, merge, delete, compact, retrain, merge-index."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from massiveds.cli._common import Wait, print_json, user_errors, writer_waits
from massiveds.cli.present import figure, print_domains, print_transfer, shard_row
from massiveds.core.errors import MassiveDSError
from massiveds.core.report import console, human_bytes, progress, table, transfer_progress
from massiveds.core.writer_lock import DEFAULT_WAIT

StorageOption = Annotated[
    list[str] | None, typer.Option("--option", "-O", help="fsspec storage option key=value (repeatable), e.g. endpoint_url=http://...")
]
Workers = Annotated[int, typer.Option(min=1, max=256, help="parallel transfers (threads)")]


def inspect(
    datastore: Annotated[Path, typer.Argument(help="datastore directory")],
    as_json: Annotated[bool, typer.Option("--json", help="print the statistics as JSON")] = False,
    plot: Annotated[Path | None, typer.Option(help="also write an HTML page with tokens per domain and list sizes")] = None,
) -> None:
    """Per-domain and per-shard statistics: counts, bytes on disk, index, list balance, recall, drops."""
    from massiveds.ops.stats import datastore_stats, list_sizes, recall_warning, write_plot

    with user_errors(reading=datastore):
        stats = datastore_stats(datastore)
        if plot is not None:
            write_plot(stats, list_sizes(datastore), plot)
    if as_json:
        print_json(stats.to_dict())
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
                    [shard_row(s) for s in stats.shards]))
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
                          sum(a.dropped.values()), figure(a.recall_before), figure(a.recall_after)) for a in cat.appends]))
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


def subsample(
    datastore: Annotated[Path, typer.Argument(help="datastore directory to sample from")],
    fraction: Annotated[float, typer.Option(help="fraction of documents to keep, in (0, 1]")],
    out: Annotated[Path, typer.Option("--out", "-o", help="new datastore directory")],
    seed: Annotated[int, typer.Option(help="sampling seed: same seed, nested samples")] = 0,
) -> None:
    """Write a physical subsample (nested by seed) without re-embedding or retraining."""
    from massiveds.core.catalog import open_catalog
    from massiveds.ops.subsample import subsample as run_subsample

    with user_errors(reading=datastore):
        from massiveds.store.sampling import check_fraction

        check_fraction(fraction)
        parent = open_catalog(datastore)
        with progress() as bar:
            task = bar.add_task("subsample", total=len(parent.shards), rate="")
            catalog = run_subsample(datastore, out, fraction, seed, on_shard=lambda _: bar.update(task, advance=1))
    rows = [(d, parent.domains[d].documents, v.documents, parent.domains[d].passages, v.passages) for d, v in catalog.domains.items()]
    console.print(table(f"subsample {fraction} (seed {seed})", ["domain", "documents before", "after", "passages before", "after"], rows))
    console.print(f"datastore ready: {out}")


def publish(
    datastore: Annotated[Path, typer.Argument(help="datastore directory")],
    dest: Annotated[str, typer.Argument(help="destination: a folder or any fsspec URL (s3://bucket/prefix, hf://datasets/owner/name/...)")],
    include_build: Annotated[bool, typer.Option("--include-build", help="also publish build/ (stage outputs, drop records)")] = False,
    workers: Workers = 8,
    part_size: Annotated[str | None, typer.Option(help="split larger files into parts (e.g. 20G); default 20 GB for hf://")] = None,
    option: StorageOption = None,
) -> None:
    """Upload a datastore (files in parallel, resumable, datastore.json last); per-file sha256 in checksums.json."""
    from massiveds.ops.publish import parse_size, storage_options_from
    from massiveds.ops.publish import publish as run_publish

    with user_errors(reading=datastore):
        size = parse_size(part_size) if part_size else None
        opts = storage_options_from(option or [])
        with transfer_progress() as bar:
            task = bar.add_task("publish", total=None, files="")
            report = run_publish(datastore, dest, include_build=include_build, workers=workers, part_size=size, storage_options=opts,
                                 on_bytes=lambda n: bar.advance(task, n))
    print_transfer("publish", report, dest)


def pull(
    src: Annotated[str, typer.Argument(help="a published datastore: folder or fsspec URL")],
    directory: Annotated[Path, typer.Argument(help="local directory to create or complete")],
    workers: Workers = 8,
    option: StorageOption = None,
    wait: Wait = DEFAULT_WAIT,
) -> None:
    """Download a published datastore (resumable, every file verified against its sha256, datastore.json last)."""
    from massiveds.ops.publish import pull as run_pull
    from massiveds.ops.publish import storage_options_from

    writer_waits(wait)
    with user_errors():
        opts = storage_options_from(option or [])
        with transfer_progress() as bar:
            task = bar.add_task("pull", total=None, files="")
            report = run_pull(src, directory, workers=workers, storage_options=opts, on_bytes=lambda n: bar.advance(task, n))
    print_transfer("pull", report, str(directory))


def verify(
    datastore: Annotated[Path, typer.Argument(help="datastore directory")],
    sizes_only: Annotated[bool, typer.Option("--sizes-only", help="check sizes and presence, skip sha256 (fast)")] = False,
) -> None:
    """Check every file of a datastore against its catalog; one line per problem, non-zero exit if any."""
    from massiveds.ops.verify import verify as run_verify

    with user_errors():
        problems = run_verify(datastore, hashes=not sizes_only)
    for line in problems:
        sys.stdout.write(f"{datastore}/{line}\n" if not line.startswith(str(datastore)) else line + "\n")
    if problems:
        console.print(f"[bold red]{len(problems)} problem(s)[/] in {datastore}", highlight=False)
        raise typer.Exit(code=1)
    console.print(f"{datastore}: ok ({'sizes' if sizes_only else 'sizes and sha256'} of every catalog file)", highlight=False)


def merge(
    datastores: Annotated[list[Path], typer.Argument(help="datastores to merge (e.g. one per domain)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="new datastore directory")],
    copy: Annotated[bool, typer.Option("--copy", help="copy the shards (ids renumbered): a self-contained datastore")] = False,
) -> None:
    """Merge datastores built with the same embedder into one catalog with unique passage ids.

    Shards are referenced in place (by a path relative to --out: move the datastores together), or copied with --copy.
    """
    from massiveds.core.catalog import open_catalog
    from massiveds.ops.merge import merge as run_merge
    from massiveds.ops.merge import sparse_note

    with user_errors():
        catalogs = [(d, open_catalog(d)) for d in datastores]
        note = sparse_note(catalogs, copy)
        total = sum(len(c.shards) for _, c in catalogs)
        with progress() as bar:
            task = bar.add_task("merge", total=total, rate="")
            catalog = run_merge(list(datastores), out, copy=copy, on_shard=lambda _: bar.update(task, advance=1))
    how = "copied" if copy else "referenced in place"
    print_domains(f"merged {len(datastores)} datastores (shards {how})", catalog)
    if note:
        console.print(f"[bold yellow]note:[/] {note}", soft_wrap=True, highlight=False)
    console.print(f"datastore ready: {out}")


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
    writer_waits(wait)
    with user_errors():
        if len(given) != 1:
            raise MassiveDSError("name exactly one of --doc-ids FILE, --source NAME, --match-eval FILE")
        record, found = delete_documents(datastore, Selection(*given[0], tuple(f for f in fields.split(",") if f)), reason)
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


def compact(
    datastore: Annotated[Path, typer.Argument(help="datastore directory")],
    threshold: Annotated[float, typer.Option(help="rewrite shards with more than this share deleted (0: every one with any)")] = 0.0,
    wait: Wait = DEFAULT_WAIT,
) -> None:
    """Remove deleted passages from the files: shards rewritten without them (ids kept), disk reclaimed, `verify` clean."""
    from massiveds.ops.compact import compact as compact_datastore

    writer_waits(wait)
    with user_errors(), progress() as bar:
        task = bar.add_task("compact", total=None, rate="shards")
        reports = compact_datastore(datastore, threshold, lambda _, total: bar.update(task, advance=1, total=total))
    rows = [(r.shard, f"{r.passages_before:,}", f"{r.passages_after:,}", human_bytes(r.bytes_before), human_bytes(r.bytes_after))
            for r in reports]
    console.print(table(f"compacted {len(reports)} shards", ["shard", "passages before", "after", "bytes before", "after"], rows))
    if not reports:
        console.print(f"no shard has more than {threshold:.0%} of its passages deleted: nothing to rewrite", highlight=False)


def retrain(
    datastore: Annotated[Path, typer.Argument(help="datastore directory with an IVF index and stored vectors")],
    sample: Annotated[int | None, typer.Option(min=1, help="vectors to train on (default: the index plan's train_sample)")] = None,
    seed: Annotated[int, typer.Option(min=0, help="seed of the training sample")] = 0,
    wait: Wait = DEFAULT_WAIT,
) -> None:
    """Train the quantizer again on the datastore's own stored vectors and re-add every shard (no re-embedding), one shard at a time."""
    from massiveds.ops.retrain import retrain as retrain_datastore

    writer_waits(wait)
    with user_errors(), progress() as bar:
        task = bar.add_task("retrain", total=None, rate="shards")
        done = retrain_datastore(datastore, sample, seed, lambda _, total: bar.update(task, advance=1, total=total))
    rows = [("trained index", done.trained), ("training sample", f"{done.sample:,}"), ("shards re-added", done.shards),
            ("recall@10 before", figure(done.recall_before)), ("recall@10 after", figure(done.recall_after))]
    console.print(table("retrain", ["", "value"], rows))


def merge_index(
    datastore: Annotated[Path, typer.Argument(help="datastore directory with an IVF index")], wait: Wait = DEFAULT_WAIT
) -> None:
    """Merge the shards' IVF lists into one memory-mapped on-disk index (merged/), searched instead of the fan-out."""
    from massiveds.ops.merge_index import merge_index as run_merge_index

    writer_waits(wait)
    with user_errors():
        record = run_merge_index(datastore)
    size = sum(f.bytes for f in record.files.values())
    console.print(table("merged index", ["", "value"], [
        ("shards merged", len(record.shards)), ("vectors", record.ntotal), ("lists", record.nlist),
        ("files", f"{record.index} + {record.ivfdata}"), ("size", human_bytes(size)), ("seconds", record.seconds),
    ]))
    console.print(f"searches of {datastore} now use {record.index} (memory-mapped)")
