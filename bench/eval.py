"""What a scaling curve costs with ``massiveds eval`` against searching each fraction and seed separately.

    python bench/eval.py --work /tmp/hybrid-work [--fractions 0.01,0.05,0.1,0.25,0.5,1.0] [--seeds 0,1,2] [--queries 200]

Uses the datastore ``bench/hybrid.py --work DIR`` builds (real qa_forum, web_html and wiki text, BM25 on)
and its QA sets (each query with its gold document). In one
process, the same queries (embedded once beforehand: every side gets the vectors for free):

* references: one search of the queries (``k = max k``, no fraction), and one at the smallest fraction (which
  needs the deepest candidate list of the sweep);
* ``massiveds eval``'s sweep over every fraction × seed (``evaluate``: one search, fractions as filters);
* the loop a user writes today: one ``search --fraction f --seed s`` per fraction and seed.

Prints wall seconds and the ratios to the reference, per mode. Not run by CI except at a tiny size
(tests/test_bench_smoke.py).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import load_average, machine
from hybrid import qa_sets
from rich.console import Console

from massiveds.core.report import table
from massiveds.evaluate.evalset import EvalFields, read_eval_set
from massiveds.evaluate.experiment import EvalPlan, evaluate
from massiveds.store.datastore import Datastore
from massiveds.store.search import SearchOptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="the folder of a bench/hybrid.py --work run (its datastore)")
    parser.add_argument("--fractions", default="0.01,0.05,0.1,0.25,0.5,1.0")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--queries", type=int, default=200, help="queries per QA slice")
    parser.add_argument("--modes", default="dense,hybrid")
    args = parser.parse_args()
    console = Console(width=200)
    if not (args.work / "ds" / "datastore.json").is_file():
        raise SystemExit(f"no datastore in {args.work}/ds: build it first with python bench/hybrid.py --work {args.work}")
    ds = Datastore.open(args.work / "ds")
    items = [{"question": q, "doc": doc} for qa in qa_sets(ds, args.queries, 0).values() for q, _, doc in qa]
    path = Path(tempfile.mkdtemp(prefix="massiveds-eval-")) / "qa.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    fields = EvalFields(answers=None, gold_doc="doc")
    eval_set = read_eval_set(str(path), fields)
    queries = [i.query for i in eval_set.items]
    fractions = tuple(float(f) for f in args.fractions.split(","))
    seeds = tuple(int(s) for s in args.seeds.split(","))
    ks = (1, 10, 100)
    vectors, row = ds.embedder.encode_queries(queries), {q: i for i, q in enumerate(queries)}
    ds.embedder.encode_queries = lambda texts: vectors[[row[t] for t in texts]]  # type: ignore[method-assign]
    console.print(f"{ds.num_passages:,} passages, {len(queries)} queries, {len(fractions)} fractions × {len(seeds)} seeds, k ≤ {max(ks)} "
                  f"({machine()}; load {load_average()})")
    rows = []
    for mode in args.modes.split(","):
        ds.search_batch(queries[:8], SearchOptions.create(k=max(ks), mode=mode))  # warm: indexes opened, files cached
        clock = time.perf_counter()
        ds.search_batch(queries, SearchOptions.create(k=max(ks), mode=mode))
        single = time.perf_counter() - clock
        clock = time.perf_counter()
        ds.search_batch(queries, SearchOptions.create(k=max(ks), mode=mode, fraction=min(fractions), seed=seeds[0]))
        deepest = time.perf_counter() - clock
        clock = time.perf_counter()
        report = evaluate([("ds", ds)], [eval_set], EvalPlan(ks=ks, fractions=fractions, seeds=seeds, options={"mode": mode}), fields)
        sweep = time.perf_counter() - clock
        clock = time.perf_counter()
        for fraction in fractions:
            for seed in seeds:
                ds.search_batch(queries, SearchOptions.create(k=max(ks), mode=mode, fraction=fraction, seed=seed))
        loop = time.perf_counter() - clock
        low = next(p for p in report.points if p.fraction == min(fractions))
        rows.append((mode, f"{single:.2f}", f"{deepest:.2f}", f"{sweep:.2f}", f"{sweep / single:.2f}", f"{sweep / deepest:.2f}",
                     f"{loop:.2f}", f"{loop / single:.2f}",
                     f"{low.metrics['doc@10'].mean:.3f}", f"{report.points[-1].metrics['doc@10'].mean:.3f}"))
    console.print(table(f"a scaling curve: {len(fractions)} fractions × {len(seeds)} seeds (load {load_average()})",
                        ["mode", "one search s", f"one at {min(fractions):g} s", "eval sweep s", "sweep / search",
                         f"sweep / one at {min(fractions):g}", "search per fraction×seed s", "loop / search",
                         f"doc@10 at {min(fractions):g}", "doc@10 at 1"], rows))


if __name__ == "__main__":
    main()
