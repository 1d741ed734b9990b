"""Decontamination units on real text: perlfaq / Debian FAQ items planted into real MEDLINE abstracts."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest

from massiveds.clean.decontaminate import EvalIndex, build_index, resolve_eval_sets
from massiveds.clean.ngrams import ngram_hashes, words
from massiveds.core.errors import ManifestError
from massiveds.core.manifest import Chunk, Decontaminate, EvalSet, Manifest, Source
from massiveds.encode.chunk import passage_count
from pipelines.stages.decontaminate import run_decontaminate
from tests.helpers import local
from tests.planted_corpus import Doc, abstracts, read_jsonl_zst, write_parts

#: The manifest the planted documents come from: its chunking counts the passages decontamination removes.
PLANTED = Manifest(name="planted", domain="biomed", sources=[Source(uri="documents")], chunk=Chunk(size=64, min_size=16))


def _eval_sets(folder: Path) -> tuple[list[dict], list[dict]]:
    """A JSONL set (question/answer from perlfaq, plus short items) and a Parquet set (Debian FAQ passages)."""
    qa = read_jsonl_zst("qa_forum.jsonl.zst")
    perl = [r for r in qa if r["source"] == "perlfaq"][:60]
    jsonl_items = [{"qid": f"perlfaq-{i}", "question": r["title"], "answer": " ".join(r["text"].split()[:70])} for i, r in enumerate(perl)]
    shorts = ["What is Perl?", "Is it free?", "Who wrote it?"]
    jsonl_items += [{"qid": f"short-{i}", "question": q, "answer": "Yes."} for i, q in enumerate(shorts)]
    debian = [r for r in qa if r["source"] == "debian-faq"]
    parquet_items = [{"prompt": " ".join(r["text"].split()[200:260])} for r in debian[:12]]
    (folder / "evals").mkdir(parents=True, exist_ok=True)
    (folder / "evals" / "perlfaq.jsonl").write_text("".join(json.dumps(x) + "\n" for x in jsonl_items))
    pq.write_table(pa.Table.from_pylist(parquet_items), str(folder / "evals" / "debian.parquet"))
    return jsonl_items, parquet_items


def _insert(host: str, snippet: str, rng: random.Random) -> str:
    words = host.split()
    at = rng.randrange(1, len(words) - 1)
    return " ".join(words[:at]) + "\n" + snippet + "\n" + " ".join(words[at:])


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Doc], dict, Decontaminate]:
    root = tmp_path_factory.mktemp("decon")
    jsonl_items, parquet_items = _eval_sets(root)
    rng = random.Random(11)
    hosts = [r["text"] for r in abstracts()[:200]]
    docs = [Doc(f"clean-{i}", t, "clean") for i, t in enumerate(hosts)]
    planted: dict[str, tuple[str, str]] = {}
    for k, i in enumerate(rng.sample(range(60), 8)):  # whole items (question + answer), some upper-cased
        it = jsonl_items[i]
        snippet = it["question"] + " " + it["answer"]
        docs[k] = Doc(f"full-{k}", _insert(hosts[k], snippet.upper() if k % 3 == 0 else snippet, rng), "full")
        planted[docs[k].doc_id] = ("perlfaq", it["qid"])
    long_items = [i for i in range(60) if len(jsonl_items[i]["answer"].split()) == 70]
    for k, i in enumerate(rng.sample(long_items, 4), start=8):  # a 40-word run of an answer: overlap < 0.8, run >= 32
        snippet = " ".join(jsonl_items[i]["answer"].split()[20:60])
        assert len(words(snippet)) >= 34  # as compared: \w+ words ("C<perl -V>" is two words, "->" none)
        docs[k] = Doc(f"run-{k}", _insert(hosts[k], snippet, rng), "run")
        planted[docs[k].doc_id] = ("perlfaq", jsonl_items[i]["qid"])
    for k, i in enumerate(rng.sample(range(12), 3), start=12):  # whole items of the Parquet set
        docs[k] = Doc(f"pq-{k}", _insert(hosts[k], parquet_items[i]["prompt"], rng), "parquet")
        planted[docs[k].doc_id] = ("debian", str(i))
    for k, i in enumerate(rng.sample(long_items, 5), start=15):  # only 20 words of an item: below both criteria, clean
        snippet = " ".join(jsonl_items[i]["answer"].split()[10:30])
        assert 13 <= len(words(snippet)) < 32
        docs[k] = Doc(f"partial-{k}", _insert(hosts[k], snippet, rng), "clean")
    rng.shuffle(docs)
    items = write_parts(root, docs, 3)
    decon = Decontaminate(eval_sets=[EvalSet(uri="evals/perlfaq.jsonl", name="perlfaq", fields=["question", "answer"], id_field="qid"),
                                     EvalSet(uri="evals/*.parquet", name="debian", format="parquet", fields=["prompt"])])
    summary = run_decontaminate(local(root), items, root, [PLANTED], decon, resolve_eval_sets(decon, root))
    return root, docs, {"planted": planted, "summary": summary, "items": items}, decon


def _dropped(build: Path) -> pa.Table:
    return pds.dataset(str(build / "dropped" / "decontaminate"), format="parquet").to_table()


def test_every_planted_document_removed_and_no_clean_one(planted) -> None:
    build, docs, info, _ = planted
    dropped = _dropped(build)
    removed = set(dropped.column("doc_id").to_pylist())
    assert removed == set(info["planted"])
    assert len(removed) == 15 and len(docs) == 200
    assert not [d.doc_id for d in docs if d.kind == "clean" and d.doc_id in removed]
    assert info["summary"].removed == 15 and info["summary"].scanned == 200


def test_drop_records_name_the_eval_set_and_item(planted) -> None:
    build, _, info, decon = planted
    dropped = _dropped(build)
    assert set(dropped.column("stage").to_pylist()) == {"decontaminate"}
    for doc_id, reason, detail in zip(*(dropped.column(c).to_pylist() for c in ("doc_id", "reason", "detail")), strict=True):
        d = json.loads(detail)
        assert (d["eval_set"], d["item"]) == info["planted"][doc_id]
        if doc_id.startswith("run-"):
            assert reason == "eval_common_run" and d["overlap"] < decon.threshold and d["run"] >= decon.min_run
        else:
            assert reason == "eval_ngram_overlap" and d["overlap"] == 1.0


def test_report_per_eval_set(planted) -> None:
    build, docs, info, _ = planted
    report = json.loads((build / "decontaminate" / "report.json").read_text())
    assert report["perlfaq"]["items"] == 63 and report["perlfaq"]["too_short"] == 3
    perl_items = [item for es, item in info["planted"].values() if es == "perlfaq"]
    assert report["perlfaq"]["documents_removed"] == 12 and report["perlfaq"]["items_leaked"] == len(set(perl_items))
    top = report["perlfaq"]["top_items"][0]
    assert top["documents"] == max(perl_items.count(i) for i in perl_items)
    assert report["debian"]["items"] == 12 and report["debian"]["documents_removed"] == 3
    texts = {d.doc_id: d.text for d in docs}
    for es in ("perlfaq", "debian"):  # what the removed documents would have added, cut as the build cuts them
        lost = [passage_count(texts[d], PLANTED.chunk) for d, (s, _) in info["planted"].items() if s == es]
        assert report[es]["passages_removed"] == sum(lost) > report[es]["documents_removed"]
    assert info["summary"].passages_removed == sum(passage_count(texts[d], PLANTED.chunk) for d in info["planted"])
    for es, r in report.items():  # the (at most 10) items that leaked into most documents, all planted ones
        leaked = {(es, t["item"]) for t in r["top_items"]}
        assert leaked <= set(info["planted"].values()) and len(leaked) == min(10, r["items_leaked"])
    assert info["summary"].too_short == 3


def test_run_criterion_can_be_turned_off(planted, tmp_path: Path) -> None:
    build, docs, info, decon = planted
    items = write_parts(tmp_path, docs, 2)
    (tmp_path / "evals").symlink_to(build / "evals")
    off = decon.model_copy(update={"min_run": 0})
    run_decontaminate(local(tmp_path), items, tmp_path, [PLANTED], off, resolve_eval_sets(off, tmp_path))
    removed = set(_dropped(tmp_path).column("doc_id").to_pylist())
    assert removed == {d for d in info["planted"] if not d.startswith("run-")}


def test_overlap_and_run_definitions() -> None:
    item = " ".join(f"w{i}" for i in range(30))  # 30 words -> 18 distinct 13-grams
    ngrams, items = build_index([("set", "a", item)], 13)
    index = EvalIndex(ngrams, items, 13)
    doc = "intro words here " + " ".join(f"w{i}" for i in range(24)) + " outro"  # the first 24 words of the item
    (m,) = index.matches(ngram_hashes(doc, 13), threshold=0.5, min_run=0)
    assert m.overlap == pytest.approx(12 / 18) and m.run == 24
    assert index.matches(ngram_hashes(doc, 13), threshold=0.7, min_run=25) == []
    assert len(index.matches(ngram_hashes(doc, 13), threshold=0.7, min_run=24)) == 1
    # the same n-grams out of order give overlap but no long run
    shuffled = " ".join(f"w{i}" for i in range(12, 24)) + " x " + " ".join(f"w{i}" for i in range(0, 13))
    (m,) = index.matches(ngram_hashes(shuffled, 13), threshold=0.0, min_run=0)
    assert m.run == 13 and m.overlap == pytest.approx(1 / 18)


def test_eval_set_manifest_fields(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="min_run"):
        Decontaminate(min_run=5)
    with pytest.raises(ValueError, match="unique"):
        Decontaminate(eval_sets=[EvalSet(uri="a.jsonl"), EvalSet(uri="a.jsonl")])
    with pytest.raises(ManifestError, match="no file matches"):
        resolve_eval_sets(Decontaminate(eval_sets=[EvalSet(uri="missing/*.jsonl")]), tmp_path)
