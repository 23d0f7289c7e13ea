"""Hand-written models with functional ops: exact per-unit boxes against the gradient probe.

Each model is probed at a fixed input shape, for the centre unit, border units and one unit of
every phase of every upsampling; the exact bounded region (``Analysis.region(unit,
bounded=True)``) must equal the probe's mask position for position. The two routes share no
code: one walks the traced graph with per-op index rules, the other backpropagates through
PyTorch's own kernels.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import rfprobe
from tests.models import ConvThen
from tests.oracle import perturbed
from rfprobe.errors import ArgumentError, UnknownOpError
from rfprobe.ops import removed_records


def conv(i, o, k=3, **kw):
    return nn.Conv2d(i, o, k, **kw)


class UNet(nn.Module):
    """Two levels down, two up: concat skips, a k2/s2 and a k3/s2/p1/op1 transposed conv."""

    def __init__(self):
        super().__init__()
        self.enc1 = conv(1, 4, padding=1)
        self.enc2 = conv(4, 4, padding=1)
        self.down2 = conv(4, 4, stride=2, padding=1)
        self.bott = conv(4, 4, padding=1)
        self.up2 = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.dec2 = conv(8, 4, padding=1)
        self.up1 = nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1)
        self.dec1 = conv(8, 2, 1)

    def forward(self, x):
        e1 = F.relu(self.enc1(x))
        e2 = F.relu(self.enc2(F.max_pool2d(e1, 2)))
        b = F.relu(self.bott(self.down2(e2)))
        d2 = F.relu(self.dec2(torch.cat([self.up2(b), e2], dim=1)))
        return self.dec1(torch.cat([self.up1(d2), e1], 1))


class FPN(nn.Module):
    """Top-down pathway with F.interpolate in every mode, plus a non-integer resize."""

    def __init__(self, mode="nearest", align_corners=None, size=None):
        super().__init__()
        self.mode, self.align, self.size = mode, align_corners, size
        self.c1 = conv(1, 4, padding=1)
        self.c2 = conv(4, 4, stride=2, padding=1)
        self.c3 = conv(4, 4, stride=2, padding=1)
        self.lat = conv(4, 4, 1)

    def up(self, x, like):
        kw = {} if self.mode in ("nearest", "area", "nearest-exact") else {"align_corners": self.align}
        return F.interpolate(x, size=like.shape[-2:], mode=self.mode, **kw)

    def forward(self, x):
        c1 = F.relu(self.c1(x))
        c2 = F.relu(self.c2(c1))
        c3 = F.relu(self.c3(c2))
        p2 = self.lat(c2) + self.up(c3, c2)
        p1 = c1 + self.up(p2, c1)
        if self.size is not None:
            kw = {} if self.mode in ("nearest", "area", "nearest-exact") else {"align_corners": self.align}
            p1 = F.interpolate(p1, size=self.size, mode=self.mode, **kw)
        return p1


class ScaleUp(nn.Module):
    """One interpolate by a scale factor (``recompute_scale_factor`` off: PyTorch uses 1/scale)."""

    def __init__(self, scale, mode, align_corners=None):
        super().__init__()
        self.scale, self.mode, self.align = scale, mode, align_corners
        self.c = conv(1, 2, padding=1)

    def forward(self, x):
        kw = {} if self.mode in ("nearest", "area", "nearest-exact") else {"align_corners": self.align}
        return F.interpolate(F.relu(self.c(x)), scale_factor=self.scale, mode=self.mode, **kw)


class Padded(nn.Module):
    """F.pad in each non-constant mode in front of unpadded convs, and a constant pad and crop."""

    def __init__(self, mode):
        super().__init__()
        self.mode = mode
        self.c1 = conv(1, 3)
        self.c2 = conv(3, 3, stride=2)

    def forward(self, x):
        x = self.c1(F.pad(x, (2, 1, 1, 2), mode=self.mode))
        x = F.pad(x, (1, 1, 1, 1))[:, :, 1:, :-1]
        return self.c2(F.pad(x, (1, 1, 1, 1), mode=self.mode))


class Shuffler(nn.Module):
    """A sub-pixel upsampler: conv, PixelShuffle(2), conv, pixel_shuffle(3)."""

    def __init__(self):
        super().__init__()
        self.c1 = conv(1, 8, padding=1)
        self.ps = nn.PixelShuffle(2)
        self.c2 = conv(2, 9, padding=1)

    def forward(self, x):
        return F.pixel_shuffle(self.c2(F.relu(self.ps(self.c1(x)))), 3)


def probe_units(model, units, shape):
    """Gradient probes of ``units`` (one trace, non-overlapping units share a backward; each
    result equals ``rfprobe.probe`` of that unit alone, which tests/test_perf_exactness.py checks)."""
    from rfprobe import probe_many
    return probe_many(model, units, input_shape=shape)


def assert_probe_is_exact(model, analysis, units, shape):
    """The gradient probe's mask of every unit equals the exact route's bounded set."""
    for unit, e in zip(units, probe_units(model, units, shape)):
        assert (e.mask == analysis.region(unit, bounded=True).input_mask()).all(), unit


def units_for(out_hw, phases):
    """Centre, the four corners, and one unit of every phase (mod ``phases``) near the centre."""
    h, w = out_hw
    units = {(h // 2, w // 2), (0, 0), (h - 1, w - 1), (0, w - 1), (h - 1, 0)}
    for ph in itertools.product(range(phases), repeat=2):
        units.add(((h // 2) // phases * phases + ph[0], (w // 2) // phases * phases + ph[1]))
    return sorted(units)


def assert_exact_equals_probe(model, shape, phases):
    a = rfprobe.analyze(model, input_shape=shape)
    out_hw = a.output_shape[-2:]
    checked = 0
    units = units_for(out_hw, phases)
    probes = probe_units(model, units, shape)
    border = units.index((0, 0))
    alone = rfprobe.probe(model, unit=(0, 0), input_shape=shape)    # the plain probe agrees too
    assert (alone.mask == probes[border].mask).all()
    for unit, e in zip(units, probes):
        exact = a.region(unit, bounded=True).input_mask()
        assert e.mask.shape == exact.shape
        assert (e.mask == exact).all(), (
            f"unit {unit}: probe box {e.box}, exact box {a.region(unit, bounded=True).box}; "
            f"{int((e.mask & ~exact).sum())} extra, {int((exact & ~e.mask).sum())} missing")
        assert e.mask.any()
        checked += 1
    return a, checked


def test_unet_concat_skips_and_transposed_convs():
    """Every phase of both stride-2 transposed convs (4 phases of 2x2), centre and corners."""
    a, n = assert_exact_equals_probe(UNet(), (1, 24, 24), 4)
    assert n >= 20
    assert a.status == "varies"


@pytest.mark.parametrize("mode,align", [("nearest", None), ("nearest-exact", None), ("bilinear", False),
                                        ("bilinear", True), ("bicubic", True), ("area", None)])
def test_fpn_interpolate_modes(mode, align):
    """Top-down sums of x2 upsamplings (phases mod 4 at the finest level), then a resize of the
    19x19 map to 29x23 (non-integer ratios; the source index follows PyTorch's float32 maths)."""
    model = FPN(mode, align, size=(29, 23))
    a, _ = assert_exact_equals_probe(model, (1, 19, 19), 4)
    if mode != "area":
        assert a.status == "varies" and a.size_min is not None


@pytest.mark.parametrize("scale", [1.7, 3, 2.5, 0.6])
@pytest.mark.parametrize("mode,align", [("nearest", None), ("bilinear", False), ("bilinear", True),
                                        ("nearest-exact", None)])
def test_interpolate_scale_factor_float32(scale, mode, align):
    """Non-power-of-two scale factors: PyTorch computes the source index as
    ``float32(1/scale) * j``; rounding in float64 instead picks a different row for some j."""
    model = ScaleUp(scale, mode, align)
    a = rfprobe.analyze(model, input_shape=(1, 13, 11))
    h, w = a.output_shape[-2:]
    units = [(i, j) for i in range(h) for j in (0, w // 2, w - 1)]
    for unit, e in zip(units, probe_units(model, units, (1, 13, 11))):
        exact = a.region(unit, bounded=True).input_mask()
        assert (e.mask == exact).all(), (unit, e.box, a.region(unit, bounded=True).box)


@pytest.mark.parametrize("mode", ["circular", "reflect", "replicate", "constant"])
def test_pad_modes_border_units(mode):
    """Border units read wrapped (circular), mirrored (reflect) or clamped (replicate) indices:
    every output unit of a 12x10 input is checked, so each border case is covered."""
    model = Padded(mode)
    shape = (1, 12, 10)
    a = rfprobe.analyze(model, input_shape=shape)
    h, w = a.output_shape[-2:]
    units = list(itertools.product(range(h), range(w)))
    probes = probe_units(model, units, shape)
    for unit in [(0, 0), (h - 1, w - 1)]:
        assert (rfprobe.probe(model, unit=unit, input_shape=shape).mask == probes[units.index(unit)].mask).all()
    for unit, e in zip(units, probes):
        exact = a.region(unit, bounded=True).input_mask()
        assert (e.mask == exact).all(), (mode, unit, e.box, a.region(unit, bounded=True).box)


def test_circular_pad_wraps_around():
    """Hand-computed: conv3 after a circular pad of 1 on a 1-D input of 8: unit 0 reads
    indices 7, 0, 1 (the box spans the whole input; the set has a hole)."""
    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv1d(1, 1, 3)

        def forward(self, x):
            return self.c(F.pad(x, (1, 1), mode="circular"))
    a = rfprobe.analyze(Wrap(), input_shape=(1, 8))
    assert sorted(np.flatnonzero(a.region((0,), bounded=True).input_mask())) == [0, 1, 7]
    assert sorted(np.flatnonzero(a.region((7,), bounded=True).input_mask())) == [0, 6, 7]
    e = rfprobe.probe(Wrap(), unit=(0,), input_shape=(1, 8))
    assert sorted(np.flatnonzero(e.mask)) == [0, 1, 7]


def test_pixel_shuffle_every_phase():
    """PixelShuffle(2) then pixel_shuffle(3): phases mod 6 cover both shuffles' phases."""
    a, n = assert_exact_equals_probe(Shuffler(), (1, 6, 6), 6)
    assert n >= 36
    assert a.status == "varies"


def test_position_dependent_summary_says_varies():
    """A stride-2 transposed conv with kernel 3: even outputs read 2 inputs, odd ones 1
    (hand-computed: out j reads i with j = 2i + t, t in 0..2). The summary says so with min and
    max, and the closed form claims no single size."""
    net = nn.Sequential(nn.ConvTranspose2d(1, 1, 3, stride=2))
    a = rfprobe.analyze(net, input_shape=(1, 8, 8))
    assert a.status == "varies"
    assert a.size == (2, 2) and a.size_min == (1, 1)
    text = str(a)
    assert "varies with position" in text and "1x1" in text and "2x2" in text
    assert a.to_dict()["status"] == "varies"
    row = a.layers[-1]
    assert row.size is None and row.status == "varies"


def test_pixel_unshuffle_and_getitem_crop():
    """pixel_unshuffle(2) is a 2-window with stride 2; x[..., 1:, ::2] is a crop with step 2:
    out j reads 2j+1.. on the rows, 4j.. on the columns (hand-computed)."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = conv(4, 1, 1)

        def forward(self, x):
            return self.c(F.pixel_unshuffle(x, 2))[..., 1:, ::2]
    a = rfprobe.analyze(M(), input_shape=(1, 16, 16))
    assert a.status == "ok"
    assert a.box((0, 0)) == ((2, 3), (0, 1))
    assert a.box((1, 1)) == ((4, 5), (4, 5))
    units = [(0, 0), (3, 2), (6, 3)]
    assert_probe_is_exact(M(), a, units, (1, 16, 16))


class _SpaceToDepthByView(nn.Module):
    """timm's TResNet stem: space-to-depth written with view/permute/view (no pixel_unshuffle),
    then a 3x3 conv; ``channels_last`` splits (N, H, W, C) the same way."""

    def __init__(self, block=4, channels_last=False):
        super().__init__()
        self.bs, self.channels_last = block, channels_last
        self.c = conv(3 * block * block, 2, 3)

    def forward(self, x):
        n, c, h, w = x.shape
        bs = self.bs
        if self.channels_last:
            x = x.permute(0, 2, 3, 1).reshape(n, h // bs, bs, w // bs, bs, c)
            x = x.permute(0, 1, 3, 2, 4, 5).reshape(n, h // bs, w // bs, c * bs * bs).permute(0, 3, 1, 2)
        else:
            x = x.view(n, c, h // bs, bs, w // bs, bs).permute(0, 3, 5, 1, 2, 4).contiguous()
            x = x.view(n, c * bs * bs, h // bs, w // bs)
        return self.c(x)


@pytest.mark.parametrize("channels_last", [False, True])
def test_space_to_depth_by_view_is_a_block_window(channels_last):
    """A spatial axis split into (H/4, 4) survives as its coarse dim: after the merge into
    channels, position j reads rows 4j..4j+3, and the 3x3 conv over it 4j..4j+11 (by hand);
    stride 4. It was refused: "(1, 2, 2, 2) without spatial axes". Checked by the probe per unit
    and by the perturbation oracle."""
    net = _SpaceToDepthByView(channels_last=channels_last)
    shape = (3, 16, 16)
    r = rfprobe.verify(net, shape)
    a = r.analysis
    assert r.ok and a.status == "ok", str(r)
    assert (a.size, a.stride) == ((12, 12), (4, 4))
    assert a.box((1, 0)) == ((4, 15), (0, 11))
    assert_probe_is_exact(net, a, [(0, 0), (1, 0), (1, 1)], shape)
    moved = perturbed(_SpaceToDepthByView(channels_last=channels_last), shape)[1, 0]
    assert (moved == a.region((1, 0), bounded=True).input_mask()).all()


def test_attention_values_of_a_one_by_one_map():
    """SHViT's single-head attention on a 1x1 map: ``v @ attn.T`` with v flattened (no spatial
    axes) and attn of shape (1, 1, 1). rfprobe's matmul rule raised TypeError (an
    InternalError); on a 2x2 map the answer is global, on the 1x1 map the unit's own patch
    (the attention over one key reads nothing: its softmax is constant)."""
    class SingleHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = conv(3, 6, 4, stride=4)
            self.qkv = conv(6, 6, 1)
            self.proj = conv(2, 2, 1)

        def forward(self, x):
            x = self.stem(x)
            b, _, h, w = x.shape
            q, k, v = torch.split(self.qkv(x), [2, 2, 2], dim=1)
            q, k, v = q.flatten(2), k.flatten(2), v.flatten(2)
            attn = (q.transpose(-2, -1) @ k).softmax(dim=-1)
            return self.proj((v @ attn.transpose(-2, -1)).reshape(b, 2, h, w))
    for side in (4, 8):
        r = rfprobe.verify(SingleHead(), (3, side, side))
        # one key: its softmax is constant, and the unit reads its own 4x4 patch (by hand), the
        # whole input; with four keys, attention over every position
        assert r.ok and r.analysis.status == ("ok" if side == 4 else "global"), str(r)
        assert r.probe_box == ((0, side - 1), (0, side - 1))


def test_tokens_back_to_a_channels_last_map_after_attention():
    """LeViT/Swin style: a map flattened into tokens (N, HW, C), mixed by attention, reshaped
    back channels-last (N, H, W, C) and permuted to (N, C, H, W). The spatial axes are back
    (global), as for the channels-first round trip; it was refused as 'without spatial axes'. Here
    C == H == W == 4, so only the reshape keeping the tokens' last dim (C) says channels-last."""
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = conv(3, 4, 2, stride=2)
            self.attn = nn.MultiheadAttention(4, 1, batch_first=True)
            self.head = conv(4, 2, 1)

        def forward(self, x):
            x = self.embed(x)
            b, c, h, w = x.shape
            t = x.flatten(2).transpose(1, 2)
            t = self.attn(t, t, t, need_weights=False)[0]
            return self.head(t.reshape(b, h, w, c).permute(0, 3, 1, 2))
    r = rfprobe.verify(Tokens(), (3, 8, 8))
    assert r.ok and r.analysis.status == "global", str(r)
    assert r.probe_box == ((0, 7), (0, 7))
    assert any("attention" in c for c in r.analysis.global_causes)


def assert_global_everywhere(net, side):
    """Analysis global, verify ok, the probe's box the whole (3, side, side) input, and plain
    autograd on the real model (its centre unit) nonzero at every position."""
    r = rfprobe.verify(net, (3, side, side))
    assert r.ok and r.analysis.status == "global", str(r)
    assert r.probe_box == ((0, side - 1), (0, side - 1))
    x = torch.rand(1, 3, side, side, requires_grad=True)
    y = net(x)
    y[0, :, y.shape[2] // 2, y.shape[3] // 2].sum().backward()
    assert (x.grad[0].abs().sum(0) > 0).all()


def test_attention_with_a_large_additive_bias_is_seen_whole_by_the_probe():
    """A relative-position bias passed to F.scaled_dot_product_attention as a float attn_mask
    (timm's ViT-RelPos): computed with the structural probe's positive weights it is large,
    the softmax inside the fused op saturated and keys the forward reads got an exactly zero
    gradient (the probe saw 48x48 of a 64x64 input). The analysis, plain autograd in actual
    mode and the probe now agree: global."""
    class BiasedAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = conv(3, 8, 4, stride=4)
            self.qkv = nn.Linear(8, 24)
            # as RelPosMlp: a hidden layer of 256 from (log) relative coordinates; with the
            # probe's positive weights its output spans thousands
            self.bias_mlp = nn.Sequential(nn.Linear(2, 256), nn.ReLU(), nn.Linear(256, 1))
            self.register_buffer("coords", torch.rand(16, 16, 2) * 3)

        def forward(self, x):
            t = self.embed(x).flatten(2).transpose(1, 2)                   # (N, 16, 8)
            q, k, v = self.qkv(t).chunk(3, dim=-1)
            bias = self.bias_mlp(self.coords).squeeze(-1)                  # (16, 16), no input in it
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            return o.transpose(1, 2).reshape(x.shape[0], 8, 4, 4)
    torch.manual_seed(0)
    assert_global_everywhere(BiasedAttention().eval(), 16)


@pytest.mark.parametrize("kdim", [None, 32])
def test_multihead_attention_is_seen_whole_by_the_probe(kdim):
    """nn.MultiheadAttention over 8x8 patches of a 64x64 input: one traced op, whose queries
    and keys came from the probe's positive weights on positive values; the softmax inside
    saturated and the probe saw ((8, 63), (0, 63)). Global for the analysis, plain autograd and
    the probe alike, with packed and with separate (``kdim``) projection weights."""
    class Patches(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = conv(3, 16, 8, stride=8)
            self.attn = nn.MultiheadAttention(16, 2, batch_first=True, kdim=kdim, vdim=kdim)
            self.kv = nn.Linear(16, kdim) if kdim else nn.Identity()

        def forward(self, x):
            y = self.embed(x)
            t = y.flatten(2).transpose(1, 2)
            kv = self.kv(t)
            t = self.attn(t, kv, kv, need_weights=False)[0]
            return t.transpose(1, 2).reshape(y.shape)
    torch.manual_seed(0)
    assert_global_everywhere(Patches().eval(), 64)


def test_spatial_cat_and_split():
    """torch.cat along the width joins two halves computed by different convs; chunk splits
    them again: unit j of the right chunk reads the right half (hand-computed boxes)."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = conv(1, 1, 3, padding=1)
            self.b = conv(1, 1, 5, padding=2)

        def forward(self, x):
            left, right = x.chunk(2, dim=-1)
            y = torch.cat([self.a(left), self.b(right)], dim=3)
            return y[:, :, :, 6:]
    a = rfprobe.analyze(M(), input_shape=(1, 8, 12))
    # output column 0 is y column 6 = right-half column 0 -> input column 6, conv5 p2: 6-2..6+2
    assert a.region((4, 0), bounded=True).box == ((2, 6), (6, 8))
    units = [(0, 0), (4, 0), (7, 5), (3, 2)]
    assert_probe_is_exact(M(), a, units, (1, 8, 12))


def test_inplace_ops_and_channel_shuffle():
    """In-place adds and relus, and a channel shuffle by view/transpose/view: the RF of the
    tensor a module returns is not changed by in-place ops that run after it."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = conv(1, 4, 3, padding=1)
            self.c2 = conv(4, 4, 3, padding=1)

        def forward(self, x):
            y = self.c1(x)
            z = self.c2(y)
            z += y
            z.relu_()
            b, c, h, w = z.shape
            z = z.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, c, h, w)
            return F.relu(z, inplace=True)
    m = M()
    a = rfprobe.analyze(m, input_shape=(1, 12, 12))
    assert a.size == (5, 5) and a.status == "ok"
    r = rfprobe.verify(m, input_shape=(1, 12, 12))
    assert r.ok, str(r)
    a1 = rfprobe.analyze(m, input_shape=(1, 12, 12), layer="c1")
    e1 = rfprobe.probe(m, input_shape=(1, 12, 12), layer="c1")
    assert a1.size == (3, 3) and e1.size == (3, 3)


def test_setitem_writes_a_channel_slice():
    """x[:, :2] = conv5(x) leaves channels 2.. as they were: the union is 5x5 (hand-computed)."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = conv(1, 4, 3, padding=1)
            self.c5 = conv(4, 2, 5, padding=2)

        def forward(self, x):
            y = self.c1(x)
            z = y.clone()
            z[:, :2] = self.c5(y)
            return z
    a = rfprobe.analyze(M(), input_shape=(1, 16, 16))
    assert a.size == (7, 7)
    r = rfprobe.verify(M(), input_shape=(1, 16, 16))
    assert r.ok, str(r)


def test_channels_last_layer_norm_is_local():
    """ConvNeXt's pattern: permute to NHWC, LayerNorm over channels, Linear over channels,
    permute back. Not global: the RF is the 7x7 depthwise conv's (hand-computed)."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.dw = nn.Conv2d(4, 4, 7, padding=3, groups=4)
            self.norm = nn.LayerNorm(4)
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            y = self.dw(x).permute(0, 2, 3, 1)
            y = self.fc(self.norm(y)).permute(0, 3, 1, 2)
            return x + y
    net = nn.Sequential(nn.Conv2d(1, 4, 1), Block())
    a = rfprobe.analyze(net, input_shape=(1, 16, 16))
    assert a.status == "ok" and a.size == (7, 7)
    r = rfprobe.verify(net, input_shape=(1, 16, 16))
    assert r.ok, str(r)


@pytest.mark.parametrize("mode,align", [("linear", False), ("linear", True), ("nearest", None),
                                        ("nearest-exact", None), ("bicubic", False), ("bicubic", True)])
def test_interpolate_rule_matches_pytorch_forward_weights(mode, align):
    """An independent oracle: interpolating one-hot inputs through PyTorch's forward kernel
    gives the weight matrix; its nonzero pattern must equal the rule's per-index map for
    non-power-of-two scales (1.7, 3, 2.5, 0.6, 1/3, 7/3, 5) and sizes."""
    from rfprobe.ops.resample import _interp_axis
    for n in (5, 7, 11, 13):
        for sf in (1.7, 3, 2.5, 0.6, 1 / 3, 7 / 3, 5):
            x = torch.eye(n).view(n, 1, n, 1).expand(n, 1, n, 2).contiguous()
            kw = {} if mode.startswith("nearest") else {"align_corners": align}
            m2 = "bilinear" if mode == "linear" else mode
            y = F.interpolate(x, scale_factor=(sf, 1.0), mode=m2, **kw)
            want = (y[:, 0, :, 0] != 0).T.numpy()
            fn = _interp_axis(mode, bool(align), n, want.shape[0], float(sf))
            got = np.zeros_like(want)
            for j in range(want.shape[0]):
                got[j, fn(j, True)] = True
            assert (got == want).all(), (mode, align, n, sf)


def test_one_and_three_dimensional_models():
    """1-D: reflect pad, transposed conv, linear upsampling; 3-D: a trilinear upsample after a
    strided conv and a residual add. Exact boxes equal the probe for every phase."""
    class OneD(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv1d(1, 2, 3, stride=2)
            self.t = nn.ConvTranspose1d(2, 2, 4, stride=2, padding=1)

        def forward(self, x):
            y = self.t(F.relu(self.c(F.pad(x, (2, 2), mode="reflect"))))
            return F.interpolate(y, scale_factor=1.5, mode="linear", align_corners=False)

    class ThreeD(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv3d(1, 2, 3, stride=2, padding=1)
            self.s = nn.Conv3d(1, 2, 1)

        def forward(self, x):
            up = F.interpolate(self.c(x), size=x.shape[-3:], mode="trilinear", align_corners=True)
            return up + self.s(x)

    from rfprobe import probe_many
    for model, shape in ((OneD(), (1, 17)), (ThreeD(), (1, 7, 6, 5))):
        a = rfprobe.analyze(model, input_shape=shape)
        out = a.output_shape[2:]
        units = sorted({tuple(n // 2 + ph for n in out) for ph in range(3)}
                       | {tuple(0 for _ in out), tuple(n - 1 for n in out)})
        for unit, e in zip(units, probe_many(model, units, input_shape=shape)):
            assert (e.mask == a.region(unit, bounded=True).input_mask()).all(), (type(model).__name__, unit)
        assert a.status == "varies"


def test_flip_and_roll():
    """flip on the width and roll by 3 on the height, after a conv3/p1 on 12x12. Hand-computed
    for unit (0, 0): the roll reads conv row (0 - 3) mod 12 = 9, whose conv reads rows 8..10;
    the flip reads conv column 11, whose conv reads columns 10..11 (12 is padding)."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = conv(1, 1, 3, padding=1)

        def forward(self, x):
            return torch.roll(torch.flip(self.c(x), dims=[3]), shifts=3, dims=2)
    a = rfprobe.analyze(M(), input_shape=(1, 12, 12))
    assert a.region((0, 0), bounded=True).box == ((8, 10), (10, 11))
    units = [(0, 0), (5, 5), (11, 11), (2, 9)]
    assert_probe_is_exact(M(), a, units, (1, 12, 12))


def test_inplace_write_through_an_index_view():
    """``y[:, :, 2:6, :].add_(conv5(x))`` changes ``y`` through a view. Hand-computed: rows 2..5
    of the result read conv3 (3x3) and conv5 (5x5) of the input, the other rows conv3 only."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c3 = conv(1, 2, 3, padding=1)
            self.c5 = conv(1, 2, 5, padding=2)

        def forward(self, x):
            y = self.c3(x)
            y[:, :, 2:6, :].add_(self.c5(x)[:, :, 2:6, :])
            return y
    a = rfprobe.analyze(M(), input_shape=(1, 10, 10))
    assert a.region((3, 5), bounded=True).box == ((1, 5), (3, 7))
    assert a.region((8, 5), bounded=True).box == ((7, 9), (4, 6))
    units = [(3, 5), (8, 5), (0, 0), (5, 9)]
    assert_probe_is_exact(M(), a, units, (1, 10, 10))


def test_channels_last_pad_and_roll():
    """Swin's pattern: pad a channels-last (N, H, W, C) map on H and W (pairs run from the last
    dim: C, W, H), roll it, permute back. Checked against the probe for corners and centre."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = conv(1, 3, 3)

        def forward(self, x):
            y = self.c(x).permute(0, 2, 3, 1)
            y = F.pad(y, (0, 0, 1, 2, 0, 3))
            y = torch.roll(y, shifts=(2, -1), dims=(1, 2))
            return y.permute(0, 3, 1, 2)
    a = rfprobe.analyze(M(), input_shape=(1, 9, 8))
    assert a.output_shape[-2:] == (7 + 3, 6 + 3)
    units = [(0, 0), (9, 8), (5, 4), (2, 7), (8, 1)]
    assert_probe_is_exact(M(), a, units, (1, 9, 8))


class _DetachedBranch(nn.Module):
    """A 3x3 branch added to a 7x7 (padding 2) branch whose value is detached (or not)."""

    def __init__(self, detach: bool):
        super().__init__()
        self.detach = detach
        self.near = conv(1, 1, 3)
        self.far = conv(1, 1, 7, padding=2)

    def forward(self, x):
        far = self.far(x)
        return self.near(x) + (far.detach() if self.detach else far)


def test_detach_is_named_when_the_probe_cannot_see_past_it():
    """detach() passes values on, so the unit does depend on the 7x7 branch's positions (a
    perturbation there moves the output), but no gradient: the probe sees only the 3x3 branch.
    verify reports the mismatch and names the detach; without it the routes agree."""
    torch.manual_seed(0)
    r = rfprobe.verify(_DetachedBranch(detach=True), input_shape=(1, None, None))
    (u, v) = r.probe.unit
    assert not r.ok
    assert r.exact_box == ((u - 2, u + 4), (v - 2, v + 4))        # the 7x7 branch, padding 2
    assert r.probe_box == ((u, u + 2), (v, v + 2))                # the 3x3 branch only
    assert any("'detach#0' (detach) carries values but no gradient" in d for d in r.diagnoses), r.diagnoses
    # the third route: a perturbation outside the 3x3 box, inside the 7x7 one, moves the unit
    model = _DetachedBranch(detach=True).eval()
    x = torch.rand(1, *r.probe.input_shape, dtype=torch.float64)
    model = model.double()
    with torch.no_grad():
        y0 = model(x)[0, 0, u, v]
        x[0, 0, u - 2, v - 2] += 1.0
        assert model(x)[0, 0, u, v] != y0
    plain = rfprobe.verify(_DetachedBranch(detach=False), input_shape=(1, None, None))
    assert plain.ok and not any("detach" in d for d in plain.diagnoses)


class _Resize(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.kw = kw

    def forward(self, x):
        return F.interpolate(x, **self.kw)


def test_antialiased_downsampling_widens_the_window():
    """antialias=True stretches the filter by the scale when downsampling. Bilinear by 1/2: the
    triangle's half-width is 2 input pixels around centre 2j + 1, so output j reads 2j - 1 ..
    2j + 2 (clipped to the input); without antialias it reads 2j .. 2j + 1."""
    net = _Resize(scale_factor=0.5, mode="bilinear", antialias=True)
    a = rfprobe.analyze(net, input_shape=(1, 12, 12))
    for j in range(6):
        want = (max(2 * j - 1, 0), min(2 * j + 2, 11))
        assert a.region((j, j), bounded=True).box == (want, want), j
    plain = rfprobe.analyze(_Resize(scale_factor=0.5, mode="bilinear"), input_shape=(1, 12, 12))
    assert plain.region((3, 3), bounded=True).box == ((6, 7), (6, 7))


@pytest.mark.parametrize("mode,kw", [("bilinear", {"scale_factor": 0.4}), ("bicubic", {"scale_factor": 0.6}),
                                     ("bicubic", {"size": (10, 7)}), ("bilinear", {"size": (5, 9), "align_corners": True})])
def test_antialiased_resize_matches_the_probe(mode, kw):
    """Against the gradient probe (PyTorch's backward kernel), every unit: the bicubic filter's
    edge taps can weigh 1e-14 (rounding in the compiled kernel), still in the RF."""
    net = nn.Sequential(conv(1, 2, 3, padding=1), _Resize(mode=mode, antialias=True, **kw))
    shape = (1, 23, 19)
    a = rfprobe.analyze(net, input_shape=shape)
    for unit in itertools.product(*(range(n) for n in a.output_spatial)):
        r = rfprobe.verify(net, unit=unit, input_shape=shape)
        assert r.ok, (unit, str(r))


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_antialiased_resize_of_a_single_column_follows_the_forward(mode):
    """With W = 1 kept, PyTorch's CPU antialias forward makes every output row read the first
    row's inputs, while its backward reads each row's own window (a kernel quirk of this torch
    version). The RF is what the forward reads: the exact route equals a perturbation of the
    model's input (a third route), and verify reports that the gradient disagrees."""
    torch.manual_seed(0)
    net = nn.Sequential(conv(1, 1, (3, 1), padding=(1, 0)), _Resize(size=(4, 1), mode=mode, antialias=True))
    net = net.double().eval()
    a = rfprobe.analyze(net, input_shape=(1, 9, 1))
    x = torch.rand(1, 1, 9, 1, dtype=torch.float64)
    with torch.no_grad():
        y = net(x)
        moved = np.zeros((4, 9), dtype=bool)
        for i in range(9):
            for step in (10.0, -10.0):
                xp = x.clone()
                xp[0, 0, i, 0] += step
                moved[:, i] |= (net(xp)[0, 0, :, 0] != y[0, 0, :, 0]).numpy()
    for j in range(4):
        assert (a.region((j, 0), bounded=True).input_mask()[:, 0] == moved[j]).all(), j
    quirk = bool((moved == moved[0]).all())           # every row reads the same inputs
    r = rfprobe.verify(net, unit=(3, 0), input_shape=(1, 9, 1))
    assert r.ok != quirk, str(r)


class _ECA(nn.Module):
    """ECA-Net's channel attention: a Conv1d across the pooled channels gates a 2D map. The
    Conv1d is registered first, so the model's first conv says 1D."""

    def __init__(self):
        super().__init__()
        self.eca = nn.Conv1d(1, 1, 3, padding=1, bias=False)
        self.body = conv(3, 4, 3)

    def forward(self, x):
        y = self.body(x)
        w = torch.sigmoid(self.eca(y.mean((2, 3)).unsqueeze(1))).squeeze(1)
        return y * w[:, :, None, None]


def test_explicit_input_rank_wins_over_the_first_registered_conv():
    """A 2D model whose first registered conv is a Conv1d: the user's (C, H, W) is taken as
    given (it was refused as 'takes (C, L)'), and the gate is found global."""
    a = rfprobe.analyze(_ECA(), input_shape=(3, 16, 16))
    assert a.input_shape == (3, 16, 16) and a.status == "global"
    r = rfprobe.verify(_ECA(), input_shape=(3, 16, 16))
    assert r.ok and r.probe.box == ((0, 15), (0, 15))
    with pytest.raises(ArgumentError, match=r"input_shape=\(3, 16\).*the model raised"):
        rfprobe.analyze(_ECA(), input_shape=(3, 16))     # wrong for the Conv2d: still an argument error


def test_unsupported_row_tricks_say_what_to_write_instead():
    """Rows folded into the batch for a Conv1d, and a row picked with an int index: both are
    refused with the call site, a full sentence, and what computes the same and is followed."""
    class Folded(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv1d(2, 2, 5, padding=2)

        def forward(self, x):
            b, c, h, w = x.shape
            r = self.c1(x.permute(0, 2, 1, 3).reshape(b * h, c, w))
            return r.reshape(b, h, c, w).permute(0, 2, 1, 3)

    class Picked(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv1d(2, 2, 3)

        def forward(self, x):
            return torch.stack([self.c1(x[:, :, i, :]) for i in range(x.shape[2])], dim=2)

    with pytest.raises(UnknownOpError, match=r"Conv2d with a \(1, k\) kernel.*\)\. The selected output"):
        rfprobe.analyze(Folded(), input_shape=(2, 8, 8))
    with pytest.raises(UnknownOpError, match=r"a slice keeps it: 0:1\)\. The selected output"):
        rfprobe.analyze(Picked(), input_shape=(2, 8, 8))


class _Masked(nn.Module):
    """A 3x3 value branch selected or filled by a mask computed from a 5x5 branch."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.gate = conv(1, 1, 5)
        self.value = conv(1, 1, 3)

    def forward(self, x):
        v = self.value(x)[..., 1:-1, 1:-1]
        mask = self.gate(x) > 0
        if self.how == "where":
            return torch.where(mask, v, -v)
        if self.how == "masked_fill":
            return v.masked_fill(~mask, 0.0)
        return v * mask.float()


@pytest.mark.parametrize("how", ["where", "masked_fill", "mul"])
def test_a_mask_computed_from_the_input_is_part_of_the_rf(how):
    """The mask's 5x5 positions decide the unit's value: a perturbation there moves it (the
    oracle, a third route), so the exact route has them (it had only the value's 3x3). No
    gradient passes a comparison, so the probe misses them and verify names the mask."""
    shape = (1, 9, 9)
    a = rfprobe.analyze(_Masked(how), input_shape=shape)
    assert a.size == (5, 5)
    moved = perturbed(_Masked(how), shape)
    for unit in [(0, 0), (2, 3), (4, 4)]:
        assert (a.region(unit, bounded=True).input_mask() == moved[unit]).all(), unit
    r = rfprobe.verify(_Masked(how), input_shape=shape)
    assert not r.ok
    assert any("(gt) carries values but no gradient" in d for d in r.diagnoses), r.diagnoses


class _SegNetish(nn.Module):
    """SegNet's pattern: max pool with indices, a conv, max unpool back to the input's size."""

    def __init__(self, k=2, s=2, p=0):
        super().__init__()
        self.enc = conv(1, 2, 3, padding=1)
        self.pool = nn.MaxPool2d(k, s, p, return_indices=True)
        self.mid = conv(2, 2, 3, padding=1)
        self.unpool = nn.MaxUnpool2d(k, s, p)
        self.dec = conv(2, 1, 3, padding=1)

    def forward(self, x):
        y, idx = self.pool(self.enc(x))
        return self.dec(self.unpool(self.mid(y), idx, output_size=x.shape[-2:]))


def test_max_unpool_sends_each_value_back_to_its_window():
    """Pool 2/2 then unpool 2/2: output j gets pooled unit j // 2 back (the index names a
    position in its window), which read input 2*(j // 2) .. 2*(j // 2) + 1 (hand-derived)."""
    net = nn.Sequential()
    pool, unpool = nn.MaxPool2d(2, 2, return_indices=True), nn.MaxUnpool2d(2, 2)

    class Round(nn.Module):
        def forward(self, x):
            y, idx = pool(x)
            return unpool(y, idx, output_size=x.shape[-2:])
    net = Round()
    a = rfprobe.analyze(net, input_shape=(1, 9, 9))
    for j in range(8):
        lo = 2 * (j // 2)
        assert a.region((j, j), bounded=True).box == ((lo, lo + 1), (lo, lo + 1)), j
    assert a.region((8, 8), bounded=True).size == (0, 0)    # the odd last row: no window wrote it


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 3, 0)])
def test_segnet_unpool_matches_the_probe(k, s, p):
    """Against the gradient probe, whose structural max pool passes gradient to the whole
    window and whose unpool spreads each value over it (not the surrogate's indices)."""
    net = _SegNetish(k, s, p)
    for unit in [(0, 0), (1, 1), (5, 6), (8, 8), (15, 15), (7, 4)]:
        r = rfprobe.verify(net, unit=unit, input_shape=(1, 16, 16))
        assert r.ok, (unit, str(r))


class _Einsum(nn.Module):
    def __init__(self, eq: str, self_product: bool = False):
        super().__init__()
        self.eq, self.self_product = eq, self_product
        self.c = conv(2, 4, 3)
        self.w = nn.Parameter(torch.randn(3, 4))

    def forward(self, x):
        y = self.c(x)
        return torch.einsum(self.eq, y, y) if self.self_product else torch.einsum(self.eq, y, self.w)


@pytest.mark.parametrize("eq,self_product", [("bchw,oc->bohw", False), ("b c h w, o c -> b o h w", False),
                                             ("bchw,bchw->bchw", True), ("bchw,bchw->bhw", True)])
def test_einsum_that_keeps_spatial_axes_in_place_is_pointwise(eq, self_product):
    """Channel mixing written as an einsum reads each position where it is: the conv's 3x3,
    equal to the probe's set (the last equation also sums the channels away, leaving (N, H, W))."""
    net = _Einsum(eq, self_product)
    r = rfprobe.verify(net, input_shape=(2, 12, 12), unit=(2, 5))
    assert r.ok and r.analysis.status == "ok" and r.exact_box == ((2, 4), (5, 7)), str(r)


def test_einsum_over_positions_is_global_and_moves_are_refused():
    """Summing a spatial axis away is global, with the equation named; an einsum of one map that
    moves a spatial axis to another dim, or hides it in '...', is refused rather than guessed
    (a product of two maps is followed by its digits, which pair the operands' positions)."""
    # an (N, C) result has no spatial axes left: refused, naming the einsum and why (its dims
    # (1, 4) were once taken for a 1x4 map)
    with pytest.raises(rfprobe.ArgumentError, match=r"op 'einsum' .* lost them \(einsum 'bchw,bchw->bc' sums over "
                                                    "spatial axis 'h'"):
        rfprobe.analyze(_Einsum("bchw,bchw->bc", True), input_shape=(2, 12, 12))

    class Gate(nn.Module):        # the same sum, broadcast back over the map
        def __init__(self):
            super().__init__()
            self.c = conv(2, 4, 3)

        def forward(self, x):
            y = self.c(x)
            return torch.einsum("bchw,bchw->bc", y, y)[..., None, None] * y
    a = rfprobe.analyze(Gate(), input_shape=(2, 12, 12))
    assert a.status == "global" and "'bchw,bchw->bc' sums over spatial axis 'h'" in a.global_causes[0]

    class Pooled(nn.Module):      # attention pooling: weights over positions, summed away
        def __init__(self):
            super().__init__()
            self.c = conv(2, 4, 3)

        def forward(self, x):
            y = self.c(x)
            return torch.einsum("bchw,bdhw->bcd", y, y).mean(-1)[..., None, None] * y
    g = rfprobe.analyze(Pooled(), input_shape=(2, 12, 12))
    assert g.status == "global" and any("sums over spatial axis" in c for c in g.global_causes), g.global_causes
    # a product of two maps that moves the axes is followed where they go (the digits pair the
    # operands' positions): output (N, C, W, H), unit (i, j) is row i, column j, a 3x3 conv's box
    moved = rfprobe.verify(_Einsum("bchw,bchw->bcwh", True), input_shape=(2, 12, 12))
    assert moved.ok and moved.analysis.box((1, 2)) == ((1, 3), (2, 4)), str(moved)
    with pytest.raises(UnknownOpError, match="moves spatial axis 'h'"):
        rfprobe.analyze(_Einsum("bchw,oc->bcwh"), input_shape=(2, 12, 12))
    with pytest.raises(UnknownOpError, match="uses '...'"):
        rfprobe.analyze(_Einsum("...hw,oc->...hw"), input_shape=(2, 12, 12))


class _Windows(nn.Module):
    """A strided average pool written with Tensor.unfold windows on both spatial dims."""

    def __init__(self, size, step):
        super().__init__()
        self.size, self.step = size, step
        self.c = conv(1, 2, 3)

    def forward(self, x):
        w = self.c(x).unfold(3, self.size, self.step).unfold(2, self.size, self.step)
        return w.mean((-1, -2))      # (N, C, nH, nW, size, size) -> (N, C, nH, nW)


@pytest.mark.parametrize("size,step", [(3, 2), (4, 1), (2, 3)])
def test_tensor_unfold_windows_equal_the_pool_they_compute(size, step):
    """x.unfold(dim, size, step) on spatial dims: the same RF as AvgPool2d(size, step) after the
    conv (the pool's own rule, a different route), and the probe agrees (F.unfold, im2col,
    which shares the name, has its own rule: tests/test_fold.py)."""
    net = _Windows(size, step)
    a = rfprobe.analyze(net, input_shape=(1, 16, 16))
    pool = rfprobe.analyze(nn.Sequential(net.c, nn.AvgPool2d(size, step)), input_shape=(1, 16, 16))
    assert (a.size, a.stride, a.padding) == (pool.size, pool.stride, pool.padding)
    r = rfprobe.verify(net, input_shape=(1, 16, 16), unit=(1, 2))
    assert r.ok, str(r)


@pytest.mark.parametrize("pool", [nn.LPPool2d(2, 3), nn.LPPool2d(2, 3, stride=2), nn.LPPool2d(1, (2, 3), (3, 2), ceil_mode=True)])
def test_lp_pool_reads_its_kernel_not_its_norm(pool):
    """F.lp_pool2d(x, norm_type, kernel_size, stride): the same windows as AvgPool2d with that
    kernel and stride (another op's rule), and the probe agrees (the kernel was read from
    norm_type's place)."""
    net = nn.Sequential(conv(1, 1, 3), nn.Sigmoid(), pool)
    a = rfprobe.analyze(net, input_shape=(1, 20, 20))
    avg = rfprobe.analyze(nn.Sequential(conv(1, 1, 3), nn.AvgPool2d(pool.kernel_size, pool.stride,
                                                                   ceil_mode=pool.ceil_mode)), input_shape=(1, 20, 20))
    assert (a.size, a.stride) == (avg.size, avg.stride)
    r = rfprobe.verify(net, input_shape=(1, 20, 20), unit=(1, 2))
    assert r.ok, str(r)



class _ArgmaxGate(nn.Module):
    """A 3x3 branch scaled by the index of the largest of three 5x5-branch channels."""

    def __init__(self):
        super().__init__()
        self.a = conv(1, 2, 3)
        self.b = conv(1, 3, 5, padding=1)

    def forward(self, x):
        return self.a(x) * self.b(x).argmax(1, keepdim=True).to(x.dtype)


def _Strips():
    """Strip pooling: a column mean and a row max added back to every position."""
    return ConvThen(lambda y: y + y.mean(2, keepdim=True) + y.amax(3, keepdim=True), cout=2)


@pytest.mark.parametrize("make", [_ArgmaxGate, _Strips], ids=["argmax", "strips"])
def test_argmax_indices_and_strip_pooling_match_a_perturbation(make):
    """argmax's indices are followed like values (the 5x5 branch decides the scale: it was
    dropped, status ok with the 3x3); a mean or max over one spatial axis with keepdim reads
    that whole axis and only its own index on the other (a cross, not global)."""
    shape = (1, 10, 10)
    a = rfprobe.analyze(make(), input_shape=shape)
    moved = perturbed(make(), shape)
    units = [(0, 0), (3, 4), (7, 7)] if make is _Strips else [(0, 0), (2, 3), (5, 5)]
    for unit in units:
        assert (a.region(unit, bounded=True).input_mask() == moved[unit]).all(), unit
    if make is _ArgmaxGate:
        r = rfprobe.verify(make(), input_shape=shape)
        assert any("'argmax#0' (argmax) carries values but no gradient" in d for d in r.diagnoses), r.diagnoses
    else:
        assert a.status != "global"


def test_integer_indices_into_an_op_without_a_rule_are_refused_not_dropped():
    gather = ConvThen(lambda y: torch.gather(y, 1, y.argmax(1, keepdim=True)), cout=2)
    with removed_records("gather"), pytest.raises(UnknownOpError, match="'gather'"):
        rfprobe.analyze(gather, input_shape=(1, 10, 10))


def test_forward_hooks_run_and_no_note_says_otherwise():
    """The private copy runs the user's forward hooks, as a plain forward does (tests/test_hooks.py
    has the RF they give): the hook is called, stays registered, and no note is added."""
    net = nn.Sequential(conv(1, 1, 3), conv(1, 1, 3))
    calls = []

    def seen(module, inputs, output):
        calls.append(1)
    handle = net[0].register_forward_hook(seen)
    a = rfprobe.analyze(net, input_shape=(1, 20, 20))
    r = rfprobe.verify(net, input_shape=(1, 20, 20))
    assert len(calls) >= 2 and len(net[0]._forward_hooks) == 1
    assert r.ok and not a.notes and "hooks" not in str(a)
    handle.remove()
    assert not rfprobe.analyze(net, input_shape=(1, 20, 20)).notes
