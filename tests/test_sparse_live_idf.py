"""Live idf (``SparseRecord.live_idf``): shards scored with the statistics of part of the corpus search as one index over all of it.

The library tests index real Jargon File entries of the shipped example; the datastore tests take the shipped example, built
with its BM25 index, and rescore it as if its first shards had been built alone and the others appended later.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import zstandard

from massiveds.core.catalog import CHECKSUMS, FileRecord, catalog_text, open_catalog, read_catalog, write_catalog
from massiveds.core.manifest import Sparse
from massiveds.core.passages import PassageFile
from massiveds.core.scatter import SCATTER, read_scatter
from massiveds.core.writer_lock import writer_lock
from massiveds.encode.sparse import (
    VOCAB_SCHEMA,
    CorpusStats,
    CountFiles,
    count_shard,
    df_partitions,
    index_shards,
    lucene_idf,
    query_terms,
    shard_vocabulary,
    write_vocab,
)
from massiveds.store.bm25_index import ShardBM25
from massiveds.store.datastore import Datastore
from tests.helpers import REPO
from tests.test_sparse import SPEC, build_shards

QUERIES = ["a program so badly written that nobody can maintain it", "hacker ethic", "the black art of kernel programming",
           "what is a kludge", "mainframe operating system from IBM", "hacker hacker humour"]


def jargon_texts() -> list[str]:
    """The real Jargon File entries of the first file of the shipped example."""
    path = REPO / "manifests/examples/data/jargon/jargon-0.jsonl.zst"
    with path.open("rb") as fh:
        return [json.loads(line)["text"] for line in io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(fh), encoding="utf-8")]


def test_df_idf_and_weights_of_a_shard(tmp_path: Path) -> None:
    shards = build_shards(jargon_texts(), 3, 2, tmp_path)
    indexes = [ShardBM25.load(folder) for folder, _ in shards]
    n = sum(index.passages for index in indexes)
    for term in query_terms(SPEC.tokenizer, ["hacker kludge zzyzx"])[0]:
        df = sum(index.df_of(term) for index in indexes)
        for index in indexes:
            every = index.scores([term])
            assert index.df_of(term) == (0 if every is None else int((every > 0).sum()))
            if (stored := index.idf_of(term)) is not None:
                assert float(lucene_idf(n, np.array([df]))[0]) == stored  # the build's formula, bit for bit
    assert sum(index.df_of("hacker") for index in indexes) > 3 and indexes[0].df_of("zzyzx") == 0
    words = ["hacker", "program", "hacker", "zzyzx"]
    index = indexes[0]
    plain = index.scores(words)
    assert plain is not None and np.array_equal(index.scores(words, {"hacker": 1.0, "program": 1.0}), plain)  # type: ignore[arg-type]
    halves = index.scores(words, {"hacker": 0.5, "program": 0.5})
    np.testing.assert_allclose(halves, plain / 2, rtol=1e-6)  # type: ignore[arg-type]
    hacker_only = index.scores(words, {"hacker": 1.0, "program": 0.0})
    np.testing.assert_allclose(hacker_only, 2 * index.scores(["hacker"]), rtol=1e-6)  # type: ignore[operator]
    assert index.scores(["zzyzx"], {}) is None


def test_an_indexed_shards_vocabulary_is_what_counting_it_gave(tmp_path: Path) -> None:
    [(folder, _), _] = build_shards(jargon_texts(), 2, 1, tmp_path)
    counted = _vocabulary(tmp_path / "count" / "0" / f"vocab{SCATTER}", 1)
    write_vocab(tmp_path / f"again{SCATTER}", *shard_vocabulary(folder), 3)
    rebuilt = _vocabulary(tmp_path / f"again{SCATTER}", 3)
    assert counted.num_rows > 1000
    for column in ("term", "id", "df"):
        assert rebuilt.column(column).to_pylist() == counted.column(column).to_pylist()


def _vocabulary(path: Path, partitions: int) -> pa.Table:
    """Every row of a vocabulary scatter file, by local id."""
    batches = [b for p in range(partitions) for b in read_scatter(path, p, VOCAB_SCHEMA, partitions)]
    return pa.Table.from_batches(batches, VOCAB_SCHEMA).sort_by("id")


@pytest.fixture(scope="module")
def appended(example_datastore: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example as if its first shards had been built alone (their N and df) and the others appended (every shard's N and df).

    The avgdl stays the example's throughout, as an append keeps it; the catalog is marked ``live_idf``.
    """
    root = tmp_path_factory.mktemp("live-idf") / "ds"
    shutil.copytree(example_datastore, root)
    catalog = open_catalog(root)
    sparse = catalog.sparse
    assert sparse is not None
    spec = Sparse(enabled=True, k1=sparse.k1, b=sparse.b, tokenizer=sparse.tokenizer)
    work = root.parent / "work"
    shards = catalog.shards_by_id
    assert len(shards) >= 3
    old, new = shards[: len(shards) // 2], shards[len(shards) // 2 :]
    folders = {s.name: root / s.folder_rel() for s in shards}
    counts = {s.name: CountFiles(work / "count" / s.name) for s in shards}
    for s in shards:
        count_shard(PassageFile(folders[s.name] / "passages.arrow").iter_column("text"), spec.tokenizer, counts[s.name],
                    df_partitions(len(shards)))
    index_shards([counts[s.name] for s in old], [folders[s.name] for s in old], [counts[s.name].vocab for s in old],
                 CorpusStats(sum(s.count for s in old), sparse.avg_length), spec, work / "old")
    for s in old:  # what an append reads off the shards it adds to
        write_vocab(work / "indexed" / f"{s.name}{SCATTER}", *shard_vocabulary(folders[s.name]), df_partitions(len(shards)))
    vocabs = [work / "indexed" / f"{s.name}{SCATTER}" for s in old] + [counts[s.name].vocab for s in new]
    index_shards([counts[s.name] for s in new], [folders[s.name] for s in new], vocabs, CorpusStats(sparse.passages, sparse.avg_length),
                 spec, work / "new")
    records = [s.but(files={name: FileRecord.of(folders[s.name] / name) for name in s.files}) for s in catalog.shards]
    with writer_lock(root, "test"):
        write_catalog(root, catalog.but(shards=records, sparse=sparse.but(live_idf=True)))
    (root / CHECKSUMS).unlink(missing_ok=True)
    return root


@pytest.mark.slow
def test_appended_shards_are_scored_as_the_whole_build_scored_them(example_datastore: Path, appended: Path) -> None:
    catalog = open_catalog(appended)
    terms = query_terms(catalog.sparse.tokenizer, QUERIES)  # type: ignore[union-attr]
    shards = catalog.shards_by_id
    for s in shards[len(shards) // 2 :]:
        ours, theirs = ShardBM25.load(appended / s.folder_rel()), ShardBM25.load(example_datastore / s.folder_rel())
        for words in terms:
            np.testing.assert_allclose(ours.scores(words), theirs.scores(words), rtol=1e-6)  # type: ignore[arg-type]
    first = ShardBM25.load(appended / shards[0].folder_rel())
    assert first.idf_of("hacker") != ShardBM25.load(example_datastore / shards[0].folder_rel()).idf_of("hacker")  # stale: the test can fail


def assert_same_ranking(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    """The same hits with the same scores (float tolerance); ids may trade places only between scores equal to that tolerance."""
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4)
    for q in range(len(want[1])):
        for score in np.unique(want[0][q]):
            assert set(got[1][q][np.isclose(want[0][q], score, rtol=1e-4)]) == set(want[1][q][np.isclose(want[0][q], score, rtol=1e-4)])


@pytest.mark.slow
def test_live_idf_searches_as_one_index_over_all_the_passages(example_datastore: Path, appended: Path) -> None:
    reference, live = Datastore.open(example_datastore), Datastore.open(appended)
    assert live.catalog.sparse is not None and live.catalog.sparse.live_idf
    want = reference.bm25.search(QUERIES, 20)
    assert (want[1][:, 0] >= 0).all()
    assert_same_ranking(live.bm25.search(QUERIES, 20), want)
    np.testing.assert_allclose(live.bm25.scores(QUERIES, want[1]), reference.bm25.scores(QUERIES, want[1]), rtol=1e-4)
    np.testing.assert_allclose(live.bm25.bound(QUERIES), reference.bm25.bound(QUERIES), rtol=1e-6)
    # a view over some shards (a domain, shards skipped) keeps the idf of the whole datastore
    one = reference.shards[0].name
    view_ref = reference.bm25_over(reference.shards.subset([s for s in reference.shards if s.name == one]))
    view_live = live.bm25_over(live.shards.subset([s for s in live.shards if s.name == one]))
    assert_same_ranking(view_live.search(QUERIES, 10), view_ref.search(QUERIES, 10))
    # without live idf the stale shards' scores stand: the ranking differs
    stale = Datastore(appended, live.catalog.but(sparse=live.catalog.sparse.but(drop=["live_idf"])))
    scores, ids = stale.bm25.search(QUERIES, 20)
    assert not np.allclose(scores, want[0], rtol=1e-4) and (ids != want[1]).any()
    assert not np.allclose(stale.bm25.bound(QUERIES), reference.bm25.bound(QUERIES), rtol=1e-6)


@pytest.mark.slow
def test_live_idf_is_written_only_when_set(example_datastore: Path, appended: Path) -> None:
    catalog = read_catalog(example_datastore)
    assert catalog_text(catalog) == (example_datastore / "datastore.json").read_text() and "live_idf" not in catalog_text(catalog)
    sparse = json.loads(catalog_text(read_catalog(appended)))["sparse"]
    assert list(sparse)[-1] == "live_idf" and sparse["live_idf"] is True
