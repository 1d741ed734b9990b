"""The embed stage's resume: only the rows no finished embedding part covers are embedded again."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.stages.embed import READ_ROWS, GatherVectors, Window, read_passage_range, windows, write_embeddings_part
from pipelines.stages.shard import ShardItem

SHARDS = [
    ShardItem(unit="wiki-00000", name="wiki-00000", domain="wiki", id_start=0, count=20_000),
    ShardItem(unit="wiki-00001", name="wiki-00001", domain="wiki", id_start=20_000, count=50),
]


def _vectors(ids: np.ndarray) -> np.ndarray:
    """A vector per id that names it exactly in fp16."""
    return np.stack([ids // 1024, ids % 1024], axis=1).astype(np.float16)


def _write(ids: np.ndarray, build: Path) -> None:
    write_embeddings_part(ids.astype(np.int64), _vectors(ids), SHARDS, build)


def test_only_rows_no_finished_part_covers_are_embedded_again(tmp_path: Path) -> None:
    assert [(w.start, w.stop, w.rows) for w in windows(SHARDS[:1], tmp_path)] == [
        (a, min(a + READ_ROWS, 20_000), min(READ_ROWS, 20_000 - a)) for a in range(0, 20_000, READ_ROWS)
    ]
    _write(np.arange(0, 1024), tmp_path)
    _write(np.r_[3000:3500, 6000:6100], tmp_path)  # one batch may hold two runs of a shard (Ray bundles blocks out of order)
    _write(np.r_[19_990:20_000, 20_000:20_020], tmp_path)  # and rows of two shards: one part per shard
    _write(np.arange(3000, 3200), tmp_path)  # rows embedded twice (a retried batch) count once
    _write(np.arange(8192, 8192 + READ_ROWS, 2), tmp_path)  # a part of scattered rows (blocks are sorted by length)
    _write(np.arange(12_288, 12_288 + READ_ROWS), tmp_path)  # a whole window

    items = windows(SHARDS, tmp_path)
    rest = lambda lo, hi, *done: [r for r in range(lo, hi) if not any(a <= r < b for a, b in done)]  # noqa: E731
    assert [(w.shard, w.start, w.stop, w.only) for w in items] == [
        ("wiki-00000", 0, 4096, rest(0, 4096, (0, 1024), (3000, 3500))),
        ("wiki-00000", 4096, 8192, rest(4096, 8192, (6000, 6100))),
        ("wiki-00000", 8192, 12_288, list(range(8193, 12_288, 2))),
        ("wiki-00000", 16_384, 20_000, rest(16_384, 20_000, (19_990, 20_000))),
        ("wiki-00001", 0, 50, list(range(20, 50))),
    ]
    assert all(w.only is not None and w.rows == len(w.only) for w in items)

    for w in items:  # embedding the missing rows completes both shards, each id exactly once
        s = next(s for s in SHARDS if s.name == w.shard)
        _write(np.asarray(w.only) + s.id_start, tmp_path)
    assert windows(SHARDS, tmp_path) == []
    for s in SHARDS:
        dest = tmp_path / f"{s.name}.npy"
        GatherVectors(tmp_path, {s.name: dest})(s)
        assert np.array_equal(np.load(dest), _vectors(np.arange(s.id_start, s.id_start + s.count)))


def test_an_embed_block_is_its_rows_longest_first(example_datastore: Path) -> None:
    shard = sorted(p.name for p in (example_datastore / "shards").iterdir())[0]
    whole = read_passage_range(Window(unit="w", shard=shard, start=10, stop=300, rows=290), example_datastore / "shards")
    lengths = [len(t) for t in whole.column("text").to_pylist()]
    assert sorted(whole.column("passage_id").to_pylist()) == list(range(10, 300)) and lengths == sorted(lengths, reverse=True)
    only = list(range(11, 300, 3))
    part = read_passage_range(Window(unit="w", shard=shard, start=10, stop=300, rows=len(only), only=only), example_datastore / "shards")
    assert sorted(part.column("passage_id").to_pylist()) == only
    texts = dict(zip(whole.column("passage_id").to_pylist(), whole.column("text").to_pylist(), strict=True))
    assert part.column("text").to_pylist() == sorted((texts[i] for i in only), key=len, reverse=True)
