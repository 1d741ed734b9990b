"""Static embedders (model2vec / ``StaticEmbedding``): distilled offline, built into a datastore on Ray, searched, checked."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import massiveds
from massiveds.core.catalog import EmbedderRecord, read_catalog
from massiveds.core.errors import MassiveDSError
from massiveds.encode.embed import PROBE_DIMS, Embedder, declared_dimension, declared_kind, differences
from tests.helpers import EXAMPLE
from tests.helpers import massiveds as cli

# A sentence of the Jargon File entry "write-only code".
SENTENCE = "Code so arcane, complex, or ill-structured that it cannot be modified or even comprehended by anyone but its author"


def static_manifest(folder: Path, model: Path, extra: str = "") -> Path:
    """The shipped example with ``model`` as its embedder and the model's default batch size."""
    text = EXAMPLE.read_text().replace("model: all-MiniLM-L6-v2", f"model: {model}").replace("  batch_size: 64\n", "")
    text = text.replace("uri: data/", f"uri: {EXAMPLE.parent}/data/")
    path = folder / "static.yaml"
    path.write_text(text + extra)
    return path


@pytest.fixture(scope="module")
def static_datastore(tmp_path_factory: pytest.TempPathFactory, static_model: Path) -> Path:
    """The shipped example embedded by the static model, built on Ray through the same actor pool as a transformer."""
    folder = tmp_path_factory.mktemp("static")
    out = folder / "ds"
    cli("build", str(static_manifest(folder, static_model)), "--out", str(out))
    return out


def test_the_distilled_model_is_a_static_sentence_transformer(static_model: Path) -> None:
    assert declared_kind(str(static_model)) == "static" and declared_kind("all-MiniLM-L6-v2") == "transformer"
    emb = Embedder(str(static_model), device="cpu")
    assert (emb.kind, emb.dim, emb.max_length, emb.batch_size) == ("static", 256, 512, 1024)  # the source tokenizer's cap
    texts = ["The Jargon File is a glossary of hacker slang.", "Hamlet, Prince of Denmark"]
    assert emb.encode_passages(texts).shape == (2, 256)
    assert emb.static is not None and emb.model is None  # a local static model runs on NumPy, not sentence-transformers
    tokenizer = emb.static.tokenizer  # the count is the tokenizer's, without special tokens, cut at the cap
    assert emb.count_passage_tokens(texts) == sum(len(tokenizer.encode(t, add_special_tokens=False).ids) for t in texts) > 10
    assert emb.count_passage_tokens([" ".join(["word"] * 2000)]) == 512
    # the embed stage's one-pass path (vectors and token count from one tokenizing) gives sentence-transformers' own vectors
    from sentence_transformers import SentenceTransformer

    batch = [*texts, " ".join(["word"] * 2000), "", SENTENCE * 3]
    vectors, tokens = emb.encode_passages_counted(batch)
    reference = SentenceTransformer(str(static_model), device="cpu").encode(batch, normalize_embeddings=True)
    assert np.allclose(vectors, reference, atol=1e-6) and not vectors[3].any()  # an empty passage: zeros, as the model gives
    assert tokens == emb.count_passage_tokens(batch) == emb.count_passage_tokens(texts) + 512 + emb.count_passage_tokens([SENTENCE * 3])


def test_a_static_model_embeds_without_importing_torch(static_model: Path) -> None:
    """Each embedding worker and server process of a static datastore skips torch and sentence-transformers."""
    code = (f"import sys; from massiveds.encode.embed import Embedder; e = Embedder({str(static_model)!r}); "
            "v = e.encode_queries(['hacker slang']); "
            "print(v.shape, sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(1, 256) []"
    short = Embedder(str(static_model), device="cpu", max_length=16)
    assert short.max_length == 16 and short.count_passage_tokens([" ".join(["word"] * 2000)]) == 16
    assert short.info()["max_length"] == 16


def test_the_cached_static_model_is_distilled_again_when_what_it_is_made_from_changes(tmp_path: Path,
                                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache is keyed by the distillation code, its packages, ``dims`` and the source model's files, not by name alone."""
    from massiveds.encode import distill

    source = tmp_path / "minilm"
    source.mkdir()
    (source / "config.json").write_text("{}")
    (source / "model.safetensors").write_bytes(b"weights")
    code = tmp_path / "distill.py"
    code.write_bytes(Path(distill.__file__).read_bytes())
    monkeypatch.setattr(distill, "__file__", str(code))
    made: list[Path] = []

    def fake_distill(_source: str, out: Path, _dims: int) -> None:
        made.append(out)
        out.mkdir(parents=True)
        (out / "modules.json").write_text("[]")

    monkeypatch.setattr(distill, "distill_static", fake_distill)
    cache = tmp_path / "cache"
    first = distill.cached_static(str(source), cache)
    assert distill.cached_static(str(source), cache) == first and made == [first]  # reused while nothing changed
    assert distill.cached_static(str(source), cache, dims=128) not in made[:1]
    code.write_bytes(code.read_bytes() + b"# the distillation changed\n")
    after_code = distill.cached_static(str(source), cache)
    (source / "model.safetensors").write_bytes(b"other weights")
    after_model = distill.cached_static(str(source), cache)
    installed = distill._version
    monkeypatch.setattr(distill, "_version", lambda package: "99" if package == "model2vec" else installed(package))
    after_package = distill.cached_static(str(source), cache)
    assert len(set(made)) == len(made) == 5 and made[2:] == [after_code, after_model, after_package]
    assert all(p.name.startswith("static-minilm-") for p in made)


@pytest.mark.slow
def test_a_static_model_builds_and_searches_a_datastore(static_datastore: Path) -> None:
    catalog = read_catalog(static_datastore)
    e = catalog.embedder
    assert (e.kind, e.dim, e.max_length, e.normalize) == ("static", 256, 512, True)
    assert e.probe is not None and len(e.probe) == PROBE_DIMS
    assert catalog.num_passages > 1000 and catalog.recall is not None and catalog.recall.status == "measured"
    assert catalog.build.embed_tokens_per_s > 0
    hits = json.loads(cli("search", str(static_datastore), SENTENCE, "-k", "5", "--json").stdout)
    assert "dict-jargon:write-only code" in [h["doc_id"] for h in hits[:3]]
    assert massiveds.open(static_datastore).embedder.kind == "static"


@pytest.mark.slow
def test_search_refuses_a_query_embedder_that_is_not_the_datastores(static_datastore: Path, tmp_path: Path) -> None:
    ds = massiveds.open(static_datastore)
    with pytest.raises(MassiveDSError, match=r"not the one this datastore was built with \(model: .*kind: 'static' vs 'transformer'"):
        ds.use_embedder(Embedder("all-MiniLM-L6-v2", device="cpu"))
    # the same model name whose weights changed since the build: only the probe tells
    catalog = json.loads((static_datastore / "datastore.json").read_text())
    catalog["embedder"]["probe"] = [-x for x in catalog["embedder"]["probe"]]
    changed = tmp_path / "changed"
    shutil.copytree(static_datastore, changed)
    (changed / "datastore.json").write_text(json.dumps(catalog))
    proc = cli("search", str(changed), "hacker slang", check=False)
    assert proc.returncode == 2 and "probe: the model maps a fixed text elsewhere" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_embedders_differ_on_kind_dimension_and_probe() -> None:
    base = EmbedderRecord(model="m", kind="static", dim=4, normalize=True, probe=[0.5, 0.5, 0.1, 0.0])
    assert differences(base, base.model_copy(update={"probe": [0.5001, 0.4999, 0.1, 0.0]})) == []  # fp16 noise
    assert differences(base, base.model_copy(update={"probe": None})) == []  # a catalog from before probes
    diff = differences(base, base.model_copy(update={"kind": "transformer", "dim": 8}))
    assert diff == ["kind: 'static' vs 'transformer'", "dim: 4 vs 8"]
    assert "probe" in differences(base, base.model_copy(update={"probe": [0.0, 0.1, 0.5, 0.5]}))[0]


def test_distill_embedder_refuses_bad_requests_in_one_line(static_model: Path, tmp_path: Path) -> None:
    for args, message in [
        (["all-MiniLM-L6-v2", "--out", str(static_model)], "is not empty"),
        (["all-MiniLM-L6-v2", "--out", str(tmp_path / "wide"), "--dims", "999"], "is wider than 'all-MiniLM-L6-v2' (384 dimensions)"),
        ([str(tmp_path / "no-model"), "--out", str(tmp_path / "x")], "is not a local model folder"),
    ]:
        proc = cli("distill-embedder", *args, check=False)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "wide").exists() and not (tmp_path / "x").exists()


def test_a_single_short_document_builds_and_searches(tmp_path: Path) -> None:
    """The small end of the range: one passage; recall is skipped with its reason, not a failed build."""
    (tmp_path / "one.jsonl").write_text(json.dumps({"id": "jargon", "text": (
        "The Jargon File is a glossary and usage dictionary of slang used by computer programmers, first kept at Stanford "
        "and later at MIT.")}) + "\n")
    (tmp_path / "one.yaml").write_text("name: one\ndomain: wiki\nsources:\n  - uri: one.jsonl\n    format: jsonl\n    id_field: id\n")
    proc = cli("build", str(tmp_path / "one.yaml"), "--out", str(tmp_path / "ds"), "--engine", "local")
    assert "skipped: 1 passage(s): too few to measure recall" in proc.stderr
    recall = read_catalog(tmp_path / "ds").recall
    assert recall is not None and recall.status == "skipped"
    hits = massiveds.open(tmp_path / "ds").search("a dictionary of programmer slang", k=3)
    assert [h["doc_id"] for h in hits] == ["jargon"]


def test_plan_reads_a_local_models_dimension_from_its_files(static_model: Path, tmp_path: Path) -> None:
    assert declared_dimension(str(static_model)) == 256 and declared_dimension("all-MiniLM-L6-v2") == 384  # the packaged model's folder
    assert declared_dimension(str(tmp_path / "missing")) is None
    manifest = tmp_path / "static.yaml"
    manifest.write_text(f"name: s\ndomain: wiki\nsources:\n  - uri: x.jsonl\nembed: {{model: {static_model}}}\n")
    report = json.loads(cli("plan", str(manifest), "--vectors", "1000000", "--json").stdout)
    assert report["plans"][0]["plan"]["dim"] == 256
    manifest.write_text("name: s\ndomain: wiki\nsources:\n  - uri: x.jsonl\nembed: {model: some-org/unknown-model}\n")
    proc = cli("plan", str(manifest), "--vectors", "1000000", check=False)
    assert proc.returncode == 2 and "give it with --dim" in proc.stderr
