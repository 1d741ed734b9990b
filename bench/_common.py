"""Shared by the benchmarks: run the CLI, read a catalog, describe the machine."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "manifests" / "examples" / "jargon.yaml"


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
