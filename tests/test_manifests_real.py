"""The shipped per-domain manifests validate offline; remote source URIs are checked by syntax; URL lists expand."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from massiveds.core.errors import ManifestError
from massiveds.core.manifest import load_manifest
from massiveds.ingest.sources.files import resolve_inputs
from massiveds.ingest.sources.plan import download_cache, needs_download, plan_downloads
from tests.helpers import REPO, massiveds
from tests.servers import file_server
from tests.test_download import fetch_all

MANIFESTS = sorted((REPO / "manifests").rglob("*.yaml"))
DOMAINS = {"books", "stem", "wiki", "forum", "code", "math", "biomedical", "web"}


def test_every_massiveds_domain_has_a_manifest() -> None:
    domains = {load_manifest(p).manifest.domain for p in MANIFESTS if p.parent.name == "manifests"}
    assert domains == DOMAINS


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_manifest_validates_without_network(path: Path) -> None:
    loaded = load_manifest(path)
    remote = [s for s in loaded.manifest.sources if needs_download(s)]
    local = resolve_inputs(loaded)  # remote sources: syntax only, no files, no network
    assert len(local) == 0 if len(remote) == len(loaded.manifest.sources) else len(local) > 0
    for s in remote:
        assert s.estimated_documents or s.estimated_tokens, f"{path.name}: {s.label} has no size estimate"


def test_cli_validate_accepts_all_manifests() -> None:
    proc = massiveds("validate", *map(str, MANIFESTS))
    assert proc.returncode == 0 and "error" not in proc.stderr


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"uri": "ftp2://host/x.jsonl"}, "unknown URL scheme 'ftp2'"),
        ({"uri": "hf://models/gpt2/x.jsonl"}, "hf URIs must look like hf://datasets/"),
        ({"uri": "hf://datasets/allenai/c4"}, "name the file(s) in the dataset"),
        ({"uri": "hf://datasets/allenai/c4/en/x.json.gz", "format": "hf"}, "format hf reads a whole dataset"),
        ({"uri": "https://example.org/data/*.jsonl"}, "cannot be globbed"),
        ({"uri": "https://example.org/x.tsv", "format": "hf"}, "format hf reads"),
        ({"uri": "s3:///x.jsonl"}, "missing host or bucket"),
        ({"uri": "x.jsonl", "config": "en"}, "config and builder apply to format hf only"),
        ({"uri": "x.jsonl", "include": "("}, "include is not a valid regular expression"),
    ],
)
def test_bad_remote_uris_are_one_line_errors(tmp_path: Path, source: dict[str, object], message: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "domain": "web", "sources": [source]}))
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_url_list_source_expands_filters_and_downloads(tmp_path: Path) -> None:
    data = REPO / "manifests/examples/data/jargon"
    files = {f"/rpj/{p.name}": p.read_bytes() for p in sorted(data.glob("*.jsonl.zst"))}
    with file_server(files) as srv:
        files["/urls/jargon.txt"] = "".join(f"{srv.url}{p}\n" for p in files).encode() + b"# a comment\n\n"
        path = tmp_path / "m.yaml"
        path.write_text(yaml.safe_dump({"name": "t", "domain": "wiki", "sources": [
            {"uri": f"{srv.url}/urls/jargon.txt", "uri_list": True, "include": "/jargon-[0-2]", "id_field": "id"}]}))
        loaded = load_manifest(path)
        build = tmp_path / "build"
        items = plan_downloads(loaded, build)
        assert [i["uri"].rsplit("/", 1)[1] for i in items] == ["jargon-0.jsonl.zst", "jargon-1.jsonl.zst", "jargon-2.jsonl.zst"]
        fetch_all(items, build)
    inputs = resolve_inputs(loaded, cache=download_cache(build))
    assert [Path(i.path).read_bytes() for i in inputs] == [files[f"/rpj/jargon-{n}.jsonl.zst"] for n in range(3)]
