"""The layout's habits, checked on the source (``ast``): no import cycles among rfprobe's
modules (imports inside functions count), no module importing another module's private
names, and every op name the code compares against has a record in ``rfprobe.ops.OPS``."""
from __future__ import annotations

import ast
import pathlib

import rfprobe
from rfprobe.ops import OPS

PACKAGE = pathlib.Path(rfprobe.__file__).parent


def _modules() -> dict[str, ast.Module]:
    """Dotted module name -> parsed source, for every .py file of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = ast.parse(path.read_text(), str(path))
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()


def _walk(tree: ast.AST):
    """``ast.walk``, less what runs only for type checkers (``if TYPE_CHECKING:``)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def _imports(name: str, tree: ast.Module):
    """(imported module, imported names or None) for every import in ``tree``, anywhere in it,
    relative imports resolved; ``from pkg import sub`` counts as importing ``pkg.sub``."""
    base = name if _is_package(name) else name.rpartition(".")[0]
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                parts = parts[:len(parts) - node.level + 1]
                target = ".".join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            subs = [n for n in names if f"{target}.{n}" in MODULES]
            for n in subs:
                yield f"{target}.{n}", None
            rest = [n for n in names if n not in subs]
            if rest or not subs:
                yield target, rest


def _edges() -> dict[str, set[str]]:
    return {name: {m for m, _ in _imports(name, tree) if m in MODULES and m != name}
            for name, tree in MODULES.items()}


def test_the_scan_sees_the_package():
    assert {"rfprobe.ops", "rfprobe.ops.window", "rfprobe.trace.tracer", "rfprobe.rules"} <= set(MODULES)
    assert "rfprobe.ops.maps" in _edges()["rfprobe.ops.window"]


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as a list of modules, or None. ``rfprobe`` (the package's own
    ``__init__``, which re-exports the public names) is a root: an edge back to it is a cycle."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str):
        state[m] = 1
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycles_among_rfprobe_modules():
    cycle = _cycle(_edges())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    """The check itself: a made-up cycle through a function-level import is found."""
    edges = _edges()
    edges["rfprobe.ops.maps"] = edges["rfprobe.ops.maps"] | {"rfprobe.trace.tracer"}
    assert _cycle(edges) is not None


def _private_imports() -> list[str]:
    found = []
    for name, tree in MODULES.items():
        modules_bound = {}      # local name -> rfprobe module it is bound to
        for target, names in _imports(name, tree):
            if not target.startswith("rfprobe"):
                continue
            for n in names or ():
                if n.startswith("_") and not n.startswith("__"):
                    found.append(f"{name} imports {target}.{n}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for a in node.names:
                    modules_bound[a.asname or a.name] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in modules_bound and node.attr.startswith("_")
                    and not node.attr.startswith("__")
                    and any(f"{m}.{modules_bound[node.value.id]}" in MODULES or modules_bound[node.value.id] in MODULES
                            for m in MODULES)):
                found.append(f"{name} uses {node.value.id}.{node.attr}")
    return sorted(set(found))


def test_no_module_imports_another_modules_private_names():
    assert _private_imports() == []


# names compared against op names that are not ops: the graph's input node
NOT_OPS = {"input"}
_OP_HOLDERS = {"name", "op", "func_name"}


def _holds_op_name(node: ast.AST) -> bool:
    """``name``, ``node.op``, ``n.op``, ``call.name``, ``origin.op``..."""
    if isinstance(node, ast.Name):
        return node.id in _OP_HOLDERS
    if isinstance(node, ast.Attribute):
        return node.attr in ("op", "name") and isinstance(node.value, ast.Name) and \
            node.value.id in ("node", "n", "call", "origin", "self", "m")
    return False


def _strings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


# where ``name`` is an op's name: the tracer, the op families' rules and the routes (the
# spec language, the CLI and the meta answers use ``name`` for other things)
TRACER_AND_ROUTES = ("rfprobe.trace", "rfprobe.ops", "rfprobe.routes", "rfprobe.prepare", "rfprobe.verify")


def _op_literals() -> dict[str, str]:
    """Every string the tracer or a route compares an op name with (``name == "x"``,
    ``node.op in ("a", "b")``; a prefix in ``startswith`` is not an op), with where."""
    found = {}
    for mod, tree in MODULES.items():
        if not mod.startswith(TRACER_AND_ROUTES) or mod == "rfprobe.ops.meta":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and _holds_op_name(node.left):
                for comp in node.comparators:
                    for s in _strings(comp):
                        found.setdefault(s, f"{mod}:{node.lineno}")
    return found


def test_the_literal_scan_finds_the_tracers_op_names():
    lits = _op_literals()
    assert {"__get__", "linear", "narrow", "chunk"} <= set(lits), sorted(lits)


def test_every_op_name_the_code_mentions_has_a_record():
    missing = {s: where for s, where in _op_literals().items() if s not in OPS and s not in NOT_OPS}
    assert missing == {}, missing


def test_every_module_says_first_what_it_is_for():
    undocumented = [name for name, tree in MODULES.items() if len((ast.get_docstring(tree) or "").split()) < 5]
    assert undocumented == []


def _function_lengths():
    for name, tree in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = node.body[0]
                has_doc = isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant)
                start = first.end_lineno + 1 if has_doc and len(node.body) > 1 else first.lineno
                yield f"{name}.{node.name}", node.end_lineno - start + 1


def test_functions_are_mostly_short():
    """Bodies mostly under 50 lines (docstrings not counted), none over 60."""
    lengths = dict(_function_lengths())
    assert len(lengths) > 300
    long = {k: v for k, v in lengths.items() if v > 50}
    assert len(long) <= 0.02 * len(lengths), long
    assert max(lengths.values()) <= 60, max(lengths.items(), key=lambda kv: kv[1])
