"""Positions that move between dims (issue 19): tokens, windows folded into the batch, rows,
a reduction put back by ``unsqueeze``. Each minimal model is checked against the perturbation
oracle (``tests/oracle.py``, which shares no code with rfprobe): in "steps" mode (signed float64
weights, small and large steps) where a softmax would hide the oracle's huge values, and verify
must agree. Where a number is asserted, it is worked out by hand in the docstring.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import rfprobe
from tests.oracle import each_position, perturbation_rf


def oracle_mask(model, shape, unit, channels_last=False):
    """The oracle's set for ``unit`` in steps mode (attention saturates the huge mode)."""
    i, j = unit
    if channels_last:
        return each_position(model, shape, lambda y, b: y[:, i, j] if b else y[0, i, j], mode="steps",
                             steps=(1e-3, -0.5, 8.0), seeds=(0,)).mask
    return each_position(model, shape, lambda y, b: y[:, :, i, j] if b else y[0, :, i, j], mode="steps",
                         steps=(1e-3, -0.5, 8.0), seeds=(0,)).mask


def exact_mask(a, unit):
    return a.region(unit, bounded=True).input_mask()


class WindowAttention(nn.Module):
    """A 2x2 patch stem, then self-attention inside each ``ws`` x ``ws`` window of the grid:
    the windows go into the batch dim (view, permute, reshape), the tokens of a window into
    dim 1, as Swin does; ``shift`` rolls the grid first and back after."""

    def __init__(self, ws=2, shift=0, c=4):
        super().__init__()
        self.ws, self.shift = ws, shift
        self.stem = nn.Conv2d(1, c, 2, stride=2)
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)

    def forward(self, x):
        x = self.stem(x).permute(0, 2, 3, 1)                 # (B, H, W, C)
        b, h, w, c = x.shape
        ws = self.ws
        if self.shift:
            x = torch.roll(x, (-self.shift, -self.shift), dims=(1, 2))
        x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        x = self.mix(x)
        x = x.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        if self.shift:
            x = torch.roll(x, (self.shift, self.shift), dims=(1, 2))
        return x.permute(0, 3, 1, 2)

    def mix(self, x):
        """Attention among the tokens of each window, (nW, ws*ws, C)."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        attn = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
        return self.proj(attn @ v)


@pytest.mark.parametrize("shift", [0, 1])
def test_window_attention_reads_its_window(shift):
    """Grid 6x6 (12 px, stem 2x2 stride 2), windows of 2: unit (2, 3) reads the grid window
    rows 2..3, cols 2..3 (unshifted), that is pixels 4..7 x 4..7; shifted by 1 its window is
    rows 1..2 (rolled), cols 3..4: pixels 2..5 x 6..9. It was global: the merge of the windows
    into the batch lost the positions."""
    shape = (1, 12, 12)
    net = WindowAttention(shift=shift).eval()
    r = rfprobe.verify(net, shape)
    a = r.analysis
    assert r.ok, str(r)
    assert a.status == "varies"          # the window depends on the unit's place in it
    want = ((4, 7), (4, 7)) if not shift else ((2, 5), (6, 9))
    assert a.box((2, 3)) == want
    for unit in [(2, 3), (0, 0), (5, 5)]:
        assert (exact_mask(a, unit) == oracle_mask(net, shape, unit)).all(), unit


def test_window_attention_through_scaled_dot_product_attention():
    """The same windows through F.scaled_dot_product_attention with heads (B*nW, heads, L, d)."""
    class SDPA(WindowAttention):
        def mix(self, x):
            n, length, c = x.shape
            q, k, v = self.qkv(x).reshape(n, length, 3, 2, c // 2).permute(2, 0, 3, 1, 4).unbind(0)
            return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, length, c)
    shape = (1, 8, 8)
    net = SDPA().eval()
    r = rfprobe.verify(net, shape)
    assert r.ok, str(r)
    assert r.analysis.box((1, 2)) == ((0, 3), (4, 7))
    assert (exact_mask(r.analysis, (1, 2)) == oracle_mask(net, shape, (1, 2))).all()


def test_window_attention_written_with_einsum():
    """The windows of the first test, the products written as einsum (MaxViT's form): the
    same set as the oracle's. It was refused once the windows held their positions."""
    class Einsum(WindowAttention):
        def mix(self, x):
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            return torch.einsum("bij,bjd->bid", torch.einsum("bid,bjd->bij", q, k).softmax(-1), v)
    shape = (1, 8, 8)
    r = rfprobe.verify(Einsum(), shape)
    assert r.ok, str(r)
    assert r.analysis.box((1, 2)) == ((0, 3), (4, 7))
    assert (exact_mask(r.analysis, (1, 2)) == oracle_mask(Einsum(), shape, (1, 2))).all()


class Tokens(nn.Module):
    """ViT-style: a 4x4 patch stem, tokens (N, L, C) with a class token in front, a per-token
    LayerNorm and MLP (residual), then the grid back (the class token dropped) and a depthwise
    3x3 conv; ``out_tokens``: return the tokens instead."""

    def __init__(self, out_tokens=False, attention=False):
        super().__init__()
        self.out_tokens, self.attention = out_tokens, attention
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.cls = nn.Parameter(torch.rand(1, 1, 8))
        self.norm = nn.LayerNorm(8)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)

    def forward(self, x):
        x = self.stem(x)
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(b, -1, -1), t], dim=1)
        t = t + self.mlp(self.norm(t))
        if self.attention:
            t = t + self.attn(t, t, t, need_weights=False)[0]
        if self.out_tokens:
            return t
        return self.dw(t[:, 1:].transpose(1, 2).reshape(b, c, h, w))


def test_tokens_with_a_class_token_stay_local():
    """Per-token ops keep each token's patch: 4x4 patches, then a 3x3 depthwise conv on the
    grid: size 12, stride 4 (by hand: 4 + 2*4), the closed form ok. It was global: the
    flatten merged the positions."""
    shape = (3, 32, 32)
    r = rfprobe.verify(Tokens(), shape)
    a = r.analysis
    assert r.ok and a.status == "ok", str(r)
    assert (a.size, a.stride) == ((12, 12), (4, 4))
    oracle = perturbation_rf(Tokens(), shape, (3, 4))
    assert (exact_mask(a, (3, 4)) == oracle.mask).all()


def test_a_token_output_is_selected_by_its_grid_unit():
    """The tokens themselves, (1, 1 + 64, 8): a unit indexes the 8x8 grid behind the class
    token, and reads its 4x4 patch. The probe reads the same element (1 + 3*8 + 4)."""
    shape = (3, 32, 32)
    net = Tokens(out_tokens=True)
    r = rfprobe.verify(net, shape)
    a = r.analysis
    assert r.ok and a.status == "ok", str(r)
    assert a.output_shape == (1, 65, 8) and (a.size, a.stride) == ((4, 4), (4, 4))
    assert a.box((3, 4)) == ((12, 15), (16, 19))
    e = rfprobe.probe(net, shape, unit=(3, 4))
    assert e.box == ((12, 15), (16, 19))
    seen = perturbation_rf(net, shape, (0,), pick=lambda y: y[:, 1 + 3 * 8 + 4][:, :, None])
    assert seen.box == ((12, 15), (16, 19))


def test_attention_over_every_token_is_global_and_named():
    """Attention over all tokens (the class token too) reads every position: global, the
    attention named."""
    r = rfprobe.verify(Tokens(attention=True), (3, 16, 16))
    a = r.analysis
    assert r.ok and a.status == "global", str(r)
    assert any("attention" in c for c in a.global_causes), a.global_causes
    assert r.probe_box == ((0, 15), (0, 15))


class RowAttention(nn.Module):
    """Rows folded into the batch (B*H, W, C), a softmax attention along each row, back;
    written with ``@``, ``torch.bmm``, or ``nn.MultiheadAttention`` batch-first or not."""

    def __init__(self, form="matmul"):
        super().__init__()
        self.form = form
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.mha = nn.MultiheadAttention(4, 2, batch_first=form == "mha batch first")

    def forward(self, x):
        y = self.stem(x)
        b, c, h, w = y.shape
        t = y.permute(0, 2, 3, 1).reshape(b * h, w, c)
        if self.form == "matmul":
            t = torch.softmax(t @ t.transpose(1, 2), dim=-1) @ t
        elif self.form == "bmm":
            t = torch.bmm(torch.bmm(t, t.transpose(1, 2)).softmax(-1), t)
        elif self.form == "mha batch first":
            t = self.mha(t, t, t, need_weights=False)[0]
        else:
            s = t.transpose(0, 1)
            t = self.mha(s, s, s, need_weights=False)[0].transpose(0, 1)
        return t.reshape(b, h, w, c).permute(0, 3, 1, 2)


@pytest.mark.parametrize("form", ["matmul", "bmm", "mha batch first", "mha sequence first"])
def test_attention_along_rows_reads_its_row(form):
    """Unit (i, j) reads its row of the attention, columns 0..7, through the 3x3 stem: rows
    i-1..i+1, columns -1..8 (the padding counts in the box, not in the bounded set). It was
    global (nn.MultiheadAttention and bmm still were, until they got the product's rule)."""
    shape = (1, 6, 8)
    net = RowAttention(form).eval()
    r = rfprobe.verify(net, shape)
    a = r.analysis
    assert r.ok, str(r)
    assert a.box((3, 2)) == ((2, 4), (-1, 8))
    assert (exact_mask(a, (3, 2)) == oracle_mask(net, shape, (3, 2))).all()


class StripPool(nn.Module):
    """Strip pooling written without keepdim: the mean over H, put back by unsqueeze."""

    def __init__(self, keepdim):
        super().__init__()
        self.keepdim = keepdim
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        strip = y.mean(2, keepdim=True) if self.keepdim else y.mean(2).unsqueeze(2)
        return y + strip


def test_a_reduction_put_back_by_unsqueeze_is_the_keepdim_form():
    """Unit (i, j) reads every row and columns j-1..j+1 (within the input): the same as with
    keepdim, and the oracle's. It was global."""
    shape = (2, 8, 9)
    a, b = rfprobe.analyze(StripPool(False), shape), rfprobe.analyze(StripPool(True), shape)
    assert (a.status, a.size, a.stride) == (b.status, b.size, b.stride)
    for unit in [(0, 0), (4, 4), (7, 8)]:
        assert a.box(unit) == b.box(unit)
        assert a.region(unit, bounded=True).box == ((0, 7), (max(unit[1] - 1, 0), min(unit[1] + 1, 8)))
        assert (exact_mask(a, unit) == perturbation_rf(StripPool(False), shape, unit).mask).all()
    assert rfprobe.verify(StripPool(False), shape).ok


def test_window_attention_in_3d():
    """Video-Swin style windows of 2x2x2 over a (T, H, W) grid of 4x4x4 (stem 1x1x1): unit
    (1, 2, 3) reads its window: frames 0..1, rows 2..3, cols 2..3."""
    class Windows3d(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv3d(1, 4, 1)

        def forward(self, x):
            x = self.stem(x).permute(0, 2, 3, 4, 1)
            b, t, h, w, c = x.shape
            x = x.view(b, t // 2, 2, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, 8, c)
            x = torch.softmax(x @ x.transpose(1, 2), dim=-1) @ x
            x = x.view(b, t // 2, h // 2, w // 2, 2, 2, 2, c).permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, t, h, w, c)
            return x.permute(0, 4, 1, 2, 3)
    shape = (1, 4, 4, 4)
    r = rfprobe.verify(Windows3d(), shape)
    assert r.ok, str(r)
    a = r.analysis
    assert a.box((1, 2, 3)) == ((0, 1), (2, 3), (2, 3))
    o = each_position(Windows3d(), shape, lambda y, b: y[:, :, 1, 2, 3] if b else y[0, :, 1, 2, 3],
                      mode="steps", steps=(1e-3, -0.5, 8.0), seeds=(0,))
    assert (exact_mask(a, (1, 2, 3)) == o.mask).all()


@pytest.mark.slow
@pytest.mark.parametrize("unit", [(5, 6), (0, 0), (11, 11)])
def test_torchvision_swin_windows_are_exact(unit, monkeypatch):
    """The issue's small torchvision Swin, 48 px: a 12x12 grid, windows of 4, the second block
    shifted by 2. Unit (5, 6) sits in an unshifted window inside the image, (0, 0) and (11, 11)
    in shifted windows that wrap around. torchvision adds -100 to the wrapped keys' logits:
    they keep a weight of e^-100, which no float64 perturbation can see, so the oracle runs on
    the same model with that mask at 0 (a change by hand: the set it reads is the issue's
    definition of the RF, the whole rolled window)."""
    from torchvision.models.swin_transformer import SwinTransformer
    torch.manual_seed(0)
    net = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2], num_heads=[2], window_size=[4, 4]).eval()
    shape = (3, 48, 48)
    a = rfprobe.analyze(net, shape, layer="features")
    assert a.status == "varies"
    real = torch.Tensor.masked_fill
    monkeypatch.setattr(torch.Tensor, "masked_fill",
                        lambda t, m, v: real(t, m, 0.0 if isinstance(v, float) and v == -100.0 else v))
    i, j = unit
    o = each_position(net.features, shape, lambda y, b: y[:, i, j] if b else y[0, i, j], mode="steps",
                      steps=(1e-3, -0.5, 8.0), seeds=(0,))
    monkeypatch.undo()
    assert (exact_mask(a, unit) == o.mask).all()
    assert rfprobe.verify(net, shape, layer="features").ok


class UnknownAfterMerge(nn.Module):
    """The tests' unknown op on tokens (``tokens``) or on a pooled vector."""

    def __init__(self, tokens):
        super().__init__()
        self.c, self.tokens = nn.Conv2d(1, 4, 3, padding=1), tokens

    def forward(self, x):
        from tests.models import rfprobe_test_op
        y = self.c(x)
        b, c, h, w = y.shape
        if self.tokens:
            return y + rfprobe_test_op(y.flatten(2), -1).reshape(b, c, h, w)
        return y + rfprobe_test_op(y.mean((2, 3), keepdim=True).flatten(1), -1)[:, :, None, None]


@pytest.mark.parametrize("tokens", [True, False])
def test_an_unknown_op_on_merged_positions_is_named(tokens):
    """An op without a record reads what it likes, on tokens as on a pooled vector: refused by
    name (it was global, silently, and the op never named)."""
    from tests.models import UNKNOWN_OP
    with pytest.raises(rfprobe.UnknownOpError, match=f"op '{UNKNOWN_OP}'"):
        rfprobe.analyze(UnknownAfterMerge(tokens), (1, 8, 8))


def test_an_output_whose_positions_are_merged_with_channels_names_the_merge():
    """A flatten of (C, H, W) into one dim holds each position in several elements: no unit
    indexes it, and the refusal names the flatten."""
    with pytest.raises(rfprobe.ArgumentError, match="op 'flatten' .* lost them"):
        rfprobe.analyze(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(1)), (1, 8, 8))


class ColumnMajorTokens(nn.Module):
    """Tokens made column by column (W-major), read back as if row by row: the output holds
    the input's W axis in dim 2 and H in dim 3, a transposed map (a common slip)."""

    def __init__(self):
        super().__init__()
        self.embed, self.mix = nn.Conv2d(3, 4, 2, stride=2), nn.Linear(4, 4)

    def forward(self, x):
        y = self.embed(x)
        n, c, h, w = y.shape
        t = self.mix(y.permute(0, 3, 2, 1).reshape(n, w * h, c))
        return t.reshape(n, h, w, c).permute(0, 3, 1, 2)


def test_an_output_with_its_axes_swapped_says_so():
    """The positions follow the digits: unit (1, 3) (row 1, column 3 of the input's grid) is
    the output's element [..., 3, 1], rows 2..3 and columns 6..7 (the 2x2 patch); the notes
    say which dim holds which axis, as a square map shows nothing."""
    a = rfprobe.analyze(ColumnMajorTokens(), (3, 8, 8))
    assert any("axis 0 in dim 3, axis 1 in dim 2" in n for n in a.notes), a.notes
    assert a.box((1, 3)) == ((2, 3), (6, 7))
    o = perturbation_rf(ColumnMajorTokens(), (3, 8, 8), (1, 3), pick=lambda y: y.transpose(2, 3))
    assert (exact_mask(a, (1, 3)) == o.mask).all()
    assert not rfprobe.analyze(Tokens(), (3, 32, 32)).notes


def test_tokens_of_a_one_by_one_grid_are_a_map_again():
    """Twins at 32 px: the last stage's tokens (1, 1, C) of a 1x1 grid, reshaped back to
    (1, C, 1, 1) for a conv. An axis of one position sits in any dim of size 1 (the reshape
    once took the batch dim for one of them, and the conv was refused: "conv2d on dims (-4,
    -1)"); the flatten made the map global before.
    By hand: a 4x4 patch, then a 1x1 conv: 4x4 at stride 4, at the oracle's box."""
    class OneByOne(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.norm, self.conv = nn.Conv2d(3, 8, 4, stride=4), nn.LayerNorm(8), nn.Conv2d(8, 8, 1)

        def forward(self, x):
            y = self.embed(x)
            b, c, h, w = y.shape
            t = self.norm(y.flatten(2).transpose(1, 2))
            return self.conv(t.reshape(b, h, w, c).permute(0, 3, 1, 2))
    r = rfprobe.verify(OneByOne(), (3, 4, 4))
    a = r.analysis
    assert r.ok and a.status == "ok" and (a.size, a.stride) == ((4, 4), (4, 4)), str(r)
    assert perturbation_rf(OneByOne(), (3, 4, 4), (0, 0)).box == a.box((0, 0)) == ((0, 3), (0, 3))
