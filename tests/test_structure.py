"""The layout's habits, checked on the source (``ast``): no import cycles among rfprobe's
modules (imports inside functions count), no module importing another module's private
names, every op name the code compares against has a record in ``rfprobe.ops.OPS``, short
functions, and messages built where docs/design.md says."""
from __future__ import annotations

import ast
import pathlib
import re

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


# ----------------------------------------------------------------------------- where messages are built
DESIGN = PACKAGE.parent / "docs" / "design.md"


def _message_table() -> dict[tuple[str, ...], list[str]]:
    """docs/design.md's table of where each message is built: (classes of a row) -> the places
    its second column names (``validate.py``, ``routes/``, ``ops/__init__.py``)."""
    text = DESIGN.read_text()
    rows = text[text.index("| message | built in |"):].split("\n\n")[0].splitlines()[2:]
    table = {}
    for row in rows:
        what, where = row.strip("|").split(" | ")
        places = [p for p in re.findall(r"`([^`]+)`", where) if p.endswith((".py", "/"))]
        table[tuple(re.findall(r"`(\w+)`", what))] = places
    return table


def _in_place(module: str, place: str) -> bool:
    """Whether ``module`` (``rfprobe.ops.window``) is one that ``place`` (``routes/``,
    ``ops/__init__.py``, ``cost.py``) names."""
    if place.endswith("/"):
        return module.startswith("rfprobe." + place.replace("/", "."))
    return module == "rfprobe." + place.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def _is_message(node: ast.AST) -> bool:
    """An f-string, or a string of three words or more (or a ``+`` of such)."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _is_message(node.left) or _is_message(node.right)
    if isinstance(node, ast.JoinedStr):
        return True
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value.split()) >= 3


def _messages_built(modules: dict[str, ast.Module], classes: set[str]) -> set[tuple[str, str]]:
    """(class, module) for every message passed to an error class (any name ending in Error) or
    to one of ``classes``, outside render/ (a message put in a variable first is not seen)."""
    found = set()
    for mod, tree in modules.items():
        if mod.startswith("rfprobe.render"):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            if (name in classes or name.endswith("Error")) and any(
                    _is_message(a) for a in [*node.args, *(k.value for k in node.keywords)]):
                found.add((name, mod))
    return found


def _misplaced_messages(modules: dict[str, ast.Module], table) -> list[str]:
    """Messages built where the design's table does not say, and places the table names where
    none of its row's messages is built. render/ may build any message and is not scanned: a
    row that names a file there must name one that exists."""
    row_of = {c: row for row in table for c in row}
    found = _messages_built(modules, set(row_of))
    bad = [f"{mod} builds a {cls} message, where docs/design.md's table says none is"
           for cls, mod in sorted(found)
           if cls not in row_of or not any(_in_place(mod, p) for p in table[row_of[cls]])]
    for row, places in table.items():
        for place in places:
            if place.startswith("render/"):
                built = (PACKAGE / place).exists()
            else:
                built = any(cls in row and _in_place(mod, place) for cls, mod in found)
            if not built:
                bad.append(f"docs/design.md: {'/'.join(row)} in {place}, where none is built")
    return bad


def test_messages_are_built_where_the_design_says():
    table = _message_table()
    assert ("ArgumentError",) in table and any("UnknownOpError" in row for row in table)
    assert _misplaced_messages(MODULES, table) == []


def test_the_message_check_finds_a_misplaced_message_and_a_stale_row():
    table = _message_table()
    moved = dict(MODULES)
    moved["rfprobe.ops.window"] = ast.parse(
        'raise ArgumentError(f"kernel_size={k!r} must be an int")\n' + ast.unparse(MODULES["rfprobe.ops.window"]))
    assert "rfprobe.ops.window builds a ArgumentError message, where docs/design.md's table says none is" in \
        _misplaced_messages(moved, table)
    stale = {**table, ("SpecError",): ["spec.py", "cost.py"]}
    assert "docs/design.md: SpecError in cost.py, where none is built" in _misplaced_messages(MODULES, stale)


def test_nothing_outside_render_and_the_cli_prints_or_warns():
    found = [f"{mod}:{node.lineno}" for mod, tree in MODULES.items()
             if not mod.startswith(("rfprobe.render", "rfprobe.cli"))
             for node in ast.walk(tree) if isinstance(node, ast.Call)
             and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("print", "warn", "showwarning")]
    assert found == []
