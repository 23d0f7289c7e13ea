"""Custom rules a user can live with: registered for a block or undone, never replacing one of
rfprobe's own by accident, and named by verify when they make the routes disagree."""
from __future__ import annotations

import ast
import pathlib
import re

import pytest
import torch

import rfprobe
from rfprobe.ops import OPS, user_rules
from tests.models import UNKNOWN_OP, ConvThen, rfprobe_test_op


def _running():
    return ConvThen(lambda y: rfprobe_test_op(y, 3))


def _prefix(call):
    """The tests' own op (a running log-sum-exp) along the last axis: output j reads 0..j (by hand), the other axis its own index."""
    k = call.data[0]
    h, w = call.spatial_in(k)
    return [rfprobe.InputDep(k, (rfprobe.identity(h), rfprobe.Mapped(lambda j, bounded: range(j + 1), w)))]


def test_replacing_a_built_in_rule_needs_override_and_unregister_puts_it_back():
    net = rfprobe.build("conv3 conv3")
    with pytest.raises(rfprobe.ArgumentError, match="override=True"):
        rfprobe.register_rule("conv2d", "global")
    assert rfprobe.analyze(net).size == (5, 5)
    rfprobe.register_rule("conv2d", "pointwise", override=True)
    try:
        assert rfprobe.analyze(net, (1, 9, 9)).size == (1, 1)      # the user's (wrong) rule is used
        assert "conv2d" in user_rules()
    finally:
        rfprobe.unregister_rule("conv2d")
    assert rfprobe.analyze(net).size == (5, 5) and "conv2d" not in user_rules()
    with pytest.raises(rfprobe.ArgumentError, match="no rule was registered"):
        rfprobe.unregister_rule("conv2d")


def test_a_rule_for_one_block_only():
    with pytest.raises(rfprobe.UnknownOpError):
        rfprobe.analyze(_running(), (1, 10, 10))
    with rfprobe.registered_rule(UNKNOWN_OP, _prefix):
        r = rfprobe.verify(_running(), (1, 10, 10), unit=(4, 5))
        # unit (4, 5) reads conv outputs (4, 0..5): rows 4..6, columns 0..7
        assert r.ok and r.exact_clipped_box == ((4, 6), (0, 7)) == r.probe_box
    assert UNKNOWN_OP not in OPS
    with pytest.raises(rfprobe.UnknownOpError):
        rfprobe.analyze(_running(), (1, 10, 10))


def test_the_block_restores_what_was_there_even_after_an_error():
    before = OPS["relu"]
    with pytest.raises(RuntimeError):
        with rfprobe.registered_rule("relu", "global", override=True):
            raise RuntimeError("inside")
    assert OPS["relu"] is before


def test_a_users_global_rule_that_makes_the_routes_disagree_is_named():
    with rfprobe.registered_rule(UNKNOWN_OP, "global"):
        r = rfprobe.verify(_running(), (1, 10, 10), unit=(4, 5))
    assert not r.ok
    assert any(d.startswith(f"likely cause: the rule you registered for '{UNKNOWN_OP}'") for d in r.diagnoses), r.diagnoses


def test_a_correct_user_rule_is_not_blamed():
    with rfprobe.registered_rule(UNKNOWN_OP, _prefix):
        r = rfprobe.verify(_running(), (1, 10, 10), unit=(4, 5))
    assert r.ok and not any("likely cause" in d for d in r.diagnoses)


def test_the_unknown_op_message_points_to_the_rule_types():
    with pytest.raises(rfprobe.UnknownOpError) as e:
        rfprobe.analyze(_running(), (1, 10, 10))
    msg = str(e.value)
    for word in ("rfprobe.Call", "rfprobe.InputDep", "rfprobe.Mapped", "rfprobe.Global", "docs/rules.md"):
        assert word in msg, word


# ----------------------------------------------------------------------------- no hand edits
_ROOT = pathlib.Path(__file__).resolve().parent.parent
_MUTATORS = {"pop", "popitem", "update", "clear", "setdefault", "__setitem__", "__delitem__"}
_TABLES = {"OPS", "_BUILT_IN"}      # the table, and the records as shipped that it is restored from
# patches and monkeypatches: they restore the table, but around rfprobe's own bookkeeping
# (user_rules, override), and a test that uses one tests a table rfprobe would never hold
_PATCHERS = {"setitem", "delitem", "setattr", "delattr", "dict", "object", "patch"}


def _is_table(node: ast.AST) -> bool:
    """``OPS``, ``ops.OPS``, ``rfprobe.ops.OPS``, ``ops._BUILT_IN``, or the name of one as a
    string (``monkeypatch.setattr(ops, "OPS", ...)``, ``mock.patch("rfprobe.ops.OPS")``)."""
    if isinstance(node, ast.Name):
        return node.id in _TABLES
    if isinstance(node, ast.Attribute):
        return node.attr in _TABLES
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and \
        node.value.rpartition(".")[2] in _TABLES


def _hand_edits_of_ops(source: str) -> list[int]:
    """Lines that change ``OPS`` (or the shipped records) other than through rfprobe's own
    ``register_rule``, ``registered_rule``, ``unregister_rule`` and ``removed_records``:
    ``OPS[k] = ...``, ``del OPS[k]``, ``OPS.pop(k)``..., and patches of it
    (``monkeypatch.setitem(OPS, ...)``, ``mock.patch.dict(OPS, ...)``)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        targets = (node.targets if isinstance(node, (ast.Assign, ast.Delete))
                   else [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
        if any(isinstance(t, ast.Subscript) and _is_table(t.value) for t in targets):
            lines.append(node.lineno)
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if (name in _MUTATORS and isinstance(f, ast.Attribute) and _is_table(f.value)) or \
                (name in _PATCHERS and (isinstance(f, ast.Attribute) or name == "patch")    # not dict(OPS)
                 and any(_is_table(a) for a in node.args)):
            lines.append(node.lineno)
    return sorted(set(lines))


def test_no_test_or_document_edits_the_table_by_hand():
    sources = {str(p.relative_to(_ROOT)): p.read_text() for p in sorted((_ROOT / "tests").glob("*.py"))}
    for doc in sorted((_ROOT / "docs").glob("*.md")):
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)):
            sources[f"{doc.relative_to(_ROOT)}, python block {i + 1}"] = block
    assert len(sources) > 30
    found = {name: lines for name, src in sources.items() if (lines := _hand_edits_of_ops(src))}
    assert found == {}


def test_the_scan_finds_a_hand_edit():
    src = ('OPS["x"] = op\ndel OPS["x"]\nOPS.pop("y", None)\nOPS.get("z")\n'
           'with mock.patch.dict(OPS, {}):\n    pass\n'
           'monkeypatch.setitem(OPS, "x", op)\nmonkeypatch.setitem(ops._BUILT_IN, "x", op)\n'
           'ops.OPS["x"] = op\nmonkeypatch.setattr(ops, "OPS", {})\nmock.patch("rfprobe.ops.OPS", {})\n'
           'monkeypatch.setitem(sys.modules, "x", None)\nsorted(OPS)\ndict(OPS)\n')
    assert _hand_edits_of_ops(src) == [1, 2, 3, 5, 7, 8, 9, 10, 11]
