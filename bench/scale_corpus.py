r"""A corpus of N passages' worth of real, otherwise-distinct plain text, with duplicates and garbage planted at known rates.

    python bench/scale_corpus.py --passages 1000000 --out /tmp/scale-1m [--seed 0] [--file-mb 64] [--workers 2]

writes ``<domain>-<NNNNN>.jsonl.zst`` files (about ``--file-mb`` MB of JSON each; rows ``{"id", "domain",
"title", "text"}`` with plain text, as pre-training corpora ship it), ``planted.json`` (the arguments,
the counts and every planted id) and ``scale.yaml``, a manifest that builds it (exact and near dedup,
256-word passages). The build of that manifest should keep about N passages: ``planted_found`` reads
what its dedup and filters removed and scores it against ``planted.json``.

**The pool.** The shared real text (``../shared/data/jsonl``, 8 domains, ~4.6 M words) is converted to
plain text once with the build's own converters (``massiveds.ingest.extract.markup.convert``: wikitext,
LaTeX, Gutenberg; HTML by resiliparse, 10x faster than trafilatura, or the human-checked ``gold_text``
where a page has one), normalised as the build does (``normalize_text``) and cut into *pieces* of at
most 200 words, after paragraph breaks where it can (else line breaks, sentence ends, spaces), so that
consecutive pieces of a row join back into its exact text. The pool is cached, a file per domain
(``--cache``, default ``OUT/.pool``), with each piece's counts for the quality filters. Pieces of 20+
words with under 5% cipherable words (see below: code tables, CJK, numbers) are left out, as they
would repeat unchanged; a row is cut there into *spans* of consecutive pieces.

**Documents.** Each domain gets a share of the N passages in proportion to its pool words. A document
has a length drawn from a log-normal (median 500 words, clipped to 150 .. 20,000) and is at least two
*segments* joined by a blank line, each a run of consecutive pieces of one span (real text of a real
document) from a random piece on, 64 .. 768 words long; the last is cut after the word that makes the
length exact, so the build's passages are known in advance (``estimated_passages``). It is then
enciphered with its own key ``c``, as ``perturb`` of ``bench/text_stages.py`` does (ROT-``c`` of the
words it would change: lower-case, 3+ letters; those that a hash of (c, word) picks, a rate
``--cipher-rate`` of the vocabulary, so a word changes the same way throughout the document), but
vectorised over words the pool has already split out and numbered, with xxh3 of the word mixed with
the key by ``fmix64`` as the hash (several times faster). A draw the default filters would drop is drawn
again (the cipher changes letters into letters, so the pieces' counts decide, and the text's repeated
lines). Everything is seeded: a document is a function of (seed, domain, its index), so files can be
written in any order by any number of processes.

**Why documents are distinct.** The pool is reused R = 256 N / 4.6 M times (R ~ 55 at N = 10^6), yet two
documents of a and b words from a domain pool of W words share only ~a b / W words of pool text in
expectation (4 words for a = b = 750 and the smallest pool, stem_latex, W = 138 k): near duplicates
would need most of two documents to come from the same spans. Where two documents do share a span, a
5-gram of it survives in both only if each of its cipherable words is treated alike by both keys,
probability (1 - r)^2 + r^2 / 25 ~ 0.49 per word at r = 0.3, so ~0.12 of the shingles of a typical span
(3 cipherable words in 5) stay shared: their word 5-gram Jaccard stays far below the near-dedup
threshold (0.8). A 256-word passage repeats exactly only if all ~150 of its cipherable words agree
(~0.49^150), hence the pieces left out of the pool.

**Planted duplicates.** ``--exact-rate`` of the documents are exact copies (new id, same text) and
``--near-rate`` near copies of a random original: ``max(1, words // 250)`` edits (a word substituted by
another word of the document, a word inserted or one deleted) each change at most 5 of the ~``words``
5-gram shingles, so Jaccard >= (S - 5k) / (S + 5k) ~ 0.93 .. 0.96, where LSH finds a pair with
probability > 0.999, while the text differs for exact dedup. A copy always lands in a later file of
its original's domain than the original (each domain has at least two files), so dedup, which keeps
the copy earliest in source, file and row order, removes the copy and keeps the original.
``--garbage-rate`` of the documents are garbage the quality filters drop: 3-12 words of real text
(``too_few_words``) or soup of numbers and symbols (``symbol_ratio``, ``alpha_ratio``). Planted counts are the rates
times the documents, rounded up with probability the fraction (so they hold at any size).

Speed: ~0.15 CPU s per MB of JSON written after a fixed ~10 CPU s (pool load, imports); 1.5 GB
(N = 10^6) takes ~4 CPU minutes, ~2 minutes on two free cores.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import multiprocessing
import random
import re
import string
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow.dataset as pds
import xxhash
import yaml
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common and text_stages, also when imported as bench.scale_corpus

from _common import REPO, SHARED_JSONL, shared_rows
from text_stages import _WORD as PERTURBED  # the words perturb enciphers
from text_stages import SOURCES

sys.path.insert(0, str(REPO))  # this checkout's massiveds, not an installed copy

from massiveds.clean.ngrams import fmix64
from massiveds.clean.normalize import normalize_text
from massiveds.clean.quality import alpha_ratio, mean_word_length, repeated_line_fraction, symbol_ratio
from massiveds.core.manifest import Chunk, Filters, load_manifest
from massiveds.core.report import console, progress, table
from massiveds.ingest.extract.markup import convert

POOL_VERSION = 1
MAX_PIECE_WORDS = 200
#: Where a too-long text is cut, in order of preference: after a paragraph break, a line break, a sentence end, a space.
_CUTS = tuple(re.compile(p) for p in (r"(?<=\n\n)", r"(?<=\n)", r"(?<=[.!?] )", r"(?<= )"))
MEDIAN_WORDS, SIGMA, MIN_WORDS, MAX_WORDS = 500, 0.9, 150, 20_000
SEGMENT_WORDS = (64, 768)
MIN_WORDS_CIPHERED, MIN_CIPHERED = 20, 0.05
NEAR_WORDS_PER_EDIT = 250
FILTERS = Filters()
CHUNK = Chunk()
_TOKEN = re.compile(r"\S+\s*")
_WORD = re.compile(r"\S+")
_HAS_WORD = re.compile(r"\w")
_CIPHERABLE = re.compile(f"({PERTURBED.pattern})")  # splits a text on the cipherable words, keeping them
_ROT = [str.maketrans(string.ascii_lowercase, string.ascii_lowercase[k:] + string.ascii_lowercase[:k]) for k in range(26)]
_SOUP = ("#", "##", "...", "|", "--", "+", "=", "*", "%", "/", "&", "<>", "[0]", "(1)", "…")


# -- the pool of real plain text -------------------------------------------------------------


class PieceStats(NamedTuple):
    """What the quality filters count in a piece: words, their characters, words with a letter, symbol runs (additive over pieces)."""

    words: int
    chars: int
    alpha: int
    symbols: int

    @classmethod
    def of(cls, text: str) -> PieceStats:
        """The counts of ``text``, by the quality filters' own functions."""
        words = text.split()
        n = len(words)
        return cls(n, round(mean_word_length(words) * n), round(alpha_ratio(words) * n), round(symbol_ratio(text, n) * n))


class Parts(NamedTuple):
    """A text as the words the cipher may change (vocabulary ids) and what lies around them: ``between[0] w0 between[1] w1 ...``."""

    between: list[str]
    ids: np.ndarray


def join_parts(chunks: list[Parts], sep: str = "") -> Parts:
    """The parts of the chunks' texts joined with ``sep`` (new lists: the chunks are left as they are)."""
    between = list(chunks[0].between)
    for c in chunks[1:]:
        between[-1] += sep + c.between[0]
        between += c.between[1:]
    return Parts(between, np.concatenate([c.ids for c in chunks]))


@dataclass
class DomainPool:
    """A domain's pieces of plain text in row order (as text and as parts), their words and spans (runs of consecutive pieces of a
    row), the prefix sums of their filter counts, the spans' titles, and the vocabulary of cipherable words with their hashes."""

    pieces: list[str]
    parts: list[Parts]
    piece_words: list[int]
    span: list[int]
    titles: list[str]
    counts: np.ndarray  # (pieces + 1, 4): PieceStats of pieces[:i] in row i
    vocab: dict[str, int]
    words_of: np.ndarray  # vocabulary id -> word (object array)
    hashes: np.ndarray  # vocabulary id -> xxh3-64 of the word

    @classmethod
    def of(cls, rows: list[dict[str, Any]]) -> DomainPool:
        """The pool of pool-file rows (title, pieces, their PieceStats) but the pieces the cipher can hardly change: a piece of
        ``MIN_WORDS_CIPHERED`` words or more with fewer than ``MIN_CIPHERED`` of them cipherable (code tables, CJK, numbers) would
        repeat unchanged wherever it is drawn. A row is cut where a piece is left out: its spans stay real text."""
        vocab: dict[str, int] = {}
        pieces, parts, stats, span, titles = [], [], [], [], []
        for row in rows:
            titles.append(row["title"])
            for piece, counts in zip(row["pieces"], row["stats"], strict=True):
                piece_parts = split_words(piece, vocab)
                if counts[0] >= MIN_WORDS_CIPHERED and len(piece_parts.ids) < MIN_CIPHERED * counts[0]:
                    titles.append(row["title"])  # the pieces after it are another span
                    continue
                pieces.append(piece)
                parts.append(piece_parts)
                stats.append(counts)
                span.append(len(titles) - 1)
        table = np.array(stats, np.int64).reshape(-1, 4)
        prefix = np.concatenate([np.zeros((1, 4), np.int64), np.cumsum(table, axis=0)])
        words = np.array(list(vocab), dtype=object)
        return cls(pieces, parts, table[:, 0].tolist(), span, titles, prefix, vocab, words, word_hashes(words))

    @property
    def words(self) -> int:
        """Words in all pieces."""
        return int(self.counts[-1, 0])

    def stats(self, start: int, end: int) -> PieceStats:
        """The filter counts of ``pieces[start:end]``."""
        return PieceStats(*(self.counts[end] - self.counts[start]).tolist())

    def json_bytes_per_word(self) -> float:
        """UTF-8 bytes of the pieces as JSON string content, per word (to size files before writing them)."""
        size = sum(len(json.dumps(p, ensure_ascii=False).encode("utf-8")) - 2 for p in self.pieces)
        return size / max(1, self.words)


def split_words(text: str, vocab: dict[str, int]) -> Parts:
    """``text`` as parts: its cipherable words (``perturb``'s: lower-case, 3+ letters) numbered in ``vocab`` (new words added)."""
    parts = _CIPHERABLE.split(text)
    return Parts(parts[0::2], np.array([vocab.setdefault(w, len(vocab)) for w in parts[1::2]], np.int64))


def word_hashes(words: Iterable[str]) -> np.ndarray:
    """xxh3-64 of each word, the cipher's choice of a word under a key is a hash of this and the key."""
    return np.array([xxhash.xxh3_64_intdigest(w.encode("utf-8")) for w in words], np.uint64)


def cut(text: str, level: int = 0) -> list[str]:
    """``text`` cut into pieces of at most ``MAX_PIECE_WORDS`` words, at the first ``_CUTS`` that works; their join is ``text``."""
    if level == len(_CUTS) or len(text.split()) <= MAX_PIECE_WORDS:
        return [text]
    groups: list[str] = []
    group, n = "", 0
    for part in _CUTS[level].split(text):
        w = len(part.split())
        if group and n + w > MAX_PIECE_WORDS:
            groups.append(group)
            group, n = "", 0
        group, n = group + part, n + w
    groups.append(group)
    return [piece for g in groups for piece in cut(g, level + 1)]


def plain_text(domain: str, row: dict[str, Any]) -> tuple[str, str]:
    """(title, normalised plain text) of one shared row, by the build's converters (HTML: ``gold_text`` where present, else resiliparse)."""
    spec = SOURCES[domain]
    if row.get("gold_text"):
        return row.get("title") or "", normalize_text(row["gold_text"])
    markup = row.get(spec.get("markup_field", "")) or spec.get("markup", "none")
    extracted = convert(markup, row[spec.get("text_field", "text")], html_extractor="resiliparse")
    return row.get("title") or extracted.title or "", normalize_text(extracted.text)


def pool_fingerprint(domain: str) -> str:
    """What a domain's cached pool depends on: this recipe's version and the shared file's size."""
    size = (SHARED_JSONL / f"{domain}.jsonl.zst").stat().st_size
    return hashlib.sha256(json.dumps([POOL_VERSION, MAX_PIECE_WORDS, domain, size]).encode()).hexdigest()[:16]


def build_pool(domain: str, path: Path) -> None:
    """Convert a domain's shared rows to plain-text pieces with their counts and write them to ``path``, after a fingerprint line."""
    tmp = path.with_name(f".{path.name}.partial")
    with zstandard.open(tmp, "wt", encoding="utf-8", cctx=zstandard.ZstdCompressor(level=3)) as f:
        f.write(json.dumps({"fingerprint": pool_fingerprint(domain)}) + "\n")
        for row in shared_rows(domain):
            title, text = plain_text(domain, row)
            if text:
                pieces = cut(text)
                row = {"title": title, "pieces": pieces, "stats": [PieceStats.of(p) for p in pieces]}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.rename(path)


def _pool_is_fresh(domain: str, path: Path) -> bool:
    if not path.is_file():
        return False
    with zstandard.open(path, "rt", encoding="utf-8") as f:
        return bool(json.loads(next(f)).get("fingerprint") == pool_fingerprint(domain))


def load_pool(path: Path) -> DomainPool:
    """A domain's pool from its cache file."""
    with zstandard.open(path, "rt", encoding="utf-8") as f:
        next(f)
        return DomainPool.of([json.loads(line) for line in f])


def cached_pools(folder: Path, domains: list[str], workers: int) -> dict[str, DomainPool]:
    """The pools of ``domains`` from ``folder/<domain>.jsonl.zst``; those missing or made from other shared files built first."""
    folder.mkdir(parents=True, exist_ok=True)
    stale = [(d, folder / f"{d}.jsonl.zst") for d in domains if not _pool_is_fresh(d, folder / f"{d}.jsonl.zst")]
    if stale:
        console.print(f"[dim]plain-text pool of {', '.join(d for d, _ in stale)} from {SHARED_JSONL} into {folder} (once)")
        # spawn, not fork: a caller that has started threads (torch, Ray, a test run) can fork a child holding a lock
        with multiprocessing.get_context("spawn").Pool(max(1, min(workers, len(stale)))) as pool:
            pool.starmap(build_pool, stale)
    return {d: load_pool(folder / f"{d}.jsonl.zst") for d in domains}


# -- the plan: which document goes where ------------------------------------------------------


class Entry(NamedTuple):
    """One row of a file: its id, kind (doc, exact, near, garbage) and the base document it is (or copies), with its target words."""

    doc_id: str
    kind: str
    base: int
    length: int


class FileTask(NamedTuple):
    """One file to write: its domain, name and rows."""

    domain: str
    name: str
    entries: list[Entry]


def passages_of(words: int) -> int:
    """Passages the build's word chunking (``massiveds.encode.chunk.windows``, default size and min_size) cuts ``words`` into."""
    if words <= CHUNK.size:
        return int(words > 0)
    full, rest = divmod(words, CHUNK.size)
    return full + (rest >= CHUNK.min_size)


def draw_lengths(rng: np.random.Generator, passages: int) -> np.ndarray:
    """Target words of base documents, drawn until they make ``passages`` passages (at least two documents)."""
    lengths: list[int] = []
    total = 0
    while total < passages or len(lengths) < 2:
        batch = np.clip(np.round(rng.lognormal(math.log(MEDIAN_WORDS), SIGMA, 4096)), MIN_WORDS, MAX_WORDS).astype(int).tolist()
        for n in batch:
            lengths.append(n)
            total += passages_of(n)
            if total >= passages and len(lengths) >= 2:
                break
    return np.array(lengths, dtype=np.int64)


def plan_domain(domain: str, index: int, passages: int, bytes_per_word: float, args: argparse.Namespace) -> list[FileTask]:
    """One domain's files: base documents in order, copies in later files than their originals, garbage anywhere; rows shuffled."""
    rng = np.random.default_rng([args.seed, index])
    lengths = draw_lengths(rng, passages)
    n_base = len(lengths)
    n_total = round(n_base / (1 - args.exact_rate - args.near_rate - args.garbage_rate))
    # rounded up with probability the fraction: the expected counts are the rates' at any size
    n_exact, n_near, n_garbage = (int(rate * n_total + rng.random()) for rate in (args.exact_rate, args.near_rate, args.garbage_rate))
    words = int(lengths.sum())
    n_files = max(2, min(n_base, math.ceil(words * bytes_per_word / (args.file_mb * 1e6))))
    file_of = (np.cumsum(lengths) - lengths) * n_files // words
    before = np.searchsorted(file_of, np.arange(n_files + 1))  # base documents in files < f
    files: list[list[tuple[str, int]]] = [[] for _ in range(n_files)]
    for base, f in enumerate(file_of.tolist()):
        files[f].append(("doc", base))
    copy_files = rng.integers(1, n_files, n_exact + n_near)
    originals = (rng.random(n_exact + n_near) * before[copy_files]).astype(np.int64)
    for i, (f, original) in enumerate(zip(copy_files.tolist(), originals.tolist(), strict=True)):
        files[f].append(("exact" if i < n_exact else "near", original))
    for g, f in enumerate(rng.integers(0, n_files, n_garbage).tolist()):
        files[f].append(("garbage", g))
    tasks, row = [], 0
    for f, members in enumerate(files):
        entries = []
        for j in rng.permutation(len(members)).tolist():
            kind, base = members[j]
            entries.append(Entry(f"{domain}-{row:08d}", kind, base, int(lengths[base]) if kind != "garbage" else 0))
            row += 1
        tasks.append(FileTask(domain, f"{domain}-{f:05d}.jsonl.zst", entries))
    return tasks


def domain_passages(pools: dict[str, DomainPool], passages: int) -> dict[str, int]:
    """Each domain's share of ``passages``, in proportion to its pool words (at least one)."""
    words = {d: p.words for d, p in pools.items()}
    total = sum(words.values())
    return {d: max(1, round(passages * w / total)) for d, w in words.items()}


# -- the documents ----------------------------------------------------------------------------


def passes_filters(text: str, s: PieceStats) -> bool:
    """Whether the default filters keep ``text``, whose pieces add up to the counts ``s`` (``quality_reason``'s checks on them)."""
    f = FILTERS
    return (f.min_words <= s.words <= f.max_words and f.min_mean_word_length <= s.chars / s.words <= f.max_mean_word_length
            and s.symbols / s.words <= f.max_symbol_ratio and s.alpha / s.words >= f.min_alpha_ratio
            and repeated_line_fraction(text) <= f.max_repeated_line_fraction)


def _add(a: PieceStats, b: PieceStats, sign: int = 1) -> PieceStats:
    return PieceStats(*(x + sign * y for x, y in zip(a, b, strict=True)))


def cut_words(text: str, words: int) -> tuple[str, str]:
    """``text`` cut after its ``words``-th word: (head, tail)."""
    end = next(itertools.islice(_WORD.finditer(text), words - 1, None)).end()
    return text[:end], text[end:]


def compose(pool: DomainPool, rnd: random.Random, target: int) -> tuple[Parts, str, PieceStats]:
    """(parts, title, counts) of exactly ``target`` words: at least two segments of consecutive pieces of a span from random places.

    A segment takes pieces until it has the words it wants (64 .. 768, at most half the target for the
    first, at most the missing words after) or its span ends; one over its limit is cut after a word.
    Segments are joined by a blank line.
    """
    segments: list[Parts] = []
    title, total = "", PieceStats(0, 0, 0, 0)
    while total.words < target:
        limit = target // 2 if not segments else target - total.words
        want = min(rnd.randint(*SEGMENT_WORDS), limit)
        start = end = rnd.randrange(len(pool.pieces))
        n = 0
        while end < len(pool.pieces) and pool.span[end] == pool.span[start] and n < want:
            n += pool.piece_words[end]
            end += 1
        if not n:
            continue
        chunks, stats = pool.parts[start:end], pool.stats(start, end)
        if n > limit:  # the cut falls in the last piece; the counts of its shorter side are taken afresh
            keep = pool.piece_words[end - 1] - (n - limit)
            head, tail = cut_words(pool.pieces[end - 1], keep)
            chunks[-1] = split_words(head, pool.vocab)
            if 2 * keep < pool.piece_words[end - 1]:
                stats = _add(pool.stats(start, end - 1), PieceStats.of(head))
            else:
                stats = _add(stats, PieceStats.of(tail), -1)
        segment = join_parts(chunks)
        segment.between[-1] = segment.between[-1].rstrip()
        segments.append(segment)
        title, total = title or pool.titles[pool.span[start]], _add(total, stats)
    doc = join_parts(segments, "\n\n")
    doc.between[0] = doc.between[0].lstrip()
    return doc, title, total


def encipher(between: list[str], words: np.ndarray, hashes: np.ndarray, key: int, rate: float) -> str:
    """The text of ``between`` and ``words`` (with their hashes), each word that a hash of (key, word) picks, a ``rate`` of the
    vocabulary, ROT-``key`` enciphered (``perturb`` of ``bench/text_stages.py``, vectorised: the same words, another hash)."""
    picked = fmix64(hashes ^ fmix64(np.uint64(key))) < np.uint64(min(int(rate * 2**64), 2**64 - 1))
    words = words.copy()
    rot = _ROT[key % 26]
    for i in np.flatnonzero(picked).tolist():
        words[i] = words[i].translate(rot)
    out = [""] * (2 * len(words) + 1)
    out[0::2], out[1::2] = between, words.tolist()
    return "".join(out)


def base_document(pool: DomainPool, seed: int, domain: str, base: int, target: int, cipher_rate: float) -> tuple[str, str, int]:
    """(text, title, words) of base document ``base`` of ``domain``: composed and enciphered with its own key, passing the filters.

    The cipher changes letters into letters: the filters' counts are those of the pieces.
    """
    rnd = random.Random(f"{seed}:{domain}:{base}")
    key = 26 * rnd.randrange(1 << 24) + rnd.randrange(1, 26)  # never a multiple of 26: ROT-key is never the identity
    while True:
        parts, title, stats = compose(pool, rnd, target)
        text = encipher(parts.between, pool.words_of[parts.ids], pool.hashes[parts.ids], key, cipher_rate)
        if passes_filters(text, stats):
            title_parts = _CIPHERABLE.split(title)
            title_words = np.array(title_parts[1::2], dtype=object)
            return text, encipher(title_parts[0::2], title_words, word_hashes(title_words), key, cipher_rate), stats.words


def near_copy(text: str, rnd: random.Random) -> tuple[str, int]:
    """(text, words): ``text`` with ``max(1, words // NEAR_WORDS_PER_EDIT)`` edits, each a word substituted by another of its words,
    inserted or deleted."""
    tokens = _TOKEN.findall(text)  # each word with the whitespace after it
    for _ in range(max(1, len(tokens) // NEAR_WORDS_PER_EDIT)):
        spots = [i for i, t in enumerate(tokens[:-1]) if _HAS_WORD.search(t)]
        i, other = rnd.choice(spots), tokens[rnd.choice(spots)]
        op = rnd.choice(("substitute", "insert", "delete"))
        if op == "delete":
            del tokens[i]
        elif op == "insert":
            tokens.insert(i, other.rstrip() + " ")
        else:
            while other.strip().casefold() == tokens[i].strip().casefold():
                other = tokens[rnd.choice(spots)]
            tokens[i] = other.rstrip() + tokens[i][len(tokens[i].rstrip()):]
    return "".join(tokens), len(tokens)


def garbage(pool: DomainPool, rnd: random.Random) -> str:
    """A record the quality filters drop: 3-12 words of real text, or 40-200 numbers and symbols."""
    if rnd.random() < 0.5:
        piece = pool.pieces[rnd.randrange(len(pool.pieces))]
        return " ".join((piece.split() or ["empty"])[: rnd.randint(3, 12)])
    return " ".join(rnd.choice(_SOUP) if rnd.random() < 0.4 else f"{rnd.uniform(-1e4, 1e4):.{rnd.randint(0, 3)}f}"
                    for _ in range(rnd.randint(40, 200)))


# -- writing files ----------------------------------------------------------------------------


@dataclass
class FileStats:
    """What one written file holds."""

    name: str
    domain: str
    documents: int = 0
    words: int = 0
    kept_words: int = 0
    passages: int = 0
    bytes: int = 0
    compressed: int = 0
    kinds: dict[str, int] = field(default_factory=lambda: {"doc": 0, "exact": 0, "near": 0, "garbage": 0})


_POOLS: dict[str, DomainPool] = {}
_SETTINGS: dict[str, Any] = {}


def _init(pools: dict[str, DomainPool], settings: dict[str, Any]) -> None:
    """Set the pool and the settings the writers read (in this process or a worker's)."""
    _POOLS.clear()
    _POOLS.update(pools)
    _SETTINGS.update(settings)


def document(domain: str, entry: Entry) -> tuple[str, str, int]:
    """(text, title, words) of one row, from the seed, the domain and the entry alone."""
    seed, rate = _SETTINGS["seed"], _SETTINGS["cipher_rate"]
    pool = _POOLS[domain]
    if entry.kind == "garbage":
        text = garbage(pool, random.Random(f"{seed}:{entry.doc_id}:garbage"))
        return text, "", len(text.split())
    text, title, words = base_document(pool, seed, domain, entry.base, entry.length, rate)
    if entry.kind == "near":
        text, words = near_copy(text, random.Random(f"{seed}:{entry.doc_id}:near"))
    return text, title, words


def _flush(lines: list[str], out: Any) -> int:
    """Write ``lines`` to ``out`` as UTF-8 and empty the list; returns the bytes written."""
    data = "".join(lines).encode("utf-8")
    out.write(data)
    lines.clear()
    return len(data)


def write_file(task: FileTask) -> FileStats:
    """Write one ``<domain>-<NNNNN>.jsonl.zst`` (zstd level 3) into the output folder; its statistics."""
    path = Path(_SETTINGS["out"]) / task.name
    tmp = path.with_name(f".{task.name}.partial")
    stats = FileStats(task.name, task.domain)
    lines: list[str] = []
    with open(tmp, "wb") as raw, zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False) as out:
        for entry in task.entries:
            text, title, words = document(task.domain, entry)
            lines.append(json.dumps({"id": entry.doc_id, "domain": task.domain, "title": title, "text": text}, ensure_ascii=False) + "\n")
            stats.documents, stats.words = stats.documents + 1, stats.words + words
            stats.kinds[entry.kind] += 1
            if entry.kind == "doc":
                stats.kept_words, stats.passages = stats.kept_words + words, stats.passages + passages_of(words)
            if len(lines) >= 256:
                stats.bytes += _flush(lines, out)
        stats.bytes += _flush(lines, out)
    stats.compressed = tmp.stat().st_size
    tmp.rename(path)
    return stats


# -- the manifest, planted.json, the summary --------------------------------------------------


def write_manifest(out: Path, domains: list[str], model: str, passages: int) -> Path:
    """``scale.yaml``: one plain-text JSONL source per domain (relative to the manifest), both dedups, 256-word passages."""
    sources = [{"name": d, "uri": f"{d}-*.jsonl.zst", "format": "jsonl", "id_field": "id", "title_field": "title"} for d in domains]
    body = {"name": f"scale-{passages}", "domain": "mixed", "sources": sources,
            "dedup": {"exact": True, "near": {"enabled": True}}, "chunk": {"unit": "words", "size": 256}, "embed": {"model": model}}
    path = out / "scale.yaml"
    path.write_text("# written by bench/scale_corpus.py: builds the generated corpus beside it (see planted.json)\n"
                    + yaml.safe_dump(body, sort_keys=False))
    load_manifest(path)  # refuses a manifest the build would refuse
    return path


def planted_record(args: argparse.Namespace, tasks: list[FileTask], stats: list[FileStats]) -> dict[str, Any]:
    """The contents of ``planted.json``: arguments, counts in all and per domain, every planted copy with its original, garbage ids."""
    base_ids = {(t.domain, e.base): e.doc_id for t in tasks for e in t.entries if e.kind == "doc"}
    planted: dict[str, Any] = {"exact": {}, "near": {}, "garbage": []}
    for t in tasks:
        for e in t.entries:
            if e.kind == "garbage":
                planted["garbage"].append(e.doc_id)
            elif e.kind != "doc":
                planted[e.kind][e.doc_id] = base_ids[(t.domain, e.base)]
    domains = {d: _counts([s for s in stats if s.domain == d]) for d in dict.fromkeys(s.domain for s in stats)}
    settings = {k: getattr(args, k) for k in ("passages", "seed", "file_mb", "exact_rate", "near_rate", "garbage_rate", "cipher_rate",
                                               "domains", "model")}
    return {"seed": args.seed, "args": settings, "counts": _counts(stats), "domains": domains, "files": [s.name for s in stats], **planted}


def _counts(stats: list[FileStats]) -> dict[str, int]:
    return {"documents": sum(s.documents for s in stats), "words": sum(s.words for s in stats),
            "kept_words": sum(s.kept_words for s in stats), "estimated_passages": sum(s.passages for s in stats), "files": len(stats),
            "bytes": sum(s.bytes for s in stats), "compressed_bytes": sum(s.compressed for s in stats),
            "exact_copies": sum(s.kinds["exact"] for s in stats), "near_copies": sum(s.kinds["near"] for s in stats),
            "garbage": sum(s.kinds["garbage"] for s in stats)}


def summary_rows(record: dict[str, Any]) -> list[tuple[Any, ...]]:
    """One row per domain and one for all: files, documents, words, passages, MB, planted copies and garbage."""
    rows = []
    for name, c in [*record["domains"].items(), ("all", record["counts"])]:
        rows.append((name, c["files"], c["documents"], c["words"], c["estimated_passages"], c["bytes"] / 1e6, c["compressed_bytes"] / 1e6,
                     c["exact_copies"], c["near_copies"], c["garbage"]))
    return rows


# -- scoring a build of the corpus ------------------------------------------------------------


def _dropped(build_dir: Path, stage: str) -> dict[str, str | None]:
    """doc_id -> duplicate_of of every document a stage of the build in ``build_dir`` (a datastore or its ``build/``) dropped."""
    folder = build_dir / "dropped" / stage
    if not folder.is_dir() and (build_dir / "build" / "dropped").is_dir():
        folder = build_dir / "build" / "dropped" / stage
    if not folder.is_dir() or not any(folder.glob("*.parquet")):
        return {}
    t = pds.dataset(str(folder), format="parquet").to_table(columns=["doc_id", "duplicate_of"])
    return dict(zip(t.column("doc_id").to_pylist(), t.column("duplicate_of").to_pylist(), strict=True))


def planted_found(build_dir: Path, planted: dict[str, Any]) -> dict[str, Any]:
    """Precision and recall of the build's exact + near dedup against the planted copies, and the garbage its filters dropped.

    ``build_dir`` is the datastore (``--out``) or its ``build/`` folder; ``planted`` is ``planted.json``.
    A copy counts as found when either dedup removed it; ``right_original`` counts the removed copies
    whose ``duplicate_of`` is their planted original.
    """
    exact, near, extract = (_dropped(Path(build_dir), s) for s in ("dedup", "near_dedup", "extract"))
    copies = planted["exact"] | planted["near"]
    removed = exact | near
    hits = removed.keys() & copies.keys()
    garbage = set(planted["garbage"])
    return {
        "planted": len(copies), "removed": len(removed), "found": len(hits),
        "precision": len(hits) / len(removed) if removed else 1.0, "recall": len(hits) / len(copies) if copies else 1.0,
        "exact_found": len(exact.keys() & planted["exact"].keys()), "near_found": len(near.keys() & planted["near"].keys()),
        "right_original": sum(removed[c] == copies[c] for c in hits),
        "missed": sorted(copies.keys() - hits)[:20], "unexpected": sorted(removed.keys() - hits)[:20],
        "garbage": len(garbage), "garbage_dropped": len(garbage & extract.keys()), "other_dropped": sorted(extract.keys() - garbage)[:20],
    }


# -- the run ----------------------------------------------------------------------------------


def generate(args: argparse.Namespace) -> dict[str, Any]:
    """Plan, write every file (``args.workers`` processes), ``planted.json`` and ``scale.yaml``; returns the planted record."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    domains = args.domains.split(",") if args.domains else list(SOURCES)
    if unknown := set(domains) - set(SOURCES):
        raise SystemExit(f"--domains: unknown {sorted(unknown)}; choose from {','.join(SOURCES)}")
    pools = cached_pools(args.cache or out / ".pool", domains, args.workers)
    shares = domain_passages(pools, args.passages)
    tasks = [t for i, d in enumerate(SOURCES) if d in pools
             for t in plan_domain(d, i, shares[d], pools[d].json_bytes_per_word(), args)]
    for old in out.glob("*-[0-9][0-9][0-9][0-9][0-9].jsonl.zst"):  # a previous run's files must not join this corpus
        if old.name.rsplit("-", 1)[0] in SOURCES:
            old.unlink()
    settings = {"seed": args.seed, "cipher_rate": args.cipher_rate, "out": str(out)}
    order = sorted(tasks, key=lambda t: -sum(e.length for e in t.entries))  # largest first: the workers finish together
    stats: dict[str, FileStats] = {}
    with progress() as bar:
        task = bar.add_task("files", total=len(tasks), rate="")
        start = time.perf_counter()

        def done(s: FileStats) -> None:
            stats[s.name] = s
            mb = sum(x.bytes for x in stats.values()) / 1e6
            bar.update(task, advance=1, rate=f"{mb:,.0f} MB, {mb / (time.perf_counter() - start):.1f} MB/s")

        if args.workers <= 1:
            _init(pools, settings)
            for t in order:
                done(write_file(t))
        else:
            with multiprocessing.Pool(args.workers, _init, (pools, settings)) as workers:  # forked workers share the pool's pages
                for s in workers.imap_unordered(write_file, order):
                    done(s)
    record = planted_record(args, tasks, [stats[t.name] for t in tasks])
    (out / "planted.json").write_text(json.dumps(record, indent=1) + "\n")
    write_manifest(out, [d for d in SOURCES if d in pools], args.model, args.passages)
    return record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module doc)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, required=True, help="256-word passages the build should keep (N)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the files, planted.json and scale.yaml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--file-mb", type=float, default=64, help="uncompressed JSON per file, MB (each domain has at least two files)")
    parser.add_argument("--workers", type=int, default=2, help="processes writing files")
    parser.add_argument("--exact-rate", type=float, default=0.02, help="documents that are exact copies of another")
    parser.add_argument("--near-rate", type=float, default=0.02, help="documents that are near copies of another")
    parser.add_argument("--garbage-rate", type=float, default=0.002, help="documents the quality filters must drop")
    parser.add_argument("--cipher-rate", type=float, default=0.3, help="fraction of a document's vocabulary its key enciphers")
    parser.add_argument("--domains", default="", help="comma-separated subset of the shared domains (default: all 8)")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="embed.model of scale.yaml")
    parser.add_argument("--cache", type=Path, help="folder of the plain-text pool's cache, a file per domain (default: OUT/.pool)")
    args = parser.parse_args(argv)
    if not 0 <= args.exact_rate + args.near_rate + args.garbage_rate < 0.5:
        parser.error("--exact-rate + --near-rate + --garbage-rate must be in [0, 0.5)")
    if args.passages < 1 or args.file_mb <= 0:
        parser.error("--passages and --file-mb must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    """Generate the corpus and print what was planted."""
    args = parse_args(argv)
    start = time.perf_counter()
    record = generate(args)
    cols = ["domain", "files", "documents", "words", "est. passages", "MB json", "MB zst", "exact copies", "near copies", "garbage"]
    console.print(table(f"Planted corpus in {args.out} (seed {args.seed})", cols, summary_rows(record)))
    console.print(f"{time.perf_counter() - start:.1f} s; build it with: massiveds build {args.out / 'scale.yaml'} --out DS")


if __name__ == "__main__":
    main()
