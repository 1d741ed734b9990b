"""Decontamination: find documents that contain evaluation items, by word n-gram overlap and common runs.

**Index.** Every eval item (its ``fields`` joined by newlines) is cut into word ``ngram``-grams
(default 13, hashed to 64 bits as in ``massiveds.clean.ngrams``: NFKC, case-folded ``\\w+`` words).
The index is the table ``(hash, item, pos)`` sorted by hash, plus one row per item; it is built once
and stored as Parquet (no pickle). Items with fewer than ``ngram`` words have no n-gram: they are
counted as ``too_short`` in the report and cannot be detected (matching a handful of words would
flag common phrases everywhere).

**Scan.** For a document ``D`` and an item ``E`` with distinct n-gram set ``G(E)``:

* overlap(D, E) = ``|G(E) ∩ G(D)| / |G(E)|``, the fraction of the item's distinct n-grams that occur
  in the document (containment of the item in the document; at document level a symmetric Jaccard
  would shrink with the document's length and miss a whole item pasted into a long page);
* run(D, E) = the longest run of consecutive words shared by ``D`` and ``E``: a chain of ``L``
  matched n-grams at consecutive positions in both texts (same diagonal ``pos_D - pos_E``) is a
  common run of ``L + ngram - 1`` words.

``D`` is contaminated by ``E`` when overlap ≥ ``threshold`` or (``min_run`` > 0 and) run ≥
``min_run`` words: the two criteria MassiveDS uses (13-gram overlap at 0.8, and the longest common
word sequence), applied here at build time to whole documents.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from massiveds.clean.ngrams import ngram_hashes_batch, words
from massiveds.core.errors import ManifestError
from massiveds.core.manifest import Decontaminate
from massiveds.ingest.eval_file import eval_records, record_text

INDEX_NGRAMS = pa.schema([("hash", pa.uint64()), ("item", pa.int32()), ("pos", pa.int32())])
INDEX_ITEMS = pa.schema(
    [("item", pa.int32()), ("eval_set", pa.string()), ("item_id", pa.string()), ("words", pa.int32()), ("ngrams", pa.int32())]
)


def resolve_eval_sets(decon: Decontaminate, base_dir: Path) -> list[dict[str, Any]]:
    """Each eval set with its files resolved (a path or glob relative to ``base_dir``), as plain dicts."""
    out = []
    for es in decon.eval_sets:
        pattern = Path(es.uri) if Path(es.uri).is_absolute() else base_dir / es.uri
        files = sorted(p for p in glob.glob(str(pattern), recursive=True) if Path(p).is_file())
        if not files:
            raise ManifestError(f"decontaminate.eval_sets {es.label!r}: no file matches {es.uri!r} (relative to {base_dir})")
        out.append({"name": es.label, "paths": files, "format": es.format, "fields": list(es.fields), "id_field": es.id_field})
    return out


def read_eval_items(spec: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(item id, text) of every readable record of one resolved eval set; text = its ``fields`` joined by newlines."""
    multi = len(spec["paths"]) > 1
    for f_idx, path in enumerate(spec["paths"]):
        for rec in eval_records(path, spec["format"]):
            if rec.fields is None:
                continue
            raw_id = rec.fields.get(spec["id_field"]) if spec["id_field"] else None
            item_id = str(raw_id) if raw_id is not None else (f"{f_idx}:{rec.row}" if multi else str(rec.row))
            yield item_id, record_text(rec.fields, spec["fields"])


def build_index(items: Sequence[tuple[str, str, str]], ngram: int) -> tuple[pa.Table, pa.Table]:
    """Index tables (n-grams sorted by hash, and items) of ``(eval_set, item_id, text)`` triples."""
    token_lists = [words(text) for _, _, text in items]
    hashes, offsets = ngram_hashes_batch(token_lists, ngram, short=False)
    counts = np.diff(offsets)
    item = np.repeat(np.arange(len(items), dtype=np.int32), counts)
    pos = (np.arange(len(hashes)) - np.repeat(offsets[:-1], counts)).astype(np.int32)
    order = np.lexsort((pos, item, hashes))
    columns = [pa.array(hashes[order], pa.uint64()), pa.array(item[order], pa.int32()), pa.array(pos[order], pa.int32())]
    ngrams = pa.table(columns, schema=INDEX_NGRAMS)
    distinct = np.zeros(len(items), np.int32)
    if len(hashes):
        pairs = np.unique(np.stack([item.astype(np.uint64), hashes], axis=1), axis=0)
        distinct = np.bincount(pairs[:, 0].astype(np.int64), minlength=len(items)).astype(np.int32)
    table = pa.table(
        [
            pa.array(np.arange(len(items), dtype=np.int32)),
            pa.array([s for s, _, _ in items], pa.string()),
            pa.array([i for _, i, _ in items], pa.string()),
            pa.array([len(t) for t in token_lists], pa.int32()),
            pa.array(distinct),
        ],
        schema=INDEX_ITEMS,
    )
    return ngrams, table


@dataclass(frozen=True)
class Match:
    """One (document, eval item) pair that passed a criterion."""

    item: int
    overlap: float
    run: int


class EvalIndex:
    """The eval n-gram index in memory: unique hashes with CSR offsets into (item, position)."""

    def __init__(self, ngrams: pa.Table, items: pa.Table, ngram: int) -> None:
        hashes = ngrams.column("hash").to_numpy()
        self.ngram = ngram
        self.item = ngrams.column("item").to_numpy().astype(np.int64)
        self.pos = ngrams.column("pos").to_numpy().astype(np.int64)
        first = np.concatenate([[True], hashes[1:] != hashes[:-1]]) if len(hashes) else np.zeros(0, bool)
        self.uniq = hashes[first]
        self.starts = np.concatenate([np.flatnonzero(first), [len(hashes)]]).astype(np.int64)
        self.item_ngrams = items.column("ngrams").to_numpy().astype(np.int64)
        self.eval_set = items.column("eval_set").to_pylist()
        self.item_id = items.column("item_id").to_pylist()

    def hits(self, hashes: np.ndarray) -> np.ndarray:
        """Boolean mask of the hashes that occur in some eval item."""
        if len(self.uniq) == 0 or len(hashes) == 0:
            return np.zeros(len(hashes), bool)
        k = np.minimum(np.searchsorted(self.uniq, hashes), len(self.uniq) - 1)
        return self.uniq[k] == hashes

    def matches(self, hashes: np.ndarray, threshold: float, min_run: int) -> list[Match]:
        """Eval items that one document (its n-gram hashes in order) is contaminated by."""
        hit = self.hits(hashes)
        if not hit.any():
            return []
        doc_pos = np.flatnonzero(hit)
        k = np.searchsorted(self.uniq, hashes[hit])
        count = self.starts[k + 1] - self.starts[k]
        row = np.repeat(self.starts[k], count) + np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        item, item_pos, dpos, key = self.item[row], self.pos[row], np.repeat(doc_pos, count), np.repeat(k, count)
        # overlap: distinct (item, n-gram) pairs present, over the item's distinct n-grams
        present = np.unique(np.stack([item, key], axis=1), axis=0)[:, 0]
        items, found = np.unique(present, return_counts=True)
        overlap = found / self.item_ngrams[items]
        # run: chains of consecutive item positions on one diagonal (doc_pos - item_pos)
        diag = dpos - item_pos
        order = np.lexsort((item_pos, diag, item))
        it, dg, ip = item[order], diag[order], item_pos[order]
        cont = (it[1:] == it[:-1]) & (dg[1:] == dg[:-1]) & (ip[1:] == ip[:-1] + 1)
        run_id = np.cumsum(np.concatenate([[True], ~cont])) - 1
        run_len = np.bincount(run_id)
        run_item = it[np.concatenate([[True], ~cont])]
        group = np.flatnonzero(np.concatenate([[True], run_item[1:] != run_item[:-1]]))
        best = np.maximum.reduceat(run_len, group)  # run_item is sorted: one group per item, in ``items`` order
        out = []
        for i, ov, longest in zip(items.tolist(), overlap.tolist(), best.tolist(), strict=True):
            run_words = int(longest) + self.ngram - 1
            if ov >= threshold or (min_run and run_words >= min_run):
                out.append(Match(i, float(ov), run_words))
        return out


def scan_texts(texts: Sequence[str], index: EvalIndex, threshold: float, min_run: int) -> list[list[Match]]:
    """For each text, the eval items it is contaminated by (empty list for a clean text)."""
    hashes, offsets = ngram_hashes_batch([words(t) for t in texts], index.ngram, short=False)
    hit = index.hits(hashes)
    doc_of = np.repeat(np.arange(len(texts)), np.diff(offsets))
    any_hit = np.bincount(doc_of[hit], minlength=len(texts)) > 0
    out: list[list[Match]] = [[] for _ in texts]
    for d in np.flatnonzero(any_hit):
        out[d] = index.matches(hashes[offsets[d] : offsets[d + 1]], threshold, min_run)
    return out
