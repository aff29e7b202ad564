"""Modules import downward only: no import cycles between edgeseg's modules, nor between its layers (a
subpackage counts as one layer), deferred imports included."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgeseg"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of edgeseg that ``name`` imports anywhere (functions too), except under TYPE_CHECKING and
    except a package importing its own submodules (a registry, e.g. ``sinks`` listing its sink modules)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if "TYPE_CHECKING" in ast.unparse(node.test):
                for child in node.orelse:
                    self.visit(child)
            else:
                self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(a.name for a in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)

    Visitor().visit(ast.parse(path.read_text(encoding="utf-8")))
    out = set()
    for target in found:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if not target or target == name:
            continue
        if path.name == "__init__.py" and target.startswith(name + "."):
            continue  # the registry exception
        out.add(target)
    return out


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _layer(module: str) -> str:
    return ".".join(module.split(".")[:2])  # edgeseg.sources.live -> edgeseg.sources


def test_no_module_imports_back_up_the_layers() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert "edgeseg.cli" in graph["edgeseg.launch"]  # the walk sees imports at all
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_no_layer_imports_back_up_the_layers() -> None:
    modules = _modules()
    layers: dict[str, set[str]] = {}
    for name, path in modules.items():
        if name == "edgeseg":
            continue  # the package's front door re-exports from below
        targets = {_layer(t) for t in _imports(name, path, modules)} - {_layer(name), "edgeseg"}
        layers.setdefault(_layer(name), set()).update(targets)
    for targets in list(layers.values()):
        for target in targets:
            layers.setdefault(target, set())
    assert "edgeseg.mqtt" in layers["edgeseg.sinks"]
    cycle = _cycle(layers)
    assert cycle is None, " -> ".join(cycle or [])
