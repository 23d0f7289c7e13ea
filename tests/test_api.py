"""The calling convention (0.2.0): ``(model, input_shape=None, *, ...)`` everywhere, typed, and a
second positional argument that was the unit before is refused with "did you mean unit=..."."""
from __future__ import annotations

import inspect

import pytest
import torch

import rfprobe
from rfprobe.testing import assert_receptive_field

SHAPED = {"analyze": rfprobe.analyze, "probe": rfprobe.probe, "verify": rfprobe.verify, "erf": rfprobe.erf,
          "cost": rfprobe.cost, "assert_receptive_field": assert_receptive_field}


def _public_functions():
    for name in rfprobe.__all__:
        obj = getattr(rfprobe, name)
        if inspect.isfunction(obj):
            yield name, obj
    yield "assert_receptive_field", assert_receptive_field


def test_every_public_parameter_has_a_type_hint():
    missing = []
    for name, fn in _public_functions():
        sig = inspect.signature(inspect.unwrap(fn))
        missing += [f"{name}({p})" for p in sig.parameters.values() if p.annotation is inspect.Parameter.empty]
        if sig.return_annotation is inspect.Signature.empty and name != "register_rule":
            missing.append(f"{name} -> ?")
    assert missing == []


def test_the_hint_check_sees_a_missing_hint():
    def f(model, input_shape: tuple = None) -> None:
        pass
    assert [p for p in inspect.signature(f).parameters.values() if p.annotation is inspect.Parameter.empty]


@pytest.mark.parametrize("name", sorted(SHAPED))
def test_everything_after_input_shape_is_keyword_only(name):
    params = list(inspect.signature(inspect.unwrap(SHAPED[name])).parameters.values())
    assert [p.name for p in params[:2]] in (["model", "input_shape"], ["model_or_spec", "input_shape"])
    assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in params[2:]), params


def test_probe_many_takes_units_then_input_shape():
    params = list(inspect.signature(inspect.unwrap(rfprobe.probe_many)).parameters.values())
    assert [p.name for p in params[:3]] == ["model", "units", "input_shape"]
    assert all(p.kind is p.KEYWORD_ONLY for p in params[3:])


@pytest.mark.parametrize("call,unit", [
    (lambda: rfprobe.probe("conv3 relu conv3", (3, 4)), "(3, 4)"),
    (lambda: rfprobe.verify("conv3 relu conv3", (-1, -1)), "(-1, -1)"),
    (lambda: rfprobe.verify("conv3", 0), "0"),
])
def test_a_unit_given_where_input_shape_goes_is_named(call, unit):
    with pytest.raises(rfprobe.ArgumentError, match=rf"[Dd]id you mean unit={__import__('re').escape(unit)}"):
        call()


def test_a_real_input_shape_is_not_taken_for_a_unit():
    """(1, 9, 9) is a valid input shape: it is one, and the unit is by keyword (a 5x5 RF by hand:
    two 3x3 convs; unit (0, 0) reads rows and columns 0..4)."""
    e = rfprobe.probe("conv3 relu conv3", (1, 9, 9), unit=(0, 0))
    assert e.input_shape == (1, 9, 9) and e.box == ((0, 4), (0, 4))
    with pytest.raises(rfprobe.ArgumentError) as bad:
        rfprobe.probe("conv3 relu conv3", (1, 0, 9))
    assert "did you mean" not in str(bad.value).lower()


def test_a_tensor_where_input_shape_goes_points_to_inputs():
    x = torch.rand(4, 1, 8, 8)
    with pytest.raises(rfprobe.ArgumentError, match=r"tensor of shape \(4, 1, 8, 8\).*inputs="):
        rfprobe.erf("conv3", x)
    assert len(str(pytest.raises(rfprobe.ArgumentError, rfprobe.erf, "conv3", x).value)) < 300
    f = rfprobe.erf("conv3", inputs=x, n=4)
    assert f.map.shape == (8, 8) and f.n == 4


# ----------------------------------------------------------------------------- a misspelt keyword
def _results():
    """One result of each kind, whose ``plot`` is public too."""
    return {"Analysis": rfprobe.analyze("conv3"), "ProbeResult": rfprobe.probe("conv3"),
            "Report": rfprobe.verify("conv3"), "ERF": rfprobe.erf("conv3", n=1)}


def test_a_misspelt_keyword_is_named_as_the_called_functions():
    """``assert_receptive_field(net, rf=5)`` said "verify() got an unexpected keyword argument
    'rf'": the user never called verify. Every public function (and the fixture's copy, and each
    result's ``plot``) names itself."""
    calls = [(name, lambda fn=fn: fn("conv3", rf=5)) for name, fn in _public_functions()]
    calls.append(("assert_receptive_field", lambda: rfprobe.testing.RF().assert_receptive_field("conv3", rf=5)))
    calls += [("plot", lambda r=r: r.plot(rf=5)) for r in _results().values()]
    wrong = {}
    for name, call in calls:
        with pytest.raises(TypeError) as info:
            call()
        if not str(info.value).startswith(f"{name}() got an unexpected keyword argument 'rf'"):
            wrong[name] = str(info.value)
    assert wrong == {}


def test_assert_receptive_field_takes_every_keyword_of_verify():
    """Its keywords are written out (a ``**kw`` passed on made verify name the misspelling): they
    must stay verify's, with the same defaults."""
    mine = inspect.signature(assert_receptive_field).parameters
    for p in inspect.signature(rfprobe.verify).parameters.values():
        assert p.name in mine and mine[p.name].kind is p.kind and mine[p.name].default == p.default, p
    net = rfprobe.build("conv3/s2 conv3")
    assert_receptive_field(net, (1, 15, 15), unit=(1, 1), layer=net[0], output=None, device="cpu", size=3, stride=2)
