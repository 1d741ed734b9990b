"""The embed stage's resume: only the rows no finished embedding part covers are embedded again."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.embed_stage import READ_ROWS, embed_items
from pipelines.units import consolidate_vectors_unit, missing_rows, write_embeddings_part

SHARDS = [
    {"name": "wiki-00000", "id_start": 0, "count": 20_000},
    {"name": "wiki-00001", "id_start": 20_000, "count": 50},
]


def _vectors(ids: np.ndarray) -> np.ndarray:
    """A vector per id that names it exactly in fp16."""
    return np.stack([ids // 1024, ids % 1024], axis=1).astype(np.float16)


def _write(ids: np.ndarray, build: Path) -> None:
    write_embeddings_part(ids.astype(np.int64), _vectors(ids), SHARDS, build)


def test_missing_rows_are_the_gaps_between_finished_parts(tmp_path: Path) -> None:
    assert missing_rows(SHARDS[0], tmp_path) == [(0, 20_000)]
    _write(np.arange(0, 1024), tmp_path)
    _write(np.r_[3000:3500, 6000:6100], tmp_path)  # one batch may hold two runs of a shard (Ray bundles blocks out of order)
    _write(np.r_[19_990:20_000, 20_000:20_020], tmp_path)  # and rows of two shards: one part per shard
    _write(np.arange(3000, 3200), tmp_path)  # rows embedded twice (a retried batch) count once
    assert missing_rows(SHARDS[0], tmp_path) == [(1024, 3000), (3500, 6000), (6100, 19_990)]
    assert missing_rows(SHARDS[1], tmp_path) == [(20, 50)]

    items = embed_items(SHARDS, tmp_path)
    assert [(i["shard"], i["start"], i["stop"]) for i in items] == [
        ("wiki-00000", 1024, 3000),
        ("wiki-00000", 3500, 6000),
        *[("wiki-00000", a, min(a + READ_ROWS, 19_990)) for a in range(6100, 19_990, READ_ROWS)],
        ("wiki-00001", 20, 50),
    ]

    for item in items:  # embedding the missing rows completes both shards, each id exactly once
        s = next(s for s in SHARDS if s["name"] == item["shard"])
        _write(np.arange(item["start"], item["stop"]) + s["id_start"], tmp_path)
    assert embed_items(SHARDS, tmp_path) == []
    for s in SHARDS:
        dest = tmp_path / f"{s['name']}.npy"
        consolidate_vectors_unit(s, tmp_path, {s["name"]: str(dest)})
        assert np.array_equal(np.load(dest), _vectors(np.arange(s["id_start"], s["id_start"] + s["count"])))
