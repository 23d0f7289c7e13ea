"""Receptive-field rules, one small function per op family, found through one table.

A rule says, for each spatial axis of an op's output, which indices of each data input an
output index reads. Three kinds of per-axis maps cover every op rfprobe knows:

* ``Affine``: output ``j`` reads ``j*stride - padding + t`` for each tap ``t`` (conv, pool,
  pad as a shift, crop, pixel_unshuffle). These are the ops the closed form handles. Stride 0
  with every index as a tap is "the whole axis" (a Linear or softmax along one spatial axis).
* ``Mapped``: any other per-index function (transposed conv, upsampling, pixel_shuffle,
  reflect/replicate/circular padding at the border, adaptive pooling): position-dependent.
* ``Broadcast``: an input of size 1 spread over the axis (squeeze-excitation gates).

An op that couples every position (global pooling, norms over space, attention, ``Linear``
over space) returns ``Global`` with the reason. An op without a rule is an ``UnknownOpError``
(raised when the selected output depends on it); declare one with :func:`register_rule`, by
the function or method name the error shows.

>>> conv = Affine(taps=(0, 2, 4), stride=1, padding=2, n_in=10)   # conv3/d2/p2
>>> conv.closed
(5, 1, 2)
>>> sorted(conv.deps(np.array([0]), bounded=True).tolist())
[0, 2]
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .errors import UnknownOpError


# ----------------------------------------------------------------------------- per-axis maps
@dataclass(frozen=True)
class Affine:
    """Output ``j`` reads input ``j*stride - padding + t`` for ``t`` in ``taps`` (taps[0] == 0)."""

    taps: tuple[int, ...]
    stride: int
    padding: int
    n_in: int

    @property
    def closed(self) -> tuple[int, int, int]:
        """(kernel extent, stride, padding) for the Distill formulas."""
        return (max(self.taps) - min(self.taps) + 1, self.stride, self.padding - min(self.taps))

    def deps(self, idx: np.ndarray, bounded: bool) -> np.ndarray:
        out = (idx[:, None] * self.stride - self.padding + np.asarray(self.taps)[None, :]).ravel()
        if bounded:
            out = out[(out >= 0) & (out < self.n_in)]
        return out


@dataclass(frozen=True)
class Mapped:
    """Output ``j`` reads ``fn(j, bounded)``: a position-dependent map."""

    fn: Callable[[int, bool], Sequence[int]]
    n_in: int
    closed = None

    def deps(self, idx: np.ndarray, bounded: bool) -> np.ndarray:
        parts = [np.asarray(self.fn(int(j), bounded), dtype=np.int64) for j in idx]
        out = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        if bounded:
            out = out[(out >= 0) & (out < self.n_in)]
        return out


@dataclass(frozen=True)
class Broadcast:
    """An input axis of size 1 broadcast over the output: every ``j`` reads index 0."""

    n_in: int = 1
    closed = None

    def deps(self, idx: np.ndarray, bounded: bool) -> np.ndarray:
        return np.zeros(1 if len(idx) else 0, dtype=np.int64)


@functools.lru_cache(maxsize=None)
def identity(n: int) -> Affine:
    """Output ``j`` reads input ``j`` (one shared object per size: maps are immutable, and most
    traced ops are pointwise)."""
    return Affine((0,), 1, 0, n)


@functools.lru_cache(maxsize=None)
def whole_axis(n: int) -> Affine:
    """Every output ``j`` reads all ``n`` input indices (stride 0): a reduction or a Linear
    along that axis."""
    return Affine(tuple(range(n)), 0, 0, n)


AxisMap = Affine | Mapped | Broadcast


@dataclass(frozen=True)
class Global:
    """Every output position depends on every input position; ``why`` names the cause."""

    why: str


@dataclass(frozen=True)
class InputDep:
    """How the op's output depends on one data input: per-axis maps, or ``Global``. Output axis
    ``a`` reads input axis ``a``, or ``perm[a]`` where the input holds its spatial axes in
    another order (a map added to its own transpose)."""

    arg: int                                  # position of the input among the call's tensors
    axes: tuple[AxisMap, ...] | Global
    perm: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Call:
    """One traced call: what a rule sees."""

    name: str                 # function name, e.g. 'conv2d', 'add', '__getitem__'
    args: tuple
    kwargs: dict
    data: tuple[int, ...]     # indices into ``tensors`` that carry data from the model input
    tensors: tuple            # every tensor argument, flattened, in order
    in_layouts: tuple         # per tensor: tuple of dims that are spatial (negative), or None
    out_shape: tuple[int, ...]
    dims: int                 # number of spatial axes of the model input
    out_layout: tuple[int, ...] | None = None   # spatial dims of the output (default: trailing)

    def arg(self, i: int, name: str, default: Any = None) -> Any:
        if name in self.kwargs:
            return self.kwargs[name]
        return self.args[i] if len(self.args) > i else default

    def shape(self, k: int) -> tuple[int, ...]:
        return tuple(self.tensors[k].shape)

    def spatial_in(self, k: int) -> tuple[int, ...]:
        layout = self.in_layouts[k]
        return tuple(self.tensors[k].shape[d] for d in layout)

    @property
    def spatial_out(self) -> tuple[int, ...]:
        layout = self.out_layout if self.out_layout is not None else tuple(range(-self.dims, 0))
        return tuple(self.out_shape[d] for d in layout)


Rule = Callable[[Call], "list[InputDep] | Global"]


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, (list, tuple)):
        return tuple(int(x) for x in v) if len(v) == n else tuple(int(v[0]) for _ in range(n))
    return (int(v),) * n


# ----------------------------------------------------------------------------- rules
def elementwise(call: Call) -> list[InputDep]:
    """Pointwise ops with broadcasting (relu, add, mul, batch_norm in eval...): identity per axis,
    or ``Broadcast`` where an input has size 1 on an axis the output spans."""
    out = call.spatial_out
    deps = []
    for k in call.data:
        layout = call.in_layouts[k]
        if layout is None:
            deps.append(InputDep(k, Global(f"{call.name} mixes a tensor without spatial axes into space")))
            continue
        if call.out_layout is not None and tuple(layout) != tuple(call.out_layout):
            if sorted(layout) == sorted(call.out_layout):
                # the same dims, holding the spatial axes in another order (x + x.mT): output
                # axis a reads the input's axis that sits in output axis a's dim
                sizes = tuple(call.tensors[k].shape[d] for d in call.out_layout)
                deps.append(InputDep(k, _pointwise_axes(sizes, out),
                                     tuple(layout.index(d) for d in call.out_layout)))
                continue
            deps.append(InputDep(k, Global(f"{call.name} broadcasts tensors whose spatial axes sit in "
                                           f"different dims ({layout} vs {call.out_layout})")))
            continue
        deps.append(InputDep(k, _pointwise_axes(call.spatial_in(k), out)))
    return deps


@functools.lru_cache(maxsize=4096)
def _pointwise_axes(sizes: tuple[int, ...], out: tuple[int, ...]) -> tuple[AxisMap, ...]:
    """Identity per axis, or ``Broadcast`` where the input has size 1 and the output not
    (cached: a trace asks for the same few size pairs hundreds of times)."""
    return tuple(Broadcast() if n == 1 and m != 1 else identity(n) for n, m in zip(sizes, out))


def channel_only(call: Call) -> list[InputDep]:
    """Ops that only move channels (cat on dim 1, channel slices, reshapes of leading dims)."""
    return [InputDep(k, tuple(identity(n) for n in call.spatial_in(k))) for k in call.data]


def _window(call: Call, kernel, stride, padding, dilation) -> list[InputDep]:
    k = call.data[0]
    return [InputDep(k, _window_axes(tuple(kernel), tuple(stride), tuple(padding), tuple(dilation),
                                     call.spatial_in(k)))]


@functools.lru_cache(maxsize=4096)
def _window_axes(kernel, stride, padding, dilation, n_in) -> tuple[Affine, ...]:
    """Per axis: output ``j`` reads ``j*s - p + t*d`` for ``t < k`` (cached, as above)."""
    return tuple(Affine(tuple(range(0, d * (kk - 1) + 1, d)), s, p, n)
                 for kk, s, p, d, n in zip(kernel, stride, padding, dilation, n_in))


def _same_padding(call: Call, kernel, dilation) -> tuple[tuple[int, ...], tuple[int, ...]]:
    total = [d * (kk - 1) for kk, d in zip(kernel, dilation)]
    return tuple(t // 2 for t in total), tuple(t - t // 2 for t in total)


def conv(call: Call) -> list[InputDep]:
    """``F.conv{1,2,3}d(input, weight, bias, stride, padding, dilation, groups)``."""
    n = call.dims
    weight = call.arg(1, "weight")
    kernel = tuple(weight.shape[2:])
    stride = _tuple(call.arg(3, "stride", 1), n)
    dilation = _tuple(call.arg(5, "dilation", 1), n)
    padding = call.arg(4, "padding", 0)
    if padding == "valid":
        padding = (0,) * n
    elif padding == "same":
        # PyTorch pads the extra element on the right when the total is odd
        padding, _ = _same_padding(call, kernel, dilation)
    return _window(call, kernel, stride, _tuple(padding, n), dilation)


def pool(call: Call) -> list[InputDep]:
    """``F.max_pool*d`` / ``F.avg_pool*d`` / ``F.lp_pool*d``: kernel, stride (default kernel),
    padding, dilation; ceil_mode only changes the output size, which the trace records."""
    n = call.dims
    lp = call.name.startswith("lp_pool")    # F.lp_pool*d(input, norm_type, kernel_size, stride, ...)
    kernel = _tuple(call.arg(2 if lp else 1, "kernel_size"), n)
    stride = call.arg(3 if lp else 2, "stride", None)
    stride = kernel if stride is None or stride == [] or stride == () else _tuple(stride, n)
    if lp:
        return _window(call, kernel, stride, (0,) * n, (1,) * n)
    padding = _tuple(call.arg(3, "padding", 0), n)
    dilation = _tuple(call.arg(4, "dilation", 1), n) if call.name.startswith("max") else (1,) * n
    return _window(call, kernel, stride, padding, dilation)


def conv_transpose(call: Call) -> list[InputDep]:
    """``F.conv_transpose*d(input, weight, bias, stride, padding, output_padding, groups,
    dilation)``: output ``j`` reads input ``i`` where ``j = i*s - p + t*d``; position-dependent."""
    n = call.dims
    weight = call.arg(1, "weight")
    kernel = tuple(weight.shape[2:])
    stride = _tuple(call.arg(3, "stride", 1), n)
    padding = _tuple(call.arg(4, "padding", 0), n)
    dilation = _tuple(call.arg(7, "dilation", 1), n)
    k = call.data[0]
    return [InputDep(k, _transposed_axes(kernel, stride, padding, dilation, call.spatial_in(k)))]


def _transposed_axes(kernel, stride, padding, dilation, sizes) -> tuple[AxisMap, ...]:
    """A window's transposed geometry per axis: output ``j`` reads every input ``i`` whose
    window ``i*s - p + t*d`` (t < k) lands on ``j`` (transposed convs, max unpool)."""
    axes = []
    for kk, s, p, d, n_in in zip(kernel, stride, padding, dilation, sizes):
        def fn(j, bounded, kk=kk, s=s, p=p, d=d):
            return [(j + p - t * d) // s for t in range(kk) if (j + p - t * d) % s == 0]
        axes.append(Mapped(fn, n_in))
    return tuple(axes)


def einsum(call: Call):
    """``torch.einsum(equation, *operands)``: a spatial axis whose letter stays in the output,
    in the same place, is read pointwise (channel mixing such as ``'bchw,oc->bohw'``); one
    summed away is global (attention pooling ``'bnhw,bchw->bnc'``); one moved elsewhere, an
    ellipsis or the sublist form is refused (declare a rule for it)."""
    eq = call.args[0] if call.args else None
    if not isinstance(eq, str):
        raise UnknownOpError("einsum in the sublist form has no rule; write the equation as a string")
    eq = eq.replace(" ", "")
    if "..." in eq:
        raise UnknownOpError(f"einsum {eq!r} uses '...', which rfprobe does not map to spatial axes; "
                             "spell every dim out")
    lhs, arrow, rhs = eq.partition("->")
    subs = lhs.split(",")
    if not arrow:   # implicit output: the letters used once, in alphabetical order
        rhs = "".join(sorted(c for c in set(lhs) if c.isalpha() and lhs.count(c) == 1))
    deps = []
    for k in call.data:
        layout = call.in_layouts[k]
        if layout is None or k >= len(subs):
            deps.append(InputDep(k, Global(f"einsum {eq!r} mixes a tensor without spatial axes into space")))
            continue
        sub = subs[k]
        axes = []
        for a, d in enumerate(layout):
            letter = sub[len(sub) + d]
            if letter not in rhs:
                return Global(f"einsum {eq!r} sums over spatial axis {letter!r} (einsum over positions)")
            where_out = rhs.index(letter) - len(rhs)
            if call.out_layout is None or where_out != call.out_layout[a]:
                raise UnknownOpError(f"einsum {eq!r} moves spatial axis {letter!r} to another dim; "
                                     "rfprobe follows einsums that keep them in place")
            n_in, n_out = call.tensors[k].shape[d], call.out_shape[where_out]
            axes.append(Broadcast() if n_in == 1 and n_out != 1 else identity(n_in))
        deps.append(InputDep(k, tuple(axes)))
    return deps


def max_unpool(call: Call) -> list[InputDep]:
    """``F.max_unpool*d(input, indices, kernel_size, stride, padding, output_size)``: each pooled
    value goes back to the position its index names, inside its own pooling window, so output
    ``j`` reads every pooled unit whose window ``[i*s - p, i*s - p + k - 1]`` holds ``j`` (the
    transposed geometry of the pool). Assumes the indices come from the matching max pool, as
    the op's contract says; they depend on the same windows, so the values' path covers them."""
    n = call.dims
    kernel = _tuple(call.arg(2, "kernel_size"), n)
    stride_arg = call.arg(3, "stride", None)
    stride = kernel if stride_arg is None else _tuple(stride_arg, n)
    padding = _tuple(call.arg(4, "padding", 0), n)
    k = call.data[0]
    return [InputDep(k, _transposed_axes(kernel, stride, padding, (1,) * n, call.spatial_in(k)))]


def pad(call: Call) -> list[InputDep]:
    """``F.pad(input, pad, mode, value)``: a shift (negative pads crop); in the bounded route,
    reflect/replicate/circular map border indices back inside, constant drops them."""
    widths = list(call.arg(1, "pad"))
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

        def fn(j, bounded, left=left, n_in=n_in, mode=mode):
            src = j - left
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
            raise UnknownOpError(f"F.pad mode {mode!r} has no rule")
        axes.append(Mapped(fn, n_in))
    return [InputDep(k, tuple(axes))]


def _scales(call: Call, sizes_in, sizes_out) -> list[float | None]:
    sf = call.arg(2, "scale_factor", None)
    size = call.arg(1, "size", None)
    recompute = call.arg(5, "recompute_scale_factor", None)
    if sf is None or size is not None or recompute:
        return [None] * len(sizes_in)
    return list(_tuple_f(sf, len(sizes_in)))


def _tuple_f(v, n):
    return tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else (float(v),) * n


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
    taps = _aa_taps(mode, align, n_in, n_out, sf, wide is np.float64, narrow)
    return lambda j, bounded: list(taps[j])


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
    f32 = np.float32
    if mode in ("nearest", "nearest-exact"):
        scale = f32(1.0 / sf) if sf else f32(n_in / n_out)
        half = f32(0.5) if mode == "nearest-exact" else f32(0.0)

        def fn(j, bounded):
            if n_in == n_out:
                return [j]
            src = int(np.floor(f32(f32(j) + half) * scale))
            return [min(src, n_in - 1)] if bounded else [src]
        return fn
    if mode == "area":
        def fn(j, bounded):
            start = (j * n_in) // n_out
            end = -((-(j + 1) * n_in) // n_out)
            return list(range(start, end))
        return fn
    if align:
        scale = f32((n_in - 1) / (n_out - 1)) if n_out > 1 else f32(0)
    else:
        scale = f32(1.0 / sf) if sf else f32(n_in / n_out)
    cubic = mode == "bicubic"

    def fn(j, bounded):
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
    return fn


def pixel_shuffle(call: Call) -> list[InputDep]:
    """Output ``j`` reads input ``j // r`` (the phase picks the channel): position-dependent."""
    r = int(call.arg(1, "upscale_factor"))
    k = call.data[0]
    return [InputDep(k, tuple(Mapped(lambda j, b, r=r: [j // r], n) for n in call.spatial_in(k)))]


def pixel_unshuffle(call: Call) -> list[InputDep]:
    """Output ``j`` reads ``j*r .. j*r + r - 1``: a window of r with stride r."""
    r = int(call.arg(1, "downscale_factor"))
    k = call.data[0]
    return [InputDep(k, tuple(Affine(tuple(range(r)), r, 0, n) for n in call.spatial_in(k)))]


def adaptive_pool(call: Call) -> list[InputDep] | Global:
    """Adaptive pooling: window ``[floor(j*n/m), ceil((j+1)*n/m))``. Output size 1 is global."""
    k = call.data[0]
    sizes_in = call.spatial_in(k)
    sizes_out = call.spatial_out
    if all(m == 1 for m in sizes_out) and any(n > 1 for n in sizes_in):
        return Global(f"{call.name} to size 1 (global pooling)")
    axes = []
    for n, m in zip(sizes_in, sizes_out):
        if n % m == 0:
            axes.append(Affine(tuple(range(n // m)), n // m, 0, n))
        else:
            axes.append(Mapped(lambda j, b, n=n, m=m: list(range((j * n) // m, -((-(j + 1) * n) // m))), n))
    return [InputDep(k, tuple(axes))]


def getitem(call: Call) -> tuple[tuple[int, ...] | None, list[InputDep]]:
    """``x[...]``: slices of spatial axes are crops (start, step); ints, ``None``, ``...`` and
    one 1-D index tensor on the other dims only move dims. Returns (output layout, deps)."""
    k = call.data[0]
    index = call.args[1]
    if not isinstance(index, tuple):
        index = (index,)
    ndim = len(call.shape(k))
    layout = call.in_layouts[k]
    used = sum(1 for i in index if i is not None and i is not Ellipsis)
    dots = [i for i, item in enumerate(index) if item is Ellipsis]
    if dots:
        e = dots[0]
        index = index[:e] + (slice(None),) * (ndim - used) + index[e + 1:]
    used = sum(1 for i in index if i is not None)
    index = index + (slice(None),) * max(ndim - used, 0)
    in_dim = out_dim = 0
    where: dict[int, int] = {}          # input dim -> output dim
    advanced = 0
    for item in index:
        if item is None:
            out_dim += 1
            continue
        if in_dim >= ndim:
            break
        if isinstance(item, bool) or (hasattr(item, "dtype") and str(getattr(item, "dtype")) == "torch.bool"):
            raise UnknownOpError(f"boolean-mask indexing {item!r:.40} has no rule")
        if isinstance(item, int):
            if in_dim - ndim in layout:
                raise UnknownOpError(f"indexing spatial axis {layout.index(in_dim - ndim)} with {item!r} "
                                     "removes it; rfprobe needs every spatial axis in the output (a slice "
                                     f"keeps it: {item!r}:{item + 1 if item != -1 else ''})")
            in_dim += 1
            continue
        if not isinstance(item, slice):
            advanced += 1
            if in_dim - ndim in layout or advanced > 1 or getattr(item, "ndim", 1) != 1:
                raise UnknownOpError(f"advanced indexing with {type(item).__name__} on dim {in_dim} has no rule")
        where[in_dim] = out_dim
        in_dim += 1
        out_dim += 1
    n_out = len(call.out_shape)
    axes = []
    new_layout = []
    for d in layout:
        start, stop, step = index_slice(index, d + ndim, call.shape(k)[d])
        axes.append(Affine((0,), step, -start, call.shape(k)[d]))
        new_layout.append(where[d + ndim] - n_out)
    return tuple(new_layout), [InputDep(k, tuple(axes))]


def index_slice(index, dim: int, n: int) -> tuple[int, int, int]:
    """(start, stop, step) of the slice that indexes input ``dim`` (after None/... expansion)."""
    in_dim = 0
    for item in index:
        if item is None:
            continue
        if in_dim == dim:
            return item.indices(n)
        in_dim += 1
    return 0, n, 1


def cat(call: Call) -> list[InputDep]:
    """``torch.cat``: on a channel dim every input keeps its positions; on a spatial dim output
    index ``j`` reads ``j - offset`` of the input that starts at ``offset``."""
    dim = call.arg(1, "dim", 0)
    ndim = len(call.out_shape)
    dim = dim - ndim if dim >= 0 else dim
    deps, offset = [], 0
    for k, t in enumerate(call.tensors):
        if k in call.data and call.in_layouts[k] is None:
            deps.append(InputDep(k, Global(f"{call.name} joins a tensor without spatial axes")))
        elif k in call.data:
            axes = tuple(Affine((0,), 1, offset, n) if d == dim else identity(n)
                         for d, n in zip(call.in_layouts[k], call.spatial_in(k)))
            deps.append(InputDep(k, axes))
        if t.dim() == ndim:
            offset += t.shape[dim]
    return deps


def flip(call: Call) -> list[InputDep]:
    """``torch.flip(x, dims)``: output ``j`` reads ``n - 1 - j`` on each flipped spatial axis."""
    k = call.data[0]
    ndim = len(call.shape(k))
    dims = call.arg(1, "dims")
    dims = {d - ndim if d >= 0 else d for d in ([dims] if isinstance(dims, int) else dims)}
    return [InputDep(k, tuple(Mapped(lambda j, b, n=n: [n - 1 - j], n) if d in dims else identity(n)
                              for d, n in zip(call.in_layouts[k], call.spatial_in(k))))]


def roll(call: Call) -> list[InputDep]:
    """``torch.roll(x, shifts, dims)``: output ``j`` reads ``(j - shift) mod n`` on each rolled
    spatial axis (a roll of the flattened tensor has no rule)."""
    k = call.data[0]
    ndim = len(call.shape(k))
    shifts, dims = call.arg(1, "shifts"), call.arg(2, "dims", None)
    if dims is None or (isinstance(dims, (list, tuple)) and not dims):
        raise UnknownOpError("torch.roll without dims rolls the flattened tensor; rfprobe has no rule")
    shifts = [shifts] if isinstance(shifts, int) else list(shifts)
    dims = [dims] if isinstance(dims, int) else list(dims)
    by = {(d - ndim if d >= 0 else d): sh for d, sh in zip(dims, shifts)}
    return [InputDep(k, tuple(Mapped(lambda j, b, n=n, sh=by[d]: [(j - sh) % n], n) if d in by else identity(n)
                              for d, n in zip(call.in_layouts[k], call.spatial_in(k))))]


def copy_from(call: Call) -> list[InputDep]:
    """``x.copy_(src)``: afterwards ``x`` holds ``src`` (broadcast), not its old values."""
    return elementwise(call)[1:] if 0 in call.data else elementwise(call)


def constant(call: Call) -> list[InputDep]:
    """``x.zero_()``, ``x.fill_(v)``, ``zeros_like``...: the result depends on no input value."""
    return []


def global_rule(why: str) -> Rule:
    def rule(call: Call) -> Global:
        return Global(why.format(name=call.name))
    rule.__doc__ = f"Global coupling: {why}"
    return rule


def batch_norm(call: Call):
    """Eval mode normalises with running statistics (pointwise); training mode with the batch's
    statistics, which couples every position."""
    training = call.arg(5, "training", False)
    if training:
        return Global("batch_norm in training mode (batch statistics couple every position; "
                      "call model.eval() to measure the inference RF)")
    return elementwise(call)


def reduction(call: Call):
    """``mean``/``sum``/``amax``/``argmax``... over dims: global when every spatial dim is
    reduced (or a reduced one is dropped); over some of them with ``keepdim`` (strip pooling,
    coordinate attention), each output reads the whole of those axes and its own index on
    the others."""
    dim = call.arg(1, "dim", None)
    k = call.data[0]
    layout = call.in_layouts[k]
    ndim = len(call.shape(k))
    if dim is None:
        return Global(f"{call.name} over the whole tensor")
    dims = [dim] if isinstance(dim, int) else list(dim)
    dims = [d - ndim if d >= 0 else d for d in dims]
    if not any(d in layout for d in dims):
        return channel_only(call)
    kept = len(call.out_shape) == ndim      # keepdim: every axis still there, the reduced ones of size 1
    if not kept or all(d in dims for d in layout):
        return Global(f"{call.name} over spatial dims (global pooling)")
    axes = tuple(whole_axis(n) if d in dims else identity(n) for d, n in zip(layout, call.spatial_in(k)))
    return [InputDep(k, axes)]


def softmax(call: Call):
    """Softmax along a dim: along a spatial dim every output reads that whole axis (global when
    it is the only spatial axis; attention over flattened positions is caught at the flatten)."""
    dim = call.arg(1, "dim", None)
    k = call.data[0]
    ndim = len(call.shape(k))
    if dim is None:
        return Global(f"{call.name} over the whole tensor")
    return _whole_axis(call, dim - ndim if dim >= 0 else dim, f"{call.name} over a spatial dim")


def linear(call: Call):
    """``F.linear``/``matmul`` act on the last dim. When that dim is spatial, every output index
    on that axis reads the whole axis: an ``Affine`` with all taps and stride 0 (exact; the
    closed form then has stride 0 there), and ``Global`` when it is the only spatial axis."""
    return _whole_axis(call, -1, "linear over a spatial axis (Linear over space)")


def _whole_axis(call: Call, dim: int, why: str):
    k = call.data[0]
    layout = call.in_layouts[k] or ()
    if dim not in layout:
        return channel_only(call) if call.name in ("linear", "matmul") else elementwise(call)
    if len(layout) == 1 or len(call.data) > 1:
        return Global(why)
    axes = tuple(whole_axis(n) if d == dim else identity(n)
                 for d, n in zip(layout, call.spatial_in(k)))
    return [InputDep(k, axes)]


def norm_over_space(call: Call):
    """group_norm / instance_norm normalise over spatial axes; layer_norm when its
    normalized_shape covers a spatial dim."""
    if call.name == "layer_norm":
        shape = call.arg(1, "normalized_shape")
        n = len(shape) if isinstance(shape, (list, tuple)) else 1
        layout = call.in_layouts[call.data[0]]
        if not any(d >= -n for d in layout):
            return channel_only(call)
        return Global("layer_norm over spatial dims (statistics couple every position)")
    return Global(f"{call.name} (statistics over space couple every position)")


# ----------------------------------------------------------------------------- the table
POINTWISE_NAMES = frozenset("""
relu relu_ relu6 gelu silu silu_ sigmoid sigmoid_ tanh tanh_ hardtanh hardtanh_ hardswish hardswish_
hardsigmoid hardsigmoid_ leaky_relu leaky_relu_ elu elu_ selu selu_ celu celu_ softplus mish prelu
rrelu threshold threshold_ logsigmoid softsign tanhshrink hardshrink softshrink glu_pointwise
add add_ sub sub_ mul mul_ div div_ true_divide neg abs exp log sqrt rsqrt pow pow_ square
clamp clamp_ clamp_min clamp_max clip sin cos erf reciprocal sign
__add__ __radd__ __iadd__ __sub__ __rsub__ __isub__ __mul__ __rmul__ __imul__ __truediv__
__rtruediv__ __itruediv__ __neg__ __pow__ __rpow__ __abs__
where maximum minimum lerp addcmul addcdiv
dropout dropout_ dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout
contiguous clone to float double half bfloat16 type type_as detach requires_grad_
""".split())
# ops whose bool result is a mask of the data: traced like values (the positions a mask is
# computed from are read by whatever it selects or fills), though no gradient passes them
MASK_NAMES = frozenset("""
gt lt ge le eq ne greater less greater_equal less_equal not_equal
__gt__ __lt__ __ge__ __le__ __eq__ __ne__
logical_and logical_or logical_xor logical_not __and__ __or__ __xor__ __invert__ __rand__ __ror__ __rxor__
bitwise_and bitwise_or bitwise_xor bitwise_not isnan isinf isfinite isposinf isneginf signbit
masked_fill masked_fill_
""".split())
CHANNEL_NAMES = frozenset("""
view reshape flatten unflatten permute transpose chunk split narrow squeeze unsqueeze
expand expand_as repeat channel_shuffle native_channel_shuffle unbind select stack
swapaxes swapdims movedim moveaxis t tensor_split split_with_sizes view_as reshape_as broadcast_to
unfold
""".split())
# outputs of these are never data (shapes, sizes, flags): they are skipped by the tracer
IGNORED = frozenset("""
dim size numel __get__ is_contiguous __len__ stride data_ptr element_size is_floating_point
is_complex __bool__ __format__ __repr__ __setstate__ item tolist __hash__ __bool__ get_device has_names
_has_compatible_shallow_copy_type __array__
""".split())

RULES: dict[str, Rule] = {}
for _n in POINTWISE_NAMES | MASK_NAMES:
    RULES[_n] = elementwise
for _d in (1, 2, 3):
    RULES[f"conv{_d}d"] = conv
    RULES[f"conv_transpose{_d}d"] = conv_transpose
    RULES[f"max_unpool{_d}d"] = max_unpool
    for _p in ("max_pool", "avg_pool", "lp_pool"):
        RULES[f"{_p}{_d}d"] = pool
    RULES[f"max_pool{_d}d_with_indices"] = pool
    RULES[f"adaptive_avg_pool{_d}d"] = adaptive_pool
    RULES[f"adaptive_max_pool{_d}d"] = adaptive_pool
    RULES[f"adaptive_max_pool{_d}d_with_indices"] = adaptive_pool
RULES.update({
    "pad": pad, "interpolate": interpolate, "upsample": interpolate,
    "pixel_shuffle": pixel_shuffle, "pixel_unshuffle": pixel_unshuffle,
    "cat": cat, "concat": cat, "concatenate": cat,
    "batch_norm": batch_norm,
    "mean": reduction, "sum": reduction, "amax": reduction, "amin": reduction, "max": reduction,
    "min": reduction, "argmax": reduction, "argmin": reduction,
    "std": reduction, "var": reduction, "logsumexp": reduction,
    "softmax": softmax, "log_softmax": softmax, "linear": linear, "matmul": linear,
    "group_norm": norm_over_space, "instance_norm": norm_over_space, "layer_norm": norm_over_space,
    "scaled_dot_product_attention": global_rule("scaled_dot_product_attention (attention over positions)"),
    "local_response_norm": elementwise,  # across channels only
    "multi_head_attention_forward": global_rule("multi-head attention (attention over positions)"),
    "flip": flip, "roll": roll, "einsum": einsum,
    "copy_": copy_from, "fill_": constant, "zero_": constant, "zeros_like": constant,
    "ones_like": constant, "full_like": constant, "empty_like": constant,
})
# Ops whose rule is only about which dims are spatial are resolved by the tracer (layouts).
LAYOUT_OPS = CHANNEL_NAMES


def register_rule(name: str, rule: Rule | str) -> None:
    """Declare a rule for an op rfprobe does not know, by function or method name.

    ``rule`` is a function ``Call -> list[InputDep] | Global`` or one of the words
    ``"pointwise"`` (no spatial effect), ``"channel"`` (moves channels only) or ``"global"``.

    >>> register_rule("my_gate", "pointwise")
    >>> RULES["my_gate"] is elementwise
    True
    >>> del RULES["my_gate"]
    """
    if isinstance(rule, str):
        words = {"pointwise": elementwise, "channel": channel_only,
                 "global": global_rule("{name} (declared global)")}
        if rule not in words:
            raise UnknownOpError(f"register_rule: rule {rule!r} is not one of {sorted(words)}; "
                                 "or pass a function Call -> list[InputDep] | Global")
        rule = words[rule]
    if not callable(rule):
        raise UnknownOpError(f"register_rule: rule must be callable or a word, not {rule!r}")
    RULES[name] = rule
