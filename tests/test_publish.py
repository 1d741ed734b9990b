"""publish / pull / verify on a datastore-shaped tree of real files: local folders, moto's S3 server, interruptions, parts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from massiveds.core.errors import DatastoreError
from massiveds.core.layout import file_record, sha256_file, write_json
from massiveds.ingest.sources.fetch import RetryPolicy
from massiveds.ops.publish import parse_size, publish, pull
from massiveds.ops.verify import present_files, verify
from tests.helpers import REPO, massiveds
from tests.servers import s3_server

DATA = REPO / "manifests/examples/data/jargon"
FAST = RetryPolicy(attempts=3, base=0.01)
#: The index record of a flat datastore (``IndexPlan.to_dict``).
FLAT = {"type": "flat", "dim": 4, "metric": "inner_product", "factory": "IDMap2,Flat", "nlist": None, "pq_m": None, "nbits": None,
        "train_sample": 0, "nprobe": None, "bytes_per_vector": 56.0, "reason": "a test tree"}


def make_datastore(root: Path) -> Path:
    """A datastore-shaped directory: two shards and a trained index made of the shipped example files, with a real catalog."""
    sources = sorted(DATA.glob("*.jsonl.zst"))
    shards = []
    for n, names in enumerate([("passages.arrow", "index.faiss", "vectors.npy"), ("passages.arrow", "index.faiss")]):
        folder = root / "shards" / f"wiki-{n:05d}"
        folder.mkdir(parents=True)
        for name in names:
            shutil.copy(sources.pop(), folder / name)
        files = {p.name: file_record(p) for p in sorted(folder.iterdir())}
        write_json(folder / "shard.json", {"name": folder.name, "files": files})
        shards.append({"name": folder.name, "domain": "wiki", "id_start": 0, "count": 1, "files": files})
    shutil.copy(sources.pop(), root / "trained.faiss")
    (root / "build" / "extract").mkdir(parents=True)
    (root / "build" / "extract" / "_SUCCESS.json").write_text("{}\n")
    write_json(root / "datastore.json", {"format_version": 1, "name": "tree", "created": "2026-01-01T00:00:00+00:00",
                                         "embedder": {"model": "synthetic", "dim": 4, "normalize": True}, "index": FLAT,
                                         "trained_index": {"file": "trained.faiss"} | file_record(root / "trained.faiss"),
                                         "shards": shards, "domains": {"wiki": {"passages": 2, "shards": 2}}})
    return root


def digests(root: Path) -> dict[str, str]:
    return {rel: sha256_file(root / rel) for rel in present_files(root)}


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    return make_datastore(tmp_path / "ds")


def test_local_round_trip_is_identical_and_resumes(tree: Path, tmp_path: Path) -> None:
    dest, back = tmp_path / "published", tmp_path / "pulled"
    first = publish(tree, str(dest), workers=3)
    assert len(first.transferred) == 8 and not first.skipped and first.files == 9  # 5 shard files, 2 shard.json, trained, catalog
    assert not (dest / "build").exists() and (dest / "checksums.json").is_file()
    listing = json.loads((dest / "checksums.json").read_text())["files"]
    assert set(listing) == set(present_files(tree))
    assert all(listing[rel]["sha256"] == sha256_file(tree / rel) for rel in listing)
    pulled = pull(str(dest), back, workers=3)
    assert len(pulled.transferred) == 8 and verify(back) == []
    assert digests(back) == digests(tree) | {"checksums.json": sha256_file(dest / "checksums.json")}
    assert publish(tree, str(dest)).transferred == []  # everything already there
    assert pull(str(dest), back).transferred == []


def test_include_build_and_large_files_in_parts(tree: Path, tmp_path: Path) -> None:
    dest, back = tmp_path / "published", tmp_path / "pulled"
    report = publish(tree, str(dest), include_build=True, part_size=parse_size("30kB"))
    assert (dest / "build" / "extract" / "_SUCCESS.json").is_file()
    big = [rel for rel in present_files(tree) if (tree / rel).stat().st_size > 30_000]
    assert big and report.parts > len(big)
    for rel in big:
        assert not (dest / rel).exists() and (dest / f"{rel}.part-00000").stat().st_size == 30_000
    pull(str(dest), back)
    assert digests(back) == {rel: d for rel, d in digests(tree).items()} | {"checksums.json": sha256_file(dest / "checksums.json")}
    assert (back / "build" / "extract" / "_SUCCESS.json").is_file() and verify(back) == []


class Interrupt(Exception):
    pass


def _stop_after(n: int) -> tuple[object, list[object]]:
    """A publish hook that raises once ``n`` files are uploaded, and the list of every file it saw uploaded."""
    done: list[object] = []

    def hook(piece: object, moved: bool) -> None:
        done.append(piece)
        if len(done) == n:
            raise Interrupt(f"interrupted after {n} files")

    return hook, done


def test_interrupted_publish_is_invisible_then_resumes(tree: Path, tmp_path: Path) -> None:
    dest = tmp_path / "published"
    hook, done = _stop_after(2)
    with pytest.raises(Interrupt):
        publish(tree, str(dest), workers=1, on_piece=hook)  # type: ignore[arg-type]
    assert not (dest / "datastore.json").exists() and not (dest / "checksums.json").exists()
    with pytest.raises(DatastoreError, match="publishing has not finished"):
        pull(str(dest), tmp_path / "early")
    resumed = publish(tree, str(dest), workers=1)
    assert 2 <= len(done) < 8 and len(resumed.skipped) == len(done) and len(resumed.transferred) == 8 - len(done)
    pull(str(dest), tmp_path / "pulled")
    assert verify(tmp_path / "pulled") == []


def test_pull_refuses_an_altered_published_file(tree: Path, tmp_path: Path) -> None:
    dest = tmp_path / "published"
    publish(tree, str(dest))
    target = dest / "shards/wiki-00000/index.faiss"
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(DatastoreError, match=r"sha256 mismatch.*index\.faiss"):
        pull(str(dest), tmp_path / "pulled", policy=FAST)
    assert not (tmp_path / "pulled" / "datastore.json").exists()


def test_s3_publish_interrupted_resumed_and_pulled_back(tree: Path, tmp_path: Path) -> None:
    import fsspec

    with s3_server() as opts:
        fs = fsspec.filesystem("s3", **opts)
        fs.mkdir("datastores")
        dest = "s3://datastores/jargon/v1"
        hook, done = _stop_after(3)
        with pytest.raises(Interrupt):
            publish(tree, dest, workers=1, storage_options=opts, on_piece=hook)  # type: ignore[arg-type]
        assert not fs.exists("datastores/jargon/v1/datastore.json")
        resumed = publish(tree, dest, workers=2, storage_options=opts)
        assert 3 <= len(done) < 8 and len(resumed.skipped) == len(done) and len(resumed.transferred) == 8 - len(done)
        assert fs.metadata("datastores/jargon/v1/trained.faiss")["sha256"] == sha256_file(tree / "trained.faiss")
        assert fs.exists("datastores/jargon/v1/datastore.json")
        pull(dest, tmp_path / "pulled", storage_options=opts, workers=2)
        assert publish(tree, dest, storage_options=opts).transferred == []
    back = tmp_path / "pulled"
    assert verify(back) == [] and {r: d for r, d in digests(back).items() if r != "checksums.json"} == digests(tree)


def test_verify_reports_truncated_altered_missing_and_extra_files(tree: Path) -> None:
    assert verify(tree) == []
    passages = tree / "shards/wiki-00000/passages.arrow"
    passages.write_bytes(passages.read_bytes()[:-10])
    index = tree / "shards/wiki-00001/index.faiss"
    data = bytearray(index.read_bytes())
    data[0] ^= 1
    index.write_bytes(bytes(data))
    (tree / "shards/wiki-00000/vectors.npy").unlink()
    (tree / "shards/wiki-00001/stray.bin").write_bytes(b"x")
    problems = verify(tree)
    assert len(problems) == 4
    assert any(p.startswith("shards/wiki-00000/passages.arrow: size") and "truncated" in p for p in problems)
    assert any(p.startswith("shards/wiki-00001/index.faiss: sha256") and "altered" in p for p in problems)
    assert any(p.startswith("shards/wiki-00000/vectors.npy: missing") for p in problems)
    assert any(p.startswith("shards/wiki-00001/stray.bin: present but not in the catalog") for p in problems)
    assert verify(tree, hashes=False) == [p for p in problems if "altered" not in p]
    with pytest.raises(DatastoreError, match="run massiveds verify"):
        publish(tree, str(tree.parent / "dest"))


def test_cli_verify_publish_pull(tree: Path, tmp_path: Path) -> None:
    ok = massiveds("verify", str(tree))
    assert "ok" in ok.stderr
    massiveds("publish", str(tree), str(tmp_path / "pub"), "--workers", "2")
    done = massiveds("pull", str(tmp_path / "pub"), str(tmp_path / "back"))
    assert "pull complete" in done.stderr and verify(tmp_path / "back") == []
    passages = tmp_path / "back/shards/wiki-00001/passages.arrow"
    passages.write_bytes(passages.read_bytes()[:100])
    bad = massiveds("verify", str(tmp_path / "back"), check=False)
    assert bad.returncode == 1
    assert bad.stdout.splitlines() == [f"{tmp_path / 'back'}/shards/wiki-00001/passages.arrow: size 100 bytes, catalog says "
                                       f"{(tree / 'shards/wiki-00001/passages.arrow').stat().st_size:,} (truncated or replaced)"]
    missing = massiveds("pull", str(tmp_path / "nowhere"), str(tmp_path / "x"), check=False)
    assert missing.returncode == 2 and "not a datastore" in missing.stderr


@pytest.mark.slow
def test_built_datastore_round_trip(example_datastore: Path, tmp_path: Path) -> None:
    assert verify(example_datastore) == []
    publish(example_datastore, str(tmp_path / "pub"))
    pull(str(tmp_path / "pub"), tmp_path / "back")
    assert verify(tmp_path / "back") == []
    assert {r: d for r, d in digests(tmp_path / "back").items() if r != "checksums.json"} == digests(example_datastore)
    assert "trained.faiss" in json.loads((tmp_path / "pub" / "checksums.json").read_text())["files"]
