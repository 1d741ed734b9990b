"""BM25 per shard with whole-datastore statistics (``massiveds.encode.sparse``) and hybrid fusion (``massiveds.store.fusion``).

The library tests index real Jargon File entries of the shipped example; the datastore tests use the
shipped example, built with its BM25 index.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import bm25s
import numpy as np
import pytest
import zstandard

from massiveds.core import scatter
from massiveds.core.errors import MassiveDSError
from massiveds.core.manifest import Sparse
from massiveds.encode.sparse import (
    CorpusStats,
    CountFiles,
    count_shard,
    index_shard,
    query_terms,
    subset_shard,
    sum_partition,
    tokenizer,
)
from massiveds.store.bm25_index import ShardBM25
from massiveds.store.fusion import candidates, fuse
from tests.helpers import REPO

SPEC = Sparse(enabled=True)
QUERIES = ["a program so badly written that nobody can maintain it", "hacker ethic", "the black art of kernel programming",
           "what is a kludge", "mainframe operating system from IBM"]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """The real Jargon File entries of the shipped example (466)."""
    out: list[str] = []
    for path in sorted((REPO / "manifests/examples/data/jargon").glob("jargon-*.jsonl.zst")):
        with path.open("rb") as fh:
            out += [json.loads(line)["text"] for line in io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(fh), encoding="utf-8")]
    return out


def build_shards(texts: list[str], shards: int, partitions: int, root: Path) -> list[tuple[Path, int]]:
    """The three passes over ``texts`` cut into ``shards`` contiguous shards, with ``partitions`` df partitions; (folder, passages) each."""
    size = -(-len(texts) // shards)
    groups = [texts[i : i + size] for i in range(0, len(texts), size)]
    counts = []
    for i, group in enumerate(groups):
        files = CountFiles(root / "count" / str(i))
        count_shard([group[:150], group[150:]], SPEC.tokenizer, files, partitions)  # two batches: the vocabulary grows across them
        counts.append(files)
    dfs = [root / "df" / f"{p}.parquet" for p in range(partitions)]
    for p, out in enumerate(dfs):
        sum_partition([c.vocab for c in counts], partitions, p, out)
    lengths = np.concatenate([np.load(c.lengths) for c in counts])
    stats = CorpusStats(len(lengths), float(lengths.mean()))
    folders = []
    for i, c in enumerate(counts):
        folder = root / "shards" / str(i)
        folder.mkdir(parents=True)
        index_shard(c, dfs, stats, SPEC, folder)
        folders.append((folder, len(groups[i])))
    return folders


def fan_out(shards: list[tuple[Path, int]], terms: list[list[str]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` over several shards, merged by score as ``Datastore.search_sparse`` does (shard rows offset to global ids)."""
    scores, ids, start = [], [], 0
    for folder, size in shards:
        s, rows = ShardBM25.load(folder).topk(terms, k)
        scores.append(s)
        ids.append(np.where(rows >= 0, rows + start, -1))
        start += size
    all_s, all_i = np.concatenate(scores, axis=1), np.concatenate(ids, axis=1)
    order = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(all_s, order, axis=1), np.take_along_axis(all_i, order, axis=1)


def test_one_shard_is_the_bm25s_index_of_the_same_passages(texts: list[str], tmp_path: Path) -> None:
    [(folder, _)] = build_shards(texts, 1, 1, tmp_path)
    index = ShardBM25.load(folder)
    ours = index.retriever  # bm25s reads our files
    bare = bm25s.BM25(k1=SPEC.k1, b=SPEC.b, method="lucene")
    bare.index(tokenizer(SPEC.tokenizer).tokenize(texts, return_as="tuple", show_progress=False), show_progress=False)
    for key in ("indptr", "indices"):
        assert (np.asarray(ours.scores[key]) == bare.scores[key]).all()
    np.testing.assert_allclose(ours.scores["data"], bare.scores["data"], rtol=1e-6)
    assert ours.vocab_dict == {t: i for t, i in bare.vocab_dict.items() if t != ""} | {"": 0}
    hacker = ours.vocab_dict["hacker"]
    column = slice(ours.scores["indptr"][hacker], ours.scores["indptr"][hacker + 1])
    df = column.stop - column.start
    assert index.idf_of("hacker") == pytest.approx(np.log(1 + (len(texts) - df + 0.5) / (df + 0.5)), rel=1e-6)
    assert index.idf_of("zzyzx") is None


def test_eight_shards_rank_and_score_as_one(texts: list[str], tmp_path: Path) -> None:
    """Statistics over the whole datastore: the same passages as 1 shard and as 8 give the same hits and scores."""
    terms = query_terms(SPEC.tokenizer, QUERIES)
    one = build_shards(texts, 1, 1, tmp_path / "one")
    eight = build_shards(texts, 8, 3, tmp_path / "eight")
    s1, i1 = fan_out(one, terms, 20)
    s8, i8 = fan_out(eight, terms, 20)
    np.testing.assert_allclose(s8, s1, rtol=1e-6)
    assert (i8 == i1).all() and (i1[:, 0] >= 0).all()
    mine = tmp_path / "alone"  # per-shard statistics would rank differently: the test can fail
    local = build_shards(texts[: eight[0][1]], 1, 1, mine)
    s_local, _ = ShardBM25.load(local[0][0]).topk(terms, 5)
    s_first, _ = ShardBM25.load(eight[0][0]).topk(terms, 5)
    assert not np.allclose(s_local[np.isfinite(s_local)], s_first[np.isfinite(s_first)])


def test_a_term_is_counted_once_whatever_the_partitions(texts: list[str], tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    root = tmp_path / "p"
    build_shards(texts, 4, 5, root)
    tables = [pq.read_table(root / "df" / f"{p}.parquet") for p in range(5)]
    terms = [t for table in tables for t in table.column("term").to_pylist()]
    assert len(terms) == len(set(terms)) and all(table.num_rows for table in tables)
    whole = build_shards(texts, 4, 1, tmp_path / "q")
    assert whole and sum(t.num_rows for t in tables) == pq.read_table(tmp_path / "q" / "df" / "0.parquet").num_rows


def test_the_df_passes_read_each_vocabulary_once_whatever_the_partitions(texts: list[str], tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Pass 2 over P partitions reads each shard's vocabulary file about once in all (not once per partition)."""
    root, partitions = tmp_path / "p", 6
    build_shards(texts, 4, partitions, root)
    vocabs = [CountFiles(root / "count" / str(i)).vocab for i in range(4)]
    read_bytes: list[int] = []
    pread = os.pread
    monkeypatch.setattr(scatter.os, "pread", lambda fd, n, at: read_bytes.append(n) or pread(fd, n, at))
    for p in range(partitions):
        sum_partition(vocabs, partitions, p, tmp_path / f"again-{p}.parquet")
    assert sum(v.stat().st_size for v in vocabs) * 0.8 < sum(read_bytes) < sum(v.stat().st_size for v in vocabs) * 1.2


def test_a_subset_keeps_the_scores_of_its_passages(texts: list[str], tmp_path: Path) -> None:
    [(folder, _)] = build_shards(texts, 1, 1, tmp_path / "all")
    mask = np.zeros(len(texts), dtype=bool)
    mask[::3] = True
    sub = tmp_path / "sub"
    sub.mkdir()
    subset_shard(folder, sub, mask)
    terms = query_terms(SPEC.tokenizer, QUERIES)
    whole, part = ShardBM25.load(folder), ShardBM25.load(sub)
    kept = np.nonzero(mask)[0]
    for words in terms:
        np.testing.assert_allclose(part.scores(words), whole.scores(words)[kept], rtol=1e-6)  # type: ignore[index]
    assert part.idf_of("hacker") == whole.idf_of("hacker")


def test_queries_are_cut_as_passages_are() -> None:
    assert query_terms(SPEC.tokenizer, ["The Hackers were Running", "the a of"]) == [["hacker", "were", "run"], []]  # bm25s: 33 stopwords
    plain = SPEC.tokenizer.model_copy(update={"stemmer": None, "stopwords": "none"})
    assert query_terms(plain, ["The Hackers"]) == [["the", "hackers"]]


def test_topk_leaves_out_passages_that_match_no_term_and_scores_any_row(texts: list[str], tmp_path: Path) -> None:
    [(folder, _)] = build_shards(texts[:50], 1, 1, tmp_path)
    index = ShardBM25.load(folder)
    scores, rows = index.topk([["zzyzx"], [], ["hacker"]], 10)
    assert (rows[0] == -1).all() and (rows[1] == -1).all()
    found = rows[2][rows[2] >= 0]
    assert 0 < len(found) < 50 and (np.diff(scores[2][: len(found)]) <= 0).all()
    assert all("hacker" in texts[r].lower() for r in found)
    other = next(r for r in range(50) if "hacker" not in texts[r].lower())
    at = index.scores_at([["hacker"]], np.array([[found[0], other, -1]]))
    assert at[0][0] == pytest.approx(scores[2][0]) and at[0][1] == 0 and np.isnan(at[0][2])


DENSE = (np.array([[0.9, 0.8, 0.5, -np.inf]]), np.array([[10, 11, 12, -1]]))
SPARSE = (np.array([[7.0, 3.0, 1.0, 0.5]]), np.array([[12, 13, 10, 14]]))
IDS = candidates(DENSE[1], SPARSE[1])
#: every candidate scored by both: 13 and 14 by the dense side too, 11 by BM25 (it holds no query term)
DENSE_ALL = np.array([[0.9, 0.8, 0.5, 0.45, 0.2]])
SPARSE_ALL = np.array([[1.0, 0.0, 7.0, 3.0, 0.5]])
BOUND = np.array([10.0])


def fused_ids(alpha: float, method: str = "convex", k: int = 5) -> list[int]:
    return [int(i) for i in fuse(DENSE, SPARSE, IDS, DENSE_ALL, SPARSE_ALL, BOUND, k, alpha, method).ids[0]]


def test_candidates_are_the_union_of_both_lists() -> None:
    assert IDS.tolist() == [[10, 11, 12, 13, 14]]
    assert candidates(np.array([[-1, -1]]), np.array([[-1]])).tolist() == [[-1]]


def test_alpha_one_and_zero_rank_by_one_score() -> None:
    assert fused_ids(1.0) == [10, 11, 12, 13, 14]  # by dense score
    assert fused_ids(0.0) == [12, 13, 10, 14, 11]  # by BM25 (11 holds no query term)
    assert fused_ids(1.0, "rrf", 4) == [10, 11, 12, 13]
    assert fused_ids(0.0, "rrf", 4) == [12, 13, 10, 14]


def test_convex_fusion_divides_bm25_by_its_bound() -> None:
    fused = fuse(DENSE, SPARSE, IDS, DENSE_ALL, SPARSE_ALL, BOUND, 5, 0.5)
    expected = {10: 0.5 * 0.9 + 0.5 * 0.1, 11: 0.5 * 0.8, 12: 0.5 * 0.5 + 0.5 * 0.7, 13: 0.5 * 0.45 + 0.5 * 0.3, 14: 0.5 * 0.2 + 0.5 * 0.05}
    assert fused.ids[0].tolist() == [12, 10, 11, 13, 14]
    np.testing.assert_allclose(fused.scores[0], [expected[i] for i in fused.ids[0]])
    np.testing.assert_allclose(fused.dense[0], [0.5, 0.9, 0.8, 0.45, 0.2])
    np.testing.assert_allclose(fused.sparse[0], [7.0, 1.0, 0.0, 3.0, 0.5])
    # a candidate's fused score depends on the query and the passage alone: dropping others changes nothing
    alone = fuse(DENSE, SPARSE, IDS[:, 2:3], DENSE_ALL[:, 2:3], SPARSE_ALL[:, 2:3], BOUND, 5, 0.5)
    assert alone.scores[0][0] == fused.scores[0][0]


def test_rrf_fusion_of_ranks_in_the_two_lists() -> None:
    fused = fuse(DENSE, SPARSE, IDS, DENSE_ALL, SPARSE_ALL, BOUND, 5, 0.5, "rrf")
    expected = {10: 0.5 / 61 + 0.5 / 63, 11: 0.5 / 62, 12: 0.5 / 63 + 0.5 / 61, 13: 0.5 / 62, 14: 0.5 / 64}
    np.testing.assert_allclose(fused.scores[0], [expected[i] for i in fused.ids[0]])
    assert fused.ids[0].tolist() == [10, 12, 11, 13, 14]  # ties: the smaller id first


def test_no_candidates_pads() -> None:
    empty = (np.full((1, 2), -np.inf), np.full((1, 2), -1))
    ids = candidates(empty[1], empty[1])
    fused = fuse(empty, empty, ids, np.full(ids.shape, -np.inf), np.full(ids.shape, np.nan), np.zeros(1), 2, 0.5)
    assert (fused.ids == -1).all() and np.isneginf(fused.scores).all()


@pytest.mark.parametrize("options, message", [
    ({"alpha": 1.5}, r"alpha .* must be in \[0, 1\], got 1.5"),
    ({"mode": "fuzzy"}, "mode must be one of dense, sparse, hybrid, got 'fuzzy'"),
    ({"fusion": "max"}, "fusion must be one of convex, rrf, got 'max'"),
    ({"mode": "sparse", "rerank": "exact"}, "rerank exact refines dense scores and mode sparse has none"),
])
def test_bad_hybrid_options_are_one_line_errors(options: dict[str, object], message: str) -> None:
    from massiveds.store.search import SearchOptions

    with pytest.raises(MassiveDSError, match=message):
        SearchOptions.create(**options)  # type: ignore[arg-type]
