"""Post-retrieval options over ranked hit lists (MassiveDS / RETRO style), as pure functions.

A *hit* is a dict with at least ``passage_id``, ``doc_id``, ``score`` and ``text`` (see
``Datastore.search``); a hit list is ranked best first. Every function here returns a new list and
leaves its input untouched (continuations are attached to copies), so the functions compose in any
order; ``massiveds.store.search`` applies them after sampling by id, as decontaminate -> dedup -> MMR -> continuation.

* ``decontaminate_hits``: drop hits that overlap gold texts by word 13-gram containment or by a long
  common word run (``massiveds.clean.decontaminate``, the build-time criteria, per passage).
* ``dedup_hits``: greedy near-duplicate removal in rank order (MinHash over word 5-gram shingles from
  ``massiveds.clean.minhash``, verified by the true shingle Jaccard): the highest-scored copy stays.
* ``mmr``: maximal marginal relevance over passage vectors.
* ``rerank_hits``: each query's first hits reordered by a (query, passage) scorer, a cross-encoder.
* ``attach_continuations``: RETRO's neighbour + continuation (the next passage of the same document).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from massiveds.clean.decontaminate import EvalIndex, build_index, scan_texts
from massiveds.clean.minhash import MinHasher, estimate_jaccard, true_jaccard
from massiveds.clean.ngrams import words
from massiveds.core.errors import MassiveDSError
from massiveds.store.hit import Hit, Passage

#: Query-time defaults: MassiveDS's 13-gram / 0.8 decontamination and 0.8 near-dup threshold, the build's run length.
DECON_NGRAM, DECON_THRESHOLD, DECON_MIN_RUN = 13, 0.8, 32
DEDUP_THRESHOLD, DEDUP_NGRAM = 0.8, 5
#: Signature agreement below ``threshold - margin`` cannot be a pair at ``threshold`` (6 standard deviations at k=112).
_SIGNATURE_MARGIN = 0.25
_BLOCK = 64


class GoldIndex:
    """Gold texts (evaluation answers, references) indexed once for decontaminating many hit lists."""

    def __init__(self, golds: Sequence[str], ngram: int = DECON_NGRAM, threshold: float = DECON_THRESHOLD,
                 min_run: int = DECON_MIN_RUN) -> None:
        if not golds:
            raise MassiveDSError("decontaminate: give at least one gold text")
        if not 0 < threshold <= 1:
            raise MassiveDSError(f"decontaminate threshold must be in (0, 1], got {threshold}")
        if min_run and min_run < ngram:
            raise MassiveDSError(f"decontaminate min_run ({min_run}) must be 0 or at least the n-gram size ({ngram})")
        for i, gold in enumerate(golds):
            n = len(words(gold))
            if n < ngram:
                raise MassiveDSError(
                    f"decontaminate: gold text {i + 1} has {n} word(s), fewer than the {ngram}-gram overlap needs; "
                    f"give the full reference text (question and answer), not a short answer"
                )
        ngrams, items = build_index([("gold", str(i), g) for i, g in enumerate(golds)], ngram)
        self.index = EvalIndex(ngrams, items, ngram)
        self.threshold = threshold
        self.min_run = min_run

    def contaminated(self, texts: Sequence[str]) -> list[bool]:
        """For each text, whether it overlaps some gold text."""
        return [bool(m) for m in scan_texts(texts, self.index, self.threshold, self.min_run)]


def decontaminate_hits(hits: Sequence[Hit], gold: GoldIndex | Sequence[str]) -> list[Hit]:
    """The hits that do not overlap any gold text (13-gram containment ≥ 0.8 or a common run ≥ 32 words)."""
    index = gold if isinstance(gold, GoldIndex) else GoldIndex(gold)
    if not hits:
        return []
    flags = index.contaminated([h["text"] for h in hits])
    return [h for h, bad in zip(hits, flags, strict=True) if not bad]


def near_duplicate_pairs(texts: Sequence[str], threshold: float = DEDUP_THRESHOLD, ngram: int = DEDUP_NGRAM) -> set[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, of texts whose word-``ngram`` shingle sets have Jaccard ≥ ``threshold``.

    MinHash signatures screen all pairs (agreement estimates the Jaccard within ±0.04 at 112
    permutations); pairs that could reach the threshold are decided by their true Jaccard.
    """
    if not 0 < threshold <= 1:
        raise MassiveDSError(f"dedup threshold must be in (0, 1], got {threshold}")
    n = len(texts)
    if n < 2:
        return set()
    hasher = MinHasher(ngram=ngram)
    hashes, offsets = hasher.shingles(texts)
    sigs = hasher.signatures_from_shingles(hashes, offsets)
    pairs = set()
    for start in range(0, n, _BLOCK):  # row blocks bound the agreement matrix at _BLOCK * n * num_perm bytes
        agree = estimate_jaccard(sigs[start : start + _BLOCK, None, :], sigs[None, :, :])
        rows, cols = np.nonzero(agree >= threshold - _SIGNATURE_MARGIN)
        for i, j in zip((rows + start).tolist(), cols.tolist(), strict=True):
            a, b = hashes[offsets[i] : offsets[i + 1]], hashes[offsets[j] : offsets[j + 1]]
            if i < j and len(a) and len(b) and true_jaccard(a, b) >= threshold:
                pairs.add((i, j))
    return pairs


def dedup_hits(hits: Sequence[Hit], threshold: float = DEDUP_THRESHOLD, ngram: int = DEDUP_NGRAM) -> list[Hit]:
    """Drop near-duplicate hits in rank order: a hit goes when it is a near copy of a higher-ranked hit that stayed."""
    pairs = near_duplicate_pairs([h["text"] for h in hits], threshold, ngram)
    dup_of: dict[int, list[int]] = {}
    for i, j in pairs:
        dup_of.setdefault(j, []).append(i)
    kept: list[int] = []
    kept_set: set[int] = set()
    for j in range(len(hits)):
        if not any(i in kept_set for i in dup_of.get(j, ())):
            kept.append(j)
            kept_set.add(j)
    return [hits[j] for j in kept]


def mmr(hits: Sequence[Hit], vectors: np.ndarray, lam: float, k: int) -> list[Hit]:
    """Maximal marginal relevance: pick ``k`` hits, each maximising ``lam * score - (1 - lam) * max cos(hit, picked)``.

    ``vectors[i]`` is the vector of ``hits[i]``; relevance is the hit's retrieval score, so ``lam = 1``
    gives the plain ranking. Ties go to the higher-ranked hit.
    """
    if not 0 <= lam <= 1:
        raise MassiveDSError(f"mmr lambda must be in [0, 1], got {lam}")
    if k < 1:
        raise MassiveDSError(f"k must be at least 1, got {k}")
    n = len(hits)
    if n == 0:
        return []
    vecs = np.asarray(vectors, dtype=np.float32)
    if vecs.shape[0] != n:
        raise ValueError(f"mmr: {vecs.shape[0]} vectors for {n} hits")
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    unit = vecs / np.where(norms > 0, norms, 1.0)
    sim = unit @ unit.T
    rel = np.array([float(h["score"]) for h in hits], dtype=np.float64)
    picked: list[int] = []
    redundancy = np.full(n, -np.inf)
    free = np.ones(n, dtype=bool)
    for _ in range(min(k, n)):
        penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)
        gain = np.where(free, lam * rel - (1 - lam) * penalty, -np.inf)
        best = int(np.argmax(gain))
        picked.append(best)
        free[best] = False
        redundancy = np.maximum(redundancy, sim[best])
    return [hits[i] for i in picked]


def rerank_hits(queries: Sequence[str], hits: Sequence[Sequence[Hit]], score: Callable[[Sequence[tuple[str, str]]], np.ndarray],
                depth: int) -> list[list[Hit]]:
    """Each query's first ``depth`` hits in the order of ``score`` over (query, passage text), with ``rerank_score``; the rest after.

    ``score`` is called once, on the pairs of every query: a cross-encoder batches them across queries.
    """
    pairs = [(query, hit["text"]) for query, found in zip(queries, hits, strict=True) for hit in found[:depth]]
    scores = score(pairs)
    out, at = [], 0
    for found in hits:
        head = found[:depth]
        mine = scores[at : at + len(head)]
        at += len(head)
        reranked: list[Hit] = [{**head[int(i)], "rerank_score": float(mine[i])} for i in np.argsort(-mine, kind="stable")]
        out.append(reranked + list(found[depth:]))
    return out


def continuation_ids(hits: Sequence[Hit]) -> list[int]:
    """The passage id that would continue each hit (``passage_id + 1``)."""
    return [int(h["passage_id"]) + 1 for h in hits]


def attach_continuations(hits: Sequence[Hit], passages: Mapping[int, Passage]) -> list[Hit]:
    """Copies of the hits with ``continuation``: the next passage when it exists and is of the same document, else None."""
    out = []
    for hit, nxt in zip(hits, continuation_ids(hits), strict=True):
        cont = passages.get(nxt)
        continued: Hit = {**hit, "continuation": cont if cont is not None and cont["doc_id"] == hit["doc_id"] else None}
        out.append(continued)
    return out
