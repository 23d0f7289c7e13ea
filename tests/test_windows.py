"""Window attention as timm's sweep meets it (issue 19): queries pooled inside their window
(hiera), a pool run on windows folded into the batch (SAM2's hiera), a global query repeated
over the windows (gcvit), halo blocks (halonet). Each minimal model is checked against the
perturbation oracle (``tests/oracle.py``, which shares no code with rfprobe) in "steps" mode
(signed float64 weights, small and large steps), since a softmax hides the oracle's huge
values, and verify must agree. Where a number is asserted, it is worked out by hand in the
docstring.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import rfprobe
from tests.oracle import each_position


def oracle_mask(model, shape, unit):
    """The oracle's set for ``unit`` of an (N, C, H, W) output, in steps mode."""
    i, j = unit
    return each_position(model, shape, lambda y, b: y[:, :, i, j] if b else y[0, :, i, j], mode="steps",
                         steps=(1e-3, -0.5, 8.0), seeds=(0,)).mask


def exact_mask(a, unit):
    return a.region(unit, bounded=True).input_mask()


def assert_oracle_agrees(net, shape, units):
    r = rfprobe.verify(net, shape)
    assert r.ok, str(r)
    for unit in units:
        assert (exact_mask(r.analysis, unit) == oracle_mask(net, shape, unit)).all(), unit
    return r.analysis


class PooledQueries(nn.Module):
    """Hiera's mask-unit attention at a stage change: a 2x2 stem (stride 2) gives an 8x8 grid,
    cut into 2x2 windows of 4x4 tokens; inside a window the tokens are ordered (dr, dc, R, C)
    where a row is 2R + dr, so the queries are max-pooled 2x2 by an ``amax`` over the leading
    4 (dr, dc); keys and values keep the window's 16 tokens. The output is a 4x4 grid."""

    def __init__(self, c=4):
        super().__init__()
        self.stem = nn.Conv2d(1, c, 2, stride=2)
        self.qkv = nn.Linear(c, 3 * c)

    def forward(self, x):
        x = self.stem(x).permute(0, 2, 3, 1)                           # (B, 8, 8, C)
        b, c = x.shape[0], x.shape[-1]
        x = x.view(b, 2, 2, 2, 2, 2, 2, c)                             # (wh, R, dr, ww, C, dc)
        x = x.permute(0, 1, 4, 3, 6, 2, 5, 7).reshape(b * 4, 16, c)    # (windows, dr dc R C, C)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q = q.reshape(b * 4, 4, 4, c).amax(dim=1)                      # pooled over (dr, dc)
        x = F.scaled_dot_product_attention(q, k, v)                    # (windows, R C, C)
        x = x.view(b, 2, 2, 2, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(b, 4, 4, c)
        return x.permute(0, 3, 1, 2)


def test_pooled_queries_read_their_window():
    """16 px: output unit (1, 2) sits in window (0, 1) of the 4x4 output (2x2 per window), and
    reads every key of its window: grid rows 0..3, cols 4..7, pixels 0..7 x 8..15. The queries
    (pooled, 4 tokens a window) and the keys (16) hold the window in digits of different
    weights, which made the keys read globally."""
    shape = (1, 16, 16)
    a = assert_oracle_agrees(PooledQueries().eval(), shape, [(1, 2), (0, 0), (3, 3)])
    assert a.status == "varies"
    assert a.box((1, 2)) == ((0, 7), (8, 15))


def windows(x, ws):
    """(B, H, W, C) -> (B * windows, ws, ws, C), the windows into the batch (Swin, SAM2)."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws, ws, c)


def unwindows(x, b, h, w):
    """The inverse of :func:`windows`: (B * windows, ws, ws, C) -> (B, H, W, C)."""
    ws, c = x.shape[1], x.shape[-1]
    x = x.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


class ConvInWindows(nn.Module):
    """A 2x2 stem (stride 2), then a 3x3 conv (padding 1) run on each 4x4 window of the grid
    folded into the batch: the conv's padding pads the window, so it does not read across."""

    def __init__(self, c=3):
        super().__init__()
        self.stem = nn.Conv2d(1, c, 2, stride=2)
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        x = self.stem(x).permute(0, 2, 3, 1)
        b, h, w, _ = x.shape
        x = self.conv(windows(x, 4).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return unwindows(x, b, h, w).permute(0, 3, 1, 2)


def test_a_conv_in_windows_stops_at_the_window_edge():
    """16 px, an 8x8 grid in 4x4 windows: grid unit (3, 4) reads grid rows 2..3 (row 4 is the
    next window) and cols 4..5 (col 3 is the previous window), pixels 4..7 x 8..11; unit (1, 1)
    reads rows and cols 0..2, pixels 0..5 x 0..5. It was refused: a conv whose input holds its
    positions as digits had a rule only where the top digits are the trailing dims."""
    shape = (1, 16, 16)
    a = assert_oracle_agrees(ConvInWindows().eval(), shape, [(3, 4), (1, 1), (5, 2)])
    assert a.status == "varies"
    assert a.box((3, 4)) == ((4, 7), (8, 11))
    assert a.box((1, 1)) == ((0, 5), (0, 5))


class PooledInWindows(nn.Module):
    """SAM2's hiera at a stage change: a 2x2 stem (stride 2) gives an 8x8 grid in 4x4 windows
    folded into the batch; the queries are max-pooled 2x2 (stride 2) as (B * windows, C, 4, 4)
    and attend to the window's 16 keys. The output is a 4x4 grid."""

    def __init__(self, c=4):
        super().__init__()
        self.stem = nn.Conv2d(1, c, 2, stride=2)
        self.qkv = nn.Linear(c, 3 * c)

    def forward(self, x):
        x = self.stem(x).permute(0, 2, 3, 1)
        b, h, w, c = x.shape
        x = windows(x, 4)                                              # (B*4, 4, 4, C)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q = F.max_pool2d(q.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)  # (B*4, 2, 2, C)
        x = F.scaled_dot_product_attention(q.reshape(-1, 4, c), k.reshape(-1, 16, c), v.reshape(-1, 16, c))
        return unwindows(x.reshape(-1, 2, 2, c), b, h // 2, w // 2).permute(0, 3, 1, 2)


def test_queries_pooled_in_windows_read_their_window():
    """16 px: output unit (2, 1) sits in window (1, 0) of the 4x4 output (2x2 per window), and
    reads every key of its window: grid rows 4..7, cols 0..3, pixels 8..15 x 0..7. The pool
    was refused (as the conv above)."""
    shape = (1, 16, 16)
    a = assert_oracle_agrees(PooledInWindows().eval(), shape, [(2, 1), (0, 3), (3, 3)])
    assert a.status == "varies"
    assert a.box((2, 1)) == ((8, 15), (0, 7))


def test_a_pool_that_tiles_its_windows_keeps_the_closed_form():
    """A 2x2 max pool (stride 2) on 4x4 windows of an 8x8 input folded into the batch never
    reaches past a window, and the windows tile the axis at its stride: output ``j`` reads
    ``2j, 2j+1`` as the pool alone does, so the closed form holds (size 2, stride 2)."""
    class Pool(nn.Module):
        def forward(self, x):
            b, c, h, w = x.shape
            y = F.max_pool2d(windows(x.permute(0, 2, 3, 1), 4).permute(0, 3, 1, 2), 2)
            return unwindows(y.permute(0, 2, 3, 1), b, h // 2, w // 2).permute(0, 3, 1, 2)
    r = rfprobe.verify(Pool(), (2, 8, 8))
    assert r.ok, str(r)
    assert (r.analysis.status, r.analysis.size, r.analysis.stride) == ("ok", (2, 2), (2, 2))


class GlobalQuery(nn.Module):
    """GCViT's global query: a 2x2 stem (stride 2) gives an 8x8 grid in 4x4 windows; the query
    is the grid average-pooled 2x2 (4x4, one window's worth of tokens), copied to each window
    by ``repeat_interleave`` over the batch, and attends to the window's keys."""

    def __init__(self, c=4):
        super().__init__()
        self.stem = nn.Conv2d(1, c, 2, stride=2)
        self.kv = nn.Linear(c, 2 * c)

    def forward(self, x):
        x = self.stem(x)
        g = F.avg_pool2d(x, 2).permute(0, 2, 3, 1)                      # (B, 4, 4, C)
        x = x.permute(0, 2, 3, 1)
        b, h, w, c = x.shape
        k, v = self.kv(windows(x, 4).reshape(-1, 16, c)).chunk(2, dim=-1)
        q = g.repeat_interleave(4, dim=0).reshape(-1, 16, c)             # (B*4, 16, C)
        y = torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v
        return unwindows(y.reshape(-1, 4, 4, c), b, h, w).permute(0, 3, 1, 2)


def test_a_global_query_repeated_over_the_windows():
    """16 px: output unit (5, 2) is token (1, 2) of window (1, 0). Its keys and values are
    the window's, pixels 8..15 x 0..7; its query is the pooled grid's (1, 2), grid 2..3 x
    4..5, pixels 4..7 x 8..11. Union's box: 4..15 x 0..11 (not all of it: pixels 0..3 are
    out). ``repeat_interleave`` had no rule."""
    shape = (1, 16, 16)
    a = assert_oracle_agrees(GlobalQuery().eval(), shape, [(5, 2), (1, 6), (7, 7)])
    assert a.status == "varies"
    assert a.box((5, 2)) == ((4, 15), (0, 11))
    assert int(exact_mask(a, (5, 2)).sum()) == 8 * 8 + 4 * 4


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_repeat_interleave_along_a_dim(dim):
    """Along a spatial dim, output ``j`` reads ``j // r`` (nearest upsampling by 2: a 3x3 conv
    after it reads rows (j-1)//2 .. (j+1)//2); along the channels every position stays."""
    net = nn.Sequential(nn.Conv2d(1, 2, 1), Interleave(dim), nn.Conv2d(4 if dim == 1 else 2, 1, 3))
    shape = (1, 6, 5)
    a = assert_oracle_agrees(net.eval(), shape, [(0, 0), (1, 2), (3, 1)])
    want = {1: ((0, 2), (2, 4)), 2: ((0, 1), (2, 4)), 3: ((0, 2), (1, 2))}
    assert a.box((0, 2)) == want[dim]


class Interleave(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x.repeat_interleave(2, dim=self.dim)
