"""The typed catalog: real catalogs read and written back unchanged, writers' formats pinned, malformed catalogs refused in one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.vectorstore import clustered_vectors, write_vector_datastore
from massiveds.core.catalog import DomainTotals, RecallRecord, ShardRecord, catalog_text, open_catalog, read_catalog, write_catalog
from massiveds.core.errors import DatastoreError
from massiveds.core.manifest import Index
from massiveds.core.writer_lock import writer_lock
from massiveds.encode.index import plan_index
from massiveds.ops.merge import merge
from massiveds.ops.merge_index import merge_index
from massiveds.ops.publish import published_catalog
from massiveds.ops.subsample import subsample
from massiveds.ops.verify import verify
from massiveds.store.datastore import Datastore
from tests.helpers import FIXTURES
from tests.helpers import massiveds as cli
from tests.test_publish import make_datastore


def key_paths(value: Any, at: str = "") -> list[str]:
    """Every key of a JSON value, with its path, in document order: equal lists mean the same keys in the same order."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in [f"{at}/{k}", *key_paths(v, f"{at}/{k}")]]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in key_paths(v, f"{at}[{i}]")]
    return []


def assert_round_trip(root: Path) -> None:
    """The catalog read through the models and written back is the same file, byte for byte."""
    raw = (root / "datastore.json").read_text()
    again = catalog_text(read_catalog(root))
    assert json.loads(again) == json.loads(raw)
    assert key_paths(json.loads(again)) == key_paths(json.loads(raw))
    assert again == raw


@pytest.fixture(scope="module")
def derived(example_datastore: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A subsample of the example, a subsample of that, a merge in place, a merge copied and a subsample of a merge."""
    top = tmp_path_factory.mktemp("derived")
    subsample(example_datastore, top / "half", 0.5, seed=0)
    subsample(top / "half", top / "quarter", 0.5, seed=1)
    merge([example_datastore, top / "half"], top / "merged")
    merge([example_datastore, top / "quarter"], top / "copied", copy=True)
    subsample(top / "merged", top / "merged-half", 0.5, seed=2)
    return {p.name: p for p in top.iterdir()}


@pytest.fixture(scope="module")
def ivf_merged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two IVF-PQ datastores of one training merged in place, with a merged index: every optional field a catalog has."""
    top = tmp_path_factory.mktemp("ivf")
    vectors = clustered_vectors(1500, 16, seed=1, clusters=6, latent=4)
    plan = plan_index(900, 16, Index(type="ivfpq", nlist=8, pq_m=4, nbits=6, nprobe=4))
    write_vector_datastore(top / "a", vectors[:900], 2, plan)
    write_vector_datastore(top / "b", vectors[900:], 2, plan, trained=top / "a" / "trained.faiss")
    merge([top / "a", top / "b"], top / "m")
    merge_index(top / "m")
    return top / "m"


def test_the_committed_format1_catalog_round_trips_byte_for_byte() -> None:
    assert_round_trip(FIXTURES / "datastore-format1")


@pytest.mark.slow
def test_the_example_catalog_round_trips_byte_for_byte(example_datastore: Path) -> None:
    assert_round_trip(example_datastore)
    catalog = open_catalog(example_datastore)
    assert catalog.build.model_extra and "stage_seconds" in catalog.build.model_extra  # open-ended content kept as it is
    assert catalog.recall is not None and catalog.recall.status == "measured" and catalog.merged_from is None


@pytest.mark.slow
@pytest.mark.parametrize("name", ["half", "quarter", "merged", "copied", "merged-half"])
def test_merged_and_subsampled_catalogs_round_trip_byte_for_byte(derived: dict[str, Path], name: str) -> None:
    assert_round_trip(derived[name])


def test_a_merged_index_and_its_merge_round_trip_byte_for_byte(ivf_merged: Path) -> None:
    assert_round_trip(ivf_merged)
    catalog = open_catalog(ivf_merged)
    assert catalog.merged is not None and catalog.merged.ntotal == catalog.num_passages == 1500
    assert catalog.chunk is None and len(catalog.index.merged_plans) == 2  # a synthetic datastore's catalog: no chunking
    published, typed = published_catalog(ivf_merged)
    assert all(s.folder is None for s in typed.shards) and json.loads(published) == typed.as_json()
    assert [s.id_offset for s in typed.shards] == [s.id_offset for s in catalog.shards]


@pytest.mark.slow
def test_writers_keep_the_catalog_format(derived: dict[str, Path]) -> None:
    """The keys each writer puts in a shard record, in their order, and no null it did not write before."""
    merged = json.loads((derived["merged"] / "datastore.json").read_text())
    assert list(merged["shards"][0]) == ["name", "domain", "count", "list_balance", "files", "tokens", "id_start", "id_offset", "folder",
                                         "trained", "nprobe", "merged_from"]
    assert list(merged)[-5:] == ["build", "merged_from", "manifests", "versions", "dedup"] and "recall" not in merged
    half = json.loads((derived["half"] / "datastore.json").read_text())
    assert list(half["shards"][0]) == ["name", "domain", "id_start", "count", "tokens", "documents", "list_balance", "files"]
    assert half["subsample"]["previous"] is None and list(half)[-1] == "subsample"
    quarter = json.loads((derived["quarter"] / "datastore.json").read_text())
    assert quarter["subsample"]["previous"] == half["subsample"]
    shard_json = json.loads((derived["copied"] / "shards" / "wiki-00000" / "shard.json").read_text())
    assert shard_json == json.loads((derived["copied"] / "datastore.json").read_text())["shards"][0]


def test_a_changed_record_keeps_its_order() -> None:
    shard = ShardRecord.model_validate({"name": "a-00000", "domain": "a", "id_start": 5, "count": 2, "list_balance": None})
    moved = shard.but(drop=["id_start"], id_start=0, folder="../x/shards/a-00000")
    assert list(moved.as_json()) == ["name", "domain", "count", "list_balance", "id_start", "folder"]
    assert moved.as_json()["list_balance"] is None and "tokens" not in moved.as_json() and moved.tokens == 0
    assert moved.stored_id_start == 0 and moved.folder_rel() == "../x/shards/a-00000" and shard.folder_rel() == "shards/a-00000"
    assert shard.nprobe_or(8) == 8 and shard.but(nprobe=None).nprobe_or(8) is None  # an explicit null is the shard's own
    partial = DomainTotals.model_validate({"passages": 3, "shards": 1})
    assert (partial + partial).as_json() == {"passages": 6, "shards": 2}


def test_write_catalog_writes_what_it_read(tmp_path: Path) -> None:
    root = make_datastore(tmp_path / "ds")
    raw = (root / "datastore.json").read_text()
    with writer_lock(root, "test"):
        write_catalog(root, open_catalog(root))
    assert (root / "datastore.json").read_text() == raw and verify(root) == []


def _edit(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        catalog = json.loads((root / "datastore.json").read_text())
        change(catalog)
        (root / "datastore.json").write_text(json.dumps(catalog, indent=2) + "\n")
    return apply


MALFORMED = {
    "wrong type": (_edit(lambda c: c["shards"][1].update(count="1")), "field shards[1].count: input should be a valid integer"),
    "missing field": (_edit(lambda c: c["shards"][0].pop("domain")), "field shards[0].domain is missing"),
    "unknown field": (_edit(lambda c: c["shards"][0].update(colour="red")), "field shards[0].colour is not a catalog field"),
    "bad file record": (_edit(lambda c: c["trained_index"].update(bytes=None)), "field trained_index.bytes"),
    "no embedder": (_edit(lambda c: c.pop("embedder")), "field embedder is missing"),
    "not an object": (lambda root: (root / "datastore.json").write_text("[1, 2]\n"), "field (top level)"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_catalog_is_one_line_naming_the_file_and_the_field(case: str, tmp_path: Path) -> None:
    root = make_datastore(tmp_path / "ds")
    damage, expected = MALFORMED[case]
    damage(root)
    with pytest.raises(DatastoreError) as refused:
        open_catalog(root)
    message = str(refused.value)
    assert message.startswith(f"{root / 'datastore.json'}: malformed catalog: {expected}")
    assert message.endswith(f"run massiveds verify {root}") and "\n" not in message and "pydantic" not in message
    with pytest.raises(DatastoreError, match="malformed catalog"):
        Datastore.open(root)
    assert verify(root) == [message]


def test_the_cli_reports_a_malformed_catalog_in_one_line(tmp_path: Path) -> None:
    root = make_datastore(tmp_path / "ds")
    MALFORMED["wrong type"][0](root)
    for args in (("inspect", str(root)), ("search", str(root), "a query"), ("verify", str(root))):
        done = cli(*args, check=False)
        output = done.stdout + done.stderr
        lines = [line for line in output.splitlines() if "malformed catalog" in line]
        assert done.returncode != 0 and "Traceback" not in output and "validation error" not in output, args
        assert len(lines) == 1 and "shards[1].count" in lines[0] and "run massiveds verify" in lines[0], (args, output)


def test_a_catalog_of_another_format_says_so(tmp_path: Path) -> None:
    root = make_datastore(tmp_path / "ds")
    _edit(lambda c: c.update(format_version=2, index_v2={"kind": "new"}))(root)
    with pytest.raises(DatastoreError, match=r"malformed catalog: field index_v2 .*datastore format 2 is not 1"):
        open_catalog(root)
    _edit(lambda c: c.pop("index_v2"))(root)
    with pytest.raises(DatastoreError, match="datastore format 2 is not 1; rebuild it"):
        Datastore.open(root)


def test_datastore_and_shards_read_the_typed_catalog(ivf_merged: Path) -> None:
    ds = Datastore.open(ivf_merged)
    catalog = open_catalog(ivf_merged)
    assert [s.name for s in ds.shards] == [s.name for s in catalog.shards_by_id]
    assert [s.id_offset for s in ds.shards] == [0, 0, 900, 900] and {s.nprobe for s in ds.shards} == {4}
    assert ds.merged_index is not None
    q = np.asarray(clustered_vectors(1500, 16, seed=1, clusters=6, latent=4)[1000:1005], dtype=np.float32)
    assert (ds.search_vectors(q, 5, rerank="exact")[1][:, 0] == np.arange(1000, 1005)).all()


def test_the_recall_figures_are_read_at_the_k_measured() -> None:
    """A datastore of 6 passages measures recall@5 when 10 is asked: the figures follow the k stored, and catalogs written
    before that (key of the k asked, k clipped) still read."""
    now = RecallRecord.model_validate({"status": "measured", "k": 5, "recall_at_5": 0.8, "recall_at_5_rerank": 1.0})
    before = RecallRecord.model_validate({"status": "measured", "k": 5, "recall_at_10": 0.6, "recall_at_10_rerank": 0.9})
    assert (now.figure(), now.figure(rerank=True)) == (0.8, 1.0)
    assert (before.figure(), before.figure(rerank=True)) == (0.6, 0.9)
    assert RecallRecord(status="skipped", reason="no stored vectors").figure() is None
