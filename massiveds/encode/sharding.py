"""Cut a run of passages into shards: balanced, at most a target size each, with contiguous passage ids."""

from __future__ import annotations

import math

import numpy as np

from massiveds.core.catalog import ShardSpan
from massiveds.core.layout import shard_name


class PlannedShard(ShardSpan):
    """One shard to write: its name, domain, id range, and the (part, first row, end row) slices of the parts that fill it."""

    slices: tuple[tuple[str, int, int], ...]


def plan_shards(parts: list[tuple[str, int]], domain: str, target: int, first_id: int = 0, first_number: int = 0) -> list[PlannedShard]:
    """Cut the concatenation of ``parts`` ((name, rows), in order) into balanced shards of at most ``target`` passages.

    Passage ids are ``first_id`` plus positions in that concatenation, so shard ``i`` (named with number
    ``first_number + i``) holds the contiguous id range ``[id_start, id_start + count)``.
    """
    total = sum(rows for _, rows in parts)
    n_shards = max(1, math.ceil(total / target))
    bounds = [round(i * total / n_shards) for i in range(n_shards + 1)]
    offsets = np.cumsum([0] + [rows for _, rows in parts])
    shards = []
    for i in range(n_shards):
        lo, hi = bounds[i], bounds[i + 1]
        slices = []
        for p, (part, _) in enumerate(parts):
            a, b = max(lo, int(offsets[p])), min(hi, int(offsets[p + 1]))
            if a < b:
                slices.append((part, a - int(offsets[p]), b - int(offsets[p])))
        shards.append(PlannedShard(name=shard_name(domain, first_number + i), domain=domain, id_start=first_id + lo, count=hi - lo,
                                   slices=tuple(slices)))
    return shards
