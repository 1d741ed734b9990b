"""The download stage against real servers on 127.0.0.1: drops, 5xx, 404, checksums, resume, globs, hf datasets."""

from __future__ import annotations

import collections
import hashlib
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from massiveds.core.errors import MassiveDSError
from massiveds.core.manifest import load_manifest
from massiveds.ingest.sources.fetch import ChecksumMismatch, FetchError, RetryPolicy, cache_relpath, fetch, partial_path
from massiveds.ingest.sources.files import resolve_inputs
from massiveds.ingest.sources.plan import download_cache, plan_downloads
from pipelines.stage import InputItem
from pipelines.stages.download import DownloadFile, DownloadItem, DownloadRecord, summarize_downloads
from pipelines.stages.extract import extract_file
from tests.helpers import REPO, head_rows
from tests.helpers import massiveds as cli
from tests.servers import file_server, s3_server

DATA = REPO / "manifests/examples/data/jargon"


def fetch_all(items: list[dict[str, Any]], build: Path, backoff: float = 0.5) -> DownloadRecord:
    """The download step on every planned item, in this process and without unit markers (the cache alone must resume)."""
    step = DownloadFile(build, backoff=backoff)
    return summarize_downloads([step(DownloadItem.model_validate(i)) for i in items])
FAST = RetryPolicy(attempts=4, base=0.01)


def _files() -> dict[str, bytes]:
    return {f"/jargon/{p.name}": p.read_bytes() for p in sorted(DATA.glob("jargon-*.jsonl.zst"))}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_dropped_connection_is_retried_and_bytes_are_identical(tmp_path: Path) -> None:
    files = _files()
    with file_server(files, drop_once={"/jargon/jargon-0.jsonl.zst"}) as srv:
        dest = tmp_path / "x.zst"
        result = fetch(f"{srv.url}/jargon/jargon-0.jsonl.zst", dest, policy=FAST, chunk=8192)
    assert dest.read_bytes() == files["/jargon/jargon-0.jsonl.zst"]
    assert result.fetched and result.attempts == 2 and result.sha256 == _sha(dest.read_bytes())
    assert not partial_path(dest).exists()


def test_server_errors_are_retried_with_backoff(tmp_path: Path) -> None:
    files = _files()
    delays: list[float] = []
    with file_server(files, fail_next={"/jargon/jargon-1.jsonl.zst": collections.deque([503, 502, 500])}) as srv:
        uri = f"{srv.url}/jargon/jargon-1.jsonl.zst"
        result = fetch(uri, tmp_path / "y", policy=RetryPolicy(attempts=5, base=0.1), sleep=delays.append)
    assert (tmp_path / "y").read_bytes() == files["/jargon/jargon-1.jsonl.zst"]
    assert result.attempts >= 2 and len(delays) == result.attempts - 1
    assert all(0.05 <= d <= 0.1 * 2 ** i for i, d in enumerate(delays))  # exponential, jittered down to half


def test_404_fails_at_once_with_a_clear_error(tmp_path: Path) -> None:
    with file_server(_files()) as srv:
        with pytest.raises(FetchError) as err:
            fetch(f"{srv.url}/jargon/missing.jsonl.zst", tmp_path / "z", policy=FAST)
        assert srv.total_hits() <= 2  # fsspec's HEAD then GET probe, no retries
    message = str(err.value)
    assert "missing.jsonl.zst" in message and "not retried" in message and "\n" not in message
    assert not (tmp_path / "z").exists()


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_host_is_retried_then_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/jargon/jargon-0.jsonl.zst"
    delays: list[float] = []
    with pytest.raises(FetchError) as err:
        fetch(url, tmp_path / "x", policy=FAST, sleep=delays.append)
    message = str(err.value)
    assert message.startswith(f"{url}: gave up after 4 attempts: cannot connect (") and "Connect call failed" in message
    assert "\n" not in message and "not found" not in message  # fsspec wraps the refusal in FileNotFoundError
    assert len(delays) == 3


@pytest.mark.slow
def test_build_with_an_unreachable_url_fails_with_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/jargon/jargon-0.jsonl.zst"
    proc = cli("build", str(_manifest(tmp_path, [{"uri": url}])), "--out", str(tmp_path / "out"), "--engine", "local", check=False)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1
    assert lines[0].startswith(f"error: {url}: gave up after 6 attempts: cannot connect (")


def test_403_is_not_retried(tmp_path: Path) -> None:
    path = "/jargon/jargon-2.jsonl.zst"
    with file_server(_files(), fail_next={path: collections.deque([403] * 10)}) as srv:
        with pytest.raises(FetchError, match="not retried"):
            fetch(f"{srv.url}{path}", tmp_path / "z", policy=FAST)
        assert srv.total_hits() <= 2


def test_sha256_mismatch_names_both_digests_and_quarantines(tmp_path: Path) -> None:
    files = _files()
    data = files["/jargon/jargon-2.jsonl.zst"]
    wrong = _sha(b"something else")
    with file_server(files) as srv:
        uri = f"{srv.url}/jargon/jargon-2.jsonl.zst"
        with pytest.raises(ChecksumMismatch) as err:
            fetch(uri, tmp_path / "c" / "f.zst", sha256=wrong, quarantine_dir=tmp_path / "q", policy=FAST)
    message = str(err.value)
    assert uri in message and wrong in message and _sha(data) in message
    quarantined = tmp_path / "q" / cache_relpath(uri)
    assert quarantined.read_bytes() == data and str(quarantined) in message
    assert not (tmp_path / "c" / "f.zst").exists() and not partial_path(tmp_path / "c" / "f.zst").exists()


@pytest.mark.parametrize("ranges", [True, False])
def test_partial_file_continues_with_range_or_restarts(tmp_path: Path, ranges: bool) -> None:
    files = _files()
    data = files["/jargon/jargon-3.jsonl.zst"]
    dest = tmp_path / "p.zst"
    partial_path(dest).write_bytes(data[:10_000])  # left by a killed run
    with file_server(files, ranges=ranges) as srv:
        result = fetch(f"{srv.url}/jargon/jargon-3.jsonl.zst", dest, sha256=_sha(data), policy=FAST, chunk=1 << 20)
        first_range = srv.gets[0][1]
    assert dest.read_bytes() == data
    if ranges:
        assert result.resumed_from == 10_000 and first_range == f"bytes=10000-{len(data) - 1}"
    else:
        assert result.resumed_from == 0


def _manifest(tmp_path: Path, sources: list[dict[str, object]]) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"name": "remote", "domain": "wiki", "sources": sources}))
    return path


def test_build_download_stage_resumes_without_touching_the_server(tmp_path: Path) -> None:
    files = _files()
    build = tmp_path / "out" / "build"
    with file_server(files, drop_once={"/jargon/jargon-1.jsonl.zst"}) as srv:
        sources = [{"name": "jargon", "uri": f"{srv.url}{p}", "id_field": "id", "title_field": "title",
                    "sha256": _sha(files[p])} for p in files]
        loaded = load_manifest(_manifest(tmp_path, sources))
        assert resolve_inputs(loaded) == []  # without a cache, remote sources are only syntax-checked
        items = plan_downloads(loaded, build)
        assert len(items) == 4
        first = fetch_all(items, build, backoff=0.01)
        assert first.fetched == 4 and first.bytes == sum(len(b) for b in files.values())
        srv.hits.clear()
        again = fetch_all(plan_downloads(loaded, build), build)
        assert srv.total_hits() == 0 and again.fetched == 0
    inputs = resolve_inputs(loaded, cache=download_cache(build))
    assert [Path(i.path).read_bytes() for i in inputs] == list(files.values())
    assert inputs[0].rel == sources[0]["uri"] and inputs[0].format == "jsonl"
    result = extract_file(InputItem.of(inputs[0], 0), loaded.manifest, build)
    assert result.read == len(head_rows(DATA / "jargon-0.jsonl.zst", 10**6)) and result.kept > 50  # real, readable input


def test_resolve_without_download_is_a_clear_error(tmp_path: Path) -> None:
    loaded = load_manifest(_manifest(tmp_path, [{"uri": "https://example.org/data/a.jsonl"}]))
    with pytest.raises(MassiveDSError, match="run the download stage first"):
        resolve_inputs(loaded, cache=download_cache(tmp_path / "build"))


def test_s3_glob_expands_and_downloads(tmp_path: Path) -> None:
    import fsspec

    files = _files()
    with s3_server() as opts:
        fs = fsspec.filesystem("s3", **opts)
        fs.mkdir("corpus")
        for path, data in files.items():
            fs.pipe(f"corpus/raw{path}", data)
        fs.pipe("corpus/raw/jargon/README.txt", b"not matched")
        loaded = load_manifest(_manifest(tmp_path, [{"uri": "s3://corpus/raw/jargon/*.jsonl.zst", "storage_options": opts}]))
        build = tmp_path / "build"
        items = plan_downloads(loaded, build)
        assert [i["uri"] for i in items] == [f"s3://corpus/raw{p}" for p in files]
        assert [i["size"] for i in items] == [len(b) for b in files.values()]
        summary = fetch_all(items, build)
    assert summary.fetched == 4
    inputs = resolve_inputs(loaded, cache=download_cache(build))
    assert [Path(i.path).read_bytes() for i in inputs] == list(files.values())


def test_hf_format_reads_a_save_to_disk_folder(tmp_path: Path) -> None:
    import datasets

    rows = head_rows(DATA / "jargon-0.jsonl.zst", 10**6)
    ds = datasets.Dataset.from_list([{"id": r["id"], "title": r["title"], "text": r["text"]} for r in rows])
    datasets.DatasetDict({"train": ds, "test": ds.select(range(5))}).save_to_disk(str(tmp_path / "saved"))
    loaded = load_manifest(_manifest(tmp_path, [{"uri": "saved", "format": "hf", "split": "train", "id_field": "id"}]))
    build = tmp_path / "build"
    items = plan_downloads(loaded, build)
    assert [i["kind"] for i in items] == ["hf"]
    summary = fetch_all(items, build)
    assert summary.fetched == 1
    [inp] = resolve_inputs(loaded, cache=download_cache(build))
    assert inp.format == "parquet" and inp.rel.endswith("default/train/part-00000.parquet")
    result = extract_file(InputItem.of(inp, 0), loaded.manifest, build)
    assert result.read == len(rows) and result.kept > 50
    assert fetch_all(items, build).fetched == 0  # materialised once
