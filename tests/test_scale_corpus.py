"""``bench/scale_corpus.py``: deterministic, its planted duplicates and garbage are what planted.json says, nothing else is a near
duplicate, and a build of its manifest removes exactly the planted copies and garbage."""

from __future__ import annotations

import collections
import io
import json
from pathlib import Path
from typing import Any

import pytest
import zstandard

from bench.scale_corpus import main, planted_found
from massiveds.clean.exact_dedup import dedup_key
from massiveds.clean.minhash import MinHasher, true_jaccard
from massiveds.core.manifest import NearDedup, load_manifest
from massiveds.encode.chunk import word_windows
from tests.helpers import extract, shared
from tests.helpers import massiveds as cli

#: The three smallest pools (~0.6 M words): 2,000 passages reuse each piece about once, the regime of a large corpus.
SMALL = "qa_forum,stem_latex,wiki"
THRESHOLD = NearDedup().threshold


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One plain-text pool cache for the module (skipped where ../shared is not checked out)."""
    shared("jsonl")
    return tmp_path_factory.mktemp("scale-pool")


def generate(out: Path, pool: Path, *extra: str, passages: int = 2000, domains: str = SMALL) -> dict[str, Any]:
    """Run the generator in this process; its planted.json."""
    main(["--passages", str(passages), "--out", str(out), "--cache", str(pool), "--file-mb", "0.4", "--domains", domains,
          "--garbage-rate", "0.01", *extra])
    return json.loads((out / "planted.json").read_text())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, pool: Path) -> Path:
    """A small generated corpus, seed 7."""
    out = tmp_path_factory.mktemp("scale-corpus")
    generate(out, pool, "--seed", "7")
    return out


def data_files(folder: Path) -> dict[str, bytes]:
    """Every generated file's bytes by name."""
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.jsonl.zst"))}


def rows(folder: Path) -> dict[str, dict[str, Any]]:
    """Every generated row by id, with the file it is in."""
    out = {}
    for name, data in data_files(folder).items():
        with io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)), encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                out[row["id"]] = row | {"file": name, "line_bytes": len(line.encode("utf-8"))}
    return out


def test_same_seed_same_bytes_and_another_seed_other_text(corpus: Path, pool: Path, tmp_path: Path) -> None:
    generate(tmp_path / "again", pool, "--seed", "7", "--workers", "1")  # one process instead of two: the same bytes
    assert data_files(tmp_path / "again") == data_files(corpus)
    assert (tmp_path / "again" / "planted.json").read_bytes() == (corpus / "planted.json").read_bytes()
    generate(tmp_path / "other", pool, "--seed", "8")
    texts = {r["text"] for r in rows(corpus).values()}
    assert not texts & {r["text"] for r in rows(tmp_path / "other").values() if len(r["text"].split()) >= 20}


def test_planted_json_is_what_the_files_hold(corpus: Path) -> None:
    planted = json.loads((corpus / "planted.json").read_text())
    docs = rows(corpus)
    counts = planted["counts"]
    assert counts["documents"] == len(docs) and counts["files"] == len(data_files(corpus)) == len(planted["files"])
    assert counts["words"] == sum(len(r["text"].split()) for r in docs.values())
    assert counts["bytes"] == sum(r["line_bytes"] for r in docs.values())
    assert counts["compressed_bytes"] == sum(len(b) for b in data_files(corpus).values())
    assert (counts["exact_copies"], counts["near_copies"], counts["garbage"]) == (len(planted["exact"]), len(planted["near"]),
                                                                                 len(planted["garbage"]))
    assert min(counts["exact_copies"], counts["near_copies"], counts["garbage"]) > 0
    assert set(planted["domains"]) == set(SMALL.split(","))
    for copy, original in (planted["exact"] | planted["near"]).items():
        assert docs[copy]["domain"] == docs[original]["domain"] and docs[copy]["file"] > docs[original]["file"]
    assert all(docs[c]["text"] == docs[o]["text"] for c, o in planted["exact"].items())
    hasher = MinHasher()
    for copy, original in planted["near"].items():
        a, b = docs[copy]["text"], docs[original]["text"]
        assert dedup_key(a) != dedup_key(b)  # exact dedup does not catch it
        assert true_jaccard(hasher.shingles([a])[0], hasher.shingles([b])[0]) >= 0.9
    base = [r for i, r in docs.items() if i not in planted["exact"] and i not in planted["near"] and i not in planted["garbage"]]
    assert counts["kept_words"] == sum(len(r["text"].split()) for r in base)
    assert counts["estimated_passages"] == sum(len(word_windows(r["text"], 256, 0, 20)) for r in base)
    assert abs(counts["estimated_passages"] - 2000) < 20  # each domain's share, rounded, plus its last document's passages


def test_the_build_filters_drop_the_garbage_and_keep_the_rest(corpus: Path) -> None:
    planted = json.loads((corpus / "planted.json").read_text())
    dropped, kept = set(), 0
    for path in sorted(corpus.glob("*.jsonl.zst")):
        got = extract(path, "jsonl", id_field="id", title_field="title")  # the extract stage's reading, mapping and filters
        dropped |= {d["doc_id"] for d in got.dropped}
        kept += len(got.docs)
    assert dropped == set(planted["garbage"])
    assert kept == planted["counts"]["documents"] - len(planted["garbage"])


def test_no_two_documents_are_near_duplicates_unless_planted(corpus: Path) -> None:
    planted = json.loads((corpus / "planted.json").read_text())
    docs = [r for i, r in rows(corpus).items() if i not in planted["exact"] and i not in planted["near"] and i not in planted["garbage"]]
    hasher = MinHasher()
    texts = [r["text"] for r in docs]
    keys = hasher.band_keys(hasher.signatures(texts))
    buckets: dict[tuple[int, int], list[int]] = collections.defaultdict(list)
    for i, row in enumerate(keys.tolist()):
        for band, key in enumerate(row):
            buckets[(band, key)].append(i)
    pairs = {(a, b) for members in buckets.values() for a in members for b in members if a < b}
    hashes, offsets = hasher.shingles(texts)
    worst = max((true_jaccard(hashes[offsets[a]:offsets[a + 1]], hashes[offsets[b]:offsets[b + 1]]) for a, b in pairs), default=0.0)
    assert worst < THRESHOLD, f"{len(pairs)} LSH candidate pairs among {len(docs)} documents, the closest at Jaccard {worst:.3f}"
    passages = [r["text"][s:e] for r in docs for s, e, _ in word_windows(r["text"], 256, 0, 20)]
    assert len(set(passages)) >= 0.999 * len(passages)


@pytest.mark.slow
def test_a_build_of_the_manifest_removes_exactly_the_planted_copies_and_garbage(pool: Path, tmp_path: Path, static_model: Path) -> None:
    planted = generate(tmp_path / "corpus", pool, "--seed", "3", "--exact-rate", "0.08", "--near-rate", "0.08", "--model",
                       str(static_model), passages=1500, domains="")  # all 8 domains, ~80 planted copies
    manifest = tmp_path / "corpus" / "scale.yaml"
    assert len(load_manifest(manifest).manifest.sources) == 8
    out = tmp_path / "ds"
    cli("build", str(manifest), "--out", str(out), "--engine", "local")
    found = planted_found(out, planted)
    print(json.dumps(found, indent=1))
    assert found["planted"] == len(planted["exact"]) + len(planted["near"]) > 0
    assert (found["precision"], found["recall"]) == (1.0, 1.0), found
    assert found["right_original"] == found["found"]
    assert found["garbage_dropped"] == found["garbage"] > 0 and not found["other_dropped"]
    catalog = json.loads((out / "datastore.json").read_text())
    assert sum(s["count"] for s in catalog["shards"]) == planted["counts"]["estimated_passages"]
