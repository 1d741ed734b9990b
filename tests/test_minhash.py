"""The MinHash / LSH math and the connected-components steps, on real text and on known sets."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from massiveds.clean.components import directed, large_star, small_star, star_members, unsettled
from massiveds.clean.minhash import (
    EMPTY,
    MinHasher,
    bucket_edges,
    candidate_probability,
    estimate_jaccard,
    exact_jaccard,
    lsh_threshold,
    true_jaccard,
)
from massiveds.clean.ngrams import ngram_hashes, ngram_hashes_batch, words
from tests.planted_corpus import abstracts, substitute


def test_signature_agreement_estimates_true_jaccard_on_real_text() -> None:
    rng = random.Random(3)
    pool = abstracts()[:40]
    vocab = sorted({w for r in pool[20:] for w in r["text"].split()})
    hasher = MinHasher()
    errors = []
    for r, rate in zip(pool[:20], [0.0, 0.01, 0.02, 0.03, 0.05] * 4, strict=True):
        a = r["text"]
        b = " ".join(substitute(a.split(), rate, vocab, rng))
        j = true_jaccard(ngram_hashes(a, 5, True), ngram_hashes(b, 5, True))
        est = float(estimate_jaccard(*hasher.signatures([a, b])))
        sigma = np.sqrt(j * (1 - j) / hasher.num_perm)
        assert abs(est - j) <= 4 * sigma + 1 / hasher.num_perm, (rate, j, est)
        errors.append(abs(est - j))
    assert np.mean(errors) < 0.03
    assert max(errors) > 0  # the estimate is an estimate: not trivially equal everywhere


def test_s_curve_formula_and_threshold() -> None:
    assert lsh_threshold(14, 8) == pytest.approx(0.7190, abs=1e-4)
    p = candidate_probability(np.array([0.5, 0.7, 0.8, 0.9]), 14, 8)
    assert p == pytest.approx([0.0533, 0.5645, 0.9235, 0.9996], abs=1e-4)
    s = np.linspace(0, 1, 101)
    assert np.all(np.diff(candidate_probability(s, 14, 8)) >= 0)
    assert candidate_probability(0.0, 14, 8) == 0 and candidate_probability(1.0, 14, 8) == 1


def _pair_with_jaccard(rng: np.random.Generator, m: int, j: float) -> tuple[np.ndarray, np.ndarray]:
    shared = round(2 * m * j / (1 + j))  # |A| = |B| = m, |A ∩ B| = shared gives J = shared / (2m - shared)
    pool = rng.integers(0, 2**64 - 1, size=2 * m, dtype=np.uint64, endpoint=True)
    return pool[:m], np.concatenate([pool[:shared], pool[m : 2 * m - shared]])


@pytest.mark.parametrize("j", [0.5, 0.7, 0.8, 0.9])
def test_lsh_candidate_rate_follows_the_s_curve(j: float) -> None:
    rng = np.random.default_rng(int(j * 100))
    hasher = MinHasher()
    n_pairs, m = 300, 200
    sets = [s for _ in range(n_pairs) for s in _pair_with_jaccard(rng, m, j)]
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sets])])
    keys = hasher.band_keys(hasher.signatures_from_shingles(np.concatenate(sets), offsets))
    rate = float(np.mean(np.any(keys[0::2] == keys[1::2], axis=1)))
    expected = float(candidate_probability(j, hasher.bands, hasher.rows))
    assert abs(rate - expected) <= 3 * np.sqrt(expected * (1 - expected) / n_pairs) + 0.02, (rate, expected)


def test_signatures_are_deterministic_and_seeded() -> None:
    texts = [r["text"] for r in abstracts()[:5]]
    a, b = MinHasher().signatures(texts), MinHasher().signatures(texts)
    assert a.dtype == np.uint32 and a.shape == (5, 112)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, MinHasher(seed=2).signatures(texts))
    # batching does not change a document's signature
    assert np.array_equal(a[3], MinHasher().signatures([texts[3]])[0])


def test_words_shingles_short_and_empty_texts() -> None:
    assert words("Hello, WORLD!  hello\nworld") == ["hello", "world", "hello", "world"]
    assert np.array_equal(ngram_hashes("Hello, world: a b c", 3), ngram_hashes("hello world A B C!", 3))
    _, offsets = ngram_hashes_batch([["a", "b"], [], ["a", "b", "c", "d"]], 3, short=True)
    assert list(np.diff(offsets)) == [1, 0, 2]
    _, offsets = ngram_hashes_batch([["a", "b"], [], ["a", "b", "c", "d"]], 3, short=False)
    assert list(np.diff(offsets)) == [0, 0, 2]
    sigs = MinHasher().signatures(["", "two words"])
    assert np.all(sigs[0] == EMPTY) and not np.all(sigs[1] == EMPTY)


def test_bucket_edges_are_stars_on_the_smallest_ord() -> None:
    keys = np.array([7, 7, 7, 9, 9, 5, 7], dtype=np.uint64)
    ords = np.array([30, 10, 20, 40, 50, 60, 10], dtype=np.int64)
    u, v = bucket_edges(keys, ords)
    assert sorted(zip(u.tolist(), v.tolist(), strict=True)) == [(10, 20), (10, 30), (40, 50)]


def test_exact_jaccard_matches_python_sets() -> None:
    rng = np.random.default_rng(0)
    a_sets = [np.unique(rng.integers(0, 50, size=rng.integers(0, 30))).astype(np.uint64) for _ in range(50)]
    b_sets = [np.unique(rng.integers(0, 50, size=rng.integers(0, 30))).astype(np.uint64) for _ in range(50)]
    as_lists = lambda sets: pa.array([x.tolist() for x in sets], pa.list_(pa.uint64()))  # noqa: E731
    got = exact_jaccard(as_lists(a_sets), as_lists(b_sets))
    want = [true_jaccard(x, y) for x, y in zip(a_sets, b_sets, strict=True)]
    assert got == pytest.approx(want)


def _union_find_labels(n: int, a: np.ndarray, b: np.ndarray) -> dict[int, int]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        rx, ry = find(x), find(y)
        parent[max(rx, ry)] = min(rx, ry)
    nodes = set(a.tolist()) | set(b.tolist())
    return {x: find(x) for x in nodes if find(x) != x}


def _settle(a: np.ndarray, b: np.ndarray) -> tuple[dict[int, int], int]:
    node, nbr = directed(a, b)
    steps = 0
    while True:
        if steps % 2 == 0 and unsettled(node, nbr) == 0:
            break
        x, y = large_star(node, nbr) if steps % 2 == 0 else small_star(node, nbr)
        node, nbr = directed(x, y)
        steps += 1
    member, centre = star_members(node, nbr)
    return dict(zip(member.tolist(), centre.tolist(), strict=True)), steps


@pytest.mark.parametrize("seed", range(5))
def test_star_steps_find_the_connected_components(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    a, b = rng.integers(0, n, size=300), rng.integers(0, n, size=300)
    labels, steps = _settle(a, b)
    assert labels == _union_find_labels(n, a, b)
    assert steps < 40


def test_star_steps_settle_a_long_path_quickly() -> None:
    perm = np.random.default_rng(1).permutation(1000)
    a, b = perm[:-1], perm[1:]  # one path through 1000 nodes in random order: diameter 999
    labels, steps = _settle(a, b)
    assert set(labels.values()) == {0} and len(labels) == 999
    assert steps < 60  # O(log^2 n) rounds, not O(diameter)
