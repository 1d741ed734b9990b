"""Nested deterministic sampling of documents."""

from __future__ import annotations

import pytest

from massiveds.core.errors import MassiveDSError
from massiveds.store.sampling import check_fraction, doc_hash, doc_positions, keep_mask
from tests.planted_corpus import abstracts


def test_samples_are_nested_and_close_to_the_fraction() -> None:
    ids = [r["id"] for r in abstracts(min_words=1, max_words=100_000)]
    assert len(ids) > 3000
    masks = {p: keep_mask(ids, p, seed=7) for p in (0.05, 0.1, 0.2, 0.5, 1.0)}
    for small, big in [(0.05, 0.1), (0.1, 0.2), (0.2, 0.5), (0.5, 1.0)]:
        assert not (masks[small] & ~masks[big]).any()
    n = len(ids)
    for p, mask in masks.items():
        sd = (n * p * (1 - p)) ** 0.5
        assert abs(mask.sum() - n * p) <= 4 * sd + 1e-9
    assert masks[1.0].all()
    other = keep_mask(ids, 0.1, seed=8)
    assert (other != masks[0.1]).any()
    assert (keep_mask(ids, 0.1, seed=7) == masks[0.1]).all()


@pytest.mark.parametrize("bad", [0, -0.1, 1.01])
def test_fraction_outside_unit_interval_is_refused(bad: float) -> None:
    with pytest.raises(MassiveDSError, match=r"fraction must be in \(0, 1\]"):
        check_fraction(bad)


def test_document_positions_are_the_per_document_hash_and_repeat_per_passage() -> None:
    ids = [r["id"] for r in abstracts(min_words=1, max_words=100_000)][:50]
    passages = [d for d in ids for _ in range(3)]  # three passages per document
    positions = doc_positions(passages, seed=5)
    assert positions.tolist() == [doc_hash(d, 5) for d in passages]
    assert (keep_mask(passages, 0.3, 5) == (positions < 0.3)).all() and len(doc_positions([], 5)) == 0
