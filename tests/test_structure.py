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
    assert {"__get__", "__len__", "size"} <= set(lits), sorted(lits)


def test_every_op_name_the_code_mentions_has_a_record():
    missing = {s: where for s, where in _op_literals().items() if s not in OPS and s not in NOT_OPS}
    assert missing == {}, missing


# ----------------------------------------------------------------------------- name checks
# Code that looks inside an op's name, or compares a function's ``__name__``, decides per op
# outside the op's record, and a misspelled name there fails nothing: the literal scan above
# sees only whole names that ``name``/``call.name``/``node.op`` are compared with. Such a
# decision is a field of the record or a parameter of its rule or surrogate (bound with
# ``functools.partial`` where the record is built). What is looked for, in the modules where
# ``name`` is an op's name:
#   * a comparison (==, !=, in, not in) of a ``__name__`` (``func.__name__``,
#     ``getattr(f, "__name__", "")``), whatever it holds;
#   * a look at part of an op's name: a method called on it (``name.startswith("max")``,
#     ``call.name.endswith("_")``, ``name.removeprefix("fft_")``), an index or slice
#     (``name[-1]``), its characters (``reversed(call.name)``, ``for c in name``, ``"2d" in name``);
#   * in the records' home, rfprobe/ops, a rule or surrogate that asks which op it serves:
#     ``call.name`` or a ``__name__`` used other than shown in a message (compared, handed to a
#     function, kept in a variable: ``f = func.__name__`` then ``f in ("max", "min")``).
#     The function a record names serves the ops whose records name it; what differs between
#     them is bound where the record is built.
# What is left, each with why it is not an op's knowledge out of its record:
NAME_CHECKS_ALLOWED = {
    "rfprobe.trace.tracer.Tracer.__torch_function__":
        "torch's naming convention, not one op's knowledge: a name ending in '_' (not a dunder) is "
        "an in-place op, for every op, also one rfprobe has no record for",
    "rfprobe.trace.tracer.Tracer._reads_space": "the name of a tensor property (x.shape), not of an op",
    "rfprobe.trace.graph._owner": "the class names of the model's modules (containers), not op names",
    "rfprobe.routes.closed.suggest_layer": "module names (how deep: their dots), not op names",
    "rfprobe.routes.gradient.private_twin": "the names of a model's buffers (running_mean), not of ops",
}
_STR_METHODS = set(dir(str))       # not op.rule(call): ``op`` is a record there
_PARTS = {"reversed", "len", "iter", "list", "tuple", "set", "sorted", "enumerate"}


def _reads_dunder_name(node: ast.AST) -> bool:
    """``x.__name__`` or ``getattr(x, "__name__", ...)``."""
    if isinstance(node, ast.Attribute):
        return node.attr == "__name__"
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
            and len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and node.args[1].value == "__name__")


def _name_looks(tree: ast.AST) -> list[tuple[ast.AST, str]]:
    """(node, what) for every name check described above in ``tree`` (one function or module)."""
    def held(n):
        return _holds_op_name(n) or _reads_dunder_name(n)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_reads_dunder_name(o) for o in operands):
                found.append((node, "compares a __name__"))
            elif any(isinstance(op, (ast.In, ast.NotIn)) and held(right)
                     for op, right in zip(node.ops, node.comparators)):
                found.append((node, "looks for a part of an op's name (in)"))
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr in _STR_METHODS and held(f.value):
                found.append((node, f"calls {f.attr}() on an op's name"))
            elif isinstance(f, ast.Name) and f.id in _PARTS and any(held(a) for a in node.args):
                found.append((node, f"takes {f.id}() of an op's name"))
            elif (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "re"
                  and any(held(a) for a in node.args)):
                found.append((node, f"matches a pattern (re.{f.attr}) on an op's name"))
        elif isinstance(node, ast.Subscript) and held(node.value):
            found.append((node, "indexes an op's name"))
        elif isinstance(node, (ast.For, ast.comprehension)) and held(node.iter):
            found.append((node, "iterates over an op's name"))
    return found


def _shown(node: ast.AST, parent: dict) -> bool:
    """``node`` is only shown: a field of an f-string, or ``why.format(name=...)``."""
    up = parent.get(node)
    if isinstance(up, ast.FormattedValue):
        return True
    return (isinstance(up, ast.keyword) and isinstance(parent.get(up), ast.Call)
            and isinstance(parent[up].func, ast.Attribute) and parent[up].func.attr == "format")


def _rules_asking_their_op(tree: ast.AST) -> list[tuple[ast.AST, str]]:
    """(node, what) for each ``call.name`` or ``__name__`` that is used other than shown."""
    parent = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = [(node, "decides by call.name (the op it serves)") for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and node.attr == "name" and isinstance(node.value, ast.Name)
             and node.value.id == "call" and not _shown(node, parent)]
    return found + [(node, "decides by a __name__ (the op it serves)") for node in ast.walk(tree)
                    if _reads_dunder_name(node) and not _shown(node, parent)]


def _functions(tree: ast.AST, prefix: str):
    """(qualified name, node) of every function and method, nested ones too."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}.{node.name}"
            if not isinstance(node, ast.ClassDef):
                yield name, node
            yield from _functions(node, name)
        else:
            yield from _functions(node, prefix)


def _name_checks() -> dict[str, list[str]]:
    """Innermost function (or module) -> 'line: what', for every name check in the modules
    where ``name`` is an op's name."""
    found: dict[str, list[str]] = {}
    for mod, tree in MODULES.items():
        if not mod.startswith(TRACER_AND_ROUTES):
            continue
        owner = {}
        for qual, fn in sorted(_functions(tree, mod), key=lambda f: f[0].count(".")):
            for node in ast.walk(fn):
                owner[id(node)] = qual       # deeper functions come later: the innermost wins
        own = _rules_asking_their_op(tree) if mod.startswith("rfprobe.ops") else []
        for node, what in _name_looks(tree) + own:
            found.setdefault(owner.get(id(node), mod), []).append(f"{node.lineno}: {what}")
    return found


def test_no_code_decides_by_looking_inside_an_op_name():
    checks = {where: lines for where, lines in _name_checks().items() if where not in NAME_CHECKS_ALLOWED}
    assert checks == {}, "make each a record field or a parameter of the rule or surrogate:\n" + "\n".join(
        f"{where}: {', '.join(lines)}" for where, lines in sorted(checks.items()))


def test_each_allowed_name_check_is_still_there():
    """An entry of NAME_CHECKS_ALLOWED whose check went away goes too (it would allow the next one)."""
    assert set(NAME_CHECKS_ALLOWED) <= set(_name_checks())


def test_the_name_check_scan_finds_each_kind():
    src = ("def a(func):\n    return getattr(func, '__name__', '') in ('cummax', 'cumin')\n"
           "def b(call):\n    return call.name.startswith('max')\n"
           "def c(name):\n    return int(next(ch for ch in reversed(name) if ch.isdigit()))\n"
           "def d(name):\n    return name[-1] in '2n' or '2d' in name\n"
           "def e(f):\n    return f.__name__ != 'min'\n"
           "def ok(call, name, op):\n    return OPS.get(name), f'{call.name} over space', name == 'linear', op.rule(call)\n")
    lines = sorted(node.lineno for node, _ in _name_looks(ast.parse(src)))
    assert lines == [2, 4, 6, 8, 8, 10], lines
    src = ("def rule(call):\n    name = call.name\n    lengths = _read(call.name, call.args)\n"
           "    if call.name == 'layer_norm':\n        return Global(f'{call.name} over space')\n"
           "    return Global(why.format(name=call.name)), Global(call.name + ' over space')\n"
           "def surrogate(func, args, kwargs):\n    f = getattr(func, '__name__', '')\n"
           "    g = func.__name__\n    return f'{func.__name__} of {type(args[0]).__name__}', f in ('max', 'mni')\n")
    assert sorted(node.lineno for node, _ in _rules_asking_their_op(ast.parse(src))) == [2, 3, 4, 6, 8, 9]


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
    """Bodies mostly under 50 lines (docstrings not counted), none over 55."""
    lengths = dict(_function_lengths())
    assert len(lengths) > 300
    long = {k: v for k, v in lengths.items() if v > 50}
    assert len(long) <= 0.02 * len(lengths), long
    assert max(lengths.values()) <= 55, max(lengths.items(), key=lambda kv: kv[1])


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
