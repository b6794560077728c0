"""The import graph of src/lrsched points one way, and the library names no program (docs/design.md section 9).

The library (the modules directly in ``src/lrsched/``) imports nothing under ``lrsched.recipes``,
neither by an import statement nor by name (``importlib.import_module``, ``__import__``, a module
path in a string), and names no program, its flags' history or its environment; ``recipes/common``
imports no recipe; ``recipes/dino`` and ``recipes/finetune`` never import each other; the pure
modules import only the standard library and each other; and no import cycle exists. Read from the
source with ``ast``, so nothing is executed, and every ``import`` counts, including those inside
functions (a lazy import is still an arrow). Every docs reference in the code resolves.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import PYTHON, REPO, child_env

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


PURE = (
    *("lrsched", "lrsched.errors", "lrsched.schedules", "lrsched.adoption", "lrsched.strategy"),
    *("lrsched.step_plan", "lrsched.flags", "lrsched.programs"),
)
"""The pure modules (stdlib only, no torch): the math, how a checkpoint describes it and adopts it, the
policy, the flags, how programs plug in; ``test_schedules.py`` also imports some and checks that torch
was not loaded."""


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


LIBRARY = sorted(p for p in (SRC / PACKAGE).glob("*.py"))
"""The library's modules: ``src/lrsched/*.py``, outside ``recipes/``."""
PROGRAM_WORDS = ("train.py", "phase5", "note 00", "WORLD_SIZE")
"""What the library must not name: the programs, the notes they came from, their environment."""


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.name)
def test_the_library_names_no_program(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert [word for word in PROGRAM_WORDS if word in text] == []


def _by_name(tree: ast.AST) -> list[str]:
    """Modules named in code rather than imported: ``import_module("x")``, ``__import__("x")``, and any
    string constant that is a module path of this package's recipes (``"lrsched.recipes.dino.x"``)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__") and node.args:
                first = node.args[0]
                found.append(first.value if isinstance(first, ast.Constant) else ast.unparse(first))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "recipes." in node.value:
            found.append(node.value)
    return sorted(set(found))


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.name)
def test_the_library_imports_no_module_by_name(path: Path) -> None:
    """A dynamic import is still an arrow: the library finds programs through entry points only."""
    assert _by_name(ast.parse(path.read_text(encoding="utf-8"))) == []


def test_the_dynamic_import_finder_finds_them() -> None:
    code = 'import importlib\nimportlib.import_module("lrsched.recipes.x")\n__import__(name)\nM = "lrsched.recipes.y"'
    assert _by_name(ast.parse(code)) == ["lrsched.recipes.x", "lrsched.recipes.y", "name"]


def test_finding_the_programs_loads_no_torch() -> None:
    """The entry points name light modules: ``lrsched show`` reads every program's flags without torch."""
    code = "import sys; from lrsched import cli, programs; cli.build_parser(); print('torch' in sys.modules)"
    done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=child_env(), timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "False"), done.stderr


# --- docs references in the code ----------------------------------------------------------------

DOC_REFERENCE = re.compile(r"docs/([\w-]+\.md)(?:#([\w-]+))?(?: section (\d+))?")


def slug(heading: str) -> str:
    """A markdown heading's anchor as GitHub makes it: ``## 2. Steps`` -> ``2-steps``."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _headings(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]


def _code_files() -> list[Path]:
    roots = [SRC, REPO / "bench", REPO / "examples"]
    return sorted({*(p for root in roots for p in root.rglob("*.py")), *REPO.glob("*.py")})


def test_every_docs_reference_in_the_code_resolves() -> None:
    missing = []
    for path in _code_files():
        for page, anchor, section in DOC_REFERENCE.findall(path.read_text(encoding="utf-8")):
            doc = REPO / "docs" / page
            if not doc.exists():
                missing.append(f"{path.name}: docs/{page}")
                continue
            headings = _headings(doc)
            if anchor and anchor not in {slug(h) for h in headings}:
                missing.append(f"{path.name}: docs/{page}#{anchor}")
            if section and not any(h.startswith(f"{section}. ") for h in headings):
                missing.append(f"{path.name}: docs/{page} section {section}")
    assert missing == []


def test_the_reference_checker_reads_sections_and_anchors() -> None:
    assert DOC_REFERENCE.findall("see docs/design.md section 4 and docs/cli.md#a-b") == [
        ("design.md", "", "4"),
        ("cli.md", "a-b", ""),
    ]
    assert slug("2. Steps") == "2-steps" and slug("The `lrsched` command") == "the-lrsched-command"


# ---------------------------------------------------------------- the two programs are parallel houses

PROGRAMS = ("dino", "finetune")
SAME_JOBS = ("main", "flags", "validate", "plan", "state", "model", "data", "loop", "checkpoint", "evaluation")
"""The modules both programs have, each doing the same job (docs/design.md section 9)."""


def modules_of(program: str) -> set[str]:
    return {p.stem for p in (SRC / PACKAGE / "recipes" / program).glob("*.py") if p.stem != "__init__"}


@pytest.mark.parametrize("program", PROGRAMS)
def test_both_programs_have_a_module_for_each_job(program: str) -> None:
    assert set(SAME_JOBS) <= modules_of(program), sorted(set(SAME_JOBS) - modules_of(program))


def names_used(path: Path) -> set[str]:
    """The names a module's code uses (variables, attributes, imported names), its strings and comments not."""
    tree = ast.parse(path.read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    return names | {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}


def test_checkpoints_go_through_the_common_helpers() -> None:
    """Each program's ``checkpoint`` module imports ``recipes.common.checkpoint``, and no module of a
    program writes a checkpoint itself (``save_checkpoint``) or counts a scheduler's steps (``ScheduledLR``)."""
    for program in PROGRAMS:
        assert "lrsched.recipes.common.checkpoint" in GRAPH[f"{PACKAGE}.recipes.{program}.checkpoint"]
        for path in (SRC / PACKAGE / "recipes" / program).glob("*.py"):
            assert not {"save_checkpoint", "ScheduledLR"} & names_used(path), path


def test_the_name_finder_reads_code_not_words() -> None:
    assert names_used(Path(__file__)) >= {"names_used", "walk", "ImportFrom"}
    assert "ScheduledLR" not in names_used(SRC / PACKAGE / "recipes" / "finetune" / "checkpoint.py")
