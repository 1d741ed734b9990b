"""``massiveds eval``: metrics by hand, fractions equal to physical subsamples, sweeps, comparison, JSON, plot, bad eval files."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from massiveds.core.errors import MassiveDSError
from massiveds.evaluate.evalset import EvalFields, read_eval_set
from massiveds.evaluate.experiment import EvalPlan, evaluate, parse_sweep, rank
from massiveds.evaluate.metrics import bootstrap_interval, normalize_answer, recall_at, reciprocal_rank_at
from massiveds.evaluate.report import EvalReport
from massiveds.store.datastore import Datastore
from massiveds.store.sampling import keep_mask
from tests.helpers import massiveds

FIELDS = EvalFields(query="question", answers="answers", gold_doc="doc", gold_passage="pid")


def test_answer_normalisation_follows_squad() -> None:
    assert normalize_answer("The  Café, (of) an Era!") == "cafe of era"
    assert normalize_answer("‘Hacker’s’ — ETHIC") == "hacker s ethic"


def test_recall_and_mrr_from_first_relevant_ranks() -> None:
    ranks = np.array([1, 3, 0, 10, 11])
    assert recall_at(ranks, 1).tolist() == [1, 0, 0, 0, 0]
    assert recall_at(ranks, 10).tolist() == [1, 1, 0, 1, 0]
    assert reciprocal_rank_at(ranks, 10).tolist() == pytest.approx([1, 1 / 3, 0, 0.1, 0])
    values = recall_at(ranks, 10)
    low, high = bootstrap_interval(values, 2000)
    assert low <= values.mean() <= high and (low, high) == bootstrap_interval(values, 2000)
    assert bootstrap_interval(np.ones(7), 100) == (1.0, 1.0)


def entries(ds: Datastore, n: int = 24, seed: int = 0) -> list[dict[str, Any]]:
    """Eval items made from the datastore's own entries: a sentence of a passage -> its title, document and passage."""
    rows = [r for s in ds.shards for r in s.passages.read_all().select(["doc_id", "title", "text", "passage_id"]).to_pylist()]
    out = []
    for i in np.random.default_rng(seed).permutation(len(rows)):
        r = rows[int(i)]
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", " ".join(r["text"].split())) if 8 <= len(s.split()) <= 40]
        if sentences and r["title"]:
            out.append({"question": sentences[0], "answers": [r["title"]], "doc": r["doc_id"], "pid": r["passage_id"]})
        if len(out) == n:
            break
    return out


@pytest.fixture(scope="module")
def ds(example_datastore: Path) -> Datastore:
    return Datastore.open(example_datastore)


@pytest.fixture(scope="module")
def eval_file(ds: Datastore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("eval") / "own.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in entries(ds)))
    return path


def by_hand(hits: list[dict[str, Any]], item: dict[str, Any]) -> dict[str, int]:
    """First relevant ranks computed from a plain search's hits, without the eval code."""
    def first(flags: list[bool]) -> int:
        return next((r + 1 for r, f in enumerate(flags) if f), 0)

    answer = normalize_answer(item["answers"][0])
    return {"answer": first([f" {answer} " in f" {normalize_answer(h['text'])} " for h in hits]),
            "doc": first([h["doc_id"] == item["doc"] for h in hits]), "passage": first([h["passage_id"] == item["pid"] for h in hits])}


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_metrics_match_a_search_scored_by_hand(ds: Datastore, eval_file: Path, mode: str) -> None:
    items = [json.loads(line) for line in eval_file.read_text().splitlines()]
    plan = EvalPlan(ks=(1, 5, 10, 20), options={"mode": mode}, bootstrap=50)
    report = evaluate([("example", ds)], [read_eval_set(str(eval_file), FIELDS)], plan, FIELDS)
    hits = ds.search([i["question"] for i in items], k=20, mode=mode)
    want = [by_hand(h, i) for h, i in zip(hits, items, strict=True)]
    (point,) = report.points
    for kind in ("answer", "doc", "passage"):
        assert point.ranks[kind] == [[w[kind] for w in want]]
        for k in plan.ks:
            assert point.metrics[f"{kind}@{k}"].mean == pytest.approx(np.mean([0 < w[kind] <= k for w in want]))
        assert point.metrics[f"{kind}_mrr@10"].mean == pytest.approx(np.mean([1 / w[kind] if 0 < w[kind] <= 10 else 0 for w in want]))
    assert point.tokens == [sum(s.tokens for s in ds.catalog.shards)] and point.passages == [ds.num_passages]
    assert point.first_hit_domains == {"wiki": pytest.approx(1.0)}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_hits_at_a_fraction_are_those_of_the_physical_subsample(ds: Datastore, eval_file: Path, example_datastore: Path,
                                                               tmp_path_factory: pytest.TempPathFactory, mode: str) -> None:
    half = tmp_path_factory.mktemp("sub") / f"half-{mode}"
    massiveds("subsample", str(example_datastore), "--fraction", "0.5", "--seed", "3", "--out", str(half))
    sub = Datastore.open(half)
    eval_set = read_eval_set(str(eval_file), FIELDS)
    plan = EvalPlan(ks=(1, 10, 50), fractions=(0.25, 0.5, 1.0), seeds=(3, 4), options={"mode": mode})
    (_, options), = plan.settings()
    lists = rank(ds, eval_set.items, ds.embedder.encode_queries([i.query for i in eval_set.items]), options, plan, mode, lambda n: None)
    physical = sub.search([i.query for i in eval_set.items], k=50, mode=mode)
    for q, hits in enumerate(physical):
        sampled = ds.passages(lists[q][1, 0])  # fraction 0.5, seed 3
        assert [(h["doc_id"], h["char_start"]) for h in sampled] == [(h["doc_id"], h["char_start"]) for h in hits]
        full = lists[q][2, 0]
        assert lists[q][2, 1] == full  # fraction 1 keeps everything whatever the seed
        quarter = lists[q][0, 0]
        assert keep_mask([h["doc_id"] for h in ds.passages(quarter)], 0.25, 3).all()
        common = [pid for pid in full if pid in set(quarter)]  # the full ranking restricted to the quarter's documents
        assert quarter[: len(common)] == common


def test_sweep_gives_one_curve_per_value_and_each_matches_its_search(ds: Datastore, eval_file: Path) -> None:
    key, values = parse_sweep("mode=dense,sparse")
    plan = EvalPlan(ks=(1, 10), fractions=(0.5, 1.0), seeds=(0, 1), sweep=(key, values), bootstrap=50)
    report = evaluate([("example", ds)], [read_eval_set(str(eval_file), FIELDS)], plan, FIELDS)
    assert [(p.setting, p.fraction) for p in report.points] == [("mode=dense", 0.5), ("mode=dense", 1.0), ("mode=sparse", 0.5),
                                                                ("mode=sparse", 1.0)]
    items = [json.loads(line) for line in eval_file.read_text().splitlines()]
    sparse = ds.search([i["question"] for i in items], k=10, mode="sparse")
    assert report.points[3].ranks["doc"][0] == [by_hand(h, i)["doc"] for h, i in zip(sparse, items, strict=True)]
    for p in report.points:
        assert len(p.metrics["doc@10"].per_seed) == 2 and len(p.tokens) == 2
    assert report.points[0].tokens[0] < report.points[1].tokens[0]
    assert parse_sweep("domains=wiki,wiki+books") == ("domains", (("wiki",), ("wiki", "books")))
    assert parse_sweep("nprobe=8,32") == ("nprobe", (8, 32)) and parse_sweep("dedup=true,false") == ("dedup", (True, False))
    for bad in ("k=1,2", "nprobe", "nprobe=8,x"):
        with pytest.raises(MassiveDSError, match="--sweep"):
            parse_sweep(bad)


def test_decontaminate_with_gold_drops_the_passage_holding_question_and_answer(ds: Datastore, tmp_path: Path) -> None:
    rows = ds.shards[0].passages.read_all().to_pylist()[:40]
    items = [{"question": " ".join(r["text"].split()[:20]), "answers": [r["text"].split()[20]], "pid": r["passage_id"]}
             for r in rows if len(r["text"].split()) > 40][:6]
    path = tmp_path / "leak.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    fields = EvalFields(gold_passage="pid")
    eval_set = read_eval_set(str(path), fields)
    plain = evaluate([("x", ds)], [eval_set], EvalPlan(ks=(1, 10), options={"mode": "dense"}, bootstrap=10), fields)
    clean = evaluate([("x", ds)], [eval_set], EvalPlan(ks=(1, 10), options={"mode": "dense"}, bootstrap=10,
                                                       decontaminate_with_gold=True), fields)
    assert plain.points[0].metrics["passage@10"].mean == 1.0
    assert clean.points[0].metrics["passage@10"].mean == 0.0


@pytest.mark.slow
def test_cli_compares_datastores_and_writes_json_and_plot(example_datastore: Path, eval_file: Path, tmp_path: Path) -> None:
    half = tmp_path / "half"
    massiveds("subsample", str(example_datastore), "--fraction", "0.5", "--seed", "1", "--out", str(half))
    out = massiveds("eval", str(example_datastore), str(half), "--eval", str(eval_file), "--eval", str(eval_file), "--gold-doc-field",
                    "doc", "--k", "1,10", "--fractions", "0.25,1", "--seeds", "0,1", "--mode", "dense", "--json",
                    str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png"), "--bootstrap", "100")
    assert "own-1: doc recall" in out.stderr and "own-2: answer recall" in out.stderr
    text = (tmp_path / "r.json").read_text()
    report = EvalReport.model_validate_json(text)
    assert report.model_dump(mode="json") == json.loads(text)
    assert [d.path for d in report.datastores] == [str(example_datastore), str(half)]
    assert len(report.points) == 2 * 2 * 2 and report.settings.options == {"mode": "dense"}
    assert report.datastores[0].catalog_sha256 != report.datastores[1].catalog_sha256
    assert report.datastores[1].passages < report.datastores[0].passages
    png = (tmp_path / "r.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR" and struct.unpack(">II", png[16:24]) == (750, 480)
    massiveds("eval", str(example_datastore), "--eval", str(eval_file), "--k", "10", "--plot", str(tmp_path / "r.html"),
              "--bootstrap", "10")
    page = (tmp_path / "r.html").read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page and "<table>" in page


def test_eval_sets_read_through_fsspec_with_compression(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "qa.jsonl.gz"
    lines = b'{"q": "what is a kludge", "a": "kludge", "d": ["jargon:kludge", 7]}\n\n{"q": "hack", "a": ["x", "y"], "d": "z"}\n'
    path.write_bytes(gzip.compress(lines))
    got = read_eval_set(f"file://{path}", EvalFields(query="q", answers="a", gold_doc="d"))
    assert got.name == "qa" and got.kinds == ("answer", "doc") and len(got.items) == 2
    assert got.items[0].answers == ("kludge",) and got.items[0].gold_docs == ("jargon:kludge", "7") and got.items[1].answers == ("x", "y")
    assert read_eval_set(str(path), EvalFields(query="q", answers=None, gold_doc="d")).kinds == ("doc",)
    with pytest.raises(MassiveDSError, match="evaluation file not found"):
        read_eval_set(str(tmp_path / "missing.jsonl"), EvalFields())
    with pytest.raises(MassiveDSError, match="no gold to evaluate against"):
        read_eval_set(str(path), EvalFields(query="q", answers=None))


@pytest.mark.parametrize(("lines", "message"), [
    ('{"question": "what is a kludge", "answers": ["kludge"]}\n{"answers": ["x"]}\n', "line 2: the query field 'question' is missing"),
    ('{"question": "   ", "answers": ["x"]}\n', "line 1: the query is empty"),
    ('{"question": "a", "answers": ["x"]}\nnot json\n', "line 2: not a JSON object"),
    ('{"question": "a", "answers": []}\n', "line 1: field 'answers' must be a non-empty string or list"),
    ('["question"]\n', "line 1: not a JSON object"),
])
def test_bad_eval_files_are_one_line_errors_naming_file_and_line(tmp_path: Path, lines: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(lines)
    with pytest.raises(MassiveDSError, match=re.escape(message)) as err:
        read_eval_set(str(path), EvalFields())
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_cli_bad_input_exits_2_with_one_line(example_datastore: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"q": "x"}\n')
    proc = massiveds("eval", str(example_datastore), "--eval", str(path), check=False)
    assert proc.returncode == 2 and "bad.jsonl, line 1: the query field 'question' is missing" in proc.stderr
    assert "Traceback" not in proc.stderr
    for args, message in ((["--fractions", "0,1"], "fraction must be in (0, 1]"), (["--sweep", "seed=1,2"], "--sweep cannot vary"),
                          (["--plot", "x.svg"], "name a file ending in .png or .html")):
        proc = massiveds("eval", str(example_datastore), "--eval", str(path), *args, check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
