"""Search options on the shipped example datastore: batching, domains, nprobe/rerank forwarding, subsampling,
dedup, decontamination, MMR, continuations, and shards that are missing or broken."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import massiveds
from massiveds.core.errors import DatastoreError, MassiveDSError, ShardSkippedWarning
from massiveds.store.datastore import Datastore
from massiveds.store.dense import DenseRetriever
from massiveds.store.sampling import keep_mask
from massiveds.store.search import SearchOptions
from tests.helpers import coarse_index, exact_top
from tests.helpers import massiveds as cli

pytestmark = pytest.mark.slow

HIT_KEYS = {"passage_id", "score", "domain", "doc_id", "source", "url", "title", "char_start", "char_end", "text", "shard"}


@pytest.fixture(scope="module")
def ds(example_datastore: Path) -> Datastore:
    return massiveds.open(example_datastore)


def linked_copy(src: Path, dst: Path, relabel: dict[str, str] | None = None) -> Path:
    """A datastore at ``dst`` whose files are hard links to ``src``'s (cheap; unlink one to break it), shards relabelled by domain.

    Hard links, not symlinks: a datastore's symlink that leads outside it is refused (docs/security.md).
    """
    catalog = json.loads((src / "datastore.json").read_text())
    for shard in catalog["shards"]:
        shard["domain"] = (relabel or {}).get(shard["name"], shard["domain"])
        folder = dst / "shards" / shard["name"]
        folder.mkdir(parents=True)
        for f in (src / "shards" / shard["name"]).iterdir():
            os.link(f, folder / f.name)
    (dst / "datastore.json").write_text(json.dumps(catalog))
    return dst


def ids(hits: list[dict[str, Any]]) -> list[int]:
    return [h["passage_id"] for h in hits]


def test_batched_search_matches_single_queries(ds: Datastore) -> None:
    queries = ["what is a kludge", "a lower form of life found on talker systems", "black art"]
    batch = ds.search(queries, k=4)
    assert len(batch) == 3
    for q, hits in zip(queries, batch, strict=True):
        single = ds.search(q, k=4)
        assert ids(single) == ids(hits) and len(hits) == 4
        assert all(set(h) >= HIT_KEYS for h in hits)
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_domains_select_shards(ds: Datastore, example_datastore: Path, tmp_path: Path) -> None:
    assert ids(ds.search("hacker humour", k=8, domains=["wiki"])) == ids(ds.search("hacker humour", k=8))
    with pytest.raises(DatastoreError, match=r"unknown domain 'books'.*has: wiki"):
        ds.search("hacker humour", domains="books")
    two = massiveds.open(linked_copy(example_datastore, tmp_path / "two", relabel={"wiki-00001": "books"}))
    assert two.domains == ["books", "wiki"]
    books = two.search("hacker humour", k=8, domains="books")
    wiki = two.search("hacker humour", k=8, domains=["wiki"])
    assert len(books) == 8 and {h["shard"] for h in books} == {"wiki-00001"}
    assert len(wiki) == 8 and "wiki-00001" not in {h["shard"] for h in wiki}
    proc = cli("search", str(example_datastore), "x", "--domains", "wiki,books", check=False)
    assert proc.returncode == 2 and "unknown domain 'books'" in proc.stderr and "Traceback" not in proc.stderr


def test_nprobe_and_rerank_are_forwarded_and_rerank_gives_the_exact_top_k(example_datastore: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over a coarse PQ index of the example, plain dense hits miss the exact top k and reranked ones equal a brute-force oracle."""
    ds = coarse_index(massiveds.open(example_datastore))
    calls: list[dict[str, Any]] = []
    original = DenseRetriever.search

    def recording(self: DenseRetriever, queries: np.ndarray, k: int = 10, nprobe: int | None = None, rerank: str | None = None,
                  rerank_depth: int | None = None) -> Any:
        calls.append({"k": k, "nprobe": nprobe, "rerank": rerank})
        return original(self, queries, k=k, nprobe=nprobe, rerank=rerank, rerank_depth=rerank_depth)

    monkeypatch.setattr(DenseRetriever, "search", recording)
    query = "what is a kludge"
    plain = ds.search(query, k=10, nprobe=7, mode="dense")
    reranked = ds.search(query, k=10, rerank="exact", mode="dense")
    assert calls == [{"k": 10, "nprobe": 7, "rerank": None}, {"k": 10, "nprobe": None, "rerank": "exact"}]
    oracle, scores = exact_top(ds, query, 10)
    assert ids(plain) != oracle  # the PQ codes lose the order: rerank has something to fix
    assert ids(reranked) == oracle
    np.testing.assert_allclose([h["score"] for h in reranked], scores, rtol=1e-5)
    with pytest.raises(MassiveDSError, match="rerank must be one of"):
        ds.search("x", rerank="bogus")
    with pytest.raises(MassiveDSError, match="nprobe"):
        ds.search("x", nprobe=0)


@pytest.mark.parametrize(("fraction", "seed"), [(0.3, 7), (0.05, 1)])
def test_fraction_returns_k_hits_from_sampled_documents(ds: Datastore, fraction: float, seed: int) -> None:
    q = "a program so badly written that nobody can maintain it"
    result = ds.search_batch([q], SearchOptions.create(k=10, fraction=fraction, seed=seed))
    hits = result.hits[0]
    assert len(hits) == 10
    assert keep_mask([h["doc_id"] for h in hits], fraction, seed).all()
    # exactly the top 10 sampled hits of an exhaustive search (the example's index is exact)
    everything = ds.search(q, k=ds.num_passages)
    sampled = [h for h, keep in zip(everything, keep_mask([h["doc_id"] for h in everything], fraction, seed), strict=True) if keep]
    assert ids(hits) == ids(sampled[:10])
    if fraction == 0.05:  # the first candidate count was not enough: the search grew it
        assert result.candidates[0] > SearchOptions.create(k=10, fraction=fraction).first_fetch()


def test_dedup_drops_the_real_foldoc_copy_of_a_jargon_entry(ds: Datastore) -> None:
    # The Jargon File and FOLDOC both define "spod" with near-identical text (word 5-gram Jaccard ≈ 0.75).
    plain = ds.search("spod", k=5)
    docs = [h["doc_id"] for h in plain]
    assert "dict-jargon:spod" in docs and "dict-foldoc:spod" in docs
    deduped = ds.search("spod", k=5, dedup=True, dedup_threshold=0.7)
    foldoc = next(h for h in plain if h["doc_id"] == "dict-foldoc:spod")
    jargon_first = next(h for h in plain if h["text"].startswith("spod"))
    assert len(deduped) == 5
    assert foldoc["passage_id"] not in ids(deduped) and jargon_first["passage_id"] in ids(deduped)
    assert jargon_first["score"] > foldoc["score"]
    # at the default threshold (0.8) the two entries are not copies
    assert foldoc["passage_id"] in ids(ds.search("spod", k=5, dedup=True))


def test_decontaminate_drops_hits_that_contain_the_gold(ds: Datastore) -> None:
    q = "what is a kludge"
    plain = ds.search(q, k=5)
    gold = " ".join(plain[0]["text"].split()[5:45])
    clean = ds.search(q, k=5, decontaminate=gold)
    assert plain[0]["passage_id"] not in ids(clean) and len(clean) == 5
    assert ids(clean)[:3] == ids(plain)[1:4]
    with pytest.raises(MassiveDSError, match="fewer than the 13-gram"):
        ds.search(q, decontaminate="kludge")


def mean_pairwise_cosine(vectors: np.ndarray) -> float:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sim = unit @ unit.T
    n = len(vectors)
    return float((sim.sum() - n) / (n * (n - 1)))


def test_mmr_diversifies_and_is_plain_ranking_at_one(ds: Datastore) -> None:
    q = "hacker slang for a crude but working fix"
    plain = ds.search(q, k=8)
    assert ids(ds.search(q, k=8, mmr=1.0)) == ids(plain)
    diverse = ds.search(q, k=8, mmr=0.3)
    assert len(diverse) == 8 and ids(diverse) != ids(plain) and diverse[0]["passage_id"] == plain[0]["passage_id"]
    assert mean_pairwise_cosine(ds.dense.vectors(diverse)) < mean_pairwise_cosine(ds.dense.vectors(plain))


def test_mmr_reembeds_hits_when_vectors_are_not_stored(ds: Datastore, example_datastore: Path, tmp_path: Path) -> None:
    root = linked_copy(example_datastore, tmp_path / "novec")
    for f in root.glob("shards/*/vectors.npy"):
        f.unlink()
    bare = massiveds.open(root)
    hits = ds.search("what is a kludge", k=6)
    stored, embedded = ds.dense.vectors(hits), bare.dense.vectors(hits)
    cos = np.sum(stored * embedded, axis=1) / np.linalg.norm(stored, axis=1) / np.linalg.norm(embedded, axis=1)
    assert cos.min() > 0.99
    assert len(bare.search("what is a kludge", k=6, mmr=0.5)) == 6


def test_continuation_is_the_next_passage_of_the_same_document(ds: Datastore) -> None:
    hits = ds.search(["a lower form of life found on talker systems", "kludge"], k=10, continuation=True)
    flat = [h for q in hits for h in q]
    with_next = [h for h in flat if h["continuation"] is not None]
    without = [h for h in flat if h["continuation"] is None]
    assert with_next and without
    for h in with_next:
        c = h["continuation"]
        assert c["passage_id"] == h["passage_id"] + 1 and c["doc_id"] == h["doc_id"] and c["char_start"] > h["char_start"]
    for h in without:  # the hit is the last passage of its document
        nxt = h["passage_id"] + 1
        assert nxt >= ds.num_passages or ds.passages([nxt])[0]["doc_id"] != h["doc_id"]


def test_missing_shard_is_skipped_with_a_warning_and_fails_with_strict(example_datastore: Path, tmp_path: Path) -> None:
    root = linked_copy(example_datastore, tmp_path / "broken")
    (root / "shards" / "wiki-00001" / "index.faiss").unlink()
    (root / "shards" / "wiki-00002" / "passages.arrow").unlink()
    (root / "shards" / "wiki-00002" / "passages.arrow").write_bytes(b"not an arrow file")
    broken = massiveds.open(root)
    with pytest.warns(ShardSkippedWarning) as warned:
        result = broken.search_batch(["what is a kludge"], SearchOptions.create(k=5))
    messages = sorted(str(w.message) for w in warned)
    assert len(messages) == 2 and "wiki-00001 of jargon-example skipped: index.faiss is missing" in messages[0]
    assert set(result.skipped_shards) == {"wiki-00001", "wiki-00002"}
    assert "unreadable" in result.skipped_shards["wiki-00002"]
    assert len(result.hits[0]) == 5 and {h["shard"] for h in result.hits[0]} == {"wiki-00000"}
    with pytest.raises(DatastoreError, match=r"shard wiki-00001 .* unusable: index\.faiss is missing"):
        massiveds.open(root).search("what is a kludge", strict=True)

    proc = cli("search", str(root), "what is a kludge", "-k", "3", "--json")
    assert "warning: shard wiki-00001 skipped: index.faiss is missing" in proc.stderr
    assert len(json.loads(proc.stdout)) == 3
    strict = cli("search", str(root), "what is a kludge", "--strict", check=False)
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    lines = [line for line in strict.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and "wiki-00001" in lines[0] and "index.faiss is missing" in lines[0]


def test_cli_options_together(example_datastore: Path) -> None:
    proc = cli("search", str(example_datastore), "what is a kludge", "hacker", "-k", "4", "--dedup", "--mmr", "0.5",
               "--continuation", "--fraction", "0.5", "--seed", "3", "--nprobe", "4", "--json")
    out = json.loads(proc.stdout)
    assert [o["query"] for o in out] == ["what is a kludge", "hacker"]
    for o in out:
        assert len(o["hits"]) == 4 and all("continuation" in h for h in o["hits"])
        assert keep_mask([h["doc_id"] for h in o["hits"]], 0.5, 3).all()
    text = cli("search", str(example_datastore), "what is a kludge", "-k", "2", "--continuation").stdout
    assert "↳" in text
    bad = cli("search", str(example_datastore), "x", "--mmr", "1.5", check=False)
    assert bad.returncode == 2
