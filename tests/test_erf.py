"""The effective RF: formulas computed by hand, an independent autograd route, invariances.

The reference for uniform stacks: n layers of a k-tap kernel with weights 1/k make the unit's
gradient the n-fold convolution of a box, i.e. the distribution of a sum of n independent
uniform variables on k values, whose variance is n (k**2 - 1) / 12.
"""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

import rfprobe
from rfprobe import ERF, erf
from rfprobe.routes.erf import Progress
from rfprobe.errors import RFProbeError


def uniform_stack(n: int, k: int, dims: int = 1, channels: int = 1) -> nn.Sequential:
    conv = [nn.Conv1d, nn.Conv2d, nn.Conv3d][dims - 1]
    layers = [conv(channels, channels, k, bias=False) for _ in range(n)]
    net = nn.Sequential(*layers).double()
    with torch.no_grad():
        for m in net:
            m.weight.fill_(1.0 / (k ** dims * channels))
    return net


@pytest.mark.parametrize("n,k", [(1, 2), (1, 3), (2, 3), (3, 3), (4, 3), (6, 3), (3, 5), (5, 2), (2, 7), (8, 4)])
def test_uniform_1d_std_is_sqrt_n_k2_minus_1_over_12(n, k):
    f = erf(uniform_stack(n, k), n=2)
    want = math.sqrt(n * (k * k - 1) / 12)
    assert f.std[0] == pytest.approx(want, rel=1e-9)
    # the theoretical RF: n (k - 1) + 1 taps; the ERF is symmetric about its centre
    assert f.theoretical == (n * (k - 1) + 1,)
    lo, hi = f.theoretical_box[0]
    assert f.center[0] == pytest.approx((lo + hi) / 2, abs=1e-9)
    assert f.ratio[0] == pytest.approx(4 * want / (n * (k - 1) + 1), rel=1e-9)


@pytest.mark.parametrize("dims,n,k", [(2, 3, 3), (2, 2, 5), (3, 2, 3)])
def test_uniform_std_per_axis_in_2d_and_3d_with_channels(dims, n, k):
    f = erf(uniform_stack(n, k, dims, channels=2), n=1)
    want = math.sqrt(n * (k * k - 1) / 12)
    assert f.std == pytest.approx((want,) * dims, rel=1e-9)


def test_squared_statistic_by_hand():
    # two uniform 3-tap layers: gradient counts 1 2 3 2 1; squared 1 4 9 4 1 (sum 19), centred
    # variance (4*1 + 1*4 + 0 + 1*4 + 4*1) / 19 = 16/19
    f = erf(uniform_stack(2, 3), n=1, statistic="sq")
    assert f.std[0] ** 2 == pytest.approx(16 / 19, rel=1e-12)
    assert f.statistic == "sq"


def _map(shape) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random(shape) ** 3


def _metrics(f: ERF):
    return (f.center, f.std, f.ratio, f.gaussian.center, f.gaussian.sigma, f.gaussian.r2,
            [f.radius(p) for p in (0.1, 0.5, 0.9, 1.0)],
            [f.area_ratio(t) for t in (0.2, 0.3, 0.5, 0.99)])


def _flat(v):
    if isinstance(v, (tuple, list)):
        return [x for item in v for x in _flat(item)]
    return [v]


@pytest.mark.parametrize("shape", [(9, 11), (13,), (4, 5, 6)])
def test_scaling_the_gradient_by_1e7_changes_no_metric(shape):
    g = _map(shape)
    box = tuple((1, n - 2) for n in shape)
    a = ERF.from_gradient(g, theoretical=tuple(n - 2 for n in shape), theoretical_box=box)
    b = ERF.from_gradient(g * 1e7, theoretical=tuple(n - 2 for n in shape), theoretical_box=box)
    assert _flat(_metrics(a)) == pytest.approx(_flat(_metrics(b)), rel=1e-12, nan_ok=True)


@pytest.mark.parametrize("statistic", ["abs", "sq"])
def test_scaling_the_model_output_by_1e7_changes_no_metric(statistic):
    torch.manual_seed(0)
    net = rfprobe.build("conv3/c4 relu conv3 relu conv3", in_channels=2).double()
    big = rfprobe.build("conv3/c4 relu conv3 relu conv3", in_channels=2).double()
    big.load_state_dict(net.state_dict())
    with torch.no_grad():
        big[4].weight.mul_(1e7)
        big[4].bias.mul_(1e7)
    x = torch.randn(6, 2, 11, 11, dtype=torch.float64)
    a = erf(net, inputs=x, statistic=statistic)
    b = erf(big, inputs=x, statistic=statistic)
    assert _flat(_metrics(a)) == pytest.approx(_flat(_metrics(b)), rel=1e-9, nan_ok=True)


@pytest.mark.parametrize("shape", [(1,), (7,), (8,), (5, 5), (6, 6), (10, 7), (1, 9), (64, 64), (3, 4, 5)])
@pytest.mark.parametrize("t", [0.2, 0.3, 0.5, 0.99])
def test_area_ratio_of_a_uniform_map_is_t(shape, t):
    f = ERF.from_gradient(np.ones(shape))
    pixel = 1 / np.prod(shape)
    assert abs(f.area_ratio(t) - t) <= pixel


def test_area_ratio_of_a_uniform_map_off_centre_is_t():
    # the square is centred on the unit's RF (not the map's centre) and clipped to the map
    f = ERF.from_gradient(np.ones((9, 12)), theoretical_box=((0, 4), (7, 11)))
    for t in (0.2, 0.3, 0.5, 0.99):
        assert abs(f.area_ratio(t) - t) <= 1 / 108


def test_area_ratio_by_hand():
    # point mass in the centre pixel of 5x5: mass inside a centred square of side s <= 1 is s**2,
    # so s**2 = t and the area ratio is t / 25
    m = np.zeros((5, 5))
    m[2, 2] = 3.0
    f = ERF.from_gradient(m)
    for t in (0.2, 0.3, 0.5, 0.99):
        assert f.area_ratio(t) == pytest.approx(t / 25, rel=1e-9)
    # 1-D [0 1 2 1 0] / 4 around 2.5: half-width h <= 0.5 holds h; beyond, 0.5 + (h - 0.5) / 2
    f = ERF.from_gradient([0, 1, 2, 1, 0])
    assert f.area_ratio(0.5) == pytest.approx(1 / 5, rel=1e-9)
    assert f.area_ratio(0.75) == pytest.approx(2 / 5, rel=1e-9)
    assert f.area_ratio(0.2) == pytest.approx(0.4 / 5, rel=1e-9)


def test_radius_by_hand():
    f = ERF.from_gradient([1, 1, 1, 1, 1])           # distances from 2: 0 1 1 2 2
    assert [f.radius(p) for p in (0.2, 0.21, 0.6, 0.61, 1.0)] == [0.0, 1.0, 1.0, 2.0, 2.0]
    m = np.zeros((7, 7))
    m[3, 3], m[3, 5] = 1.0, 1.0                          # centre of mass (3, 4): both at distance 1
    assert ERF.from_gradient(m).radius(1.0) == pytest.approx(1.0)


def test_gaussian_fit_recovers_a_sampled_gaussian():
    x = np.arange(25.0)
    y = np.arange(19.0)
    g = np.exp(-((x[:, None] - 10.3) ** 2) / (2 * 2.5 ** 2) - ((y[None, :] - 8.0) ** 2) / (2 * 1.7 ** 2))
    fit = ERF.from_gradient(g * 123.0).gaussian
    assert fit.center == pytest.approx((10.3, 8.0), rel=1e-6)
    assert fit.sigma == pytest.approx((2.5, 1.7), rel=1e-6)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)
    flat = ERF.from_gradient(np.ones(6)).gaussian
    assert flat.sigma == (math.inf,) and math.isnan(flat.r2)


def test_map_matches_plain_autograd_on_real_inputs():
    """Independent route: autograd on the user's model itself, one input at a time."""
    torch.manual_seed(1)
    net = rfprobe.build("conv3/c5 relu conv3/s2 gelu conv3/d2", in_channels=3).double().eval()
    x = torch.randn(7, 3, 21, 21, dtype=torch.float64)
    out = net(x[:1])
    unit = (out.shape[2] // 2, out.shape[3] // 2)
    want = np.zeros((21, 21))
    for i in range(len(x)):
        xi = x[i:i + 1].clone().requires_grad_(True)
        y = net(xi)
        (g,) = torch.autograd.grad(y[0, :, unit[0], unit[1]].sum(), xi)
        want += g[0].abs().sum(0).numpy()
    f = erf(net, inputs=x, batch_size=3)
    assert f.n == 7 and f.unit == unit
    np.testing.assert_allclose(f.map, want / want.sum(), rtol=1e-10, atol=1e-15)
    # the same through a DataLoader-like iterable of (input, label) pairs, capped at n
    g = erf(net, inputs=[(x[:4], None), (x[4:], None)], n=7, batch_size=2)
    np.testing.assert_allclose(g.map, f.map, rtol=1e-10, atol=1e-15)
    assert erf(net, inputs=x, n=3).n == 3
    # a one-shot generator loses no item to the shape check
    h = erf(net, inputs=(x[i:i + 1] for i in range(7)), n=7)
    assert h.n == 7
    np.testing.assert_allclose(h.map, f.map, rtol=1e-10, atol=1e-15)


def test_layer_channel_and_unit_select_what_is_averaged():
    torch.manual_seed(2)
    net = rfprobe.build("conv3/c4 relu conv3/c2 relu conv1", in_channels=1).double()
    x = torch.randn(3, 1, 12, 12, dtype=torch.float64)
    f = erf(net, inputs=x, layer="0", unit=(0, 0), channel=1)
    assert f.target == "0" and f.unit == (0, 0)
    nz = np.argwhere(f.map > 0)
    assert nz.min(0).tolist() == [0, 0] and nz.max(0).tolist() == [2, 2]   # a 3x3 window at (0, 0)
    xi = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net[0](xi)[:, 1, 0, 0].sum(), xi)
    want = g.abs().sum((0, 1)).numpy()
    np.testing.assert_allclose(f.map, want / want.sum(), rtol=1e-10)


def test_the_users_model_is_unchanged_and_flags_are_kept():
    net = rfprobe.build("conv3/c4 bn relu conv3 bn", in_channels=1)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    f = erf(net, n=3, input_shape=(1, 10, 10))
    assert f.n == 3
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(m.training for m in net.modules())


def test_dead_unit_and_bad_arguments_are_clear_errors():
    net = uniform_stack(2, 3)
    with torch.no_grad():
        net[0].weight.zero_()
    with pytest.raises(RFProbeError, match="gradient is zero"):
        erf(net, n=1)
    net = uniform_stack(2, 3)
    with pytest.raises(RFProbeError, match="statistic='max'"):
        erf(net, statistic="max")
    with pytest.raises(RFProbeError, match="n=0"):
        erf(net, n=0)
    with pytest.raises(RFProbeError, match="unit"):
        erf(net, unit=(50,), input_shape=(1, 9))
    with pytest.raises(RFProbeError, match="t=1.5"):
        ERF.from_gradient([1, 2]).area_ratio(1.5)
    with pytest.raises(RFProbeError, match="p=0"):
        ERF.from_gradient([1, 2]).radius(0)
    with pytest.raises(RFProbeError, match="non-negative"):
        ERF.from_gradient([1, -2])


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal(capsys):
    p = Progress(4, stream=_Tty())
    for _ in range(4):
        p.update()
    p.close()
    text = p.stream.getvalue()
    assert text.count("\r") == 4 and "4/4" in text and text.endswith("\n")
    quiet = Progress(4, stream=io.StringIO())
    quiet.update(4)
    quiet.close()
    assert quiet.stream.getvalue() == ""
    erf(uniform_stack(2, 3), n=20, batch_size=2)       # stderr is captured: not a terminal
    assert capsys.readouterr().err == ""


def test_erf_grows_slower_than_the_theoretical_rf():
    """Luo et al.: with depth the ratio falls like 1/sqrt(n) for uniform weights."""
    ratios = [erf(uniform_stack(n, 3), n=1).ratio[0] for n in (2, 8, 32)]
    assert ratios[0] > ratios[1] > ratios[2]
    want = [4 * math.sqrt(n * 8 / 12) / (2 * n + 1) for n in (2, 8, 32)]
    assert ratios == pytest.approx(want, rel=1e-9)


def test_text_html_and_dict():
    f = erf(uniform_stack(3, 3), n=1)
    text = str(f)
    assert "std per axis" in text and "area ratio t=0.2" in text
    html = f._repr_html_()
    assert "<table" in html and "area ratio t=0.99" in html
    d = f.to_dict()
    assert d["std"] == [pytest.approx(math.sqrt(2))] and set(d["area_ratio"]) == {"0.2", "0.3", "0.5", "0.99"}


def replknet_rectangle(data: np.ndarray, thresh: float):
    """RepLKNet's own metric (DingXiaoH/RepLKNet-pytorch, erf/analyze_erf.py, get_rectangle),
    ported verbatim: odd squares around the map centre, one ring at a time."""
    h, w = data.shape
    all_sum = np.sum(data)
    for i in range(1, h // 2):
        selected_area = data[h // 2 - i:h // 2 + 1 + i, w // 2 - i:w // 2 + 1 + i]
        area_sum = np.sum(selected_area)
        if area_sum / all_sum > thresh:
            return i * 2 + 1, (i * 2 + 1) / h * (i * 2 + 1) / w
    return None


@pytest.mark.parametrize("seed", range(6))
def test_area_ratio_lies_between_replknets_rings(seed):
    """Where RepLKNet's discrete metric is defined, the continuous square lies between the ring
    it answers and the ring before it."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(15, 41)) | 1                                   # odd, as RepLKNet needs
    i, j = np.indices((n, n)) - n // 2
    g = np.exp(-(i ** 2 + j ** 2) / (2 * rng.uniform(1.5, n / 5) ** 2)) * rng.uniform(0.5, 1.5, (n, n))
    f = ERF.from_gradient(g)
    for t in (0.2, 0.3, 0.5, 0.9):
        found = replknet_rectangle(g, t)
        if found is None:
            continue
        side, ratio = found
        ours = f.area_ratio(t)
        assert (side - 2) ** 2 / n ** 2 < ours <= ratio + 1e-12


def test_erf_of_a_model_with_a_global_gate():
    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            y = self.conv(x)
            return y * torch.sigmoid(y.mean(dim=(2, 3), keepdim=True))
    f = erf(Gate().double(), n=4, input_shape=(1, 8, 9))
    assert f.theoretical is None and f.ratio is None and f.theoretical_box is None
    assert f.square_center == (4.0, 4.5)
    assert (f.map > 0).all()                      # the gate reaches every input pixel
    assert 0 < f.area_ratio(0.5) < 1


def test_dtype_argument_runs_a_float64_copy():
    torch.manual_seed(4)
    net = rfprobe.build("conv3/c3 relu conv3", in_channels=2)
    x = torch.randn(3, 2, 9, 9, dtype=torch.float64)
    a = erf(net, inputs=x, dtype=torch.float64)
    assert next(net.parameters()).dtype == torch.float32      # the user's model is not cast
    b = erf(net.double(), inputs=x)
    np.testing.assert_allclose(a.map, b.map, rtol=1e-12, atol=1e-18)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_erf_on_cuda_matches_the_cpu():
    torch.manual_seed(5)
    net = rfprobe.build("conv3/c4 relu conv3/d2 relu conv3", in_channels=2).double()
    x = torch.randn(4, 2, 15, 15, dtype=torch.float64)
    cpu = erf(net, inputs=x)
    gpu = erf(net, inputs=x, device="cuda")
    np.testing.assert_allclose(gpu.map, cpu.map, rtol=1e-9, atol=1e-15)
