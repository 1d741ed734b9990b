"""Text stages at 1x, 4x and 16x the data: documents/s and MB/s per core, peak RSS, and datatrove's MinHash beside ours.

Data: the shared real text (``../shared/data/jsonl``, 8 files, 8,425 rows), copied k times for k x.
Copy 0 is the original. Copy c > 0 suffixes every id with ``~c`` and, in the field the manifest
reads, ROT-c enciphers a ``--rate`` fraction of the vocabulary (lower-case words of 3+ letters, not
in a LaTeX command, brace group or entity; in HTML only text between tags), chosen by a hash of
(c, word): a word changes the same way everywhere in a copy, so exact and near duplicates inside a
copy stay duplicates, while two copies of one document typically share 0.1-0.6 of their word
5-grams (Jaccard), below the 0.8 near-dup threshold; a few short or word-poor documents stay
alike across copies and are deduplicated (the tables show how many). Each copy is 8 files (one per
domain), so k x is 8k input files, each the size of its 1 x file: per-file units see the same work
at every scale.

Each stage runs in a fresh process over all its units, one after the other on one core (Arrow
limited to one thread), calling the build's own functions on a manifest of these files:

    read     the reader alone: decompress and parse the JSONL (``massiveds.ingest.extract.reader_for``)
    extract  the build's extract unit: read, markup to text (``records_to_documents``: HTML by
             trafilatura, LaTeX, wikitext, Gutenberg), normalise and quality filters
             (``normalize_and_filter``), write the documents Parquet; the CPU of the markup and of
             the filter calls is also shown apart ("extract/filter (in the unit)")
    exact    exact dedup, map and reduce (``pipelines.stages.dedup.run_exact_dedup``)
    minhash  near dedup, every step (``pipelines.stages.near_dedup.run_near_dedup``), partitions as the build
             picks them (one per ``NEAR_PARTITION_BYTES`` of compressed documents); again with
             ``--small-partition-mb`` partitions, so that partitions grow in number with the data (0 skips
             it). Each unit's own peak RSS is recorded (VmHWM reset before it), the highest per step: what
             one reducer (or map unit) holds; and the files and bytes each step wrote
    chunk    the chunk unit (256-word passages), leaving out both dedups' removals

Rates are per CPU second of the stage's process (user + sys): documents/s and MB/s, MB being the
UTF-8 text the stage reads (the source field for read/extract, the documents' text after). Peak RSS
is the process's VmHWM; "stage RSS" subtracts what it held after its imports.

datatrove, where installed in its own venv (``python3 -m venv /tmp/dt-venv && /tmp/dt-venv/bin/pip
install datatrove spacy regex 'xxhash<4' tokenizers orjson``), runs its MinHash dedup (signatures -> buckets ->
cluster -> filter; 5-grams, 14 buckets x 8 hashes, seed 1, one worker) on the documents our minhash
stage gets (exported as JSONL, one file per documents part), and ours runs again with ``verify:
none`` (LSH candidates linked unchecked, as datatrove does) for a like-for-like removed set.

    python bench/text_stages.py [--scales 1,4,16] [--datatrove /tmp/dt-venv/bin/python]

Not run by CI. With issue 4's ``bench/minhash.py`` (signatures + LSH vs datasketch) this is the dedup
benchmark: per-core rates of the exact and MinHash stages and their peak RSS at each scale.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import yaml
import zstandard
from _common import REPO, _peak_rss_mib, load_average, machine, measured, run_measured, shared_rows
from rich.console import Console
from rich.progress import Progress

sys.path.insert(0, str(REPO))  # this checkout's massiveds and pipelines, not an installed copy

from massiveds.core.manifest import load_manifest
from massiveds.core.report import table
from massiveds.ingest.extract import reader_for
from massiveds.ingest.sources.files import resolve_inputs
from pipelines.executor import LocalExecutor
from pipelines.stage import InputItem, Item, PoolStep, Result, Step
from pipelines.stages import extract as extract_stage
from pipelines.stages.chunk import ChunkFiles
from pipelines.stages.dedup import run_exact_dedup
from pipelines.stages.near_dedup import NEAR_PARTITION_BYTES, NearConfig, near_partitions, run_near_dedup

#: The shared files and how the manifest reads each: the field holding the text and its markup.
SOURCES: dict[str, dict[str, str]] = {
    "biomed": {},
    "books": {"markup": "gutenberg"},
    "code": {},
    "math": {"markup": "latex"},
    "qa_forum": {},
    "stem_latex": {"markup": "latex"},
    "web_html": {"text_field": "html", "markup": "html"},
    "wiki": {"markup_field": "markup"},  # 32 rows of wikitext, the rest plain text
}
DATATROVE_STEPS = ("signatures", "buckets", "cluster", "filter")
_WORD = re.compile(r"(?<![\\{&\w])[a-z]{3,}(?![\w}=;])")
_TAG = re.compile(r"(<[^>]*>)")
UNVERIFIED = "minhash, verify none"
NEAR_STEPS = ("near-map", "near-bands", "near-attach", "near-verify", "near-cc", "near-clusters", "near-resolve")
DRIVER = Path(__file__).resolve().parent / "_datatrove_minhash.py"


# -- the scaled data -------------------------------------------------------------------------


def perturb(text: str, copy: int, rate: float, chosen: dict[str, str], html: bool = False) -> str:
    """``text`` with the words that hash(copy, word) picks (a ``rate`` of the vocabulary) ROT-``copy`` enciphered.

    Words are lower-case runs of 3+ letters not inside a LaTeX command, brace group or entity; in HTML
    only text between tags changes (class names and tag names steer the extractor).
    """
    if html:
        parts = _TAG.split(text)  # even: text between tags, odd: the tags
        return "".join(p if i % 2 else perturb(p, copy, rate, chosen) for i, p in enumerate(parts))
    rot = str.maketrans("abcdefghijklmnopqrstuvwxyz", "".join(chr(97 + (i + copy) % 26) for i in range(26)))

    def swap(m: re.Match[str]) -> str:
        w = m.group()
        if w not in chosen:
            chosen[w] = w.translate(rot) if zlib.crc32(f"{copy}:{w}".encode()) < rate * 2**32 else w
        return chosen[w]

    return _WORD.sub(swap, text)


def write_copy(folder: Path, name: str, copy: int, rate: float) -> dict[str, int]:
    """Write copy ``copy`` of the shared file ``name`` into ``folder`` (once); returns its rows and source-text bytes."""
    stats_path = folder / f"{name}.json"
    if stats_path.is_file():
        return json.loads(stats_path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    spec = SOURCES[name]
    field = spec.get("text_field", "text")
    rows = shared_rows(name)
    chosen: dict[str, str] = {}
    if copy:
        for row in rows:
            row["id"] = f"{row['id']}~{copy}"
            row[field] = perturb(row[field], copy, rate, chosen, html=spec.get("markup") == "html")
    with zstandard.open(folder / f"{name}.jsonl.zst", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    stats = {"rows": len(rows), "bytes": sum(len(r[field].encode("utf-8")) for r in rows)}
    stats_path.write_text(json.dumps(stats))
    return stats


def make_inputs(work: Path, scale: int, rate: float, names: list[str], settings: dict[str, Any] | None = None) -> tuple[Path, int, int]:
    """The manifest of ``scale`` copies of the files ``names`` (linked into one folder per file), with manifest ``settings``
    (chunk, embed, ...) beside its sources; returns (path, rows, bytes)."""
    root = work / f"{scale}x"
    shutil.rmtree(root, ignore_errors=True)
    sources, rows, size = [], 0, 0
    for name in names:
        (root / "inputs" / name).mkdir(parents=True)
        for c in range(scale):
            folder = work / "data" / f"rate{rate:g}" / f"c{c:03d}"
            stats = write_copy(folder, name, c, rate)
            rows, size = rows + stats["rows"], size + stats["bytes"]
            (root / "inputs" / name / f"c{c:03d}.jsonl.zst").symlink_to(folder / f"{name}.jsonl.zst")
        sources.append({"name": name, "uri": f"inputs/{name}/*.jsonl.zst", "format": "jsonl", "id_field": "id",
                        "title_field": "title", **SOURCES[name]})
    manifest = root / "manifest.yaml"
    body = {"name": f"textbench-{scale}x", "domain": "mixed", "sources": sources, **(settings or {})}
    manifest.write_text(yaml.safe_dump(body, sort_keys=False))
    return manifest, rows, size


# -- one stage, in its own process -----------------------------------------------------------


def _rss_mib() -> float:
    """Resident set of this process now, MiB (VmRSS)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


class UnitPeaks:
    """A step runner over a ``LocalExecutor`` that keeps, per step, the highest peak RSS of one unit and its growth (MiB).

    A unit's growth is its peak less the RSS it started with (what the process kept from earlier units).
    """

    def __init__(self, inner: LocalExecutor) -> None:
        self.inner = inner
        self.peaks: dict[str, float] = {}
        self.growth: dict[str, float] = {}

    def map(self, step: Step[Item, Result], items: Sequence[Item]) -> list[Result]:
        def run(item: Item) -> Result:
            Path("/proc/self/clear_refs").write_text("5")  # Linux: the peak (VmHWM) starts again from the current RSS
            start = _rss_mib()
            result = step.run(item)
            peak = _peak_rss_mib()
            self.peaks[step.name] = max(self.peaks.get(step.name, 0.0), peak)
            self.growth[step.name] = max(self.growth.get(step.name, 0.0), peak - start)
            return result

        return self.inner.map(dataclasses.replace(step, run=run), items)

    def pool(self, step: PoolStep[Item, Result], calls: Sequence[Item], total: int) -> list[Result]:
        return self.inner.pool(step, calls, total)


def near_files(folder: Path) -> dict[str, dict[str, int]]:
    """Files and bytes under each folder of a near-dedup run."""
    sizes = {f.name: [p.stat().st_size for p in f.rglob("*") if p.is_file()] for f in sorted(folder.iterdir()) if f.is_dir()}
    return {name: {"files": len(s), "bytes": sum(s)} for name, s in sizes.items()}



def _cpu_into(totals: dict[str, float], key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, adding the CPU seconds of each call to ``totals[key]``."""

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] += time.process_time() - start

    return timed


def run_stage(stage: str, manifest_path: Path, build: Path, partition_bytes: int, verify: str | None = None) -> dict[str, Any]:
    """Run one stage of the build over every unit of ``manifest_path`` in this process, measured."""
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    loaded = load_manifest(manifest_path)
    manifest = loaded.manifest
    items = [InputItem.of(inp, 0) for inp in resolve_inputs(loaded)]
    # the stages' steps in this process; their unit markers go to a scratch folder, so every unit runs
    executor = LocalExecutor(Path(tempfile.mkdtemp(prefix="text-stages-markers-")), Progress(disable=True))

    def read() -> dict[str, Any]:
        return {"records": sum(1 for i in items for _ in reader_for(i.file.format)(i.file.path))}

    def extract() -> dict[str, Any]:
        # the unit's markup conversion and filtering, timed where the unit calls them (one run, no twin of the unit)
        split = {"extract": 0.0, "filter": 0.0}
        extract_stage.records_to_documents = _cpu_into(split, "extract", extract_stage.records_to_documents)  # type: ignore[assignment]
        extract_stage.normalize_and_filter = _cpu_into(split, "filter", extract_stage.normalize_and_filter)  # type: ignore[assignment]
        kept = sum(extract_stage.extract_file(i, manifest, build).kept for i in items)
        return {"kept": kept, "extract_cpu_s": split["extract"], "filter_cpu_s": split["filter"]}

    def exact() -> dict[str, Any]:
        return run_exact_dedup(executor, items, build).model_dump()

    def minhash() -> dict[str, Any]:
        near = manifest.dedup.near if verify is None else manifest.dedup.near.model_copy(update={"verify": verify})
        config = NearConfig(build, near, near_partitions(build, items, partition_bytes))
        runner = UnitPeaks(executor)
        record = run_near_dedup(runner, items, config, removed=("exact",), keep_intermediate=True)
        files = near_files(config.path())
        for folder in files.keys() - {"duplicates"}:
            shutil.rmtree(config.path(folder))
        documents = sum((build / "documents" / f"{i.unit}.parquet").stat().st_size for i in items)
        return record.model_dump() | {"unit_peak_mib": runner.peaks, "unit_growth_mib": runner.growth, "files": files,
                                      "documents_bytes": documents}

    def chunk() -> dict[str, Any]:
        step = ChunkFiles(build, [manifest], ("exact", "near"), loaded.base_dir)
        return {"passages": sum(step(i).passages for i in items)}

    stages = {"read": read, "extract": extract, "exact": exact, "minhash": minhash, "chunk": chunk}
    m = measured(stages[stage])
    if stage == "minhash":  # its units each reset the peak (VmHWM) to measure their own: the stage's is the highest
        m["rss_peak_mib"] = max(m["rss_peak_mib"], *m["result"]["unit_peak_mib"].values())
    return m


def stage_process(stage: str, manifest: Path, build: Path, partition_bytes: int, verify: str | None = None) -> dict[str, Any]:
    """``run_stage`` in a fresh Python process (fresh peak RSS), one thread for numpy and Arrow."""
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, __file__, "--stage", stage, "--manifest", str(manifest), "--build", str(build),
           "--partition-bytes", str(partition_bytes)] + (["--verify", verify] if verify else [])
    result = run_measured(cmd, env)
    _progress(f"{manifest.parent.name} {stage} {verify or ''} {partition_bytes >> 20} MiB", result)
    return result


def _progress(label: str, m: dict[str, Any]) -> None:
    Console(stderr=True).print(f"[dim]{label}: {m['cpu_s']:.1f} CPU s, {m['wall_s']:.1f} s wall, peak RSS {m['rss_peak_mib']:.0f} MiB")


# -- what each stage read, what dedup removed ------------------------------------------------


def _ords(folder: Path, columns: list[str] | None = None) -> pa.Table:
    if not folder.is_dir() or not any(folder.glob("*.parquet")):
        return pa.table({"_ord": pa.array([], pa.int64())})
    return pds.dataset(str(folder), format="parquet").to_table(columns=columns or ["_ord"])


def document_sizes(build: Path) -> tuple[np.ndarray, np.ndarray]:
    """(_ord, UTF-8 text bytes) of every kept document, in part order."""
    ords, sizes = [], []
    for path in sorted((build / "documents").glob("*.parquet")):
        t = pq.read_table(path, columns=["_ord", "text"])
        ords.append(t.column("_ord").to_numpy())
        sizes.append(pc.binary_length(pc.cast(t.column("text"), pa.binary())).to_numpy())
    return np.concatenate(ords), np.concatenate(sizes)


def near_removed(build: Path) -> tuple[set[int], set[int]]:
    """(removed _ords, every _ord in a near-duplicate cluster, survivors included) of the last near-dedup run."""
    t = _ords(build / "dedup" / "near" / "duplicates", ["_ord", "cluster"])
    removed = set(t.column("_ord").to_pylist())
    return removed, removed | set(t.column("cluster").to_pylist() if "cluster" in t.column_names else [])


def forget_near(build: Path) -> None:
    """Remove a near-dedup run's outputs so that the next run starts clean."""
    shutil.rmtree(build / "dedup" / "near", ignore_errors=True)
    shutil.rmtree(build / "dropped" / "near_dedup", ignore_errors=True)


# -- datatrove -------------------------------------------------------------------------------


def export_for_datatrove(build: Path, folder: Path, exact_dups: np.ndarray) -> list[list[int]]:
    """Write the documents our minhash stage reads (kept, not exact duplicates) as JSONL, one file per part.

    Returns the ``_ord``s of each file in order: datatrove names a document by (file rank, row).
    """
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    files = []
    for path in sorted((build / "documents").glob("*.parquet")):
        t = pq.read_table(path, columns=["_ord", "text"])
        t = t.filter(pc.invert(pc.is_in(t.column("_ord"), value_set=pa.array(exact_dups, pa.int64()))))
        ords = t.column("_ord").to_pylist()
        texts = t.column("text").to_pylist()
        with open(folder / f"{path.stem}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"id": str(o), "text": x}, ensure_ascii=False) + "\n" for o, x in zip(ords, texts, strict=True))
        files.append(ords)
    return files


def run_datatrove(python: str, inputs: Path, work: Path, files: list[list[int]]) -> tuple[dict[str, Any], set[int], set[int]]:
    """Every step of datatrove's MinHash dedup, each in a fresh process: per-step measurements, removed and clustered ords."""
    shutil.rmtree(work, ignore_errors=True)
    steps = {}
    for step in DATATROVE_STEPS:
        cmd = [python, str(DRIVER), step, "--input", str(inputs), "--work", str(work), "--files", str(len(files))]
        steps[step] = run_measured(cmd, os.environ | {"OMP_NUM_THREADS": "1"})
        _progress(f"{work.parent.name} datatrove {step}", steps[step])
    return steps, *datatrove_removed(work, files)


def datatrove_removed(work: Path, files: list[list[int]]) -> tuple[set[int], set[int]]:
    """(removed, clustered) ``_ord``s from datatrove's cluster step: per input file rank, ``.remove`` rows and ``.clusters`` (row, id)."""
    removed: set[int] = set()
    clustered: set[int] = set()
    for rank, ords in enumerate(files):
        for kind, into in (("remove", removed), ("clusters", clustered)):
            path = work / "remove" / f"{rank:06d}.{kind}"
            if path.is_file():
                rows = np.fromfile(path, dtype="<u4")
                into.update(ords[int(r)] for r in (rows if kind == "remove" else rows[0::2]))
    return removed, clustered


# -- the run ---------------------------------------------------------------------------------


def _agreement(a: set[int], b: set[int]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def _covered(truth: set[int], found: set[int]) -> float:
    return len(truth & found) / len(truth) if truth else 1.0


def bench_scale(args: argparse.Namespace, scale: int) -> dict[str, Any]:
    """Every stage at one scale: per-stage measurements and inputs (documents, bytes), and datatrove's if asked."""
    manifest, records, raw_bytes = make_inputs(args.work, scale, args.rate, args.sources.split(","))
    build = args.work / f"{scale}x" / "build"
    stages: dict[str, Any] = {}

    def run(stage: str, partition_bytes: int = args.partition_bytes, verify: str | None = None) -> dict[str, Any]:
        return stage_process(stage, manifest, build, partition_bytes, verify)

    stages["read"], stages["extract"] = run("read"), run("extract")
    ords, sizes = document_sizes(build)
    stages["exact"] = run("exact")
    exact_dups = _ords(build / "dedup" / "duplicates").column("_ord").to_numpy()
    in_near = ~np.isin(ords, exact_dups)
    with_datatrove = bool(args.datatrove) and scale in args.datatrove_scales
    if with_datatrove:
        exported = args.work / f"{scale}x" / "datatrove-input"
        files = export_for_datatrove(build, exported, exact_dups)
        stages[UNVERIFIED] = run("minhash", verify="none")
        unv_removed, unv_clustered = near_removed(build)
        forget_near(build)
    if args.small_partition_mb:
        stages[f"minhash, {args.small_partition_mb:g} MiB partitions"] = run("minhash", int(args.small_partition_mb * 2**20))
        forget_near(build)
    stages["minhash"] = run("minhash")
    removed, clustered = near_removed(build)
    stages["chunk"] = run("chunk")
    in_chunk = in_near & ~np.isin(ords, np.array(sorted(removed), np.int64))
    near_in = (in_near.sum(), sizes[in_near].sum())
    inputs = {"read": (records, raw_bytes), "extract": (records, raw_bytes), "exact": (len(ords), sizes.sum()),
              "chunk": (in_chunk.sum(), sizes[in_chunk].sum())}
    out: dict[str, Any] = {"stages": stages, "removed": len(removed), "inputs": {k: inputs.get(k, near_in) for k in stages}}
    if with_datatrove:
        steps, dt_removed, dt_clustered = run_datatrove(args.datatrove, exported, args.work / f"{scale}x" / "datatrove", files)
        out["datatrove"] = {
            "steps": steps, "removed": len(dt_removed), "unverified_removed": len(unv_removed),
            "agree_removed_unverified": _agreement(unv_removed, dt_removed), "agree_removed_jaccard": _agreement(removed, dt_removed),
            "agree_clustered_unverified": _agreement(unv_clustered, dt_clustered),
            "clustered": (len(unv_clustered), len(dt_clustered)),
            # of the documents our verified run clusters (links at true 5-gram Jaccard >= 0.8), the share each unverified run clusters
            "covers_verified": (_covered(clustered, unv_clustered), _covered(clustered, dt_clustered)),
        }
    return json.loads(json.dumps(out, default=int))


def stage_rows(results: dict[int, dict[str, Any]]) -> list[tuple[Any, ...]]:
    """One row per stage and scale; the extract unit's markup and filter CPU shown on rows of their own."""
    rows = []
    for stage in _stage_names(results):
        for scale, r in results.items():
            if stage not in r["stages"]:
                continue
            m, (docs, size) = r["stages"][stage], r["inputs"][stage]
            if stage == "extract":
                for part in ("extract", "filter"):
                    cpu = m["result"][f"{part}_cpu_s"]
                    rows.append((f"  {part} (in the unit)", f"{scale}x", docs, round(size / 1e6, 1), None, round(cpu, 1),
                                 round(docs / cpu), round(size / 1e6 / cpu, 2), None, None, ""))
            rows.append(("extract unit" if stage == "extract" else stage, f"{scale}x", docs, round(size / 1e6, 1), round(m["wall_s"], 1),
                         round(m["cpu_s"], 1), round(docs / m["cpu_s"]), round(size / 1e6 / m["cpu_s"], 2), round(m["rss_peak_mib"]),
                         round(m["rss_peak_mib"] - m["rss_base_mib"]), _detail(stage, m["result"])))
    return rows


def _stage_names(results: dict[int, dict[str, Any]]) -> list[str]:
    """Every stage run at some scale, in the order they ran (variants only run at some scales)."""
    return list(dict.fromkeys(name for r in results.values() for name in r["stages"]))


def _detail(stage: str, result: dict[str, Any]) -> str:
    if "summary" in result:
        return str(result["summary"]).replace(" hash partitions", " partitions")
    return ", ".join(f"{k} {v:,}" for k, v in result.items() if not k.endswith("_s"))


def ratio_rows(results: dict[int, dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of CPU, CPU per document and peak RSS at each scale over the smallest scale."""
    low = min(results)
    base = results[low]
    cols = ["stage"] + [c for s in results if s != low for c in (f"CPU {s}x/{low}x", f"CPU/doc {s}x/{low}x", f"RSS {s}x/{low}x")]
    rows = []
    for stage in _stage_names(results):
        row: list[Any] = [stage]
        if stage not in base["stages"]:
            continue
        b, bdocs = base["stages"][stage], base["inputs"][stage][0]
        if not any(stage in r["stages"] for scale, r in results.items() if scale != low):
            continue
        for scale, r in results.items():
            if scale != low and stage not in r["stages"]:
                row += [None] * 3
            elif scale != low:
                m, docs = r["stages"][stage], r["inputs"][stage][0]
                row += [round(m["cpu_s"] / b["cpu_s"], 2), round((m["cpu_s"] / docs) / (b["cpu_s"] / bdocs), 2),
                        round(m["rss_peak_mib"] / b["rss_peak_mib"], 2)]
        rows.append(row)
    return cols, rows


def near_rows(results: dict[int, dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Per MinHash run and scale: partitions, each step's highest per-unit peak RSS (and growth), files and MiB written."""
    rows = []
    for stage in (s for s in _stage_names(results) if s.startswith("minhash")):
        for scale, r in results.items():
            res = r["stages"][stage]["result"] if stage in r["stages"] else {}
            if "unit_peak_mib" not in res:
                continue
            peaks, growth = res["unit_peak_mib"], res["unit_growth_mib"]
            written = {k: v for k, v in res["files"].items() if k != "duplicates"}
            rows.append((stage, f"{scale}x", res["partitions"], round(res["documents_bytes"] / 2**20, 1),
                         *(f"{peaks[s]:.0f} (+{growth[s]:.0f})" if s in peaks else None for s in NEAR_STEPS),
                         sum(v["files"] for v in written.values()), round(sum(v["bytes"] for v in written.values()) / 2**20, 1),
                         ", ".join(f"{k} {v['files']}" for k, v in written.items())))
    return rows


def datatrove_rows(results: dict[int, dict[str, Any]]) -> tuple[list[tuple[Any, ...]], list[str]]:
    """Rows of ours (both verify modes) vs datatrove at each scale it ran, and the removed-set agreement lines."""
    rows, notes = [], []
    for scale, r in results.items():
        d = r.get("datatrove")
        if d is None:
            continue
        docs = r["inputs"]["minhash"][0]
        dt_cpu = sum(s["cpu_s"] for s in d["steps"].values())
        steps = ", ".join(f"{s} {d['steps'][s]['cpu_s']:.1f}" for s in DATATROVE_STEPS)
        ours, unv = r["stages"]["minhash"], r["stages"][UNVERIFIED]
        for name, cpu, wall, rss, removed in (
            ("massiveds, verify jaccard (default)", ours["cpu_s"], ours["wall_s"], ours["rss_peak_mib"], r["removed"]),
            ("massiveds, verify none", unv["cpu_s"], unv["wall_s"], unv["rss_peak_mib"], d["unverified_removed"]),
            (f"datatrove ({steps})", dt_cpu, sum(s["wall_s"] for s in d["steps"].values()),
             max(s["rss_peak_mib"] for s in d["steps"].values()), d["removed"]),
        ):
            rows.append((f"{scale}x", name, docs, round(wall, 1), round(cpu, 1), round(docs / cpu), round(dt_cpu / cpu, 2), round(rss),
                         removed))
        notes.append(f"{scale}x removed-set agreement (Jaccard) with datatrove: verify none {d['agree_removed_unverified']:.3f}, "
                     f"verify jaccard {d['agree_removed_jaccard']:.3f}; documents in a duplicate cluster, verify none vs datatrove: "
                     f"{d['agree_clustered_unverified']:.3f} ({d['clustered'][0]:,} vs {d['clustered'][1]:,}); of the documents in "
                     f"verified clusters, verify none clusters {d['covers_verified'][0]:.3f}, datatrove {d['covers_verified'][1]:.3f}")
    return rows, notes


def report(args: argparse.Namespace, results: dict[int, dict[str, Any]], load: tuple[str, str]) -> None:
    """Print the tables: per stage and scale, scaling ratios, and datatrove vs ours."""
    console = Console(width=240)
    cols = ["stage", "scale", "documents", "MB", "wall s", "CPU s", "docs/s/core", "MB/s/core", "peak RSS MiB", "stage RSS MiB", "result"]
    console.print(table(f"Text stages, one process and one core each ({machine()})", cols, stage_rows(results)))
    if len(results) > 1:
        cols, rows = ratio_rows(results)
        console.print(table("Scaling within this run (linear time: CPU/doc ratio 1.0; flat memory: RSS ratio 1.0)", cols, rows))
    cols = ["MinHash run", "scale", "partitions", "documents MiB (compressed)", *(f"{s} MiB" for s in NEAR_STEPS), "files",
            "MiB written", "files by folder"]
    console.print(table("MinHash dedup: the highest peak RSS of one unit per step (its growth over the RSS it started with); "
                        "intermediate files", cols, near_rows(results)))
    if args.datatrove:
        rows, notes = datatrove_rows(results)
        cols = ["scale", "MinHash dedup (CPU s per step)", "documents", "wall s", "CPU s", "docs/s/core", "datatrove CPU / this",
                "peak RSS MiB", "removed"]
        console.print(table("MinHash dedup on the same documents, one worker: massiveds vs datatrove", cols, rows))
        for note in notes:
            console.print(note)
    else:
        console.print("datatrove: not run (pass --datatrove with the python of a venv that has it; see the module doc)")
    console.print(f"load average (1/5/15 min) before: {load[0]}, after: {load[1]}; date {dt.date.today()}")
    datatrove = f" --datatrove {args.datatrove} --datatrove-scales {','.join(map(str, args.datatrove_scales))}" if args.datatrove else ""
    console.print(f"reproduce: python bench/text_stages.py --sources {args.sources} --scales {','.join(map(str, results))} "
                  f"--rate {args.rate} "
                  f"--partition-mb {args.partition_bytes / 2**20:g} --small-partition-mb {args.small_partition_mb:g}{datatrove}")


def main() -> None:
    """Parse the arguments; run one stage (``--stage``, the child) or the whole benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,4,16", help="comma-separated copies of the data")
    parser.add_argument("--sources", default=",".join(SOURCES), help="which shared files (default: all 8)")
    parser.add_argument("--rate", type=float, default=0.3, help="fraction of the vocabulary each copy enciphers")
    parser.add_argument("--work", type=Path, default=Path("/tmp/massiveds-textbench"), help="scratch folder (copies are reused)")
    parser.add_argument("--partition-mb", type=float, default=NEAR_PARTITION_BYTES / 2**20,
                        help="compressed documents per near-dedup partition (the build's default: 64)")
    parser.add_argument("--small-partition-mb", type=float, default=4,
                        help="also run the minhash stage with partitions this small (0: don't): memory when partitions grow with the data")
    parser.add_argument("--datatrove", help="python of a venv with datatrove: also run its MinHash dedup")
    parser.add_argument("--datatrove-scales", default="1,4", help="scales to run datatrove at (its signatures take ~15 CPU ms a document)")
    parser.add_argument("--report-only", action="store_true", help="print the tables of the last run in --work again")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--partition-bytes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--verify", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.manifest, args.build, args.partition_bytes, args.verify), default=int))
        return
    args.partition_bytes = int(args.partition_mb * 2**20)
    scales = [int(s) for s in args.scales.split(",")]
    args.datatrove_scales = [int(s) for s in args.datatrove_scales.split(",")]
    if args.datatrove and not Path(args.datatrove).is_file():
        raise SystemExit(f"--datatrove {args.datatrove}: no such python")
    if args.report_only:
        saved = json.loads((args.work / "results.json").read_text())
        report(args, {int(k): v for k, v in saved["results"].items()}, (saved["load_before"], saved.get("load_after", "?")))
        return
    load_before = load_average()
    results: dict[int, dict[str, Any]] = {}
    for scale in scales:
        results[scale] = bench_scale(args, scale)
        saved = {"load_before": load_before, "load_after": load_average(), "results": results}
        (args.work / "results.json").write_text(json.dumps(saved, indent=1))
    report(args, results, (load_before, load_average()))


if __name__ == "__main__":
    main()
