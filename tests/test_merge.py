"""Merging datastores: one catalog, unique contiguous ids, same hits as each source, embedders checked.

Shards are referenced in place by default and copied with ``--copy``; both must search alike, and
every consumer (search, serve, inspect, verify, subsample, publish) must read a merge in place.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import massiveds
from massiveds.core.errors import DatastoreError, ShardSkippedWarning
from massiveds.core.layout import sha256_file
from massiveds.ops.merge import merge
from massiveds.ops.publish import publish, pull
from massiveds.ops.subsample import subsample
from massiveds.ops.verify import present_files, verify
from tests.helpers import massiveds as cli
from tests.serving import serving_in_thread

pytestmark = pytest.mark.slow

QUERIES = ["A robot that searches web pages and netnews looking for valid email addresses", "what is a kludge", "hacker ethic"]
#: Search options whose results must not depend on how the shards are held.
OPTIONS: list[dict[str, object]] = [
    {}, {"rerank": "exact"}, {"fraction": 0.5, "seed": 1}, {"dedup": True}, {"continuation": True}, {"mmr": 0.5}, {"k": 40},
]


def digests(root: Path) -> dict[str, str]:
    """sha256 of every datastore file under ``root`` (build state left out)."""
    return {rel: sha256_file(root / rel) for rel in present_files(root)}


def same_search(a: Path, b: Path, **common: object) -> None:
    """The two datastores give identical hits (ids, scores, texts, shards) for every query and option set (with ``common``)."""
    da, db = massiveds.open(a), massiveds.open(b)
    for options in OPTIONS:
        kw = {"k": 10} | options | common
        assert da.search(QUERIES, **kw) == db.search(QUERIES, **kw), options


@pytest.fixture(scope="module")
def half(example_datastore: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second datastore with the same embedder: half the example's documents (a subsample writes its own shards)."""
    out = tmp_path_factory.mktemp("half") / "half"
    subsample(example_datastore, out, 0.5, seed=3)
    return out


def test_merge_renumbers_ids_and_searches_both(example_datastore: Path, small_reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged"
    cli("merge", str(example_datastore), str(small_reference), "--out", str(out), "--copy")
    a, b, merged = massiveds.open(example_datastore), massiveds.open(small_reference), massiveds.open(out)
    assert merged.num_passages == a.num_passages + b.num_passages
    everything = merged.passages(list(range(merged.num_passages)))
    assert [p["passage_id"] for p in everything] == list(range(merged.num_passages))
    strip = ("passage_id", "shard")
    expected = a.passages(list(range(a.num_passages))) + b.passages(list(range(b.num_passages)))
    assert [{k: v for k, v in p.items() if k not in strip} for p in everything] == [
        {k: v for k, v in p.items() if k not in strip} for p in expected
    ]
    catalog = json.loads((out / "datastore.json").read_text())
    assert [m["name"] for m in catalog["merged_from"]] == ["jargon-example", "small"]
    assert len({s["name"] for s in catalog["shards"]}) == len(catalog["shards"])
    assert catalog["domains"]["wiki"]["passages"] == merged.num_passages
    query = "A robot that searches web pages and netnews looking for valid email addresses"
    top = merged.search(query, k=2)
    assert {h["doc_id"] for h in top} == {"dict-jargon:address harvester"}  # the entry is in both sources
    assert {h["passage_id"] < a.num_passages for h in top} == {True, False}
    assert top[0]["score"] == pytest.approx(a.search(query, k=1, mode="dense")[0]["score"], abs=1e-4)  # small has no BM25: dense


def test_merge_refuses_different_embedders(example_datastore: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    catalog = json.loads((example_datastore / "datastore.json").read_text())
    catalog["embedder"]["model"] = "intfloat/e5-base-v2"
    (other / "datastore.json").write_text(json.dumps(catalog))
    shutil.copytree(example_datastore / "shards", other / "shards")
    proc = cli("merge", str(example_datastore), str(other), "--out", str(tmp_path / "m"), check=False)
    assert proc.returncode == 2
    assert "embedders differ (model: 'all-MiniLM-L6-v2' vs 'intfloat/e5-base-v2')" in proc.stderr
    assert not (tmp_path / "m").exists()


def test_merge_in_place_searches_like_copy_and_leaves_sources_alone(example_datastore: Path, half: Path, tmp_path: Path) -> None:
    before = {src: digests(src) for src in (example_datastore, half)}
    ref, copy = tmp_path / "ref", tmp_path / "copy"
    cli("merge", str(example_datastore), str(half), "--out", str(ref))
    cli("merge", str(example_datastore), str(half), "--out", str(copy), "--copy")
    files = set(present_files(ref))
    index = {f for f in files if f.startswith("dedup/")}  # the sources' dedup index rows, united: small, and the merge's own
    assert not (ref / "shards").exists() and files - index == {
        "datastore.json", "trained.faiss", "trained/000-trained.faiss", "trained/001-trained.faiss"}
    assert {f.split("-")[0] for f in index} == {"dedup/m000", "dedup/m001"}
    catalog = json.loads((ref / "datastore.json").read_text())
    a, b = massiveds.open(example_datastore), massiveds.open(half)
    first = sorted(json.loads((half / "datastore.json").read_text())["shards"], key=lambda s: s["id_start"])[0]
    record = catalog["shards"][len(a.shards)]
    assert record["folder"] == f"../../{half.parent.name}/half/shards/{first['name']}"
    assert record["id_start"] == record["id_offset"] == a.num_passages and record["files"] == first["files"]
    assert not any("folder" in s or "id_offset" in s for s in json.loads((copy / "datastore.json").read_text())["shards"])

    merged = massiveds.open(ref)
    everything = merged.passages(list(range(merged.num_passages)))
    assert [p["passage_id"] for p in everything] == list(range(a.num_passages + b.num_passages))
    assert everything == massiveds.open(copy).passages(list(range(merged.num_passages)))
    same_search(ref, copy, mode="dense")  # the copy's BM25 is scored again over the merge; in place, there is none
    kept = b.passages([0])[0]  # in both sources: found once with each source's ids
    top = merged.search(kept["text"], k=2)
    assert {(h["doc_id"], h["char_start"]) for h in top} == {(kept["doc_id"], kept["char_start"])}
    assert sorted(h["passage_id"] for h in top)[1] == a.num_passages

    assert verify(ref) == [] and verify(copy) == []
    stats = json.loads(cli("inspect", str(ref), "--json").stdout)
    sources = [s for src in (example_datastore, half) for s in json.loads(cli("inspect", str(src), "--json").stdout)["shards"]]
    assert [s["bytes"] for s in stats["shards"]] == [s["bytes"] for s in sources]  # the referenced files, measured where they are
    assert all(s["folder"] and s["present"] for s in stats["shards"])
    n = len(catalog["shards"])
    assert f"merge of jargon-example, jargon-example: {n} of {n} shards referenced in place" in cli("inspect", str(ref)).stdout

    sub_ref, sub_copy = tmp_path / "sub-ref", tmp_path / "sub-copy"
    cli("subsample", str(ref), "--fraction", "0.5", "--seed", "5", "--out", str(sub_ref))
    subsample(copy, sub_copy, 0.5, seed=5)
    assert verify(sub_ref) == [] and not any("folder" in s for s in json.loads((sub_ref / "datastore.json").read_text())["shards"])
    same_search(sub_ref, sub_copy, mode="dense")

    with serving_in_thread(ref) as client:
        status, body = client.search({"query": QUERIES, "n_docs": 5})
    assert status == 200 and body["skipped_shards"] == {}
    assert body["results"]["IDs"] == [[h["passage_id"] for h in hits] for hits in merged.search(QUERIES, k=5)]
    assert {src: digests(src) for src in (example_datastore, half)} == before


def test_merge_in_place_moves_with_its_sources_and_reports_a_missing_one(half: Path, tmp_path: Path) -> None:
    pair = tmp_path / "pair"
    pair.mkdir()
    shutil.copytree(half, pair / "half")
    subsample(half, pair / "quarter", 0.5, seed=8)
    merge([pair / "half", pair / "quarter"], pair / "m")
    want = massiveds.open(pair / "m").search(QUERIES, k=5)
    moved = tmp_path / "elsewhere" / "pair"
    moved.parent.mkdir()
    pair.rename(moved)  # moved together: the relative references still hold
    m = massiveds.open(moved / "m")
    assert m.search(QUERIES, k=5) == want
    wide = m.search(QUERIES, k=40)

    shutil.rmtree(moved / "quarter")
    n_half = massiveds.open(moved / "half").num_passages
    broken = massiveds.open(moved / "m")
    with pytest.warns(ShardSkippedWarning, match=r"folder .*quarter/shards/wiki-\d+ is missing") as warned:
        hits = broken.search(QUERIES, k=5)
    assert len(warned) == sum(s.folder.parent.parent.name == "quarter" for s in broken.shards)  # each missing shard, once
    assert all(h["passage_id"] < n_half for q in hits for h in q)
    assert hits == [[h for h in q if h["passage_id"] < n_half][:5] for q in wide]  # the hits of the shards left
    with pytest.raises(DatastoreError, match=r"is unusable: folder .*quarter/shards/wiki-00000 is missing"):
        massiveds.open(moved / "m").search(QUERIES, k=5, strict=True)
    strict = cli("search", str(moved / "m"), QUERIES[1], "--strict", check=False)
    assert strict.returncode == 2 and "quarter/shards/wiki-00000 is missing" in strict.stderr
    problems = verify(moved / "m")
    assert "../quarter/shards/wiki-00000/passages.arrow: missing" in "\n".join(problems)
    assert "../quarter/shards/wiki-00000: shard folder missing (shard wiki-00003, merged in place)" in problems
    stats = json.loads(cli("inspect", str(moved / "m"), "--json").stdout)
    assert [s["present"] for s in stats["shards"]] == [not s["folder"].startswith("../quarter/") for s in stats["shards"]]
    assert "shard folder(s) missing, e.g. ../quarter/shards/wiki-00000" in cli("inspect", str(moved / "m")).stdout
    for args in (["subsample", str(moved / "m"), "--fraction", "0.5", "--out", str(tmp_path / "s")],
                 ["merge", str(moved / "m"), str(moved / "half"), "--out", str(tmp_path / "mm")],
                 ["publish", str(moved / "m"), str(tmp_path / "pub")]):
        proc = cli(*args, check=False)
        assert proc.returncode == 2 and "quarter/shards/wiki-00000" in proc.stderr and "Traceback" not in proc.stderr, args
    assert not (tmp_path / "s").exists() and not (tmp_path / "mm").exists()


def test_published_merge_in_place_is_self_contained(example_datastore: Path, half: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    merge([example_datastore, half], ref)
    publish(ref, str(tmp_path / "pub"))
    pull(str(tmp_path / "pub"), tmp_path / "pulled")
    pulled = tmp_path / "pulled"
    catalog = json.loads((pulled / "datastore.json").read_text())
    assert not any("folder" in s for s in catalog["shards"]) and catalog["shards"][-1]["id_offset"] > 0
    assert verify(pulled) == []
    for shard in catalog["shards"]:
        for name, rec in shard["files"].items():
            assert sha256_file(pulled / "shards" / shard["name"] / name) == rec["sha256"]
    same_search(ref, pulled)

    # a published catalog that points outside itself is refused by pull
    tampered = tmp_path / "tampered"
    shutil.copytree(tmp_path / "pub", tampered)
    catalog["shards"][0]["folder"] = "../../somewhere"
    (tampered / "datastore.json").write_text(json.dumps(catalog))
    listing = json.loads((tampered / "checksums.json").read_text())
    listing["files"]["datastore.json"] = {"bytes": (tampered / "datastore.json").stat().st_size,
                                          "sha256": sha256_file(tampered / "datastore.json")}
    (tampered / "checksums.json").write_text(json.dumps(listing))
    with pytest.raises(DatastoreError, match="references shard folders outside the datastore"):
        pull(str(tampered), tmp_path / "pulled-bad")
