"""The string options' ``Literal`` types (rfprobe/hints.py) and what runs agree: every word a
``Literal`` lists is accepted and means something, a word outside it is refused with an error
that names it, and every word the code produces or compares with is one the ``Literal`` lists."""
from __future__ import annotations

import ast
import pathlib
import typing

import pytest
import torch
import torch.nn as nn

import rfprobe
from rfprobe import ERF, Analysis, ProbeResult
from rfprobe.errors import ArgumentError
from rfprobe.hints import (LAYER_STATUSES, MODES, OP_KINDS, STATISTICS, STATUSES, LayerStatus, Mode, OpKind,
                           Statistic, Status)
from rfprobe.ops import OPS, maps
from rfprobe.results import LayerRow
from rfprobe.routes.closed import Closed
from rfprobe.routes.probe import probe_prepared
from tests.models import MeanGate

PACKAGE = pathlib.Path(rfprobe.__file__).parent


def test_the_tuples_are_the_literals_words():
    for words, hint in ((MODES, Mode), (STATISTICS, Statistic), (STATUSES, Status),
                        (LAYER_STATUSES, LayerStatus), (OP_KINDS, OpKind)):
        assert typing.get_origin(hint) is typing.Literal
        assert words == typing.get_args(hint) and len(set(words)) == len(words)
    assert set(STATUSES) < set(LAYER_STATUSES)


def test_the_public_signatures_and_fields_use_the_literals():
    assert typing.get_type_hints(rfprobe.probe)["mode"] == Mode
    assert typing.get_type_hints(probe_prepared)["mode"] == Mode
    assert typing.get_type_hints(rfprobe.erf)["statistic"] == Statistic
    assert typing.get_type_hints(ProbeResult)["mode"] == Mode
    assert typing.get_type_hints(ERF)["statistic"] == Statistic
    assert typing.get_type_hints(Analysis)["status"] == Status
    assert typing.get_type_hints(LayerRow)["status"] == LayerStatus
    assert typing.get_type_hints(Closed)["status"] == LayerStatus
    assert typing.get_type_hints(maps.Op)["kind"] == OpKind


# ----------------------------------------------------------------------------- mode
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_the_literal_lists_is_accepted(mode):
    # two 3x3 convs, no nonlinearity: a 5x5 RF by hand, whatever the weights
    e = rfprobe.probe("conv3 conv3", (1, 7, 7), mode=mode)
    assert e.mode == mode and e.size == (5, 5) and e.box == ((1, 5), (1, 5))


@pytest.mark.parametrize("word", ["structual", "Structural", "", "abs"])
def test_a_mode_outside_the_literal_is_refused_naming_it_and_the_words(word):
    with pytest.raises(ArgumentError) as e:
        rfprobe.probe("conv3", mode=word)
    assert f"mode={word!r}" in str(e.value)
    assert all(repr(m) in str(e.value) for m in MODES)


# ----------------------------------------------------------------------------- statistic
def _one_conv() -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(1, 1, 3, bias=False).double()


@pytest.mark.parametrize("statistic", STATISTICS)
def test_every_statistic_the_literal_lists_is_accepted(statistic):
    # one conv without bias: the centre unit's input gradient is the kernel itself, placed on
    # the unit's window, for any input; the map is its |w| or w**2, normalised
    conv = _one_conv()
    f = rfprobe.erf(conv, (1, 5, 5), n=1, unit=(1, 1), statistic=statistic)
    w = conv.weight.detach()[0, 0]
    want = torch.zeros(5, 5, dtype=torch.float64)
    want[1:4, 1:4] = w.abs() if statistic == "abs" else w * w
    assert f.statistic == statistic
    assert torch.allclose(torch.from_numpy(f.map), want / want.sum(), atol=1e-12)


@pytest.mark.parametrize("word", ["max", "ABS", "mean"])
def test_a_statistic_outside_the_literal_is_refused_naming_it_and_the_words(word):
    with pytest.raises(ArgumentError) as e:
        rfprobe.erf(_one_conv(), (1, 5, 5), n=1, statistic=word)
    assert f"statistic={word!r}" in str(e.value)
    assert all(repr(s) in str(e.value) for s in STATISTICS)


# ----------------------------------------------------------------------------- status
def _closed_statuses() -> set[str]:
    """Every status the closed form produces, read from the source: the ``status`` argument of
    each ``Closed(...)`` built anywhere in the package, and the field's default."""
    found = {Closed.__dataclass_fields__["status"].default}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Closed":
                args = node.args[1:2] + [k.value for k in node.keywords if k.arg == "status"]
                for a in args:
                    assert isinstance(a, ast.Constant), f"{path}:{node.lineno}: a status that is not a literal"
                    found.add(a.value)
    return found


def test_every_status_the_closed_form_produces_is_in_the_literal():
    assert _closed_statuses() == set(LAYER_STATUSES)


class _ReadsAConstant(nn.Module):
    """A conv plus a softmax over one channel (all ones, whatever the input): the softmax's row
    reads no input position."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 1, 3)

    def forward(self, x):
        return self.c(x) + x.softmax(1)[..., 1:-1, 1:-1]


def test_every_status_is_reached_and_an_analysis_never_carries_another():
    # ok: a conv; varies: an upsampling between convs (odd and even units read different
    # inputs); global: a gate by the map's mean
    got = {rfprobe.analyze("conv3 conv3").status, rfprobe.analyze("conv3 up2 conv3").status,
           rfprobe.analyze(MeanGate(), (1, 8, 8)).status}
    assert got == set(STATUSES)
    rows = {r.name: r.status for r in rfprobe.analyze(_ReadsAConstant(), (1, 8, 8)).layers}
    assert rows["softmax#0"] == "constant" and set(rows.values()) <= set(LAYER_STATUSES)
    # the one layer status an Analysis never carries: an output built from constants is refused
    with pytest.raises(ArgumentError, match="does not depend on the model input"):
        rfprobe.analyze(nn.Softmax(1), (1, 4, 4))


# ----------------------------------------------------------------------------- what the code compares
# option -> (its words, modules where a name of that option means something else: padding and
# interpolation modes in the op families and the spec)
_COMPARED = {"status": (LAYER_STATUSES, ()), "statistic": (STATISTICS, ()),
             "mode": (MODES, ("ops", "spec.py", "cost.py"))}


def _compared_words() -> dict[str, dict[str, str]]:
    """option -> {word: where} for every ``x.status == "word"``, ``mode in ("a", "b")``... in the
    package."""
    found: dict[str, dict[str, str]] = {k: {} for k in _COMPARED}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            left = node.left
            name = left.attr if isinstance(left, ast.Attribute) else getattr(left, "id", None)
            if name not in _COMPARED or rel.startswith(_COMPARED[name][1]):
                continue
            for comp in node.comparators:
                elts = comp.elts if isinstance(comp, (ast.Tuple, ast.List, ast.Set)) else [comp]
                for e in elts:
                    if isinstance(e, ast.Constant) and isinstance(e.value, str):
                        found[name].setdefault(e.value, f"{rel}:{node.lineno}")
    return found


def test_every_word_the_code_compares_an_option_with_is_in_its_literal():
    found = _compared_words()
    assert {"ok", "global", "varies", "constant"} <= set(found["status"])   # the scan sees them
    assert {"structural", "actual"} <= set(found["mode"]) and "abs" in found["statistic"]
    for option, (words, _) in _COMPARED.items():
        stray = {w: where for w, where in found[option].items() if w not in words}
        assert stray == {}, f"{option}: {stray}"


# ----------------------------------------------------------------------------- op kind
def test_every_record_has_a_kind_of_the_literal_and_every_kind_a_record():
    constants = {maps.VALUE, maps.LAYOUT, maps.INDEX, maps.WRITE, maps.REDUCTION, maps.QUERY}
    assert constants == set(OP_KINDS)
    assert {op.kind for op in OPS.values()} == set(OP_KINDS)
