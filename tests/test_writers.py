"""One writer at a time: concurrent changes to a datastore all land, and readers never fail or see a half-written state.

A datastore of real Jargon File and FOLDOC entries (the distilled static embedder, IVF-PQ, BM25) is changed by every kind
of writer at once: deletes of disjoint and of overlapping documents, an append, a compact, a retrain and a merge-index,
with searches running throughout; then again with every writer SIGKILLed at a random point and run again. Afterwards:
every deletion is recorded once with its own table, every deleted document is absent from every mode of search and
from a subsample, every appended document is present, ids are unique, ``verify`` is ok and no file is left over.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from massiveds.core.catalog import catalog_files, read_catalog, write_catalog
from massiveds.core.errors import ShardSkippedWarning
from massiveds.core.layout import TEMPORARY
from massiveds.core.writer_lock import LOCK_FILE, writer_lock
from massiveds.ops.verify import present_files, verify
from massiveds.store.datastore import Datastore
from tests.helpers import REPO
from tests.helpers import massiveds as cli
from tests.test_append import read_jsonl_zst

DATA = REPO / "manifests/examples/data/jargon"
MODES = ("dense", "sparse", "hybrid")
#: Records of the held-back Jargon File part that the append adds.
APPEND_RECORDS = 24
#: Documents per delete; the third delete takes half of the first's and as many of its own.
PER_DELETE = 30


def manifest_text(model: Path, *uris: str) -> str:
    sources = "".join(f"  - {{name: source-{k}, uri: '{uri}', format: jsonl, id_field: id, title_field: title}}\n"
                      for k, uri in enumerate(uris))
    return (f"name: writers\ndomain: wiki\nsources:\n{sources}"
            f"filters: {{min_words: 20}}\nchunk: {{unit: words, size: 128, overlap: 0, min_size: 20}}\nembed: {{model: '{model}'}}\n"
            "index: {type: ivfpq, nlist: 16, pq_m: 16, nbits: 6, nprobe: 4}\nsparse: {enabled: true}\nshards: {target_passages: 150}\n")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, static_model: Path) -> Path:
    """Three Jargon File parts and the FOLDOC sample built with IVF-PQ and BM25 (the fourth Jargon part is held back for the append)."""
    folder = tmp_path_factory.mktemp("writers")
    (folder / "data").mkdir()
    for name in ("jargon-0", "jargon-1", "jargon-2", "foldoc-0", "foldoc-1"):
        shutil.copy(DATA / f"{name}.jsonl.zst", folder / "data")
    (folder / "base.yaml").write_text(manifest_text(static_model, "data/jargon-*.jsonl.zst", "data/foldoc-*.jsonl.zst"))
    cli("build", str(folder / "base.yaml"), "--out", str(folder / "ds"), "--engine", "local")
    return folder / "ds"


@pytest.fixture(scope="module")
def new_data(tmp_path_factory: pytest.TempPathFactory, static_model: Path) -> tuple[Path, list[str]]:
    """The append's manifest (records of the held-back part) and the titles of its documents."""
    folder = tmp_path_factory.mktemp("writers-new")
    rows = [r for r in read_jsonl_zst(DATA / "jargon-3.jsonl.zst") if len(r["text"].split()) >= 40][:APPEND_RECORDS]
    (folder / "new.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "more.yaml").write_text(manifest_text(static_model, "new.jsonl").replace("name: writers", "name: more"))
    return folder / "more.yaml", [r["title"] for r in rows]


def documents(root: Path) -> dict[str, str]:
    """doc_id -> title of every live (not deleted) passage's document."""
    out = {}
    for shard in Datastore.open(root).shards:
        live = ~shard.deleted
        out |= dict(zip(shard.column("doc_id")[live].tolist(), shard.column("title")[live].tolist(), strict=True))
    return out


@dataclass
class Plan:
    """The writers started at once on one datastore, and what each delete deletes."""

    root: Path
    commands: dict[str, list[str]]
    deletes: dict[str, set[str]]
    queries: list[str]


def plan(root: Path, folder: Path, new_manifest: Path, new_titles: list[str]) -> Plan:
    docs = documents(root)
    ids = sorted(docs)
    rng = random.Random(7)
    rng.shuffle(ids)
    a, b = ids[:PER_DELETE], ids[PER_DELETE:2 * PER_DELETE]
    c = a[: PER_DELETE // 2] + ids[2 * PER_DELETE : 2 * PER_DELETE + PER_DELETE // 2]  # half of a's, half its own
    deletes = {"delete-a": set(a), "delete-b": set(b), "delete-c": set(c)}
    commands: dict[str, list[str]] = {}
    for name, chosen in deletes.items():
        (folder / f"{name}.txt").write_text("\n".join(sorted(chosen)) + "\n")
        commands[name] = ["delete", str(root), "--doc-ids", str(folder / f"{name}.txt"), "--reason", name]
    commands |= {"append": ["append", str(root), str(new_manifest), "--engine", "local"], "compact": ["compact", str(root)],
                 "retrain": ["retrain", str(root), "--sample", "800"], "merge-index": ["merge-index", str(root)]}
    queries = [docs[d] for d in (a[:3] + b[:3] + c[-3:])] + new_titles[:3]
    return Plan(root, commands, deletes, queries)


def start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "massiveds.cli", *command, "--wait", "900"], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=os.environ | {"COLUMNS": "200"})


@dataclass
class Searcher:
    """Searches ``queries`` in every mode until stopped: through one long-lived Datastore (as ``serve``) and one opened anew each time."""

    root: Path
    queries: list[str]
    stop: threading.Event = field(default_factory=threading.Event)
    seen: list[tuple[float, set[str]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        live = Datastore.open(self.root)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ShardSkippedWarning)  # a shard skipped would be a half-written state seen
            while not self.stop.is_set():
                for query in self.queries:
                    for mode in MODES:
                        started = time.monotonic()
                        try:
                            fresh = Datastore.open(self.root)
                            fresh.use_embedder(live.embedder)
                            hits = [*live.search(query, k=10, mode=mode), *fresh.search(query, k=10, mode=mode)]
                        except Exception as exc:  # every failure is a finding: the test lists them
                            self.errors.append(f"{mode} {query!r}: {type(exc).__name__}: {exc}")
                            continue
                        self.seen.append((started, {h["doc_id"] for h in hits}))

    def settle(self, searches: int = 6, seconds: float = 120) -> None:
        """Wait until ``searches`` more searches have run (the ones after the last writer returned)."""
        want, deadline = len(self.seen) + searches, time.monotonic() + seconds
        while len(self.seen) < want and not self.errors:
            assert time.monotonic() < deadline, "the searcher stalled"
            time.sleep(0.05)


@contextlib.contextmanager
def searching(root: Path, queries: list[str]) -> Iterator[Searcher]:
    """A Searcher running in a thread for the block."""
    searcher = Searcher(root, queries)
    thread = threading.Thread(target=searcher.run, daemon=True)
    thread.start()
    try:
        yield searcher
    finally:
        searcher.stop.set()
        thread.join(timeout=120)
        assert not thread.is_alive(), "the searcher did not stop"


def wait_all(procs: dict[str, subprocess.Popen[bytes]], deadline: float) -> dict[str, float]:
    """When each process ended (monotonic seconds), waiting for all of them until ``deadline``."""
    ended: dict[str, float] = {}
    while len(ended) < len(procs):
        for name, proc in procs.items():
            if name not in ended and proc.poll() is not None:
                ended[name] = time.monotonic()
        assert time.monotonic() < deadline, f"writers still running: {sorted(set(procs) - set(ended))}"
        time.sleep(0.05)
    return ended


def no_deleted_after_return(p: Plan, seen: list[tuple[float, set[str]]], ended: dict[str, float]) -> None:
    """No search that started after a delete returned found one of its documents."""
    for name, chosen in p.deletes.items():
        late = [docs & chosen for started, docs in seen if started > ended[name]]
        assert late and not any(late), (name, [d for d in late if d][:3])


def check_invariants(p: Plan, base_docs: set[str], tmp: Path) -> None:
    root = p.root
    catalog = read_catalog(root)
    deleted = set().union(*p.deletes.values())
    selections = collections.Counter(d.selection for d in catalog.deletions)
    assert selections == collections.Counter(f"doc-ids {p.commands[n][3]}" for n in p.deletes), selections  # each recorded once
    assert len({d.table for d in catalog.deletions}) == len(catalog.deletions)
    tables = {d.reason: set(pq.read_table(root / d.table)["doc_id"].to_pylist()) for d in catalog.deletions}
    for name, ids in tables.items():
        assert ids and ids <= p.deletes[name], name  # its own documents, and only those it deleted first
    assert sum(len(t) for t in tables.values()) == len(set().union(*tables.values())) and set().union(*tables.values()) == deleted

    (append,) = catalog.appends
    dropped = set(pq.read_table(root / append.table)["doc_id"].to_pylist())
    new_docs = {json.loads(line)["id"] for line in (Path(p.commands["append"][2]).parent / "new.jsonl").read_text().splitlines()}
    live = set(documents(root))
    assert live == (base_docs - deleted) | (new_docs - dropped) and len(new_docs - dropped) > APPEND_RECORDS // 2

    ds = Datastore.open(root)
    ids = np.concatenate([s.ids_of(np.arange(s.count)) for s in ds.shards])
    assert len(np.unique(ids)) == len(ids) == ds.num_passages
    for mode in MODES:
        found = {h["doc_id"] for hits in ds.search(p.queries, k=30, mode=mode) for h in hits}
        assert not found & deleted, mode
    cli("subsample", str(root), "--fraction", "1.0", "--out", str(tmp / "all"))
    assert set(documents(tmp / "all")) == live
    shutil.rmtree(tmp / "all")

    assert verify(root) == []
    named = {e.rel for e in catalog_files(catalog)}
    extra = [rel for rel in present_files(root) if rel not in named and rel != "datastore.json" and not rel.endswith("/shard.json")]
    assert extra == []
    assert {f.name for f in (root / "shards").iterdir()} == {Path(s.folder_rel()).name for s in catalog.shards}
    assert (root / "merged").exists() == (catalog.merged is not None)
    assert not [q for q in root.rglob("*") if TEMPORARY.fullmatch(q.name)] and not (root / "build" / "append").exists()


def test_two_deletes_at_once_are_both_recorded(example_datastore: Path, tmp_path: Path) -> None:
    """The race users hit: two deletes started together used to both write deletion 1, losing one record and its table."""
    root = Path(shutil.copytree(example_datastore, tmp_path / "ds"))
    ids = sorted(documents(root))
    sets = {"first": set(ids[:40]), "second": set(ids[40:80])}
    with writer_lock(root, "test"):  # both start while a writer holds the lock, so both are in the race when it is released
        procs = {}
        for name, chosen in sets.items():
            (tmp_path / f"{name}.txt").write_text("\n".join(sorted(chosen)))
            command = ["delete", str(root), "--doc-ids", str(tmp_path / f"{name}.txt"), "--reason", name]
            procs[name] = start(command, tmp_path / f"{name}.log")
        deadline = time.monotonic() + 120
        while not all("waiting for test by" in (tmp_path / f"{n}.log").read_text() for n in sets):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs.values()), "a delete did not wait for the lock"
            time.sleep(0.05)
    wait_all(procs, time.monotonic() + 300)
    assert [p.returncode for p in procs.values()] == [0, 0], [(tmp_path / f"{n}.log").read_text()[-800:] for n in sets]
    catalog = read_catalog(root)
    assert sorted(d.reason for d in catalog.deletions) == ["first", "second"]
    assert sorted(d.table for d in catalog.deletions) == ["deletions/00001.parquet", "deletions/00002.parquet"]
    for record in catalog.deletions:
        assert set(pq.read_table(root / record.table)["doc_id"].to_pylist()) == sets[record.reason]
    assert not set(documents(root)) & (sets["first"] | sets["second"]) and verify(root) == []


def test_a_second_writer_waits_then_fails_in_one_line_naming_the_holder(example_datastore: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(example_datastore, tmp_path / "ds"))
    (tmp_path / "ids.txt").write_text(sorted(documents(root))[0] + "\n")
    before = (root / "datastore.json").read_bytes()
    with writer_lock(root, "test-holder"):
        clock = time.monotonic()
        proc = cli("delete", str(root), "--doc-ids", str(tmp_path / "ids.txt"), "--wait", "2", check=False)
        waited = time.monotonic() - clock
    assert proc.returncode == 2 and waited >= 2, (proc.returncode, waited)
    assert "waiting for test-holder by" in proc.stderr and f"pid {os.getpid()}" in proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "is being changed by test-holder" in error[0] and "--wait" in error[0] and "Traceback" not in proc.stderr
    assert (root / "datastore.json").read_bytes() == before
    assert "documents deleted" in cli("delete", str(root), "--doc-ids", str(tmp_path / "ids.txt"), "--wait", "0").stderr  # released


def test_a_dead_holder_leaves_no_stale_lock(example_datastore: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(example_datastore, tmp_path / "ds"))
    code = (f"from massiveds.core.writer_lock import writer_lock; import time\nwith writer_lock({str(root)!r}, 'doomed'):\n"
            "    print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
    proc = cli("compact", str(root), "--wait", "0", check=False)
    assert proc.returncode == 2 and "is being changed by doomed" in proc.stderr
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    assert json.loads((root / LOCK_FILE).read_text())["command"] == "doomed"  # what it wrote stays; the lock does not
    assert cli("compact", str(root), "--wait", "0").returncode == 0


def test_the_catalog_writer_refuses_to_write_without_the_lock(example_datastore: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(example_datastore, tmp_path / "ds"))
    with pytest.raises(RuntimeError, match="without its writer lock"):
        write_catalog(root, read_catalog(root))
    with writer_lock(root, "test"), writer_lock(root, "nested"):  # re-entrant in one process
        write_catalog(root, read_catalog(root))


@pytest.mark.slow
def test_every_kind_of_writer_at_once_with_searches_throughout(base: Path, new_data: tuple[Path, list[str]], tmp_path: Path) -> None:
    root = Path(shutil.copytree(base, tmp_path / "ds"))
    p = plan(root, tmp_path, *new_data)
    base_docs = set(documents(root))
    control = {h["doc_id"] for hits in Datastore.open(root).search(p.queries, k=10, mode="hybrid") for h in hits}
    assert control & set().union(*p.deletes.values())  # the queries find documents the deletes will remove
    with searching(root, p.queries) as searcher:
        with writer_lock(root, "test"):  # every writer starts while the lock is held: all of them race for it at once
            procs = {name: start(command, tmp_path / f"{name}.log") for name, command in p.commands.items()}
            deadline = time.monotonic() + 300
            while not all("waiting for test by" in (tmp_path / f"{n}.log").read_text() for n in procs):
                assert time.monotonic() < deadline and all(q.poll() is None for q in procs.values()), "a writer did not wait"
                time.sleep(0.05)
        ended = wait_all(procs, time.monotonic() + 900)
        searcher.settle()
    logs = {n: (tmp_path / f"{n}.log").read_text()[-1500:] for n in procs}
    assert {n: q.returncode for n, q in procs.items()} == dict.fromkeys(procs, 0), logs
    assert searcher.errors == [] and len(searcher.seen) > 20
    no_deleted_after_return(p, searcher.seen, ended)
    check_invariants(p, base_docs, tmp_path)


@pytest.mark.slow
def test_every_writer_killed_at_a_random_point_then_run_again(base: Path, new_data: tuple[Path, list[str]], tmp_path: Path) -> None:
    seed = int(os.environ.get("MASSIVEDS_KILL_SEED", "20261207"))
    rng = random.Random(seed)
    root = Path(shutil.copytree(base, tmp_path / "ds"))
    p = plan(root, tmp_path, *new_data)
    base_docs = set(documents(root))
    with searching(root, p.queries) as searcher:
        clock = time.monotonic()
        procs = {name: start(command, tmp_path / f"{name}.log") for name, command in p.commands.items()}
        kill_at = {name: clock + rng.uniform(1.0, 40.0) for name in procs}  # writers queue for the lock: points spread over all of them
        kill_at[rng.choice(sorted(procs))] = clock + rng.uniform(0.3, 1.0)  # one dies starting up: fast writers may all end before 40 s
        killed, ended = set(), {}
        while len(killed) + len(ended) < len(procs):
            for name, proc in procs.items():
                if name in killed or name in ended:
                    continue
                if proc.poll() is not None:
                    ended[name] = time.monotonic()
                elif time.monotonic() >= kill_at[name]:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    killed.add(name)
            assert time.monotonic() < clock + 900, "writers still running"
            time.sleep(0.02)
        assert {n: procs[n].returncode for n in ended} == dict.fromkeys(ended, 0)
        again = {name: start(p.commands[name], tmp_path / f"{name}.log") for name in sorted(killed)}
        ended |= wait_all(again, time.monotonic() + 900)
        searcher.settle()
    logs = {n: (tmp_path / f"{n}.log").read_text()[-1500:] for n in again}
    assert {n: q.returncode for n, q in again.items()} == dict.fromkeys(again, 0), (seed, logs)
    assert killed, f"seed {seed}: no writer was killed"
    assert searcher.errors == [], (seed, searcher.errors[:5])
    no_deleted_after_return(p, searcher.seen, ended)
    check_invariants(p, base_docs, tmp_path)
