"""Dense vs BM25 vs hybrid retrieval on one datastore of real text: recall per slice, the alpha chosen, BM25 cost and latency.

    python bench/hybrid.py [--sources qa_forum,web_html,wiki] [--queries 400] [--seed 0] [--model all-MiniLM-L6-v2]
                           [--work DIR] [--engine ray]

Builds the named files of ``../shared/data/jsonl`` with the example's filters and chunking and the BM25
index on, then asks QA sets made from the same shared text, each query with its gold document:

* ``faq``: a perlfaq question (the row's title, which the passages do not hold) -> the row that answers it;
* ``news``: a sentence of 10+ words of a news page's ``gold_text``, a quarter of its words dropped -> that page
  (few: the shared news pages are few);
* ``python-docs``: the same from a passage of a Python documentation page -> that page;
* ``wiki``: the same from a wiki row's text -> that row.

The queries are split in two halves (seeded). ``alpha`` is chosen on the first (the grid 0, 0.1, ..., 1,
best mean recall@10 over the slices) and every figure is reported on the second, which nothing was
tuned on. A hit counts when it is a passage of the gold document (recall@k = share of queries with one
in the top k). Also: BM25 build cost next to the embed stage's (the build's stage seconds), a bare
bm25s index of the same passages against ``massiveds.encode.sparse``'s three passes in this process
(passages/s and bytes), and search latency per mode. Not run by CI except at a tiny size
(tests/test_bench_smoke.py).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from _common import EXAMPLE, build, load_average, machine, shared_rows
from rich.console import Console
from text_stages import make_inputs

from massiveds.core.manifest import Sparse
from massiveds.core.report import table
from massiveds.encode.sparse import CorpusStats, CountFiles, count_shard, index_shard, sum_partition, tokenizer
from massiveds.store.datastore import Datastore

ALPHAS = [round(a, 1) for a in np.linspace(0, 1, 11)]
MODES = {"dense": {"mode": "dense"}, "sparse": {"mode": "sparse"}, "hybrid": {"mode": "hybrid"},
         "hybrid rrf": {"mode": "hybrid", "fusion": "rrf"}}


def sentence_query(text: str, rng: np.random.Generator, drop: float = 0.25) -> str | None:
    """A sentence of 10+ words of ``text`` with ``drop`` of its words left out, or None when there is none."""
    sentences = [s.split() for s in re.split(r"(?<=[.!?])\s+", text) if 10 <= len(s.split()) <= 60]
    if not sentences:
        return None
    words = sentences[int(rng.integers(len(sentences)))]
    keep = rng.random(len(words)) >= drop
    return " ".join(w for w, k in zip(words, keep, strict=True) if k)


def qa_sets(ds: Datastore, n: int, seed: int) -> dict[str, list[tuple[str, str, str]]]:
    """Per slice: (query, gold source, gold doc_id) of documents the datastore kept."""
    passages = [p for s in ds.shards for p in s.passages.read_all().select(["source", "doc_id", "text"]).to_pylist()]
    kept = {(p["source"], p["doc_id"]) for p in passages}
    rng = np.random.default_rng(seed)
    out: dict[str, list[tuple[str, str, str]]] = {"faq": [], "news": [], "python-docs": [], "wiki": []}
    for row in shared_rows("qa_forum"):
        if row["source"] == "perlfaq" and ("qa_forum", str(row["id"])) in kept and row["title"].rstrip().endswith("?"):
            out["faq"].append((row["title"], "qa_forum", str(row["id"])))
    news = set()
    for row in shared_rows("web_html"):
        if row.get("gold_text"):
            news.add(str(row["id"]))
            if ("web_html", str(row["id"])) in kept and (q := sentence_query(row["gold_text"], rng)):
                out["news"].append((q, "web_html", str(row["id"])))
    for p in passages:
        if p["source"] == "web_html" and p["doc_id"] not in news and (q := sentence_query(p["text"], rng)):
            out["python-docs"].append((q, "web_html", p["doc_id"]))
    for row in shared_rows("wiki"):
        if ("wiki", str(row["id"])) in kept and (q := sentence_query(row["text"], rng)):
            out["wiki"].append((q, "wiki", str(row["id"])))
    return {name: [items[i] for i in rng.permutation(len(items))[:n]] for name, items in out.items() if items}


def recalls(ds: Datastore, qa: list[tuple[str, str, str]], ks: tuple[int, ...], **options: Any) -> dict[int, float]:
    """recall@k of the gold document for each k of ``ks``."""
    hits = ds.search([q for q, _, _ in qa], k=max(ks), **options)
    found = [[(h["source"], h["doc_id"]) for h in row] for row in hits]
    return {k: float(np.mean([(src, doc) in f[:k] for f, (_, src, doc) in zip(found, qa, strict=True)])) for k in ks}


def choose_alpha(ds: Datastore, tuning: dict[str, list[tuple[str, str, str]]]) -> tuple[float, dict[float, float]]:
    """The alpha of the grid with the best mean recall@10 over the slices of ``tuning`` (ties: the one nearest 0.5)."""
    score = {a: float(np.mean([recalls(ds, qa, (10,), alpha=a)[10] for qa in tuning.values()])) for a in ALPHAS}  # slices weigh alike
    best = max(score.values())
    return min((a for a, s in score.items() if s == best), key=lambda a: abs(a - 0.5)), score


def bare_vs_ours(ds: Datastore, work: Path) -> list[tuple[str, float, float]]:
    """(what, passages/s, bytes/passage) of a bare bm25s index and of our three passes, same passages, this process."""
    import bm25s

    spec = ds.catalog.sparse
    assert spec is not None
    texts = [t for s in ds.shards for t in s.passages.column("text")]
    clock = time.perf_counter()
    bare = bm25s.BM25(k1=spec.k1, b=spec.b, method="lucene")
    bare.index(tokenizer(spec.tokenizer).tokenize(texts, return_as="tuple", show_progress=False), show_progress=False)
    bare.save(str(work / "bare"))
    bare_s = time.perf_counter() - clock
    bare_bytes = sum(p.stat().st_size for p in (work / "bare").iterdir())
    clock = time.perf_counter()
    files = CountFiles(work / "count")
    counts = count_shard([texts[i : i + 1024] for i in range(0, len(texts), 1024)], spec.tokenizer, files, 1)
    terms = sum_partition([files.vocab], 1, 0, work / "df.parquet")
    assert terms == counts.terms
    (work / "ours").mkdir()
    settings = Sparse(enabled=True, k1=spec.k1, b=spec.b, tokenizer=spec.tokenizer)
    ours_bytes = index_shard(files, [work / "df.parquet"], CorpusStats.of([counts]), settings, work / "ours")
    ours_s = time.perf_counter() - clock
    n = len(texts)
    return [("bare bm25s (tokenize + index + save)", n / bare_s, bare_bytes / n),
            ("massiveds (count + sum + index)", n / ours_s, ours_bytes / n),
            ("massiveds / bare", bare_s / ours_s, ours_bytes / bare_bytes)]


def latency(ds: Datastore, queries: list[str]) -> list[tuple[str, float, float]]:
    """(mode, single-query p50 ms, batched queries/s) over ``queries``."""
    out = []
    for name, options in MODES.items():
        ds.search(queries[0], k=10, **options)
        single = []
        for q in queries[:50]:
            clock = time.perf_counter()
            ds.search(q, k=10, **options)
            single.append((time.perf_counter() - clock) * 1000)
        clock = time.perf_counter()
        ds.search(queries, k=10, **options)
        out.append((name, float(np.percentile(single, 50)), len(queries) / (time.perf_counter() - clock)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", default="qa_forum,web_html,wiki")
    parser.add_argument("--queries", type=int, default=400, help="queries per slice, before the split in halves")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--work", type=Path, help="build here and keep it (a datastore there is reused); default: a temporary folder")
    parser.add_argument("--engine", default="ray", choices=["ray", "local"], help="the build's engine")
    args = parser.parse_args()
    example = yaml.safe_load(EXAMPLE.read_text())
    console = Console(width=200)
    work = args.work or Path(tempfile.mkdtemp(prefix="massiveds-hybrid-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        settings = {"filters": example["filters"], "chunk": example["chunk"], "embed": {"model": args.model}, "sparse": {"enabled": True},
                    "shards": {"target_passages": 4096}}
        if (work / "ds" / "datastore.json").is_file():
            seconds, catalog = 0.0, json.loads((work / "ds" / "datastore.json").read_text())
        else:
            manifest, _, _ = make_inputs(work, 1, 0.0, args.sources.split(","), settings)
            seconds, catalog = build(manifest, work / "ds", "--engine", args.engine)
        ds = Datastore.open(work / "ds")
        stage = catalog["build"]["stage_seconds"]
        n = ds.num_passages
        console.print(f"built {n:,} passages of {args.sources} with {args.model} in {seconds:.0f} s ({machine()}; load {load_average()})")
        sets = qa_sets(ds, args.queries, args.seed)
        tuning = {name: qa[: len(qa) // 2] for name, qa in sets.items()}
        held = {name: qa[len(qa) // 2 :] for name, qa in sets.items()}
        alpha, grid = choose_alpha(ds, tuning)
        console.print(table(f"mean recall@10 over the slices on the tuning half, by alpha: chosen {alpha}", ["alpha", "recall@10"],
                            [(f"{a:.1f}", f"{s:.3f}") for a, s in grid.items()]))
        result = []
        for name, qa in held.items():
            for mode, options in MODES.items():
                r = recalls(ds, qa, (10, 100), **(options | ({"alpha": alpha} if mode.startswith("hybrid") else {})))
                result.append((name, len(qa), mode, f"{r[10]:.3f}", f"{r[100]:.3f}"))
        console.print(table(f"recall of the gold document on the held-out half (hybrid alpha {alpha})",
                            ["slice", "queries", "mode", "recall@10", "recall@100"], result))
        console.print(table(f"BM25 build cost next to the embed stage (the build, engine {args.engine}; {machine()})",
                            ["stage", "seconds", "ms/passage"],
                            [(s, f"{stage[s]:.1f}", f"{stage[s] / n * 1000:.3f}") for s in ("sparse", "embed")]))
        console.print(table("BM25 index of the same passages in this process", ["index", "passages/s", "bytes/passage"],
                            [(w, f"{r:,.2f}" if "/" in w else f"{r:,.0f}", f"{b:.3f}" if "/" in w else f"{b:,.0f}")
                             for w, r, b in bare_vs_ours(ds, work)]))
        queries = [q for qa in held.values() for q, _, _ in qa][:200]
        console.print(table("search latency (k 10)", ["mode", "p50 ms (single)", "queries/s (batch)"],
                            [(m, f"{p:.1f}", f"{q:,.1f}") for m, p, q in latency(ds, queries)]))
        console.print(f"command: python bench/hybrid.py --sources {args.sources} --queries {args.queries} --seed {args.seed} "
                      f"--model {args.model} --engine {args.engine}; load after {load_average()}")
    finally:
        for scratch in ("bare", "ours", "count", "df.parquet"):
            shutil.rmtree(work / scratch, ignore_errors=True) if (work / scratch).is_dir() else (work / scratch).unlink(missing_ok=True)
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
