"""Retrieval metrics from the rank of each query's first relevant hit, and bootstrap confidence intervals.

A hit is *relevant* to a query by one of three criteria: it contains a gold answer (``answer``: both
texts normalised as in SQuAD / DPR evaluation: Unicode NFKD, lowercase, punctuation and the articles
a/an/the removed, then the answer's words must appear as a contiguous run of the passage's words), it
belongs to a gold document (``doc``), or it is a gold passage (``passage``). Everything reported derives
from ``r``, the 1-based rank of the first relevant hit (0: none in the hits looked at):

    recall@k = mean over queries of [0 < r <= k]        MRR@k = mean over queries of [0 < r <= k] / r

so a report keeps the ranks and any k up to the depth searched can be recomputed from them.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence

import numpy as np

#: The relevance criteria, in the order reports list them.
CRITERIA = ("answer", "doc", "passage")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans({c: " " for c in string.punctuation + "‘’“”–—…«»"})


def normalize_answer(text: str) -> str:
    """``text`` as SQuAD/DPR compare answers: NFKD without accents, lowercase, no punctuation or articles, single spaces."""
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION))
    return " ".join(text.split())


def answer_matcher(answers: Sequence[str]) -> AnswerMatcher:
    """A matcher of the normalised ``answers`` (those that normalise to nothing, e.g. "the", are left out)."""
    return AnswerMatcher(tuple(a for a in (normalize_answer(x) for x in answers) if a))


class AnswerMatcher:
    """Whether a text contains one of a query's answers as a run of whole normalised words."""

    def __init__(self, normalized: tuple[str, ...]) -> None:
        self.needles = tuple(f" {a} " for a in normalized)

    def __call__(self, text: str) -> bool:
        hay = f" {normalize_answer(text)} "
        return any(n in hay for n in self.needles)


def first_relevant(relevant: Sequence[bool]) -> int:
    """The 1-based rank of the first True of a ranked list of relevance flags, 0 when there is none."""
    return next((i + 1 for i, r in enumerate(relevant) if r), 0)


def recall_at(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per query (the last axis is kept): 1.0 when the first relevant hit is within the top ``k``, else 0.0."""
    return ((ranks > 0) & (ranks <= k)).astype(np.float64)


def reciprocal_rank_at(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per query: 1/r when the first relevant hit is at rank r ≤ ``k``, else 0 (its mean is MRR@k)."""
    safe = np.where(ranks > 0, ranks, 1)
    return np.where((ranks > 0) & (ranks <= k), 1.0 / safe, 0.0)


def bootstrap_interval(values: np.ndarray, resamples: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval of the mean of per-query ``values`` (queries resampled with replacement)."""
    assert values.ndim == 1 and 0 < level < 1
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for lo in range(0, resamples, 256):  # blocks bound memory at 256 × queries
        hi = min(resamples, lo + 256)
        means[lo:hi] = values[rng.integers(len(values), size=(hi - lo, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)
