"""The embed stage vs a bare ``model.encode`` loop on the same passages, same model, same run.

    python bench/embed.py [--manifest manifests/examples/jargon.yaml]

The stage's rate counts everything the build does (Ray actor start, model load, reading passages,
writing fp16 parts); the bare loop is reported with and without its model load. Target: ≥ 0.9×.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _common import EXAMPLE, build, machine
from rich.console import Console

from massiveds.embed import Embedder
from massiveds.passages import PassageFile
from massiveds.report import table


def main() -> None:
    """Build once (the stage), then time the bare loop on the passages the build made."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=EXAMPLE)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ds"
        _, catalog = build(args.manifest, out)
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
    print(f"command: python bench/embed.py --manifest {args.manifest}")


if __name__ == "__main__":
    main()
