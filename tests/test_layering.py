"""The package's layering: no module imports one from a layer above it, and no cycles.

Layers, bottom to top (docs/ARCHITECTURE.md, "Layout"): the core types, aggregation,
backends, verifiers, strategies, solve and the planner, evaluation, the package's face
(``ttscale/__init__.py``), the server, the CLI.
Imports inside functions (lazy ones) count too: they are dependencies all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ttscale

SRC = Path(ttscale.__file__).resolve().parent
LAYERS: tuple[tuple[str, ...], ...] = (
    ("types", "params", "errors", "budget", "registry", "models", "answers", "jsonl", "stats",
     "cancel", "files"),
    ("aggregation",),
    ("backends",),
    ("verifiers",),
    ("strategies",),
    ("solve", "planner"),
    ("evaluation",),
    ("__init__",),  # the package's face: ``ttscale.solve``, ``ttscale.evaluate``, ...
    ("server",),
    ("cli",),
)
# ``python -m ttscale`` and the old-path shim sit on top of everything.
ABOVE_ALL = ("__main__", "data")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(["ttscale", *parts])


def layer(module: str) -> int:
    """The layer of ``ttscale.X...``, by its first part below ``ttscale``.

    Example:
        >>> layer("ttscale.evaluation.runs.store"), layer("ttscale.types"), layer("ttscale")
        (6, 0, 7)
    """
    top = module.split(".")[1] if "." in module else "__init__"
    if top in ABOVE_ALL:
        return len(LAYERS)
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """The ttscale modules that ``path`` imports (``from ttscale import x`` names ``x``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ttscale")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("ttscale"):
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if (SRC / "/".join(sub.split(".")[1:])).exists()
                          or (SRC / ("/".join(sub.split(".")[1:]) + ".py")).exists()
                          else node.module)
    return found


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_from_a_layer_above(module: str) -> None:
    own = layer(module)
    above = sorted(m for m in imports(MODULES[module]) if layer(m) > own)
    assert not above, f"{module} (layer {own}) imports {above} from a layer above it"


def test_no_import_cycles_at_module_level() -> None:
    graph = {m: {i for i in imports(p, top_level_only=True) if i in MODULES and i != m}
             for m, p in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for nxt in sorted(graph[m]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt):], nxt] if nxt in path else [m, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_every_package_is_placed_in_a_layer() -> None:
    tops = {m.split(".")[1] for m in MODULES if "." in m}
    placed = {n for names in LAYERS for n in names} | set(ABOVE_ALL)
    assert tops <= placed, f"not in any layer: {sorted(tops - placed)}"
