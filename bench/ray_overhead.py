"""Ray's overhead: the same build through Ray locally vs every unit in one process (``--engine local``).

    python bench/ray_overhead.py [--manifest manifests/examples/jargon.yaml]

Prints seconds per stage for both engines and their ratio (target: total ≤ 1.5×).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import EXAMPLE, build, machine
from rich.console import Console
from rich.table import Table


def main() -> None:
    """Run both builds and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=EXAMPLE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        local_wall, local = build(args.manifest, Path(tmp) / "local", "--engine", "local")
        ray_wall, ray = build(args.manifest, Path(tmp) / "ray", "--engine", "ray")
    t = Table(title=f"Ray vs one process: {args.manifest.name}, {local['domains']} ({machine()})")
    for col in ("stage", "one process (s)", "Ray (s)", "Ray / one process"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    stages = local["build"]["stage_seconds"]
    for stage, seconds in stages.items():
        r = ray["build"]["stage_seconds"].get(stage, 0.0)
        t.add_row(stage, f"{seconds:.1f}", f"{r:.1f}", f"{r / seconds:.2f}" if seconds > 0.05 else "-")
    text_local = sum(v for k, v in stages.items() if k not in ("embed",))
    text_ray = sum(v for k, v in ray["build"]["stage_seconds"].items() if k not in ("embed",))
    t.add_row("all but embed", f"{text_local:.1f}", f"{text_ray:.1f}", f"{text_ray / text_local:.2f}")
    t.add_row("whole command (wall)", f"{local_wall:.1f}", f"{ray_wall:.1f}", f"{ray_wall / local_wall:.2f}")
    Console().print(t)
    print(f"command: python bench/ray_overhead.py --manifest {args.manifest}")


if __name__ == "__main__":
    main()
