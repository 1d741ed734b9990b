"""The embed stage vs a bare ``model.encode`` loop on the same passages, same model, same run.

    python bench/embed.py [--manifest manifests/examples/jargon.yaml | --sources biomed,wiki,qa_forum] [--repeat 3] [--keep DIR]

The stage's rate counts everything the build does (Ray actor start, model load, reading passages,
writing fp16 parts); the bare loop is reported with and without its model load. Target: ≥ 0.9×.
The stage's own model time (``build.embed_model_busy``) splits the gap: pipeline (start, reads,
writes) vs the model running slower inside a Ray actor than in a plain process.
Builds and bare loops alternate ``--repeat`` times: on a shared machine one run of either can be 25 %
slower than the next, so the ratio is given on the best runs (noise only slows) and on the medians.
The stage's fixed costs (actor start, model load) weigh less as the build grows: ``--sources`` builds
the named files of ``../shared/data/jsonl`` instead, with the example's chunking and embedder (12,016
passages for biomed,wiki,qa_forum). ``--keep DIR`` keeps the datastore, whose stored vectors are real text
embeddings for ``bench/index.py --real DIR``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _common import EXAMPLE, build, load_average, machine
from rich.console import Console
from text_stages import make_inputs

from massiveds.core.passages import PassageFile
from massiveds.core.report import table
from massiveds.encode.embed import Embedder


def bare_encode(texts: list[str], info: dict[str, Any], batch_size: int | None) -> tuple[float, float]:
    """A bare loop on ``texts``: (seconds to load the model, seconds to encode them all in one call)."""
    start = time.perf_counter()
    model = Embedder(info["model"], device="auto", normalize=info["normalize"], max_length=info["max_length"], batch_size=batch_size)
    loaded = time.perf_counter()
    model.encode_passages(texts)
    return loaded - start, time.perf_counter() - loaded


def main() -> None:
    """Build (the stage) and run the bare loop on the passages the build made, in turn, ``--repeat`` times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=EXAMPLE)
    parser.add_argument("--sources", help="comma-separated files of ../shared/data/jsonl to build instead of --manifest")
    parser.add_argument("--repeat", type=int, default=3, help="builds and bare loops, alternated (a shared machine is noisy)")
    parser.add_argument("--keep", type=Path, help="keep the last built datastore here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    stage, stage_model, bare, bare_load = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        manifest = args.manifest
        if args.sources:
            example = yaml.safe_load(EXAMPLE.read_text())
            settings = {k: example[k] for k in ("filters", "chunk", "embed")} | {"shards": {"target_passages": 4096}}
            manifest, _, _ = make_inputs(Path(tmp), 1, 0.0, args.sources.split(","), settings)
        out = args.keep or Path(tmp) / "ds"
        for run in range(args.repeat):
            shutil.rmtree(out, ignore_errors=True)
            _, catalog = build(manifest, out)
            stage.append(catalog["build"]["stage_seconds"]["embed"])
            stage_model.append(stage[-1] * catalog["build"]["embed_model_busy"])
            texts = [t for s in catalog["shards"] for t in PassageFile(out / "shards" / s["name"] / "passages.arrow").column("text")]
            batch = catalog["manifests"][0]["content"]["embed"]["batch_size"]
            load_s, encode_s = bare_encode(texts, catalog["embedder"], None if batch == "auto" else batch)
            bare.append(encode_s)
            bare_load.append(load_s + encode_s)
            print(f"run {run + 1}: stage {stage[-1]:.1f} s, bare encode {encode_s:.1f} s (+ {load_s:.1f} s model load)", flush=True)
    n, info = len(texts), catalog["embedder"]

    def row(what: str, seconds: list[float]) -> tuple[Any, ...]:
        best, median = min(seconds), statistics.median(seconds)  # stage rate / this rate = this time / stage time
        return (what, " ".join(f"{s:.1f}" for s in seconds), round(best, 1), round(n / best, 1),
                f"{best / min(stage):.2f}", f"{median / statistics.median(stage):.2f}")

    title = f"embedding {n:,} passages with {info['model']}, {args.repeat} runs each ({machine()}; load average {load_average()})"
    Console().print(table(title, ["what", "seconds per run", "best (s)", "passages/s (best)", "stage / this (best)", "(median)"], [
        row("embed stage (Ray, actor pool)", stage),
        row("  its model calls alone", stage_model),
        row("bare model.encode", bare),
        row("bare model load + encode", bare_load),
    ]))
    what = f"--sources {args.sources}" if args.sources else f"--manifest {args.manifest}"
    print(f"command: python bench/embed.py {what} --repeat {args.repeat}")


if __name__ == "__main__":
    main()
