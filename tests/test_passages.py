"""Shard passage files: fixed-size batches give O(1) row access and exact round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
import zstandard

from massiveds.core.passages import PassageFile, write_passages
from massiveds.core.schema import PASSAGES
from tests.helpers import REPO


def real_passages(n: int) -> pa.Table:
    path = REPO / "manifests/examples/data/jargon/foldoc-0.jsonl.zst"
    rows = [json.loads(x) for x in zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read().splitlines()[:n]]
    return pa.Table.from_pylist(
        [
            {"passage_id": 1000 + i, "doc_id": r["id"], "domain": "wiki", "source": "foldoc", "url": None, "title": r["title"],
             "text": r["text"], "n_tokens": len(r["text"].split()), "char_start": 0, "char_end": len(r["text"])}
            for i, r in enumerate(rows)
        ],
        schema=PASSAGES,
    )


@pytest.mark.parametrize("batch_rows", [1, 7, 64, 1024])
def test_round_trip_and_random_access(tmp_path: Path, batch_rows: int) -> None:
    table = real_passages(150)
    pieces = [table.slice(0, 5), table.slice(5, 0), table.slice(5, 90), table.slice(95)]
    path = tmp_path / "passages.arrow"
    assert write_passages(path, pieces, batch_rows=batch_rows) == 150
    pf = PassageFile(path)
    assert len(pf) == 150 and pf.batch_rows == batch_rows
    assert pf.read_all().to_pylist() == table.to_pylist()
    wanted = [149, 0, 77, 7, 7, 64]
    assert pf.rows(wanted) == [table.slice(i, 1).to_pylist()[0] for i in wanted]
    assert not list(tmp_path.glob(".*tmp*"))


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def broken():
        yield real_passages(10)
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError):
        write_passages(tmp_path / "passages.arrow", broken())
    assert list(tmp_path.iterdir()) == []
