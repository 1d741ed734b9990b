"""Manifest loading: defaults, and one clear line for every kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from massiveds.errors import ManifestError
from massiveds.manifest import Manifest, load_manifest, manifest_json_schema
from tests.helpers import EXAMPLE


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return path


MINIMAL = "name: t\ndomain: wiki\nsources:\n  - uri: data/*.jsonl\n"


def test_shipped_example_loads_with_defaults() -> None:
    loaded = load_manifest(EXAMPLE)
    m = loaded.manifest
    assert m.domain == "wiki" and len(m.sources) == 2
    assert m.chunk.size == 128 and m.chunk.unit == "words"
    assert m.embed.model == "all-MiniLM-L6-v2" and m.embed.device == "auto" and m.embed.store_vectors
    assert m.index.type == "auto" and m.index.nbits == 8
    assert m.dedup.exact is True
    assert len(loaded.sha256) == 64 and loaded.base_dir == EXAMPLE.parent.resolve()


def test_minimal_manifest_gets_design_defaults(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, MINIMAL)).manifest
    assert m.filters.min_words == 20
    assert (m.dedup.near.ngram, m.dedup.near.num_perm, m.dedup.near.bands, m.dedup.near.threshold) == (5, 112, 14, 0.8)
    assert (m.decontaminate.ngram, m.decontaminate.threshold) == (13, 0.8)
    assert (m.chunk.size, m.chunk.overlap, m.chunk.min_size) == (256, 0, 20)
    assert m.embed.batch_size == 64
    assert m.shards.target_passages == 1_000_000
    assert m.sources[0].format == "jsonl" and m.sources[0].text_field == "text"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + "chunk:\n  sise: 100\n", "chunk.sise: unknown field"),
        (MINIMAL + "colour: red\n", "colour: unknown field"),
        (MINIMAL + "chunk:\n  size: -5\n", "chunk.size: Input should be greater than 0"),
        (MINIMAL + "chunk:\n  size: 10\n  overlap: 10\n", "overlap (10) must be smaller than size (10)"),
        (MINIMAL + "embed:\n  device: tpu\n", "embed.device"),
        (MINIMAL + "index:\n  type: hnsw\n", "index.type"),
        ("name: t\ndomain: wiki\nsources: []\n", "sources: List should have at least 1 item"),
        ("name: t\nsources:\n  - uri: x\n", "domain: Field required"),
        ("name: t\ndomain: Wiki Pages\nsources:\n  - uri: x\n", "domain: String should match pattern"),
        ("name: t\ndomain: wiki\nsources:\n  - uri: x\n    format: pdf\n", "format 'pdf' is not supported yet"),
        ("name: t\ndomain: wiki\nsources:\n  - uri: x\n    sha256: abc\n", "sha256 must be 64 hexadecimal characters"),
    ],
)
def test_bad_values_are_one_line_naming_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    assert expected in message


def test_not_yaml_and_not_a_mapping_and_missing(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"not valid YAML \(line 2\)"):
        load_manifest(write(tmp_path, "name: t\n  bad: [\n"))
    with pytest.raises(ManifestError, match="must be a YAML mapping"):
        load_manifest(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ManifestError, match="manifest not found"):
        load_manifest(tmp_path / "nope.yaml")


def test_json_schema_documents_every_section() -> None:
    schema = manifest_json_schema()
    for section in Manifest.model_fields:
        assert f'"{section}"' in schema
