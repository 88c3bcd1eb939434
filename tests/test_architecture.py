"""The layout's rules, read from the source: imports run one way, the UI stays in `kogpt/cli/`,
modules stay small. ARCHITECTURE.md describes the same rules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kogpt"
MAX_LINES = 300


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, tree: ast.AST) -> set[str]:
    """The kogpt modules `name` imports anywhere in its source (function-level and type-only included)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: imported(name, ast.parse(path.read_text(encoding="utf-8"))) for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_function_level_and_package_imports():
    assert "kogpt.api" in GRAPH["kogpt.cli.flags"]  # imported inside load_model()
    assert "kogpt.placement.memory" in GRAPH["kogpt.loading.load"] or "kogpt.placement.decide" in GRAPH["kogpt.loading.load"]


def test_kogpt_has_no_import_cycles():
    assert find_cycle(GRAPH) is None


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not n.startswith("kogpt.cli") and n != "kogpt.__main__"))
def test_only_the_cli_imports_the_cli(name):  # `python -m kogpt` (kogpt/__main__.py) is the CLI's own door
    assert not {module for module in GRAPH[name] if module.startswith("kogpt.cli")}


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith(("kogpt.loading", "kogpt.placement"))))
def test_loading_and_placement_never_import_the_api_or_the_ui(name):
    assert not {m for m in GRAPH[name] if m in ("kogpt.api",) or m.startswith(("kogpt.cli", "kogpt.evaluate"))}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name):
    lines = MODULES[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{MODULES[name]} has {lines} lines: split it by concern"


def test_the_package_exports_what_the_api_returns_and_raises():
    import kogpt
    from kogpt.errors import Interrupted
    from kogpt.transcript import Record

    assert (kogpt.Record, kogpt.Interrupted) == (Record, Interrupted)
    assert all(getattr(kogpt, name) is not None for name in kogpt.__all__)
