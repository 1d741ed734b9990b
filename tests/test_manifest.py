"""Manifest loading: defaults, and one clear line for every kind of mistake."""

from __future__ import annotations

import json
import shutil
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from massiveds.core.errors import ManifestError
from massiveds.core.manifest import Manifest, load_manifest, manifest_json_schema
from massiveds.ingest.sources.files import resolve_inputs
from tests.helpers import EXAMPLE
from tests.helpers import massiveds as cli


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
    assert m.embed.batch_size == "auto"  # 64 for a transformer, 1024 for a static model
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


def nested_models(model: type[BaseModel]) -> set[type[BaseModel]]:
    """``model`` and every model its fields hold, at any depth (through lists and unions too)."""
    found = {model}
    for field in model.model_fields.values():
        for arg in [field.annotation, *typing.get_args(field.annotation)]:
            if isinstance(arg, type) and issubclass(arg, BaseModel) and arg not in found:
                found |= nested_models(arg)
    return found


def test_json_schema_documents_every_field() -> None:
    """Every field of the manifest, in every nested section, has a description in the JSON schema (what editors show)."""
    schema = json.loads(manifest_json_schema())
    objects = {"Manifest": schema, **schema["$defs"]}
    undocumented = [f"{name}.{field}" for name, obj in objects.items() for field, prop in obj.get("properties", {}).items()
                    if not prop.get("description", "").strip()]
    assert undocumented == []
    models = nested_models(Manifest)
    assert {m.__name__ for m in models} == set(objects)  # every section was looked at
    assert sum(len(obj["properties"]) for obj in objects.values()) == sum(len(m.model_fields) for m in models)


@pytest.mark.parametrize(
    ("sources", "field"),
    [
        ("sources:\n  - uri: ../data/*.jsonl\n", "sources[0].uri '../data/*.jsonl'"),
        ("sources:\n  - uri: data/*.jsonl\n  - uri: data/../../elsewhere/*.jsonl\n", "sources[1].uri 'data/../../elsewhere/*.jsonl'"),
        ("sources:\n  - uri: ./../urls.txt\n    uri_list: true\n", "sources[0].uri './../urls.txt'"),
        ("sources:\n  - uri: ../saved\n    format: hf\n", "sources[0].uri '../saved'"),
        ("sources:\n  - uri: '**/../../x.jsonl'\n", "sources[0].uri '**/../../x.jsonl'"),
        ("sources:\n  - uri: data/*.jsonl\ndecontaminate:\n  eval_sets: [{uri: ../evals/qa.jsonl}]\n",
         "decontaminate.eval_sets[0].uri '../evals/qa.jsonl'"),
        ("sources:\n  - uri: data/*.jsonl\nembed:\n  model: ../models/my-encoder\n", "embed.model '../models/my-encoder'"),
    ],
)
def test_paths_leaving_the_manifest_folder_are_refused(tmp_path: Path, sources: str, field: str) -> None:
    path = write(tmp_path, "name: t\ndomain: wiki\n" + sources)
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {field} leads outside the manifest's folder {tmp_path.resolve()}")
    assert message.endswith("or set allow_paths_outside: true") and "\n" not in message


def test_paths_outside_are_allowed_when_asked_absolute_or_inside(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shutil.copy(EXAMPLE.parent / "data" / "jargon" / "jargon-0.jsonl.zst", shared)
    folder = tmp_path / "manifests"
    folder.mkdir()
    outside = "name: t\ndomain: wiki\nsources:\n  - uri: ../shared/*.jsonl.zst\n"
    loaded = load_manifest(write(folder, outside + "allow_paths_outside: true\n"))
    assert [Path(i.path).resolve() for i in resolve_inputs(loaded)] == [shared / "jargon-0.jsonl.zst"]
    for uri in (f"{shared}/*.jsonl.zst", f"{folder}/../shared/*.jsonl.zst", "data/../data/*.jsonl", "https://example.org/a/../b.jsonl"):
        assert load_manifest(write(folder, f"name: t\ndomain: wiki\nsources:\n  - uri: {uri}\n")).manifest.sources[0].uri == uri
    assert not Manifest.model_validate({"name": "t", "domain": "wiki", "sources": [{"uri": "x"}]}).allow_paths_outside


def test_cli_refuses_a_path_outside_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    shutil.copy(EXAMPLE.parent / "data" / "jargon" / "jargon-0.jsonl.zst", tmp_path / "shared")
    folder = tmp_path / "manifests"
    folder.mkdir()
    manifest = write(folder, "name: t\ndomain: wiki\nsources:\n  - uri: ../shared/*.jsonl.zst\n")
    out = tmp_path / "out"
    for args in (("build", str(manifest), "--out", str(out)), ("validate", str(manifest)), ("plan", str(manifest))):
        proc = cli(*args, check=False)
        lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert lines == [f"error: {manifest}: sources[0].uri '../shared/*.jsonl.zst' leads outside the manifest's folder "
                         f"{folder.resolve()}; move the data under it, use an absolute path, or set allow_paths_outside: true"]
    assert not out.exists()


def test_fraction_outside_zero_one_is_one_line_before_opening_anything(tmp_path: Path) -> None:
    for args in (("search", str(tmp_path / "nowhere"), "query", "--fraction", "1.5"),
                 ("subsample", str(tmp_path / "nowhere"), "--fraction", "0", "--out", str(tmp_path / "sub"))):
        proc = cli(*args, check=False)
        lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: fraction must be in (0, 1], got"), lines
    assert not (tmp_path / "sub").exists()
