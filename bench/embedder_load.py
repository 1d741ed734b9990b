"""A static model in a fresh process: what loading it costs, then how fast it embeds, NumPy vs sentence-transformers.

    python bench/embedder_load.py [--model DIR] [--repeats 5] [--passages 2000]

``numpy``: massiveds's ``Embedder`` on a local static folder (tokenizers and NumPy, ``massiveds/encode/static.py``),
as every embedding worker, ``serve`` and ``search`` of a static datastore now load it; ``sentence-transformers``:
the same folder loaded by sentence-transformers (torch and transformers imported), as they loaded it before. Each
repeat runs both, alternated, each in a fresh ``python -c`` on 2 threads; the table has every run's seconds (process
start to the query's vector), then its passages/s over ``--passages`` real passages (256-word windows of the shared
``wiki`` text, embedded once to warm up, then timed), its peak RSS, the medians, and sentence-transformers over numpy.
The two ways' vectors must agree.
Default model: the static model ``massiveds distill-embedder`` caches in ``.cache/`` (distilled first if missing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, load_average, machine, shared_rows
from rich.console import Console

from massiveds.core.report import table
from massiveds.encode.distill import cached_static

QUERY = "what does the Jargon File say a kludge is"
#: Each way's child: load the model, embed QUERY (the load's end), then embed the passages twice (warm, then timed).
CHILD = {
    "numpy": "from massiveds.encode.embed import Embedder\nm = Embedder({model!r})\nembed = lambda t: m.encode_passages(t)",
    "sentence-transformers": "from sentence_transformers import SentenceTransformer\n"
                             "m = SentenceTransformer({model!r}, device='cpu')\n"
                             "embed = lambda t: m.encode(t, batch_size=1024, normalize_embeddings=True)",
}
#: 2 threads for torch and for the tokenizer, as the embed stage gives a static model's worker on this machine
HEAD = ("import os, time\nSTART = time.time()\n"
        "os.environ.update(OMP_NUM_THREADS='2', RAYON_NUM_THREADS='2', TOKENIZERS_PARALLELISM='true')\n")
TAIL = """
import json, resource
v = embed([{query!r}])[0]
loaded = time.time() - START
texts = json.load(open({texts!r}))
embed(texts)
clock = time.perf_counter()
vectors = embed(texts)
rate = len(texts) / (time.perf_counter() - clock)
print(json.dumps([loaded, rate, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, [float(x) for x in vectors[:3, :4].ravel()]]))
"""


def passages(n: int) -> list[str]:
    """``n`` real passages: consecutive 256-word windows of the shared ``wiki`` text."""
    words = " ".join(row["text"] for row in shared_rows("wiki")).split()
    return [" ".join(words[i : i + 256]) for i in range(0, min(len(words), 256 * n), 256)]


def run(way: str, model: Path, texts: Path) -> tuple[float, float, float, list[float]]:
    """One fresh process of ``way``: (seconds to the query's vector, passages/s, peak RSS MiB, the first vectors' heads)."""
    code = HEAD + CHILD[way].format(model=str(model)) + TAIL.format(query=QUERY, texts=str(texts))
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True).stdout
    loaded, rate, rss, head = json.loads(out.strip().splitlines()[-1])
    return loaded, rate, rss, head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a local static model folder (default: the distilled one in .cache/)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--passages", type=int, default=2000, help="real passages each run embeds, timed")
    args = parser.parse_args()
    model = args.model or cached_static("all-MiniLM-L6-v2", REPO / ".cache")
    out = Console(width=160)
    out.print(f"{machine()}; load {load_average()}; model {model}")
    with tempfile.TemporaryDirectory() as tmp:
        texts = Path(tmp) / "passages.json"
        texts.write_text(json.dumps(passages(args.passages)))
        runs: dict[str, list[tuple[float, float, float, list[float]]]] = {way: [] for way in CHILD}
        for _ in range(args.repeats):
            for way in CHILD:
                runs[way].append(run(way, model, texts))
    heads = [r[3] for way in CHILD for r in runs[way]]
    if max(abs(a - b) for head in heads for a, b in zip(head, heads[0], strict=True)) > 1e-5:
        raise SystemExit(f"the two ways give different vectors: {heads[0]} vs {heads[-1]}")
    rows = [(way, i + 1, round(s, 2), round(rate), round(rss)) for way in CHILD for i, (s, rate, rss, _) in enumerate(runs[way])]
    out.print(table(f"each run, a fresh process: load and embed one query, then {args.passages:,} passages",
                    ["way", "run", "s to load", "passages/s", "peak RSS MiB"], rows))
    median = {way: [statistics.median(r[i] for r in runs[way]) for i in range(3)] for way in CHILD}
    base = median["numpy"]
    ratio = [(way, round(s, 2), round(rate), round(rss), round(s / base[0], 2), round(rate / base[1], 2), round(rss / base[2], 2))
             for way, (s, rate, rss) in median.items()]
    out.print(table("medians", ["way", "s to load", "passages/s", "peak RSS MiB", "load / numpy", "rate / numpy", "RSS / numpy"],
                    ratio))
    out.print(f"load at the end {load_average()}")


if __name__ == "__main__":
    main()
