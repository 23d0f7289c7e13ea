"""Rules for the ops a sweep of library models was refused on, and for the holes the op-surface
fuzz (tests/test_op_surface.py) found, each checked against the perturbation oracle
(tests/oracle.py) at every output unit, or against a hand computation.

* ``index_select`` along a spatial axis (SlowFast's temporal sampling) and along channels;
* ``std_mean`` and ``var_mean`` (HardNet's patch standardisation);
* ``new_zeros``, ``new_ones``, ``new_full`` (RT-DETR's AIFI builds position embeddings so);
* ``stft`` and ``istft`` (HDemucs): frames are strided windows along time;
* pad amounts given as 0-dim tensors (transformers' Encodec computes them so);
* window ops on a map whose channels went to the batch, local response norm on a channels-last
  map, weights computed from the input, ops whose output drops a trailing dim, shape lenders.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import rfprobe
from tests.oracle import each_position


def _oracle(net, shape, unit) -> np.ndarray:
    """The positions either mode of the oracle moves, for ``unit`` of a (N, C, *spatial) output."""
    def at(y, batched):
        return y[(slice(None), slice(None)) + unit] if batched else y[(0, slice(None)) + unit]
    return each_position(net, shape, at, mode="huge").mask | each_position(net, shape, at, mode="steps").mask


def _exact(net, shape, units=None) -> rfprobe.Analysis:
    """rfprobe's bounded set equals the oracle's at ``units``: by default both ends of each axis,
    the next ones in (where borders and position-dependent maps differ) and the centre."""
    a = rfprobe.analyze(net, shape)
    if units is None:
        picks = [sorted({0, 1, n // 2, n - 2, n - 1} & set(range(n))) for n in a.output_spatial]
        units = sorted({tuple(p[i % len(p)] for p in picks) for i in range(max(map(len, picks)))}
                       | {tuple(p[0] for p in picks), tuple(p[-1] for p in picks)})
    for u in units:
        u = tuple(int(i) for i in u)
        mine = a.region(u, bounded=True).input_mask()
        theirs = _oracle(net, shape, u)
        assert (mine == theirs).all(), (u, np.argwhere(mine).tolist(), np.argwhere(theirs).tolist())
    return a


class Then(nn.Module):
    """A conv (``k`` taps, same size) and then ``f``: the shape of most models here."""

    def __init__(self, f, dims=2, cin=1, cout=4, k=3):
        super().__init__()
        self.c = (nn.Conv1d if dims == 1 else nn.Conv2d)(cin, cout, k, padding=k // 2)
        self.f = f

    def forward(self, x):
        return self.f(self.c(x))


# ----------------------------------------------------------------------------- index_select
def test_index_select_along_time_reads_the_sampled_frames():
    """SlowFast's slow pathway samples frames with index_select along time: output frame j
    reads the conv's window around index[j] (by hand for j=1: index 3, frames 2..4)."""
    def sample(y):
        return torch.index_select(y, 2, torch.linspace(0, y.shape[2] - 1, y.shape[2] // 3).long())
    net = Then(sample, dims=1)
    a = _exact(net, (1, 12))
    assert a.region((1,), bounded=True).box == ((2, 4),)      # linspace(0, 11, 4) = 0, 3.67->3, 7.33->7, 11
    assert a.status == "varies"


@pytest.mark.parametrize("where", ["made in forward", "on the input's device"])
def test_index_select_along_a_spatial_axis_reads_index_j(where):
    """Output column j reads column index[j], repeats and reversals included; an index on the
    input's device (meta during the trace) sends the trace to the CPU, and the note says why."""
    def pick(y):
        index = torch.tensor([4, 0, 0, 2]) if where == "made in forward" else torch.tensor([4, 0, 0, 2], device=y.device)
        return y.index_select(3, index)
    a = _exact(Then(pick), (1, 6, 7))
    assert a.output_spatial == (6, 4)
    on_cpu = any("index_select's index" in n for n in a.notes)
    assert on_cpu == (where == "on the input's device"), a.notes


def test_index_select_along_channels_is_pointwise_and_a_computed_index_is_global():
    """Along channels each position reads its own 3x3; an index computed from the input (an
    argmax over a row) makes every unit read all it was computed from: global, naming
    index_select, and the oracle moves unit (0, 0) from outside its column's 3x3."""
    a = _exact(Then(lambda y: y.index_select(1, torch.tensor([3, 0]))), (1, 6, 7), [(0, 0), (3, 4)])
    assert a.status == "ok" and a.size == (3, 3)
    net = Then(lambda y: y.index_select(3, y[:, :1, :1].argmax(-1).reshape(1)))
    a = rfprobe.analyze(net, (1, 6, 7))
    # the first global op on the path is the argmax that computes the index (global_causes names
    # the ops that couple a map's positions themselves)
    assert a.status == "global" and any("argmax" in c or "index_select's index" in c for c in a.global_causes), a.global_causes
    assert _oracle(net, (1, 6, 7), (3, 0))[:, :].any(axis=0).sum() > 3


# ----------------------------------------------------------------------------- std_mean, var_mean
@pytest.mark.parametrize("op", ["std_mean", "var_mean"])
def test_std_mean_reads_what_std_and_mean_read(op):
    """HardNet standardises each patch with its own statistics: over space every unit reads
    everything (global, as the oracle moves every position); over channels it is pointwise;
    over one axis with keepdim each unit reads that whole axis (a strip)."""
    f = getattr(torch, op)

    def patch(y):
        s, m = f(y, dim=(2, 3), keepdim=True)
        return (y - m) / (s + 1e-7)
    a = rfprobe.analyze(Then(patch), (1, 5, 6))
    assert a.status == "global" and op in a.global_causes[0]
    assert _oracle(Then(patch), (1, 5, 6), (2, 3)).all()
    _exact(Then(lambda y: f(y, 1, keepdim=True)[0] * f(y, 1, keepdim=True)[1]), (1, 5, 6), [(0, 0), (2, 3)])
    a = _exact(Then(lambda y: y + f(y, 3, True, True)[1]), (1, 5, 6), [(0, 0), (2, 3), (4, 5)])
    assert a.region((2, 3)).box == ((1, 3), (-1, 6))          # rows 1..3, every column (and the padding)


# ----------------------------------------------------------------------------- new_zeros and kin
class _Aifi(nn.Module):
    """RT-DETR's AIFI adds a 2D sin-cos position embedding built from constants to the map."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x):
        y = self.c(x)
        h, w = y.shape[2:]
        pos = y.new_zeros(1, 4, h, w)
        rows = torch.arange(h, dtype=y.dtype, device=y.device)[:, None]
        cols = torch.arange(w, dtype=y.dtype, device=y.device)[None, :]
        pos[0, 0], pos[0, 1] = torch.sin(rows / 4).expand(h, w), torch.cos(cols / 4).expand(h, w)
        return y + pos + y.new_full((1, 4, 1, 1), 0.5) * y.new_ones(h, w)


def test_constants_built_with_new_zeros_add_no_position():
    """Adding a position embedding built with new_zeros/new_full/new_ones adds no position:
    each unit reads the conv's 3x3, as the oracle moves (status ok, size 3x3)."""
    a = _exact(_Aifi(), (1, 5, 6), [(0, 0), (2, 3), (4, 5)])
    assert a.status == "ok" and a.size == (3, 3)


@pytest.mark.parametrize("make", ["new_zeros", "new_ones", "new_full", "new_empty"])
def test_an_output_built_only_from_new_constants_reads_nothing(make):
    """An output made of them alone does not depend on the input: rfprobe says so, and no
    perturbation moves it."""
    def const(y):
        args = (y.shape, 2.0) if make == "new_full" else (y.shape,)
        return getattr(y, make)(*args).zero_() + 1.0
    net = Then(const)
    with pytest.raises(rfprobe.ArgumentError, match="does not depend on the model input"):
        rfprobe.analyze(net, (1, 5, 6))
    assert not _oracle(net, (1, 5, 6), (2, 3)).any()


def test_new_tensor_copies_its_data():
    """x.new_tensor(data) holds data's values: it reads what data reads, not x."""
    a = _exact(Then(lambda y: y.new_tensor(y.flip(3).detach())), (1, 5, 6), [(2, 0), (4, 5)])
    assert a.region((2, 0), bounded=True).box == ((1, 3), (4, 5))


# ----------------------------------------------------------------------------- stft, istft
class _Spectro(nn.Module):
    """conv1d -> stft of each channel -> |.| as (1, C*F, frames); or -> istft back to time."""

    def __init__(self, inverse=False, real=False, **kw):
        super().__init__()
        self.c, self.inverse, self.real, self.kw = nn.Conv1d(1, 2, 3, padding=1), inverse, real, kw

    def forward(self, x):
        y = self.c(x).reshape(-1, x.shape[-1])
        kw = dict(self.kw)
        if kw.pop("device_window", False):   # HDemucs: torch.hann_window(n_fft).to(x)
            kw["window"] = torch.hann_window(kw["n_fft"]).to(y)
        n_fft = kw.pop("n_fft")
        if self.inverse:
            z = torch.stft(y, n_fft, return_complex=True, **kw)
            kw.pop("pad_mode", None)
            w = torch.istft(z, n_fft, length=x.shape[-1], **kw)
            return w.reshape(1, -1, w.shape[-1])
        if self.real:
            z = torch.stft(y, n_fft, return_complex=False, **kw)       # (B, F, frames, 2)
            return z.movedim(-1, 1).reshape(1, -1, z.shape[-2])
        z = torch.stft(y, n_fft, return_complex=True, **kw).abs()
        return z.reshape(1, -1, z.shape[-1])


STFT = {
    "defaults (center, reflect, rectangular window)": dict(n_fft=8),
    "hann window: its zero first tap reads nothing": dict(n_fft=8, hop_length=3, window=torch.hann_window(8)),
    "no centre, a shorter window": dict(n_fft=8, hop_length=2, win_length=5, center=False),
    "no centre, aligned to the window": dict(n_fft=8, hop_length=2, win_length=5, center=False, align_to_window=True),
    "constant padding": dict(n_fft=6, hop_length=2, pad_mode="constant", window=torch.hann_window(6)),
    "window on the input's device": dict(n_fft=8, hop_length=2, device_window=True),
}


@pytest.mark.parametrize("name", sorted(STFT))
def test_stft_frames_are_strided_windows_along_time(name):
    """Frame f reads samples f*hop - n_fft//2 + t (t where the window is nonzero; reflect or
    constant borders), each frequency the whole frame: exact at every frame."""
    a = _exact(_Spectro(**STFT[name]), (1, 24))
    assert a.status == "varies"
    if name.startswith("defaults"):    # by hand: frame 2 reads samples 4-4..4+3, the conv adds 1 each side
        assert a.region((2,), bounded=True).box == ((0, 8),)
    if name.startswith("window on"):
        assert any("stft's window" in n for n in a.notes), a.notes


def test_stft_as_real_pairs_and_istft_overlap_add():
    """return_complex=False keeps frames in the second last dim; istft gives each sample the
    frames whose window covers it (hann: zero taps read nothing), trimmed to length."""
    _exact(_Spectro(real=True, n_fft=8, hop_length=2), (1, 20))
    a = _exact(_Spectro(inverse=True, n_fft=8, hop_length=2, window=torch.hann_window(8)), (1, 20))
    assert a.output_spatial == (20,)


def test_stft_with_a_window_computed_from_the_input_reads_everything():
    def stft(y):
        y = y.reshape(-1, y.shape[-1])
        z = torch.stft(y, 8, window=y[0, :8].abs(), return_complex=True).abs()
        return z.reshape(1, -1, z.shape[-1])
    a = rfprobe.analyze(Then(stft, dims=1, cout=1), (1, 16))
    assert a.status == "global" and any("stft's window computed from the model input" in c for c in a.global_causes)


# ----------------------------------------------------------------------------- pads given as tensors
class _EncodecLike(nn.Module):
    """transformers' EncodecConv1d: sizes held as int64 buffers, the extra right padding that
    makes the last frame whole computed with tensor arithmetic and math.ceil's tensor twin, and
    reflect padding that pads with zeros first when the input is shorter than the pad."""

    def __init__(self, kernel=4, stride=2):
        super().__init__()
        self.conv = nn.Conv1d(1, 2, kernel, stride)
        self.register_buffer("stride", torch.tensor(stride), persistent=False)
        self.register_buffer("kernel_size", torch.tensor(kernel), persistent=False)
        self.register_buffer("padding_total", torch.tensor(kernel - stride), persistent=False)

    def extra(self, x):
        length = x.shape[-1]
        n_frames = (length - self.kernel_size + self.padding_total) / self.stride + 1
        n_frames = torch.ceil(n_frames).to(torch.int64) - 1
        return n_frames * self.stride + self.kernel_size - self.padding_total - length

    @staticmethod
    def pad1d(x, paddings, mode="reflect"):
        length = x.shape[-1]
        left, right = paddings
        max_pad = max(left, right)
        extra_pad = 0
        if length <= max_pad:
            extra_pad = max_pad - length + 1
            x = F.pad(x, (0, extra_pad))
        padded = F.pad(x, paddings, mode)
        return padded[..., :padded.shape[-1] - extra_pad]

    def forward(self, x):
        right = self.padding_total // 2
        return self.conv(self.pad1d(x, (self.padding_total - right, right + self.extra(x))))


@pytest.mark.parametrize("length", [11, 2])
def test_pad_amounts_given_as_tensors_are_followed(length):
    """Encodec's padding (amounts as 0-dim tensors; at length 2 the zero-pad fallback too)
    ended in a raw TypeError inside rfprobe; now each unit reads what the oracle moves."""
    _exact(_EncodecLike(), (1, length))


@pytest.mark.slow
def test_encodec_encoder_conv_layers():
    """transformers' EncodecModel encoder (random weights, no download), input (1, 24000):
    every conv layer before its LSTM is analysed (no crash), its stride is the product of the
    config's downsampling ratios so far, and verify agrees with the probe at an inner unit."""
    transformers = pytest.importorskip("transformers")
    config = transformers.EncodecConfig()
    encoder = transformers.EncodecModel(config).encoder.eval()
    stride = 1
    ratios = list(reversed(config.upsampling_ratios))
    for i, layer in enumerate(encoder.layers):
        if isinstance(layer, transformers.models.encodec.modeling_encodec.EncodecLSTM):
            break
        if not isinstance(layer, transformers.models.encodec.modeling_encodec.EncodecConv1d) or i == 0:
            continue
        stride *= ratios.pop(0)
        a = rfprobe.analyze(encoder, (1, 24000), layer=f"layers.{i}")
        n = a.output_spatial[0]
        r0 = a.region((n // 2,))
        r1 = a.region((n // 2 + 1,))
        assert r1.box[0][0] - r0.box[0][0] == stride, (i, r0.box, r1.box)
    r = rfprobe.verify(encoder, (1, 24000), layer="layers.3", unit=(6000,))
    assert r.ok and r.exact_clipped_box == r.probe_box, str(r)


# ----------------------------------------------------------------------------- holes the fuzz found
def test_a_1d_window_op_on_a_map_whose_channels_went_to_the_batch():
    """lp_pool1d / avg_pool1d on a (C, H, W) map slides over W only (H is its channels): the
    rule once slid a 2D window over both, and a unit read nothing."""
    for pool in (lambda t: F.lp_pool1d(t, 2.0, 3), lambda t: F.avg_pool1d(t, 3, 2, 1)):
        net = Then(lambda y, pool=pool: pool(y.reshape(-1, *y.shape[2:])).reshape(1, y.shape[1], y.shape[2], -1))
        _exact(net, (1, 5, 9))


def test_a_2d_conv_with_a_1xk_kernel_on_an_unsqueezed_1d_map():
    """Audio models run Conv2d(1, k) on x.unsqueeze(2): its second axis slides over the one
    axis (by hand: 3 + (5 - 1) = 7 samples); the rule once took the first axis's kernel."""
    class Unsqueezed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv1d(1, 4, 3), nn.Conv2d(4, 3, (1, 5))

        def forward(self, x):
            return self.b(self.a(x).unsqueeze(2)).squeeze(2)
    a = _exact(Unsqueezed(), (1, 14))
    assert a.size == (7,)


def test_local_response_norm_of_a_channels_last_map_reads_a_window_of_rows():
    """F.local_response_norm normalises over dim 1; on (N, H, W, C) that is H: a window of 3
    rows (by hand: 3x3 conv, then rows -1..+1)."""
    a = _exact(Then(lambda y: F.local_response_norm(y.movedim(1, -1), 3).movedim(-1, 1)), (1, 6, 5))
    assert a.size == (5, 3)


def test_a_conv_whose_weight_is_computed_from_the_input_reads_everything():
    """Dynamic filters: a conv whose kernel comes from the input reads every position (the
    rule once followed the input alone, a 3x3 box)."""
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x):
            y = self.c(x)
            w = y.mean((2, 3)).reshape(1, 2, 1, 1).expand(2, 2, 3, 3)
            return F.conv2d(y, w, padding=1)
    a = rfprobe.analyze(Dynamic(), (1, 6, 6))
    assert a.status == "global" and any("dynamic filters" in c or "mean" in c for c in a.global_causes)
    assert _oracle(Dynamic(), (1, 6, 6), (0, 0)).all()

    class Weighted(Dynamic):     # the weight alone from the input: the input is a constant
        def forward(self, x):
            y = self.c(x)
            return F.conv2d(torch.ones_like(y), y[:, :, :3, :3].reshape(1, 2, 3, 3).expand(2, 2, 3, 3))
    # every unit reads the 3x3 template, conv outputs 0..2, which read input rows and columns 0..3
    a = rfprobe.analyze(Weighted(), (1, 6, 6))
    for unit in ((0, 0), (3, 3)):
        rows, cols = np.nonzero(_oracle(Weighted(), (1, 6, 6), unit))
        assert a.box(unit, bounded=True) == ((0, 3), (0, 3)) == ((rows.min(), rows.max()), (cols.min(), cols.max()))


def test_an_op_that_drops_a_trailing_dim_keeps_the_spatial_axes_where_they_are():
    """A channels-last map times a vector drops the last dim, so the spatial axes move one dim
    right: rfprobe once kept them at the same negative dims (on the batch) and refused the
    output with a puzzling shape; now it names the op when it cannot tell, and an einsum that
    sums the channels away, leading or trailing, puts the axes where their letters go."""
    v = torch.rand(4)
    with pytest.raises(rfprobe.ArgumentError, match="op 'matmul' .* lost them"):
        rfprobe.analyze(Then(lambda y: (y.movedim(1, -1) @ v).unsqueeze(1)), (1, 5, 6))
    for eq, f in (("bchw->bhw", lambda y: y), ("bhwc->bhw", lambda y: y.movedim(1, -1))):
        a = _exact(Then(lambda y, eq=eq, f=f: torch.einsum(eq, f(y)).unsqueeze(1)), (1, 5, 6), [(0, 0), (2, 3)])
        assert a.size == (3, 3), eq


def test_expand_as_lends_only_its_shape():
    """c.expand_as(y) and c.view_as(y) of a constant c read nothing of y."""
    for f in (lambda y: torch.ones(1, 4, 1, 1).expand_as(y), lambda y: torch.ones(y.numel()).view_as(y)):
        with pytest.raises(rfprobe.ArgumentError, match="does not depend on the model input"):
            rfprobe.analyze(Then(f), (1, 5, 6))


@pytest.mark.parametrize("name", ["narrow", "movedim", "roll", "pad"])
def test_int_arguments_given_as_tensors(name):
    """Sizes, dims and shifts given as 0-dim tensors are read as the ints they hold."""
    t = torch.tensor
    f = {"narrow": lambda y: y.narrow(3, t(1), t(3)),
         "movedim": lambda y: y.movedim(t(1), t(3)).movedim(-1, 1),
         "roll": lambda y: torch.roll(y, t(2), t(3)),
         "pad": lambda y: F.pad(y, (t(2), t(0), t(1), t(1)), mode="reflect")}[name]
    _exact(Then(f), (1, 5, 6), [(0, 0), (2, 1), (4, 2)])


def test_group_and_instance_norm_of_a_map_whose_channels_went_to_the_batch():
    """On (C, H, W), instance_norm normalises each H row over W (a whole row, its own row);
    group_norm with 5 groups of one row each the same; with one group, everything."""
    for f, rows in ((lambda t: F.instance_norm(t), 3), (lambda t: F.group_norm(t, 5), 3), (lambda t: F.group_norm(t, 1), 5)):
        net = Then(lambda y, f=f: f(y.reshape(-1, *y.shape[2:])).reshape(y.shape))
        a = _exact(net, (1, 5, 6), [(0, 0), (2, 3)])
        assert a.region((2, 3), bounded=True).size == (rows, 6)
