"""RETRO-style leakage: longest common word runs between eval items and their neighbours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from massiveds.evaluate.leakage import bucket_of, item_leakage, longest_common_run
from tests.helpers import massiveds as cli

# Real text: lines of Sonnet 18 (public domain).
SONNET = ["Shall", "I", "compare", "thee", "to", "a", "summer's", "day?", "Thou", "art", "more", "lovely", "and", "more", "temperate"]


def test_longest_common_run() -> None:
    assert longest_common_run(SONNET, SONNET) == len(SONNET)
    other = ["I", "will", "compare", "thee", "to", "a", "summer's", "day", "at", "noon"]
    assert longest_common_run(SONNET, other) == 5  # "compare thee to a summer's"
    assert longest_common_run(SONNET, []) == 0
    assert longest_common_run(["a", "b", "a", "b", "c"], ["x", "a", "b", "c", "y"]) == 3


def test_item_leakage_picks_the_neighbour_with_the_longest_run() -> None:
    hits = [
        {"passage_id": 1, "doc_id": "a", "text": "nothing in common here"},
        {"passage_id": 2, "doc_id": "b", "text": "So: shall I compare thee to a summer's day? Said he."},
    ]
    row = item_leakage("q1", " ".join(SONNET), hits)
    # words are case-folded \w+ runs (as in decontamination): "summer's" is two, the item is 16
    assert row["longest_run"] == 9 and row["passage_id"] == 2 and row["runs"] == [0, 9] and row["words"] == 16
    assert row["overlap"] == pytest.approx(9 / 16) and row["bucket"] == bucket_of(9 / 16) == "≤ 75%"
    assert bucket_of(0.1) == "≤ 12.5%" and bucket_of(1.0) == "≤ 100%"


@pytest.mark.slow
def test_leakage_command_finds_an_item_copied_from_the_datastore(example_datastore: Path, tmp_path: Path) -> None:
    evals = tmp_path / "eval.jsonl"
    leaked = "Code so arcane, complex, or ill-structured that it cannot be modified or even comprehended by anyone but its author"
    evals.write_text(
        json.dumps({"id": "leaked", "question": "What is write-only code?", "answer": leaked}) + "\n"
        + json.dumps({"id": "clean", "question": "Which river flows through the city of Vienna?", "answer": "The Danube"}) + "\n"
    )
    report = json.loads(cli("leakage", str(example_datastore), "--eval", str(evals), "--id-field", "id", "-k", "5", "--json").stdout)
    rows = {r["item_id"]: r for r in report["per_item"]}
    assert rows["leaked"]["longest_run"] >= len(leaked.split()) and rows["leaked"]["doc_id"] == "dict-jargon:write-only code"
    assert rows["clean"]["longest_run"] <= 3
    assert report["items"] == 2 and sum(report["buckets"].values()) == 2
    proc = cli("leakage", str(example_datastore), "--eval", str(evals), "--fields", "nope", check=False)
    assert proc.returncode == 2 and "no item has text" in proc.stderr
