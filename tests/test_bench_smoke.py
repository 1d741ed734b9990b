"""Every script of ``bench/`` run at a tiny size, in a fresh process as a user runs it: a change that breaks a benchmark fails here.

Issue 26, point 7: ``bench/scale.py`` broke when the server's ``start_server`` changed, and nothing ran it. Each test runs one
script for seconds (static embedder distilled once by the ``static_model`` fixture, a few hundred passages or vectors) and
checks its exit status and what it reports: its tables' rows or the JSON it writes, with numbers in their ranges. The
helpers ``bench/_common.py`` and ``bench/vectorstore.py`` run through the scripts; ``bench/_datatrove_minhash.py`` runs only
under datatrove's own venv (``bench/text_stages.py --datatrove``), which CI does not have.

Covered elsewhere, not here: ``bench/text_stages.py`` (tests/test_bench_text_stages.py) and ``bench/scale_corpus.py``
(tests/test_scale_corpus.py; ``bench/scale.py`` below also runs it as a script).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_small_manifest
from tests.helpers import REPO, shared

pytestmark = pytest.mark.slow  # 16 scripts, six of them building a datastore: about 4 minutes on the shared 2-core machine

ENV = os.environ | {"HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "250"}


def bench(script: str, *args: str | Path, timeout: int = 300) -> str:
    """Run ``bench/<script>.py ARGS`` from the repository root; its stdout (the test fails with its output unless it exits 0)."""
    cmd = [sys.executable, f"bench/{script}.py", *map(str, args)]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout


def tables(output: str) -> list[list[dict[str, str]]]:
    """The rich tables of ``output``, each as its rows (header name -> cell text)."""
    found: list[list[dict[str, str]]] = []
    header: list[str] | None = None
    for line in output.splitlines():
        if line.startswith("┃"):
            header = [c.strip() for c in line.strip().strip("┃").split("┃")]
            found.append([])
        elif line.startswith("│") and header is not None:
            found[-1].append(dict(zip(header, (c.strip() for c in line.strip().strip("│").split("│")), strict=True)))
        elif line.startswith("└"):
            header = None
    return found


def table(output: str, *columns: str) -> list[dict[str, str]]:
    """The rows of the one table of ``output`` that has all ``columns``."""
    matches = [rows for rows in tables(output) if rows and set(columns) <= set(rows[0])]
    assert len(matches) == 1, f"{len(matches)} tables with columns {columns} in:\n{output[-4000:]}"
    return matches[0]


def number(cell: str) -> float:
    """A table cell as a number (thousands separators and a trailing ``x`` dropped)."""
    return float(cell.replace(",", "").rstrip("x"))


def fraction(cell: str) -> float:
    """A cell that must hold a share in [0, 1]."""
    value = number(cell)
    assert 0.0 <= value <= 1.0, cell
    return value


@pytest.fixture(scope="module")
def small_static_manifest(tmp_path_factory: pytest.TempPathFactory, static_model: Path) -> Path:
    """Two files of the shipped example (~300 passages) embedded by the static model."""
    manifest = write_small_manifest(tmp_path_factory.mktemp("bench-small"))
    manifest.write_text(manifest.read_text() + f"embed: {{model: {static_model}}}\n")
    return manifest


@pytest.fixture(scope="module")
def hybrid_run(tmp_path_factory: pytest.TempPathFactory, static_model: Path) -> tuple[Path, str]:
    """``bench/hybrid.py --work DIR`` on qa_forum (~1,300 passages, BM25 on): DIR, the datastore eval, living and serve_load use,
    and its output."""
    shared("jsonl", "qa_forum.jsonl.zst")
    work = tmp_path_factory.mktemp("bench-hybrid")
    output = bench("hybrid", "--sources", "qa_forum", "--queries", "20", "--model", static_model, "--engine", "local", "--work", work)
    return work, output


def test_hybrid(hybrid_run: tuple[Path, str]) -> None:
    _, output = hybrid_run
    recall = table(output, "slice", "mode", "recall@10", "recall@100")
    assert {r["mode"] for r in recall} == {"dense", "sparse", "hybrid", "hybrid rrf"} and {r["slice"] for r in recall} == {"faq"}
    for r in recall:
        assert fraction(r["recall@10"]) <= fraction(r["recall@100"]) and number(r["queries"]) == 10
    grid = table(output, "alpha", "recall@10")
    assert len(grid) == 11 and all(fraction(r["recall@10"]) >= 0 for r in grid)  # alpha 0, 0.1, ..., 1
    cost = {r["stage"]: number(r["seconds"]) for r in table(output, "stage", "seconds", "ms/passage")}
    assert cost["embed"] > 0 and cost["sparse"] > 0
    bm25 = table(output, "index", "passages/s", "bytes/passage")
    assert all(number(r["passages/s"]) > 0 and number(r["bytes/passage"]) > 0 for r in bm25)
    latency = table(output, "mode", "p50 ms (single)", "queries/s (batch)")
    assert len(latency) == 4 and all(number(r["p50 ms (single)"]) > 0 and number(r["queries/s (batch)"]) > 0 for r in latency)


def test_eval(hybrid_run: tuple[Path, str]) -> None:
    work, _ = hybrid_run
    output = bench("eval", "--work", work, "--fractions", "0.25,1.0", "--seeds", "0,1", "--queries", "20")
    rows = table(output, "mode", "one search s", "eval sweep s")
    assert [r["mode"] for r in rows] == ["dense", "hybrid"]
    for r in rows:
        assert number(r["one search s"]) > 0 and number(r["eval sweep s"]) > 0 and number(r["search per fraction×seed s"]) > 0
        assert fraction(r["doc@10 at 0.25"]) >= 0 and fraction(r["doc@10 at 1"]) > 0


def test_rerank(hybrid_run: tuple[Path, str]) -> None:
    work, _ = hybrid_run
    output = bench("rerank", "--datastore", work / "ds", "--work", work / "rerank", "--depths", "5,20", "--queries", "4", "--pairs", "64")
    rows = table(output, "depth", "search ms", "with rerank ms", "added ms", "with / without")
    assert [r["depth"] for r in rows] == ["5", "20"] and all(number(r["with rerank ms"]) > 0 for r in rows)
    assert re.search(r"[\d,]+ pairs/s in one call of 64 pairs", output), output[-2000:]


def test_living(hybrid_run: tuple[Path, str]) -> None:
    work, _ = hybrid_run
    catalog = (work / "ds" / "datastore.json").read_bytes()
    output = bench("living", "--work", work, "--share", "0.05", "--queries", "20")
    built, deleted, compacted = table(output, "step", "seconds", "shard bytes", "dense queries/s", "hybrid queries/s")
    assert built["step"] == "built" and re.fullmatch(r"delete [\d,]+ documents \([\d,]+ passages\)", deleted["step"])
    assert compacted["step"].startswith("compact")
    assert number(deleted["seconds"]) > 0 and number(compacted["seconds"]) > 0
    assert number(compacted["shard bytes"]) < number(deleted["shard bytes"])  # compact drops the deleted passages' bytes
    assert all(number(r[f"{m} queries/s"]) > 0 for r in (built, deleted, compacted) for m in ("dense", "hybrid"))
    assert (work / "ds" / "datastore.json").read_bytes() == catalog  # it deletes from a copy


def test_serve_load(hybrid_run: tuple[Path, str]) -> None:
    work, _ = hybrid_run
    output = bench("serve_load", work / "ds", "--clients", "2", "--seconds", "1", "--servers", "asgi", "--sequential", "5")
    rows = table(output, "run", "requests", "errors", "QPS", "p50 ms")
    names = [r["run"] for r in rows]
    assert names == ["asgi: in-process Datastore.search", "asgi: 1 client, 1 query at a time", "asgi: 2 concurrent clients, 1 s",
                     "asgi: 1 request of 32 queries"]
    assert all(number(r["errors"]) == 0 and number(r["requests"]) > 0 and number(r["QPS"]) > 0 and number(r["p50 ms"]) > 0 for r in rows)
    summary = re.search(r"asgi: HTTP overhead.*?(\d+) requests in (\d+) search calls.*server errors (\d+)", output)
    assert summary and int(summary[1]) >= int(summary[2]) > 0 and summary[3] == "0", output[-2000:]


def test_append(tmp_path: Path, static_model: Path) -> None:
    shared("jsonl", "qa_forum.jsonl.zst")
    output = bench("append", "--sources", "qa_forum", "--index", "auto", "--engine", "local", "--model", static_model, "--work", tmp_path)
    rows = {r[""]: r["value"] for r in table(output, "", "value")}
    new, after = (number(v) for v in re.fullmatch(r"([\d,]+) / ([\d,]+) = [\d.]+", rows["new passages / passages after"]).groups())
    assert 0 < new < after == number(rows["rebuilt datastore passages"])  # append and rebuild keep the same passages
    assert all(number(rows[k]) > 0 for k in ("build base (s)", "append new to a copy (s)", "rebuild base + new (s)"))
    assert rows["existing shard files rewritten"] == "0"
    assert rows["existing files changed (not shards)"] == "datastore.json"
    assert all(fraction(v) for v in rows["recall@10 before / after the append"].split(" / "))
    stages = {r["stage"] for r in table(output, "stage", "append", "rebuild")}
    assert {"reference", "embed", "commit"} <= stages


def test_embed(small_static_manifest: Path) -> None:
    output = bench("embed", "--manifest", small_static_manifest, "--repeat", "1")
    rows = {r["what"]: r for r in table(output, "what", "seconds per run", "best (s)", "passages/s (best)")}
    assert set(rows) == {"embed stage (Ray, actor pool)", "its model calls alone", "bare model.encode", "bare model load + encode"}
    # a static model's calls on a few passages can print as 0.00 s: the rate, from the unrounded time, must still be there
    assert all(number(r["best (s)"]) >= 0 and number(r["passages/s (best)"]) > 0 for r in rows.values())
    assert number(rows["embed stage (Ray, actor pool)"]["stage / this (best)"]) == 1.0
    assert re.search(r"embedding [\d,]+ passages with \S*static", output)


def test_ray_overhead(small_static_manifest: Path) -> None:
    output = bench("ray_overhead", "--manifest", small_static_manifest)
    rows = {r["stage"]: r for r in table(output, "stage", "one process (s)", "Ray (s)", "Ray / one process")}
    assert {"extract", "chunk", "embed", "index", "all but embed", "whole command (wall)"} <= set(rows)
    wall = rows["whole command (wall)"]
    assert number(wall["one process (s)"]) > 0 and number(wall["Ray (s)"]) > 0 and number(wall["Ray / one process"]) > 0


def test_static_embedder() -> None:
    shared("jsonl", "qa_forum.jsonl.zst")
    output = bench("static_embedder", "--sources", "qa_forum", "--documents", "10", "--queries", "10", "--index", "auto",
                   "--engine", "local")
    speed = {r["model"]: r for r in table(output, "model", "dim", "tokens/s")}
    assert set(speed) == {"all-MiniLM-L6-v2", "static (distilled, 256 d)", "static / transformer"}
    assert speed["all-MiniLM-L6-v2"]["dim"] == "384" and speed["static (distilled, 256 d)"]["dim"] == "256"
    assert all(number(v) > 0 for r in speed.values() for k, v in r.items() if k not in ("model", "dim"))
    quality = table(output, "model", "index", "brute force", "index + rerank")
    assert len(quality) == 2 and all(fraction(r[k]) >= 0 for r in quality for k in ("brute force", "index", "index + rerank"))
    assert re.search(r"recall@10 of the gold passage, 10 queries", output)


def test_embedder_load(static_model: Path) -> None:
    shared("jsonl", "wiki.jsonl.zst")
    output = bench("embedder_load", "--model", static_model, "--repeats", "1", "--passages", "50")
    runs = table(output, "way", "run", "s to load", "passages/s")
    assert {r["way"] for r in runs} == {"numpy", "sentence-transformers"} and all(number(r["passages/s"]) > 0 for r in runs)
    medians = {r["way"]: r for r in table(output, "way", "load / numpy", "rate / numpy", "RSS / numpy")}
    assert number(medians["numpy"]["load / numpy"]) == 1 and number(medians["sentence-transformers"]["RSS / numpy"]) > 1


def test_minhash() -> None:
    shared("jsonl", "math.jsonl.zst")
    datasketch = importlib.util.find_spec("datasketch") is not None  # the [bench] extra; CI installs [dev] only
    output = bench("minhash", "--files", "math,stem_latex", "--copies", "0.2", "--repeat", "1",
                   *([] if datasketch else ["--without-datasketch"]))
    rows = [line.split("|")[1:-1] for line in output.splitlines() if re.match(r"\| (massiveds|datasketch) ", line)]
    assert len(rows) == (2 if datasketch else 1)
    for _, seconds, per_s, candidates, verified in rows:
        assert number(seconds) > 0 and number(per_s) > 0 and 0 < number(verified) <= number(candidates)
    found = re.search(r"massiveds: of the (\d+) candidate pairs .* verified ([\d.]+); precision of its verified pairs ([\d.]+)", output)
    assert found and int(found[1]) > 0 and fraction(found[2]) >= 0.9 and fraction(found[3]) >= 0.9, output  # the planted copies


def test_index(tmp_path: Path) -> None:
    output = bench("index", "--vectors", "4000", "--dim", "16", "--pq-m", "2", "--shards", "2", "--queries", "30", "--out", tmp_path / "ds")
    build = {r[""]: r for r in table(output, "", "massiveds", "plain FAISS", "ratio")}
    assert number(build["train + add (s)"]["massiveds"]) > 0 and number(build["index bytes / vector (files)"]["massiveds"]) > 0
    overlap = re.search(r"top-11 overlap of massiveds shards vs the plain index at nprobe \d+: ([\d.]+)", output)
    assert overlap and fraction(overlap[1]) >= 0.9  # the same factory, sample and vectors
    recall = table(output, "nprobe", "rerank", "recall@1", "recall@10", "recall@100", "queries/s")
    assert len(recall) == 8 and all(fraction(r[f"recall@{k}"]) >= 0 for r in recall for k in (1, 10, 100))
    default = [r for r in recall if "default" in r["nprobe"]]
    assert [r["rerank"] for r in default] == ["no", "exact (depth 400)"]
    assert fraction(default[1]["recall@10"]) >= fraction(default[0]["recall@10"]) and fraction(default[1]["recall@10"]) >= 0.9
    flat = table(output, "RAM", "bytes/vector", "recall@10", "queries/s")
    assert len(flat) == 3 and number(flat[0]["recall@10"]) == 1.0


def test_search(tmp_path: Path) -> None:
    output = bench("search", "--vectors", "4000", "--dim", "16", "--nlist", "32", "--pq-m", "2", "--train-sample", "2000",
                   "--shards", "1,2", "--queries", "30", "--out", tmp_path / "ds")
    rows = table(output, "shards", "merge s", "fan-out QPS", "merged QPS", "same ids")
    assert [r["shards"] for r in rows] == ["1", "2"]
    for r in rows:
        assert number(r["merge s"]) > 0 and number(r["fan-out QPS"]) > 0 and number(r["merged QPS"]) > 0
        assert fraction(r["same ids"]) >= 0.95  # the merged index holds the same lists: the same hits, but for ties


def test_train(tmp_path: Path) -> None:
    # --dim 8 (PQ2), not 32 (PQ8): FAISS's polysemous training, on for every IVF-PQ with 8-bit codes, costs ~1.5 s per
    # sub-quantizer here whatever the sample, and would take 40 s of this run's 50.
    out = tmp_path / "t.json"
    output = bench("train", "--lists", "64", "--dim", "8", "--kmeans-up-to", "64", "--queries", "20", "--out", out)
    rows = json.loads(out.read_text())["rows"]
    assert {(r["training"], r["threads"]) for r in rows} >= {("two-level", os.cpu_count()), ("kmeans", os.cpu_count())}
    for r in rows:
        assert r["lists"] == 64 and r["factory"].startswith("IVF64,") and r["seconds"] > 0 and 0.5 <= r["recall_at_10"] <= 1.0
    assert len(table(output, "lists", "training", "seconds", "recall@10")) == len(rows)


def test_scale(tmp_path: Path, static_model: Path) -> None:
    """The benchmark that rotted (issue 26): corpus, Ray build, search, ``serve`` under load, every operation, at 600 passages."""
    shared("jsonl", "qa_forum.jsonl.zst")
    output = bench("scale", "--passages", "600", "--work", tmp_path, "--serve-seconds", "1", "--domains", "qa_forum,stem_latex,wiki",
                   "--results", tmp_path / "results", "--append-passages", "200", timeout=600)
    r = json.loads((tmp_path / "scale-600.json").read_text())
    assert 300 <= r["passages"] <= 1200 and r["build_wall_s"] > 0 and r["domains"] == "qa_forum,stem_latex,wiki"
    assert {"extract", "dedup", "near_dedup", "chunk", "shard", "embed", "train", "index"} <= set(r["stages"])
    assert r["planted"]["precision"] == 1.0 and r["planted"]["recall"] == 1.0 and r["planted"]["planted"] > 0
    assert 0.9 <= r["recall"]["recall_at_10"] <= 1.0  # a flat index at this size
    assert r["search_by_mode"]["dense"]["p50_ms"] > 0 and r["search_by_mode"]["dense+rerank"]["batched_qps"] > 0
    assert r["append"]["documents"] > 0 and r["append"]["fraction_of_build"] > 0
    assert "read from their dedup index" in r["append"]["reference"]
    summary = json.loads((tmp_path / "results" / "scale-600.json").read_text())
    assert {"passages", "documents", "tokens", "wall_s", "max_process_rss_mib", "stages", "planted", "recall_at_10", "search",
            "append"} <= set(summary)
    assert summary["stages"]["embed"]["seconds"] > 0 and summary["stages"]["embed"]["max_rss_mib"] > 0
    markdown = bench("scale", "--tables", "--results", tmp_path / "results")
    assert f"| | {summary['passages']:,} |" in markdown and "| embed |" in markdown and "search dense+rerank" in markdown
    assert r["serve"]["errors"] == 0 and r["serve"]["qps"] > 0 and r["serve"]["clients"] == 16
    ops = r["operations"]
    assert all(ops[k] > 0 for k in ("subsample_0.1_s", "verify_s", "publish_s", "pull_s"))
    assert ops["merge_index_s"] is None  # a flat index has no inverted lists to merge
    assert r["disk_bytes_per_passage"]["vectors"] > 0 and r["embed"]["passages_per_s"] > 0
    assert "600 passages asked" in output
    bench("scale", "--passages", "600", "--work", tmp_path, "--domains", "qa_forum,stem_latex,wiki", "--results", tmp_path / "results",
          "--append-passages", "200", "--append-only", timeout=600)
    again = json.loads((tmp_path / "scale-600.json").read_text())
    assert again["append"]["measured"]["date"] and again["append"]["documents"] == r["append"]["documents"]
    kept = [{k: v for k, v in record.items() if k not in ("append", "load_end")} for record in (again, r)]
    assert kept[0] == kept[1]  # the rest of the record as measured before
