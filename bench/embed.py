"""The embed stage vs a bare ``model.encode`` loop on the same passages, same model, same run.

    python bench/embed.py [--manifest manifests/examples/jargon.yaml | --sources biomed,wiki,qa_forum] [--keep DIR]

The stage's rate counts everything the build does (Ray actor start, model load, reading passages,
writing fp16 parts); the bare loop is reported with and without its model load. Target: ≥ 0.9×.
The stage's fixed costs (actor start, model load) weigh less as the build grows: ``--sources`` builds
the named files of ``../shared/data/jsonl`` instead, with the example's chunking and embedder (~10,000
passages for biomed,wiki,qa_forum). ``--keep DIR`` keeps the datastore, whose stored vectors are real text
embeddings for ``bench/index.py --real DIR``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml
from _common import EXAMPLE, build, machine
from rich.console import Console
from text_stages import make_inputs

from massiveds.embed import Embedder
from massiveds.passages import PassageFile
from massiveds.report import table


def main() -> None:
    """Build once (the stage), then time the bare loop on the passages the build made."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=EXAMPLE)
    parser.add_argument("--sources", help="comma-separated files of ../shared/data/jsonl to build instead of --manifest")
    parser.add_argument("--keep", type=Path, help="keep the built datastore here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = args.manifest
        if args.sources:
            example = yaml.safe_load(EXAMPLE.read_text())
            settings = {k: example[k] for k in ("filters", "chunk", "embed")} | {"shards": {"target_passages": 4096}}
            manifest, _, _ = make_inputs(Path(tmp), 1, 0.0, args.sources.split(","), settings)
        out = args.keep or Path(tmp) / "ds"
        shutil.rmtree(out, ignore_errors=True)
        _, catalog = build(manifest, out)
        texts = [t for s in catalog["shards"] for t in PassageFile(out / "shards" / s["name"] / "passages.arrow").column("text")]
        stage_seconds = catalog["build"]["stage_seconds"]["embed"]
        info = catalog["embedder"]
        start = time.perf_counter()
        model = Embedder(info["model"], device="auto", normalize=info["normalize"], max_length=info["max_length"],
                         batch_size=catalog["manifests"][0]["content"]["embed"]["batch_size"])
        loaded = time.perf_counter()
        model.encode_passages(texts)
        done = time.perf_counter()
    n = len(texts)
    stage_rate, bare_rate, bare_load_rate = n / stage_seconds, n / (done - loaded), n / (done - start)
    t = table(f"embedding {n:,} passages with {info['model']} ({machine()})", ["what", "seconds", "passages/s", "stage / this"], [
        ("embed stage (Ray, actor pool)", stage_seconds, stage_rate, "1.00"),
        ("bare model.encode", done - loaded, bare_rate, f"{stage_rate / bare_rate:.2f}"),
        ("bare model load + encode", done - start, bare_load_rate, f"{stage_rate / bare_load_rate:.2f}"),
    ])
    Console().print(t)
    print(f"command: python bench/embed.py {f'--sources {args.sources}' if args.sources else f'--manifest {args.manifest}'}")


if __name__ == "__main__":
    main()
