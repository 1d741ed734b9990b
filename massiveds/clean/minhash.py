r"""MinHash-LSH near-duplicate detection over word n-gram shingles, vectorised with numpy.

**Shingles.** A document is the set ``S`` of its word ``ngram``-grams (default 5), hashed to 64 bits
(``massiveds.clean.ngrams``: NFKC, case-folded ``\w+`` words). A document with fewer than ``ngram``
words has one shingle made of all its words; one without words has none and is never a candidate.

**MinHash.** For ``k = num_perm`` hash functions ``h_i``, the signature is ``sig_i(S) = min_{x in S}
h_i(x)``. For a min-wise family, ``P[sig_i(A) = sig_i(B)] = J(A, B) = |A ∩ B| / |A ∪ B|``, so the
fraction of agreeing positions is an unbiased estimate of the Jaccard similarity with standard
deviation ``sqrt(J (1 - J) / k)`` (0.038 at J = 0.8 for k = 112). Our ``h_i`` is Dietzfelbinger's
*multiply-add-shift* on the shingle hash folded to 32 bits, ``x = (s ^ (s >> 32)) mod 2**32``::

    h_i(x) = ((a_i * x + b_i) mod 2**64) >> 32          (a_i, b_i uniform 64-bit)

which is strongly universal (pairwise independent) from 32-bit keys into 32 bits (Dietzfelbinger
1996; Thorup 2015, "High Speed Hashing for Integers and Strings"), and costs one multiply, one add
and one shift per (shingle, permutation), done as numpy array operations over blocks of shingles
(no Python loop per shingle or per permutation). Folding to 32 bits makes two distinct shingles
of a pair of documents collide with probability ~ |A| |B| / 2**32 (2e-4 for two 1,000-word
documents): negligible next to the estimator's noise. Signatures are ``uint32[num_perm]``; the
coefficients come from a fixed seed, so signatures are deterministic.

**LSH banding.** The signature is cut into ``b = bands`` bands of ``r = num_perm / b`` rows; each band
is hashed to a 64-bit bucket key. Two documents become *candidates* when they share a bucket in at
least one band, which happens with probability (the S-curve)::

    P(candidate | J = s) = 1 - (1 - s**r)**b

whose steep part sits near ``s* ≈ (1/b)**(1/r)``. For the defaults ``k = 112 = 14 bands x 8 rows``:
``s* = (1/14)**(1/8) ≈ 0.719`` (P = 0.5 at s ≈ 0.685), and

    s    0.5    0.6    0.7    0.75   0.8    0.85   0.9    0.95
    P    0.053  0.211  0.565  0.772  0.924  0.988  0.9996 1.0000

so the banding is tuned *below* the 0.8 threshold: it favours recall, and the false candidates it
lets through (J 0.6 - 0.8) are removed by a **verification** step on each candidate pair
(``dedup.near.verify``): ``"jaccard"`` (default) computes the *true* Jaccard similarity of the two
documents' shingle sets and keeps the pair when it is at least ``threshold``; ``"signature"`` uses
the agreement of the full signatures instead (the estimate above: 4 * k bytes per document rather
than the shingle set, but ±0.04 noise near 0.8, so pairs at J ≈ 0.76 - 0.84 are decided by chance);
``"none"`` links every LSH candidate (datatrove's choice). Pair precision and recall of each choice
on a planted real-text corpus are in BENCHMARKS.md ("Near-dedup verification").

Bucket keys are ``fmix64(sum_j C_{band,j} * sig_j mod 2**64)`` with fixed odd 64-bit constants per
(band, row): distinct bands never share constants, so equal keys mean the same band and the same
values, but for a collision (probability ~2**-64 for typical values, at most ~2**-32 for value
differences with many trailing zero bits); a colliding pair is only a false candidate, which
verification rejects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from massiveds.clean.ngrams import fmix64, ngram_hashes_batch, words

#: Shingles hashed per numpy block (bounds temporary memory at ~ BLOCK * num_perm * 8 bytes).
BLOCK = 1024
EMPTY = np.uint32(0xFFFFFFFF)


def candidate_probability(s: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """The LSH S-curve: probability that two documents at Jaccard ``s`` share at least one band."""
    return 1.0 - (1.0 - np.asarray(s, dtype=np.float64) ** rows) ** bands


def lsh_threshold(bands: int, rows: int) -> float:
    """Where the S-curve is steepest, approximately: ``(1 / bands) ** (1 / rows)``."""
    return float((1.0 / bands) ** (1.0 / rows))


def estimate_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MinHash Jaccard estimate: the fraction of equal positions of signatures (row-wise for 2-D)."""
    return np.mean(np.asarray(a) == np.asarray(b), axis=-1)


def true_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of the sets of two shingle-hash arrays (1.0 for two empty sets)."""
    sa, sb = set(np.asarray(a).tolist()), set(np.asarray(b).tolist())
    union = len(sa | sb)
    return len(sa & sb) / union if union else 1.0


@dataclass(frozen=True)
class MinHasher:
    """Signatures and band keys for fixed parameters; the same seed gives the same hash functions."""

    ngram: int = 5
    num_perm: int = 112
    bands: int = 14
    seed: int = 1
    _a: np.ndarray = field(init=False, repr=False, compare=False)
    _b: np.ndarray = field(init=False, repr=False, compare=False)
    _band_keys: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be a multiple of bands ({self.bands})")
        rng = np.random.default_rng(self.seed)
        draw = lambda *shape: rng.integers(0, 2**64 - 1, size=shape, dtype=np.uint64, endpoint=True)  # noqa: E731
        object.__setattr__(self, "_a", draw(self.num_perm))
        object.__setattr__(self, "_b", draw(self.num_perm))
        object.__setattr__(self, "_band_keys", draw(self.bands, self.rows) | np.uint64(1))

    @property
    def rows(self) -> int:
        """Rows (signature positions) per band."""
        return self.num_perm // self.bands

    def shingles(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Shingle hashes of every text, concatenated, with per-text offsets."""
        return ngram_hashes_batch([words(t) for t in texts], self.ngram, short=True)

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """``uint32[len(texts), num_perm]`` MinHash signatures (all ``0xFFFFFFFF`` for a text without words)."""
        hashes, offsets = self.shingles(texts)
        return self.signatures_from_shingles(hashes, offsets)

    def signatures_from_shingles(self, hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Signatures of documents given as concatenated shingle hashes and offsets."""
        n_docs = len(offsets) - 1
        out = np.full((n_docs, self.num_perm), EMPTY, dtype=np.uint32)
        if len(hashes) == 0:
            return out
        doc_of = np.repeat(np.arange(n_docs), np.diff(offsets))
        keys = ((hashes ^ (hashes >> np.uint64(32))) & np.uint64(0xFFFFFFFF))[:, None]
        a, b = self._a[None, :], self._b[None, :]
        for start in range(0, len(hashes), BLOCK):
            stop = min(start + BLOCK, len(hashes))
            with np.errstate(over="ignore"):
                h = keys[start:stop] * a
                h += b
            h >>= np.uint64(32)
            d = doc_of[start:stop]
            seg = np.flatnonzero(np.concatenate([[True], d[1:] != d[:-1]]))
            mins = np.minimum.reduceat(h, seg, axis=0).astype(np.uint32)
            docs = d[seg]
            out[docs] = np.minimum(out[docs], mins)
        return out

    def band_keys(self, sigs: np.ndarray) -> np.ndarray:
        """``uint64[n, bands]`` bucket keys of each band of each signature."""
        r = self.rows
        banded = sigs.astype(np.uint64).reshape(len(sigs), self.bands, r)
        with np.errstate(over="ignore"):
            mixed = np.sum(banded * self._band_keys[None, :, :], axis=2, dtype=np.uint64)
        return fmix64(mixed)


def bucket_edges(keys: np.ndarray, ords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs from LSH buckets as a star per bucket: (smallest ``_ord`` in the bucket, each other member).

    A bucket of ``m`` documents gives ``m - 1`` edges, not ``m (m - 1) / 2``: connectivity is the same
    and the edge count stays linear. Pairs repeated across bands are emitted once.
    """
    if len(keys) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.lexsort((ords, keys))
    k, o = keys[order], ords[order]
    first = np.concatenate([[True], k[1:] != k[:-1]])
    head = o[np.maximum.accumulate(np.where(first, np.arange(len(k)), 0))]
    member = ~first & (o != head)
    pairs = np.unique(np.stack([head[member], o[member]], axis=1), axis=0) if member.any() else np.zeros((0, 2), np.int64)
    return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)


def partition_of(values: np.ndarray, partitions: int) -> np.ndarray:
    """Hash partition (0 .. partitions-1) of int64 or uint64 values, well mixed."""
    return (fmix64(np.asarray(values).astype(np.uint64)) % np.uint64(partitions)).astype(np.int64)


def signature_column(sigs: np.ndarray) -> pa.Array:
    """Signatures (n x k uint32) as a fixed-size binary column of 4 * k bytes per row (zero copy)."""
    n, k = sigs.shape
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(4 * k), n, [None, pa.py_buffer(np.ascontiguousarray(sigs).tobytes())])


def signature_matrix(column: pa.ChunkedArray | pa.Array, num_perm: int) -> np.ndarray:
    """The signatures a ``signature_column`` holds, as an (n x num_perm) uint32 matrix."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.zeros((0, num_perm), np.uint32)
    width = 4 * num_perm
    flat = np.frombuffer(arr.buffers()[1], dtype=np.uint32, count=len(arr) * num_perm, offset=arr.offset * width)
    return flat.reshape(len(arr), num_perm)


def signature_lists(sigs: np.ndarray) -> pa.Array:
    """Signatures (n x k uint32) as a list<uint64> column, the type of a shingle-set payload (``NearConfig.reference_signatures``)."""
    n, k = sigs.shape
    return pa.ListArray.from_arrays(pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)), pa.array(sigs.astype(np.uint64).reshape(-1)))


def shingle_sets(hashes: np.ndarray, offsets: np.ndarray, keep: np.ndarray) -> pa.Array:
    """Each kept document's distinct shingle hashes (sorted), as a list<uint64> column."""
    sets = [np.unique(hashes[offsets[i] : offsets[i + 1]]) for i in np.flatnonzero(keep)]
    lengths = np.array([len(x) for x in sets], dtype=np.int32)
    values = np.concatenate(sets) if sets else np.zeros(0, np.uint64)
    return pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)), pa.array(values, pa.uint64()))


def exact_jaccard(a: pa.Array, b: pa.Array) -> np.ndarray:
    """Row-wise Jaccard similarity of two list<uint64> columns of distinct sorted hashes, vectorised."""
    a = a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a
    b = b.combine_chunks() if isinstance(b, pa.ChunkedArray) else b
    n = len(a)
    if n == 0:
        return np.zeros(0)
    len_a = pc.list_value_length(a).to_numpy(zero_copy_only=False).astype(np.int64)
    len_b = pc.list_value_length(b).to_numpy(zero_copy_only=False).astype(np.int64)
    row = np.concatenate([np.repeat(np.arange(n), len_a), np.repeat(np.arange(n), len_b)])
    values = np.concatenate([pc.list_flatten(a).to_numpy(), pc.list_flatten(b).to_numpy()])
    order = np.lexsort((values, row))
    row, values = row[order], values[order]
    repeated = (row[1:] == row[:-1]) & (values[1:] == values[:-1])  # a value in both sets of one row
    inter = np.bincount(row[1:][repeated], minlength=n)
    union = len_a + len_b - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)
