"""Dependencies run one way (docs/design.md, section 2): ``routes -> results -> render``, with
the shared argument checks below the results and the defaults read off the model below the routes.

Checked on the source with ``ast`` and followed transitively: a module reaches every module its
imports reach, at any depth, and an import inside a function counts (it runs sooner or later);
only what runs for type checkers (``if TYPE_CHECKING:``) is left out. Importing ``rfprobe.a.b``
runs ``rfprobe/a/__init__.py`` first, so that package counts as reached too. The package's own
``rfprobe/__init__.py`` is reached only by a module that imports a name from it: it holds the
public names, so reaching it reaches everything.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import rfprobe

PACKAGE = Path(rfprobe.__file__).parent
ROOT = "rfprobe"

# the lists of docs/design.md, section 2: each module (a package: each of its modules) -> what it may not reach
ROUTES_AND_ABOVE = {"rfprobe.routes", "rfprobe.prepare", "rfprobe.verify", "rfprobe.cost", "rfprobe.cli",
                    "rfprobe.testing"}
READS_A_MODEL = {"rfprobe.trace", "rfprobe.spec", "rfprobe.defaults"}
MAY_NOT_REACH = {
    # render draws results by reading their attributes (their classes only for type checkers)
    "rfprobe.render": ROUTES_AND_ABOVE | READS_A_MODEL | {"rfprobe.results", "rfprobe.ops"},
    # a result that needs a route later gets a callable from it
    "rfprobe.results": ROUTES_AND_ABOVE | READS_A_MODEL,
    # the shared argument checks trace and build no model: the results use two of them
    "rfprobe.validate": ROUTES_AND_ABOVE | READS_A_MODEL | {"rfprobe.results"},
    # what is read off the model for the arguments left out: the routes and prepare call it
    "rfprobe.defaults": ROUTES_AND_ABOVE | {"rfprobe.results"},
}


def _module_names() -> set[str]:
    """Every module of the package by its dotted name (a package by its own)."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.add(".".join(parts))
    return names


MODULES = _module_names()


def _path(module: str) -> Path:
    base = PACKAGE.parent / module.replace(".", "/")
    return base / "__init__.py" if (base / "__init__.py").exists() else base.with_suffix(".py")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(source: str, package: str) -> list[tuple[str, list[str] | None]]:
    """(absolute module, names imported from it or None) of every import in ``source`` (a
    module of ``package``), at any depth, less what runs under ``if TYPE_CHECKING:``."""
    found: list[tuple[str, list[str] | None]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((a.name, None) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = package.split(".")
                mod = ".".join(base[:len(base) - (node.level - 1)] + ([node.module] if node.module else []))
            found.append((mod, [a.name for a in node.names]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def _direct(source: str, package: str, modules: set[str]) -> set[str]:
    """The package's modules that running ``source`` imports: each imported module and the
    packages above it, but the root only where a name is taken from the root itself
    (``import rfprobe``, ``from rfprobe import probe``; not ``from rfprobe import render``)."""
    out = set()
    for mod, names in _imports(source, package):
        parts = mod.split(".")
        out.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
        subs = {f"{mod}.{n}" for n in names or ()} & modules
        out |= subs
        if mod == ROOT and (names is None or len(subs) < len(names)):
            out.add(ROOT)
    return out & modules


def _graph(modules: set[str], source_of) -> dict[str, set[str]]:
    graph = {}
    for m in modules:
        package = m if _path(m).name == "__init__.py" else m.rpartition(".")[0]
        graph[m] = _direct(source_of(m), package, modules) - {m}
    return graph


def _chain(graph: dict[str, set[str]], start: str, forbidden: set[str]) -> list[str] | None:
    """The shortest import chain from ``start`` to a module in (or under) ``forbidden``, or None."""
    came_from = {start: None}
    todo = [start]
    while todo:
        step = []
        for m in todo:
            for n in sorted(graph.get(m, ())):
                if n in came_from:
                    continue
                came_from[n] = m
                if any(n == f or n.startswith(f + ".") for f in forbidden):
                    chain = [n]
                    while came_from[chain[-1]] is not None:
                        chain.append(came_from[chain[-1]])
                    return chain[::-1]
                step.append(n)
        todo = step
    return None


def _offences(graph: dict[str, set[str]], rules: dict[str, set[str]]) -> list[str]:
    out = []
    for owner, forbidden in rules.items():
        for m in sorted(m for m in graph if m == owner or m.startswith(owner + ".")):
            chains = (_chain(graph, m, {f}) for f in sorted(forbidden))
            out.extend(" -> ".join(chain) for chain in chains if chain)
    return out


GRAPH = _graph(MODULES, lambda m: _path(m).read_text())


def test_every_module_the_rules_name_exists():
    """A rule about a module that is gone checks nothing: every name in the lists is a module."""
    named = set(MAY_NOT_REACH) | set().union(*MAY_NOT_REACH.values())
    assert sorted(named - MODULES) == []


def test_dependencies_run_one_way():
    bad = _offences(GRAPH, MAY_NOT_REACH)
    assert not bad, "a module reaches one it may not (docs/design.md, section 2):\n" + "\n".join(bad)


# ----------------------------------------------------------------------------- the checker itself
def test_the_import_scan_sees_every_form():
    # relative, absolute, nested in a function, a submodule imported by name, the packages above
    # a module; TYPE_CHECKING skipped
    src = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..results import ERF\n"
           "from .. import spec\nimport rfprobe.trace.graph\nfrom .text import joined\n"
           "def f():\n    from ..routes.probe import probe\n")
    found = _direct(src, "rfprobe.render", MODULES)
    assert found == {"rfprobe.spec", "rfprobe.trace", "rfprobe.trace.graph", "rfprobe.render", "rfprobe.render.text",
                     "rfprobe.routes", "rfprobe.routes.probe"}


def test_a_name_from_the_package_itself_reaches_the_public_names():
    assert ROOT in _direct("def f():\n    from rfprobe import probe\n", "rfprobe", MODULES)
    assert ROOT in _direct("import rfprobe\n", "rfprobe", MODULES)
    assert _direct("from . import render\n", "rfprobe", MODULES) == {"rfprobe.render"}


def test_the_check_follows_imports_through_other_modules():
    """A made-up chain: a render module imports a helper inside a function, which imports the
    tracer at the top; and one that imports it only for type checkers, which is allowed."""
    sources = {"rfprobe.render.a": "def f():\n    from ..helper import g\n",
               "rfprobe.helper": "from .trace import tracer\n",
               "rfprobe.render.b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..helper import g\n",
               "rfprobe.trace": "", "rfprobe.trace.tracer": "", "rfprobe.render": ""}
    graph = {m: _direct(src, m if m in ("rfprobe.render", "rfprobe.trace") else m.rpartition(".")[0], set(sources))
             for m, src in sources.items()}
    assert _offences(graph, {"rfprobe.render": {"rfprobe.trace"}}) == [
        "rfprobe.render.a -> rfprobe.helper -> rfprobe.trace"]


def test_the_real_graph_is_seen():
    assert {"rfprobe.validate", "rfprobe.render.text", "rfprobe.render"} <= GRAPH["rfprobe.results"]
    assert "rfprobe.trace" in GRAPH["rfprobe.routes.probe"]


def test_the_results_are_the_public_objects():
    from rfprobe import results
    for name in ("Analysis", "ProbeResult", "Report", "Region", "ERF", "Cost", "Comparison"):
        assert getattr(rfprobe, name) is getattr(results, name)
    modules = {name: importlib.import_module(f"rfprobe.{name}") for name in ("routes.analyze", "routes.erf", "verify")}
    assert modules["routes.analyze"].Analysis is results.Analysis and modules["routes.erf"].ERF is results.ERF
    assert modules["verify"].Report is results.Report
