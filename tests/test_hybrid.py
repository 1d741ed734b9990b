"""Hybrid retrieval on the shipped example, built with its BM25 index: the catalog, the modes, subsample, and one shard vs many."""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import bm25s
import numpy as np
import pytest

import massiveds
from massiveds.core.errors import MassiveDSError
from massiveds.encode.sparse import SHARD_FILES, query_terms
from massiveds.ops.subsample import subsample
from massiveds.store.datastore import Datastore
from massiveds.store.sampling import keep_mask
from tests.helpers import coarse_index, exact_scores
from tests.helpers import massiveds as cli
from tests.test_search import linked_copy

pytestmark = pytest.mark.slow

QUERIES = ["a program so badly written that nobody can maintain it", "what is a kludge", "hacker humour"]


@pytest.fixture(scope="module")
def ds(example_datastore: Path) -> Datastore:
    return massiveds.open(example_datastore)


def test_the_example_has_a_bm25_index_in_its_catalog_and_shards(ds: Datastore, example_datastore: Path) -> None:
    sparse = ds.catalog.sparse
    assert sparse is not None and sparse.method == "lucene" and sparse.tokenizer.stemmer == "english"
    assert sparse.passages == ds.num_passages and sparse.terms > 1000 and len(ds.shards) > 1
    for shard in ds.catalog.shards:
        assert set(SHARD_FILES) <= set(shard.files)  # checksummed, verified, published and pulled with the rest
    assert sparse.bytes == sum(s.files[name].bytes for s in ds.catalog.shards for name in SHARD_FILES)
    stats = json.loads(cli("inspect", str(example_datastore), "--json").stdout)
    assert stats["sparse"]["terms"] == sparse.terms and all(s["bytes"]["sparse"] > 0 for s in stats["shards"])
    assert "BM25 (bm25s" in cli("inspect", str(example_datastore)).stdout
    assert cli("verify", str(example_datastore)).returncode == 0


def test_search_is_hybrid_by_default_and_reports_both_scores(ds: Datastore) -> None:
    hits = ds.search(QUERIES[0], k=10)
    assert len(hits) == 10 and all("dense_score" in h and "sparse_score" in h for h in hits)
    assert all(h["dense_score"] is not None or h["sparse_score"] is not None for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    dense = ds.search(QUERIES[0], k=10, mode="dense")
    assert "dense_score" not in dense[0] and dense[0]["score"] == pytest.approx(max(h["dense_score"] or -1 for h in hits), abs=1e-6)


def test_alpha_one_is_dense_and_alpha_zero_is_sparse(ds: Datastore) -> None:
    for fusion in ("convex", "rrf"):
        for query in QUERIES:
            ids = [h["passage_id"] for h in ds.search(query, k=10, alpha=1.0, fusion=fusion)]
            assert ids == [h["passage_id"] for h in ds.search(query, k=10, mode="dense")]
            ids = [h["passage_id"] for h in ds.search(query, k=10, alpha=0.0, fusion=fusion)]
            assert ids == [h["passage_id"] for h in ds.search(query, k=10, mode="sparse")]


def rare_word_query(ds: Datastore) -> tuple[str, int]:
    """Two words of one passage that no other passage holds (after stemming), and that passage's id."""
    texts = [t for s in ds.shards for t in s.passages.column("text")]
    ids = [i for s in ds.shards for i in range(s.id_start, s.id_start + s.count)]
    spec = ds.catalog.sparse.tokenizer  # type: ignore[union-attr]
    per_passage = [set(terms) for terms in query_terms(spec, texts)]
    df = collections.Counter(t for terms in per_passage for t in terms)
    for text, pid in zip(texts, ids, strict=True):
        rare = [w for w in dict.fromkeys(re.findall(r"[A-Za-z]{6,}", text)) if (t := query_terms(spec, [w])[0]) and df[t[0]] == 1]
        if len(rare) >= 2:
            return f"{rare[0]} {rare[1]}", pid
    raise AssertionError("no passage with two words of its own")


def test_rare_words_of_one_passage_find_it_in_sparse_and_hybrid_modes(ds: Datastore) -> None:
    query, pid = rare_word_query(ds)
    assert ds.search(query, k=5, mode="sparse")[0]["passage_id"] == pid
    hybrid = ds.search(query, k=5)
    assert hybrid[0]["passage_id"] == pid and hybrid[0]["sparse_score"] > 0


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    """The word ``n``-grams of a text, lowercased: the oracle of near-duplicate dedup."""
    tokens = re.findall(r"\w+", text.lower())
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def jaccard(a: str, b: str) -> float:
    """The Jaccard similarity of two texts' word 5-gram sets."""
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / max(len(sa | sb), 1)


def mmr_oracle(pool: list[dict], vectors: np.ndarray, lam: float, k: int) -> list[int]:
    """Greedy maximal marginal relevance over ``pool`` (best first): each pick maximises lam·score − (1 − lam)·max cosine to the picked."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    picked: list[int] = []
    for _ in range(k):
        gains = [-np.inf if i in picked else lam * h["score"] - (1 - lam) * max((float(unit[i] @ unit[j]) for j in picked), default=0.0)
                 for i, h in enumerate(pool)]
        picked.append(int(np.argmax(gains)))
    return [pool[i]["passage_id"] for i in picked]


@pytest.fixture(scope="module")
def coarse_two_domains(example_datastore: Path, tmp_path_factory: pytest.TempPathFactory) -> Datastore:
    """The example with its third shard relabelled ``books``, over a coarse PQ index (the example's is exact: rerank would fix nothing)."""
    root = linked_copy(example_datastore, tmp_path_factory.mktemp("two") / "ds", relabel={"wiki-00002": "books"})
    return coarse_index(massiveds.open(root))


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_every_search_option_takes_effect_in_every_mode(coarse_two_domains: Datastore, mode: str) -> None:
    """All options in one search, each checked against an oracle of its own.

    The query finds the Jargon File's "spod" and FOLDOC's near copy of it (Jaccard ≈ 0.75), both in the sample of seed 4;
    the gold is the last passage of the Jargon entry, whose first passages continue into the next. Rerank is checked in
    mode dense: hybrid rescores its candidates with exact dense scores whatever the index gives.
    """
    ds = coarse_two_domains
    passages = {p["passage_id"]: p for p in ds.passages(list(range(ds.num_passages)))}
    gold = [p for p in passages.values() if p["doc_id"] == "dict-jargon:spod"][-1]
    query, seed, rerank = "spod: a lower form of life found on talker systems", 4, None if mode == "sparse" else "exact"
    options = {"k": 5, "mode": mode, "rerank": rerank, "domains": ["wiki"], "fraction": 0.5, "seed": seed, "dedup": True,
               "dedup_threshold": 0.7, "decontaminate": [gold["text"]], "mmr": 0.1, "continuation": True}
    hits = ds.search(query, **options)
    pool = ds.search(query, **(options | {"k": 20, "mmr": None, "continuation": False}))  # what MMR chooses from
    unfiltered = ds.search(query, **(options | {"dedup": False, "decontaminate": None, "mmr": None}))
    ids = [h["passage_id"] for h in hits]
    assert len(hits) == 5
    assert all(h["shard"] != "wiki-00002" for h in pool)  # domains: the books shard is not searched
    assert keep_mask([h["doc_id"] for h in pool], 0.5, seed).all()
    # decontaminate: the gold passage would be a hit; no hit holds 80 % of the gold's 13-grams
    gold_grams = shingles(gold["text"], 13)
    assert gold["passage_id"] in [h["passage_id"] for h in unfiltered] and gold["passage_id"] not in ids
    assert all(len(shingles(h["text"], 13) & gold_grams) < 0.8 * len(gold_grams) for h in pool)
    # dedup: the plain hits hold a near-duplicate pair, the deduplicated pool none
    assert any(jaccard(a["text"], b["text"]) >= 0.7 for i, a in enumerate(unfiltered) for b in unfiltered[i + 1 :])
    assert all(jaccard(a["text"], b["text"]) < 0.7 for i, a in enumerate(pool) for b in pool[i + 1 :])
    # mmr: the greedy oracle over the pool, with the stored vectors; it changes the plain top 5
    shard = {s.name: s for s in ds.shards}
    vectors = np.stack([shard[h["shard"]].vectors[h["passage_id"] - shard[h["shard"]].id_start] for h in pool]).astype(np.float32)
    assert ids == mmr_oracle(pool, vectors, 0.1, 5) != [h["passage_id"] for h in pool[:5]]
    # continuation: the next passage of the same document, None at a document's end
    for hit in hits:
        following = passages.get(hit["passage_id"] + 1)
        expected = following["passage_id"] if following is not None and following["doc_id"] == hit["doc_id"] else None
        assert (hit["continuation"] or {}).get("passage_id") == expected
    assert any(h["continuation"] is not None for h in hits)
    if mode == "dense":  # rerank: the scores are the exact inner products, which the PQ's are not
        all_ids, all_scores = exact_scores(ds, query)
        exact = dict(zip(all_ids.tolist(), all_scores.tolist(), strict=True))
        np.testing.assert_allclose([h["score"] for h in pool], [exact[h["passage_id"]] for h in pool], rtol=1e-5)
        plain = ds.search(query, **(options | {"k": 20, "mmr": None, "continuation": False, "rerank": None}))
        assert not np.allclose([h["score"] for h in plain], [exact[h["passage_id"]] for h in plain], rtol=1e-3)


def test_a_subsample_ranks_bm25_as_the_query_time_fraction_does(ds: Datastore, example_datastore: Path, tmp_path: Path) -> None:
    subsample(example_datastore, tmp_path / "sub", 0.5, seed=3)
    sub = massiveds.open(tmp_path / "sub")
    assert sub.catalog.sparse == ds.catalog.sparse  # scored with the parent's statistics
    for query in QUERIES:
        physical = sub.search(query, k=10, mode="sparse")
        at_query = ds.search(query, k=10, mode="sparse", fraction=0.5, seed=3)
        assert [(h["doc_id"], h["char_start"]) for h in physical] == [(h["doc_id"], h["char_start"]) for h in at_query]
        np.testing.assert_allclose([h["score"] for h in physical], [h["score"] for h in at_query], rtol=1e-6)
    assert cli("verify", str(tmp_path / "sub")).returncode == 0


def test_one_shard_and_many_give_the_same_bm25_hits(small_manifest: Path, tmp_path: Path) -> None:
    """The same passages built as one shard and as several (whole-datastore statistics) score and rank alike."""
    text = small_manifest.read_text() + "sparse: {enabled: true}\n"
    many = small_manifest.with_name("many.yaml")
    many.write_text(text)
    one = small_manifest.with_name("one.yaml")
    one.write_text(text.replace("shards: {target_passages: 120}", "shards: {target_passages: 100000}"))
    for manifest in (many, one):
        cli("build", str(manifest), "--out", str(tmp_path / manifest.stem), "--engine", "local")
    a, b = massiveds.open(tmp_path / "many"), massiveds.open(tmp_path / "one")
    assert len(a.shards) > 2 and len(b.shards) == 1 and a.num_passages == b.num_passages
    for query in QUERIES:
        sa, ia = a.bm25.search([query], 20)
        sb, ib = b.bm25.search([query], 20)
        assert (ia == ib).all() and (ia >= 0).any()
        np.testing.assert_allclose(sa[ia >= 0], sb[ib >= 0], rtol=1e-6)


def test_a_copied_merge_scores_bm25_over_the_merged_passages(example_datastore: Path, tmp_path: Path) -> None:
    """Merged with --copy, the BM25 scores are those of one bm25s index over every passage of the merge."""
    from massiveds.encode.sparse import tokenizer
    from massiveds.ops.merge import merge

    subsample(example_datastore, tmp_path / "half", 0.5, seed=7)
    merged = merge([example_datastore, tmp_path / "half"], tmp_path / "merged", copy=True)
    ds = massiveds.open(tmp_path / "merged")
    assert merged.sparse is not None and merged.sparse.passages == ds.num_passages
    texts = [t for s in ds.shards for t in s.passages.column("text")]
    spec = merged.sparse
    bare = bm25s.BM25(k1=spec.k1, b=spec.b, method="lucene")
    bare.index(tokenizer(spec.tokenizer).tokenize(texts, return_as="tuple", show_progress=False), show_progress=False)
    for query in QUERIES:
        scores, ids = ds.bm25.search([query], 10)
        expected = bare.get_scores(query_terms(spec.tokenizer, [query])[0])
        np.testing.assert_allclose(scores[0], expected[ids[0]], rtol=1e-5)
        assert scores[0][0] == pytest.approx(expected.max(), rel=1e-5)
    assert cli("verify", str(tmp_path / "merged")).returncode == 0


def test_merges_without_a_common_bm25_index(example_datastore: Path, tmp_path: Path) -> None:
    from massiveds.core.catalog import catalog_text, open_catalog
    from massiveds.ops.merge import merge

    subsample(example_datastore, tmp_path / "half", 0.5, seed=7)
    proc = cli("merge", str(example_datastore), str(tmp_path / "half"), "--out", str(tmp_path / "in-place"))
    assert "the merge has no BM25 index" in proc.stderr and "--copy" in proc.stderr
    assert massiveds.open(tmp_path / "in-place").catalog.sparse is None
    assert massiveds.open(tmp_path / "in-place").search(QUERIES[0], k=3)[0]["score"] > 0  # dense
    catalog = open_catalog(tmp_path / "half")
    assert catalog.sparse is not None
    (tmp_path / "half" / "datastore.json").write_text(catalog_text(catalog.but(sparse=catalog.sparse.but(k1=0.9))))
    with pytest.raises(MassiveDSError, match="their BM25 indexes differ"):
        merge([example_datastore, tmp_path / "half"], tmp_path / "refused", copy=True)
