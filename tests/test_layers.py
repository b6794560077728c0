"""The import graph of src/lrsched points one way (docs/design.md section 9, "Layout").

The library (the modules directly in ``src/lrsched/``) imports nothing under ``lrsched.recipes``;
``recipes/common`` imports no recipe; ``recipes/dino`` and ``recipes/finetune`` never import each
other; the pure modules import only the standard library and each other; and no import cycle exists.
Read from the source with ``ast``, so nothing is executed, and every ``import`` counts, including
those inside functions (a lazy import is still an arrow).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from helpers import REPO

SRC = REPO / "src"
PACKAGE = "lrsched"


def module_name(path: Path) -> str:
    """``src/lrsched/recipes/dino/main.py`` -> ``lrsched.recipes.dino.main`` (a package is its ``__init__``)."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute module an ``ImportFrom`` names (``from . import x`` resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    drop = node.level - 1 if is_package else node.level
    anchor = base[: len(base) - drop]
    return ".".join([*anchor, node.module] if node.module else anchor)


def imported(path: Path, modules: set[str]) -> set[str]:
    """The lrsched modules that the file at ``path`` imports (``from a import b`` counts ``a.b`` if it is one)."""
    name = module_name(path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(name, node, path.name == "__init__.py")
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    """Every module under src/lrsched -> the lrsched modules it imports."""
    paths = sorted((SRC / PACKAGE).rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported(p, modules) for p in paths}


GRAPH = graph()


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 3 and parts[1] == "recipes":
        return f"recipes.{parts[2]}"
    return "recipes" if parts[1:2] == ["recipes"] else "library"


def test_the_graph_was_read() -> None:
    assert "lrsched.torch_sched" in GRAPH and "lrsched.recipes.dino.main" in GRAPH
    assert "lrsched.schedules" in GRAPH["lrsched.torch_sched"]


def arrows(source: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """Each module of layer ``source`` -> the modules of the ``forbidden`` layers it imports (only those with some)."""
    found = {m: sorted(d for d in deps if _layer(d) in forbidden) for m, deps in GRAPH.items() if _layer(m) == source}
    return {m: deps for m, deps in found.items() if deps}


def test_the_library_imports_no_recipe() -> None:
    assert arrows("library", ("recipes", "recipes.common", "recipes.dino", "recipes.finetune")) == {}


def test_recipes_common_imports_no_recipe() -> None:
    assert arrows("recipes.common", ("recipes.dino", "recipes.finetune")) == {}


@pytest.mark.parametrize("recipe, other", [("dino", "finetune"), ("finetune", "dino")])
def test_the_recipes_never_import_each_other(recipe: str, other: str) -> None:
    assert arrows(f"recipes.{recipe}", (f"recipes.{other}",)) == {}


PURE = ("lrsched", "lrsched.errors", "lrsched.schedules", "lrsched.adoption", "lrsched.strategy", "lrsched.flags")
"""The pure modules (stdlib only, no torch): the math, how a checkpoint describes it and adopts it, the
policy, the flags; ``test_schedules.py`` also imports them and checks that torch was not loaded."""


def outside(module: str) -> set[str]:
    """The top-level names of the non-lrsched modules that ``module`` imports (lazy imports included)."""
    path = SRC / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found - {PACKAGE}


@pytest.mark.parametrize("module", PURE)
def test_the_pure_modules_import_only_the_standard_library_and_each_other(module: str) -> None:
    assert outside(module) - sys.stdlib_module_names == set()
    assert GRAPH[module] - set(PURE) == set()


def find_cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import cycle as ``[a, b, ..., a]``, or ``[]`` (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return []

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return []


def _without_package_inits(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph less the arrows from a module to its own parent packages (importing ``a.b`` runs ``a``)."""
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in edges.items()}


def test_there_is_no_import_cycle() -> None:
    assert find_cycle(_without_package_inits(GRAPH)) == []


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_the_resolver_reads_relative_imports() -> None:
    node = ast.parse("from . import x").body[0]
    assert isinstance(node, ast.ImportFrom)
    assert _absolute("lrsched.recipes.dino.main", node, is_package=False) == "lrsched.recipes.dino"
    assert _absolute("lrsched.recipes.dino", node, is_package=True) == "lrsched.recipes.dino"


def test_the_library_names_recipes_only_where_they_register() -> None:
    """``lrsched show`` sizes train.py's plan through a counter the recipe registers: the library names the
    recipe's module (``programs.COUNTER_MODULES``, as an entry point would) and imports it on first use."""
    from lrsched import programs

    for program, module in programs.COUNTER_MODULES.items():
        assert module in GRAPH and _layer(module) != "library" and "lrsched.programs" in GRAPH[module]
        assert callable(programs.example_counter(program))
