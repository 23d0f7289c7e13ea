"""The fast probe stays exact: oneDNN on, one random pool, slab mode, several units per pass,
the auto-sized input, and CUDA (skipped without a GPU).

Every check compares the gradient probe with a route that shares no code with it: the exact
propagation of index sets (rules + graph walk), the probe with oneDNN switched off, separate
probes of single units, or the full (non-slab) probe. No timing is asserted here; the timings
live in bench/.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.profiler import ProfilerActivity, profile

import rfprobe
from rfprobe.routes.fit import choose_input

P = sys.modules["rfprobe.routes.probe"]


def exact_mask(e):
    """The exact route's set for the probed unit, within the input (bounded)."""
    return e.analysis.region(e.unit, bounded=True).input_mask()


def assert_exact(e):
    want = exact_mask(e)
    extra, missing = int((e.mask & ~want).sum()), int((want & ~e.mask).sum())
    assert extra == missing == 0, f"probe has {extra} extra and misses {missing} positions"


# ----------------------------------------------------------------------------- leakage
class BigKernels(nn.Module):
    """float32, 11x11 and 15x15 kernels (the sizes that leaked ~6e-8 under cuDNN's transform
    algorithms), 24 channels, 6 layers, one dilated and one strided: any leak is amplified by
    the per-op binarisation, so a single tiny nonzero outside the RF would show."""

    def __init__(self):
        super().__init__()
        c = 24
        self.body = nn.Sequential(
            nn.Conv2d(3, c, 11, padding=5), nn.ReLU(),
            nn.Conv2d(c, c, 15, padding=7), nn.ReLU(),
            nn.Conv2d(c, c, 11, padding=10, dilation=2), nn.ReLU(),
            nn.Conv2d(c, c, 15, stride=2, padding=7), nn.ReLU(),
            nn.Conv2d(c, c, 11, padding=5), nn.ReLU(),
            nn.Conv2d(c, c, 15, padding=7))

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("unit", [None, (0, 0), (3, -1)])
def test_big_float32_kernels_do_not_leak_with_onednn(unit):
    """Probe with oneDNN on (checked: aten::mkldnn_convolution ran) = exact route = probe with
    oneDNN off, for the centre unit and border units (whose RFs are clipped by the input)."""
    net = BigKernels().eval()
    shape = (3, 96, 96)
    assert torch.backends.mkldnn.is_available()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        e = rfprobe.probe(net, shape, unit=unit, full=True)
    assert any(k.key == "aten::mkldnn_convolution" for k in prof.key_averages()), \
        "oneDNN did not run: this test would not test it"
    assert_exact(e)
    with torch.backends.mkldnn.flags(enabled=False):
        off = rfprobe.probe(net, shape, unit=unit, full=True)
    assert np.array_equal(e.mask, off.mask)


def test_no_underflow_in_a_600_layer_stack():
    """600 conv3 layers in 1D: the RF's tails get weight ~3^-600 (1e-286, below float32's and
    even float64's range), so only the per-op rebinarisation keeps them: RF 1201, exactly."""
    net = rfprobe.build("conv3/p1 " * 600, dims=1, channels=2)
    e = rfprobe.probe(net, full=True)
    assert e.size == (1201,)
    assert_exact(e)


# ----------------------------------------------------------------------------- auto-sizing
SIZING = ["conv3 conv3/s2 conv3", "conv3/p1 conv3/s2/p1 conv3/s2/p1", "conv5/s3/d2 maxpool2/ceil conv3",
          "conv7/s2/p3 maxpool3/s2/p1 conv3/p1 conv3/s2/p1", "conv3/s2 conv3/s2 conv3/s2 conv3/s2",
          "conv3/d4/p2 conv3/s2 conv3/d2"]


@pytest.mark.parametrize("spec", SIZING)
def test_chosen_input_is_the_smallest_that_holds_the_rf(spec):
    """1D, checked by the probe (not by the analytic route that chose it): at the chosen length
    the centre unit's RF fits whole (size = closed form, not truncated); one shorter, no unit
    at all sees a whole RF (every unit's probed size is smaller), or the model cannot run."""
    net = rfprobe.build(spec, dims=1)
    e = rfprobe.probe(net, full=True)
    a = e.analysis
    assert not e.truncated and e.size == a.size
    assert_exact(e)
    n = e.input_shape[1]
    try:
        shorter = choose_input(net, (1, n - 1))
    except rfprobe.RFProbeError:
        return  # one shorter and the model has no output at all
    units = [(u,) for u in range(shorter.nodes[-1].shape[-1])]
    sizes = [r.size[0] for r in P.probe_many(net, units, (1, n - 1))]
    assert max(sizes) < a.size[0], (n, sizes)


# ----------------------------------------------------------------------------- slab mode
class TwoPaths(nn.Module):
    """A residual union of a dilated path and a strided path (unequal boxes: the RF is a union
    of products, not one product)."""

    def __init__(self, dims=2):
        super().__init__()
        Conv = [nn.Conv1d, nn.Conv2d, nn.Conv3d][dims - 1]
        self.a = nn.Sequential(Conv(1, 2, 3, padding=2, dilation=2), nn.ReLU(), Conv(2, 2, 3, padding=3, dilation=3))
        self.b = nn.Sequential(Conv(1, 2, 3, stride=2, padding=1), nn.Upsample(scale_factor=2),
                               Conv(2, 2, 5, padding=2))
        self.c = Conv(2, 2, 3, stride=2, padding=1)

    def forward(self, x):
        return self.c(self.a(x) + self.b(x))


SLABS = [
    (lambda: rfprobe.build("conv3/p1 conv3/s2/p1 conv3/d2/p2 conv5/p2 conv3/s2/p1 conv3/d3/p3"), (1, 64, 64), None),
    (lambda: rfprobe.build("conv3/p1 conv3/p1 maxpool3/s2/ceil conv3/d2/p2 avgpool3/s2/p1"), (1, 60, 44), (5, 2)),
    (lambda: rfprobe.build("conv3/p1 convT4/s2/p1 conv3/d2/p2"), (1, 40, 40), (7, 20)),
    (lambda: TwoPaths(), (1, 64, 64), None),
    (lambda: TwoPaths(), (1, 64, 64), (1, 30)),
    (lambda: rfprobe.build("conv3/p1 conv3/s2/p1 conv3/d2/p2 conv3/p1", dims=3), (1, 32, 32, 32), None),
]


@pytest.mark.parametrize("make, shape, unit", SLABS)
def test_slab_mode_gives_the_full_probes_box(make, shape, unit):
    """Slab mode's per-axis projections (and so its box) equal the full probe's, for strided,
    dilated, pooled, transposed and residual nets, 2D and 3D, centre and off-centre units."""
    net = make().eval()
    full = rfprobe.probe(net, shape, unit=unit, full=True)
    slab = rfprobe.probe(net, shape, unit=unit, full=False)
    assert full.slab is None and slab.slab is not None and slab.mask is None
    assert len(slab.slab) == len(shape) - 1
    assert slab.box == full.box and slab.size == full.size and slab.truncated == full.truncated
    for mine, theirs in zip(slab.axis_masks, full.axis_masks):
        assert np.array_equal(mine, theirs)
    assert_exact(full)
    assert slab.axis_coverage == full.axis_coverage


def test_slab_mode_is_automatic_for_large_inputs_and_verify_uses_it():
    """A 3D stack with RF 41^3 (68921 positions) stays full; with RF 101^3 (above SLAB_ABOVE)
    it goes to slab mode by itself, and verify still agrees (per-axis projections)."""
    small = rfprobe.probe(rfprobe.build("conv3/p1 " * 20, dims=3))
    assert small.slab is None and small.size == (41, 41, 41)
    net = rfprobe.build("conv3/p1 " * 50, dims=3)
    r = rfprobe.verify(net)
    assert r.probe.slab is not None and r.ok and r.size == (101, 101, 101)
    assert "unknown (slab mode" in str(r.probe)


def test_slab_mode_is_refused_where_it_cannot_be_exact():
    """A global op (BatchNorm in training mode) or a 1D model: the full probe runs."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 3, padding=1)).train()
    assert rfprobe.probe(net, input_shape=(1, 20, 20), full=False).slab is None
    assert rfprobe.probe(rfprobe.build("conv3/p1 " * 30, dims=1), full=False).slab is None


def test_full_must_be_a_bool_or_none():
    with pytest.raises(rfprobe.RFProbeError, match="full='yes'"):
        rfprobe.probe("conv3", full="yes")


# ----------------------------------------------------------------------------- several units
def _masks_equal_separate(net, units, shape):
    many = P.probe_many(net, units, shape)
    for u, m in zip(units, many):
        alone = rfprobe.probe(net, shape, unit=u, full=True)
        assert m.unit == alone.unit and m.box == alone.box and m.truncated == alone.truncated
        assert np.array_equal(m.mask, alone.mask), u
    return many


def test_probe_many_equals_separate_probes_in_fewer_passes(monkeypatch):
    """Corners, centre and two units one stride period apart, on a strided dilated net: same
    masks as one probe each, in fewer backward passes; the two units give the closed form's
    stride and padding empirically."""
    net = rfprobe.build("conv3/s2/p1 conv3/d2/p2 conv3/s2/p1 conv3")
    shape = (1, 60, 60)
    passes = []
    real = P.input_gradient
    monkeypatch.setattr(P, "input_gradient", lambda *a, **k: passes.append(1) or real(*a, **k))
    units = [(0, 0), (0, -1), (-1, 0), (-1, -1), (6, 6), (6, 12)]
    many = P.probe_many(net, units, shape)
    n = len(passes)
    monkeypatch.setattr(P, "input_gradient", real)
    assert n < len(units)
    assert many[0].units_probed == many[3].units_probed and len(many[0].units_probed) > 1
    _masks_equal_separate(net, units, shape)
    a = many[0].analysis
    stride = (many[5].box[1][0] - many[4].box[1][0]) // (12 - 6)
    assert (stride, 6 * stride - many[4].box[0][0]) == (a.stride[0], a.padding[0])


def test_probe_many_with_overlapping_units_and_a_residual_net():
    """Neighbouring units overlap: they go to separate passes; results still equal."""
    _masks_equal_separate(TwoPaths().eval(), [(5, 5), (5, 6), (0, 0), (-1, -1)], (1, 48, 48))


def test_probe_many_falls_back_when_the_boxes_do_not_separate(monkeypatch):
    """If the exact route's boxes were too small (a wrong rule), gradient lands outside every
    box: that pass's units are probed one by one, so the results are still right."""
    net = rfprobe.build("conv5/p2 conv5/p2")
    real = P._clipped_box
    monkeypatch.setattr(P, "_clipped_box", lambda a, u, s: tuple(
        (lo + 2, hi - 2) for lo, hi in real(a, u, s)))
    _masks_equal_separate(net, [(0, 0), (-1, -1)], (1, 40, 40))


def test_probe_many_refuses_a_single_unit_tuple():
    with pytest.raises(rfprobe.RFProbeError, match="units="):
        P.probe_many("conv3", (1, 1))


# ----------------------------------------------------------------------------- real models
@pytest.mark.slow
def test_torchvision_slab_equals_full_and_exact():
    """resnet18 up to layer2 (residual, strided, max-pool): full probe = exact route, and the
    slab boxes = the full probe's."""
    tv = pytest.importorskip("torchvision")
    net = tv.models.resnet18().eval()
    full = rfprobe.probe(net, layer="layer2", full=True)
    assert_exact(full)
    slab = rfprobe.probe(net, layer="layer2", full=False)
    assert slab.slab is not None and slab.box == full.box
    for mine, theirs in zip(slab.axis_masks, full.axis_masks):
        assert np.array_equal(mine, theirs)


# ----------------------------------------------------------------------------- CUDA
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
@pytest.mark.parametrize("make, shape", [(lambda: BigKernels(), (3, 96, 96)),
                                         (lambda: TwoPaths(), (1, 64, 64)),
                                         (lambda: rfprobe.build("conv3/p1 conv3/s2/p1 conv3/d2/p2", dims=3),
                                          (1, 24, 24, 24))])
def test_cuda_gives_the_cpu_masks(make, shape):
    """device='cuda': the same mask as the CPU (cuDNN off: no Winograd/FFT leakage), and the
    user's model stays on the CPU."""
    net = make().eval()
    cpu = rfprobe.probe(net, shape, unit=None, full=True)
    gpu = rfprobe.probe(net, shape, unit=None, full=True, device="cuda")
    assert np.array_equal(cpu.mask, gpu.mask)
    assert_exact(gpu)
    assert all(p.device.type == "cpu" for p in net.parameters())
    many = P.probe_many(net, [(0,) * (len(shape) - 1), (-1,) * (len(shape) - 1)], shape, device="cuda")
    assert all(m.mask.any() for m in many)


def test_weight_pool_edge_cases():
    """The weights come from one random draw: an empty parameter, a tied (shared) conv and a
    float64 probe all work and give the exact route's set."""
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Conv2d(1, 2, 5)
            self.conv = nn.Conv2d(2, 2, 3, padding=1)
            self.empty = nn.Parameter(torch.zeros(0))

        def forward(self, x):
            return self.conv(self.conv(self.first(x)))      # the same weights twice

    for dtype in (torch.float32, torch.float64):
        e = rfprobe.probe(Tied(), dtype=dtype)
        assert e.size == (9, 9)
        assert_exact(e)
