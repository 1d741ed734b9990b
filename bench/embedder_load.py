"""What a process pays to start embedding with a static model: load it and embed one query, in a fresh process.

    python bench/embedder_load.py [--model DIR] [--repeats 5]

``numpy``: massiveds's ``Embedder`` on a local static folder (tokenizers and NumPy, ``massiveds/encode/static.py``),
as every embedding worker, ``serve`` and ``search`` of a static datastore now load it; ``sentence-transformers``:
the same folder loaded by sentence-transformers (torch and transformers imported), as they loaded it before. Each
repeat runs both, alternated, each in a fresh ``python -c``; the table has every run's seconds (process start to
the query's vector) and peak RSS, the medians, and sentence-transformers over numpy. Both vectors must agree.
Default model: the static model ``massiveds distill-embedder`` caches in ``.cache/`` (distilled first if missing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from _common import REPO, load_average, machine
from rich.console import Console

from massiveds.core.report import table
from massiveds.encode.distill import cached_static

QUERY = "what does the Jargon File say a kludge is"
#: Each way's child: load, embed QUERY, print seconds since the process began, peak RSS (MiB) and the vector's head.
CHILD = {
    "numpy": "from massiveds.encode.embed import Embedder\nv = Embedder({model!r}).encode_queries([{query!r}])[0]",
    "sentence-transformers": "from sentence_transformers import SentenceTransformer\n"
                             "v = SentenceTransformer({model!r}, device='cpu').encode([{query!r}], normalize_embeddings=True)[0]",
}
TAIL = ("\nimport json, resource, time\n"
        "print(json.dumps([time.time() - START, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, [float(x) for x in v[:8]]]))")


def run(way: str, model: Path) -> tuple[float, float, list[float]]:
    """One fresh process of ``way``: (seconds, peak RSS MiB, the vector's first components)."""
    code = "import time\nSTART = time.time()\n" + CHILD[way].format(model=str(model), query=QUERY) + TAIL
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True).stdout
    seconds, rss, head = json.loads(out.strip().splitlines()[-1])
    return seconds, rss, head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a local static model folder (default: the distilled one in .cache/)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model = args.model or cached_static("all-MiniLM-L6-v2", REPO / ".cache")
    out = Console(width=160)
    out.print(f"{machine()}; load {load_average()}; model {model}")
    runs: dict[str, list[tuple[float, float, list[float]]]] = {way: [] for way in CHILD}
    for _ in range(args.repeats):
        for way in CHILD:
            runs[way].append(run(way, model))
    heads = [r[2] for way in CHILD for r in runs[way]]
    if max(abs(a - b) for head in heads for a, b in zip(head, heads[0], strict=True)) > 1e-5:
        raise SystemExit(f"the two ways give different vectors: {heads[0]} vs {heads[-1]}")
    rows = [(way, i + 1, round(s, 2), round(rss)) for way in CHILD for i, (s, rss, _) in enumerate(runs[way])]
    out.print(table("each run: load the model and embed one query in a fresh process", ["way", "run", "s", "peak RSS MiB"], rows))
    median = {way: (statistics.median(r[0] for r in runs[way]), statistics.median(r[1] for r in runs[way])) for way in CHILD}
    ratio = [(way, round(s, 2), round(rss), round(s / median["numpy"][0], 2), round(rss / median["numpy"][1], 2))
             for way, (s, rss) in median.items()]
    out.print(table("medians", ["way", "s", "peak RSS MiB", "s / numpy", "RSS / numpy"], ratio))
    out.print(f"load at the end {load_average()}")


if __name__ == "__main__":
    main()
