"""Hostile published datastores: every crafted one is refused in one line, and no file appears or changes outside the destination.

Each case publishes a datastore-shaped tree of real files, then edits the published copy as an
attacker would (keeping sizes and digests consistent where that makes the attack work), and pulls
it into a nested folder. The whole temporary tree is listed, with digests, before and after.
The same crafted folders opened in place (``verify``, ``Datastore.open``, the CLI's ``search`` and
``serve``) are refused before any file they name is read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from massiveds.core.errors import DatastoreError
from massiveds.core.layout import sha256_file
from massiveds.core.safe_paths import UnsafePathError, check_relpath, safe_join
from massiveds.ops.publish import publish, pull
from massiveds.ops.verify import verify
from massiveds.store.datastore import Datastore
from tests.helpers import massiveds
from tests.servers import s3_server
from tests.test_publish import make_datastore

Listing = dict[str, Any]
Catalog = dict[str, Any]


def snapshot(top: Path) -> dict[str, str]:
    """Every path under ``top`` (symlinks not followed) with the digest of regular files: what a refused pull may not change."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            out[str(path.relative_to(top))] = "link" if path.is_symlink() else ("dir" if path.is_dir() else sha256_file(path))
    return out


def record(data: bytes) -> dict[str, Any]:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


class Published:
    """A published copy of the tree, with helpers to rewrite its catalog and checksums as an attacker would."""

    def __init__(self, top: Path) -> None:
        self.top = top
        self.folder = top / "p" / "q" / "pub"  # so that pub/../../x, where the payload lies, is not out/../../x
        publish(make_datastore(top / "src"), str(self.folder))
        self.outside = top / "pwned_file.txt"  # what the attacker wants written (its bytes come from the published folder)
        self.payload = b"ssh-ed25519 AAAA attacker@example\n"
        self.secret = top / "secret.txt"  # a file of the puller's that a symlink would leak into the datastore
        self.secret.write_bytes(b"the puller's private key\n")

    def edit(self, change: Callable[[Catalog, Listing], None]) -> None:
        catalog = json.loads((self.folder / "datastore.json").read_text())
        listing = json.loads((self.folder / "checksums.json").read_text())
        change(catalog, listing)
        raw = (json.dumps(catalog, indent=2) + "\n").encode()
        (self.folder / "datastore.json").write_bytes(raw)
        listing["files"]["datastore.json"] = record(raw)
        (self.folder / "checksums.json").write_text(json.dumps(listing, indent=2) + "\n")

    def add_file(self, key: str, on_disk: str) -> Callable[[Catalog, Listing], None]:
        """A change that lists ``key`` in checksums.json with the digest of the payload, stored at ``on_disk`` in the published folder."""
        path = self.folder / on_disk
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.payload)

        def change(_catalog: Catalog, listing: Listing) -> None:
            listing["files"][key] = record(self.payload)
        return change


def traversal_key(pub: Published) -> None:
    pub.edit(pub.add_file("../../pwned_file.txt", "../../pwned_file.txt"))


def absolute_key(pub: Published) -> None:
    pub.edit(pub.add_file(str(pub.outside), "abs.txt"))


def backslash_key(pub: Published) -> None:
    pub.edit(pub.add_file("..\\..\\pwned_file.txt", "..\\..\\pwned_file.txt"))


def nul_key(pub: Published) -> None:
    pub.edit(pub.add_file("shards/wiki-00000/ok.txt\x00../../../pwned_file.txt", "nul.txt"))


def dot_key(pub: Published) -> None:
    pub.edit(pub.add_file("shards/./wiki-00000/../../../pwned_file.txt", "dot.txt"))


def shard_name(pub: Published) -> None:
    def change(catalog: Catalog, _listing: Listing) -> None:
        catalog["shards"][0]["name"] = "../../.."
    pub.edit(change)


def shard_file_name(pub: Published) -> None:
    def change(catalog: Catalog, listing: Listing) -> None:
        catalog["shards"][0]["files"]["../../../../pwned_file.txt"] = record(pub.payload)
        listing["files"]["shards/wiki-00000/../../../../pwned_file.txt"] = record(pub.payload)
    pub.edit(change)


def trained_index_path(pub: Published) -> None:
    def change(catalog: Catalog, _listing: Listing) -> None:
        catalog["trained_index"]["file"] = "../../pwned_file.txt"
    pub.edit(change)


def part_symlink(pub: Published) -> None:
    """A harmless key stored in parts, its part a symlink to the puller's secret: a part is named after its key, so only a
    symlink can lead a part out, and only the check of each part reaches it (an escaping key is refused before it)."""
    key, secret = "notes.txt", pub.secret.read_bytes()
    (pub.folder / f"{key}.part-00000").symlink_to(pub.secret)

    def change(_catalog: Catalog, listing: Listing) -> None:
        listing["files"][key] = record(secret) | {"parts": [record(secret)]}
    pub.edit(change)


def symlink_out(pub: Published) -> None:
    link = pub.folder / "shards/wiki-00000/vectors.npy"
    link.unlink()
    link.symlink_to(pub.secret)

    def change(catalog: Catalog, listing: Listing) -> None:
        catalog["shards"][0]["files"]["vectors.npy"] = record(pub.secret.read_bytes())
        listing["files"]["shards/wiki-00000/vectors.npy"] = record(pub.secret.read_bytes())
    pub.edit(change)


def disagreeing_lists(pub: Published) -> None:
    def change(catalog: Catalog, _listing: Listing) -> None:
        catalog["shards"][1]["files"]["index.faiss"]["sha256"] = "0" * 64
    pub.edit(change)


def missing_from_checksums(pub: Published) -> None:
    def change(_catalog: Catalog, listing: Listing) -> None:
        del listing["files"]["shards/wiki-00001/index.faiss"]
    pub.edit(change)


#: Each crafted datastore, and what the refusal of its pull must say: why it was refused, not only that it was.
CASES = {
    traversal_key: ("checksums.json entry '../../pwned_file.txt' has a '..' component",),
    absolute_key: ("checksums.json entry", "pwned_file.txt' is absolute"),
    backslash_key: ("checksums.json entry", "holds a backslash"),
    nul_key: ("checksums.json entry", "holds a NUL or control character"),
    dot_key: ("checksums.json entry", "has an empty or '.' component"),
    shard_name: ("shard name '../../..' has a '..' component",),
    shard_file_name: ("shard wiki-00000: file name '../../../../pwned_file.txt' has a '..' component",),
    trained_index_path: ("trained index '../../pwned_file.txt' has a '..' component",),
    part_symlink: ("notes.txt.part-00000 is a symlink or lies under one",),
    symlink_out: ("shards/wiki-00000/vectors.npy is a symlink or lies under one",),
    disagreeing_lists: ("datastore.json and checksums.json disagree about shards/wiki-00001/index.faiss",),
    missing_from_checksums: ("datastore.json and checksums.json disagree about shards/wiki-00001/index.faiss",),
}


@pytest.mark.parametrize(("craft", "why"), CASES.items(), ids=[c.__name__ for c in CASES])
def test_a_crafted_published_datastore_is_refused_and_nothing_is_written(craft: Callable[[Published], None], why: tuple[str, ...],
                                                                         tmp_path: Path) -> None:
    pub = Published(tmp_path)
    craft(pub)
    before = snapshot(tmp_path)
    dest = tmp_path / "a" / "out"
    with pytest.raises(DatastoreError) as refused:
        pull(str(pub.folder), dest)
    message = str(refused.value)
    assert "\n" not in message and all(w in message for w in why), message
    assert snapshot(tmp_path) == before  # no file anywhere: not outside, not even the destination
    assert not pub.outside.exists()


def test_the_cli_pull_of_the_reported_attack_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    pub = Published(tmp_path)
    traversal_key(pub)
    before = snapshot(tmp_path)
    done = massiveds("pull", str(pub.folder), str(tmp_path / "a" / "out"), check=False)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(errors) == 1 and "'../../pwned_file.txt' has a '..' component" in errors[0]
    assert snapshot(tmp_path) == before and not pub.outside.exists()


#: The crafted datastores opened where they lie, and what both the refusal to open and verify's first problem must say.
IN_PLACE = {
    traversal_key: ("checksums.json entry '../../pwned_file.txt' has a '..' component",),
    absolute_key: ("checksums.json entry", "pwned_file.txt' is absolute"),
    nul_key: ("checksums.json entry", "holds a NUL or control character"),
    shard_name: ("shard name '../../..' has a '..' component",),
    shard_file_name: ("shard wiki-00000: file name '../../../../pwned_file.txt' has a '..' component",),
    trained_index_path: ("trained index '../../pwned_file.txt' has a '..' component",),
    symlink_out: ("shards/wiki-00000/vectors.npy leads outside", "through a symlink"),
    disagreeing_lists: ("shards/wiki-00001/index.faiss", "datastore.json and checksums.json disagree about"),
}


@pytest.mark.parametrize(("craft", "why"), IN_PLACE.items(), ids=[c.__name__ for c in IN_PLACE])
def test_a_crafted_datastore_opened_in_place_is_refused(craft: Callable[[Published], None], why: tuple[str, ...], tmp_path: Path) -> None:
    pub = Published(tmp_path)
    craft(pub)
    with pytest.raises(DatastoreError) as refused:
        Datastore.open(pub.folder)
    assert all(w in str(refused.value) for w in why), str(refused.value)
    problems = verify(pub.folder)
    assert problems and all(w in problems[0] for w in why), problems


def test_search_verify_and_serve_refuse_a_crafted_datastore_in_one_line(tmp_path: Path) -> None:
    pub = Published(tmp_path)
    symlink_out(pub)
    for args in (("search", str(pub.folder), "a query"), ("verify", str(pub.folder)), ("serve", str(pub.folder), "--port", "0"),
                 ("inspect", str(pub.folder))):
        done = massiveds(*args, check=False)
        output = done.stdout + done.stderr
        refusals = [line for line in output.splitlines() if "leads outside" in line]
        assert done.returncode != 0 and "Traceback" not in output, args
        assert len(refusals) == 1 and "through a symlink" in refusals[0] and str(pub.folder) in refusals[0], (args, output)


def test_publishing_refuses_a_symlinked_file(tmp_path: Path) -> None:
    tree = make_datastore(tmp_path / "ds")
    (tmp_path / "secret.txt").write_bytes(b"private\n")
    (tree / "build" / "extract" / "leak.txt").symlink_to(tmp_path / "secret.txt")
    publish(tree, str(tmp_path / "pub"))  # build/ is not published by default
    with pytest.raises(UnsafePathError, match="symlink"):
        publish(tree, str(tmp_path / "pub2"), include_build=True)
    assert not (tmp_path / "pub2").exists()


def test_a_pull_over_a_symlinked_destination_folder_is_refused(tmp_path: Path) -> None:
    pub = Published(tmp_path)
    dest = tmp_path / "a" / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dest.mkdir(parents=True)
    (dest / "shards").symlink_to(elsewhere)
    with pytest.raises(UnsafePathError, match="leads outside"):
        pull(str(pub.folder), dest)
    assert list(elsewhere.iterdir()) == [] and sorted(p.name for p in dest.iterdir()) == ["shards"]


def test_a_clean_pull_stages_inside_the_destination_and_leaves_no_scratch(tmp_path: Path) -> None:
    pub = Published(tmp_path)
    dest = tmp_path / "a" / "out"
    pull(str(pub.folder), dest)
    assert verify(dest) == [] and not (dest / "build").exists()
    assert {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*")} == {"src", "p", "a", "secret.txt"}


@pytest.mark.parametrize("rel", ["a/../b", "/etc/passwd", "C:/x", "a\\b", "a\x00b", "", "a//b", "./a", "a/.", "x\ny"])
def test_unsafe_relative_paths_are_refused(rel: str) -> None:
    with pytest.raises(UnsafePathError):
        check_relpath(rel, "entry")


def test_a_merge_reference_may_climb_but_its_files_may_not(tmp_path: Path) -> None:
    assert check_relpath("../a/shards/wiki-00000", "folder", parent_steps=True) == "../a/shards/wiki-00000"
    with pytest.raises(UnsafePathError):
        check_relpath("../a/./x", "folder", parent_steps=True)
    (tmp_path / "in").mkdir()
    assert safe_join(tmp_path, "in/file", "entry") == tmp_path / "in" / "file"
    (tmp_path / "link").symlink_to("/")
    with pytest.raises(UnsafePathError, match="leads outside"):
        safe_join(tmp_path, "link/etc/passwd", "entry")


def test_an_s3_object_key_with_dot_dot_is_data_not_a_path(tmp_path: Path) -> None:
    import fsspec

    pub = Published(tmp_path)
    traversal_key(pub)
    with s3_server() as opts:
        fs = fsspec.filesystem("s3", **opts)
        fs.mkdir("hostile")  # moto keeps buckets for the whole process: a name of our own
        for path in sorted(p for p in pub.folder.rglob("*") if p.is_file()):
            fs.put_file(str(path), f"hostile/ds/{path.relative_to(pub.folder).as_posix()}")
        fs.pipe_file("hostile/pwned_file.txt", pub.payload)  # what ds/../../pwned_file.txt names as an object key
        before = snapshot(tmp_path)
        with pytest.raises(UnsafePathError, match=r"'\.\.' component"):
            pull("s3://hostile/ds", tmp_path / "a" / "out", storage_options=opts)
    assert snapshot(tmp_path) == before and not pub.outside.exists()
