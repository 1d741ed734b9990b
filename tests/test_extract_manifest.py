"""Manifest fields of the extractors: formats, markup defaults, directory inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from massiveds.core.errors import ManifestError
from massiveds.core.manifest import Source, load_manifest
from massiveds.ingest.sources.files import resolve_inputs
from tests.helpers import FIXTURES


def test_file_formats_default_their_markup_and_fields():
    assert Source(uri="x.html", format="html").markup == "html"
    assert Source(uri="x.warc.gz", format="warc").markup == "html"
    assert Source(uri="x.xml.bz2", format="wikitext").markup == "wikitext"
    assert Source(uri="x.tex", format="latex").markup == "latex"
    code = Source(uri="repo", format="code")
    assert code.markup == "none" and code.title_field == "title" and code.url_field == "url"
    jsonl = Source(uri="x.jsonl", format="jsonl")
    assert jsonl.markup == "none" and jsonl.title_field is None
    assert Source(uri="x.jsonl", format="jsonl", markup="gutenberg").markup == "gutenberg"


def test_unknown_markup_and_format_rejected():
    with pytest.raises(ValidationError, match="markup"):
        Source(uri="x.jsonl", markup="markdown")
    with pytest.raises(ValidationError, match="not supported yet"):
        Source(uri="x", format="pdf")


def test_directory_inputs_for_code_and_latex(tmp_path: Path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump({"name": "t", "domain": "stem", "sources": [
        {"uri": str(FIXTURES / "latex" / "*"), "format": "latex"},
        {"uri": str(FIXTURES / "html" / "*.html"), "format": "html", "html_extractor": "resiliparse"},
    ]}))
    inputs = resolve_inputs(load_manifest(manifest))
    latex = [Path(i.path).name for i in inputs if i.format == "latex"]
    assert latex == ["project", "tiedtimes.Rnw"]  # the project directory is one input
    html = [i for i in inputs if i.format == "html"]
    assert len(html) == 2 and all(i.markup == "html" and i.html_extractor == "resiliparse" for i in html)
    manifest.write_text(yaml.safe_dump({"name": "t", "domain": "x", "sources": [{"uri": str(FIXTURES / "latex"), "format": "html"}]}))
    with pytest.raises(ManifestError, match="no file matches"):
        resolve_inputs(load_manifest(manifest))
