"""``massiveds delete`` and ``compact``: deleted documents are never searched again (API, eval, serve, subsample), audited, then removed."""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from massiveds.core.catalog import read_catalog
from massiveds.core.errors import MassiveDSError
from massiveds.evaluate.evalset import EvalFields, read_eval_set
from massiveds.evaluate.experiment import EvalPlan, evaluate
from massiveds.ops.compact import compact
from massiveds.ops.delete import Selection, delete_documents, deleted_documents
from massiveds.store.datastore import Datastore
from tests.helpers import EXAMPLE
from tests.helpers import massiveds as cli
from tests.test_serve import running_server

QUERIES = ["what is a kludge", "a program so badly written that nobody can maintain it", "hacker ethic", "the jargon of compilers"]
MODES = ("dense", "sparse", "hybrid")


@pytest.fixture()
def ds_path(example_datastore: Path, tmp_path: Path) -> Path:
    """A private copy of the shipped example (deletes change it)."""
    return Path(shutil.copytree(example_datastore, tmp_path / "ds"))


def top_docs(ds: Datastore, k: int = 10) -> dict[str, list[list[str]]]:
    return {mode: [[h["doc_id"] for h in hits] for hits in ds.search(QUERIES, k=k, mode=mode)] for mode in MODES}


def ranked(ds: Datastore, **options: Any) -> list[list[tuple[int, float]]]:
    return [[(h["passage_id"], round(h["score"], 5)) for h in hits] for hits in ds.search(QUERIES, k=20, **options)]


def test_delete_by_id_holds_at_once_for_an_open_datastore_eval_and_subsample(ds_path: Path, tmp_path: Path) -> None:
    ds = Datastore.open(ds_path)
    before = top_docs(ds)
    gone = {docs[0] for docs in before["dense"][:2]}  # the best hit of two queries
    (tmp_path / "ids.txt").write_text("\n".join(sorted(gone)) + "\nno-such-document\n")
    out = cli("delete", str(ds_path), "--doc-ids", str(tmp_path / "ids.txt"), "--reason", "takedown request 42")
    assert "documents deleted" in out.stderr
    after = top_docs(ds)  # the same open object: it sees the new catalog
    for mode in MODES:
        assert not gone & {d for docs in after[mode] for d in docs}, mode
        assert all(len(docs) == 10 for docs in after[mode])
    catalog = json.loads((ds_path / "datastore.json").read_text())
    (record,) = catalog["deletions"]
    assert record["reason"] == "takedown request 42" and record["documents"] == len(gone) and record["selection"].startswith("doc-ids ")
    assert sum(s["deleted"] for s in catalog["shards"] if "deleted" in s) == record["passages"] > 0
    table = pq.read_table(ds_path / record["table"])
    assert set(table.column("doc_id").to_pylist()) == gone and "text" not in table.column_names
    assert all(len(digest) == 16 for digest in table.column("text_hash").to_pylist())  # what keeps them out of appends
    assert ": ok" in cli("verify", str(ds_path)).stderr
    rows = [{"question": q, "doc": d} for q, d in zip(QUERIES[:2], sorted(gone), strict=False)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fields = EvalFields(answers=None, gold_doc="doc")
    report = evaluate([("ds", ds)], [read_eval_set(str(tmp_path / "qa.jsonl"), fields)], EvalPlan(ks=(100,), bootstrap=10), fields)
    assert report.points[0].metrics["doc@100"].mean == 0.0
    cli("subsample", str(ds_path), "--fraction", "1.0", "--out", str(tmp_path / "all"))
    sub = Datastore.open(tmp_path / "all")
    assert sub.num_passages == ds.num_passages - record["passages"]
    assert not gone & {d for s in sub.shards for d in s.passages.column("doc_id")}
    again = cli("delete", str(ds_path), "--doc-ids", str(tmp_path / "ids.txt"))
    assert "nothing new to delete" in again.stderr and len(json.loads((ds_path / "datastore.json").read_text())["deletions"]) == 1


@pytest.mark.slow
def test_a_running_server_stops_returning_deleted_passages(ds_path: Path, tmp_path: Path) -> None:
    with running_server(ds_path, tmp_path / "serve.log") as client:
        status, body = client.search({"query": QUERIES[0], "n_docs": 5})
        first = body["results"]["hits"][0][0]["doc_id"]
        status, overview = client.request("GET", "/inspect")
        assert status == 200 and sum(s["deleted"] for s in overview["shards"]) == 0 and overview["deletions"] == []
        (tmp_path / "ids.txt").write_text(first + "\n")
        cli("delete", str(ds_path), "--doc-ids", str(tmp_path / "ids.txt"))
        status, body = client.search({"query": QUERIES[0], "n_docs": 5})
        assert status == 200 and first not in [h["doc_id"] for h in body["results"]["hits"][0]]
        assert len(body["results"]["hits"][0]) == 5
        status, overview = client.request("GET", "/inspect")  # the page's datastore view sees the deletion too
        assert status == 200 and sum(s["deleted"] for s in overview["shards"]) > 0 and len(overview["deletions"]) == 1


def test_compact_removes_deleted_passages_keeps_ids_and_results(ds_path: Path, tmp_path: Path) -> None:
    ds = Datastore.open(ds_path)
    victims = sorted({h["doc_id"] for hits in ds.search(QUERIES, k=3, mode="dense") for h in hits})
    (tmp_path / "ids.txt").write_text("\n".join(victims))
    record, found = delete_documents(ds_path, Selection("doc-ids", str(tmp_path / "ids.txt")), "test")
    assert record is not None
    ds.refresh()
    want = {mode: ranked(ds, mode=mode) for mode in MODES} | {"fraction": ranked(ds, mode="dense", fraction=0.5, seed=2)}
    reports = compact(ds_path)
    assert {r.shard for r in reports} == set(found.rows) and all(r.passages_after < r.passages_before for r in reports)
    assert all(r.bytes_after < r.bytes_before for r in reports)
    assert ds.refresh() and ds.shards.deleted_share == 0
    got = {mode: ranked(ds, mode=mode) for mode in MODES} | {"fraction": ranked(ds, mode="dense", fraction=0.5, seed=2)}
    assert got == want  # same ids, same scores: only the deleted passages are gone
    assert ": ok" in cli("verify", str(ds_path)).stderr
    catalog = json.loads((ds_path / "datastore.json").read_text())
    assert catalog["domains"]["wiki"]["passages"] == ds.num_passages == sum(s["count"] for s in catalog["shards"])
    assert all("deleted" not in shard for shard in catalog["shards"])
    compacted = [s for s in catalog["shards"] if s["name"] in found.rows]
    assert all(s["id_span"] > s["count"] and (ds_path / s["folder"] / "ids.npy").is_file() for s in compacted)
    assert Datastore.open(ds_path).shards.has_passage(int(max(want["dense"][0])[0]))
    out = json.loads(cli("eval-recall", str(ds_path), "--queries", "50", "--k", "10", "--json").stdout)
    assert out["rows"][0]["recall"]["10"] > 0.9
    cli("subsample", str(ds_path), "--fraction", "0.5", "--seed", "2", "--out", str(tmp_path / "half"))
    half = Datastore.open(tmp_path / "half")
    assert [[h["doc_id"] for h in hits] for hits in half.search(QUERIES, k=10, mode="dense")] == \
        [[h["doc_id"] for h in hits] for hits in ds.search(QUERIES, k=10, mode="dense", fraction=0.5, seed=2)]


def test_delete_by_source_and_by_eval_match(ds_path: Path, tmp_path: Path) -> None:
    ds = Datastore.open(ds_path)
    cli("delete", str(ds_path), "--source", "foldoc", "--reason", "licence withdrawn")
    assert {h["source"] for hits in ds.search(QUERIES, k=30) for h in hits} == {"jargon-file"}
    passage = next(p for p in ds.shards[0].passages.read_all().to_pylist()
                   if p["source"] == "jargon-file" and len(p["text"].split()) > 60)
    words = passage["text"].split()
    item = {"question": " ".join(words[5:30]) + "?", "answer": " ".join(words[30:45])}
    (tmp_path / "leaked.jsonl").write_text(json.dumps(item) + "\n")
    cli("delete", str(ds_path), "--match-eval", str(tmp_path / "leaked.jsonl"), "--reason", "contaminates an eval set")
    assert ds.refresh() and not ds.shards.has_passage(passage["passage_id"])
    assert passage["doc_id"] not in {h["doc_id"] for hits in ds.search([item["question"]], k=50) for h in hits}
    catalog = json.loads((ds_path / "datastore.json").read_text())
    assert [d["selection"].split()[0] for d in catalog["deletions"]] == ["source", "match-eval"]
    assert catalog["deletions"][1]["documents"] == 1


def file_texts(root: Path) -> dict[str, str]:
    """The text of every file under ``root``, read back as a reader of its format would: Parquet and Arrow tables (their
    compressed columns decompressed), zstd and gzip streams decompressed, anything else as its bytes (UTF-8, lossy)."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        if raw.startswith(b"PAR1"):
            tables = [pq.read_table(path)]
        elif raw.startswith(b"ARROW1"):
            tables = [pa.ipc.open_file(pa.BufferReader(raw)).read_all()]
        else:
            tables = []
            if raw.startswith(b"\x28\xb5\x2f\xfd"):
                raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read()
            elif raw.startswith(b"\x1f\x8b"):
                raw = gzip.decompress(raw)
        text = "\n".join(str(v) for t in tables for c in t.columns for v in c.to_pylist()) if tables else raw.decode("utf-8", "replace")
        out[str(path.relative_to(root))] = text
    return out


def holding(root: Path, needles: list[str]) -> set[str]:
    """The files under ``root`` that hold any of ``needles``."""
    return {rel for rel, text in file_texts(root).items() if any(n in text for n in needles)}


def test_a_takedown_leaves_no_copy_of_the_text_anywhere_in_the_datastore_folder(ds_path: Path, tmp_path: Path) -> None:
    """delete then compact: the deleted documents' text is in no file under the folder (build parts included), read back decompressed."""
    ds = Datastore.open(ds_path)
    hits = ds.search(QUERIES[:2], k=2, mode="dense")
    victims = sorted({h["doc_id"] for q in hits for h in q})
    needles = sorted({p["text"][:160] for s in ds.shards for p in s.passages.read_all().to_pylist()
                      if p["doc_id"] in victims})  # the start of each passage as it stands in the document: found only where the text is
    assert all(len(n) >= 100 for n in needles)
    before = holding(ds_path, needles)
    assert any(r.startswith("shards/") for r in before)  # the control: the same reader finds the text before the takedown
    assert {"documents", "passages"} <= {Path(r).parts[1] for r in before if r.startswith("build/")}
    (tmp_path / "ids.txt").write_text("\n".join(victims))
    out = cli("delete", str(ds_path), "--doc-ids", str(tmp_path / "ids.txt"), "--reason", "takedown")
    assert "their text stays in the shards' files and in the build folder's parts until" in " ".join(out.stderr.split())
    assert holding(ds_path, needles)  # tombstoned, not yet removed: what delete says
    cli("compact", str(ds_path))
    assert holding(ds_path, needles) == set()
    assert (ds_path / "build" / "build.json").is_file() and list((ds_path / "build" / "dropped").rglob("*.parquet"))
    assert ": ok" in cli("verify", str(ds_path)).stderr
    again = cli("build", str(EXAMPLE), "--out", str(ds_path))  # the build stays finished: nothing is redone from the purged parts
    assert "skipped (done)" in again.stderr and not re.search(r"│\s*ran\s*│", again.stderr)


@pytest.mark.parametrize(("args", "message"), [
    ([], "name exactly one of"),
    (["--source", "foldoc", "--doc-ids", "x.txt"], "name exactly one of"),
    (["--source", "nope"], "has no source 'nope'; its sources are foldoc, jargon-file"),
    (["--doc-ids", "missing.txt"], "missing.txt: no such file"),
])
def test_bad_deletes_are_one_line_errors(ds_path: Path, args: list[str], message: str) -> None:
    proc = cli("delete", str(ds_path), *args, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert "deletions" not in json.loads((ds_path / "datastore.json").read_text())


def test_ids_of_no_document_and_merged_in_place_shards_are_refused(ds_path: Path, example_datastore: Path, tmp_path: Path) -> None:
    (tmp_path / "ids.txt").write_text("nothing-like-this\n")
    with pytest.raises(MassiveDSError, match="none of the 1 document ids given"):
        delete_documents(ds_path, Selection("doc-ids", str(tmp_path / "ids.txt")), "x")
    cli("merge", str(ds_path), str(example_datastore), "--out", str(tmp_path / "merged"))
    with pytest.raises(MassiveDSError, match="merged in place"):
        delete_documents(tmp_path / "merged", Selection("source", "foldoc"), "x")
    merged = Datastore.open(tmp_path / "merged")
    merged.search(QUERIES, k=5)
    delete_documents(ds_path, Selection("source", "foldoc"), "licence withdrawn")  # in a source the merge references
    hits = [h for hits in merged.search(QUERIES, k=40, mode="dense") for h in hits]
    assert {(h["source"], h["shard"] in {s.name for s in merged.shards[:3]}) for h in hits} >= {("jargon-file", True)}
    assert not [h for h in hits if h["source"] == "foldoc" and h["shard"] in {s.name for s in merged.shards[:3]}]
    assert [h for h in hits if h["source"] == "foldoc"]  # the other source's copy of them stays


def test_what_a_killed_compaction_leaves_is_removed_by_the_next(ds_path: Path, tmp_path: Path) -> None:
    """Killed before its catalog switch: a staged folder and an installed one the catalog does not name; after: the old folder."""
    ds = Datastore.open(ds_path)
    doc = ds.search(QUERIES[0], k=1, mode="dense")[0]["doc_id"]
    (tmp_path / "ids.txt").write_text(doc + "\n")
    _, found = delete_documents(ds_path, Selection("doc-ids", str(tmp_path / "ids.txt")), "x")
    (name,) = found.rows
    shards = ds_path / "shards"
    shutil.copytree(shards / name, shards / f"{name}.v1")  # renamed into place, catalog not switched yet
    (shards / f".{name}.v1.tmp").mkdir()  # and a staged one
    before = ranked(Datastore.open(ds_path), mode="hybrid")
    assert ranked(Datastore.open(ds_path), mode="hybrid") == before  # readers go by the catalog: the leftovers are not seen
    reports = compact(ds_path)
    assert [r.shard for r in reports] == [name] and sorted(p.name for p in shards.iterdir() if name in p.name) == [f"{name}.v1"]
    assert read_catalog(ds_path).shards[[s.name for s in read_catalog(ds_path).shards].index(name)].folder == f"shards/{name}.v1"
    assert ": ok" in cli("verify", str(ds_path)).stderr
    assert doc not in {h["doc_id"] for hits in Datastore.open(ds_path).search(QUERIES, k=10) for h in hits}
    assert np.load(shards / f"{name}.v1" / "ids.npy").dtype == np.int64
    shutil.copytree(shards / f"{name}.v1", shards / name)  # killed after the switch, before the old folder went
    assert compact(ds_path) == [] and not (shards / name).exists() and ": ok" in cli("verify", str(ds_path)).stderr


def test_a_merge_carries_its_sources_deletions(ds_path: Path, example_datastore: Path, tmp_path: Path) -> None:
    """The merge keeps the audit trail, with shard names as it names them, and what keeps the deleted documents out of its appends."""
    gone = {hits[0] for hits in top_docs(Datastore.open(ds_path))["dense"][:2]}
    (tmp_path / "ids.txt").write_text("\n".join(sorted(gone)) + "\n")
    cli("delete", str(ds_path), "--doc-ids", str(tmp_path / "ids.txt"), "--reason", "licence withdrawn")
    cli("merge", str(example_datastore), str(ds_path), "--out", str(tmp_path / "merged"))
    source, merged = read_catalog(ds_path), read_catalog(tmp_path / "merged")
    (record,) = merged.deletions
    assert record.reason == "licence withdrawn" and record.table == "deletions/00001.parquet"
    assert len(record.shards) == len(source.deletions[0].shards)
    offset = len(read_catalog(example_datastore).shards)  # the second source's shards come after the first's
    second = merged.shards_by_id[offset:]
    assert record.shards == [s.name for s in second if s.merged_from and s.merged_from.shard in source.deletions[0].shards]
    deleted = deleted_documents(tmp_path / "merged", merged)
    assert {doc for _, doc in deleted.by_id} == gone and len(deleted.by_hash) == len(gone)
    assert ": ok" in cli("verify", str(tmp_path / "merged")).stderr


def test_a_delete_killed_before_its_catalog_is_finished_by_the_next_writer(ds_path: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after its table and tombstones, before its catalog: compact (or the delete run again) records it first."""
    import massiveds.ops.delete as delete_module

    ds = Datastore.open(ds_path)
    victims = sorted({h["doc_id"] for hits in ds.search(QUERIES[:2], k=2, mode="dense") for h in hits})
    (tmp_path / "ids.txt").write_text("\n".join(victims))

    def killed(*_: Any) -> None:
        raise KeyboardInterrupt  # stands for the SIGKILL: nothing after it runs

    with monkeypatch.context() as patch:
        patch.setattr(delete_module, "write_catalog", killed)
        with pytest.raises(KeyboardInterrupt):
            delete_documents(ds_path, Selection("doc-ids", str(tmp_path / "ids.txt")), "takedown")
    assert read_catalog(ds_path).deletions == [] and (ds_path / "deletions" / "00001.parquet").is_file()
    assert not {h["doc_id"] for hits in Datastore.open(ds_path).search(QUERIES, k=10) for h in hits} & set(victims)  # tombstoned
    reports = compact(ds_path)
    (record,) = read_catalog(ds_path).deletions
    assert record.reason == "takedown" and record.documents == len(victims) and reports
    assert ": ok" in cli("verify", str(ds_path)).stderr
    again = cli("delete", str(ds_path), "--doc-ids", str(tmp_path / "ids.txt"))
    assert "nothing new to delete" in again.stderr and len(read_catalog(ds_path).deletions) == 1
