"""Shared by the benchmarks: run the CLI, read a catalog, read the shared text, measure a run, describe the machine.

Standard library only at import time: ``bench/_datatrove_minhash.py`` imports it under datatrove's own Python.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "manifests" / "examples" / "jargon.yaml"
SHARED_JSONL = REPO.parent / "shared" / "data" / "jsonl"


def build(manifest: Path, out: Path, *extra: str) -> tuple[float, dict[str, Any]]:
    """Build ``manifest`` with the CLI in a fresh process; returns (wall seconds, catalog)."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "massiveds.cli", "build", str(manifest), "--out", str(out), *extra],
                   check=True, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, json.loads((out / "datastore.json").read_text())


def machine() -> str:
    """Cores, memory and GPU of this machine, for the results table."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except ImportError:
        gpu = "no GPU"
    return f"{os.cpu_count()} cores, {mem:.0f} GiB RAM, {gpu}, {platform.python_implementation()} {platform.python_version()}"


def shared_rows(name: str) -> list[dict[str, Any]]:
    """Every row of ``../shared/data/jsonl/<name>.jsonl.zst`` (real text: see that folder's README)."""
    import zstandard

    with open(SHARED_JSONL / f"{name}.jsonl.zst", "rb") as f:
        raw = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True).read().decode("utf-8")
    return [json.loads(line) for line in raw.split("\n") if line.strip()]


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _peak_rss_mib() -> float:
    """Peak resident set of this process, MiB.

    Read from /proc (VmHWM), which starts afresh at exec; ru_maxrss does not: a child keeps the peak
    its parent had when it forked, so a driver holding data would inflate every stage it starts.
    """
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measured(fn: Callable[[], Any]) -> dict[str, Any]:
    """Call ``fn`` once: its result, wall and CPU seconds (user + sys), peak RSS before and after (MiB)."""
    base, cpu, wall = _peak_rss_mib(), _cpu_seconds(), time.perf_counter()
    result = fn()
    return {"result": result, "wall_s": time.perf_counter() - wall, "cpu_s": _cpu_seconds() - cpu,
            "rss_base_mib": base, "rss_peak_mib": _peak_rss_mib()}


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a command whose last stdout line is the JSON of ``measured``, in a fresh process; return that dict."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages (the machine may be shared: timings need them)."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())
