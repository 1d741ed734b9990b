"""Several manifests built together: one datastore, dedup and decontamination across manifests, one index."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.dataset as pds
import pytest
import zstandard

from massiveds.core.passages import PassageFile
from massiveds.store.datastore import Datastore
from tests.helpers import REPO, massiveds

JARGON = REPO / "manifests/examples/data/jargon"
pytestmark = pytest.mark.slow  # one build of two manifests (~1.5 min)


def read_jsonl_zst(path: Path) -> list[dict[str, Any]]:
    with zstandard.ZstdDecompressor().stream_reader(path.open("rb")) as raw:
        return [json.loads(line) for line in io.TextIOWrapper(raw, encoding="utf-8")]


def write_jsonl_zst(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(zstandard.ZstdCompressor().compress("".join(json.dumps(r) + "\n" for r in rows).encode()))


@pytest.fixture(scope="module")
def together(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Manifest a (wiki: Jargon File part 0) and b (forum: part 1, plus exact and one-word-edited copies of a's entries,
    and an eval set quoting two other entries of a), built together."""
    root = tmp_path_factory.mktemp("together")
    originals = read_jsonl_zst(JARGON / "jargon-0.jsonl.zst")
    long_ones = [r for r in originals if len(r["text"].split()) >= 120]
    exact, near, quoted = long_ones[:6], long_ones[6:12], long_ones[12:14]
    (root / "a" / "data").mkdir(parents=True)
    shutil.copy(JARGON / "jargon-0.jsonl.zst", root / "a" / "data")
    (root / "a" / "a.yaml").write_text(
        "name: jargon-a\ndomain: wiki\nsources:\n  - uri: data/*.jsonl.zst\n    id_field: id\n    title_field: title\n"
        "chunk: {size: 128, min_size: 16}\nshards: {target_passages: 150}\n"
    )
    copies = [r | {"id": f"copy-{r['id']}"} for r in exact]
    for r in near:
        words = r["text"].split()
        words[len(words) // 2] = "frobnicated"
        copies.append(r | {"id": f"edit-{r['id']}", "text": " ".join(words)})
    (root / "b" / "data").mkdir(parents=True)
    shutil.copy(JARGON / "jargon-1.jsonl.zst", root / "b" / "data")
    write_jsonl_zst(root / "b" / "data" / "copies.jsonl.zst", copies)
    items = [{"question": " ".join(r["text"].split()[20:60]), "answer": "", "qid": f"q{i}"} for i, r in enumerate(quoted)]
    (root / "b" / "evals.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    (root / "b" / "b.yaml").write_text(
        "name: jargon-b\ndomain: forum\nsources:\n  - uri: data/*.jsonl.zst\n    id_field: id\n    title_field: title\n"
        "chunk: {size: 96, min_size: 16}\nshards: {target_passages: 200}\n"
        "decontaminate:\n  eval_sets: [{uri: evals.jsonl, name: quiz, fields: [question], id_field: qid}]\n"
    )
    out = root / "ds"
    proc = massiveds("build", str(root / "a" / "a.yaml"), str(root / "b" / "b.yaml"), "--out", str(out))
    return {"root": root, "out": out, "stdout": proc.stdout, "exact": exact, "near": near, "quoted": quoted}


def dropped(out: Path, stage: str) -> dict[str, dict[str, Any]]:
    table = pds.dataset(str(out / "build" / "dropped" / stage), format="parquet").to_table()
    return {row["doc_id"]: row for row in table.to_pylist()}


def test_one_datastore_with_a_domain_per_manifest(together: dict[str, Any]) -> None:
    catalog = json.loads((together["out"] / "datastore.json").read_text())
    assert catalog["name"] == "jargon-a+jargon-b"
    assert [m["path"] for m in catalog["manifests"]] == ["a.yaml", "b.yaml"]
    assert set(catalog["domains"]) == {"wiki", "forum"}
    names = [s["name"] for s in catalog["shards"]]
    assert names[0] == "wiki-00000" and "forum-00000" in names
    ids = []
    for shard in catalog["shards"]:
        passages = PassageFile(together["out"] / "shards" / shard["name"] / "passages.arrow").read_all()
        assert set(passages.column("domain").to_pylist()) == {shard["domain"]}
        ids += passages.column("passage_id").to_pylist()
    assert ids == list(range(len(ids)))  # unique and contiguous across manifests
    assert f"{len(ids)} vectors" in catalog["index"]["reason"]  # one index planned over every manifest's passages
    assert len(ids) == sum(d["passages"] for d in catalog["domains"].values())
    assert catalog["domains"]["forum"]["shards"] == sum(s["domain"] == "forum" for s in catalog["shards"])


def test_copies_in_a_later_manifest_lose_to_the_earlier_manifest(together: dict[str, Any]) -> None:
    exact = dropped(together["out"], "dedup")
    assert {f"copy-{r['id']}" for r in together["exact"]} <= set(exact)
    assert all(exact[f"copy-{r['id']}"]["duplicate_of"] == r["id"] for r in together["exact"])
    near = dropped(together["out"], "near_dedup")
    assert {f"edit-{r['id']}" for r in together["near"]} <= set(near)
    assert all(near[f"edit-{r['id']}"]["duplicate_of"] == r["id"] for r in together["near"])
    originals = {r["id"] for r in together["exact"] + together["near"]}
    assert not originals & (set(exact) | set(near))  # the first manifest's copies survive


def test_eval_sets_of_one_manifest_clean_every_manifest(together: dict[str, Any]) -> None:
    decon = dropped(together["out"], "decontaminate")
    assert set(decon) == {r["id"] for r in together["quoted"]}  # documents of manifest a, eval set of manifest b
    catalog = json.loads((together["out"] / "datastore.json").read_text())
    report = catalog["build"]["decontamination"]["quiz"]
    assert report["documents_removed"] == len(together["quoted"])
    assert report["passages_removed"] >= len(together["quoted"])  # entries of >= 120 words, cut in 128-word passages


def test_search_filters_domains_of_a_datastore_built_together(together: dict[str, Any]) -> None:
    ds = Datastore.open(together["out"])
    text = " ".join(together["near"][0]["text"].split()[:40])
    hits = ds.search(text, k=5, domains="wiki")
    assert hits and all(h["domain"] == "wiki" for h in hits)
    assert hits[0]["doc_id"] == together["near"][0]["id"]
    forum = ds.search(text, k=5, domains="forum")
    assert forum and all(h["domain"] == "forum" for h in forum)


def test_a_second_run_resumes_every_stage(together: dict[str, Any]) -> None:
    root = together["root"]
    proc = massiveds("build", str(root / "a" / "a.yaml"), str(root / "b" / "b.yaml"), "--out", str(together["out"]))
    assert proc.stderr.count("skipped (done)") == 11  # every stage this build runs: all but download and sparse
    assert "│ ran " not in proc.stderr.split("build of")[1].split("datastore")[0]  # the status column


def test_manifests_that_cannot_share_a_datastore_are_refused_before_any_work(together: dict[str, Any], tmp_path: Path) -> None:
    root = together["root"]
    other = root / "b" / "other-model.yaml"
    other.write_text((root / "b" / "b.yaml").read_text() + "embed: {model: sentence-transformers/all-mpnet-base-v2}\n")
    proc = massiveds("build", str(root / "a" / "a.yaml"), str(other), "--out", str(tmp_path / "x"), check=False)
    assert proc.returncode != 0 and "embed differs" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()
    swapped = massiveds("build", str(root / "b" / "b.yaml"), str(root / "a" / "a.yaml"), "--out", str(together["out"]), check=False)
    assert swapped.returncode != 0 and "holds a build of another manifest" in swapped.stderr
