"""Appending ~10 % new data to a built datastore vs rebuilding all of it: wall time, stage seconds, bytes written.

    python bench/append.py [--sources qa_forum,web_html,wiki] [--new-share 0.0909] [--seed 0] [--model all-MiniLM-L6-v2]
                           [--index ivfpq] [--engine ray] [--work DIR]

Splits the documents of the named files of ``../shared/data/jsonl`` (seeded, by document) into a base
(~91 %) and new ones (~9 %, ~10 % of the base), written as the JSONL inputs of two manifests with the
example's filters and chunking, BM25 on and an IVF-PQ index (``auto`` would pick flat below 200,000
passages; IVF-PQ needs 39·256 training vectors: pass ``--index auto`` for smaller sources). The
embedder is ``--model``; by default a static model distilled from the packaged all-MiniLM-L6-v2 (cheap,
so the fixed costs show). Then, one CLI process each: (1) ``build`` the base; (2) ``append`` the new
manifest to a copy of it (its ``build/`` folder left out): wall seconds, the stage seconds it prints, the
bytes it wrote into the datastore against the existing shards' bytes, and the sha256 of every existing
shard file before and after; (3) ``build`` base and new together from scratch. The append's
``reference`` stage reads every document of the datastore (for dedup against it): its seconds are shown
apart, as the part that does not scale with the new data. Not run by CI except at a tiny size
(tests/test_bench_smoke.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
import zstandard
from _common import EXAMPLE, REPO, load_average, machine, shared_rows
from rich.console import Console
from text_stages import SOURCES

from massiveds.core.layout import sha256_file
from massiveds.core.report import table
from massiveds.core.writer_lock import LOCK_FILE
from pipelines.append import APPEND_STAGES

ENV = os.environ | {"HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "250"}


def cli(*args: str) -> tuple[float, str]:
    """Run ``massiveds ARGS`` in a fresh process; (wall seconds, its stderr, where the summaries go). Exits with its error."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "massiveds.cli", *args], env=ENV, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"massiveds {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return time.perf_counter() - start, proc.stderr


def write_inputs(work: Path, names: list[str], share: float, seed: int, settings: dict[str, Any]) -> tuple[Path, Path, dict[str, int]]:
    """The manifests of the base and the new documents (each document drawn new with probability ``share``); document counts."""
    rng = np.random.default_rng(seed)
    counts = {"base": 0, "new": 0}
    for part in counts:
        (work / "inputs" / part).mkdir(parents=True, exist_ok=True)
    sources = []
    for name in names:
        rows = shared_rows(name)
        new = rng.random(len(rows)) < share
        for part, keep in (("base", ~new), ("new", new)):
            body = "".join(json.dumps(r) + "\n" for r, k in zip(rows, keep, strict=True) if k)
            (work / "inputs" / part / f"{name}.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(body.encode()))
            counts[part] += int(keep.sum())
        sources.append({"name": name, "uri": f"{name}.jsonl.zst", "format": "jsonl", "id_field": "id", "title_field": "title",
                        **SOURCES[name]})
    paths = []
    for part in counts:
        manifest = work / "inputs" / part / f"{part}.yaml"
        manifest.write_text(yaml.safe_dump({"name": f"append-{part}", "domain": "mixed", "sources": sources, **settings}, sort_keys=False))
        paths.append(manifest)
    return paths[0], paths[1], counts


def files(root: Path) -> dict[str, tuple[int, str]]:
    """(size, sha256) of every file of a datastore outside its ``build/`` folder, by path relative to it (not the writer lock: every
    command that changes the datastore writes its holder there)."""
    return {str(p.relative_to(root)): (p.stat().st_size, sha256_file(p)) for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] != "build" and p.name != LOCK_FILE}


def stage_seconds(output: str, names: set[str]) -> dict[str, float]:
    """The stage seconds of the append's summary table (rows ``│ stage │ status │ seconds │ result │``)."""
    out = {}
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)]
        if len(cells) > 4 and cells[1] in names and re.fullmatch(r"[\d,.]+", cells[3]):
            out[cells[1]] = float(cells[3].replace(",", ""))
    return out


def passages(catalog: dict[str, Any]) -> int:
    return sum(int(s["count"]) for s in catalog["shards"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", default="qa_forum,web_html,wiki")
    parser.add_argument("--new-share", type=float, default=1 / 11, help="share of the documents held out as the new data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="embedder (default: a static model distilled from all-MiniLM-L6-v2)")
    parser.add_argument("--index", default="ivfpq", choices=["ivfpq", "auto"])
    parser.add_argument("--engine", default="ray", choices=["ray", "local"])
    parser.add_argument("--work", type=Path, help="keep inputs and datastores here (replacing a previous run's); default: a temp folder")
    args = parser.parse_args()
    console = Console(width=200)
    if args.model is None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        from massiveds.encode.distill import cached_static

        args.model = str(cached_static("all-MiniLM-L6-v2", REPO / ".cache"))
    work = args.work or Path(tempfile.mkdtemp(prefix="massiveds-append-"))
    for old_run in ("inputs", "ds-base", "ds-appended", "ds-rebuilt"):
        shutil.rmtree(work / old_run, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    example = yaml.safe_load(EXAMPLE.read_text())
    settings = {"filters": example["filters"], "chunk": example["chunk"], "embed": {"model": args.model}, "sparse": {"enabled": True},
                "index": {"type": args.index}, "shards": {"target_passages": 4096}}
    engine = ("--engine", args.engine)
    try:
        base, new, docs = write_inputs(work, args.sources.split(","), args.new_share, args.seed, settings)
        console.print(f"{docs['base']:,} base and {docs['new']:,} new documents of {args.sources}, model {args.model}, "
                      f"engine {args.engine} ({machine()}; load {load_average()})")
        built_s, _ = cli("build", str(base), "--out", str(work / "ds-base"), *engine)
        old = json.loads((work / "ds-base" / "datastore.json").read_text())
        console.print(f"base: {passages(old):,} passages in {len(old['shards'])} shards, built in {built_s:.1f} s "
                      f"(index {old['index']['factory']}; load {load_average()})")
        ds = Path(shutil.copytree(work / "ds-base", work / "ds-appended", ignore=shutil.ignore_patterns("build")))
        before = files(ds)
        append_s, output = cli("append", str(ds), str(new), *engine)
        after = files(ds)
        cat = json.loads((ds / "datastore.json").read_text())
        done = cat["appends"][-1]
        load_append = load_average()
        rebuild_s, _ = cli("build", str(base), str(new), "--out", str(work / "ds-rebuilt"), *engine)
        rebuilt = json.loads((work / "ds-rebuilt" / "datastore.json").read_text())
        load_rebuild = load_average()

        shard_files = [p for p in before if p.startswith("shards/")]
        rewritten = [p for p in shard_files if after.get(p) != before[p]]
        changed = [p for p in after if p not in before or after[p] != before[p]]
        written = {"new shard folders": 0, "appends/*.parquet": 0, "catalog (datastore.json)": 0, "other": 0}
        for p in changed:
            key = ("new shard folders" if p.startswith("shards/") else "appends/*.parquet" if p.startswith("appends/")
                   else "catalog (datastore.json)" if p == "datastore.json" else "other")
            written[key] += after[p][0]
        existing_bytes = sum(before[p][0] for p in shard_files)
        stages = stage_seconds(output, {s.name for s in APPEND_STAGES})
        rebuild_stages = rebuilt["build"]["stage_seconds"]
        share = done["passages"] / passages(cat)
        rebuild_sum = sum(rebuild_stages.values())
        faiss_bytes = sum(after[p][0] for p in changed if p.endswith("index.faiss"))
        untrained = (sum(v for k, v in stages.items() if k not in ("train", "commit")), rebuild_sum - rebuild_stages.get("train", 0.0))
        rows: list[tuple[str, str]] = [
            ("build base (s)", f"{built_s:.1f}"),
            ("append new to a copy (s)", f"{append_s:.1f}"),
            ("rebuild base + new (s)", f"{rebuild_s:.1f}"),
            ("append / rebuild (wall)", f"{append_s / rebuild_s:.3f}"),
            ("new passages / passages after", f"{done['passages']:,} / {passages(cat):,} = {share:.3f}"),
            ("rebuilt datastore passages", f"{passages(rebuilt):,}"),
            ("stage seconds summed (commit, catalog not in): append / rebuild", f"{done['seconds']:.1f} / {rebuild_sum:.1f}"),
            ("the same without train: append / rebuild", f"{untrained[0]:.1f} / {untrained[1]:.1f} = "
                                                          f"{untrained[0] / untrained[1]:.3f}"),
            ("append: reference stage (reads the whole datastore) (s)", f"{stages.get('reference', float('nan')):.1f}"),
            ("existing shard files", f"{len(shard_files)} files, {existing_bytes:,} bytes"),
            ("existing shard files rewritten", f"{len(rewritten)}"),
            *((f"bytes written by the append: {k}", f"{v:,}") for k, v in written.items()),
            ("  of which new shards' index.faiss (quantizer copy + codes)", f"{faiss_bytes:,}"),
            ("trained quantizer (trained.faiss) bytes", f"{after['trained.faiss'][0]:,}" if "trained.faiss" in after else "?"),
            ("bytes written / existing shard bytes", f"{sum(written.values()) / existing_bytes:.3f}"),
            ("existing files changed (not shards)", ", ".join(p for p in changed if p in before) or "none"),
            ("recall@10 before / after the append", f"{done['recall_before']} / {done['recall_after']}"),
            ("recall@10 of the rebuilt datastore", f"{(rebuilt.get('recall') or {}).get('recall_at_10')}"),
            ("dropped by the append", ", ".join(f"{k} {v}" for k, v in done["dropped"].items()) or "none"),
            ("load after append; after rebuild", f"{load_append}; {load_rebuild}"),
        ]
        console.print(table(f"append {args.new_share:.1%} of the documents vs rebuild ({args.engine})", ["", "value"], rows))
        names = list(dict.fromkeys([*stages, *rebuild_stages]))
        console.print(table("stage seconds (append: as its summary prints them, to 0.1 s; rebuild: its catalog)",
                            ["stage", "append", "rebuild", "append / rebuild"],
                            [(n, f"{stages[n]:.1f}" if n in stages else "", f"{rebuild_stages[n]:.2f}" if n in rebuild_stages else "",
                              f"{stages[n] / rebuild_stages[n]:.2f}" if n in stages and rebuild_stages.get(n) else "") for n in names]))
        console.print(f"command: python bench/append.py --sources {args.sources} --new-share {args.new_share:g} --seed {args.seed} "
                      f"--index {args.index} --engine {args.engine}; load at the end {load_average()}")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
