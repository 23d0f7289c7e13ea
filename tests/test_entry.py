"""One way in: every entry point prepares its call with ``rfprobe.prepare.prepare`` (so a bad
layer, unit, channel or device is refused the same way by all of them), and the text that
quotes the user's model ("the model raised ...") is written in one function only.
"""
from __future__ import annotations

import ast
import importlib
import os

import pytest
import torch
import torch.nn as nn

import rfprobe
from rfprobe.errors import ArgumentError, ModelError, model_raised
from rfprobe.testing import assert_receptive_field
from tests.models import usable_device



RFPROBE_DIR = os.path.dirname(os.path.abspath(rfprobe.__file__))

# the one function that writes the phrase, and one note that is not an error: the graph's note
# that the model had to be traced with real values (render.fallback_note), which quotes the
# meta error as part of a longer sentence and lives with the other notes' wording
PHRASE = "the model raised"
HOME = ("errors.py", "model_raised")
NOT_AN_ERROR = {("render.py", "fallback_note")}


def _strings_with_phrase(path: str):
    """(function, line) of every string literal (f-string pieces included, docstrings left
    out) in ``path`` that contains PHRASE."""
    with open(path) as f:
        tree = ast.parse(f.read())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    found = []

    def visit(node, func):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            func = node.name
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                and PHRASE in node.value.lower():
            found.append((func, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child, func)
    visit(tree, None)
    return found


def test_the_model_raised_is_written_in_one_function():
    where = []
    for name in sorted(os.listdir(RFPROBE_DIR)):
        if name.endswith(".py"):
            for func, line in _strings_with_phrase(os.path.join(RFPROBE_DIR, name)):
                if (name, func) != HOME and (name, func) not in NOT_AN_ERROR:
                    where.append(f"{name}:{line} in {func}")
    assert not where, f"{PHRASE!r} written outside errors.model_raised: {where}"
    # and the check sees the phrase where it is
    assert _strings_with_phrase(os.path.join(RFPROBE_DIR, HOME[0]))


def test_the_model_raised_wording():
    e = RuntimeError("boom")
    assert model_raised(e, (3, 8, 8), done=["conv", "relu"]) == (
        "the model raised RuntimeError on an input of shape (1, 3, 8, 8) (input_shape=(3, 8, 8)): boom. "
        "rfprobe had traced up to ['conv', 'relu'].")
    assert model_raised(e, (3, 8, 8)) == \
        "the model raised RuntimeError on an input of shape (1, 3, 8, 8) (input_shape=(3, 8, 8)): boom"
    assert model_raised(e, (2, 3, 8, 8), during="erf", done=["conv"]) == (
        "the model raised RuntimeError during erf on input shape (2, 3, 8, 8): boom. It had run up to ['conv'].")
    wrapped = ModelError("ours")
    wrapped.__cause__ = ValueError("x" * 200)
    assert model_raised(wrapped) == "the model raised: " + "x" * 160


class _Raises(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 3, 3)

    def forward(self, x):
        raise RuntimeError("boom from the user's forward")


@pytest.mark.parametrize("call", [
    lambda m: rfprobe.analyze(m),
    lambda m: rfprobe.probe(m),
    lambda m: rfprobe.probe_many(m, [(0, 0)]),
    lambda m: rfprobe.erf(m, n=1),
    lambda m: rfprobe.verify(m),
    lambda m: rfprobe.cost(m, input_shape=(3, 8, 8)),
], ids=["analyze", "probe", "probe_many", "erf", "verify", "cost"])
def test_every_route_quotes_the_model_the_same_way(call):
    with pytest.raises(ModelError) as info:
        call(_Raises())
    e = info.value
    assert str(e).startswith("the model raised RuntimeError on an input of shape (1, 3, ")
    assert "boom from the user's forward" in str(e) and isinstance(e.__cause__, RuntimeError)


# ----------------------------------------------------------------------------- one preparation step
def _named():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))


ENTRIES = {
    "probe": lambda m, unit=None, **kw: rfprobe.probe(m, unit=unit, **kw),
    "probe_many": lambda m, unit=None, **kw: rfprobe.probe_many(m, [(0, 0)] if unit is None else [unit], **kw),
    "erf": lambda m, unit=None, **kw: rfprobe.erf(m, n=1, unit=unit, **kw),
    "verify": lambda m, unit=None, **kw: rfprobe.verify(m, unit=unit, **kw),
    "assert_receptive_field": lambda m, unit=None, **kw: assert_receptive_field(m, unit=unit, **kw),
}
# the backends this torch cannot use here (torch's own errors for them were up to 7,777 characters)
ABSENT = [d for d in ("mps", "xpu", "hpu", "xla") if not usable_device(d)]

# one bad argument each check of prepare's refuses; probe_many's units take the unit's place
# (its own check, same words but for the argument's name)
BAD = {
    "model": ({}, 42, "model must be a torch.nn.Module or a spec string, not int"),
    "input_shape": ({"input_shape": (3, 8.5, 8)}, None, "input_shape=(3, 8.5, 8) must be a tuple like (3, 224, 224)"),
    "layer": ({"layer": "4"}, None, "layer='4'"),
    "unit-range": ({"input_shape": (3, 9, 9), "unit": (100, 0)}, None,
                   "=(100, 0) is out of range for the output's spatial shape (5, 5)"),
    "unit-type": ({"unit": "centre"}, None, "='centre' must be"),
    "channel": ({"channel": 9}, None, "channel=9 is out of range: the output has 2 channels"),
    "device": ({"device": "gpu"}, None, "device='gpu' is not a device torch knows"),
    "device-malformed": ({"device": "cuda:x"}, None, "device='cuda:x' is not a device torch knows"),
    "device-type": ({"device": 5}, None, "device=5 (type int) is not a device torch knows"),
    "device-cuda-index": ({"device": "cuda:99"}, None, "device='cuda:99' but "),
    "device-absent": ({"device": ABSENT[0]}, None, f"device={ABSENT[0]!r} is not available here"),
    "layer-type": ({"layer": 3}, None, "layer=3 (type int) must be a module name"),
    "layer-foreign-module": ({"layer": nn.Conv2d(3, 4, 3)}, None,
                             "layer= got a Conv2d module that is not part of this model"),
}


def _message(entry, case):
    kw, model, _ = BAD[case]
    with pytest.raises(ArgumentError) as info:
        ENTRIES[entry](_named() if model is None else model, **kw)
    return str(info.value)


@pytest.mark.parametrize("case", sorted(BAD))
def test_every_entry_point_refuses_a_shared_argument_the_same_way(case):
    # verify takes no channel= (it compares routes over all channels)
    got = {entry: _message(entry, case) for entry in ENTRIES
           if not (entry in ("verify", "assert_receptive_field") and "channel" in BAD[case][0])}
    want = BAD[case][2]
    for entry, msg in got.items():
        assert want in msg, f"{entry}: {msg}"
    # probe_many names its own argument (units=) where the others say unit=
    assert len({msg for entry, msg in got.items() if entry != "probe_many"}) == 1, got


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_every_entry_point_is_prepared_once(entry, monkeypatch):
    import rfprobe.prepare as P
    calls = []
    real = P.prepare

    def counted(*a, **kw):
        calls.append(kw)
        return real(*a, **kw)
    for name in ("routes.probe", "routes.erf", "verify"):       # each imports prepare by name
        monkeypatch.setattr(importlib.import_module(f"rfprobe.{name}"), "prepare", counted)
    ENTRIES[entry](_named())
    assert len(calls) == 1, f"{entry} prepared {len(calls)} times"


# ----------------------------------------------------------------------------- devices
@pytest.mark.parametrize("device", ABSENT + ["cuda:x", "gpu", 5, torch.device("meta")])
@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_a_device_that_cannot_be_used_is_refused_before_any_work(entry, device):
    """``device="mps"`` leaked torch's NotImplementedError (7,777 characters, after the trace),
    ``"xpu"`` an AssertionError, ``"hpu"`` a ModuleNotFoundError, and erf said something else
    again. Now one short ArgumentError naming device= and the value, with the devices usable
    here, before any work: a model whose forward raises is never run."""
    with pytest.raises(ArgumentError) as info:
        ENTRIES[entry](_Raises(), device=device)
    e = str(info.value)
    assert e.startswith(f"device={device!r}") and "'cpu'" in e and len(e) < 300, e
    assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused_by_every_entry_point():
    for entry, call in ENTRIES.items():
        with pytest.raises(ArgumentError, match=r"device='cuda' but CUDA is not available here; use 'cpu'"):
            call(_Raises(), device="cuda")


def test_a_usable_device_runs_as_cpu_does():
    """The check refuses nothing this torch can use: the CPU by name, index and torch.device (and
    CUDA, where there is one) give the same box. conv3 relu conv3: 5x5 by hand."""
    devices = ["cpu", "cpu:0", torch.device("cpu")] + (["cuda", "cuda:0"] if torch.cuda.is_available() else [])
    for device in devices:
        assert rfprobe.probe("conv3 relu conv3", device=device).box == ((0, 4), (0, 4)), device
        assert rfprobe.verify("conv3 relu conv3", device=device).ok, device


# ----------------------------------------------------------------------------- layer= as a module
def test_layer_may_be_the_module_itself():
    """``layer=net[2]`` is ``layer="2"``: the module found by identity in the model. By hand,
    conv3 then conv3/s2 reads 3 + (3 - 1) = 5 positions with stride 2; the first conv's output
    reads 3; the model itself is its own output (3 + 2 + 2*2 = 9)."""
    net = rfprobe.build("conv3 relu conv3/s2 conv3")
    a = rfprobe.analyze(net, layer=net[2])
    assert (a.size, a.stride, a.target) == ((5, 5), (2, 2), "2")
    assert rfprobe.probe(net, layer=net[2], unit=(1, 1), input_shape=(1, 15, 15)).box == ((2, 6), (2, 6))
    assert rfprobe.verify(net, layer=net[0]).size == (3, 3)
    assert [p.box for p in rfprobe.probe_many(net, [(0, 0)], layer=net[2])] == [((0, 4), (0, 4))]
    assert rfprobe.erf(net, layer=net[0], n=1).theoretical == (3, 3)
    assert_receptive_field(net, layer=net[2], size=5, stride=2)
    assert rfprobe.analyze(net, layer=net).size == (9, 9)


def test_a_layer_error_never_shows_a_modules_repr():
    """A module that is not the model's (a copy, another instance) is named by its class; a
    list of modules by its type: a ResNet's repr runs to hundreds of lines."""
    import copy
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Sequential(*[nn.Conv2d(8, 8, 3) for _ in range(8)]))
    for bad, says in [(copy.deepcopy(net[1]), "layer= got a Sequential module that is not part of this model"),
                      ([net[1]], "layer= (type list) must be a module name"),
                      (nn.Conv2d(3, 8, 3), "layer= got a Conv2d module")]:
        for call in (rfprobe.analyze, rfprobe.probe, rfprobe.verify):
            with pytest.raises(ArgumentError) as info:
                call(net, layer=bad)
            e = str(info.value)
            assert e.startswith(says) and "\n" not in e and "kernel_size" not in e and len(e) < 400, e
