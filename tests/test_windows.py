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


def window_of(unit, ws, shape):
    """The mask of the ``ws`` x ``ws`` window that holds ``unit`` in a map of ``shape``."""
    m = torch.zeros(shape, dtype=torch.bool)
    i, j = (u // ws * ws for u in unit)
    m[i:i + ws, j:j + ws] = True
    return m.numpy()


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


class PooledKeys(nn.Module):
    """MViTv2's attention over pooled keys: a 2x2 stem (stride 2) gives a 6x6 grid of tokens;
    the keys and values are pooled with a 1x1 kernel at stride 2 (grid rows and cols 0, 2, 4),
    which skips positions; every query attends to all 9 keys, with a relative-position term
    over the query rows added to the logits viewed as (q_h, q_w, k_h, k_w), and the sum
    written back into the logits (``attn[:, :] = ...``)."""

    def __init__(self, c=4):
        super().__init__()
        self.stem = nn.Conv2d(1, c, 2, stride=2)
        self.q = nn.Linear(c, c)
        self.pool = nn.Conv2d(c, 2 * c, 1, stride=2)
        self.rel_h = nn.Parameter(torch.randn(6, 3, c))

    def forward(self, x):
        x = self.stem(x)                                                 # (B, C, 6, 6)
        b, c = x.shape[:2]
        q = self.q(x.flatten(2).transpose(1, 2))                         # (B, 36, C)
        k, v = self.pool(x).flatten(2).transpose(1, 2).chunk(2, dim=-1)  # (B, 9, C) each
        attn = q @ k.transpose(-2, -1)                                   # (B, 36, 9)
        rel = torch.einsum("bhwc,hkc->bhwk", q.reshape(b, 6, 6, c), self.rel_h)
        attn[:, :] = (attn.view(b, 6, 6, 3, 3) + rel.unsqueeze(-1)).view(b, 36, 9)
        y = torch.softmax(attn, dim=-1) @ v
        return y.transpose(1, 2).reshape(b, c, 6, 6)


def test_pooled_keys_are_global_with_the_set_they_read():
    """12 px: every unit reads the keys and values at grid rows and cols 0, 2, 4, pixels
    {0, 1, 4, 5, 8, 9} per axis (36 pixels), and its own query: unit (1, 1) pixels 2..3 x 2..3
    (40 in all), unit (2, 2) pixels 4..5, already among them (36). The status stays global
    (attention over every key) and names the op; the region is that set, not every pixel.
    Verify failed on it: global counted all 144 pixels as read, the probe saw 40. The
    relative-position add (the logits hold query and key digits, the term only the query's)
    and the write back into the logits were refused."""
    shape = (1, 12, 12)
    a = assert_oracle_agrees(PooledKeys().eval(), shape, [(1, 1), (2, 2), (5, 0)])
    assert a.status == "global" and a.global_causes
    assert int(exact_mask(a, (1, 1)).sum()) == 40
    assert int(exact_mask(a, (2, 2)).sum()) == 36


class WriteInWindows(nn.Module):
    """A write into two of the channels of tokens held as windows (the 6x6 grid of a 2x2 stem
    in 3x3 windows, (B * 4, 9, C)): ``t[..., :2] = conv of t``, the conv a 3x3 one on the
    grid before the windows."""

    def __init__(self, c=4):
        super().__init__()
        self.stem = nn.Conv2d(1, c, 2, stride=2)
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.mix = nn.Linear(c, c)

    def forward(self, x):
        x = self.stem(x)
        y = self.conv(x).permute(0, 2, 3, 1)
        x = x.permute(0, 2, 3, 1)
        b, h, w, c = x.shape
        t = windows(x, 3).reshape(-1, 9, c).clone()
        t[..., :2] = windows(y, 3).reshape(-1, 9, c)[..., :2]
        t = self.mix(t)                                 # the channels mixed: every unit reads both
        return unwindows(t.reshape(-1, 3, 3, c), b, h, w).permute(0, 3, 1, 2)


def test_a_write_into_some_channels_of_windows():
    """12 px: unit (1, 4) reads its own stem pixels (2..3 x 8..9) through the channels kept,
    and through the written ones the 3x3 conv's grid 0..2 x 3..5, pixels 0..5 x 6..11 (the
    conv ran before the windows, so it reads across them). A write into a tensor whose
    positions sit as digits was taken as a write into one without spatial axes (global)."""
    shape = (1, 12, 12)
    a = assert_oracle_agrees(WriteInWindows().eval(), shape, [(1, 4), (0, 0), (5, 5)])
    assert a.box((1, 4)) == ((0, 5), (6, 11))


def halo_net():
    """timm's HaloAttn after a 2x2 stem (stride 2): an 8x8 grid in blocks of 4x4, each block's
    queries attending to the block and a halo of 1 around it (keys by ``F.pad`` and two
    ``unfold``), plus relative-position logits whose relative-to-absolute skew pads a dim that
    holds the block's column digit with the logits (``rel_logits_1d``)."""
    from timm.layers.halo_attn import HaloAttn
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 2, stride=2),
                         HaloAttn(4, 4, num_heads=1, dim_head=4, block_size=4, halo_size=1)).eval()


def test_halo_attention_reads_its_block_and_halo():
    """16 px: unit (1, 5) is in block (0, 1), grid rows 0..3 and cols 4..7; with the halo of 1,
    rows -1..4 (0..4 inside) and cols 3..8 (3..7 inside): pixels 0..9 x 6..15. The padded
    skew reads its block whole, which the halo holds anyway. It was refused (pad of a dim
    that holds digits), and before that global (block and window digits of other weights)."""
    shape = (1, 16, 16)
    a = assert_oracle_agrees(halo_net(), shape, [(1, 5), (0, 0), (6, 3)])
    assert a.status == "varies"
    assert a.region((1, 5), bounded=True).box == ((0, 9), (6, 15))


def test_a_pad_of_a_dim_that_holds_digits_reads_it_whole():
    """Where nothing else reads the block, the padded dim's whole read is an over-statement:
    a 4x4 map in 2x2 windows folded into the batch, each window's 4 positions and channels
    flattened into one dim, padded with zeros, cut back and added to the windows. Each unit
    reads only its own pixel; the exact route says its window, and verify says the routes
    differ (documented in docs/design.md, known limits)."""
    class Skew(nn.Module):
        def forward(self, x):
            b, c, h, w = x.shape
            t = windows(x.permute(0, 2, 3, 1), 2)
            s = F.pad(t.reshape(-1, 4 * c), (0, 3))[:, :4 * c].reshape(-1, 2, 2, c)
            return unwindows(t + s, b, h, w).permute(0, 3, 1, 2)
    r = rfprobe.verify(Skew(), (2, 4, 4))
    oracle = oracle_mask(Skew(), (2, 4, 4), (1, 2))
    assert int(oracle.sum()) == 1 and oracle[1, 2]
    assert (exact_mask(r.analysis, (1, 2)) == window_of((1, 2), 2, (4, 4))).all()
    assert not r.ok and "differ" in str(r)
