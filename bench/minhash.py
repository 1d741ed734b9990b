"""MinHash signatures + LSH: massiveds (numpy, vectorised) vs datasketch, same parameters, same documents.

Documents are real text from ``../shared/data/jsonl`` plus planted near copies (5 % of words
rewritten in one span, and exact copies) so that there are duplicates to find. Both sides get the
same word 5-gram shingles (massiveds' NFKC / case-folded ``\\w+`` words), the same 112 permutations
in 14 bands x 8 rows, and report:

* documents/s from word lists to LSH candidate pairs (shingle hashing, signatures, banding, bucketing;
  tokenising into words is shared and timed apart);
* the LSH candidate pairs and the pairs whose signature agreement is >= 0.8, and the Jaccard
  agreement of those pair sets between the two implementations (different hash functions, so
  agreement is high but not 1: both are estimates).

Run: ``python bench/minhash.py [--files biomed,wiki,...] [--copies 0.1]`` (needs ``pip install
'massiveds[bench]'``; ``--without-datasketch`` times massiveds alone). Not run by CI except at a tiny size
(tests/test_bench_smoke.py).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import shared_rows  # noqa: E402

from massiveds.clean.minhash import MinHasher, bucket_edges, estimate_jaccard  # noqa: E402
from massiveds.clean.ngrams import ngram_hashes_batch, words  # noqa: E402

NGRAM, NUM_PERM, BANDS, THRESHOLD = 5, 112, 14, 0.8


def load(files: list[str], copies: float, seed: int) -> list[str]:
    """Real texts from the shared files, plus planted exact and near copies of a fraction of them."""
    texts = [row["text"] for name in files for row in shared_rows(name)]
    rng = random.Random(seed)
    vocab = [w for t in texts[:200] for w in t.split()]
    planted = []
    for t in rng.sample(texts, int(copies * len(texts))):
        w = t.split()
        k = max(1, len(w) // 20)
        start = rng.randrange(0, max(1, len(w) - k))
        planted.append(t if rng.random() < 0.3 else " ".join(w[:start] + [rng.choice(vocab) for _ in range(k)] + w[start + k :]))
    return texts + planted


def ours(token_lists: list[list[str]]) -> tuple[float, set[tuple[int, int]], set[tuple[int, int]]]:
    """Seconds, LSH candidate pairs and signature-verified pairs with massiveds."""
    hasher = MinHasher(ngram=NGRAM, num_perm=NUM_PERM, bands=BANDS)
    t0 = time.perf_counter()
    hashes, offsets = ngram_hashes_batch(token_lists, NGRAM, short=True)
    sigs = hasher.signatures_from_shingles(hashes, offsets)
    keys = hasher.band_keys(sigs)
    ids = np.repeat(np.arange(len(token_lists), dtype=np.int64), BANDS)
    u, v = bucket_edges(keys.reshape(-1), ids)
    seconds = time.perf_counter() - t0
    # bucket_edges gives stars; expand each bucket to all its pairs for a like-for-like pair set
    cand = _bucket_pairs(keys)
    verified = {p for p in cand if estimate_jaccard(sigs[p[0]], sigs[p[1]]) >= THRESHOLD}
    assert {(int(a), int(b)) for a, b in zip(u, v, strict=True)} <= cand
    return seconds, cand, verified


def _bucket_pairs(keys: np.ndarray) -> set[tuple[int, int]]:
    buckets: dict[tuple[int, int], list[int]] = {}
    for doc, row in enumerate(keys.tolist()):
        for band, key in enumerate(row):
            buckets.setdefault((band, key), []).append(doc)
    return {(a, b) for members in buckets.values() if len(members) > 1 for i, a in enumerate(members) for b in members[i + 1 :]}


def theirs(token_lists: list[list[str]]) -> tuple[float, set[tuple[int, int]], set[tuple[int, int]]]:
    """Seconds, LSH candidate pairs and signature-verified pairs with datasketch."""
    from datasketch import MinHash, MinHashLSH

    t0 = time.perf_counter()
    shingle_sets = []
    for toks in token_lists:
        grams = [" ".join(toks[i : i + NGRAM]) for i in range(len(toks) - NGRAM + 1)] or ([" ".join(toks)] if toks else [])
        shingle_sets.append([g.encode("utf-8") for g in grams])
    lsh = MinHashLSH(num_perm=NUM_PERM, params=(BANDS, NUM_PERM // BANDS))
    sigs = []
    for i, sh in enumerate(shingle_sets):
        m = MinHash(num_perm=NUM_PERM, seed=1)
        m.update_batch(sh)
        sigs.append(m)
        if sh:
            lsh.insert(i, m)
    cand = {(min(i, j), max(i, j)) for i, sh in enumerate(shingle_sets) if sh for j in lsh.query(sigs[i]) if j != i}
    seconds = time.perf_counter() - t0
    verified = {p for p in cand if sigs[p[0]].jaccard(sigs[p[1]]) >= THRESHOLD}
    return seconds, cand, verified


def _true_pairs(token_lists: list[list[str]], pairs: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """The pairs whose exact shingle-set Jaccard is >= THRESHOLD."""
    hashes, offsets = ngram_hashes_batch(token_lists, NGRAM, short=True)
    sets: dict[int, set[int]] = {}

    def shingles(i: int) -> set[int]:
        if i not in sets:
            sets[i] = set(hashes[offsets[i] : offsets[i + 1]].tolist())
        return sets[i]

    return {(a, b) for a, b in pairs if len(shingles(a) & shingles(b)) >= THRESHOLD * len(shingles(a) | shingles(b))}


def _agreement(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", default="biomed,wiki,qa_forum,code,web_html", help="comma-separated names in ../shared/data/jsonl")
    parser.add_argument("--copies", type=float, default=0.1, help="fraction of documents planted again as exact or near copies")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="time each side this many times, report the fastest")
    parser.add_argument("--without-datasketch", action="store_true", help="time massiveds alone (where datasketch is not installed)")
    args = parser.parse_args()
    texts = load(args.files.split(","), args.copies, args.seed)
    t0 = time.perf_counter()
    token_lists = [words(t) for t in texts]
    tokenise = time.perf_counter() - t0
    n_words = sum(len(t) for t in token_lists)
    ours_s, ours_c, ours_v = min((ours(token_lists) for _ in range(args.repeat)), key=lambda r: r[0])
    sides = {"massiveds": (ours_s, ours_c, ours_v)}
    if not args.without_datasketch:
        sides["datasketch"] = min((theirs(token_lists) for _ in range(args.repeat)), key=lambda r: r[0])
    print(f"{len(texts):,} documents, {n_words:,} words ({args.files}, +{args.copies:.0%} planted copies); "
          f"{NUM_PERM} perms = {BANDS} bands x {NUM_PERM // BANDS} rows, word {NGRAM}-grams; tokenising (shared): {tokenise:.2f} s")
    print()
    print("| implementation | shingles+signatures+LSH (s) | documents/s | LSH candidate pairs | pairs with signature agreement >= 0.8 |")
    print("|---|---:|---:|---:|---:|")
    for name, (seconds, cand, verified) in sides.items():
        label = "massiveds (numpy)" if name == "massiveds" else f"datasketch {_version()}"
        print(f"| {label} | {seconds:.2f} | {len(texts) / seconds:,.0f} | {len(cand):,} | {len(verified):,} |")
    print()
    if "datasketch" in sides:
        ds_s, ds_c, ds_v = sides["datasketch"]
        print(f"speed ratio massiveds / datasketch: {ds_s / ours_s:.1f}x")
        print(f"agreement (Jaccard of pair sets): candidates {_agreement(ours_c, ds_c):.3f}, verified pairs {_agreement(ours_v, ds_v):.3f}")
    truth = _true_pairs(token_lists, set().union(*(cand for _, cand, _ in sides.values())))
    for name, (_, _, verified) in sides.items():
        hit = len(verified & truth)
        print(f"{name}: of the {len(truth)} candidate pairs (either side) at true Jaccard >= {THRESHOLD}, "
              f"verified {hit / max(len(truth), 1):.3f}; precision of its verified pairs {hit / max(len(verified), 1):.3f}")
    print(f"reproduce: python bench/minhash.py --files {args.files} --copies {args.copies} --seed {args.seed} --repeat {args.repeat}"
          + (" --without-datasketch" if args.without_datasketch else ""))


def _version() -> str:
    import importlib.metadata

    return importlib.metadata.version("datasketch")


if __name__ == "__main__":
    main()
