"""The seed's claims and the known traps, each against a hand computation or an independent route.

Independent routes used here: the Distill recurrences by hand (in docstrings), the perturbation
oracle in ``tests/oracle.py`` (perturbs inputs of a positive float64 copy; shares no code with
rfprobe), and deliberately naive gradient probes written out below, to show the traps are real.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

import rfprobe
import rfprobe.testing            # rfprobe.testing.assert_receptive_field below: the plugin no longer imports it
from oracle import perturbation_rf
from rfprobe.errors import ArgumentError, RFProbeError


def naive_probe(net: nn.Module, input_shape, dtype=torch.float32) -> tuple[int, ...]:
    """What a tutorial does: ones input, the model as it is, backprop a one-hot from the centre,
    take the extent of the nonzero gradient per axis (0 when nothing is nonzero)."""
    net = copy.deepcopy(net).to(dtype).eval()
    x = torch.ones((1, *input_shape), dtype=dtype, requires_grad=True)
    y = net(x)
    g = torch.zeros_like(y)
    g[(0, slice(None)) + tuple(n // 2 for n in y.shape[2:])] = 1
    y.backward(g)
    m = (x.grad[0] != 0).any(0).numpy()
    out = []
    for a in range(m.ndim):
        idx = np.flatnonzero(m.any(axis=tuple(b for b in range(m.ndim) if b != a)))
        out.append(int(idx[-1] - idx[0] + 1) if len(idx) else 0)
    return tuple(out)


def oracle_check(net, r: rfprobe.Report):
    """The perturbation oracle on the probe's input and unit gives the probe's exact mask."""
    o = perturbation_rf(net, r.probe.input_shape, r.probe.unit)
    assert np.array_equal(o.mask, r.probe.mask)
    return o


# ----------------------------------------------------------------------------- the seed's claims
@pytest.mark.parametrize("spec, size, stride", [
    ("conv3 relu conv3", 5, 1),              # 3 + 2*1
    ("conv3 relu conv3 relu conv3", 7, 1),   # 5 + 2*1
    ("conv3/s2 relu conv3", 7, 2),           # 3 + 2*2: the second conv's taps are 2 apart
    ("conv5", 5, 1),
    ("conv7", 7, 1),
])
def test_small_stacks(spec, size, stride):
    net = rfprobe.build(spec, in_channels=2, channels=3).eval()
    r = rfprobe.verify(net)
    assert r.ok, str(r)
    assert r.size == (size, size) and r.stride == (stride, stride) and r.padding == (0, 0)
    assert r.closed_box == r.exact_box == r.probe_box
    o = oracle_check(net, r)
    assert o.box == r.probe_box and o.mask.sum() == size * size       # a solid square


@pytest.mark.parametrize("small, big, small_w, big_w, small_b, big_b", [
    ("conv3 relu conv3", "conv5", 18, 25, 2, 1),                 # 2 * 3 * 3 vs 5 * 5
    ("conv3 relu conv3 relu conv3", "conv7", 27, 49, 3, 1),      # 3 * 3 * 3 vs 7 * 7
])
def test_same_rf_fewer_weights(small, big, small_w, big_w, small_b, big_b):
    s, b = rfprobe.cost(small), rfprobe.cost(big)
    assert (s.params_no_bias, b.params_no_bias) == (small_w, big_w)
    assert (s.params - s.params_no_bias, b.params - b.params_no_bias) == (small_b, big_b)
    assert rfprobe.verify(small).size == rfprobe.verify(big).size
    # C channels in and out: weights scale with C*C per layer, biases with C
    c = 8
    s = rfprobe.cost(small, in_channels=c, channels=c)
    assert s.params_no_bias == small_w * c * c and s.params == small_w * c * c + small_b * c


# ----------------------------------------------------------------------------- known traps
def test_maxpool_ties_give_ten():
    """2 x (conv3 relu maxpool2): r = 3, 4 (S 2), 4 + 2*2 = 8, 8 + 1*2 = 10 (S 4)."""
    net = rfprobe.build("conv3 relu maxpool2 conv3 relu maxpool2").eval()
    r = rfprobe.verify(net)
    assert r.ok and r.size == (10, 10) and r.stride == (4, 4)
    assert oracle_check(net, r).box == r.probe_box
    # the trap: a float32 probe with a ones input and the real max-pool. Positive weights (so
    # nothing is dead) still give equal activations in every window: the tie routes the
    # gradient to one element and the answer shrinks.
    positive = copy.deepcopy(net)
    with torch.no_grad():
        for name, p in positive.named_parameters():
            p.fill_(0.0 if name.endswith("bias") else 0.1)
    naive = naive_probe(positive, (1, 24, 24))
    assert 0 < naive[0] < 10 and 0 < naive[1] < 10


def test_dead_relus_still_give_the_structural_rf():
    """conv3 relu conv3 relu conv3 with every bias at -1000: every ReLU is 0 on any sane input,
    so the user's model ignores its input, but the architecture's RF is still 7."""
    net = rfprobe.build("conv3 relu conv3 relu conv3").eval()
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Conv2d):
                m.bias.fill_(-1000.0)
    assert naive_probe(net, (1, 16, 16)) == (0, 0)                       # the trap
    assert rfprobe.probe(net, mode="actual").mask.sum() == 0             # actual mode says so
    r = rfprobe.verify(net)
    assert r.ok and r.size == (7, 7)
    oracle_check(net, r)


def test_dilation_holes():
    """conv3/d4: taps at 0, 4, 8: box 9 wide, 3 of 9 positions per axis, 9 of 81 in 2-D."""
    net = rfprobe.build("conv3/d4")
    e = rfprobe.probe(net)
    assert e.size == (9, 9)
    assert e.axis_coverage == pytest.approx((3 / 9, 3 / 9))
    assert e.coverage == pytest.approx(9 / 81)
    (r0, _), (c0, _) = e.box
    taps = np.zeros(e.mask.shape, bool)
    taps[np.ix_([r0, r0 + 4, r0 + 8], [c0, c0 + 4, c0 + 8])] = True
    assert np.array_equal(e.mask, taps)
    r = rfprobe.verify(net)
    assert r.ok and r.size == (9, 9)
    assert any("holes" in d for d in r.diagnoses)
    assert np.array_equal(perturbation_rf(net, e.input_shape, e.unit).mask, taps)


@pytest.mark.parametrize("depth, dims, size", [(150, 2, 301), (500, 1, 1001)])
def test_deep_conv3_stacks_are_exact(depth, dims, size):
    """depth conv3 layers: r = 1 + 2 * depth. PyTorch's default init (seeded); rfprobe picks
    an input that holds the centre unit's whole RF."""
    torch.manual_seed(0)
    conv = [nn.Conv1d, nn.Conv2d][dims - 1]
    net = nn.Sequential(*[conv(1, 1, 3) for _ in range(depth)])
    r = rfprobe.verify(net)
    assert r.ok, str(r)
    assert r.size == (size,) * dims
    assert r.probe.size == (size,) * dims and not r.probe.truncated
    inner = r.probe.mask[tuple(slice(lo, hi + 1) for lo, hi in r.probe.box)]
    assert inner.all()                            # solid: no holes from underflow either


def test_naive_float32_probe_loses_the_tails_of_deep_stacks():
    """The same naive probe is exact on a shallow stack and loses the tails past ~80 layers
    (the gradient's tails are products of ~depth small weights: they underflow)."""
    torch.manual_seed(0)
    sizes = {}
    for depth in (40, 100, 150):
        net = nn.Sequential(*[nn.Conv1d(1, 1, 3) for _ in range(depth)])
        sizes[depth] = naive_probe(net, (1, 2 * depth + 1))[0]
        assert rfprobe.probe(net).size == (2 * depth + 1,)
    assert sizes[40] == 81                        # exact while shallow: the naive probe is sound
    assert sizes[100] < 201 and sizes[150] < 301  # and loses the tails when deep


def test_batchnorm_in_training_mode_is_diagnosed():
    net = rfprobe.build("conv3 bn relu conv3")
    assert net.training
    r = rfprobe.verify(net)
    assert r.analysis.status == "global" or not r.ok
    assert any("batch_norm" in d and "training mode" in d for d in r.diagnoses), r.diagnoses
    verdict = str(r).splitlines()[-1]
    assert "global" in verdict and "RF 8x8" not in verdict   # the input's size is not an RF size
    assert net.training                           # the user's flag is untouched
    with pytest.raises(AssertionError, match="global"):
        rfprobe.testing.assert_receptive_field(net, size=5)
    net.eval()
    r = rfprobe.verify(net)
    assert r.ok and r.size == (5, 5) and r.analysis.status == "ok"


# ----------------------------------------------------------------------------- analyze
def test_nested_sequentials():
    """conv3, then conv3/s2 two levels down, then conv3: r 3, 5 (S 2), 5 + 2*2 = 9."""
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()),
        nn.Sequential(nn.Sequential(nn.Conv2d(4, 4, 3, stride=2))),
        nn.Conv2d(4, 2, 3),
    ).eval()
    a = rfprobe.analyze(net)
    assert (a.size, a.stride, a.padding) == ((9, 9), (2, 2), (0, 0))
    assert [row.size for row in a.layers if row.op == "conv2d"] == [(3, 3), (5, 5), (9, 9)]
    assert [row.name for row in a.layers] == ["0.0", "0.1", "1.0.0", "2"]
    r = rfprobe.verify(net)
    assert r.ok
    oracle_check(net, r)


@pytest.mark.parametrize("dims, kernel, stride, padding", [
    (1, (5,), (2,), (1,)),
    (2, (1, 7), (1, 2), (0, 3)),
    (3, (3, 1, 5), (2, 1, 1), (1, 0, 2)),
])
def test_one_two_three_d(dims, kernel, stride, padding):
    """conv(k, s, p) then conv3: per axis r = k + 2s, S = s, P = p."""
    conv = [nn.Conv1d, nn.Conv2d, nn.Conv3d][dims - 1]
    net = nn.Sequential(conv(2, 2, kernel, stride, padding), nn.ReLU(), conv(2, 1, 3)).eval()
    a = rfprobe.analyze(net)
    assert a.size == tuple(k + 2 * s for k, s in zip(kernel, stride))
    assert a.stride == stride and a.padding == padding
    r = rfprobe.verify(net)
    assert r.ok
    oracle_check(net, r)


def test_ceil_mode():
    """conv3 then maxpool3/s2/ceil on 10: conv gives 8, pool ceil((8 - 3) / 2) + 1 = 4 (3
    without ceil). RF 3 + 2 = 5, stride 2. The last unit's window hangs over the edge: its
    exact set is clipped, and the probe agrees with it and with the oracle."""
    net = rfprobe.build("conv3 maxpool3/s2/ceil").eval()
    a = rfprobe.analyze(net, (1, 10, 10))
    assert a.output_shape[2:] == (4, 4)
    assert rfprobe.analyze(rfprobe.build("conv3 maxpool3/s2"), (1, 10, 10)).output_shape[2:] == (3, 3)
    assert (a.size, a.stride) == ((5, 5), (2, 2))
    r = rfprobe.verify(net, (1, 10, 10), unit=(-1, -1))
    assert r.ok
    assert r.closed_box == ((6, 10), (6, 10))     # 3*2 .. 3*2 + 4: index 10 is past the input
    assert r.probe_box == ((6, 9), (6, 9)) and r.probe.truncated
    assert any("truncation" in d for d in r.diagnoses)
    oracle_check(net, r)


def test_box_of_a_unit():
    """conv3 conv3/s2 conv3: r = 3, 5 (S 2), 9; unit i sees [2i, 2i + 8]."""
    a = rfprobe.analyze(rfprobe.build("conv3 conv3/s2 conv3"), (1, 20, 20))
    assert a.box((0, 0)) == ((0, 8), (0, 8))
    assert a.box((2, 3)) == ((4, 12), (6, 14))
    assert a.box((-1, -1)) == a.box(tuple(n - 1 for n in a.output_shape[2:]))


# ----------------------------------------------------------------------------- the user's model
def _snapshot(net: nn.Module):
    return {
        "params": {n: (p.detach().clone(), p.requires_grad, p.dtype, p.device,
                       None if p.grad is None else p.grad.clone()) for n, p in net.named_parameters()},
        "buffers": {n: b.clone() for n, b in net.named_buffers()},
        "training": [m.training for m in net.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
                  for m in net.modules()],
    }


def _same(a, b) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, dict):
            if not _same(x, y):
                return False
        elif isinstance(x, tuple):
            for u, v in zip(x, y):
                if isinstance(u, torch.Tensor) or isinstance(v, torch.Tensor):
                    if u is None or v is None or not torch.equal(u, v):
                        return False
                elif u != v:
                    return False
        elif isinstance(x, torch.Tensor):
            if not torch.equal(x, y):
                return False
        elif x != y:
            return False
    return True


def _user_model():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 4, 3, dilation=2), nn.Dropout(0.5))
    net[0].weight.requires_grad_(False)
    net(torch.randn(2, 3, 16, 16)).sum().backward()        # .grad set, BN stats moved
    net[4].register_forward_hook(lambda m, i, o: None)
    net[1].eval()                                          # a mixed train/eval state
    return net


@pytest.mark.parametrize("call", [
    lambda n: rfprobe.analyze(n),
    lambda n: rfprobe.probe(n),
    lambda n: rfprobe.probe(n, mode="actual"),
    lambda n: rfprobe.verify(n, unit=(0, 0)),
    lambda n: rfprobe.cost(n, (3, 16, 16)),
    lambda n: rfprobe.probe(n, unit=(99, 99)),                       # raises
    lambda n: rfprobe.verify(n, input_shape=(5, 16, 16)),            # raises
], ids=["analyze", "probe", "probe-actual", "verify", "cost", "probe-raises", "verify-raises"])
def test_the_users_model_is_unchanged(call):
    net = _user_model()
    before = _snapshot(net)
    try:
        call(net)
    except RFProbeError:
        pass
    assert _same(before, _snapshot(net))


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, match", [
    (lambda: rfprobe.verify(rfprobe.build("conv3", in_channels=3), input_shape=(1, 8, 8)), "channels"),
    (lambda: rfprobe.probe(rfprobe.build("conv3"), unit=(40, 0), input_shape=(1, 8, 8)), "unit"),
    (lambda: rfprobe.probe(rfprobe.build("conv3"), unit=(1, 2, 3)), "unit"),
    (lambda: rfprobe.analyze(nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())),
     "without spatial axes"),
    (lambda: rfprobe.verify(42), "model"),
    (lambda: rfprobe.analyze(rfprobe.build("conv3 conv3"), (1, 3, 3)), "input_shape"),
    (lambda: rfprobe.probe(rfprobe.build("conv3"), mode="exact"), "mode"),
    (lambda: rfprobe.verify(rfprobe.build("conv3"), input_shape="1,8,8"), "input_shape='1,8,8'"),
    (lambda: rfprobe.verify(rfprobe.build("conv3"), input_shape=(1, "x", 8)), "input_shape"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(RFProbeError, match=match):
        call()


def test_bad_input_errors_are_value_errors():
    with pytest.raises(ValueError):
        rfprobe.probe(rfprobe.build("conv3"), unit=(40, 0), input_shape=(1, 8, 8))
    assert issubclass(ArgumentError, RFProbeError)


def test_a_unit_that_reads_only_padding():
    """conv1/p1: output (0, 0) reads input (-1, -1), which is padding: an empty RF in the input,
    truncated, and every route says so (found by the property test: it used to crash)."""
    r = rfprobe.verify("conv1/p1", (1, 4, 4), unit=(0, 0))
    assert r.ok and r.closed_box == r.exact_box == ((-1, -1), (-1, -1))
    assert not r.probe.mask.any() and r.probe.size == (0, 0) and r.probe.truncated
    assert r.analysis.region((0, 0), bounded=True).size == (0, 0)
    assert any("truncation" in d for d in r.diagnoses)
    assert not perturbation_rf(rfprobe.build("conv1/p1"), (1, 4, 4), (0, 0)).mask.any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_probe_on_cuda_has_no_transform_leakage():
    """Float32 convs with 11x11 and 15x15 kernels on cuDNN left ~6e-8 at ~1,900 positions outside
    the RF (design.md); the probe must use direct algorithms. RF 11 + 14 + 10 = 35."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 11), nn.ReLU(), nn.Conv2d(16, 16, 15), nn.ReLU(),
                        nn.Conv2d(16, 4, 11)).cuda()
    r = rfprobe.verify(net, input_shape=(3, 64, 64))
    assert r.ok, str(r)
    assert r.size == (35, 35) and r.probe.mask.sum() == 35 * 35
    assert next(net.parameters()).device.type == "cuda"


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("spec", [
    "conv4/same",                       # even kernel: PyTorch pads 1 left, 2 right
    "conv4/d3/same conv3",
    "conv3/dw/c4 conv1/c2",             # depthwise then pointwise (in_channels 4)
    "conv3/g2/c4 relu conv3/g4",
    "up2 conv3",                        # position-dependent: sizes 2 or 3
    "up2/bilinear conv3",
    "convT4/s2/p1 conv3",
    "convT3/s2/op1 conv3/d2",
    "conv2/same maxpool2/ceil",
    "avgpool3/s2/p1/ceil conv3/p1",
    "conv3/s2/d2/p2 maxpool3/s2/d2/p1 conv3",
])
def test_every_spec_layer_agrees_with_the_oracle(spec):
    net = rfprobe.build(spec, in_channels=4, channels=4).eval()
    r = rfprobe.verify(net)
    assert r.ok, str(r)
    oracle_check(net, r)
