"""A scale run: the scale corpus built end to end on Ray with a static embedder, then every datastore operation, at each size.

    python bench/scale.py [--passages 250000,1000000] [--work /tmp/massiveds-scale] [--sparse] [--serve-seconds 20]
                          [--domains qa_forum,wiki]

For each size N: ``bench/scale_corpus.py`` writes ~N 256-word passages of real text (planted exact and
near duplicates, garbage records); ``massiveds build`` runs every stage on a local Ray with the static
model distilled from the packaged all-MiniLM-L6-v2 (``massiveds.encode.distill.cached_static``) and the
default index plan, while a sampler reads ``/proc`` every ``SAMPLE_S`` seconds for every process under
the build (the driver, Ray's workers and actors by their ``ray::`` titles, Ray's own services): RSS per
stage (a stage's interval ends at its ``_SUCCESS.json``) and each process's own peak (VmHWM). Then:
planted duplicates found, disk bytes per passage, the recall the build measured (IVF-PQ vs brute force
over the real vectors, without and with exact rerank), single-query latency and batched QPS
in-process, ``serve`` under 16 clients, and the seconds of ``subsample --fraction 0.1``, ``verify``,
``publish`` to a local folder, ``pull`` back and ``merge-index``. Between sizes: time per passage and
peak RSS of each stage, larger over smaller (1.0 = linear time, flat memory).

Everything measured goes to ``<work>/scale-<tag>.json``, its summary to ``bench/results/scale-<N>.json`` (``--results``;
``--tables`` renders those as the Markdown the docs quote) and the tables to stdout; ``--reuse-build`` measures a
kept datastore again without building it, ``--append-only`` only its append. Not run by CI except at a tiny size
(tests/test_bench_smoke.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import REPO, load_average, machine
from rich.console import Console
from scale_corpus import planted_found
from serve_load import QUERIES, load, server_command, start_server

from massiveds.core.report import table
from massiveds.encode.distill import cached_static
from massiveds.store.datastore import Datastore

SAMPLE_S = 0.5
#: Passages of the append corpus: ~10,000 documents (the corpus draws ~3.3 passages per document).
APPEND_PASSAGES = 33_000
#: Where the machine-readable results go (committed).
RESULTS = REPO / "bench" / "results"
ENV = os.environ | {"HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "200"}
#: What each stage's rate counts (a stage's MB/s is of the corpus's uncompressed text, for the text stages).
STAGE_UNITS = {"extract": "records", "dedup": "documents", "near_dedup": "documents", "decontaminate": "documents",
               "chunk": "documents", "shard": "passages", "sparse": "passages", "embed": "passages", "train": "passages",
               "index": "passages",
               "catalog": "passages"}
TEXT_STAGES = ("extract", "dedup", "near_dedup", "decontaminate", "chunk")
out = Console(width=200)


def process_table() -> dict[int, int]:
    """Parent pid of every process on the machine."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return parents


def descendants(root: int, parents: dict[int, int]) -> list[int]:
    """``root`` and every process below it."""
    children = defaultdict(list)
    for pid, ppid in parents.items():
        children[ppid].append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children[pid])
    return found


def read_process(pid: int) -> tuple[str, float, float] | None:
    """(title, RSS MiB, peak RSS MiB) of a live process, or None once it has gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            title = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return title, int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        return None


def role(pid: int, root: int, title: str) -> str:
    """driver, a Ray worker or actor (by its ``ray::`` title), or one of Ray's own services."""
    if pid == root:
        return "driver"
    if title.startswith("ray::"):
        return "ray::" + title[5:].split()[0]
    name = Path(title.split()[0]).name if title else "?"
    return f"ray service {name}" if "ray" in title else f"other {name}"


class Sampler(threading.Thread):
    """Samples the RSS of every process under ``root`` until stopped: (time, pid, role, RSS MiB), and each pid's peak."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root, self.stopped = root, threading.Event()
        self.samples: list[tuple[float, int, str, float]] = []
        self.peaks: dict[int, tuple[str, float]] = {}

    def run(self) -> None:
        while not self.stopped.is_set():
            now = time.time()
            for pid in descendants(self.root, process_table()):
                got = read_process(pid)
                if got is None:
                    continue
                title, rss, hwm = got
                who = role(pid, self.root, title)
                self.samples.append((now, pid, who, rss))
                self.peaks[pid] = (who, max(hwm, self.peaks.get(pid, (who, 0.0))[1]))
            self.stopped.wait(SAMPLE_S)


def stage_intervals(out_dir: Path, stage_seconds: dict[str, float]) -> dict[str, tuple[float, float]]:
    """(start, end) wall-clock time of each stage: it ended when it wrote its ``_SUCCESS.json``."""
    intervals = {}
    for stage, seconds in stage_seconds.items():
        marker = out_dir / "build" / stage / "_SUCCESS.json"
        if marker.is_file():
            end = marker.stat().st_mtime
            intervals[stage] = (end - seconds, end)
    return intervals


def stage_memory(sampler: Sampler, intervals: dict[str, tuple[float, float]]) -> dict[str, dict[str, Any]]:
    """Per stage: the largest RSS sampled of the driver, of any one Ray worker/actor (and how many ran), of Ray's services."""
    per: dict[str, dict[str, Any]] = {}
    for stage, (start, end) in intervals.items():
        rows = [(pid, who, rss) for t, pid, who, rss in sampler.samples if start <= t <= end]
        workers = [(pid, who, rss) for pid, who, rss in rows if who.startswith("ray::")]
        top = max(workers, key=lambda r: r[2]) if workers else None
        per[stage] = {
            "driver_mib": max((rss for _, who, rss in rows if who == "driver"), default=0.0),
            "worker_max_mib": top[2] if top else 0.0,
            "worker_max_title": top[1] if top else "",
            "workers": len({pid for pid, _, _ in workers}),
            "services_max_mib": max((rss for _, who, rss in rows if who.startswith("ray service")), default=0.0),
            "any_max_mib": max((rss for _, _, rss in rows), default=0.0),
        }
    return per


def commit() -> str:
    """The commit of the code this run imports (with ``+changes`` when its working tree differs, the results it writes aside)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results")
    return git("rev-parse", "--short", "HEAD") + ("+changes" if changed else "")


def timed(*args: str) -> float:
    """Seconds of one CLI command (it must succeed)."""
    clock = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "massiveds.cli", *args], env=ENV, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"massiveds {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - clock


def cli_measured(args: list[str], log: Path) -> tuple[float, Sampler]:
    """``massiveds ARGS`` with the sampler over its process tree; (wall seconds, sampler). Exits with the log's name if it fails."""
    clock = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "massiveds.cli", *args], env=ENV, stdout=f, stderr=subprocess.STDOUT)
        sampler = Sampler(proc.pid)
        sampler.start()
        status = proc.wait()
    sampler.stopped.set()
    sampler.join()
    if status != 0:
        raise SystemExit(f"massiveds {args[0]} failed ({status}): see {log}")
    return time.perf_counter() - clock, sampler


def build_measured(manifest: Path, ds: Path, log: Path) -> tuple[float, Sampler]:
    """``massiveds build`` on Ray with the sampler over its process tree; (wall seconds, sampler)."""
    return cli_measured(["build", str(manifest), "--out", str(ds)], log)


def append_measured(ds: Path, work: Path, model: Path, sparse: bool, passages: int, domains: str) -> dict[str, Any]:
    """``massiveds append`` of the same new documents (``passages``' worth: a scale corpus of its own, seed 11, nothing planted)
    to a hard-linked copy of ``ds`` (an append writes new files only): wall seconds, largest process, what it kept."""
    corpus = work / f"append-corpus-{passages}{'-' + domains.replace(',', '+') if domains else ''}"
    if not (corpus / "planted.json").is_file():
        subprocess.run([sys.executable, str(REPO / "bench" / "scale_corpus.py"), "--passages", str(passages), "--seed", "11",
                        "--out", str(corpus), "--cache", str(work / "pool"), "--model", str(model), "--exact-rate", "0",
                        "--near-rate", "0", "--garbage-rate", "0", "--domains", domains], check=True, env=ENV)
    manifest = corpus / f"append{'-sparse' if sparse else ''}.yaml"
    body = yaml.safe_load((corpus / "scale.yaml").read_text()) | {"name": "append-10k"}
    body["embed"]["model"] = json.loads((ds / "datastore.json").read_text())["embedder"]["model"]  # as the datastore names it
    manifest.write_text(yaml.safe_dump(body | ({"sparse": {"enabled": True}} if sparse else {})))
    copy = ds.with_name(ds.name + "-appended")
    shutil.rmtree(copy, ignore_errors=True)
    subprocess.run(["cp", "-al", str(ds), str(copy)], check=True)
    wall, sampler = cli_measured(["append", str(copy), str(manifest)], work / f"append-{ds.name}.log")
    record = json.loads((copy / "datastore.json").read_text())["appends"][-1]
    stages = stage_table(work / f"append-{ds.name}.log")
    return {"documents": record["documents"], "records": record["records_read"], "passages": record["passages"], "seconds": wall,
            "max_rss_mib": round(max((mib for _, mib in sampler.peaks.values()), default=0.0)), "dropped": record["dropped"],
            "reference": stages.get("reference", {}).get("summary", ""), "stage_seconds": {k: v["seconds"] for k, v in stages.items()}}


def stage_table(log: Path) -> dict[str, dict[str, Any]]:
    """The stage table a command printed (``stage │ status │ seconds │ summary``, summaries wrapped over lines), by stage."""
    rows: dict[str, dict[str, Any]] = {}
    last = None
    for line in log.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) != 4 or cells[1] not in ("", "ran", "done", "skipped"):
            continue
        if cells[0]:
            try:
                last = cells[0]
                rows[last] = {"seconds": float(cells[2].replace(",", "")), "summary": cells[3]}
            except ValueError:
                last = None
        elif last is not None:
            rows[last]["summary"] += " " + cells[3]
    return rows


def disk_per_passage(ds: Path, passages: int) -> dict[str, float]:
    """Bytes per passage on disk: passage text, fp16 vectors, shard indexes."""
    sizes: dict[str, int] = defaultdict(int)
    for f in (ds / "shards").glob("*/*"):
        kind = "sparse" if f.name.startswith("sparse.") else {"passages.arrow": "passages", "vectors.npy": "vectors",
                                                               "index.faiss": "index"}.get(f.name, "other")
        sizes[kind] += f.stat().st_size
    return {k: v / passages for k, v in sizes.items()}


def search_timings(ds_path: Path, single: int = 200, batch: int = 1000, merged: bool = False, **options: Any) -> dict[str, float]:
    """In-process text search with ``options``: single-query p50/p99 (ms, embedding included) and batched queries/s.

    ``merged``: through the merged index (``merge-index``), else fanned out over the shards.
    """
    ds = Datastore.open(ds_path)
    ds.use_merged = merged
    queries = [QUERIES[i % len(QUERIES)] + f" {i}" for i in range(batch)]
    ds.search(queries[:8], k=10, **options)  # load the model, open the indexes
    lat = []
    for q in queries[:single]:
        clock = time.perf_counter()
        ds.search(q, k=10, **options)
        lat.append((time.perf_counter() - clock) * 1000)
    clock = time.perf_counter()
    ds.search(queries, k=10, **options)
    return {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "batched_qps": batch / (time.perf_counter() - clock)}


def serve_timings(ds_path: Path, clients: int = 16, seconds: float = 20.0) -> dict[str, Any]:
    """``massiveds serve`` under ``clients`` keep-alive clients: QPS, p50, p99, errors."""
    proc, port = start_server(server_command("asgi", ds_path, batch_wait_ms=2.0))
    try:
        run = load(port, clients, seconds, 10)
    finally:
        proc.terminate()
        proc.wait()
    return {"clients": clients, "qps": run.qps, "p50_ms": run.pct(0.5), "p99_ms": run.pct(0.99), "errors": len(run.errors)}


def operations(ds: Path, work: Path, merge: bool = True) -> dict[str, float | None]:
    """Seconds of subsample 0.1, verify, publish to a local folder, pull back, merge-index (None unless ``merge``: a flat index,
    which a small size gets, has no inverted lists to merge)."""
    for p in ("sub", "published", "pulled"):
        shutil.rmtree(work / p, ignore_errors=True)
    return {
        "subsample_0.1_s": timed("subsample", str(ds), "--fraction", "0.1", "--out", str(work / "sub")),
        "verify_s": timed("verify", str(ds)),
        "publish_s": timed("publish", str(ds), str(work / "published")),
        "pull_s": timed("pull", str(work / "published"), str(work / "pulled")),
        "merge_index_s": timed("merge-index", str(ds)) if merge else None,
    }


def build_size(n: int, work: Path, model: Path, sparse: bool, domains: str) -> dict[str, Any]:
    """Corpus and ``massiveds build`` at one size, measured: stage seconds and memory, planted duplicates found.

    The measurement is kept in ``<work>/build-<tag>.json`` beside the datastore, so that ``--reuse-build`` measures a
    finished build's datastore again (search, serve, operations, append) without building it again.
    """
    corpus = work / (f"corpus-{n}-{domains.replace(',', '+')}" if domains else f"corpus-{n}")  # a corpus is reused by its size
    if not (corpus / "planted.json").is_file():
        subprocess.run([sys.executable, str(REPO / "bench" / "scale_corpus.py"), "--passages", str(n), "--out", str(corpus),
                        "--cache", str(work / "pool"), "--model", str(model), "--domains", domains], check=True, env=ENV)
    planted = json.loads((corpus / "planted.json").read_text())
    tag = f"{n}-sparse" if sparse else str(n)
    ds = work / f"ds-{tag}"
    manifest = corpus / "scale.yaml"
    if sparse:
        manifest = corpus / "scale-sparse.yaml"
        manifest.write_text(yaml.safe_dump(yaml.safe_load((corpus / "scale.yaml").read_text()) | {"sparse": {"enabled": True}}))
    shutil.rmtree(ds, ignore_errors=True)
    load_before = load_average()
    out.print(f"[bold]build {n:,}[/] (log: {work / f'build-{tag}.log'})")
    wall, sampler = build_measured(manifest, ds, work / f"build-{tag}.log")
    catalog = json.loads((ds / "datastore.json").read_text())
    b = catalog["build"]
    passages = sum(s["count"] for s in catalog["shards"])
    intervals = stage_intervals(ds, b["stage_seconds"])
    memory = stage_memory(sampler, intervals)
    counts = {"records": b["records_read"], "documents": b["documents_kept"], "passages": passages}
    text_mb = planted["counts"]["bytes"] / 1e6
    stages = {}
    for stage, seconds in b["stage_seconds"].items():
        unit = STAGE_UNITS.get(stage, "passages")
        stages[stage] = {"seconds": seconds, "unit": unit, "per_s": counts[unit] / seconds if seconds else 0.0,
                         "mb_per_s": text_mb / seconds if stage in TEXT_STAGES and seconds else None,
                         "s_per_passage": seconds / passages} | memory.get(stage, {})
    measured = {
        "passages_asked": n, "tag": tag, "corpus": str(corpus), "passages": passages, "documents": b["documents_kept"],
        "records": b["records_read"], "tokens": sum(s.get("tokens", 0) for s in catalog["shards"]), "text_mb": text_mb,
        "domains": domains or "all", "build_wall_s": wall, "load_before": load_before, "load_after": load_average(),
        "date": dt.datetime.now().isoformat(timespec="minutes"), "machine": machine(),
        "index": catalog["index"]["factory"], "nprobe": catalog["index"]["nprobe"], "stages": stages, "build_commit": commit(),
        "peak_by_process": sorted(((who, round(mib)) for who, mib in sampler.peaks.values()), key=lambda r: -r[1]),
        "planted": planted_found(ds / "build", planted), "recall": catalog["recall"],
        "embed": {"passages_per_s": b["embed_passages_per_s"], "tokens_per_s": b["embed_tokens_per_s"]},
    }
    (work / f"build-{tag}.json").write_text(json.dumps(measured, indent=2))
    return measured


def run_size(n: int, work: Path, model: Path, sparse: bool = False, serve_seconds: float = 20.0, domains: str = "",
             reuse_build: bool = False, results_dir: Path | None = None, append_passages: int = APPEND_PASSAGES,
             append_only: bool = False) -> dict[str, Any]:
    """Everything measured at one size (``sparse``: with the BM25 index on, in folders and results of their own).

    ``append_only``: the append measured again, the rest kept from the size's last full measurement (``scale-<tag>.json``).
    """
    tag = f"{n}-sparse" if sparse else str(n)
    ds = work / f"ds-{tag}"
    if append_only:
        result = json.loads((work / f"scale-{tag}.json").read_text())
        return appended(result, n, ds, work, model, sparse, append_passages, domains, results_dir)
    kept = work / f"build-{tag}.json"
    result = json.loads(kept.read_text()) if reuse_build and kept.is_file() else build_size(n, work, model, sparse, domains)
    flat = json.loads((ds / "datastore.json").read_text())["index"]["type"] == "flat"
    out.print("[bold]search, serve and operations[/]")
    modes = ("dense", "sparse", "hybrid") if sparse else ("dense",)
    by_mode = {mode: search_timings(ds, mode=mode) for mode in modes}
    by_mode |= {f"{mode}+rerank": search_timings(ds, mode=mode, rerank="exact") for mode in modes if mode != "sparse"}
    result |= {
        "disk_bytes_per_passage": disk_per_passage(ds, result["passages"]),
        "search_by_mode": by_mode, "serve": serve_timings(ds, seconds=serve_seconds), "operations": operations(ds, work, merge=not flat),
    }
    if not flat:  # operations ran merge-index: the same dense searches through the merged index
        result["search_merged"] = {"dense": search_timings(ds, mode="dense", merged=True),
                                   "dense+rerank": search_timings(ds, mode="dense", rerank="exact", merged=True)}
    (work / f"scale-{tag}.json").write_text(json.dumps(result, indent=2))  # kept should the append fail
    return appended(result, n, ds, work, model, sparse, append_passages, domains, results_dir)


def appended(result: dict[str, Any], n: int, ds: Path, work: Path, model: Path, sparse: bool, append_passages: int, domains: str,
             results_dir: Path | None) -> dict[str, Any]:
    """``result`` with the append to ``ds`` measured, written to ``<work>/scale-<tag>.json`` and the results folder."""
    tag = f"{n}-sparse" if sparse else str(n)
    out.print(f"[bold]append {append_passages:,} passages' worth of new documents[/]")
    result["append"] = append_measured(ds, work, model, sparse, append_passages, domains)
    result["append"]["fraction_of_build"] = result["append"]["seconds"] / result["build_wall_s"]
    result["append"]["measured"] = {"date": dt.datetime.now().strftime("%Y-%m-%dT%H:%M"), "commit": commit(), "load": load_average()}
    result["load_end"] = load_average()
    (work / f"scale-{tag}.json").write_text(json.dumps(result, indent=2))
    if results_dir is not None:
        results_dir.mkdir(parents=True, exist_ok=True)
        (results_dir / f"scale-{n}.json").write_text(json.dumps(summary(result), indent=2) + "\n")
    return result


def summary(r: dict[str, Any]) -> dict[str, Any]:
    """The machine-readable record of one size (``bench/results/scale-<N>.json``): what BENCHMARKS.md and docs/scale.md quote."""
    recall = r["recall"]
    return {
        "passages": r["passages"], "documents": r["documents"], "tokens": r["tokens"], "records": r["records"],
        "text_mb": round(r["text_mb"], 1), "index": r["index"], "nprobe": r["nprobe"],
        "wall_s": round(r["build_wall_s"], 1),
        "max_process_rss_mib": max(mib for _, mib in r["peak_by_process"]),
        "stages": {s: {"seconds": v["seconds"], "max_rss_mib": round(v.get("any_max_mib", 0.0)), "rate": round(v["per_s"], 1),
                       "unit": v["unit"], "s_per_passage": v["s_per_passage"]} for s, v in r["stages"].items()},
        "planted": {k: r["planted"][k] for k in ("precision", "recall", "planted", "found")},
        "recall_at_10": {"no_rerank": recall.get("recall_at_10"), "rerank": recall.get("recall_at_10_rerank"),
                         "rerank_depth": recall.get("rerank_depth"), "nprobe": recall.get("nprobe")},
        "search": {mode: {k: round(v, 2) for k, v in t.items()} for mode, t in r["search_by_mode"].items()},
        "search_merged": {mode: {k: round(v, 2) for k, v in t.items()} for mode, t in (r.get("search_merged") or {}).items()},
        "serve": r["serve"],
        "operations": r["operations"],
        "append": r["append"],
        "disk_bytes_per_passage": {k: round(v) for k, v in r["disk_bytes_per_passage"].items()},
        "embed": r["embed"],
        "date": r["date"], "machine": r["machine"], "build_commit": r.get("build_commit"), "measure_commit": commit(),
        "load": {"before_build": r["load_before"], "after_build": r["load_after"], "end": r["load_end"]},
    }


def report(results: dict[int, dict[str, Any]]) -> None:
    """The tables of every size, and the scaling between the smallest and the largest."""
    for n, r in results.items():
        out.print(f"\n[bold]{n:,} passages asked[/]: {r['passages']:,} passages, {r['documents']:,} documents, "
                  f"{r['text_mb']:,.0f} MB text, "
                  f"index {r['index']} (nprobe {r['nprobe']}), build {r['build_wall_s']:,.0f} s wall; load {r['load_before']} -> "
                  f"{r['load_after']}; {r['date']}; {r['machine']}")
        rows = [(s, round(v["seconds"], 1), f"{v['per_s']:,.0f} {v['unit']}/s", "" if v["mb_per_s"] is None else round(v["mb_per_s"], 1),
                 round(v.get("driver_mib", 0)), round(v.get("worker_max_mib", 0)), v.get("workers", 0), v.get("worker_max_title", ""),
                 round(v.get("services_max_mib", 0))) for s, v in r["stages"].items()]
        out.print(table("stages", ["stage", "s", "rate", "MB/s", "driver MiB", "max worker MiB", "workers", "largest", "ray services MiB"],
                        rows))
        out.print(table("processes by peak RSS (VmHWM, MiB)", ["process", "MiB"], r["peak_by_process"][:12]))
        other = [("planted duplicates", json.dumps(r["planted"])), ("disk bytes/passage", json.dumps({k: round(v) for k, v in
                 r["disk_bytes_per_passage"].items()})), ("recall (build)", json.dumps(r["recall"])),
                 ("serve", json.dumps(r["serve"])), ("operations", json.dumps(r["operations"])), ("embed", json.dumps(r["embed"])),
                 ("append", json.dumps(r["append"]))]
        other += [(f"search, mode {mode}", json.dumps(t)) for mode, t in r["search_by_mode"].items()]
        other += [(f"search, merged index, {mode}", json.dumps(t)) for mode, t in (r.get("search_merged") or {}).items()]
        out.print(table("datastore", ["", "value"], other))
    if len(results) > 1:
        small, large = results[min(results)], results[max(results)]
        rows = []
        for s, v in large["stages"].items():
            w = small["stages"].get(s)
            if w:
                rows.append((s, round(v["s_per_passage"] / w["s_per_passage"], 2) if w["s_per_passage"] else "",
                             round(v.get("any_max_mib", 0) / w["any_max_mib"], 2) if w.get("any_max_mib") else ""))
        out.print(table(f"scaling {min(results):,} -> {max(results):,} (1.0: linear time, flat memory)",
                        ["stage", "time/passage ratio", "peak RSS ratio"], rows))


def markdown(results_dir: Path) -> str:
    """The tables BENCHMARKS.md and docs/scale.md quote, in Markdown, from every ``scale-<N>.json`` of ``results_dir``."""
    runs = sorted((json.loads(f.read_text()) for f in results_dir.glob("scale-*.json")), key=lambda r: r["passages"])
    if not runs:
        raise SystemExit(f"no scale-<N>.json in {results_dir}")
    head = " | ".join(f"{r['passages']:,}" for r in runs)
    lines = [f"| | {head} |", "|---|" + "---:|" * len(runs)]

    def row(name: str, cell: Callable[[dict[str, Any]], str]) -> None:
        lines.append(f"| {name} | " + " | ".join(cell(r) for r in runs) + " |")

    row("documents / tokens", lambda r: f"{r['documents']:,} / {r['tokens']:,}")
    row("index (nprobe)", lambda r: f"{r['index']} ({r['nprobe']})")
    row("**build wall**", lambda r: f"**{r['wall_s']:,.0f} s** ({r['wall_s'] / 60:.1f} min)")
    row("largest process (peak RSS)", lambda r: f"{r['max_process_rss_mib']:,} MiB")
    row("planted duplicates: precision / recall", lambda r: f"{r['planted']['precision']:.4f} / {r['planted']['recall']:.4f}")
    row("recall@10: IVF-PQ / exact rerank (depth)",
        lambda r: f"{r['recall_at_10']['no_rerank']:.3f} / {r['recall_at_10']['rerank']:.3f} ({r['recall_at_10']['rerank_depth']})")
    row("append of the same documents: s (of the build)",
        lambda r: f"{r['append']['seconds']:,.1f} s ({100 * r['append']['fraction_of_build']:.1f} %), {r['append']['documents']:,} docs")
    row("append peak RSS", lambda r: f"{r['append']['max_rss_mib']:,} MiB")
    row("serve, 16 clients: QPS / p50 / p99",
        lambda r: f"{r['serve']['qps']:,.0f} / {r['serve']['p50_ms']:.0f} / {r['serve']['p99_ms']:.0f} ms, {r['serve']['errors']} errors")
    for mode in runs[-1]["search"]:
        row(f"search {mode}: p50 / p99 ms", lambda r, m=mode: f"{r['search'][m]['p50_ms']:.1f} / {r['search'][m]['p99_ms']:.1f}"
            if m in r["search"] else "")
    for mode in runs[-1].get("search_merged") or {}:
        row(f"merged index, {mode}: p50 / p99 ms", lambda r, m=mode: f"{r['search_merged'][m]['p50_ms']:.1f} / "
            f"{r['search_merged'][m]['p99_ms']:.1f}" if m in r.get("search_merged", {}) else "")
    lines += ["", "| stage | " + " | ".join(f"s at {r['passages']:,}" for r in runs) + " | time/passage, last / first | "
              + " | ".join(f"peak MiB at {r['passages']:,}" for r in runs) + " |", "|---|" + "---:|" * (2 * len(runs) + 1)]
    first, last = runs[0], runs[-1]
    for stage, v in last["stages"].items():
        w = first["stages"].get(stage)
        ratio = f"{v['s_per_passage'] / w['s_per_passage']:.2f}" if w and w["s_per_passage"] else ""
        lines.append(f"| {stage} | " + " | ".join(f"{r['stages'].get(stage, {}).get('seconds', 0):,.1f}" for r in runs) + f" | {ratio} | "
                     + " | ".join(f"{r['stages'].get(stage, {}).get('max_rss_mib', 0):,}" for r in runs) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", default="250000,1000000", help="comma list of sizes")
    parser.add_argument("--work", type=Path, default=Path("/tmp/massiveds-scale"))
    parser.add_argument("--sparse", action="store_true", help="build with the BM25 index on (folders and results of their own)")
    parser.add_argument("--serve-seconds", type=float, default=20.0, help="how long 16 clients load the server")
    parser.add_argument("--domains", default="", help="comma-separated subset of the shared domains of the corpus (default: all 8)")
    parser.add_argument("--append-passages", type=int, default=APPEND_PASSAGES,
                        help="passages' worth of new documents appended to each size (the same documents at every size)")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="folder of the machine-readable scale-<N>.json (default bench/results; 'none': not written)")
    parser.add_argument("--reuse-build", action="store_true",
                        help="measure a finished earlier build of the same size again (its build-<N>.json), without building")
    parser.add_argument("--append-only", action="store_true",
                        help="measure only the append again, keeping the rest of each size's last measurement (its scale-<N>.json)")
    parser.add_argument("--tables", action="store_true", help="print the Markdown tables of the results folder's files, and stop")
    args = parser.parse_args()
    if args.tables:
        print(markdown(args.results))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    model = cached_static("all-MiniLM-L6-v2", REPO / ".cache")
    results = {}
    for n in (int(x) for x in args.passages.split(",")):
        results[n] = run_size(n, args.work, model, args.sparse, args.serve_seconds, args.domains, args.reuse_build,
                              None if str(args.results) == "none" else args.results, args.append_passages, args.append_only)
        report({n: results[n]})
    if len(results) > 1:
        report(results)


if __name__ == "__main__":
    main()
