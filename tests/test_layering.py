"""The code's shape: imports point down only, no module imports itself back
through others, and no module grows past a size a reader can hold.

Layers, top to bottom (STYLE.md): app/main.py and the view → resolvers/ →
schema/ → app/services, app/blocks, app/events → app/models. workers/ sits
beside the API and reaches down into app/ only.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "schema", "resolvers", "workers")
MAX_LINES = 400
KNOWN_LONG: set[str] = set()


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Every module of ours that `path` imports, at any depth in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            # the longest of our modules that the name starts with
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
    return targets


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, name, known) for name, path in modules.items()}


def _cycle_from(graph: dict[str, set[str]], start: str) -> list[str] | None:
    stack = [(start, [start])]
    seen = set()
    while stack:
        node, path = stack.pop()
        for target in graph.get(node, ()):
            if target == start:
                return [*path, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*path, target]))
    return None


def _is_package_init_chain(cycle: list[str]) -> bool:
    # `import app.models.x` runs app/models/__init__.py; a package that
    # re-exports its own modules is not a circle between layers.
    return all(a.startswith(b + ".") or b.startswith(a + ".") for a, b in itertools.pairwise(cycle))


def test_no_module_imports_itself_back():
    graph = _graph()
    cycles = []
    for module in sorted(graph):
        cycle = _cycle_from(graph, module)
        if cycle and not _is_package_init_chain(cycle):
            cycles.append(" -> ".join(cycle))
    assert cycles == []


def _layer(module: str) -> str:
    if module in ("app.main", "app.graphql_view", "app.cli"):
        return "edge"
    return module.split(".")[0] if not module.startswith("app.") else "app"


def test_imports_point_down_only():
    forbidden = {
        # the domain never reaches up into the GraphQL layers or the edge
        "app": {"schema", "resolvers", "edge", "workers"},
        "schema": {"resolvers", "edge", "workers"},
        "resolvers": {"edge", "workers"},
        "workers": {"schema", "resolvers", "edge"},
    }
    wrong = []
    for module, targets in _graph().items():
        layer = _layer(module)
        if layer == "edge":
            continue
        for target in targets:
            if _layer(target) in forbidden[layer]:
                wrong.append(f"{module} -> {target}")
    assert sorted(wrong) == []


def test_no_module_is_past_the_size_limit():
    long = {
        str(path.relative_to(ROOT)): n
        for path in _modules().values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
        and str(path.relative_to(ROOT)) not in KNOWN_LONG
    }
    assert long == {}
