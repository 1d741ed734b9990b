"""Planted corpora of REAL text (``../shared/data``, MEDLINE abstracts and perlfaq) for dedup and decontamination tests.

Every document is real text or a real text with known edits; the ground truth is computed from the
texts themselves (true shingle-set Jaccard), never assumed from the edit recipe.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from massiveds.core.schema import DOCUMENTS, ordinal
from massiveds.ingest.sources.files import InputFile
from pipelines.stage import InputItem
from tests.helpers import SHARED_DATA

DATA = SHARED_DATA / "jsonl"


def read_jsonl_zst(name: str) -> list[dict]:
    """All rows of one of the shared real-text files."""
    with open(DATA / name, "rb") as f:
        raw = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True).read()
    return [json.loads(line) for line in raw.decode("utf-8").split("\n") if line.strip()]


def abstracts(min_words: int = 120, max_words: int = 400) -> list[dict]:
    """MEDLINE abstracts of a useful length, in file order, distinct texts only."""
    seen, out = set(), []
    for r in read_jsonl_zst("biomed.jsonl.zst"):
        n = len(r["text"].split())
        if r["source"] == "medline" and min_words <= n <= max_words and r["text"] not in seen:
            seen.add(r["text"])
            out.append(r)
    return out


def substitute(words: list[str], rate: float, vocab: list[str], rng: random.Random) -> list[str]:
    """Replace ``rate`` of the words, at scattered random positions, by other real words."""
    out = list(words)
    for i in rng.sample(range(len(words)), round(rate * len(words))):
        out[i] = rng.choice(vocab)
    return out


def replace_span(words: list[str], rate: float, vocab: list[str], rng: random.Random) -> list[str]:
    """Replace one contiguous run of ``rate`` of the words by other real words (a rewritten passage)."""
    k = round(rate * len(words))
    start = rng.randrange(0, len(words) - k + 1)
    return words[:start] + [rng.choice(vocab) for _ in range(k)] + words[start + k :]


@dataclass
class Doc:
    """One planted document: its text and what it is."""

    doc_id: str
    text: str
    kind: str
    family: int | None = None
    meta: dict = field(default_factory=dict)


def near_dup_corpus(families: int = 36, unrelated: int = 120, seed: int = 7) -> list[Doc]:
    """Real abstracts, each with an exact copy and near copies at 5 / 10 / 30 % of words changed
    (scattered substitutions and one rewritten span), plus unrelated real abstracts."""
    rng = random.Random(seed)
    pool = abstracts()
    originals, others = pool[:families], pool[families : families + unrelated]
    vocab = sorted({w for r in pool[families + unrelated :] for w in r["text"].split()})
    docs: list[Doc] = []
    for f, r in enumerate(originals):
        words = r["text"].split()
        docs.append(Doc(f"orig-{f}", r["text"], "original", f))
        docs.append(Doc(f"copy-{f}", r["text"], "exact", f))
        for rate in (0.05, 0.10, 0.30):
            docs.append(Doc(f"sub{round(rate * 100)}-{f}", " ".join(substitute(words, rate, vocab, rng)), f"sub{round(rate * 100)}", f))
            docs.append(Doc(f"span{round(rate * 100)}-{f}", " ".join(replace_span(words, rate, vocab, rng)), f"span{round(rate * 100)}", f))
    docs.extend(Doc(f"unrelated-{i}", r["text"], "unrelated") for i, r in enumerate(others))
    rng.shuffle(docs)  # copies may come before their original: the smallest _ord must survive whatever it is
    return docs


def write_parts(build: Path, docs: list[Doc], parts: int, domain: str = "biomed") -> list[InputItem]:
    """Write ``docs`` as ``parts`` documents files (DOCUMENTS schema, one input file each); returns the unit items.

    The items belong to the build's first (here: only) manifest, ``part`` 0.
    """
    items = []
    for p in range(parts):
        chunk = docs[p::parts]
        unit = f"s0000-f{p:07d}"
        rows = [{"doc_id": d.doc_id, "domain": domain, "source": "planted", "url": None, "title": None, "text": d.text,
                 "meta": json.dumps(d.meta), "_ord": ordinal(0, p, i)} for i, d in enumerate(chunk)]
        path = build / "documents" / f"{unit}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=DOCUMENTS), str(path), row_group_size=64)
        items.append(InputItem.of(InputFile(0, p, str(path), path.name, "planted", "jsonl", "text", "id", None, None), 0))
    return items
