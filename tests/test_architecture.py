"""The shape of the library, read from its source (parsed, never imported): imports flow one way, modules
and functions stay small enough to read.

Every failure lists all offenders with ``file:line``, so one run shows the whole list to fix.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

PACKAGE = "motia_py"
SOURCE = Path(__file__).resolve().parents[1] / "framework" / PACKAGE
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


@dataclass(frozen=True, slots=True)
class Module:
    """One source file of the package."""

    name: str  # dotted, e.g. motia_py.backends.memory
    path: Path
    tree: ast.Module
    lines: int

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    @property
    def rel(self) -> str:
        return self.path.relative_to(SOURCE.parent).as_posix()


def modules() -> dict[str, Module]:
    """Every module of the package, by dotted name."""
    out = {}
    for path in sorted(SOURCE.rglob("*.py")):
        parts = path.relative_to(SOURCE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        text = path.read_text(encoding="utf-8")
        out[name] = Module(name, path, ast.parse(text, filename=str(path)), len(text.splitlines()))
    return out


def _base(module: Module, node: ast.ImportFrom) -> str:
    """The absolute module a ``from X import ...`` names (resolving leading dots)."""
    if node.level == 0:
        return node.module or ""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    anchor = package[: len(package) - (node.level - 1)]
    return ".".join([*anchor, node.module] if node.module else anchor)


def imports_of(module: Module, known: set[str]) -> dict[str, int]:
    """Package modules ``module`` imports (anywhere: top level, functions, branches), with the first line."""
    found: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        if target in known and target != module.name:
            found.setdefault(target, line)

    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in known else base, node.lineno)  # `from . import x`: x may be a module
    return found


def import_graph() -> nx.DiGraph:
    """Module -> imported module, each edge keeping the line of the import."""
    mods = modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(mods)
    for mod in mods.values():
        for target, line in imports_of(mod, set(mods)).items():
            graph.add_edge(mod.name, target, where=f"{mod.rel}:{line}")
    return graph


def import_cycles(graph: nx.DiGraph) -> list[str]:
    """One cycle per group of modules that import each other, written ``a (file:line) -> b ... -> a``."""
    out = []
    for component in nx.strongly_connected_components(graph):
        if len(component) < 2:
            continue
        cycle = nx.find_cycle(graph.subgraph(component), source=min(component))
        steps = [f"{a} ({graph.edges[a, b]['where']})" for a, b in cycle]
        out.append(" -> ".join([*steps, cycle[0][0]]) + f"   [{len(component)} modules in the circle]")
    return sorted(out)


def long_functions(limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``file:line Qualified.name (N lines)`` for every function or method longer than ``limit`` lines."""
    out = []

    def visit(node: ast.AST, prefix: str, rel: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.", rel)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                assert child.end_lineno is not None
                length = child.end_lineno - child.lineno + 1
                if length > limit:
                    out.append(f"{rel}:{child.lineno} {prefix}{child.name} ({length} lines)")
                visit(child, f"{prefix}{child.name}.", rel)  # functions defined inside count on their own too
            else:
                visit(child, prefix, rel)

    for mod in modules().values():
        visit(mod.tree, "", mod.rel)
    return out


# -- the checks ----------------------------------------------------------------------------------------


def test_the_package_has_no_import_cycle() -> None:
    cycles = import_cycles(import_graph())
    assert cycles == [], "import cycles inside motia_py:\n  " + "\n  ".join(cycles)


def test_no_module_is_over_500_lines() -> None:
    long = [f"{m.rel} ({m.lines} lines)" for m in modules().values() if m.lines > MAX_MODULE_LINES]
    assert long == [], f"modules over {MAX_MODULE_LINES} lines:\n  " + "\n  ".join(long)


def test_no_function_is_over_80_lines() -> None:
    long = long_functions()
    assert long == [], f"functions over {MAX_FUNCTION_LINES} lines:\n  " + "\n  ".join(long)


def calls_to(name: str) -> list[str]:
    """``file:line`` of every call of ``name(...)`` or ``x.name(...)`` in the package."""
    out = []
    for mod in modules().values():
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                if called == name:
                    out.append(f"{mod.rel}:{node.lineno}")
    return out


def test_every_run_record_is_built_by_one_module() -> None:
    # API runs and event runs are recorded by the same code, so traces and observers see them alike
    where = calls_to("RunRecord")
    assert where and len({w.split(":")[0] for w in where}) == 1, "RunRecord built in: " + ", ".join(where)


ROUTER_INTERNALS = ("context", "call", "notify", "observers", "steps", "backend.publish")


def _dotted(node: ast.expr) -> list[str]:
    """``self.router.backend.publish`` -> ["self", "router", "backend", "publish"] ([] for other shapes)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    return [node.id, *parts] if isinstance(node, ast.Name) else []


def router_internals_used(module: Module) -> list[str]:
    """``file:line router.X`` for each use of a router's insides (``router.call``, ``self.router.backend.publish``)."""
    found = set()
    for node in ast.walk(module.tree):
        if not isinstance(node, ast.Attribute):
            continue
        parts = _dotted(node)
        for i, part in enumerate(parts[:-1]):
            if part == "router" or part.endswith("_router"):
                rest = ".".join(parts[i + 1:])
                hit = next((x for x in ROUTER_INTERNALS if rest == x or rest.startswith(x + ".")), None)
                if hit is not None:
                    found.add((node.lineno, f"{part}.{hit}"))
    return [f"{module.rel}:{line} {what}" for line, what in sorted(found)]


def test_the_http_side_runs_api_steps_without_reaching_into_the_router() -> None:
    # an API run goes through the same executor and outcome code as an event run, not a copy of them
    used = router_internals_used(modules()["motia_py.http"])
    assert used == [], "motia_py/http.py uses router internals:\n  " + "\n  ".join(used)


# -- the checks check what they claim (on small sources, so a broken reader cannot pass vacuously) -------


def _module(name: str, source: str, package: bool = False) -> Module:
    path = SOURCE.parent.joinpath(*name.split("."))
    path = path / "__init__.py" if package else path.with_suffix(".py")
    return Module(name, path, ast.parse(source), len(source.splitlines()))


def test_the_reader_resolves_relative_absolute_and_function_level_imports() -> None:
    known = {"motia_py", "motia_py.errors", "motia_py.backends", "motia_py.backends.base", "motia_py.router",
             "motia_py.cli", "motia_py.config"}
    mod = _module("motia_py.backends.memory", """
from .base import Delivery
from ..errors import BackendError
from .. import router
import motia_py.config
import json
def later():
    from motia_py.cli import main
""")
    assert imports_of(mod, known) == {"motia_py.backends.base": 2, "motia_py.errors": 3, "motia_py.router": 4,
                                      "motia_py.config": 5, "motia_py.cli": 8}
    init = _module("motia_py.backends", "from .base import Backend\nfrom . import base\n", package=True)
    assert imports_of(init, known) == {"motia_py.backends.base": 1}
    top = _module("motia_py", "from .errors import MotiaError\nfrom . import __version__\n", package=True)
    assert imports_of(top, known) == {"motia_py.errors": 1}


def test_a_cycle_is_reported_with_where_each_import_is() -> None:
    graph = nx.DiGraph()
    graph.add_edge("motia_py.a", "motia_py.b", where="motia_py/a.py:3")
    graph.add_edge("motia_py.b", "motia_py.a", where="motia_py/b.py:9")
    graph.add_edge("motia_py.b", "motia_py.c", where="motia_py/b.py:10")
    [cycle] = import_cycles(graph)
    assert "motia_py/a.py:3" in cycle and "motia_py/b.py:9" in cycle and "motia_py.c" not in cycle


def test_router_internals_are_found_through_any_name_of_the_router() -> None:
    mod = _module("motia_py.http", """
def handle(self, router, req):
    ctx = router.context(spec)
    self.router.backend.publish([])
    self.router.emit("t", {})
    state = State(self.router.backend, "ns")
    executor.call(spec)
""")
    assert router_internals_used(mod) == ["motia_py/http.py:3 router.context",
                                          "motia_py/http.py:4 router.backend.publish"]
