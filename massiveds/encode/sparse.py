"""BM25 over a datastore's passages: a bm25s index per shard, scored with the statistics of the whole datastore.

bm25s (Lucene's variant) scores passage d for a query as the sum, over the query's terms t, of

    idf(t) · tf(t, d) / (tf(t, d) + k1 · (1 − b + b · |d| / avgdl)),   idf(t) = ln(1 + (N − df(t) + 0.5) / (df(t) + 0.5))

N, df and avgdl describe the whole corpus: a shard indexed with its own would rank differently from one
index over every passage, and its scores could not be compared with another shard's. The build
therefore works in three passes (``pipelines/stages/sparse.py``), and none holds the vocabulary of
everything:

1. ``count_shard``, per shard: tokenize once; keep the token ids, the passages' lengths and the shard's
   vocabulary with each term's document frequency in the shard, routed to the hash partitions of the terms
   in one scatter file (``massiveds.core.scatter``).
2. ``sum_partition``, per hash partition of the terms: the shards' rows of that partition (one read of each
   scatter file's part) summed into each term's df over the datastore. Every vocabulary byte is read once
   here, whatever the number of partitions: ``P = ⌈shards / SHARDS_PER_DF_PARTITION⌉``, and since a shard's
   vocabulary is bounded by its passages, a partition holds the rows of about that many shards' vocabularies.
3. ``index_shard``, per shard: the shard's terms joined with their datastore df, every (term, passage)
   score computed with the datastore's N and avgdl and written in bm25s's on-disk format.

Each stored score is then the one a single bm25s index over all the passages holds, and a shard loads
with ``bm25s.BM25.load`` (memory-mapped). Scores go to a term-major (CSC) matrix by a counting sort:
a term's column length is its document frequency in the shard, known from pass 1, so passages are
placed block by block into memory-mapped arrays without sorting the whole shard at once.

Live idf. Shards added to a datastore later (``massiveds append``) are scored with the statistics of
all the shards then (N and df; avgdl stays the first build's), and the shards already there keep
their files, so their stored scores carry a stale idf. The catalog's ``sparse.live_idf`` says so:
search then takes each query term's df from the shards' own columns, its idf (``LiveStats``, ``lucene_idf``)
with N the passages of all the shards, and weighs each shard's column of the term by that idf over the one
the shard was scored with (``massiveds.store.bm25``). The tf part
of a stored score does not depend on N or df, so the weighted sums are the scores one index holds.
"""

from __future__ import annotations

import json
import math
import shutil
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from massiveds.core.layout import atomic_path, write_array, write_json
from massiveds.core.manifest import Sparse, SparseTokenizer
from massiveds.core.scatter import SCATTER, read_scatter, scatter_file

#: bm25s's file names, prefixed so they sit beside the shard's other files (the catalog checksums a shard's files).
FILES = {"data_name": "sparse.data.npy", "indices_name": "sparse.indices.npy", "indptr_name": "sparse.indptr.npy",
         "vocab_name": "sparse.vocab.json", "params_name": "sparse.params.json"}
#: Each term's idf (by the shard's term ids), beside bm25s's files: the bound hybrid search divides BM25 scores by.
IDF_FILE = "sparse.idf.npy"
#: Every file of a shard's BM25 index.
SHARD_FILES = (*FILES.values(), IDF_FILE)
#: bm25s's scoring variant; the idf and tf formulas of the module docstring.
METHOD = "lucene"
#: Tokens scored at once while writing a shard's matrix (bounds the index pass's memory, whatever the shard size).
BLOCK_TOKENS = 1 << 22
#: Shards whose vocabularies one pass-2 partition holds, about (its memory grows with it, not with the datastore).
SHARDS_PER_DF_PARTITION = 8
#: A vocabulary row as pass 1 scatters it: the term, its local id in the shard, its df in the shard.
VOCAB_SCHEMA = pa.schema([("term", pa.string()), ("id", pa.int32()), ("df", pa.int64())])


def tokenizer(spec: SparseTokenizer) -> Any:
    """A fresh bm25s tokenizer for ``spec`` (its vocabulary grows with what it tokenizes)."""
    import Stemmer
    from bm25s.tokenization import Tokenizer

    stemmer = Stemmer.Stemmer(spec.stemmer) if spec.stemmer else None
    return Tokenizer(lower=spec.lowercase, stopwords=spec.stopwords if spec.stopwords != "none" else [], stemmer=stemmer)


def query_terms(spec: SparseTokenizer, queries: Sequence[str]) -> list[list[str]]:
    """Each query's terms, cut as the passages were (no empty term: a query of stopwords matches nothing)."""
    tokens = tokenizer(spec).tokenize(list(queries), update_vocab=True, return_as="string", show_progress=False)
    return [[t for t in q if t] for q in tokens]


def term_hash(terms: Iterable[str]) -> np.ndarray:
    """A stable 32-bit hash of each term (CRC-32): the df partition it goes to is ``hash % partitions``."""
    return np.fromiter((zlib.crc32(t.encode()) for t in terms), dtype=np.uint32)


@dataclass(frozen=True)
class CountFiles:
    """Where pass 1 leaves one shard's counts: token ids, passage lengths, and its vocabulary table."""

    folder: Path

    @property
    def tokens(self) -> Path:
        return self.folder / "tokens.i32"

    def read_tokens(self) -> np.ndarray:
        """The shard's token ids, passage after passage, memory-mapped."""
        if self.tokens.stat().st_size == 0:
            return np.zeros(0, dtype=np.int32)
        return np.memmap(self.tokens, dtype=np.int32, mode="r")

    @property
    def lengths(self) -> Path:
        return self.folder / "lengths.npy"

    @property
    def vocab(self) -> Path:
        return self.folder / f"vocab{SCATTER}"


@dataclass(frozen=True)
class ShardCounts:
    """What pass 1 found in one shard."""

    passages: int
    tokens: int
    terms: int


def count_shard(texts: Iterable[Sequence[str]], spec: SparseTokenizer, out: CountFiles, partitions: int) -> ShardCounts:
    """Pass 1: tokenize a shard's passages (batches of texts, in id order) and write its token ids, lengths and vocabulary.

    Token ids stream to a raw int32 file as they come; the vocabulary (``write_vocab``) holds each term's local id and
    its document frequency in the shard, routed to ``partitions`` hash partitions.
    """
    tok = tokenizer(spec)
    lengths: list[np.ndarray] = []
    out.folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(out.tokens) as tmp, open(tmp, "wb") as sink:
        for batch in texts:
            docs = tok.tokenize(list(batch), update_vocab=True, return_as="ids", show_progress=False)
            lengths.append(np.fromiter((len(d) for d in docs), dtype=np.int32, count=len(docs)))
            sink.write(np.fromiter((t for d in docs for t in d), dtype=np.int32, count=int(lengths[-1].sum())).tobytes())
    length = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int32)
    write_array(out.lengths, length)
    terms = _by_id(tok.get_vocab_dict())
    write_vocab(out.vocab, terms, _shard_df(out.read_tokens(), length, len(terms)), partitions)
    return ShardCounts(passages=len(length), tokens=int(length.sum()), terms=len(terms))


def _by_id(vocab: dict[str, int]) -> list[str]:
    """The terms of a vocabulary (term -> id, ids 0..n-1) by id."""
    terms = [""] * len(vocab)
    for term, i in vocab.items():
        terms[i] = term
    return terms


def write_vocab(out: Path, terms: Sequence[str], df: np.ndarray, partitions: int) -> None:
    """A shard's vocabulary as pass 2 reads it: each term (by local id), its id and its df in the shard, in a scatter file
    routed by ``term_hash % partitions``."""
    table = pa.table([pa.array(terms, pa.string()), pa.array(np.arange(len(terms), dtype=np.int32)),
                      pa.array(np.asarray(df, dtype=np.int64))], schema=VOCAB_SCHEMA)
    out.parent.mkdir(parents=True, exist_ok=True)
    with scatter_file(out, VOCAB_SCHEMA, partitions) as scatter:
        scatter.write(table, (term_hash(terms) % partitions).astype(np.int64))


def indexed_passages(folder: Path) -> int:
    """The passages an indexed shard's BM25 index holds (its params file: the index itself is not loaded)."""
    return int(json.loads((folder / FILES["params_name"]).read_text(encoding="utf-8"))["num_docs"])


def shard_vocabulary(folder: Path) -> tuple[list[str], np.ndarray]:
    """An indexed shard's terms by local id and their df in it (column lengths), read off its BM25 files: no passage tokenized again."""
    vocab = json.loads((folder / FILES["vocab_name"]).read_text(encoding="utf-8"))
    return _by_id(vocab), np.diff(np.load(folder / FILES["indptr_name"], allow_pickle=False))


def _blocks(lengths: np.ndarray) -> Iterable[tuple[int, int, int, int]]:
    """(first passage, end passage, first token, end token) of consecutive blocks of about ``BLOCK_TOKENS`` tokens."""
    ends = np.cumsum(lengths, dtype=np.int64)
    start_doc, start_tok = 0, 0
    while start_doc < len(lengths):
        stop = int(np.searchsorted(ends, start_tok + BLOCK_TOKENS, side="right"))
        stop = max(stop, start_doc + 1)
        yield start_doc, stop, start_tok, int(ends[stop - 1])
        start_doc, start_tok = stop, int(ends[stop - 1])


def _block_terms(tokens: np.ndarray, lengths: np.ndarray, lo: int, hi: int, t0: int, t1: int,
                 vocab: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(passage, term, term frequency) of every distinct term of passages [lo, hi), sorted by passage then term."""
    docs = np.repeat(np.arange(lo, hi, dtype=np.int64), lengths[lo:hi])
    keys, tf = np.unique(docs * vocab + np.asarray(tokens[t0:t1], dtype=np.int64), return_counts=True)
    return keys // vocab, keys % vocab, tf


def _shard_df(tokens: np.ndarray, lengths: np.ndarray, vocab: int) -> np.ndarray:
    """Passages of the shard holding each term (int64, by local id)."""
    df = np.zeros(vocab, dtype=np.int64)
    for lo, hi, t0, t1 in _blocks(lengths):
        _, terms, _ = _block_terms(tokens, lengths, lo, hi, t0, t1, vocab)
        df += np.bincount(terms, minlength=vocab)
    return df


def sum_partition(vocab_files: Sequence[Path], partitions: int, part: int, out: Path) -> int:
    """Pass 2: the datastore df of every term of hash partition ``part`` (summed over the shards' vocabularies); returns its terms."""
    batches = [b for path in vocab_files for b in read_scatter(path, part, VOCAB_SCHEMA, partitions)]
    rows = pa.Table.from_batches(batches, VOCAB_SCHEMA).select(["term", "df"])
    merged = rows.group_by("term").aggregate([("df", "sum")]).rename_columns(["term", "df"])
    with atomic_path(out) as tmp:
        pq.write_table(merged, tmp, compression="zstd")
    return merged.num_rows


def global_df(vocab_file: Path, partition_files: Sequence[Path]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The shard's terms by local id, their df in the shard and in the datastore (pass 2's partitions)."""
    pieces = []
    for part, path in enumerate(partition_files):
        mine = pa.Table.from_batches(read_scatter(vocab_file, part, VOCAB_SCHEMA, len(partition_files)), VOCAB_SCHEMA)
        if mine.num_rows:
            joined = mine.join(pq.read_table(path).rename_columns(["term", "whole"]), "term", join_type="inner")
            pieces.append(joined)
    local = pa.concat_tables(pieces) if pieces else VOCAB_SCHEMA.append(pa.field("whole", pa.int64())).empty_table()
    order = np.argsort(np.asarray(local.column("id")))
    terms = local.column("term").to_pylist()
    return [terms[i] for i in order], np.asarray(local.column("df"))[order], np.asarray(local.column("whole"))[order]


@dataclass(frozen=True)
class CorpusStats:
    """The datastore's BM25 statistics: passages N and average passage length in terms."""

    passages: int
    avg_length: float

    @classmethod
    def of(cls, shards: Sequence[ShardCounts]) -> CorpusStats:
        """The statistics of the shards counted by pass 1, together."""
        passages = sum(s.passages for s in shards)
        return cls(passages, sum(s.tokens for s in shards) / max(passages, 1))


def df_partitions(shards: int) -> int:
    """Hash partitions of the terms for pass 2: one per ``SHARDS_PER_DF_PARTITION`` shards (counted before pass 1 writes)."""
    return max(1, math.ceil(shards / SHARDS_PER_DF_PARTITION))


def lucene_idf(passages: int, df: np.ndarray) -> np.ndarray:
    """Each term's idf (float32) among ``passages`` passages given its document frequency: the formula of the module docstring."""
    with np.errstate(divide="ignore"):
        return np.log(1 + (passages - df + 0.5) / (df + 0.5)).astype(np.float32)


def index_shard(counts: CountFiles, partition_files: Sequence[Path], stats: CorpusStats, spec: Sparse, folder: Path) -> int:
    """Pass 3: one shard's bm25s index, scored with the datastore's statistics, written into ``folder``; returns its bytes."""
    terms, shard_df, whole_df = global_df(counts.vocab, partition_files)
    tokens = counts.read_tokens()
    lengths = np.load(counts.lengths, allow_pickle=False)
    vocab = len(terms)
    idf = lucene_idf(stats.passages, whole_df)
    indptr = np.zeros(vocab + 1, dtype=np.int64)
    np.cumsum(shard_df, out=indptr[1:])
    with atomic_path(folder / FILES["data_name"]) as data_tmp, atomic_path(folder / FILES["indices_name"]) as indices_tmp:
        data = np.lib.format.open_memmap(data_tmp, mode="w+", dtype=np.float32, shape=(int(indptr[-1]),))
        indices = np.lib.format.open_memmap(indices_tmp, mode="w+", dtype=np.int32, shape=(int(indptr[-1]),))
        cursor = indptr[:-1].copy()
        for lo, hi, t0, t1 in _blocks(lengths):
            docs, term, tf = _block_terms(tokens, lengths, lo, hi, t0, t1, vocab)
            norm = spec.k1 * (1 - spec.b + spec.b * lengths[docs] / stats.avg_length)
            score = idf[term] * (tf / (tf + norm))
            order = np.argsort(term, kind="stable")  # passages stay in id order within a term
            term, docs, score = term[order], docs[order], score[order]
            per_term = np.bincount(term, minlength=vocab)
            rank = np.arange(len(term)) - (np.cumsum(per_term) - per_term)[term]
            at = cursor[term] + rank
            data[at] = score
            indices[at] = docs
            cursor += per_term
        assert (cursor == indptr[1:]).all(), "every term's column is filled exactly"
        data.flush()
        indices.flush()
        del data, indices
    write_array(folder / FILES["indptr_name"], indptr)
    write_array(folder / IDF_FILE, idf)
    write_json(folder / FILES["vocab_name"], {t: i for i, t in enumerate(terms)}, indent=None, ensure_ascii=False)
    write_json(folder / FILES["params_name"], bm25s_params(spec, len(lengths)), indent=None, ensure_ascii=False)
    return sum((folder / name).stat().st_size for name in SHARD_FILES)


def bm25s_params(spec: Sparse, passages: int) -> dict[str, Any]:
    """bm25s's ``params.index.json`` for a shard of ``passages``."""
    import bm25s

    return {"k1": spec.k1, "b": spec.b, "delta": 0.5, "method": METHOD, "idf_method": METHOD, "dtype": "float32", "int_dtype": "int32",
            "num_docs": passages, "version": bm25s.__version__, "backend": "numpy"}


@dataclass(frozen=True)
class LiveStats:
    """A datastore's BM25 statistics now: N and each term's df summed over its shards (what ``live_idf`` search uses)."""

    passages: int
    df: dict[str, int]

    @classmethod
    def of(cls, folders: Sequence[Path]) -> LiveStats:
        """The statistics of the shards in ``folders`` (their vocabularies held at once: one dict of every term)."""
        df: dict[str, int] = {}
        passages = 0
        for folder in folders:
            terms, counts = shard_vocabulary(folder)
            for term, n in zip(terms, counts.tolist(), strict=True):
                df[term] = df.get(term, 0) + n
            passages += indexed_passages(folder)
        return cls(passages, df)

    def idf(self, terms: Sequence[str]) -> np.ndarray:
        """Each term's idf with these statistics."""
        return lucene_idf(self.passages, np.array([self.df.get(t, 0) for t in terms], dtype=np.int64))


def subset_shard(src: Path, dst: Path, mask: np.ndarray, live: LiveStats | None = None) -> None:
    """The BM25 index of the passages of ``src`` selected by ``mask``, renumbered from 0, written into ``dst``.

    Scores are copied, not recomputed: the subset keeps the statistics it was scored with, so it ranks
    its passages exactly as the whole index does (a physical subsample agrees with query-time ``fraction``).
    With ``live`` (a ``live_idf`` datastore's statistics now), each term's scores are rescaled to them first,
    as its searches rescale them: the subset's files then hold the scores its parent searches with.
    """
    indptr = np.load(src / FILES["indptr_name"], allow_pickle=False)
    data = np.load(src / FILES["data_name"], mmap_mode="r", allow_pickle=False)
    indices = np.load(src / FILES["indices_name"], mmap_mode="r", allow_pickle=False)
    assert len(indptr) >= 1 and indptr[-1] == len(data) == len(indices), f"{src}: BM25 arrays of different lengths"
    idf = np.load(src / IDF_FILE, allow_pickle=False)
    now = idf if live is None else live.idf(shard_vocabulary(src)[0])
    scale = np.divide(now, idf, out=np.ones_like(idf), where=idf != 0).astype(np.float32)
    new_row = np.cumsum(mask, dtype=np.int64) - 1
    kept_per_term = np.zeros(len(indptr) - 1, dtype=np.int64)
    scores: list[np.ndarray] = [np.zeros(0, np.float32)]
    rows_kept: list[np.ndarray] = [np.zeros(0, np.int32)]
    for lo in range(0, len(data), BLOCK_TOKENS):
        hi = min(len(data), lo + BLOCK_TOKENS)
        rows = np.asarray(indices[lo:hi])
        keep = mask[rows]
        terms = np.searchsorted(indptr, np.arange(lo, hi)[keep], side="right") - 1
        kept_per_term += np.bincount(terms, minlength=len(kept_per_term))
        scores.append(np.asarray(data[lo:hi])[keep] * scale[terms])  # scale 1 without ``live``: the scores as they are
        rows_kept.append(new_row[rows[keep]].astype(np.int32))
    new_indptr = np.zeros_like(indptr)
    np.cumsum(kept_per_term, out=new_indptr[1:])
    write_array(dst / FILES["data_name"], np.concatenate(scores))
    write_array(dst / FILES["indices_name"], np.concatenate(rows_kept))
    write_array(dst / FILES["indptr_name"], new_indptr)
    params = json.loads((src / FILES["params_name"]).read_text(encoding="utf-8")) | {"num_docs": int(mask.sum())}
    write_json(dst / FILES["params_name"], params, indent=None, ensure_ascii=False)
    write_array(dst / IDF_FILE, now.astype(np.float32))
    with atomic_path(dst / FILES["vocab_name"]) as tmp:
        tmp.write_bytes((src / FILES["vocab_name"]).read_bytes())


def catalog_record(spec: Sparse, stats: CorpusStats, terms: int, size: int) -> dict[str, Any]:
    """The catalog's ``sparse`` record: how the BM25 index was built, and the statistics it was scored with."""
    import bm25s

    return {"library": f"bm25s {bm25s.__version__}", "method": METHOD, "k1": spec.k1, "b": spec.b, "tokenizer": spec.tokenizer.model_dump(),
            "passages": stats.passages, "avg_length": stats.avg_length, "terms": terms, "bytes": size}


def index_shards(counts: Sequence[CountFiles], folders: Sequence[Path], vocabs: Sequence[Path], stats: CorpusStats, spec: Sparse,
                 work: Path) -> tuple[int, int]:
    """Passes 2 and 3 here: ``counts`` scored into ``folders`` with ``stats`` and df over ``vocabs`` (theirs, others', each written
    for ``df_partitions(len(vocabs))``); (terms, bytes)."""
    parts = [work / "df" / f"p{p:04d}.parquet" for p in range(df_partitions(len(vocabs)))]
    terms = sum(sum_partition(vocabs, len(parts), p, out) for p, out in enumerate(parts))
    return terms, sum(index_shard(c, parts, stats, spec, folder) for c, folder in zip(counts, folders, strict=True))


def rescore(shards: Sequence[tuple[Path, Path]], spec: Sparse, work: Path) -> dict[str, Any]:
    """The three passes, in this process, over shards given as (passages file, folder): their BM25 files rewritten with the
    statistics of all of them (what a merge does); returns the catalog record. ``work`` holds the passes' files, deleted after.
    """
    from massiveds.core.passages import PassageFile

    files = [CountFiles(work / "count" / str(i)) for i in range(len(shards))]
    counts = [count_shard(PassageFile(passages).iter_column("text"), spec.tokenizer, f, df_partitions(len(shards)))
              for (passages, _), f in zip(shards, files, strict=True)]
    stats = CorpusStats.of(counts)
    terms, size = index_shards(files, [folder for _, folder in shards], [f.vocab for f in files], stats, spec, work)
    shutil.rmtree(work, ignore_errors=True)
    return catalog_record(spec, stats, terms, size)


def has_sparse(folder: Path) -> bool:
    """Whether a shard folder holds a BM25 index."""
    return all((folder / name).is_file() for name in SHARD_FILES)
