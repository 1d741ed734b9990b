"""The package's layers: imports flow one way (cli -> pipelines, serve -> ops, evaluate -> store -> clean/encode -> ingest -> core),
no cycles.

Every import is counted, also those inside functions and under ``TYPE_CHECKING``: a lazy import
hides a cycle from Python, not from a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

#: Layer of each top-level folder, lowest first; a module may import its own layer and those below.
LAYERS = {"massiveds.core": 0, "massiveds.ingest": 1, "massiveds.clean": 2, "massiveds.encode": 2, "massiveds.store": 3,
          "massiveds.ops": 4, "massiveds.evaluate": 4, "pipelines": 5, "massiveds.serve": 5, "massiveds.cli": 6, "massiveds": 6}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def own_layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def imports() -> dict[str, set[str]]:
    """Every module of the project with the project modules it imports (anywhere in its body)."""
    files = sorted((REPO / "massiveds").rglob("*.py")) + sorted((REPO / "pipelines").rglob("*.py"))
    modules = {module_name(f): f for f in files}
    out: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            found |= {t for t in targets if t in modules and t != name}
        out[name] = found
    return out


def test_imports_flow_down_the_layers() -> None:
    upward = [f"{m} -> {d}" for m, deps in imports().items() for d in deps if own_layer(d) > own_layer(m)]
    assert upward == []


def test_no_import_cycles() -> None:
    graph = imports()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep):], dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_library_never_imports_the_build_layer() -> None:
    assert [m for m, deps in imports().items() if m.startswith("massiveds.") and not (m + ".").startswith("massiveds.cli.")
            and any(d.startswith("pipelines") for d in deps)] == []
