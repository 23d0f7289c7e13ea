"""One direction of dependency: routes -> results -> render.

The render package draws results by reading their attributes; it never imports them (outside
``if TYPE_CHECKING:``) nor the routes that build them. The results know no route: where a
result needs one later, the route hands it a callable. Checked on the source with ``ast``, so
an import hidden inside a function counts too.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import rfprobe

PACKAGE = Path(rfprobe.__file__).parent
RENDER_MAY_NOT = {"results", "analytic", "probe", "erf", "verify", "graph", "trace", "routes", "ops"}
RESULTS_MAY_NOT = {"analytic", "probe", "graph", "verify", "erf", "cost", "trace", "routes"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(source: str, package: str, skip_type_checking: bool) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``source`` (a module of ``package``), at any
    depth; ``from a import b`` gives both ``a`` and ``a.b`` (b may be a submodule)."""
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if skip_type_checking and isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append((node.lineno, mod))
            found.extend((node.lineno, f"{mod}.{a.name}") for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _forbidden(source: str, package: str, forbidden: set[str], skip_type_checking: bool) -> list[tuple[int, str]]:
    out = []
    for line, mod in _imports(source, package, skip_type_checking):
        parts = mod.split(".")
        if len(parts) >= 2 and parts[0] == "rfprobe" and parts[1] in forbidden:
            out.append((line, mod))
    return out


def _offences(path: Path, forbidden: set[str], skip_type_checking: bool) -> list[str]:
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    return [f"{path.relative_to(PACKAGE.parent)}:{line} imports {mod}"
            for line, mod in _forbidden(path.read_text(), package, forbidden, skip_type_checking)]


def test_the_import_scan_sees_every_form():
    # the checker itself: relative, absolute, nested in a function, and TYPE_CHECKING skipped
    src = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..results import ERF\n"
           "from .. import analytic\nimport rfprobe.graph\nfrom .text import joined\n"
           "def f():\n    from ..probe import probe\n")
    found = _forbidden(src, "rfprobe.render", RENDER_MAY_NOT, skip_type_checking=True)
    assert found == [(4, "rfprobe.analytic"), (5, "rfprobe.graph"), (8, "rfprobe.probe"),
                     (8, "rfprobe.probe.probe")]
    every = _forbidden(src, "rfprobe.render", RENDER_MAY_NOT, skip_type_checking=False)
    assert (3, "rfprobe.results") in every


def test_render_imports_no_result_and_no_route():
    files = sorted((PACKAGE / "render").glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "text.py", "html.py", "data.py", "plot.py", "messages.py"}
    bad = [o for f in files for o in _offences(f, RENDER_MAY_NOT, skip_type_checking=True)]
    assert not bad, "render must not depend on results or routes at run time:\n" + "\n".join(bad)


def test_results_import_no_route():
    bad = _offences(PACKAGE / "results.py", RESULTS_MAY_NOT, skip_type_checking=False)
    assert not bad, "results must not import a route (not even in a function):\n" + "\n".join(bad)


def test_the_results_are_the_public_objects():
    from rfprobe import results
    for name in ("Analysis", "ProbeResult", "Report", "Region", "ERF", "Cost", "Comparison"):
        assert getattr(rfprobe, name) is getattr(results, name)
    modules = {name: importlib.import_module(f"rfprobe.{name}") for name in ("routes.analyze", "routes.erf", "verify")}
    assert modules["routes.analyze"].Analysis is results.Analysis and modules["routes.erf"].ERF is results.ERF
    assert modules["verify"].Report is results.Report
