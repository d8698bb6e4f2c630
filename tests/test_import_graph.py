"""The project's floors, checked from the source: web → agent → desktop → deskpilot, nothing imports upward,
and no two modules import each other, directly or round a longer cycle.

Every module under the four packages is parsed (never imported). Every import that runs counts, module level
or inside a function: a lazy import that dodges a cycle at run time is still one. Imports under
``if TYPE_CHECKING:`` never run: they count for the floors (a type may not come from a higher floor) but not
for cycles (a protocol may name the types of the modules that implement it).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# lowest first: each may import only its own floor or below
FLOORS = ("deskpilot", "desktop", "agent", "web", "evaluation")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for floor in FLOORS for p in sorted((ROOT / floor).rglob("*.py"))}


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module ``name`` refers to (``a.b.C`` → ``a.b``), or None outside the project."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


@functools.cache
def parsed(path: Path) -> ast.Module:
    """Each file parsed once per run (the trees are only read); the checks below walk them several times."""
    return ast.parse(path.read_text(), str(path))


def type_only_nodes(tree: ast.Module) -> set[ast.AST]:
    """Every node under an ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``) block."""
    found: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for child in node.body:
                found.update(ast.walk(child))
    return found


def imports_of(module: str, path: Path, modules: dict[str, Path], *, type_only: bool = True) -> set[str]:
    """The project modules ``module`` imports; without ``type_only``, only the imports that run."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    tree = parsed(path)
    skip = set() if type_only else type_only_nodes(tree)
    for node in ast.walk(tree):
        if node in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import mod`` imports the submodule; ``from mod import name`` the module itself.
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for name in names:
            target = resolve(name, modules)
            if target is not None and target != module:
                found.add(target)
    return found


def top_level_imports(path: Path) -> set[str]:
    """First name of every absolute import in the file (``fastapi`` for ``from fastapi.x import y``)."""
    found: set[str] = set()
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for dst in graph[todo.pop()] - seen:
            seen.add(dst)
            todo.append(dst)
    return seen


def import_graph(*, type_only: bool = True) -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules, type_only=type_only) for name, path in modules.items()}


def floor_of(module: str) -> int:
    return FLOORS.index(module.split(".")[0])


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{src} → {dst}" for src, dsts in graph.items() for dst in dsts if floor_of(dst) > floor_of(src))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_every_floor_is_parsed() -> None:
    graph = import_graph()
    assert {m.split(".")[0] for m in graph} == set(FLOORS)
    assert "web.runner" in graph and "agent.loop" in graph["web.session_run"]


def test_no_module_imports_a_higher_floor() -> None:
    assert upward_imports(import_graph()) == []


def test_no_import_cycles() -> None:
    assert cycles(import_graph(type_only=False)) == []


def test_the_session_runtime_knows_no_http() -> None:
    """``deskpilot run`` and an evaluation harness drive the runner without the web app."""
    modules = project_modules()
    runtime = reachable(import_graph(type_only=False), "web.runner")
    assert "web.session_run" in runtime
    assert not {m for m in runtime if m.startswith(("web.routes", "web.app", "web.auth", "web.models"))}
    http = {"fastapi", "starlette", "uvicorn"}
    uses = {m: sorted(top_level_imports(modules[m]) & http) for m in runtime}
    assert {m: found for m, found in uses.items() if found} == {}


# The checks themselves must be able to fail.
def test_a_function_level_import_counts(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("def f():\n    from web.runner import Runner\n")
    modules = {"desktop.m": tmp_path / "m.py", "web.runner": tmp_path / "r.py"}
    assert imports_of("desktop.m", tmp_path / "m.py", modules, type_only=False) == {"web.runner"}
    assert upward_imports({"desktop.m": {"web.runner"}, "web.runner": set()}) == ["desktop.m → web.runner"]


@pytest.mark.parametrize("graph, expected", [
    ({"a.x": {"a.y"}, "a.y": {"a.x"}}, [["a.x", "a.y"]]),
    ({"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}, "a.w": {"a.x"}}, [["a.x", "a.y", "a.z"]]),
    ({"a.x": {"a.y"}, "a.y": set()}, []),
])
def test_cycles_are_found(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(graph) == expected


def test_relative_imports_resolve(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("from . import b\nfrom .b import thing\n")
    modules = {"web.pkg.a": pkg / "a.py", "web.pkg.b": pkg / "b.py", "web.pkg": pkg / "__init__.py"}
    assert imports_of("web.pkg.a", pkg / "a.py", modules) == {"web.pkg.b", "web.pkg"}


def test_type_only_imports_count_for_floors_not_cycles(tmp_path: Path) -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from web.runner import R\n"
    (tmp_path / "m.py").write_text(source)
    modules = {"desktop.m": tmp_path / "m.py", "web.runner": tmp_path / "r.py"}
    assert imports_of("desktop.m", tmp_path / "m.py", modules) == {"web.runner"}
    assert imports_of("desktop.m", tmp_path / "m.py", modules, type_only=False) == set()
