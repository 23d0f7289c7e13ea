"""Local attention written with ``F.unfold`` and ``F.fold`` (issue 19): im2col's grid of windows
goes on as the digits of its token dim, each grid position reading its window as a conv of that
geometry does, and fold is overlap-add, each output position reading the grid positions whose
windows cover it (a transposed conv's map). Each minimal model is checked against the
perturbation oracle (``tests/oracle.py``, which shares no code with rfprobe), in "steps" mode
(signed float64 weights, small and large steps) where a softmax would hide the oracle's huge
values, and verify must agree. Where a number is asserted, it is worked out by hand in the
docstring.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch.nn as nn
import torch.nn.functional as F

import rfprobe
from rfprobe.errors import UnknownOpError
from tests.oracle import each_position, perturbation_rf

UNITS = [(0, 0), (5, 5), (6, 3), (11, 11), (1, 10)]


def oracle_mask(model, shape, unit, steps: bool):
    """The oracle's set for ``unit`` (every channel): "steps" mode where a softmax would
    saturate on the huge mode's values."""
    if not steps:
        return perturbation_rf(model, shape, unit).mask
    i, j = unit
    return each_position(model, shape, lambda y, b: y[:, :, i, j] if b else y[0, :, i, j], mode="steps",
                         steps=(1e-3, -0.5, 8.0), seeds=(0,)).mask


def agrees(model, shape, units, steps=False) -> rfprobe.Analysis:
    """rfprobe's bounded set equals the oracle's at each unit, and verify passes there."""
    a = rfprobe.analyze(model, shape)
    for u in units:
        mine = a.region(u, bounded=True).input_mask()
        theirs = oracle_mask(model, shape, u, steps)
        assert (mine == theirs).all(), (u, np.argwhere(mine).tolist(), np.argwhere(theirs).tolist())
        r = rfprobe.verify(model, shape, unit=u)
        assert r.ok, str(r)
    return a


# ----------------------------------------------------------------------------- unfold -> Linear -> fold
class Tokens(nn.Module):
    """A 1x1 conv stem, then F.unfold into one token per window, a Linear over each token's
    (channel, window offset) entries, and F.fold back: a conv and a transposed conv of the
    same geometry, with every offset of a window mixed in between."""

    def __init__(self, k, stride=1, padding=0, dilation=1, c=2, size=12):
        super().__init__()
        self.geometry = dict(kernel_size=k, stride=stride, padding=padding, dilation=dilation)
        self.size = size
        self.stem = nn.Conv2d(1, c, 1)
        self.mix = nn.Linear(c * k * k, c * k * k)

    def forward(self, x):
        cols = F.unfold(self.stem(x), **self.geometry)          # (N, C*k*k, L)
        cols = self.mix(cols.transpose(1, 2)).transpose(1, 2)
        return F.fold(cols, (self.size, self.size), **self.geometry)


@pytest.mark.parametrize("k, stride, padding, dilation, interior", [
    (3, 1, 1, 1, 5),    # windows h-1..h+1 cover h from grid h-1..h+1: rows h-2..h+2
    (2, 2, 0, 1, 2),    # tiles: row h lies in window h//2 alone, which reads 2*(h//2)..+1
    (3, 1, 2, 2, 9),    # taps 0, 2, 4 around g-2: h lies in windows h, h-2, h+2, which read h-4..h+4
    (3, 2, 1, 1, 5),    # windows 2g-1..2g+1: an even row lies in one window (3 rows), an odd one in two (5)
])
def test_unfold_linear_fold_reads_the_windows_that_cover_a_position(k, stride, padding, dilation, interior):
    """Output ``h`` reads every window that covers it, and each window reads its own rows: the
    oracle's set, unit by unit, with the widest box per axis worked out by hand above."""
    net = Tokens(k, stride, padding, dilation)
    a = agrees(net, (1, 12, 12), UNITS)
    widest = max(a.region(u, bounded=True).box[0][1] - a.region(u, bounded=True).box[0][0] + 1
                 for u in [(5, 5), (6, 6)])
    assert widest == interior


def test_unfold_is_a_conv_for_the_closed_form():
    """Up to F.fold each grid position reads its window as a conv: the closed form's size,
    stride and padding of the unfold are the conv's (3, 2, 1), and after the per-token Linear
    too; fold's overlap-add depends on the position (varies)."""
    a = rfprobe.analyze(Tokens(3, 2, 1), (1, 12, 12))
    by_op = {layer.op: layer for layer in a.layers}
    assert (by_op["unfold"].size, by_op["unfold"].stride, by_op["unfold"].padding) == ((3, 3), (2, 2), (1, 1))
    assert (by_op["linear"].size, by_op["linear"].stride) == ((3, 3), (2, 2))
    assert a.status == "varies"


class Signal(nn.Module):
    """A 1-D signal as a map of one row: F.unfold with a (1, 3) kernel, a Linear over each
    window's entries, F.fold back, the row squeezed away."""

    def __init__(self, c=2):
        super().__init__()
        self.stem = nn.Conv1d(1, c, 1)
        self.mix = nn.Linear(3 * c, 3 * c)

    def forward(self, x):
        cols = F.unfold(self.stem(x).unsqueeze(2), (1, 3), padding=(0, 1))
        cols = self.mix(cols.transpose(1, 2)).transpose(1, 2)
        return F.fold(cols, (1, x.shape[-1]), (1, 3), padding=(0, 1)).squeeze(2)


def test_unfold_and_fold_of_a_signal_as_one_row():
    """The grid has one row, so L holds the signal's one axis alone: sample ``t`` reads the
    windows ``t-1..t+1``, samples ``t-2..t+2`` (by hand), as the oracle finds."""
    net = Signal()
    a = rfprobe.analyze(net, (1, 16))
    for t in (0, 7, 15):
        assert (a.region((t,), bounded=True).input_mask() == perturbation_rf(net, (1, 16), (t,)).mask).all(), t
        assert rfprobe.verify(net, (1, 16), unit=(t,)).ok
    assert a.region((7,), bounded=True).box == ((5, 9),)


# ----------------------------------------------------------------------------- VOLO's outlooker
class Outlook(nn.Module):
    """VOLO's outlook attention (timm's ``OutlookAttention``), after a 3x3 conv stem: values
    unfolded into k*k windows, attention weights made by a Linear from each (pooled) position
    alone, a softmax over the k*k window entries (which sit in an opaque dim, as channels do),
    the weighted values folded back by overlap-add."""

    def __init__(self, c=4, heads=2, k=3, padding=1, stride=1):
        super().__init__()
        self.heads, self.k, self.padding, self.stride = heads, k, padding, stride
        self.stem = nn.Conv2d(1, c, 3, padding=1)
        self.v = nn.Linear(c, c)
        self.attn = nn.Linear(c, k ** 4 * heads)
        self.proj = nn.Linear(c, c)
        self.unfold = nn.Unfold(k, padding=padding, stride=stride)
        self.pool = nn.AvgPool2d(stride, stride, ceil_mode=True)

    def forward(self, x):
        x = self.stem(x).permute(0, 2, 3, 1)           # (B, H, W, C)
        B, H, W, C = x.shape
        k2 = self.k * self.k
        v = self.v(x).permute(0, 3, 1, 2)
        h, w = math.ceil(H / self.stride), math.ceil(W / self.stride)
        v = self.unfold(v).reshape(B, self.heads, C // self.heads, k2, h * w).permute(0, 1, 4, 3, 2)
        attn = self.pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        attn = self.attn(attn).reshape(B, h * w, self.heads, k2, k2).permute(0, 2, 1, 3, 4)
        attn = (attn * 0.5).softmax(dim=-1)
        x = (attn @ v).permute(0, 1, 4, 3, 2).reshape(B, C * k2, h * w)
        x = F.fold(x, (H, W), self.k, padding=self.padding, stride=self.stride)
        return self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@pytest.mark.parametrize("stride", [1, 2])
def test_outlook_attention_reads_the_windows_that_cover_a_position(stride):
    """The softmax over a window's k*k entries mixes within one grid position (its weights come
    from that position alone), so it widens nothing: output ``h`` reads the values of the
    windows covering it and the pooled positions those windows sit at, through the 3x3 stem.
    Stride 1: windows h-1..h+1, reading h-2..h+2, stem h-3..h+3 (7 rows). The oracle, in steps
    mode (the softmax saturates on huge values), agrees unit by unit."""
    a = agrees(Outlook(stride=stride), (1, 12, 12), UNITS, steps=True)
    if stride == 1:
        box = a.region((5, 5), bounded=True).box
        assert box == ((2, 8), (2, 8))


# ----------------------------------------------------------------------------- TNT's pixel tokens
class PixelTokens(nn.Module):
    """TNT's inner transformer on its pixel tokens: a 1x1 conv stem, F.unfold into 4x4 patches,
    each patch's 16 pixels as tokens of their own sequence (the patches go into the batch,
    ``(N*L, 16, C)``), attention among them, then back to (N, C*16, L) and F.fold into the map."""

    def __init__(self, c=4, p=4):
        super().__init__()
        self.c, self.p = c, p
        self.stem = nn.Conv2d(1, c, 1)
        self.qkv = nn.Linear(c, 3 * c)

    def forward(self, x):
        y = self.stem(x)
        N, C, H, W = y.shape
        cols = F.unfold(y, self.p, stride=self.p)                   # (N, C*16, L)
        L = cols.shape[-1]
        pixels = cols.transpose(1, 2).reshape(N * L, C, self.p * self.p).transpose(1, 2)    # (N*L, 16, C)
        q, k, v = self.qkv(pixels).chunk(3, dim=-1)
        out = (q @ k.transpose(-2, -1) * C ** -0.5).softmax(-1) @ v
        cols = out.transpose(1, 2).reshape(N, L, C * self.p * self.p).transpose(1, 2)
        return F.fold(cols, (H, W), self.p, stride=self.p)


def test_pixel_tokens_attend_inside_their_patch():
    """Each pixel attends over the 16 pixels of its patch and nowhere else: output (5, 5) reads
    the patch of rows and columns 4..7, by hand; the oracle agrees unit by unit."""
    a = agrees(PixelTokens(), (1, 12, 12), UNITS, steps=True)
    assert a.region((5, 5), bounded=True).box == ((4, 7), (4, 7))


class PatchConv(nn.Module):
    """TNT's pixel embedding (timm, not legacy): F.unfold of the map into 8x8 patches, each
    patch a small image in the batch, ``(N*L, C, 8, 8)``, run through a conv of its own, then
    its pixels as tokens, attention among them, and their mean back on the grid of patches."""

    def __init__(self, c=2):
        super().__init__()
        self.stem = nn.Conv2d(1, c, 1)
        self.proj = nn.Conv2d(c, 4, 3, stride=2, padding=1)
        self.qkv = nn.Linear(4, 12)

    def forward(self, x):
        y = self.stem(x)
        N, C, H, W = y.shape
        patches = F.unfold(y, 8, stride=8).transpose(1, 2).reshape(-1, C, 8, 8)
        pixels = self.proj(patches).flatten(2).transpose(1, 2)          # (N*L, 16, 4)
        q, k, v = self.qkv(pixels).chunk(3, dim=-1)
        out = ((q @ k.transpose(-2, -1)).softmax(-1) @ v).mean(1)      # (N*L, 4)
        return out.reshape(N, H // 8, W // 8, 4).permute(0, 3, 1, 2)


def test_a_conv_run_on_each_patch_reads_its_patch():
    """A conv whose batch holds the patches keeps each patch apart, as it keeps any batch
    element: patch (1, 2) reads rows 8..15 and columns 16..23 of the input, by hand; the oracle
    agrees on every patch."""
    net = PatchConv()
    a = agrees(net, (1, 16, 24), [(0, 0), (1, 2), (0, 1)], steps=True)
    assert a.region((1, 2), bounded=True).box == ((8, 15), (16, 23))


# ----------------------------------------------------------------------------- what is refused, and the known limit
class FoldOf(nn.Module):
    def __init__(self, before):
        super().__init__()
        self.stem, self.before = nn.Conv2d(1, 4, 1), before

    def forward(self, x):
        return F.fold(self.before(self.stem(x)), (8, 8), 2, stride=2)


def test_fold_of_a_tensor_whose_last_dim_is_not_the_grid_is_refused_by_name():
    """F.fold reads its last dim as the grid of windows, row-major: a map flattened with its
    channels into that dim is not one, and rfprobe says so instead of guessing (the fold reads
    every position, as an op on digits it cannot follow does, and its output holds none)."""
    net = FoldOf(lambda y: y.reshape(1, 4, 4, 16).permute(0, 2, 1, 3).reshape(1, 16, 16))
    with pytest.raises(rfprobe.ArgumentError, match=r"op 'fold' .*F.fold \(col2im\) reads its last dim as a grid "
                                                    r"of 4x4 windows"):
        rfprobe.analyze(net, (1, 8, 8))


class Unfolds(nn.Module):
    def __init__(self, prepare, kernel):
        super().__init__()
        self.prepare, self.kernel = prepare, kernel

    def forward(self, x):
        return F.unfold(self.prepare(x), self.kernel)


@pytest.mark.parametrize("stem, prepare, kernel, shape", [
    (nn.Conv2d(1, 2, 1), lambda y: y.permute(0, 2, 3, 1), 2, (1, 8, 8)),    # channels last: W in dim -3
    (nn.Conv1d(1, 4, 1), lambda y: y, (2, 3), (1, 9)),     # (1, 4, 9) unbatched: windows across the channels
])
def test_unfold_whose_windows_slide_over_channels_is_refused_by_name(stem, prepare, kernel, shape):
    """F.unfold slides over the last two dims: where one of them holds channels and has more
    than one window, those windows would sit in L beside the positions; rfprobe says so."""
    with pytest.raises(UnknownOpError, match=r"F.unfold \(im2col\) slides over the last two dims"):
        rfprobe.analyze(nn.Sequential(stem, Unfolds(prepare, kernel)), shape)


def test_fold_of_unfold_alone_is_overstated_and_verify_says_so():
    """The window's offsets sit in dim 1 with the channels, read whole as channels are: with
    nothing between them, F.fold puts each offset back where F.unfold took it, so each output
    reads only its own position (times the windows covering it), while the exact route reads
    the windows (5x5 inside). The known limit (docs/design.md), which verify reports."""
    class Round(nn.Module):
        def forward(self, x):
            return F.fold(F.unfold(x, 3, padding=1), (8, 8), 3, padding=1)
    net = nn.Sequential(nn.Conv2d(1, 2, 1), Round())
    assert oracle_mask(net, (1, 8, 8), (4, 4), steps=False).sum() == 1
    a = rfprobe.analyze(net, (1, 8, 8))
    assert a.region((4, 4), bounded=True).box == ((2, 6), (2, 6))
    assert not rfprobe.verify(net, (1, 8, 8), unit=(4, 4)).ok
