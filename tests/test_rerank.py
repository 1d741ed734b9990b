"""Cross-encoder rerank: the order is the model's over exactly the hits the other options allow, in every place search is.

The model is made here, offline: the packaged MiniLM's transformer with a fresh (seeded) one-output head, saved
as a sentence-transformers CrossEncoder. Its scores mean nothing; the tests check the mechanics against the
model's own scores of the same pairs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from massiveds.core.errors import MassiveDSError
from massiveds.encode.embed import resolve_model
from massiveds.evaluate.evalset import EvalFields, read_eval_set
from massiveds.evaluate.experiment import EvalPlan, evaluate, parse_sweep
from massiveds.store import cross_encoder as ce
from massiveds.store.datastore import Datastore
from massiveds.store.postprocess import rerank_hits
from tests.helpers import massiveds
from tests.serving import serving_in_thread
from tests.test_eval import entries

QUERIES = ["what is a kludge", "a program that nobody can maintain", "hacker humour about mainframes"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A cross-encoder folder: MiniLM's transformer and a seeded fresh head."""
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("cross-encoder") / "minilm-fresh-head"
    CrossEncoder(resolve_model("all-MiniLM-L6-v2"), num_labels=1, device="cpu").save(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def ds(example_datastore: Path) -> Datastore:
    return Datastore.open(example_datastore)


def own_scores(model: str, query: str, hits: list[dict[str, Any]]) -> np.ndarray:
    """The model's scores of (query, hit text), one pair at a time."""
    return np.array([ce.cross_encoder(model).scores([(query, h["text"])])[0] for h in hits])


@pytest.mark.parametrize("options", [{"mode": "dense"}, {"mode": "sparse"}, {"mode": "hybrid"},
                                     {"mode": "dense", "fraction": 0.5, "seed": 2}, {"mode": "hybrid", "domains": "wiki", "dedup": True}])
def test_the_order_is_the_models_over_exactly_the_hits_the_other_options_allow(ds: Datastore, model: str, options: dict[str, Any],
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    depth, k = 15, 5
    scored: list[tuple[str, str]] = []
    loaded = ce.cross_encoder(model)
    original = loaded.scores
    monkeypatch.setattr(loaded, "scores", lambda pairs: scored.extend(pairs) or original(pairs))
    reranked = ds.search(QUERIES, k=k, rerank=f"cross-encoder:{model}", rerank_depth=depth, **options)
    assert len({q for q, _ in scored}) == len(QUERIES)  # one call for the batch: every query's pairs together
    plain = ds.search(QUERIES, k=depth, **options)  # what the same options return without the cross-encoder
    moved = 0
    for query, hits, allowed in zip(QUERIES, reranked, plain, strict=True):
        assert sorted(t for q, t in scored if q == query) == sorted(h["text"] for h in allowed)  # nothing else was scored
        want = own_scores(model, query, allowed)
        order = np.argsort(-want, kind="stable")[:k]
        assert [h["passage_id"] for h in hits] == [allowed[i]["passage_id"] for i in order]
        np.testing.assert_allclose([h["rerank_score"] for h in hits], want[order], rtol=1e-4, atol=1e-5)
        assert [h["score"] for h in hits] == pytest.approx([allowed[i]["score"] for i in order], rel=1e-5)  # the retrieval score stays
        moved += [h["passage_id"] for h in hits] != [h["passage_id"] for h in allowed[:k]]
    assert moved  # the cross-encoder's order is not the retrieval's: the test can tell them apart


def test_batching_does_not_change_scores(ds: Datastore, model: str) -> None:
    hits = ds.search(QUERIES[0], k=40, mode="dense")
    pairs = [(QUERIES[0], h["text"]) for h in hits]
    together = ce.cross_encoder(model).scores(pairs)
    np.testing.assert_allclose(together, own_scores(model, QUERIES[0], hits), rtol=1e-4, atol=1e-5)
    assert len(set(np.round(together, 5))) > 30  # the fresh head separates them: an order to check


def test_rerank_hits_keeps_the_hits_past_the_depth_in_their_order() -> None:
    hits = [[{"passage_id": i, "text": f"t{i}", "score": 10.0 - i} for i in range(6)]]
    out = rerank_hits(["q"], hits, lambda pairs: np.array([float(t[1:]) for _, t in pairs]), 4)
    assert [h["passage_id"] for h in out[0]] == [3, 2, 1, 0, 4, 5] and "rerank_score" not in out[0][4]


def test_exact_then_cross_encoder_and_the_options_errors(ds: Datastore, model: str) -> None:
    both = ds.search(QUERIES[1], k=5, mode="dense", rerank=f"exact+cross-encoder:{model}", rerank_depth=10)
    exact = ds.search(QUERIES[1], k=10, mode="dense", rerank="exact")
    assert {h["passage_id"] for h in both} <= {h["passage_id"] for h in exact}
    assert [h["rerank_score"] for h in both] == sorted((h["rerank_score"] for h in both), reverse=True)
    for bad, message in (("cross-encoder:", "rerank must be one of"), ("fast", "rerank must be one of"),
                         ("exact+exact", "rerank must be one of")):
        with pytest.raises(MassiveDSError, match=message):
            ds.search("x", rerank=bad)
    with pytest.raises(MassiveDSError, match=r"rerank_depth must be an integer in \[1, 1000\]"):
        ds.search("x", rerank=f"cross-encoder:{model}", rerank_depth=0)


def test_a_missing_model_or_an_embedder_is_a_one_line_error(ds: Datastore, tmp_path: Path) -> None:
    with pytest.raises(MassiveDSError, match=r"cross-encoder '.*nowhere' cannot be loaded") as missing:
        ds.search("x", rerank=f"cross-encoder:{tmp_path / 'nowhere'}")
    with pytest.raises(MassiveDSError, match="holds a BertModel model, not a cross-encoder") as embedder:
        ds.search("x", rerank=f"cross-encoder:{resolve_model('all-MiniLM-L6-v2')}")
    assert "\n" not in str(missing.value) and "\n" not in str(embedder.value)


def test_serve_cli_and_api_agree(ds: Datastore, example_datastore: Path, model: str) -> None:
    options = {"rerank": f"cross-encoder:{model}", "rerank_depth": 12, "mode": "hybrid"}
    api = ds.search(QUERIES, k=4, **options)
    with serving_in_thread(example_datastore) as client:
        status, body = client.search({"query": QUERIES, "n_docs": 4, **options})
    assert status == 200, body
    assert [[h["passage_id"] for h in q] for q in body["results"]["hits"]] == [[h["passage_id"] for h in q] for q in api]
    np.testing.assert_allclose([h["rerank_score"] for q in body["results"]["hits"] for h in q],
                               [h["rerank_score"] for q in api for h in q], rtol=1e-5)
    out = massiveds("search", str(example_datastore), QUERIES[0], "-k", "4", "--mode", "hybrid", "--rerank", options["rerank"],
                    "--rerank-depth", "12", "--json").stdout
    assert [(h["passage_id"], round(h["rerank_score"], 4)) for h in json.loads(out)] == \
        [(h["passage_id"], round(h["rerank_score"], 4)) for h in api[0]]
    bad = massiveds("search", str(example_datastore), "x", "--rerank", "cross-encoder:/nowhere", check=False)
    assert bad.returncode == 2 and "cannot be loaded" in bad.stderr and "Traceback" not in bad.stderr


def test_eval_sweeps_the_cross_encoder_and_scores_its_order(ds: Datastore, model: str, tmp_path: Path) -> None:
    items = entries(ds, n=8)
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    fields = EvalFields(gold_doc="doc")
    key, values = parse_sweep(f"rerank=none,cross-encoder:{model}")
    plan = EvalPlan(ks=(1, 5), fractions=(0.5, 1.0), options={"mode": "dense", "rerank_depth": 10}, sweep=(key, values), bootstrap=20)
    report = evaluate([("example", ds)], [read_eval_set(str(path), fields)], plan, fields)
    reranked = ds.search([i["question"] for i in items], k=5, mode="dense", rerank=f"cross-encoder:{model}", rerank_depth=10)
    point = next(p for p in report.points if p.setting.startswith("rerank=cross") and p.fraction == 1.0)
    want = [next((r + 1 for r, h in enumerate(hits) if h["doc_id"] == i["doc"]), 0) for hits, i in zip(reranked, items, strict=True)]
    assert point.ranks["doc"] == [want]
