"""The user's forward hooks run on rfprobe's private copies, as in a plain forward; the user's
model is identical after every call (what a hook wrote into it is put back, also after an
exception); backward hooks are not run by the probe and a note names their modules."""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import rfprobe
from rfprobe.errors import RFProbeError
from snapshot import assert_settings_unchanged, assert_unchanged, global_settings, snapshot

SHAPE = (1, 16, 16)


def test_the_users_forward_hook_runs():
    net = nn.Sequential(nn.Conv2d(3, 4, 3))
    calls = []
    net[0].register_forward_hook(lambda *a: calls.append(1))
    rfprobe.analyze(net, (3, 16, 16))
    assert len(calls) >= 1


class Branchy(nn.Module):
    """conv3 -> relu -> conv3, where a hook (a bound method) adds a 5x5 branch, computed by
    a module of the model, to the first conv's output: the first layer sees 5x5, the RF is
    5 + 2 = 7 (5 without the hook)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU(), nn.Conv2d(1, 1, 3))
        self.branch = nn.Conv2d(1, 1, 5, padding=1)
        self.handle = self.body[0].register_forward_hook(self._add_branch)

    def _add_branch(self, module, inputs, output):
        return output + self.branch(inputs[0])

    def forward(self, x):
        return self.body(x)


def test_a_hook_that_adds_a_branch_changes_the_rf_as_computed_by_hand():
    net = Branchy()
    before, settings = snapshot(net), global_settings()
    assert rfprobe.analyze(net, SHAPE).size == (7, 7)
    assert rfprobe.analyze(net, SHAPE, layer="body.0").size == (5, 5)   # the output its hook returns
    r = rfprobe.verify(net, SHAPE)
    assert r.ok and r.size == (7, 7)
    assert rfprobe.probe(net, SHAPE).size == (7, 7)
    assert_unchanged(net, before, "analyze/verify/probe with a branch hook")
    assert_settings_unchanged(settings, "analyze/verify/probe with a branch hook")
    net.handle.remove()
    assert rfprobe.verify(net, SHAPE).size == (5, 5)


def test_a_gate_hook_makes_the_rf_global():
    """A hook that multiplies the output by a gate of its global mean couples every position."""
    net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3))
    assert rfprobe.analyze(net, SHAPE).size == (5, 5)
    net[0].register_forward_hook(lambda m, i, o: o * o.mean((2, 3), keepdim=True).sigmoid())
    assert rfprobe.analyze(net, SHAPE).status == "global"
    r = rfprobe.verify(net, SHAPE)
    assert r.ok, str(r)


def test_pre_hooks_and_kwargs_hooks():
    """A pre-hook blurs the second conv's input 3x3 (RF 5 -> 7); a kwargs forward hook adds a
    5x5 average of the first conv's input (first layer 5 wide: RF 7 -> 9); a kwargs pre-hook
    and an always-called hook run too."""
    net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3))
    fired = []
    net[1].register_forward_pre_hook(lambda m, args: (F.avg_pool2d(args[0], 3, 1, 1),))
    assert rfprobe.verify(net, SHAPE).size == (7, 7)

    def kw_hook(m, args, kwargs, out):
        fired.append("kw")
        return out + F.avg_pool2d(args[0], 5, 1, 1)
    net[0].register_forward_hook(kw_hook, with_kwargs=True)

    def kw_pre(m, args, kwargs):
        fired.append("kw pre")
        return args, kwargs
    net[0].register_forward_pre_hook(kw_pre, with_kwargs=True)
    net[1].register_forward_hook(lambda m, i, o: fired.append("always"), always_call=True)
    before = snapshot(net)
    assert rfprobe.analyze(net, SHAPE).size == (9, 9)
    r = rfprobe.verify(net, SHAPE)
    assert r.ok and r.size == (9, 9)
    assert {"kw", "kw pre", "always"} <= set(fired)
    assert_unchanged(net, before, "verify with pre and kwargs hooks")


class Extractor(nn.Module):
    """A feature extractor: hooks (partials of a bound method) collect the outputs of layer1
    and layer2 into a dict on the wrapper, and forward returns that dict."""

    def __init__(self, clear: bool = True):
        super().__init__()
        self.layer1 = nn.Conv2d(1, 2, 3)
        self.layer2 = nn.Conv2d(2, 2, 3, stride=2)
        self.layer3 = nn.Conv2d(2, 2, 3)
        self.clear = clear
        self._features: dict[str, torch.Tensor] = {}
        for name in ("layer1", "layer2"):
            getattr(self, name).register_forward_hook(functools.partial(self._collect, name))

    def _collect(self, name, module, inputs, output):
        self._features[name] = output

    def forward(self, x):
        if self.clear:
            self._features.clear()
        self.layer3(self.layer2(self.layer1(x)))
        return self._features


class FeatureHooks:
    """As timm's: a plain object the wrapper holds, whose hooks fill its own dict."""

    def __init__(self, modules):
        self.outputs: dict[str, torch.Tensor] = {}
        for name, m in modules.items():
            m.register_forward_hook(functools.partial(self._collect, name))

    def _collect(self, name, module, inputs, output):
        self.outputs[name] = output

    def get(self):
        out, self.outputs = self.outputs, {}
        return out


class TimmLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1 = nn.Conv2d(1, 2, 3)
        self.layer2 = nn.Conv2d(2, 2, 3, stride=2)
        self.hooks = FeatureHooks({"layer1": self.layer1, "layer2": self.layer2})

    def forward(self, x):
        self.layer2(self.layer1(x))
        return self.hooks.get()


@pytest.mark.parametrize("make", [Extractor, TimmLike])
def test_a_hook_based_feature_extractor(make):
    net = make()
    before, settings = snapshot(net), global_settings()
    features = net._features if make is Extractor else net.hooks.outputs
    for output, size in (("layer1", (3, 3)), ("layer2", (5, 5))):
        assert rfprobe.analyze(net, SHAPE, output=output).size == size
        r = rfprobe.verify(net, SHAPE, output=output)
        assert r.ok and r.size == size, str(r)
        assert_unchanged(net, before, f"verify of {output}")
        assert (net._features if make is Extractor else net.hooks.outputs) is features and features == {}
    e = rfprobe.erf(net, SHAPE, output="layer2", n=2, progress=False)
    assert e.grad.shape[-2:] == SHAPE[1:] if hasattr(e, "grad") else True
    assert_unchanged(net, before, "erf")
    assert_settings_unchanged(settings, "the feature extractor's calls")


def test_a_dict_filled_by_hooks_during_an_earlier_plain_call():
    """The model's forward returns its dict without clearing it; a plain call filled it with
    real tensors. The copy's hooks overwrite the copy's entries; the user's stay."""
    net = Extractor(clear=False)
    out = net(torch.rand(1, *SHAPE))
    held = dict(net._features)
    assert set(out) == {"layer1", "layer2"}
    before = snapshot(net)
    assert rfprobe.analyze(net, SHAPE, output="layer2").size == (5, 5)
    r = rfprobe.verify(net, SHAPE, output="layer1")
    assert r.ok and r.size == (3, 3)
    assert_unchanged(net, before, "verify after a plain call")
    assert net._features.keys() == held.keys() and all(net._features[k] is held[k] for k in held)


def test_a_hook_that_writes_into_the_users_model_is_undone_and_global_effects_happen():
    """A closure over the user's model writes into it (a dict entry, a new attribute, a list
    item): all put back. A global list outside the model is appended to, as in any forward."""
    net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3))
    net.seen = {}
    net.log = [1]
    outside = []

    def hook(m, i, o):
        net.seen["o"] = o
        net.log.append(2)
        net.extra = 3
        outside.append(1)
    net[0].register_forward_hook(hook)
    before = snapshot(net)
    assert rfprobe.verify(net, SHAPE).ok
    assert net.seen == {} and net.log == [1] and not hasattr(net, "extra")
    assert outside
    assert_unchanged(net, before, "verify with a hook writing into the model")


def test_an_exception_inside_a_hook_restores_the_model():
    net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3))
    net.seen = {}
    seen = net.seen

    def hook(m, i, o):
        net.seen["o"] = o
        net.extra = 1
        net.register_buffer("junk", torch.zeros(1))
        raise RuntimeError("boom in a hook")
    # on the first conv: after the model's error rfprobe runs it again at sizes up to 4096x4096
    # (routes/fit.py: is the input too small?), and a hook that raises there ends each run
    # after one of the two convs
    net[0].register_forward_hook(hook)
    before = snapshot(net)
    with pytest.raises(RFProbeError, match="boom in a hook"):
        rfprobe.analyze(net, SHAPE)
    assert net.seen is seen and seen == {} and not hasattr(net, "extra") and "junk" not in net._buffers
    assert_unchanged(net, before, "analyze with a hook raising")


def test_backward_hooks_are_not_run_and_the_note_names_the_module():
    net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU(), nn.Conv2d(1, 1, 3))
    fired = []
    net[1].register_full_backward_hook(lambda m, gi, go: fired.append("backward"))
    net[2].register_full_backward_pre_hook(lambda m, go: fired.append("backward pre"))
    a = rfprobe.analyze(net, SHAPE)
    r = rfprobe.verify(net, SHAPE)
    rfprobe.erf(net, SHAPE, n=2, progress=False)
    assert fired == [] and r.ok and r.size == (5, 5)
    assert any("backward hooks on '1', '2' are not run" in n for n in a.notes)
    assert any("backward hooks on '1', '2'" in d for d in r.diagnoses)
    assert len(net[1]._backward_hooks) == 1
