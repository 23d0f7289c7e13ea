"""The bad-input catalogue: one test per row of docs/errors.md.

Each row: an id, a call a user could make, the RFProbeError subclass it must raise, and
fragments the message must contain (the argument's name, the bad value, the fix). Apart from
ModelError (which chains the user's own exception, on purpose), no error may carry a chained
traceback, and every one must be raised from rfprobe's code, not from inside torch.
"""
from __future__ import annotations

import os
import re
import traceback

import numpy as np
import pytest
import torch
import torch.nn as nn

import rfprobe
from tests.models import UNKNOWN_OP, MeanGate, SpaceToDepthStem, rfprobe_test_op
from rfprobe.errors import (ArgumentError, GlobalOpError, InternalError, ModelError, ResourceError, RFProbeError,
                            SpecError, UnknownOpError)

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "errors.md")
RFPROBE_DIR = os.path.dirname(os.path.abspath(rfprobe.__file__))


def net3():
    return rfprobe.build("conv3 relu conv3", in_channels=3)


class Named(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.features(x))


class DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 3, 3)

    def forward(self, x):
        y = self.c(x)
        return {"a": y, "b": y * 2}


class Raises(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 3, 3)

    def forward(self, x):
        raise RuntimeError("boom from the user's forward")


class ChannelsLastSplit(nn.Module):
    """Channels moved last, then split in two dims: no single channel dim to seed."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 3, 3)

    def forward(self, x):
        return self.c(x).permute(0, 2, 3, 1).unflatten(-1, (1, 3))


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.c(x).mean((2, 3)))


class UsesAnUnknownOp(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 3, 3)

    def forward(self, x):
        return rfprobe_test_op(self.c(x), -1)


def analyze_unknown_op():
    return rfprobe.analyze(UsesAnUnknownOp())


def nan_net():
    net = net3()
    with torch.no_grad():
        net[0].weight[0, 0, 0, 0] = float("nan")
        net[2].bias[0] = float("inf")
    return net


def huge_weights():
    net = rfprobe.build("conv3 conv3 conv3", in_channels=3)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(1e25)            # float32 overflows to inf after two layers
    return net


def meta_net():
    with torch.device("meta"):
        return rfprobe.build("conv3 bn relu conv3", in_channels=3)


def broken_rule():
    """rfprobe's own code crashing while it follows conv2d (a bug of rfprobe's, simulated): the
    model is not at fault."""
    from rfprobe.trace import infer
    saved = infer._same_sizes
    infer._same_sizes = lambda *args: list(None)
    try:
        return rfprobe.analyze(net3(), (3, 9, 9))
    finally:
        infer._same_sizes = saved


def scripted_net():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # torch.jit.script is deprecated in recent torch
        return torch.jit.script(net3())


def _absent_backend() -> str:
    """A backend this torch cannot use here ("mps" on most machines), found with plain torch."""
    for device in ("mps", "xpu", "hpu", "xla"):
        try:
            torch.empty(0, device=device)
        except Exception:
            return device
    raise AssertionError("every backend is usable here")


ABSENT = _absent_backend()


def big_net():
    return nn.Sequential(nn.Conv2d(3, 64, 3), nn.Conv2d(64, 64, 3))


class _Heads(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 1, 3)

    def forward(self, x):
        y = self.a(x)
        return {"small": y, "big": y + 1}


class LayerDict(nn.Module):
    """A module whose layer ``heads`` returns a dict."""

    def __init__(self):
        super().__init__()
        self.heads = _Heads()

    def forward(self, x):
        return self.heads(x)["small"]


_HOOK_FEATS: dict = {}


def _fills_a_global(m, i, o):
    _HOOK_FEATS["b"] = o


class GlobalHookDict(nn.Module):
    """Returns the dict it holds, which its conv's hook fills through a global: the private
    copy's forward returns the copy's dict, which no copy can point that hook at."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 1, 3)
        self.feats = _HOOK_FEATS
        self.c.register_forward_hook(_fills_a_global)

    def forward(self, x):
        self.c(x)
        return self.feats


class ThroughPython(nn.Module):
    """A path through Python values: the conv's output, as a list, made a tensor again."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3)

    def forward(self, x):
        return torch.tensor(self.conv(x).tolist())


# id: (call, error class, message fragments)
CASES = {
    "not-a-module": (lambda: rfprobe.analyze(42), ArgumentError, ["model must be", "int", "spec string"]),
    "spec-typo-layer": (lambda: rfprobe.analyze("conv3 rleu"), SpecError, ["'rleu'", "Did you mean 'relu'"]),
    "spec-typo-option": (lambda: rfprobe.build("conv3/stride2"), SpecError, ["'/stride2'", "Did you mean '/s2'"]),
    "spec-typo-dict-key": (lambda: rfprobe.build([{"op": "conv", "kernal": 3}]), SpecError,
                           ["'kernal'", "Did you mean 'kernel'"]),
    "wrong-channel-count": (lambda: rfprobe.analyze(net3(), (1, 32, 32)), ArgumentError,
                            ["input_shape=(1, 32, 32)", "1 channels", "input_shape=(3, ...)"]),
    "input-too-small": (lambda: rfprobe.probe(net3(), input_shape=(3, 3, 3)), ArgumentError,
                        ["input_shape=(3, 3, 3)", "too small", "works"]),
    "input-wrong-rank": (lambda: rfprobe.analyze(net3(), (3, 32)), ArgumentError,
                         ["input_shape=(3, 32)", "rank 2", "give 3 numbers"]),
    "input-rank-of-a-1d-model": (lambda: rfprobe.analyze(nn.Sequential(nn.Conv1d(1, 4, 3)), (1, 64, 64)),
                                 ArgumentError, ["input_shape=(1, 64, 64) has rank 3", "takes (C, L)",
                                                 "give 2 numbers"]),
    "input-shape-a-tensor": (lambda: rfprobe.analyze(net3(), torch.rand(3, 16, 16)), ArgumentError,
                             ["got a tensor of shape (3, 16, 16)", "inputs="]),
    "input-size-zero": (lambda: rfprobe.analyze(net3(), (3, 0, 8)), ArgumentError, ["input_shape=(3, 0, 8)", "below 1"]),
    "input-not-a-tuple": (lambda: rfprobe.analyze(net3(), 5), ArgumentError, ["input_shape=5", "tuple like"]),
    "unit-out-of-range": (lambda: rfprobe.probe(net3(), unit=(100, 0), input_shape=(3, 16, 16)), ArgumentError,
                          ["unit=(100, 0)", "out of range", "(12, 12)"]),
    "unit-wrong-rank": (lambda: rfprobe.probe(net3(), unit=(1, 2, 3)), ArgumentError,
                        ["unit=(1, 2, 3)", "3 indices", "2 spatial axes"]),
    "unit-not-ints": (lambda: rfprobe.probe(net3(), unit="centre"), ArgumentError, ["unit='centre'", "tuple of ints"]),
    "layer-typo": (lambda: rfprobe.probe(Named(), layer="featurs"), ArgumentError,
                   ["layer='featurs'", "Did you mean 'features'"]),
    "layer-foreign-module": (lambda: rfprobe.probe(Named(), layer=Named().features), ArgumentError,
                             ["layer= got a Sequential module that is not part of this model", "another object"]),
    "output-key": (lambda: rfprobe.probe(DictOut(), output="c"), ArgumentError, ["output='c'", "['a', 'b']"]),
    "output-not-in-layer": (lambda: rfprobe.analyze(LayerDict(), (1, 8, 8), layer="heads", output="smal"),
                            ArgumentError, ["output='smal'", "module 'heads'", "['small', 'big']",
                                            "Did you mean 'small'"]),
    "hook-through-a-global": (lambda: rfprobe.analyze(GlobalHookDict(), (1, 8, 8), output="b"), ArgumentError,
                              ["output='b'", "forward hook '_fills_a_global' on module 'c'",
                               "through the global '_HOOK_FEATS'", "closure variable"]),
    "lost-path": (lambda: rfprobe.analyze(ThroughPython(), (1, 8, 8)), UnknownOpError,
                  ["op 'tensor'", "tolist", "cannot follow values through Python"]),
    "forward-raises": (lambda: rfprobe.probe(Raises()), ModelError,
                       ["boom from the user's forward", "RuntimeError", "input_shape="]),
    "nan-weights-actual": (lambda: rfprobe.probe(nan_net(), mode="actual"), ArgumentError,
                           ["'0.weight'", "1 NaN", "mode='structural'"]),
    "nan-inputs-actual": (lambda: rfprobe.probe(net3(), mode="actual", inputs=torch.full((1, 3, 9, 9), float("inf"))),
                          ArgumentError, ["inputs has 243", "finite"]),
    "gradient-overflow-actual": (lambda: rfprobe.probe(huge_weights(), mode="actual"), ModelError,
                                 ["NaN or infinite", "mode='actual'", "dtype=torch.float64"]),
    "integer-dtype": (lambda: rfprobe.probe(net3(), dtype=torch.int64), ArgumentError, ["dtype=torch.int64", "float32"]),
    "complex-dtype": (lambda: rfprobe.probe(net3(), dtype=torch.complex64), ArgumentError,
                      ["dtype=torch.complex64", "complex"]),
    "integer-inputs": (lambda: rfprobe.probe(net3(), mode="actual", inputs=torch.ones(1, 3, 9, 9, dtype=torch.long)),
                       ArgumentError, ["inputs has dtype torch.int64", "inputs.float()"]),
    "complex-model": (lambda: rfprobe.probe(nn.Conv2d(3, 3, 3, dtype=torch.complex64)), ArgumentError,
                      ["complex tensor 'weight'", "real"]),
    "meta-model-actual": (lambda: rfprobe.probe(meta_net(), mode="actual"), ArgumentError,
                          ["meta device", "to_empty", "mode='structural'"]),
    "rf-too-large-for-memory": (lambda: rfprobe.probe(big_net(), input_shape=(3, 20000, 20000), full=True),
                                ResourceError, ["GiB", "input_shape=(3, 20000, 20000)", "slab mode", "max_memory="]),
    "max-memory-exceeded": (lambda: rfprobe.probe(net3(), input_shape=(3, 64, 64), max_memory=1000), ResourceError,
                            ["max_memory=", "GiB"]),
    "no-spatial-output": (lambda: rfprobe.analyze(Classifier()), ArgumentError,
                          ["without spatial axes", "op 'mean' (node 'mean#0') lost them", "layer=... (e.g. layer='c', the last module whose output has a local RF)"]),
    "global-op-box": (lambda: rfprobe.analyze(MeanGate(3)).box(), GlobalOpError, ["global", "mean"]),
    "unknown-op": (analyze_unknown_op, UnknownOpError, [f"'{UNKNOWN_OP}'", "register_rule"]),
    "mode-typo": (lambda: rfprobe.probe(net3(), mode="structual"), ArgumentError, ["mode='structual'", "'actual'"]),
    "channel-out-of-range": (lambda: rfprobe.probe(net3(), channel=9), ArgumentError, ["channel=9", "3 channels"]),
    "device-unknown": (lambda: rfprobe.probe(net3(), device="gpu"), ArgumentError, ["device='gpu'", "'cpu'"]),
    "device-absent": (lambda: rfprobe.probe(net3(), device=ABSENT), ArgumentError,
                      [f"device={ABSENT!r} is not available here", "'cpu' (usable here)"]),
    "device-meta": (lambda: rfprobe.probe(net3(), device="meta"), ArgumentError, ["device='meta'", "'cpu'"]),
    "erf-meta-model": (lambda: rfprobe.erf(meta_net(), n=2), ArgumentError,
                       ["meta device", "erf (the effective RF) needs the real weights", "to_empty"]),
    "erf-n-bool": (lambda: rfprobe.erf(net3(), n=True), ArgumentError, ["n=True", "positive int"]),
    "output-layout": (lambda: rfprobe.probe(ChannelsLastSplit()), ArgumentError,
                      ["(1, 30, 30, 1, 3)", "(N, C, *spatial) or channels-last (N, *spatial, C)"]),
    "internal-error": (broken_rule, InternalError,
                       ["rfprobe failed on op 'conv2d'", "TypeError", "limitation of rfprobe", "not a fault of your model",
                        "report"]),
    "guessed-channels": (lambda: rfprobe.analyze(SpaceToDepthStem()), ArgumentError,
                         ["guessed 48 input channels", "'conv' (Conv2d)", "input_shape=(C, H, W)"]),
    "torchscript-model": (lambda: rfprobe.analyze(scripted_net()), ArgumentError,
                          ["TorchScript module", "RecursiveScriptModule", "before torch.jit.script"]),
    "inputs-in-structural-mode": (lambda: rfprobe.probe(net3(), inputs=torch.rand(1, 3, 9, 9)), ArgumentError,
                                  ["inputs=", "mode='actual'"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case):
    call, cls, fragments = CASES[case]
    with pytest.raises(RFProbeError) as info:
        call()
    e = info.value
    assert type(e) is cls, f"{case}: {type(e).__name__} ({e}), expected {cls.__name__}"
    for f in fragments:
        assert f in str(e), f"{case}: {f!r} not in the message: {e}"
    raised_in = traceback.extract_tb(e.__traceback__)[-1].filename
    assert os.path.abspath(raised_in).startswith(RFPROBE_DIR), f"{case}: raised from {raised_in}"
    if cls is ModelError:
        assert e.__cause__ is not None or "NaN" in str(e), "the user's error is chained"
    elif cls is InternalError:
        assert e.__cause__ is not None, "rfprobe's own error is chained, for the report"
    else:
        assert e.__cause__ is None and (e.__context__ is None or e.__suppress_context__), \
            f"{case}: a chained traceback from {type(e.__cause__ or e.__context__).__name__}"


def test_forward_error_shows_the_users_exception():
    with pytest.raises(ModelError) as info:
        rfprobe.probe(Raises())
    assert isinstance(info.value.__cause__, RuntimeError)
    assert str(info.value.__cause__) == "boom from the user's forward"


def test_structural_mode_ignores_nan_weights():
    """Decision (docs/errors.md): structural mode never reads weight values, so NaN or inf
    weights give the same RF as clean ones (conv3 relu conv3: 5x5 by hand)."""
    assert rfprobe.probe(nan_net()).size == (5, 5)
    assert rfprobe.verify(nan_net()).ok


def test_meta_model_in_structural_mode():
    """Decision: a meta-device model has shapes but no values; structural mode needs none of
    its weights (BN statistics are set neutral anyway), so it is probed. conv3 bn relu conv3: 5x5."""
    e = rfprobe.probe(meta_net().eval())
    assert e.size == (5, 5) and e.box == rfprobe.probe(rfprobe.build("conv3 bn relu conv3", in_channels=3).eval()).box


def test_cli_bad_input_exits_2_without_traceback(capsys):
    from rfprobe.cli import main
    assert main(["verify", "conv3 rleu"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'relu'" in err and "Traceback" not in err


def test_catalogue_matches_docs():
    """Every row of docs/errors.md is tested here and every test case is documented."""
    with open(DOC) as f:
        doc = f.read()
    rows = dict(re.findall(r"^\| `([a-z0-9-]+)` \| .*? \| `([A-Za-z]+)` \|", doc, flags=re.M))
    ids = set(re.findall(r"^\| `([a-z0-9-]+)` \|", doc, flags=re.M))
    assert ids == set(CASES), f"undocumented: {set(CASES) - ids}; untested: {ids - set(CASES)}"
    assert set(rows) == ids, f"rows without an error class column: {ids - set(rows)}"
    wrong = {k: (rows[k], CASES[k][1].__name__) for k in ids if rows[k] != CASES[k][1].__name__}
    assert not wrong, f"the documented error class differs from the tested one: {wrong}"


def test_fractional_units_and_impossible_expectations_are_argument_errors():
    """unit=(1.5, 2) was truncated to (1, 2); size=-1 failed as an AssertionError (a test
    failure) instead of saying the argument is impossible."""
    from rfprobe.testing import assert_receptive_field
    a = rfprobe.analyze(net3(), (3, 9, 9))
    with pytest.raises(ArgumentError, match=r"unit=\(1.5, 2\) must be a tuple of ints"):
        a.region((1.5, 2))
    assert a.region((np.int64(1), 2)).box == a.region((1, 2)).box
    for kw in ({"size": -1}, {"stride": -2}, {"size": (3, 0)}):
        with pytest.raises(ArgumentError, match="must be an int of at least"):
            assert_receptive_field(net3(), **kw)


def test_actual_mode_inputs_are_read_with_the_models_rank():
    """A (C, H, W) image is one input with C channels (its channels were taken as the batch: a
    1-channel image gave a 1-D answer); a batch of several, or a conflicting input_shape, is
    refused rather than silently cut."""
    net = rfprobe.build("conv3 conv3", in_channels=1)
    r = rfprobe.probe(net, mode="actual", inputs=torch.rand(1, 9, 9))
    assert r.input_shape == (1, 9, 9) and r.box == ((2, 6), (2, 6))
    with pytest.raises(ArgumentError, match="inputs has a batch of 3"):
        rfprobe.probe(net, mode="actual", inputs=torch.rand(3, 1, 9, 9))
    with pytest.raises(ArgumentError, match=r"input_shape=\(1, 8, 8\) disagrees"):
        rfprobe.probe(net, mode="actual", inputs=torch.rand(1, 9, 9), input_shape=(1, 8, 8))


@pytest.mark.parametrize("call", [lambda: rfprobe.erf(net3(), n=1, input_shape=(3, 9, 9), dtype=torch.int64),
                                  lambda: rfprobe.probe(net3(), seed="x"),
                                  lambda: rfprobe.erf(net3(), n=1, input_shape=(3, 9, 9), seed=1.5),
                                  lambda: rfprobe.probe_many(net3(), "centre")])
def test_more_bad_arguments_are_argument_errors(call):
    with pytest.raises(ArgumentError):
        call()


def test_erf_refuses_non_finite_inputs_and_analyze_checks_the_unit_of_a_fixed_input():
    net = rfprobe.build("conv3 conv3")
    with pytest.raises(ArgumentError, match="NaN or infinite"):
        rfprobe.erf(net, inputs=torch.full((2, 1, 9, 9), float("nan")))
    with pytest.raises(ArgumentError, match=r"unit=\(100, 0\) is out of range"):
        rfprobe.analyze(net, (1, 9, 9), unit=(100, 0))


def test_actual_mode_inputs_take_the_models_dtype():
    """A float64 model given float32 inputs in actual mode (and the reverse) ended in torch's
    "Input type (float) and bias type (double) should be the same", blamed on the model: the
    inputs are now cast to the model's dtype. Checked against a plain backward in float64."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3)).double()
    x = torch.rand(1, 3, 12, 12)
    p = rfprobe.probe(net, mode="actual", inputs=x, unit=(4, 4))
    x64 = x.double().requires_grad_(True)
    net(x64)[0, :, 4, 4].sum().backward()
    assert (p.mask == (x64.grad[0].abs().sum(0) > 0).numpy()).all()
    q = rfprobe.probe(net.float(), mode="actual", inputs=x.double(), unit=(4, 4))
    assert q.box == p.box
