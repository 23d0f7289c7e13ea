"""Errors say whose fault they are, and real models' tails: rfprobe's own crash is an
InternalError (never "the model raised"), a model that cannot be copied says so, an
efficient-channel-attention gate (a Conv1d over the pooled channel vector) is global."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import rfprobe
from rfprobe.errors import InternalError, ModelError
from tests.models import UNKNOWN_OP, SpaceToDepthStem, rfprobe_test_op


class ECA(nn.Module):
    """Efficient channel attention as timm writes it: a Conv1d over the channel axis of the
    pooled vector, the gate expanded to x's shape."""

    def __init__(self, view: bool = True):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 3, padding=1, bias=False)
        self.view = view

    def forward(self, x):
        n = x.shape[0]
        if self.view:
            y = self.conv(x.mean((2, 3)).view(n, 1, -1)).sigmoid().view(n, -1, 1, 1)
        else:
            y = self.conv(x.mean((2, 3)).unsqueeze(1)).sigmoid().transpose(-1, -2).unsqueeze(-1)
        return x * y.expand_as(x)


def eca_net(view: bool = True) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), ECA(view), nn.Conv2d(16, 16, 3))


@pytest.mark.parametrize("view", [True, False], ids=["view", "unsqueeze"])
def test_eca_gate_is_global_through_the_mean(view):
    """It ended in "the model raised TypeError ... 'NoneType' object is not iterable" (the
    expand_as of the pooled gate had no spatial axes to move), though the model runs alone."""
    net = eca_net(view)
    net(torch.rand(1, 3, 16, 16))       # the model itself is fine
    a = rfprobe.analyze(net, (3, 16, 16))
    assert a.status == "global"
    assert any("mean" in c for c in map(str, a.global_causes))
    r = rfprobe.verify(net, (3, 16, 16))
    assert r.ok, r
    assert rfprobe.probe(net, (3, 16, 16)).box == ((0, 15), (0, 15))


def test_view_and_unsqueeze_forms_agree():
    a, b = rfprobe.analyze(eca_net(True), (3, 16, 16)), rfprobe.analyze(eca_net(False), (3, 16, 16))
    assert a.status == b.status == "global"
    assert rfprobe.analyze(eca_net(True)).status == "global"     # input_shape=None too


def test_a_crash_in_rfprobes_rule_blames_rfprobe_not_the_model(monkeypatch):
    from rfprobe.trace import infer
    real = infer.reduced_layout

    def broken(*args):      # rfprobe's own code, crashing on the mean (a bug, simulated)
        raise TypeError("'NoneType' object is not iterable")
    monkeypatch.setattr(infer, "reduced_layout", broken)
    with pytest.raises(InternalError) as info:
        rfprobe.analyze(eca_net(), (3, 16, 16))
    text = str(info.value)
    assert "the model raised" not in text
    assert "op 'mean'" in text and "(module '2')" in text and "test_honest.py:" in text
    assert "limitation of rfprobe" in text and "report" in text
    assert isinstance(info.value.__cause__, TypeError)
    monkeypatch.setattr(infer, "reduced_layout", real)
    assert rfprobe.analyze(eca_net(), (3, 16, 16)).status == "global"


def test_a_crash_in_the_users_own_rule_blames_the_rule():
    class Running(nn.Module):
        def forward(self, x):
            return rfprobe_test_op(x, -1)

    def rule(call):
        return 1 / 0
    with rfprobe.registered_rule(UNKNOWN_OP, rule), pytest.raises(rfprobe.ArgumentError) as info:
        rfprobe.analyze(Running(), (1, 8, 8))
    assert f"rule registered for op '{UNKNOWN_OP}'" in str(info.value) and "ZeroDivisionError" in str(info.value)
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert not isinstance(info.value, InternalError) and "the model raised" not in str(info.value)


def test_a_crash_in_the_probes_policy_blames_rfprobe(monkeypatch):
    from rfprobe.routes import gradient

    def broken(self, out):
        raise KeyError("probe bug")
    monkeypatch.setattr(gradient.ProbePolicy, "post", broken)
    with pytest.raises(InternalError) as info:
        rfprobe.probe(rfprobe.build("conv3 relu conv3", in_channels=3), (3, 9, 9))
    assert "the model raised" not in str(info.value) and "op 'conv2d'" in str(info.value)


def test_a_crash_in_the_probes_backward_blames_rfprobe(monkeypatch):
    """rfprobe's own backward (the structural probe's positive gradients) raising: an
    InternalError, never "the model raised"."""
    from rfprobe.routes import gradient
    real = gradient._Support.forward

    def forward(ctx, x, pool):
        out = real(ctx, x, pool)
        ctx.pool = None         # a bug, simulated: rfprobe's backward finds no pool
        return out
    monkeypatch.setattr(gradient._Support, "forward", staticmethod(forward))
    with pytest.raises(InternalError) as info:
        rfprobe.probe(rfprobe.build("conv3 relu conv3", in_channels=3), (3, 9, 9))
    text = str(info.value)
    assert "the model raised" not in text and "backward pass of the probe" in text
    assert "AttributeError" in text and "limitation of rfprobe" in text
    assert isinstance(info.value.__cause__, AttributeError)


def test_the_models_own_backward_error_is_the_models():
    """A custom autograd Function of the model whose backward raises: the model's fault."""
    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            raise RuntimeError("my backward")

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 2, 3)

        def forward(self, x):
            return Fn.apply(self.c(x))
    with pytest.raises(ModelError, match="the model raised RuntimeError") as info:
        rfprobe.probe(M(), (3, 9, 9))
    assert not isinstance(info.value, InternalError) and "my backward" in str(info.value)


def test_a_max_off_the_data_path_stays_a_max_in_the_probe():
    """gemma4_vit reads its patch grid back from position ids (``int(pos.max().item()) + 1``).
    The structural probe replaced every max by a sum, also this one, which reads no input
    position: the grid came out wrong and "the model raised" a reshape error. The surrogate is
    for the data's path only."""
    class GridFromPositions(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(3, 4, 4, stride=4)

        def forward(self, x):
            y = self.embed(x)
            side = x.shape[-1] // 4
            pos = torch.arange(side * side) % side                 # column of each patch
            w = int(pos.max().item()) + 1                          # 4; a sum would give 25
            return y.reshape(y.shape[0], 4, -1, w)
    r = rfprobe.verify(GridFromPositions(), (3, 16, 16))
    assert r.ok and r.analysis.status == "ok", r
    assert r.analysis.size == (4, 4) and r.analysis.stride == (4, 4)


def test_the_models_own_error_is_still_the_models():
    class Raises(nn.Module):
        def forward(self, x):
            raise RuntimeError("mine")
    with pytest.raises(ModelError, match="the model raised RuntimeError"):
        rfprobe.analyze(Raises(), (3, 8, 8))


class Uncopyable(nn.Sequential):
    def __deepcopy__(self, memo):
        raise RuntimeError("no copies of me")


def test_a_model_that_cannot_be_copied_says_so():
    """It was UnboundLocalError: 'tracer' (the tracer did not exist yet when the copy failed)."""
    with pytest.raises(ModelError) as info:
        rfprobe.analyze(Uncopyable(nn.Conv2d(3, 3, 3)), (3, 8, 8))
    assert "private copy" in str(info.value) and "no copies of me" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)


# ----------------------------------------------------------------------------- no expensive guess
def _counting(monkeypatch):
    from rfprobe.routes import fit
    calls = []
    real = fit.trace

    def counted(model, shape, *a, **kw):
        calls.append(tuple(shape))
        return real(model, shape, *a, **kw)
    monkeypatch.setattr(fit, "trace", counted)
    return calls


def test_a_wrong_channel_guess_is_refused_at_once(monkeypatch):
    """It traced (48, n, n) for n up to 4096 (seconds) before failing."""
    calls = _counting(monkeypatch)
    with pytest.raises(rfprobe.ArgumentError) as info:
        rfprobe.analyze(SpaceToDepthStem())
    assert "input_shape=(C, H, W)" in str(info.value) and "48" in str(info.value)
    assert len(calls) == 1, calls
    assert rfprobe.analyze(SpaceToDepthStem(), (3, None, None)).size == (12, 12)


def test_a_space_to_depth_at_the_entry_divides_the_channels(monkeypatch):
    net = nn.Sequential(nn.PixelUnshuffle(4), nn.Conv2d(48, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3))
    calls = _counting(monkeypatch)
    a = rfprobe.analyze(net)
    assert a.input_shape[0] == 3 and all(c[0] == 3 for c in calls), calls
    assert a.size == rfprobe.analyze(net, (3, None, None)).size == (20, 20)
    assert rfprobe.verify(net).ok


# ----------------------------------------------------------------------------- compiled and scripted models
def test_a_compiled_model_is_analysed_through_its_original_module(monkeypatch):
    """torch.compile only wraps (an OptimizedModule); rfprobe reads _orig_mod on every entry
    point and never calls the compiled forward (which would compile)."""
    net = rfprobe.build("conv3 relu conv3/s2 conv3", in_channels=3)
    compiled = torch.compile(net)
    assert compiled._orig_mod is net

    def never(*args, **kwargs):
        raise AssertionError("rfprobe called the compiled forward")
    monkeypatch.setattr(compiled, "forward", never)
    assert str(rfprobe.analyze(compiled)) == str(rfprobe.analyze(net))
    assert rfprobe.probe(compiled).box == rfprobe.probe(net).box
    assert rfprobe.verify(compiled).ok and rfprobe.verify(compiled).size == rfprobe.verify(net).size
    assert [p.box for p in rfprobe.probe_many(compiled, [(0, 0), (1, 1)], (3, 16, 16))] == \
        [p.box for p in rfprobe.probe_many(net, [(0, 0), (1, 1)], (3, 16, 16))]
    assert str(rfprobe.erf(compiled, n=2)) == str(rfprobe.erf(net, n=2))
    assert str(rfprobe.cost(compiled, (3, 16, 16))) == str(rfprobe.cost(net, (3, 16, 16)))


def test_a_layer_module_of_a_compiled_model_is_found():
    """A compiled model is analysed through its ``_orig_mod``, whose modules are the user's own
    objects: a module taken from the model before or after ``torch.compile`` is found."""
    net = rfprobe.build("conv3 relu conv3/s2 conv3")
    compiled = torch.compile(net)
    assert rfprobe.analyze(compiled, layer=net[2]).size == (5, 5)
    assert rfprobe.verify(compiled, layer=getattr(compiled, "2")).size == (5, 5)
    assert rfprobe.analyze(compiled, layer=compiled).size == (9, 9)


def test_a_scripted_model_is_refused_with_the_fix():
    """It was "'_CachedForward' object has no attribute '__getattr__'", blamed on the model."""
    import warnings
    net = rfprobe.build("conv3 relu conv3", in_channels=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # torch.jit.script is deprecated in recent torch
        scripted = torch.jit.script(net)
    for call in (rfprobe.analyze, rfprobe.probe, rfprobe.verify):
        with pytest.raises(rfprobe.ArgumentError) as info:
            call(scripted)
        assert "TorchScript" in str(info.value) and "before torch.jit.script" in str(info.value)
        assert "the model raised" not in str(info.value)


# ----------------------------------------------------------------------------- input_shape mistakes
@pytest.mark.parametrize("value", [torch.rand(1, 3, 64, 64), torch.rand(3, 64, 64).numpy(),
                                   torch.zeros(3, 64, 64).tolist(), [torch.zeros(64)] * 3],
                         ids=["tensor", "array", "nested-list", "tensors"])
def test_input_shape_that_is_data_is_not_printed_whole(value):
    with pytest.raises(rfprobe.ArgumentError) as info:
        rfprobe.analyze(rfprobe.build("conv3 relu conv3", in_channels=3), value)
    assert len(str(info.value)) < 300 and "input_shape" in str(info.value), str(info.value)[:500]


def test_a_1d_model_given_an_image_shape_is_told_the_rank():
    """(1, 64, 64) was read as a batch of one of (64, 64), and refused for its 64 channels."""
    net = rfprobe.build("conv3 relu conv3", in_channels=1, dims=1)
    for call in (rfprobe.analyze, rfprobe.probe, rfprobe.cost):
        with pytest.raises(rfprobe.ArgumentError, match=r"has rank 3 but this model takes \(C, L\): give 2 numbers"):
            call(net, (1, 64, 64))
    assert rfprobe.analyze(net, (1, 1, 64)).size == (5,)        # a batch of one, given explicitly, still works
    assert rfprobe.analyze(rfprobe.build("conv3", in_channels=3), (1, 3, 16, 16)).size == (3, 3)
