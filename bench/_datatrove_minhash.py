"""One step of datatrove's MinHash dedup on a folder of JSONL files, measured; run by ``bench/text_stages.py``.

Runs under datatrove's own Python (a separate venv), so it imports nothing of massiveds:

    /tmp/dt-venv/bin/python bench/_datatrove_minhash.py {signatures,buckets,cluster,filter} --input DIR --work DIR --files N

Parameters match the build's near-dedup defaults: word 5-grams, 14 buckets x 8 hashes (112), seed 1;
one worker, one task per input file (buckets: one per bucket; cluster: one). The last stdout line is
the JSON of ``_common.measured``. ``cluster`` saves cluster ids, so ``work/remove`` holds, per input
file rank, ``.remove`` (rows removed) and ``.clusters`` (row, cluster id of every clustered row).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import measured
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.readers import JsonlReader

CONFIG = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, seed=1)


def executor(step: str, inputs: Path, work: Path, files: int) -> LocalPipelineExecutor:
    """The pipeline of one step, as in datatrove's own MinHash example, on one worker."""
    pipelines = {
        "signatures": ([JsonlReader(str(inputs)), MinhashDedupSignature(output_folder=str(work / "signatures"), config=CONFIG)], files),
        "buckets": ([MinhashDedupBuckets(input_folder=str(work / "signatures"), output_folder=str(work / "buckets"), config=CONFIG)],
                    CONFIG.num_buckets),
        "cluster": ([MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove"), config=CONFIG,
                                         save_cluster_id=True)], 1),
        "filter": ([JsonlReader(str(inputs)), MinhashDedupFilter(input_folder=str(work / "remove"))], files),
    }
    pipeline, tasks = pipelines[step]
    return LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=str(work / "logs" / step), skip_completed=False)


def main() -> None:
    """Run one step and print its measurements."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["signatures", "buckets", "cluster", "filter"])
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--files", type=int, required=True)
    args = parser.parse_args()
    run = executor(args.step, args.input, args.work, args.files)

    def step() -> None:
        run.run()

    print(json.dumps(measured(step)))


if __name__ == "__main__":
    main()
