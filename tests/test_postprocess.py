"""Post-retrieval options as pure functions over hit lists made of real Jargon File entries (no datastore)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from massiveds.clean.minhash import MinHasher, true_jaccard
from massiveds.core.errors import MassiveDSError
from massiveds.store.postprocess import (
    GoldIndex,
    attach_continuations,
    decontaminate_hits,
    dedup_hits,
    mmr,
    near_duplicate_pairs,
)
from tests.helpers import REPO, head_rows

JARGON = REPO / "manifests" / "examples" / "data" / "jargon"


@pytest.fixture(scope="module")
def entries() -> list[dict[str, Any]]:
    """Real Jargon File entries with at least 60 words."""
    rows = [r for f in sorted(JARGON.glob("jargon-*.jsonl.zst")) for r in head_rows(f, 1000)]
    return [r for r in rows if len(r["text"].split()) >= 60]


def make_hits(entries: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """A ranked hit list of the first ``n`` entries (scores decreasing)."""
    return [
        {"passage_id": i, "doc_id": e["id"], "score": 1.0 - i / 100, "text": e["text"], "title": e["title"]}
        for i, e in enumerate(entries[:n])
    ]


def rewrite(text: str, every: int) -> str:
    """``text`` with every ``every``-th word replaced (a near copy when ``every`` is large)."""
    out = text.split()
    for i in range(0, len(out), every):
        out[i] = f"changed{i}"
    return " ".join(out)


def replace_span(text: str, start: float, stop: float) -> str:
    """``text`` with the words from fraction ``start`` to ``stop`` of its length replaced (an edited copy)."""
    out = text.split()
    lo, hi = int(start * len(out)), int(stop * len(out))
    return " ".join(out[:lo] + [f"new{i}" for i in range(lo, hi)] + out[hi:])


def jaccard(a: str, b: str) -> float:
    hasher = MinHasher()
    hashes, offsets = hasher.shingles([a, b])
    return true_jaccard(hashes[offsets[0] : offsets[1]], hashes[offsets[1] : offsets[2]])


def test_dedup_keeps_the_best_scored_copy(entries: list[dict[str, Any]]) -> None:
    hits = make_hits(entries, 8)
    near = rewrite(hits[2]["text"], 40)  # ~2.5 % of words changed
    far = replace_span(hits[4]["text"], 0.7, 1.0)  # its last 30 % rewritten: not a near copy
    assert jaccard(near, hits[2]["text"]) >= 0.8 > jaccard(far, hits[4]["text"])
    planted = [*hits, {**hits[2], "passage_id": 100, "doc_id": "copy", "score": 0.5, "text": near},
               {**hits[4], "passage_id": 101, "doc_id": "far", "score": 0.4, "text": far}]
    kept = dedup_hits(planted)
    assert [h["passage_id"] for h in kept] == [*range(8), 101]
    # ranked above the original, the copy is the one that stays
    reordered = [planted[8], *planted[:8]]
    assert [h["passage_id"] for h in dedup_hits(reordered)] == [100, 0, 1, 3, 4, 5, 6, 7]
    # a looser threshold also removes the heavily rewritten copy
    assert 101 not in [h["passage_id"] for h in dedup_hits(planted, threshold=jaccard(far, hits[4]["text"]) - 0.01)]


def test_dedup_compares_only_with_kept_hits(entries: list[dict[str, Any]]) -> None:
    base = entries[0]["text"]
    a = base
    b = replace_span(a, 0.75, 1.0)
    c = replace_span(b, 0.0, 0.25)
    assert jaccard(a, b) >= 0.5 and jaccard(b, c) >= 0.5 and jaccard(a, c) < 0.5
    hits = [{"passage_id": i, "doc_id": str(i), "score": 1 - i / 10, "text": t} for i, t in enumerate([a, b, c])]
    # b is a copy of a and goes; c is a copy only of b, which did not stay, so c stays
    assert [h["passage_id"] for h in dedup_hits(hits, threshold=0.5)] == [0, 2]


def test_near_duplicate_pairs_match_brute_force_across_blocks(entries: list[dict[str, Any]]) -> None:
    texts = [e["text"] for e in entries[:150]]
    texts[130] = rewrite(texts[5], 50)
    texts[70] = replace_span(texts[69], 0.95, 1.0)
    hashes, offsets = MinHasher().shingles(texts)
    sets = [hashes[offsets[i] : offsets[i + 1]] for i in range(len(texts))]
    expected = {(i, j) for i in range(len(texts)) for j in range(i + 1, len(texts)) if true_jaccard(sets[i], sets[j]) >= 0.8}
    assert {(5, 130), (69, 70)} <= expected
    assert near_duplicate_pairs(texts, threshold=0.8) == expected


def test_decontaminate_drops_hits_containing_the_gold(entries: list[dict[str, Any]]) -> None:
    hits = make_hits(entries, 10)
    words = hits[3]["text"].split()
    gold = " ".join(words[10:40])  # a 30-word passage of hit 3: 13-gram containment 1.0
    kept = decontaminate_hits(hits, [gold])
    assert [h["passage_id"] for h in kept] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    # a long gold (e.g. a reference document) that contains a whole hit: caught by the common run
    long_gold = " ".join([entries[20]["text"], hits[6]["text"], entries[21]["text"]])
    assert [h["passage_id"] for h in decontaminate_hits(hits, GoldIndex([long_gold]))] == [0, 1, 2, 3, 4, 5, 7, 8, 9]
    # unrelated gold text: nothing dropped
    assert decontaminate_hits(hits, [entries[30]["text"]]) == hits


def test_decontaminate_refuses_gold_too_short_to_match() -> None:
    with pytest.raises(MassiveDSError, match="fewer than the 13-gram"):
        GoldIndex(["a kludge"])
    with pytest.raises(MassiveDSError, match="at least one gold"):
        GoldIndex([])


def test_mmr_is_plain_ranking_at_one_and_diversifies_below() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 32)).astype(np.float32)
    vectors = np.vstack([base[0], base[0] + 0.01 * rng.normal(size=32), base[0] + 0.02 * rng.normal(size=32), base[1:]])
    hits = [{"passage_id": i, "doc_id": str(i), "score": s, "text": ""} for i, s in enumerate([0.9, 0.89, 0.88, 0.8, 0.79, 0.7, 0.6, 0.5])]
    assert mmr(hits, vectors, 1.0, 8) == hits
    assert [h["passage_id"] for h in mmr(hits, vectors, 1.0, 3)] == [0, 1, 2]
    diverse = [h["passage_id"] for h in mmr(hits, vectors, 0.5, 3)]
    assert diverse[0] == 0 and 1 not in diverse and 2 not in diverse  # the near copies of hit 0 wait
    with pytest.raises(MassiveDSError, match="lambda"):
        mmr(hits, vectors, 1.5, 3)


def test_continuations_only_within_the_same_document() -> None:
    hits = [
        {"passage_id": 10, "doc_id": "a", "score": 0.9, "text": "x"},
        {"passage_id": 20, "doc_id": "b", "score": 0.8, "text": "y"},
        {"passage_id": 30, "doc_id": "c", "score": 0.7, "text": "z"},
    ]
    before = copy.deepcopy(hits)
    passages = {11: {"passage_id": 11, "doc_id": "a", "text": "x2"}, 21: {"passage_id": 21, "doc_id": "other", "text": "q"}}
    out = attach_continuations(hits, passages)
    assert [h["continuation"] for h in out] == [passages[11], None, None]
    assert hits == before
