"""End to end on the shipped example: build, catalog, search (CLI and API), resume, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import massiveds
from massiveds.core.layout import sha256_file
from massiveds.core.passages import PassageFile
from massiveds.core.writer_lock import LOCK_FILE
from massiveds.encode.embed import PROBE_DIMS, PROBE_TEXT, resolve_model
from massiveds.encode.sparse import SHARD_FILES
from tests.helpers import massiveds as cli

pytestmark = pytest.mark.slow

# A sentence of the Jargon File entry "write-only code".
SENTENCE = "Code so arcane, complex, or ill-structured that it cannot be modified or even comprehended by anyone but its author"


def test_catalog_describes_the_datastore(example_datastore: Path) -> None:
    catalog = json.loads((example_datastore / "datastore.json").read_text())
    assert catalog["format_version"] == 1 and catalog["name"] == "jargon-example"
    embedder = catalog["embedder"]
    assert {k: v for k, v in embedder.items() if k != "probe"} == {
        "model": "all-MiniLM-L6-v2", "kind": "transformer", "dim": 384, "normalize": True, "max_length": 256, "query_prefix": "",
        "passage_prefix": "", "similarity": "inner_product"}
    # the probe fingerprints the model: the first components of a fixed text's unit vector, recomputed with sentence-transformers
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu")
    np.testing.assert_allclose(embedder["probe"], model.encode([PROBE_TEXT], normalize_embeddings=True)[0, :PROBE_DIMS], atol=1e-4)
    assert catalog["index"]["type"] == "flat" and "flat_max" in catalog["index"]["reason"]
    assert catalog["recall"]["status"] == "measured" and catalog["recall"]["recall_at_10"] == 1.0  # exact index
    shards = catalog["shards"]
    total = sum(s["count"] for s in shards)
    assert len(shards) == 3 == catalog["domains"]["wiki"]["shards"]  # ~1,250 passages, target 500
    assert all(s["count"] <= 500 for s in shards)
    assert [s["id_start"] for s in shards] == [0, shards[0]["count"], shards[0]["count"] + shards[1]["count"]]
    assert catalog["domains"]["wiki"]["passages"] == total
    build = catalog["build"]
    assert build["records_read"] == 1266
    assert build["records_read"] == build["documents_kept"] + sum(build["dropped"].values())
    for counts in build["sources"].values():  # per source: read = kept + dropped at extract, by reason
        assert counts["read"] == counts["kept"] + sum(n for k, n in counts.items() if k.startswith(("extract:", "filter:")))
    assert build["dropped"]["filter:too_few_words"] > 0
    # the share of the embed stage the model's encode calls take (how much: a measurement, bench/embed.py)
    assert 0 < build["embed_model_busy"] <= 1.0 and build["embed_passages_per_s"] > 0
    # tokens/s counts every token the model read: each passage's tokens, [CLS] and [SEP], cut at the model's 256
    texts = [t for s in shards for t in PassageFile(example_datastore / "shards" / s["name"] / "passages.arrow").column("text")]
    embed = json.loads((example_datastore / "build" / "embed" / "_SUCCESS.json").read_text())
    read = [len(ids) + 2 for ids in model.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    assert model.max_seq_length == 256 and max(read) > 256  # some passages are cut
    assert embed["tokens"] == sum(min(n, 256) for n in read)
    assert 20 < build["embed_tokens_per_s"] / build["embed_passages_per_s"] <= 256
    # FOLDOC copied some entries from the Jargon File: near dedup keeps the Jargon File's (earlier source)
    near = pq.read_table(example_datastore / "build" / "dropped" / "near_dedup").to_pylist()
    pairs = {(d["doc_id"], d["duplicate_of"]) for d in near}
    assert ("dict-foldoc:black art", "dict-jargon:black art") in pairs
    assert all(a.startswith("dict-foldoc:") and b.startswith("dict-jargon:") for a, b in pairs)
    assert build["dropped"]["near_dedup:near_duplicate"] == len(near)
    assert catalog["manifests"][0]["path"] == "jargon.yaml" and len(catalog["manifests"][0]["sha256"]) == 64
    for shard in shards:
        folder = example_datastore / "shards" / shard["name"]
        assert set(shard["files"]) == {"passages.arrow", "index.faiss", "vectors.npy", *SHARD_FILES}  # the example has BM25 on
        for name, record in shard["files"].items():
            assert sha256_file(folder / name) == record["sha256"]
        assert len(PassageFile(folder / "passages.arrow")) == shard["count"]
        vectors = np.load(folder / "vectors.npy")
        assert vectors.shape == (shard["count"], 384) and vectors.dtype == np.float16


def test_passages_trace_back_to_their_documents(example_datastore: Path) -> None:
    docs = pq.read_table(example_datastore / "build" / "documents").to_pylist()
    text_of = {d["doc_id"]: d["text"] for d in docs}
    ds = massiveds.open(example_datastore)
    ids = list(range(0, ds.num_passages, 37))
    for p in ds.passages(ids):
        assert text_of[p["doc_id"]][p["char_start"] : p["char_end"]] == p["text"]
    assert [p["passage_id"] for p in ds.passages(ids)] == ids


def test_search_finds_the_document_a_sentence_comes_from(example_datastore: Path) -> None:
    proc = cli("search", str(example_datastore), SENTENCE, "-k", "5", "--json")
    hits = json.loads(proc.stdout)
    assert len(hits) == 5
    assert hits[0]["doc_id"] == "dict-jargon:write-only code"
    for key in ("passage_id", "score", "domain", "doc_id", "title", "text"):
        assert key in hits[0]
    assert hits[0]["score"] >= hits[1]["score"] >= hits[4]["score"]
    api = massiveds.open(example_datastore).search([SENTENCE, "Hamlet"], k=5)
    assert [h["passage_id"] for h in api[0]] == [h["passage_id"] for h in hits]
    assert len(api) == 2 and len(api[1]) == 5
    text = cli("search", str(example_datastore), SENTENCE, "-k", "2").stdout
    assert "write-only code" in text and "1." in text


def test_second_build_does_no_work(example_datastore: Path) -> None:
    def files() -> dict[Path, tuple[int, int]]:  # every file but the writer lock, which each run takes
        return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in example_datastore.rglob("*") if p.is_file() and p.name != LOCK_FILE}

    before = files()
    proc = cli("build", str(Path(__file__).parents[1] / "manifests/examples/jargon.yaml"), "--out", str(example_datastore))
    after = files()
    assert after == before
    assert proc.stderr.count("skipped (done)") == 11  # extract dedup near_dedup dedup_index chunk shard sparse embed train index catalog
    assert "│ ran " not in proc.stderr.split("build of")[1].split("datastore")[0]  # the status column
    assert "BM25 index" in proc.stderr and "recall@10 (with exact rerank of 100)" in proc.stderr  # the summary, from the catalog


def test_user_errors_exit_non_zero_with_one_line(tmp_path: Path, example_datastore: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndomain: wiki\nsources:\n  - uri: nothing-here/*.jsonl\nchunk:\n  size: 0\n")
    proc = cli("build", str(bad), "--out", str(tmp_path / "out"), check=False)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "chunk.size" in lines[0] and "bad.yaml" in lines[0]
    assert not (tmp_path / "out").exists()

    bad.write_text("name: x\ndomain: wiki\nsources:\n  - uri: nothing-here/*.jsonl\n")
    proc = cli("build", str(bad), "--out", str(tmp_path / "out"), check=False)
    assert proc.returncode == 2 and "no file matches 'nothing-here/*.jsonl'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1

    proc = cli("search", str(tmp_path), "query", check=False)
    assert proc.returncode == 2 and "not a datastore" in proc.stderr

    other = tmp_path / "other.yaml"
    example = Path(__file__).parents[1] / "manifests/examples/jargon.yaml"
    other.write_text(example.read_text().replace("size: 128", "size: 100").replace("uri: data/", f"uri: {example.parent}/data/"))
    proc = cli("build", str(other), "--out", str(example_datastore), check=False)
    assert proc.returncode == 2 and "holds a build of another manifest" in proc.stderr


def test_an_embedding_model_that_cannot_load_ends_the_build_with_one_line(small_manifest: Path, tmp_path: Path) -> None:
    """The model actors load the model: a missing one ends the build with the loader's one-line error, not Ray's tracebacks."""
    small_manifest.write_text(small_manifest.read_text() + "embed: {model: no-such-encoder}\n")
    proc = cli("build", str(small_manifest), "--out", str(tmp_path / "ds"), check=False, env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot load embedding model 'no-such-encoder'")
    assert "Traceback" not in proc.stderr and "retries" not in proc.stderr


def test_ivfpq_build_trains_once_and_searches(small_manifest: Path, tmp_path: Path) -> None:
    text = small_manifest.read_text() + "index: {type: ivfpq, nlist: 8, pq_m: 16, nbits: 6, nprobe: 8}\n"
    small_manifest.write_text(text)
    out = tmp_path / "ivf"
    proc = cli("build", str(small_manifest), "--out", str(out))
    assert "Warning" not in proc.stderr  # progress and summary only (Ray's deprecation warnings are filtered)
    catalog = json.loads((out / "datastore.json").read_text())
    assert catalog["index"]["factory"] == "IVF8,PQ16x6" and len(catalog["shards"]) >= 2
    recall = catalog["recall"]
    assert recall["nprobe"] == 8 and recall["recall_at_10_rerank"] >= recall["recall_at_10"] and recall["recall_at_10_rerank"] > 0.9
    ds = massiveds.open(out)
    # nprobe = nlist: IVF-PQ ranks the exact top hit first for queries that are passages themselves
    passages = ds.passages(list(range(0, ds.num_passages, max(1, ds.num_passages // 20))))
    vectors = np.concatenate([np.load(out / "shards" / s["name"] / "vectors.npy") for s in catalog["shards"]]).astype(np.float32)
    ids = [p["passage_id"] for p in passages]
    _, found = ds.search_vectors(vectors[ids], k=1)
    assert (found[:, 0] == np.array(ids)).mean() >= 0.9
    assert os.path.getsize(out / "trained.faiss") > 0


def test_retro_style_64_token_chunks_end_to_end(small_manifest: Path, tmp_path: Path) -> None:
    text = small_manifest.read_text().replace("chunk: {size: 96, min_size: 16}", "chunk: {unit: tokens, size: 64, min_size: 8}")
    small_manifest.write_text(text)
    out = tmp_path / "retro"
    cli("build", str(small_manifest), "--out", str(out))
    ds = massiveds.open(out)
    passages = ds.passages(list(range(ds.num_passages)))
    assert max(p["n_tokens"] for p in passages) < 64 + 8
    assert sum(p["n_tokens"] == 64 for p in passages) > len(passages) / 2
    catalog = json.loads((out / "datastore.json").read_text())
    assert catalog["chunk"]["unit"] == "tokens" and catalog["domains"]["wiki"]["tokens"] == sum(p["n_tokens"] for p in passages)
    hit = ds.search("A robot that searches web pages and netnews looking for valid email addresses", k=1)[0]
    assert hit["doc_id"] == "dict-jargon:address harvester"
