"""Word n-grams as 64-bit hashes, vectorised with numpy: the shingles of MinHash and decontamination.

Text is compared as *words*: NFKC, case-folded, split on ``\\w+`` (so punctuation and spacing do not
matter). Each word is hashed once with xxh3-64 (the only per-word Python step); the hash of the
n-gram starting at word ``i`` is ``fmix64(sum_j K_j * w[i+j] mod 2**64)`` over the word hashes ``w``,
with fixed odd constants ``K_j``: a handful of array operations per batch, not a loop per n-gram.
``fmix64`` (the MurmurHash3 / SplitMix64 finaliser) is a bijection of 64-bit words that spreads
every input bit over the output.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np
import xxhash

_WORD = re.compile(r"\w+")
_M1, _M2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_NGRAM_SEED = 0x5EED_0F_9A_2B
MAX_NGRAM = 64


def words(text: str) -> list[str]:
    """The words of ``text`` as compared for near duplicates and contamination."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def fmix64(x: np.ndarray | np.unsignedinteger) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, element-wise on a uint64 array (a bijection)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(33))
        x = x * _M1
        x = x ^ (x >> np.uint64(33))
        x = x * _M2
        return np.asarray(x ^ (x >> np.uint64(33)))


_POSITION_KEYS = np.random.default_rng(_NGRAM_SEED).integers(0, 2**64 - 1, size=MAX_NGRAM, dtype=np.uint64, endpoint=True) | np.uint64(1)


def word_hashes(tokens: Sequence[str]) -> np.ndarray:
    """xxh3-64 of each word (UTF-8), as uint64."""
    h = xxhash.xxh3_64_intdigest
    return np.array([h(t.encode("utf-8")) for t in tokens], dtype=np.uint64)


def ngram_hashes_batch(token_lists: Sequence[Sequence[str]], n: int, short: bool) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every word n-gram of each token list, concatenated, and the per-list offsets.

    Returns ``(hashes, offsets)`` with list ``i``'s n-grams in ``hashes[offsets[i]:offsets[i+1]]``, in
    order of their first word. A list with fewer than ``n`` (but at least one) words yields one
    n-gram of all its words when ``short`` is true, none otherwise.
    """
    if not 1 <= n <= MAX_NGRAM:
        raise ValueError(f"n-gram size must be in [1, {MAX_NGRAM}], got {n}")
    lengths = np.array([len(t) for t in token_lists], dtype=np.int64)
    w = word_hashes([tok for toks in token_lists for tok in toks])
    starts = np.concatenate([[0], np.cumsum(lengths)])
    total = len(w)
    # n-gram at global word position i covers words i .. i+n-1; zero-padding past the end keeps shapes equal
    padded = np.concatenate([w, np.zeros(n, dtype=np.uint64)])
    acc = np.zeros(total, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            acc += padded[j : j + total] * _POSITION_KEYS[j]
    doc_end = np.repeat(starts[1:], lengths)
    valid = np.arange(total) + n <= doc_end
    if short:
        # a short non-empty list: its first word's position carries the hash of all of its words
        is_short = (lengths > 0) & (lengths < n)
        if is_short.any():
            firsts = starts[:-1][is_short]
            for first, length in zip(firsts, lengths[is_short], strict=True):
                with np.errstate(over="ignore"):
                    acc[first] = np.sum(w[first : first + length] * _POSITION_KEYS[:length], dtype=np.uint64)
            valid[firsts] = True
    counts = np.bincount(np.repeat(np.arange(len(lengths)), lengths)[valid], minlength=len(lengths))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return fmix64(acc[valid]), offsets


def ngram_hashes(text: str, n: int, short: bool = False) -> np.ndarray:
    """64-bit hashes of the word n-grams of one text, in order (see ``ngram_hashes_batch``)."""
    hashes, _ = ngram_hashes_batch([words(text)], n, short)
    return hashes
