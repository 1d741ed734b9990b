"""Reading JSONL(.zst) and Parquet into documents; bad lines and broken files are recorded, not fatal."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from massiveds.core.manifest import load_manifest
from massiveds.ingest.extract.jsonl import read_jsonl
from massiveds.ingest.extract.parquet import read_parquet
from massiveds.ingest.sources.files import resolve_inputs
from pipelines.stage import InputItem
from pipelines.stages.extract import extract_file
from tests.helpers import EXAMPLE, REPO

JARGON = REPO / "manifests/examples/data/jargon/jargon-0.jsonl.zst"


def real_lines(n: int) -> list[bytes]:
    return zstandard.ZstdDecompressor().stream_reader(JARGON.open("rb")).read().splitlines(keepends=True)[:n]


def test_read_jsonl_zst_streams_every_record() -> None:
    records = list(read_jsonl(str(JARGON)))
    assert len(records) == len(real_lines(10_000))
    assert all(r.error is None and r.fields and "text" in r.fields for r in records)
    assert [r.row for r in records[:3]] == [0, 1, 2]


def test_bad_lines_become_error_records(tmp_path: Path) -> None:
    lines = real_lines(3)
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(lines[0] + b"{not json\n" + b"\n" + b"[1, 2]\n" + b'{"text": "caf\xe9"}\n' + lines[1])
    records = list(read_jsonl(str(path)))
    assert [r.row for r in records] == [0, 1, 3, 4, 5]
    assert [r.error is None for r in records] == [True, False, False, False, True]
    assert "invalid JSON" in records[1].error and "not an object" in records[2].error and "UTF-8" in records[3].error


def test_read_parquet(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in real_lines(50)]
    path = tmp_path / "x.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=16)
    records = list(read_parquet(str(path), batch_rows=7))
    assert [r.fields["id"] for r in records] == [r["id"] for r in rows]
    assert [r.row for r in records] == list(range(50))


def test_extract_unit_keeps_what_precedes_a_truncated_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    lines = b"".join(zstandard.ZstdDecompressor().stream_reader(p.open("rb")).read() for p in sorted(JARGON.parent.glob("*.jsonl.zst")))
    full = zstandard.ZstdCompressor(level=3).compress(lines)  # several blocks: a cut leaves whole ones before it
    (data / "cut.jsonl.zst").write_bytes(full[: len(full) // 2])
    manifest = tmp_path / "m.yaml"
    manifest.write_text("name: t\ndomain: wiki\nsources:\n  - uri: data/*.jsonl.zst\n    id_field: id\n")
    loaded = load_manifest(manifest)
    [inp] = resolve_inputs(loaded)
    build = tmp_path / "build"
    result = extract_file(InputItem.of(inp, 0), loaded.manifest, build)
    assert 0 < result.read < lines.count(b"\n")
    assert result.dropped["extract:corrupt_file"] == 1
    docs = pq.read_table(build / "documents" / f"{inp.unit}.parquet")
    assert docs.num_rows == result.kept > 0
    dropped = pq.read_table(build / "dropped" / "extract" / f"{inp.unit}.parquet").to_pylist()
    corrupt = [d for d in dropped if d["reason"] == "corrupt_file"]
    assert corrupt[0]["detail"].startswith("data/cut.jsonl.zst")
    assert result.read == result.kept + sum(result.dropped.values())  # the unread rest counts as one record


def test_resolve_inputs_orders_sources_then_paths() -> None:
    inputs = resolve_inputs(load_manifest(EXAMPLE))
    assert [i.rel for i in inputs] == [f"data/jargon/jargon-{i}.jsonl.zst" for i in range(4)] + [
        f"data/jargon/foldoc-{i}.jsonl.zst" for i in range(2)
    ]
    assert [i.unit for i in inputs][:2] == ["s0000-f0000000", "s0000-f0000001"]
    assert inputs[4].unit == "s0001-f0000000"
