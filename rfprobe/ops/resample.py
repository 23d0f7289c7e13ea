"""Resampling and moving positions: interpolation, pixel (un)shuffle, padding, flips and rolls.

Most of these are position-dependent (``Mapped``): an upsampled output ``j`` reads the source
index PyTorch's kernel computes for it, a reflect-padded border reads an index inside, a
flipped axis reads ``n - 1 - j``. Interpolation source indices follow PyTorch's CPU kernels
(float32 arithmetic; antialiased taps are read from the kernel itself).

>>> import torch
>>> x = torch.empty(1, 1, 4)
>>> call = Call("interpolate", (x, None, 2.0, "nearest"), {}, (0,), (x,), ((-1,),), (1, 1, 8), 1)
>>> [interpolate(call)[0].axes[0].fn(j, True) for j in range(8)]
[[0], [0], [1], [1], [2], [2], [3], [3]]
"""
from __future__ import annotations

import functools

import numpy as np

from ..errors import UnknownOpError
from . import meta
from .maps import Affine, Call, InputDep, Mapped, Op, adaptive_window, each_axis, identity, negative_dims, rolled
from .pieces import carry, plan_maps

def pad(call: Call) -> list[InputDep]:
    """``F.pad(input, pad, mode, value)``: a shift (negative pads crop); in the bounded route,
    reflect/replicate/circular map border indices back inside, constant drops them. Amounts
    may be 0-dim integer tensors, as a model computes them from sizes (Encodec's padding)."""
    widths = [int(w) for w in call.arg(1, "pad")]
    mode = call.arg(2, "mode", "constant")
    k = call.data[0]
    sizes = call.spatial_in(k)
    axes = []
    for d, n_in in zip(call.in_layouts[k], sizes):
        i = 2 * (-d - 1)   # pairs run from the last dim backwards (channels-last pads work too)
        left = widths[i] if i < len(widths) else 0
        if left == 0 and (i + 1 >= len(widths) or widths[i + 1] == 0) or mode == "constant":
            axes.append(Affine((0,), 1, left, n_in))
            continue
        axes.append(Mapped(functools.partial(_padded, left, n_in, mode), n_in))
    return [InputDep(k, tuple(axes))]


def pad_pieces(call: Call):
    """:func:`pad` of a tensor whose positions sit as digits (:mod:`rfprobe.ops.pieces`): a
    padded dim without digits keeps every position where it is. A padded dim that holds digits
    is read whole, its elements then holding no position: an over-statement where no other path
    reads those positions (verify reports it), exact in the relative-to-absolute skew of
    relative-position logits (halonet's ``rel_logits_1d``), where the attention reads the
    whole block anyway."""
    widths = [int(w) for w in call.arg(1, "pad")]
    k = call.data[0]
    pieces = call.in_layouts[k]
    nd = len(pieces.dims)
    padded = {nd - 1 - i // 2 for i, w in enumerate(widths) if w}
    found, plans = carry([(pieces, {i: i for i in range(nd) if i not in padded})], call.out_shape, call.dims)
    return found, [InputDep(k, plan_maps(plans[0], f"{call.name} of a dim that holds positions folded with others"))]


def _padded(left: int, n_in: int, mode: str, j: int, bounded: bool) -> list[int]:
    return bordered(j - left, n_in, mode, bounded)


def bordered(src: int, n_in: int, mode: str, bounded: bool) -> list[int]:
    """The input index a padded position ``src`` reads (``src`` outside ``0..n_in-1`` lies in
    the padding): itself unbounded or inside; in the bounded route mirrored (reflect), clamped
    (replicate), wrapped (circular) or none (constant).

    >>> [bordered(i, 4, "reflect", True) for i in (-2, -1, 4, 5)]
    [[2], [1], [2], [1]]
    """
    if not bounded or 0 <= src < n_in:
        return [src]
    if mode == "reflect":
        period = 2 * (n_in - 1)
        m = src % period if period else 0
        return [m if m < n_in else period - m]
    if mode == "replicate":
        return [min(max(src, 0), n_in - 1)]
    if mode == "circular":
        return [src % n_in]
    if mode == "constant":
        return []
    raise UnknownOpError(f"F.pad mode {mode!r} has no rule")


def _scales(call: Call, sizes_in, sizes_out) -> list[float | None]:
    sf = call.arg(2, "scale_factor", None)
    size = call.arg(1, "size", None)
    recompute = call.arg(5, "recompute_scale_factor", None)
    if sf is None or size is not None or recompute:
        return [None] * len(sizes_in)
    return [float(x) for x in each_axis(sf, len(sizes_in))]


def interpolate(call: Call) -> list[InputDep]:
    """``F.interpolate``: nearest, nearest-exact, (bi/tri)linear, bicubic, area; with and without
    align_corners; bilinear and bicubic with antialias. Source indices are computed as
    PyTorch's CPU kernels do (float32 arithmetic; antialias in the tensor's own precision)."""
    mode = call.arg(3, "mode", "nearest")
    align = bool(call.arg(4, "align_corners", None))
    k = call.data[0]
    sizes_in = call.spatial_in(k)
    sizes_out = call.spatial_out
    scales = _scales(call, sizes_in, sizes_out)
    antialias = bool(call.arg(6, "antialias", False))
    wide = np.float64 if str(call.tensors[k].dtype) == "torch.float64" else np.float32
    # PyTorch's CPU antialias kernel reads other rows along H when W stays 1 (every output row
    # reads the first one's; its backward does not): the map follows what the forward computes
    narrow = len(sizes_in) == 2 and sizes_in[-1] == 1 and sizes_out[-1] == 1
    axes = []
    for a, (n_in, n_out, sf) in enumerate(zip(sizes_in, sizes_out, scales)):
        fn = (_interp_aa_axis(mode, align, n_in, n_out, sf, wide, narrow and a == 0) if antialias else
              _interp_axis(mode, align, n_in, n_out, sf))
        axes.append(Mapped(fn, n_in))
    return [InputDep(k, tuple(axes))]


def _interp_aa_axis(mode: str, align: bool, n_in: int, n_out: int, sf: float | None, wide=np.float32,
                    narrow: bool = False):
    """``F.interpolate(..., antialias=True)`` (bilinear, bicubic): output ``j`` reads the inputs
    whose filter weight is nonzero, the filter widened by the scale when downsampling.
    ``narrow``: the map of H when W is 1 before and after (see ``interpolate``)."""
    return functools.partial(_tapped, _aa_taps(mode, align, n_in, n_out, sf, wide is np.float64, narrow))


def _tapped(taps: tuple, j: int, bounded: bool) -> list[int]:
    return list(taps[j])


@functools.lru_cache(maxsize=256)
def _aa_taps(mode: str, align: bool, n_in: int, n_out: int, sf: float | None, double: bool, narrow: bool = False):
    """Per output index, the input indices with a nonzero antialiasing weight, read from
    PyTorch's own CPU kernel. Its weights are exactly zero only at the filter's edge, where the
    compiled code's rounding (fused multiply-adds in the cubic filter) decides: a formula
    mirrored in Python missed taps of weight 1e-14. One call, on a tiny input: channel ``c`` is
    one-hot at every input index ``i = c (mod K)``, K wider than any output's window
    (``_compute_weights_aa`` in UpSampleKernel.cpp: centre ``scale * (j + 0.5)``, half-width
    ``support``), so each nonzero output names exactly one tap."""
    import torch
    import torch.nn.functional as F
    interp = 2 if mode == "bilinear" else 4
    if align:
        scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    else:
        scale = 1.0 / sf if sf else n_in / n_out
    support = interp * 0.5 * max(scale, 1.0)
    k = int(np.ceil(support)) * 2 + 5          # the window (at most 2 ceil(support) + 1) and a margin
    if narrow:
        k = n_in     # the kernel's quirk reads other rows than the window: one channel per row
    dtype = torch.float64 if double else torch.float32
    # the other axis keeps size 2, or 1 where the model's does (``narrow``: the kernel's weights
    # differ then)
    w = 1 if narrow else 2
    x = torch.zeros(1, k, n_in, w, dtype=dtype)
    rows = torch.arange(n_in)
    x[0, rows % k, rows, :] = 1.0
    size = {"scale_factor": (sf, 1.0)} if sf else {"size": (n_out, w)}
    y = F.interpolate(x, mode=mode, align_corners=align, antialias=True, **size)[0, :, :, 0]
    if y.shape[1] != n_out:
        y = F.interpolate(x, size=(n_out, w), mode=mode, align_corners=align, antialias=True)[0, :, :, 0]
    taps = []
    for j in range(n_out):
        first = 0 if narrow else int(scale * (j + 0.5) - support + 0.5) - 2     # a little before the window
        found = sorted(first + (c - first) % k for c in torch.nonzero(y[:, j]).flatten().tolist())
        taps.append(tuple(i for i in found if 0 <= i < n_in))
    return tuple(taps)


def _interp_axis(mode: str, align: bool, n_in: int, n_out: int, sf: float | None):
    """Output ``j`` of one axis reads the source indices PyTorch's CPU kernel computes for
    ``mode``: the map's ``fn``."""
    f32 = np.float32
    if mode in ("nearest", "nearest-exact"):
        scale = f32(1.0 / sf) if sf else f32(n_in / n_out)
        half = f32(0.5) if mode == "nearest-exact" else f32(0.0)
        return functools.partial(_nearest, n_in, n_out, scale, half)
    if mode == "area":
        return functools.partial(adaptive_window, n_in, n_out)
    if align:
        scale = f32((n_in - 1) / (n_out - 1)) if n_out > 1 else f32(0)
    else:
        scale = f32(1.0 / sf) if sf else f32(n_in / n_out)
    return functools.partial(_interpolated, align, scale, mode == "bicubic", n_in)


def _nearest(n_in: int, n_out: int, scale, half, j: int, bounded: bool) -> list[int]:
    if n_in == n_out:
        return [j]
    src = int(np.floor(np.float32(np.float32(j) + half) * scale))
    return [min(src, n_in - 1)] if bounded else [src]


def _interpolated(align: bool, scale, cubic: bool, n_in: int, j: int, bounded: bool) -> list[int]:
    """(Bi/tri)linear or bicubic: the taps around the source index of output ``j``."""
    f32 = np.float32
    if align:
        src = f32(scale * f32(j))
    else:
        # PyTorch's linear CPU kernels contract ``scale * (j + 0.5) - 0.5`` into one fused
        # multiply-add (one rounding to float32); the cubic one rounds twice. Checked
        # against F.interpolate of one-hot inputs in tests/test_functional.py.
        if cubic:
            src = f32(scale * f32(f32(j) + f32(0.5))) - f32(0.5)
        else:
            src = f32(float(scale) * (j + 0.5) - 0.5)
        if not cubic and src < 0:
            src = f32(0)
    i0 = int(np.floor(src))
    frac = float(src - f32(i0))
    if cubic:
        taps = [i0] if frac == 0 else [i0 - 1, i0, i0 + 1, i0 + 2]
        if bounded:
            taps = [min(max(t, 0), n_in - 1) for t in taps]
        return taps
    if bounded:
        i0 = min(i0, n_in - 1)
        return [i0] if frac == 0 or i0 + 1 >= n_in else [i0, i0 + 1]
    return [i0] if frac == 0 else [i0, i0 + 1]


def pixel_shuffle(call: Call) -> list[InputDep]:
    """Output ``j`` reads input ``j // r`` (the phase picks the channel): position-dependent."""
    r = int(call.arg(1, "upscale_factor"))
    k = call.data[0]
    return [InputDep(k, tuple(Mapped(functools.partial(_spread, r), n) for n in call.spatial_in(k)))]


def _spread(r: int, j: int, bounded: bool) -> list[int]:
    return [j // r]


def pixel_unshuffle(call: Call) -> list[InputDep]:
    """Output ``j`` reads ``j*r .. j*r + r - 1``: a window of r with stride r."""
    r = int(call.arg(1, "downscale_factor"))
    k = call.data[0]
    return [InputDep(k, tuple(Affine(tuple(range(r)), r, 0, n) for n in call.spatial_in(k)))]



def flip(call: Call) -> list[InputDep]:
    """``torch.flip(x, dims)``: output ``j`` reads ``n - 1 - j`` on each flipped spatial axis."""
    k = call.data[0]
    ndim = len(call.shape(k))
    dims = call.arg(1, "dims")
    dims = set(negative_dims(dims, ndim))
    return [InputDep(k, tuple(Mapped(functools.partial(_flipped, n), n) if d in dims else identity(n)
                              for d, n in zip(call.in_layouts[k], call.spatial_in(k))))]


def _flipped(n: int, j: int, bounded: bool) -> list[int]:
    return [n - 1 - j]


def roll(call: Call) -> list[InputDep]:
    """``torch.roll(x, shifts, dims)``: output ``j`` reads ``(j - shift) mod n`` on each rolled
    spatial axis (a roll of the flattened tensor has no rule)."""
    k = call.data[0]
    ndim = len(call.shape(k))
    shifts, dims = call.arg(1, "shifts"), call.arg(2, "dims", None)
    if dims is None or (isinstance(dims, (list, tuple)) and not dims):
        raise UnknownOpError("torch.roll without dims rolls the flattened tensor; rfprobe has no rule")
    shifts = [shifts] if isinstance(shifts, int) else list(shifts)
    by: dict[int, int] = {}
    for d, sh in zip(negative_dims(dims, ndim), shifts):     # a dim named twice is rolled twice: the shifts add up
        by[d] = by.get(d, 0) + sh
    return [InputDep(k, tuple(Mapped(functools.partial(rolled, n, by[d]), n) if d in by else identity(n)
                              for d, n in zip(call.in_layouts[k], call.spatial_in(k))))]


# ----------------------------------------------------------------------------- the records
RECORDS = [
    Op("interpolate", interpolate, fixed_layout=True),
    Op("upsample", interpolate, fixed_layout=True),
    Op("pixel_shuffle", pixel_shuffle, fixed_layout=True),
    Op("pixel_unshuffle", pixel_unshuffle, fixed_layout=True),
    Op("pad", pad, meta=meta.pad, pieces_rule=pad_pieces),
    Op("flip", flip),
    Op("roll", roll),
]
