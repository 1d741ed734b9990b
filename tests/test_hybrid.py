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
from tests.helpers import massiveds as cli

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


def test_every_search_option_works_in_every_mode(ds: Datastore) -> None:
    golds = [h["text"] for h in ds.search(QUERIES[1], k=1, mode="sparse")]
    for mode in ("dense", "sparse", "hybrid"):
        rerank = None if mode == "sparse" else "exact"
        hits = ds.search(QUERIES[1], k=5, mode=mode, domains=["wiki"], fraction=0.5, seed=1, dedup=True, decontaminate=golds,
                         mmr=0.5, continuation=True, rerank=rerank)
        assert 0 < len(hits) <= 5 and all(h["text"] != golds[0] for h in hits)


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
        sa, ia = a.search_sparse([query], 20)
        sb, ib = b.search_sparse([query], 20)
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
        scores, ids = ds.search_sparse([query], 10)
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
