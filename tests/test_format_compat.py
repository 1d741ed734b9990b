"""A datastore built before the redesign opens, verifies and searches the same with today's code: the on-disk format is unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import massiveds
from massiveds.core.errors import MassiveDSError
from massiveds.ops.verify import verify
from tests.helpers import FIXTURES

OLD = FIXTURES / "datastore-format1"
#: What the code that built it returned for these queries (passage id, score to 4 places; the query is embedded anew).
EXPECTED = {
    "a program nobody can maintain": [(96, 0.4704), (94, 0.4694), (11, 0.4396), (62, 0.3966), (85, 0.3948)],
    "hacker humour": [(52, 0.5367), (63, 0.4944), (61, 0.4688), (118, 0.433), (87, 0.4125)],
}


def test_a_datastore_of_the_previous_layout_opens_verifies_and_searches_the_same(tmp_path: Path) -> None:
    root = shutil.copytree(OLD, tmp_path / "ds")
    assert verify(root) == []
    ds = massiveds.open(root)
    for query, expected in EXPECTED.items():
        hits = ds.search(query, k=5)
        assert [h["passage_id"] for h in hits] == [pid for pid, _ in expected]
        assert all(abs(h["score"] - score) < 1e-3 for h, (_, score) in zip(hits, expected, strict=True))
        assert "dense_score" not in hits[0]  # no BM25 index: dense mode
    with pytest.raises(MassiveDSError, match=r"search mode sparse needs a BM25 index and .* has none; use mode dense"):
        ds.search("hacker humour", mode="sparse")
