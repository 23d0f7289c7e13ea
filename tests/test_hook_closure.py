"""Forward hooks that are closures over the user's model (issue 19): a hook that fills a dict
which the forward returns, written as ``def hook(m, i, o): feats[name] = o`` rather than as a
bound method, is run by rfprobe's private copy over the copy's objects, so the copy's forward
returns what its hooks wrote. A hook that reaches the model through a global (or a container
in its closure), which no copy can redirect, is refused with a message naming it. The user's
model, its hooks and the objects their closures hold are unchanged after every call.

The oracle runs on the trunk up to the hooked layer: the dict entry a hook fills is that
layer's output, and the oracle's own copy runs no hooks."""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn as nn

import rfprobe
from rfprobe.errors import ArgumentError
from oracle import perturbation_rf
from snapshot import assert_settings_unchanged, assert_unchanged, global_settings, snapshot

SHAPE = (1, 16, 16)
HOOKED = {"a": 0, "b": 2}      # the dict's key -> the trunk layer whose output it holds


def trunk() -> nn.Sequential:
    """conv3, relu, conv3/s2, conv3: 'a' (layer 0) reads 3x3, 'b' (layer 2) 5x5."""
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3, stride=2), nn.Conv2d(2, 2, 3))


class Returns(nn.Module):
    """Runs the trunk and returns the dict it holds, which hooks fill."""

    def __init__(self, feats: dict | None = None):
        super().__init__()
        self.trunk = trunk()
        self.feats = {} if feats is None else feats

    def forward(self, x):
        self.trunk(x)
        return self.feats


def dict_closure():
    """The hooks close over the dict the model holds (and a counter of their own, which counts
    in the user's cell, as in a plain forward)."""
    feats, calls = {}, 0
    net = Returns(feats)

    def collect(name, m, i, o):
        nonlocal calls
        calls += 1
        feats[name] = o
    for name, at in HOOKED.items():
        net.trunk[at].register_forward_hook(functools.partial(collect, name))
    return net, lambda: calls


class SelfInInit(Returns):
    """Hooks defined in ``__init__`` as closures over ``self``, one calling a helper closure."""

    def __init__(self):
        super().__init__()

        def save(name, o):
            self.feats[name] = o
        self.trunk[0].register_forward_hook(lambda m, i, o: save("a", o))

        def hook(m, i, o):
            self.feats["b"] = o
        self.trunk[2].register_forward_hook(hook)


def model_closure():
    """Hooks made outside the model, closing over the model by name."""
    model = Returns()
    for name, at in HOOKED.items():
        model.trunk[at].register_forward_hook(lambda m, i, o, name=name: model.feats.__setitem__(name, o))
    return model, None


MAKERS = {"dict closure": dict_closure, "self in __init__": lambda: (SelfInInit(), None),
          "model closure": model_closure}


def _user_hooks(net: nn.Module) -> list:
    """Each hook of ``net`` with the objects its closure holds (not the counter, which counts)."""
    cells = lambda h: getattr(getattr(h, "func", h), "__closure__", None) or ()
    return [(h, [c.cell_contents for c in cells(h) if not isinstance(c.cell_contents, int)])
            for m in net.modules() for h in m._forward_hooks.values()]


def _oracle_box(name: str, unit: tuple[int, int]):
    net = trunk()[:HOOKED[name] + 1]
    return perturbation_rf(net, SHAPE, unit).box


@pytest.mark.parametrize("plain_call_first", [False, True])
@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_a_dict_that_closure_hooks_fill_is_read_by_the_copy(kind, plain_call_first):
    """The RF of each dict entry is the oracle's; verify agrees; the user's model, its hooks and
    the objects their closures hold are as before (with the tensors of an earlier plain call)."""
    net, calls = MAKERS[kind]()
    if plain_call_first:
        net(torch.rand(1, *SHAPE))
    held = dict(net.feats)
    hooks = _user_hooks(net)
    units = {"a": (5, 7), "b": (2, 3)}
    expected = {name: _oracle_box(name, unit) for name, unit in units.items()}
    before, settings = snapshot(net), global_settings()
    for name, unit in units.items():
        a = rfprobe.analyze(net, SHAPE, output=name)
        assert a.status == "ok" and a.box(unit) == expected[name]
        r = rfprobe.verify(net, SHAPE, output=name)
        assert r.ok and r.size == a.size, str(r)
        assert_unchanged(net, before, f"analyze/verify of {name!r} ({kind})")
    assert net.feats == held and all(net.feats[k] is held[k] for k in held)
    after = _user_hooks(net)
    assert [h for h, _ in after] == [h for h, _ in hooks]
    assert all(len(a) == len(b) and all(x is y for x, y in zip(a, b)) for (_, a), (_, b) in zip(after, hooks))
    assert calls is None or calls() > 0
    assert_settings_unchanged(settings, kind)


class BranchByClosure(nn.Module):
    """conv3 -> relu -> conv3, where a closure hook adds a 5x5 branch computed by a module of
    the model to the first conv's output: RF 5 + 2 = 7 by hand (test_hooks.Branchy with a
    closure instead of a bound method). The user's branch has a zero outer ring, which a
    structural probe of the user's module (rather than of the copy's, whose weights the probe
    sets) would see as a 3x3: RF 5."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU(), nn.Conv2d(1, 1, 3))
        self.branch = nn.Conv2d(1, 1, 5, padding=1)
        with torch.no_grad():
            ring = torch.ones(5, 5, dtype=torch.bool)
            ring[1:4, 1:4] = False
            self.branch.weight[:, :, ring] = 0
        branch = self.branch
        self.body[0].register_forward_hook(lambda m, i, o: o + branch(i[0]))

    def forward(self, x):
        return self.body(x)


class BranchAdded(nn.Module):
    """What BranchByClosure computes, written without a hook, for the oracle (whose copy runs
    no hooks; one that did would run the user's branch, as any deep copy of a closure does)."""

    def __init__(self, net: BranchByClosure):
        super().__init__()
        self.net = net

    def forward(self, x):
        body = self.net.body
        return body[2](body[1](body[0](x) + self.net.branch(x)))


def test_a_closure_hook_that_calls_a_module_runs_the_copys_module():
    """The hook's module is the copy's: the meta trace runs (no fallback to traced on the CPU with real values, which
    a user's conv on meta inputs forced) and the probe's gradient reaches the copy's weights,
    never the user's."""
    net = BranchByClosure()
    before = snapshot(net)
    a = rfprobe.analyze(net, SHAPE)
    assert a.size == (7, 7) and a.box((4, 4)) == perturbation_rf(BranchAdded(net), SHAPE, (4, 4)).box
    assert not any("traced on the CPU with real values" in n for n in a.notes), a.notes
    r = rfprobe.verify(net, SHAPE)
    assert r.ok and r.size == (7, 7), str(r)
    assert rfprobe.probe(net, SHAPE).size == (7, 7)
    assert net.branch.weight.grad is None
    assert_unchanged(net, before, "analyze/verify/probe with a closure branch hook")


_GLOBAL_FEATS: dict = {}     # a dict the refused model holds, filled by a hook through this global


def _global_hook(m, i, o):
    _GLOBAL_FEATS["b"] = o


def global_dict():
    net = Returns(_GLOBAL_FEATS)
    net.trunk[2].register_forward_hook(_global_hook)
    return net, "_global_hook", "the global '_GLOBAL_FEATS'"


def boxed_model():
    model = Returns()
    box = [model]
    model.trunk[2].register_forward_hook(lambda m, i, o: box[0].feats.__setitem__("b", o))
    return model, "boxed_model.<locals>.<lambda>", "the container 'box' in its closure"


@pytest.mark.parametrize("output", ["b", None])
@pytest.mark.parametrize("make", [global_dict, boxed_model])
def test_a_hook_no_copy_can_redirect_is_refused_by_name(make, output):
    """The copy's forward returns the copy's dict, which such a hook never fills: the error
    names the hook, the route and the fix, and the user's model (and the global dict) are as
    before."""
    net, hook, route = make()
    before = snapshot(net)
    with pytest.raises(ArgumentError) as e:
        rfprobe.analyze(net, SHAPE, output=output)
    text = str(e.value)
    assert f"forward hook {hook!r} on module 'trunk.2'" in text and route in text, text
    assert "closure variable" in text and "method of the model" in text
    assert e.value.__cause__ is None and e.value.__suppress_context__
    assert net.feats == {} and _GLOBAL_FEATS == {}
    assert_unchanged(net, before, f"analyze of a model with {hook}")


def test_a_global_hook_whose_dict_the_forward_reads_by_name_is_not_refused():
    """The hook and the forward both reach the dict through the global: the copy's forward
    reads what the hook wrote, as today (and the dict is not the model's, so nothing strands)."""
    class ByName(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = trunk()
            self.trunk[2].register_forward_hook(_global_hook)

        def forward(self, x):
            self.trunk(x)
            return _GLOBAL_FEATS
    net = ByName()
    try:
        assert rfprobe.analyze(net, SHAPE, output="b").box((2, 3)) == _oracle_box("b", (2, 3))
        assert rfprobe.verify(net, SHAPE, output="b").ok
    finally:
        _GLOBAL_FEATS.clear()       # as in any forward, the global dict got the copy's outputs


def test_an_output_typo_is_named_with_the_keys_the_copys_hooks_filled():
    net = Returns()
    net.trunk[2].register_forward_hook(lambda m, i, o: net.feats.__setitem__("b", o))
    assert rfprobe.analyze(net, SHAPE, output="b").size == (5, 5)
    with pytest.raises(ArgumentError, match=r"output='c' is not in the model's output; choose one of \['b'\]"):
        rfprobe.analyze(net, SHAPE, output="c")
