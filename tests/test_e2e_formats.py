"""End to end over every input kind at once: an HTTP source, WARC, a wiki dump, LaTeX, code, Gutenberg text."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import sysconfig
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import massiveds
from tests.helpers import FIXTURES, REPO
from tests.helpers import massiveds as cli
from tests.test_extract_warc import BISECT, _build

pytestmark = pytest.mark.slow


@pytest.fixture()
def http_site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving a folder, counting GETs of the example's data."""
    root = tmp_path / "site"
    root.mkdir()
    shutil.copy(REPO / "manifests/examples/data/jargon/jargon-2.jsonl.zst", root / "jargon-2.jsonl.zst")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined,assignment]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()


def test_multi_format_build_is_searchable_with_attribution(http_site: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = http_site
    data = tmp_path / "data"
    (data / "repo").mkdir(parents=True)
    _build(data / "docs.warc.gz", gzip=True)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in ("colorsys.py", "bisect.py"):
        shutil.copy(stdlib / name, data / "repo" / name)
    manifest = tmp_path / "mixed.yaml"
    manifest.write_text(
        f"""name: mixed
domain: mixed
sources:
  - {{name: jargon-http, uri: "{base}/jargon-2.jsonl.zst", format: jsonl, id_field: id, title_field: title}}
  - {{name: docs, uri: data/docs.warc.gz, format: warc}}
  - {{name: wiki, uri: "{FIXTURES}/wiki/enwiki-excerpt.xml.bz2", format: wikitext}}
  - {{name: vignette, uri: "{FIXTURES}/latex/tiedtimes.Rnw", format: latex}}
  - {{name: code, uri: data/repo, format: code}}
  - {{name: sonnets, uri: "{FIXTURES}/text/sonnets-gutenberg.txt", format: text}}
chunk: {{size: 96, min_size: 16}}
"""
    )
    out = tmp_path / "ds"
    proc = cli("build", str(manifest), "--out", str(out))
    assert "download" in proc.stderr
    catalog = json.loads((out / "datastore.json").read_text())
    sources = catalog["build"]["sources"]
    assert set(sources) == {"jargon-http", "docs", "wiki", "vignette", "code", "sonnets"}
    assert all(counts["kept"] > 0 for counts in sources.values()), sources

    ds = massiveds.open(out)
    queries = {
        "Code so arcane, complex, or ill-structured that it cannot be modified": "jargon-http",
        "maintaining a list in sorted order without having to sort the list after each insertion": "docs",
        "Conversion functions between RGB and other color systems": "code",
        "From fairest creatures we desire increase, That thereby beauty's rose might never die": "sonnets",
        "Actrius is a 1996 Catalan language Spanish drama-comedy film": "wiki",
    }
    hits = ds.search(list(queries), k=3)
    for (query, source), top in zip(queries.items(), hits, strict=True):
        assert top[0]["source"] == source, (query, top[0])
    docs_hit = hits[1][0]
    assert docs_hit["url"] == BISECT and docs_hit["title"].startswith("bisect")
    for hit in (h[0] for h in hits):
        assert "{{" not in hit["text"] and "<script" not in hit["text"] and "*** START OF" not in hit["text"]
    assert "\\begin{document}" not in " ".join(p["text"] for p in ds.passages(list(range(ds.num_passages))))
