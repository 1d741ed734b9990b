"""RETRO-style leakage analysis: how much of each evaluation item its retrieved neighbours contain.

For every item, the longest common run of words between the item and each of its top-k neighbours
is measured; ``overlap = longest run / item length`` places the item in a bucket, so results can be
reported by overlap bucket (RETRO, Borgeaud et al. 2022, section 4.4 and appendix).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from massiveds.clean.ngrams import words

#: Upper bounds of the overlap buckets (fraction of the item's words in one common run).
BUCKETS = (0.125, 0.25, 0.5, 0.75, 1.0)


def longest_common_run(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest run of consecutive words shared by ``a`` and ``b`` (O(len a · len b), vectorised)."""
    if not a or not b:
        return 0
    vocab: dict[str, int] = {}
    x = np.array([vocab.setdefault(w, len(vocab)) for w in a], dtype=np.int64)
    y = np.array([vocab.setdefault(w, len(vocab)) for w in b], dtype=np.int64)
    best = 0
    prev = np.zeros(len(y) + 1, dtype=np.int64)
    for xi in x:  # row by row of the DP table, each row one numpy operation
        cur = np.zeros_like(prev)
        cur[1:] = np.where(y == xi, prev[:-1] + 1, 0)
        best = max(best, int(cur.max()))
        prev = cur
    return best


def bucket_of(overlap: float) -> str:
    """The label of the bucket holding ``overlap`` (e.g. ``"≤ 25%"``)."""
    for upper in BUCKETS:
        if overlap <= upper:
            return f"≤ {upper:.1%}".replace(".0%", "%")
    return f"≤ {BUCKETS[-1]:.0%}"


def item_leakage(item_id: str, text: str, neighbours: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The longest run between one item and each neighbour, and the item's overlap and bucket."""
    item_words = words(text)
    runs = [(longest_common_run(item_words, words(h["text"])), h) for h in neighbours]
    run, hit = max(runs, key=lambda r: r[0], default=(0, None))
    overlap = run / len(item_words) if item_words else 0.0
    return {
        "item_id": item_id,
        "words": len(item_words),
        "longest_run": run,
        "overlap": overlap,
        "bucket": bucket_of(overlap),
        "passage_id": hit["passage_id"] if hit else None,
        "doc_id": hit["doc_id"] if hit else None,
        "runs": [r for r, _ in runs],
    }


def leakage_report(items: Sequence[tuple[str, str]], neighbours: Sequence[Sequence[dict[str, Any]]]) -> dict[str, Any]:
    """Per-item leakage and the distribution of items over the overlap buckets."""
    rows = [item_leakage(i, t, n) for (i, t), n in zip(items, neighbours, strict=True)]
    labels = [bucket_of(b) for b in BUCKETS]
    counts = {label: sum(r["bucket"] == label for r in rows) for label in labels}
    return {"items": len(rows), "buckets": counts, "per_item": rows}
