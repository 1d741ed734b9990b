"""``bench/text_stages.py`` at a tiny scale: every stage runs on real text, and a scaled copy is new data, not duplicates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, shared

pytestmark = pytest.mark.slow  # ten fresh stage processes: ~20 CPU s, 25-55 s on the shared 2-core machine


def test_text_stages_at_1x_and_2x_of_one_shared_file(tmp_path: Path) -> None:
    shared("jsonl", "qa_forum.jsonl.zst")  # skipped where ../shared is not checked out
    cmd = [sys.executable, str(REPO / "bench" / "text_stages.py"), "--sources", "qa_forum", "--scales", "1,2",
           "--small-partition-mb", "0", "--work", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    one, two = results["1"], results["2"]
    assert one["inputs"]["read"][0] == 523 and two["inputs"]["read"][0] == 2 * 523
    for r in (one, two):
        assert list(r["stages"]) == ["read", "extract", "exact", "minhash", "chunk"]
        for m in r["stages"].values():
            assert m["cpu_s"] > 0 and 0 < m["rss_base_mib"] <= m["rss_peak_mib"]
    # the enciphered copy keeps its own duplicates and duplicates nothing of the original
    assert two["stages"]["extract"]["result"]["kept"] == 2 * one["stages"]["extract"]["result"]["kept"]
    assert two["stages"]["exact"]["result"]["duplicates"] == 2 * one["stages"]["exact"]["result"]["duplicates"]
    assert two["removed"] == 2 * one["removed"]
    assert two["stages"]["chunk"]["result"]["passages"] == 2 * one["stages"]["chunk"]["result"]["passages"]
    assert "CPU/doc 2x/1x" in proc.stdout and "datatrove: not run" in proc.stdout
