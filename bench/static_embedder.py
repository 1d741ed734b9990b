"""A static embedder distilled from all-MiniLM-L6-v2 vs the transformer itself: throughput and retrieval quality, same passages.

    python bench/static_embedder.py [--sources qa_forum,wiki] [--queries 500] [--dims 256] [--documents N] [--index ivfpq]
                                    [--engine ray]

Builds the named files of ``../shared/data/jsonl`` twice with the example's filters and chunking and an
IVF-PQ index: once with all-MiniLM-L6-v2, once with the static model ``massiveds distill-embedder``
makes from it (cached in ``.cache/``). Throughput: each build's embed stage (passages/s, Ray actor pool;
one process with ``--engine local``) and a bare ``encode`` of the same passages in this process, static
over transformer. Quality: a QA set made from the passages (seeded): a sentence of 10+ words of a passage
with a quarter of its words dropped is the query, the passage its gold; recall@10 (gold among the top 10)
of each model by brute force over its stored vectors and through its built index (default nprobe, without
and with exact rerank). ``--documents N`` keeps the first N documents of each source, and ``--index auto``
builds a flat index where IVF-PQ has too few vectors to train (it needs 256): the smoke run of
``tests/test_bench_smoke.py``. Not run by CI otherwise.
"""

from __future__ import annotations

import argparse
import itertools
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
import zstandard
from _common import EXAMPLE, REPO, build, load_average, machine
from rich.console import Console
from text_stages import make_inputs

from massiveds.core.report import table
from massiveds.encode.distill import cached_static
from massiveds.encode.embed import Embedder
from massiveds.evaluate.recall import exact_topk
from massiveds.store.datastore import Datastore


def qa_set(ds: Datastore, n: int, seed: int, drop: float = 0.25) -> tuple[list[str], np.ndarray]:
    """(queries, gold passage ids): a sentence of 10+ words of each sampled passage with ``drop`` of its words left out."""
    rng = np.random.default_rng(seed)
    queries, gold = [], []
    for pid in rng.permutation(ds.num_passages):
        text = ds.passages([int(pid)])[0]["text"]
        sentences = [s.split() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 10]
        if not sentences:
            continue
        words = sentences[int(rng.integers(len(sentences)))]
        keep = rng.random(len(words)) >= drop
        queries.append(" ".join(w for w, k in zip(words, keep, strict=True) if k))
        gold.append(int(pid))
        if len(queries) == n:
            break
    return queries, np.asarray(gold, dtype=np.int64)


def keep_first(manifest: Path, documents: int) -> None:
    """Cut every input of ``manifest`` (the links ``make_inputs`` made) to its first ``documents`` rows."""
    for path in sorted((manifest.parent / "inputs").glob("*/*.jsonl.zst")):
        with zstandard.open(path, "rt", encoding="utf-8") as f:
            rows = list(itertools.islice(f, documents))
        path.unlink()
        with zstandard.open(path, "wt", encoding="utf-8") as f:
            f.writelines(rows)


def hit_rate(ids: np.ndarray, gold: np.ndarray) -> float:
    """Share of queries whose gold passage is among ``ids`` (one row per query)."""
    return float(np.mean([g in row for row, g in zip(ids, gold, strict=True)]))


def quality(ds: Datastore, queries: list[str], gold: np.ndarray, k: int = 10) -> dict[str, float]:
    """recall@k of the gold passage: brute force, the built index, the index with exact rerank."""
    q = ds.embedder.encode_queries(queries)
    _, exact_ids = exact_topk(ds, q, k)
    _, index_ids = ds.search_vectors(q, k=k)
    _, rerank_ids = ds.search_vectors(q, k=k, rerank="exact")
    return {"brute force": hit_rate(exact_ids, gold), "index": hit_rate(index_ids, gold), "index + rerank": hit_rate(rerank_ids, gold)}


def bare_rate(model: str, texts: list[str]) -> float:
    """Passages/s of a bare ``encode_passages`` call over ``texts`` in this process (model load not counted)."""
    embedder = Embedder(model, device="cpu")
    embedder.encode_passages(texts[:64])
    clock = time.perf_counter()
    embedder.encode_passages(texts)
    return len(texts) / (time.perf_counter() - clock)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", default="qa_forum,wiki")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--documents", type=int, help="only the first N documents of each source (default: all)")
    parser.add_argument("--index", default="ivfpq", choices=["ivfpq", "auto"],
                        help="index type (IVF-PQ needs at least 256 training vectors: auto for a few documents)")
    parser.add_argument("--engine", default="ray", choices=["ray", "local"], help="the builds' engine")
    args = parser.parse_args()
    static = cached_static("all-MiniLM-L6-v2", REPO / ".cache", args.dims)
    example = yaml.safe_load(EXAMPLE.read_text())
    rows, quality_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        stores = {}
        for name, model in (("all-MiniLM-L6-v2", "all-MiniLM-L6-v2"), (f"static (distilled, {args.dims} d)", str(static))):
            settings = {"filters": example["filters"], "chunk": example["chunk"], "embed": {"model": model},
                        "index": {"type": args.index}, "shards": {"target_passages": 4096}}
            manifest, _, _ = make_inputs(Path(tmp) / name.split()[0], 1, 0.0, args.sources.split(","), settings)
            if args.documents:
                keep_first(manifest, args.documents)
            out = Path(tmp) / f"ds-{name.split()[0]}"
            seconds, catalog = build(manifest, out, "--engine", args.engine)
            stores[name] = (Datastore.open(out), model, catalog)
            print(f"built {name}: {seconds:.0f} s", flush=True)
        (first, _, _), *_ = stores.values()
        queries, gold = qa_set(first, args.queries, args.seed)
        texts = [p["text"] for p in first.passages(list(range(min(first.num_passages, 2000))))]
        for name, (ds, model, catalog) in stores.items():
            assert ds.num_passages == first.num_passages  # same passages, same ids: only the embedder differs
            b = catalog["build"]
            rate = bare_rate(model, texts)
            rows.append((name, catalog["embedder"]["dim"], round(b["embed_passages_per_s"], 1), round(b["embed_tokens_per_s"]),
                         round(rate, 1)))
            quality_rows.append((name, catalog["index"]["factory"], *(f"{v:.3f}" for v in quality(ds, queries, gold).values())))
    ratio = [f"{rows[1][i] / rows[0][i]:.1f}x" for i in (2, 3, 4)]
    rows.append(("static / transformer", "", *ratio))
    console = Console(width=180)
    console.print(table(f"throughput on {first.num_passages:,} passages of {args.sources} ({machine()}; load {load_average()})",
                        ["model", "dim", f"embed stage passages/s ({args.engine})", "tokens/s",
                         f"bare encode of {len(texts):,} passages/s"], rows))
    console.print(table(f"recall@10 of the gold passage, {len(queries)} queries (a sentence, 25 % of its words dropped)",
                        ["model", "index", "brute force", "index", "index + rerank"], quality_rows))
    print(f"command: python bench/static_embedder.py --sources {args.sources} --queries {args.queries} --dims {args.dims}"
          + (f" --documents {args.documents}" if args.documents else "") + f" --index {args.index} --engine {args.engine}")


if __name__ == "__main__":
    main()
