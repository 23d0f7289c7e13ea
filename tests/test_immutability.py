"""The user's model is sacred: every public entry point leaves it exactly as it was, and leaves
torch's global settings as it found them, after a success and after an exception raised
mid-call (a RuntimeError, or a KeyboardInterrupt, from the model's forward or backward).

rfprobe works on a private copy that runs the user's forward hooks (their writes into the
model are put back, tests/test_hooks.py) and no other hook of theirs; failures are injected
where rfprobe really runs code:
a module whose forward raises on its n-th call (counted on the class, which copies share), and
a custom autograd op whose backward raises.
"""
from __future__ import annotations

import contextlib
import sys

import pytest
import torch
import torch.nn as nn

import rfprobe
from rfprobe.errors import ModelError, RFProbeError
from rfprobe.testing import assert_receptive_field
from tests.snapshot import assert_settings_unchanged, assert_unchanged, global_settings, snapshot

CLI_MODEL: nn.Module | None = None     # `rfprobe verify tests.test_immutability:CLI_MODEL`


# ----------------------------------------------------------------------------- models
def _bn_net(training: bool) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Dropout(0.5))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.num_batches_tracked.fill_(7)
    return net.train(training)


class _Calls:
    n = 0


def _hooked_net() -> tuple[nn.Module, list]:
    """Hooks of every kind, gradients present, one frozen parameter."""
    net = _bn_net(False)
    net(torch.rand(2, 3, 12, 12)).sum().backward()
    net[4].bias.requires_grad_(False)
    fired: list[str] = []
    net[0].register_forward_hook(lambda m, i, o: fired.append("forward"))
    net[0].register_forward_pre_hook(lambda m, i: fired.append("pre"))
    net[0].register_forward_hook(lambda m, a, k, o: fired.append("forward kw"), with_kwargs=True)
    net[1].register_full_backward_hook(lambda m, gi, go: fired.append("full backward"))
    net[1].register_full_backward_pre_hook(lambda m, go: fired.append("backward pre"))
    net[4].register_forward_hook(lambda m, i, o: fired.append("always"), always_call=True)
    net._register_state_dict_hook(lambda m, sd, prefix, local: fired.append("state dict"))
    net.register_load_state_dict_post_hook(lambda m, keys: fired.append("load post"))
    net[0].weight.register_hook(lambda g: fired.append("tensor"))
    net[0].bias.register_post_accumulate_grad_hook(lambda p: fired.append("post accumulate"))
    return net, fired


class _Mixed(nn.Module):
    """float64 and float32 layers; the forward casts between them."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3).double()
        self.bn = nn.BatchNorm2d(4).double()
        self.b = nn.Conv2d(4, 2, 3)

    def forward(self, x):
        return self.b(self.bn(self.a(x.double())).float())


def _linear_net() -> nn.Module:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AvgPool2d(2), nn.Conv2d(4, 2, 3, dilation=2))
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
    return net.eval()


def _f64_net() -> nn.Module:
    return _bn_net(False).double()


MODELS = {
    "bn-eval": lambda: (_bn_net(False), None),
    "bn-train": lambda: (_bn_net(True), None),
    "hooks+grads": _hooked_net,
    "float64": lambda: (_f64_net(), None),
    "mixed-dtypes": lambda: (_Mixed(), None),
    "linear-stack": lambda: (_linear_net(), None),   # collapse succeeds on this one
}


def _cli(model):
    global CLI_MODEL
    from rfprobe.cli import main
    CLI_MODEL = model
    try:
        with contextlib.redirect_stdout(None), contextlib.redirect_stderr(None):
            return main(["verify", f"{__name__}:CLI_MODEL", "--input", "3,16,16"])
    finally:
        CLI_MODEL = None


ENTRY_POINTS = {
    "analyze": lambda m: rfprobe.analyze(m),
    "analyze-shape": lambda m: rfprobe.analyze(m, (3, 15, 17)),
    "probe": lambda m: rfprobe.probe(m),
    "probe-actual": lambda m: rfprobe.probe(m, mode="actual"),
    "probe-actual-inputs": lambda m: rfprobe.probe(m, mode="actual", inputs=torch.rand(
        1, 3, 16, 16, generator=torch.Generator().manual_seed(1))),
    "probe_many": lambda m: rfprobe.probe_many(m, [(0, 0), (-1, -1)]),
    "collapse": lambda m: rfprobe.collapse(m, strict=False),
    "verify": lambda m: rfprobe.verify(m),
    "erf": lambda m: rfprobe.erf(m, n=2),
    "cost": lambda m: rfprobe.cost(m, input_shape=(3, 16, 16)),
    "assert_receptive_field": lambda m: assert_receptive_field(m, size=999),
    "cli": _cli,
}


def _call(entry, model):
    """Run one entry point; an RFProbeError or AssertionError is an allowed outcome (the model
    may be one rfprobe refuses), anything else is a bug in rfprobe."""
    try:
        ENTRY_POINTS[entry](model)
    except (RFProbeError, AssertionError):
        pass


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_model_unchanged_after_call(entry, kind):
    model, fired = MODELS[kind]()
    before, settings = snapshot(model), global_settings()
    _call(entry, model)
    assert_unchanged(model, before, f"{entry} on {kind}")
    assert_settings_unchanged(settings, f"{entry} on {kind}")
    if fired is not None:
        ran = set(fired) - {"forward", "pre", "forward kw", "always"}   # forward hooks run, as in a forward
        assert not ran, f"{entry} ran the user's hooks: {fired}"


def test_bn_running_stats_do_not_move_even_in_training_mode():
    """BatchNorm in training mode updates running stats on every forward; rfprobe's forwards
    run on a copy. Checked by value, independently of the snapshot helper."""
    net = _bn_net(True)
    mean = net[1].running_mean.clone()
    var = net[1].running_var.clone()
    for entry in ("probe", "probe-actual", "verify", "erf", "analyze"):
        _call(entry, net)
    assert torch.equal(net[1].running_mean, mean) and torch.equal(net[1].running_var, var)
    assert int(net[1].num_batches_tracked) == 7 and net.training and net[1].training


def test_mixed_and_float64_models_are_probed():
    """Models that are not float32 (or cast inside forward) must work in both modes, not only
    be left alone. By hand: conv3 bn conv3 sees 5x5; conv3 bn relu maxpool2 conv3/p1 sees
    3 + 1 = 4 at stride 2, then 4 + 2*2 = 8."""
    for make, size in ((_f64_net, (8, 8)), (_Mixed, (5, 5))):
        model = make().eval()
        assert rfprobe.probe(model).size == size
        assert rfprobe.verify(model).ok
        assert rfprobe.probe(model, mode="actual").size == size


# ----------------------------------------------------------------------------- failures mid-call
class _Bomb(nn.Module):
    """Identity that raises ``exc`` on its ``fuse``-th forward (counted on the class, so the
    copies rfprobe makes count too)."""

    calls = 0
    fuse = 0
    exc: type[BaseException] = RuntimeError

    def forward(self, x):
        type(self).calls += 1
        if type(self).calls == type(self).fuse:
            raise type(self).exc(f"boom on call {type(self).calls}")
        return x


class _BackwardBomb(torch.autograd.Function):
    exc: type[BaseException] = RuntimeError

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        raise _BackwardBomb.exc("boom in backward")


class _BackwardBombModule(nn.Module):
    def forward(self, x):
        return _BackwardBomb.apply(x)


def _bomb_net(where: str) -> nn.Module:
    net = _bn_net(True)
    bomb = _Bomb() if where == "forward" else _BackwardBombModule()
    return nn.Sequential(net[0], net[1], bomb, net[2], net[3], net[4])


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("entry", ["analyze", "probe", "probe-actual", "verify", "erf", "cost", "cli"])
def test_model_unchanged_after_exception_in_forward(entry, exc):
    """The forward raises on its 1st, 2nd, ... call until a call completes without reaching it:
    every stage of every entry point is interrupted once. (A RuntimeError on a meta-tensor
    trace is caught by rfprobe, which traces again on the CPU: such a call may succeed.)"""
    model = _bomb_net("forward")
    before, settings = snapshot(model), global_settings()
    _Bomb.exc = exc
    interrupted = 0
    for fuse in range(1, 40):
        _Bomb.calls, _Bomb.fuse = 0, fuse
        try:
            ENTRY_POINTS[entry](model)
        except KeyboardInterrupt as e:
            assert exc is KeyboardInterrupt and "boom" in str(e)   # never swallowed nor wrapped
            interrupted += 1
        except ModelError as e:
            assert exc is RuntimeError
            assert "boom" in str(e) and isinstance(e.__cause__, RuntimeError), "the user's error is shown"
            interrupted += 1
        except RFProbeError:
            interrupted += 1
        else:
            if _Bomb.calls < fuse:    # the bomb was never reached: every stage has been hit
                break
        finally:
            assert_unchanged(model, before, f"{entry} interrupted at forward call {fuse}")
            assert_settings_unchanged(settings, f"{entry} interrupted at forward call {fuse}")
    else:
        pytest.fail(f"{entry} never completed")
    # analyze and cost run only meta/CPU traces, where rfprobe retries a RuntimeError on the
    # CPU; the CLI turns errors into exit code 2: neither need be interrupted by one
    assert interrupted >= 1 or (exc is RuntimeError and entry in ("analyze", "cost", "cli"))
    _Bomb.fuse = 0


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("entry", ["probe", "probe-actual", "verify", "erf"])
def test_model_unchanged_after_exception_in_backward(entry, exc):
    model = _bomb_net("backward")
    before, settings = snapshot(model), global_settings()
    _BackwardBomb.exc = exc
    with pytest.raises((exc, ModelError)) as info:
        ENTRY_POINTS[entry](model)
    if exc is RuntimeError:
        assert info.type is ModelError and "boom in backward" in str(info.value)
    else:
        assert info.type is KeyboardInterrupt
    assert_unchanged(model, before, f"{entry} interrupted in backward")
    assert_settings_unchanged(settings, f"{entry} interrupted in backward")


def test_settings_changed_by_the_user_are_kept():
    """rfprobe switches convolution algorithms off for the probe; a user who turned them off
    (or changed grad mode or the default dtype) before the call finds them as they were."""
    net = _bn_net(False)
    was_mkldnn, was_dtype = torch._C._get_mkldnn_enabled(), torch.get_default_dtype()
    try:
        torch._C._set_mkldnn_enabled(False)
        torch.set_default_dtype(torch.float64)
        with torch.no_grad():
            settings = global_settings()
            rfprobe.verify(net)
            assert_settings_unchanged(settings, "verify under no_grad, float64 default, mkldnn off")
    finally:
        torch._C._set_mkldnn_enabled(was_mkldnn)
        torch.set_default_dtype(was_dtype)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_model_on_two_devices_unchanged():
    net = _bn_net(False)
    net[4].cuda()
    before, settings = snapshot(net), global_settings()
    for entry in ("analyze", "probe", "verify"):
        _call(entry, net)
    assert_unchanged(net, before)
    assert_settings_unchanged(settings)


def test_snapshot_sees_every_kind_of_change():
    """The helper itself: each mutation a buggy rfprobe could make is reported."""
    mutations = {
        "value": lambda n: n[0].weight.data.add_(1e-7),
        "running stats": lambda n: n[1].running_mean.add_(1),
        "grad": lambda n: n[0].weight.grad.mul_(2),
        "grad dropped": lambda n: setattr(n[0].weight, "grad", None),
        "training": lambda n: n[1].train(),
        "requires_grad": lambda n: n[0].weight.requires_grad_(False),
        "dtype": lambda n: n[4].double(),
        "parameter replaced": lambda n: setattr(n[0], "weight", nn.Parameter(n[0].weight.detach().clone())),
        "forward hook": lambda n: n[2].register_forward_hook(lambda *a: None),
        "hook removed": lambda n: n[0]._forward_hooks.clear(),
        "tensor hook": lambda n: n[4].weight.register_hook(lambda g: g),
        "state dict hook": lambda n: n[2]._register_state_dict_hook(lambda *a: None),
        "attribute": lambda n: setattr(n[2], "rfprobe_token", "x"),
        "plain value": lambda n: setattr(n[3], "stride", 3),
        "momentum": lambda n: setattr(n[1], "momentum", 0.5),
    }
    for what, mutate in mutations.items():
        net, _ = _hooked_net()
        before = snapshot(net)
        mutate(net)
        with pytest.raises(AssertionError):
            assert_unchanged(net, before, what)
    settings = global_settings()
    with torch.no_grad():
        with pytest.raises(AssertionError, match="grad mode"):
            assert_settings_unchanged(settings)
    torch.rand(1)
    with pytest.raises(AssertionError, match="RNG"):
        assert_settings_unchanged(settings)


class _WritesIntoInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 3, 3)

    def forward(self, x):
        x.mul_(2)                  # in place, on the input
        return self.c(x)


def test_model_writing_into_its_input():
    """A forward that modifies its input in place must still be probed (the probe's input is a
    leaf that requires grad: the model gets a copy), and the user's ``inputs`` stay as they were.
    conv3: 3x3 by hand."""
    model = _WritesIntoInput()
    x = torch.rand(2, 3, 9, 9, generator=torch.Generator().manual_seed(0))
    x0 = x.clone()
    assert rfprobe.probe(model).size == (3, 3)
    assert rfprobe.verify(model).ok
    rfprobe.probe(model, mode="actual", inputs=x[:1])     # one input (a batch is refused)
    rfprobe.erf(model, inputs=x)
    assert torch.equal(x, x0)


def test_cli_really_loads_the_users_object():
    """The CLI row above must exercise `module:attr` (exit 0 or 1), not fail to import it (2);
    and the object it loaded is the user's, left in training mode."""
    model = _bn_net(True)
    assert _cli(model) in (0, 1)
    assert model.training and model[1].training


def test_inside_inference_mode_the_probe_still_measures():
    """Inside torch.inference_mode() no gradient is recorded: the probe used to return an empty
    RF (and verify blamed 'integer ops'). Every gradient route now runs outside it, gives the
    exact route's answer, and the caller's mode is back afterwards."""
    net = rfprobe.build("conv3 relu conv3/s2 conv3", in_channels=2)
    want = rfprobe.analyze(net).size
    with torch.inference_mode():
        assert rfprobe.probe(net).size == want
        assert rfprobe.verify(net).ok
        assert rfprobe.probe_many(net, [(0, 0), (-1, -1)])[0].size == want
        assert rfprobe.erf(net, n=2).theoretical == want
        assert torch.is_inference_mode_enabled()
