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

from massiveds.core.report import table


def main() -> None:
    """Run both builds and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=EXAMPLE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        local_wall, local = build(args.manifest, Path(tmp) / "local", "--engine", "local")
        ray_wall, ray = build(args.manifest, Path(tmp) / "ray", "--engine", "ray")
    rows = []
    stages = local["build"]["stage_seconds"]
    for stage, seconds in stages.items():
        r = ray["build"]["stage_seconds"].get(stage, 0.0)
        rows.append((stage, seconds, r, f"{r / seconds:.2f}" if seconds > 0.05 else "-"))
    text_local = sum(v for k, v in stages.items() if k != "embed")
    text_ray = sum(v for k, v in ray["build"]["stage_seconds"].items() if k != "embed")
    rows.append(("all but embed", text_local, text_ray, f"{text_ray / text_local:.2f}"))
    rows.append(("whole command (wall)", local_wall, ray_wall, f"{ray_wall / local_wall:.2f}"))
    t = table(f"Ray vs one process: {args.manifest.name} ({machine()})", ["stage", "one process (s)", "Ray (s)", "Ray / one process"], rows)
    Console().print(t)
    print(f"command: python bench/ray_overhead.py --manifest {args.manifest}")


if __name__ == "__main__":
    main()
