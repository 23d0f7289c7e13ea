"""Window ops: convolutions, pooling, transposed convolutions and max unpooling.

Output ``j`` of a window op reads ``j*stride - padding + t*dilation`` for each tap ``t`` of the
kernel (an ``Affine`` map, which the closed form composes); a transposed window reads every
input whose window lands on ``j`` (position-dependent, ``Mapped``); adaptive pooling reads
``[floor(j*n/m), ceil((j+1)*n/m))``. The structural probe runs max pooling as a surrogate of
the same geometry that passes gradient to the whole window.

>>> import torch
>>> x, w = torch.empty(1, 1, 9, 9), torch.empty(1, 1, 3, 3)
>>> call = Call("conv2d", (x, w, None, 2, 1), {}, (0,), (x, w), ((-2, -1), None), (1, 1, 5, 5), 2)
>>> [m.closed for m in conv(call)[0].axes]      # (size, stride, padding) per axis
[(3, 2, 1), (3, 2, 1)]
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from . import meta
from ..errors import UnknownOpError
from .maps import (LAYOUT, Affine, AxisMap, Call, Global, InputDep, Mapped, Op, ValuesNeeded, adaptive_window,
                   each_axis, from_input, group_of, identity, per_axis)
from .pieces import Digit, Pieces
from .resample import bordered

def _placed(call: Call, per_op_axis: tuple[AxisMap, ...], channels: AxisMap | None = None,
            weights: bool = False) -> list[InputDep]:
    """The maps of the model's spatial axes, given one map per axis the op slides over.

    A window op with ``n`` axes slides over its input's last ``n`` dims, whatever the model
    calls spatial: a Conv1d run on a (C, H, W) map (channels folded into the batch) slides over
    W only and takes H for its channels; a Conv2d with a (1, k) kernel on an unsqueezed 1D map
    slides its second axis over the model's one. A spatial axis in the op's channel dim reads
    ``channels`` (a conv's group of input channels; None: its own index, as a pool does), one in
    a batch dim its own index. With ``weights``, a weight or bias computed from the model input
    (dynamic filters) is read whole by every output."""
    k = _input(call)
    why = f"{call.name}'s weight or bias computed from the model input (dynamic filters)"
    if k is None:
        return [InputDep(j, Global(why)) for j in call.data]
    n = len(per_op_axis)
    maps = []
    for d, size in zip(call.in_layouts[k], call.spatial_in(k)):
        a = n + d
        if a >= 0:
            maps.append(per_op_axis[a])
        elif a == -1 and channels is not None:
            maps.append(channels)
        else:
            maps.append(Affine((0,), 1, 0, size))
    deps = [InputDep(k, tuple(maps))]
    if weights:
        deps += from_input(call, k)
    return deps


def _input(call: Call) -> int | None:
    """Where the op's input (its first argument) sits among the data tensors; None when only
    its weights come from the model input."""
    x = call.arg(0, "input")
    return next((j for j in call.data if call.tensors[j] is x), None)


def _window(call: Call, kernel, stride, padding, dilation, channels=None) -> list[InputDep]:
    x = call.arg(0, "input")
    n_in = tuple(x.shape[x.dim() - len(kernel):])
    return _placed(call, _window_axes(tuple(kernel), tuple(stride), tuple(padding), tuple(dilation), n_in),
                   channels, weights=channels is not None)


@functools.lru_cache(maxsize=4096)
def _window_axes(kernel, stride, padding, dilation, n_in) -> tuple[Affine, ...]:
    """Per axis: output ``j`` reads ``j*s - p + t*d`` for ``t < k`` (cached, as above)."""
    return tuple(Affine(tuple(range(0, d * (kk - 1) + 1, d)), s, p, n)
                 for kk, s, p, d, n in zip(kernel, stride, padding, dilation, n_in))


def _same_padding(call: Call, kernel, dilation) -> tuple[tuple[int, ...], tuple[int, ...]]:
    total = [d * (kk - 1) for kk, d in zip(kernel, dilation)]
    return tuple(t // 2 for t in total), tuple(t - t // 2 for t in total)


def _groups(call: Call, weight, transposed: bool) -> Mapped:
    """The channel map of a conv: output channel ``o`` reads the input channels of its group."""
    x = call.arg(0, "input")
    c_in = x.shape[x.dim() - weight.dim() + 1]
    groups = int(call.arg(6, "groups", 1) or 1)
    c_out = weight.shape[1] * groups if transposed else weight.shape[0]
    per_in, per_out = c_in // groups, c_out // groups
    return Mapped(functools.partial(group_of, per_out, per_in), c_in)


def conv(call: Call) -> list[InputDep]:
    """``F.conv{1,2,3}d(input, weight, bias, stride, padding, dilation, groups)``."""
    weight = call.arg(1, "weight")
    kernel = tuple(weight.shape[2:])
    n = len(kernel)
    stride = per_axis(call.arg(3, "stride", 1), n)
    dilation = per_axis(call.arg(5, "dilation", 1), n)
    padding = call.arg(4, "padding", 0)
    if padding == "valid":
        padding = (0,) * n
    elif padding == "same":
        # PyTorch pads the extra element on the right when the total is odd
        padding, _ = _same_padding(call, kernel, dilation)
    return _window(call, kernel, stride, per_axis(padding, n), dilation, _groups(call, weight, False))


def pool(call: Call, n: int, kind: str) -> list[InputDep]:
    """``F.max_pool*d`` / ``F.avg_pool*d`` / ``F.lp_pool*d`` over ``n`` trailing dims (``kind``
    "max", "avg" or "lp", bound by the record): kernel, stride (default kernel), padding,
    dilation (max only); ceil_mode only changes the output size, which the trace records."""
    lp = kind == "lp"    # F.lp_pool*d(input, norm_type, kernel_size, stride, ...)
    kernel = per_axis(call.arg(2 if lp else 1, "kernel_size"), n)
    stride = call.arg(3 if lp else 2, "stride", None)
    stride = kernel if stride is None or stride == [] or stride == () else per_axis(stride, n)
    if lp:
        return _window(call, kernel, stride, (0,) * n, (1,) * n)
    padding = per_axis(call.arg(3, "padding", 0), n)
    dilation = per_axis(call.arg(4, "dilation", 1), n) if kind == "max" else (1,) * n
    return _window(call, kernel, stride, padding, dilation)


def conv_transpose(call: Call) -> list[InputDep]:
    """``F.conv_transpose*d(input, weight, bias, stride, padding, output_padding, groups,
    dilation)``: output ``j`` reads input ``i`` where ``j = i*s - p + t*d``; position-dependent."""
    weight = call.arg(1, "weight")
    kernel = tuple(weight.shape[2:])
    n = len(kernel)
    stride = per_axis(call.arg(3, "stride", 1), n)
    padding = per_axis(call.arg(4, "padding", 0), n)
    dilation = per_axis(call.arg(7, "dilation", 1), n)
    x = call.arg(0, "input")
    sizes = tuple(x.shape[x.dim() - n:])
    return _placed(call, _transposed_axes(kernel, stride, padding, dilation, sizes), _groups(call, weight, True),
                   weights=True)


def _transposed_axes(kernel, stride, padding, dilation, sizes) -> tuple[AxisMap, ...]:
    """A window's transposed geometry per axis: output ``j`` reads every input ``i`` whose
    window ``i*s - p + t*d`` (t < k) lands on ``j`` (transposed convs, max unpool)."""
    axes = []
    for kk, s, p, d, n_in in zip(kernel, stride, padding, dilation, sizes):
        axes.append(Mapped(functools.partial(_landing, kk, s, p, d), n_in))
    return tuple(axes)


def _landing(kk: int, s: int, p: int, d: int, j: int, bounded: bool) -> list[int]:
    """The inputs ``i`` whose window ``i*s - p + t*d`` (t < kk) lands on output ``j``."""
    return [(j + p - t * d) // s for t in range(kk) if (j + p - t * d) % s == 0]



def max_unpool(call: Call, n: int) -> list[InputDep]:
    """``F.max_unpool*d(input, indices, kernel_size, stride, padding, output_size)`` over ``n``
    trailing dims: each pooled
    value goes back to the position its index names, inside its own pooling window, so output
    ``j`` reads every pooled unit whose window ``[i*s - p, i*s - p + k - 1]`` holds ``j`` (the
    transposed geometry of the pool). Assumes the indices come from the matching max pool, as
    the op's contract says. The indices, where computed from the input, are read at the same
    pooled positions as the values (the index that sends a value to ``j`` sits beside it)."""
    kernel = per_axis(call.arg(2, "kernel_size"), n)
    stride_arg = call.arg(3, "stride", None)
    stride = kernel if stride_arg is None else per_axis(stride_arg, n)
    padding = per_axis(call.arg(4, "padding", 0), n)
    x = call.arg(0, "input")
    deps = _placed(call, _transposed_axes(kernel, stride, padding, (1,) * n, tuple(x.shape[x.dim() - n:])))
    indices = call.arg(1, "indices")
    return deps + [InputDep(j, deps[0].axes) for j in call.data
                   if call.tensors[j] is indices and deps and deps[0].tensor != j
                   and call.in_layouts[j] == call.in_layouts[deps[0].tensor]]



def adaptive_pool(call: Call, n_op: int) -> list[InputDep] | Global:
    """Adaptive pooling over ``n_op`` trailing dims: window ``[floor(j*n/m), ceil((j+1)*n/m))``
    on each axis it pools. Pooling every spatial axis to size 1 is global."""
    x = call.arg(0, "input")
    sizes_in, sizes_out = tuple(x.shape[x.dim() - n_op:]), tuple(call.out_shape[len(call.out_shape) - n_op:])
    layout = call.in_layouts[call.data[0]]
    pooled = [n_op + d for d in layout if n_op + d >= 0]
    if len(pooled) == len(layout) and all(sizes_out[a] == 1 for a in pooled) and any(sizes_in[a] > 1 for a in pooled):
        return Global(f"{call.name} to size 1 (global pooling)")
    axes = []
    for n, m in zip(sizes_in, sizes_out):
        if n % m == 0:
            axes.append(Affine(tuple(range(n // m)), n // m, 0, n))
        else:
            axes.append(Mapped(functools.partial(adaptive_window, n, m), n))
    return _placed(call, tuple(axes))


# ----------------------------------------------------------------------------- im2col and col2im
def _grid_args(call: Call, at: int) -> tuple[tuple[int, int], ...]:
    """kernel, dilation, padding and stride of ``F.unfold`` (``at`` 1) or ``F.fold`` (``at`` 2),
    one int per axis of the (H, W) grid; torch takes them in this order after the input (and
    fold's ``output_size``)."""
    names = ("kernel_size", "dilation", "padding", "stride")
    defaults = (None, 1, 0, 1)
    return tuple(per_axis(call.arg(at + i, n, v), 2) for i, (n, v) in enumerate(zip(names, defaults)))


def _windows(sizes, kernel, dilation, padding, stride) -> tuple[int, ...]:
    """How many windows fit along each axis: a conv's output size."""
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, k, d, p, s in zip(sizes, kernel, dilation, padding, stride))


def im2col(call: Call):
    """``F.unfold(input, kernel_size, dilation, padding, stride)`` (im2col) of (N, C, H, W) or
    (C, H, W): the output (N, C*kh*kw, L) holds the grid of windows in L, row-major (H's digit
    the more significant, :mod:`rfprobe.ops.pieces`), and each grid position reads its window
    as a conv of that geometry does; the window's offsets join the channels in dim 1, read
    whole as they are. Returns (pieces, deps).

    >>> import torch
    >>> x = torch.empty(1, 2, 6, 6)
    >>> call = Call("unfold", (x, 3), {"padding": 1, "stride": 2}, (0,), (x,), ((-2, -1),), (1, 18, 9), 2)
    >>> pieces, deps = im2col(call)
    >>> pieces.dims[-1], deps[0].axes[0].closed      # a 3x3 grid; each row reads a stride-2 conv's
    ((Digit(axis=0, weight=1, size=3), Digit(axis=1, weight=1, size=3)), (3, 2, 1))
    """
    k = _input(call)
    if k is None:
        raise UnknownOpError("F.unfold (im2col) of a tensor that is not computed from the model input has no rule")
    x, layout = call.tensors[k], call.in_layouts[k]
    kernel, dilation, padding, stride = _grid_args(call, 1)
    sizes = tuple(x.shape[-2:])
    grid = _windows(sizes, kernel, dilation, padding, stride)
    if any(d not in (-2, -1) for d in layout) or any(n > 1 and d not in layout for d, n in zip((-2, -1), grid)):
        # a grid along a dim of channels would put them in L beside the positions, as tokens
        raise UnknownOpError(f"F.unfold (im2col) slides over the last two dims of {tuple(x.shape)}, and the "
                             f"spatial axes sit in dims {layout}; rfprobe follows it where they are those two "
                             "(or one, the other with one window)")
    spread = tuple(call.out_shape[:-1]) + grid        # (N, C*kh*kw, OH, OW), then OH and OW merged into L
    pieces = Pieces.of_layout(spread, layout).reshaped(spread, call.out_shape)
    axes = _window_axes(kernel, stride, padding, dilation, sizes)
    deps = [InputDep(k, tuple(axes[d + 2] for d in layout))]
    if pieces.digits():
        return pieces, deps
    return pieces.whole(call.out_shape, call.dims), deps      # one window: no position left to tell apart


def col2im(call: Call):
    """``F.fold(input, output_size, kernel_size, dilation, padding, stride)`` (col2im,
    overlap-add) of (N, C*kh*kw, L), where L holds the grid of windows as :func:`im2col` left
    it (H's digit the more significant; a grid transposed before holds W's first, and W then
    comes out in dim -2): output ``j`` reads every grid position whose window covers ``j``, as
    a transposed conv of that geometry does. Returns (layout, deps).

    >>> import torch
    >>> from rfprobe.ops.pieces import Digit, Pieces
    >>> x = torch.empty(1, 18, 16)
    >>> grid = Pieces(((18,), (Digit(0, 1, 4), Digit(1, 1, 4))), 2)
    >>> call = Call("fold", (x, 8, 3), {"padding": 1, "stride": 2}, (0,), (x,), (grid,), (1, 2, 8, 8), 2)
    >>> layout, deps = col2im(call)
    >>> layout, list(deps[0].axes[0].fn(3, True))       # row 3 lies in the windows of rows 1 and 2
    ((-2, -1), [2, 1])
    """
    k = _input(call)
    if k is None:
        raise UnknownOpError("F.fold (col2im) of a tensor that is not computed from the model input has no rule")
    pieces = call.in_layouts[k]
    if not isinstance(pieces, Pieces):
        pieces = Pieces.of_layout(call.shape(k), pieces)
    kernel, dilation, padding, stride = _grid_args(call, 2)
    grid = _windows(per_axis(call.arg(1, "output_size"), 2), kernel, dilation, padding, stride)
    held = _grid_held(pieces, grid, call.dims)
    maps = _transposed_axes(kernel, stride, padding, dilation, grid)
    return (tuple(held.index(a) - 2 for a in range(call.dims)),
            [InputDep(k, tuple(maps[held.index(a)] for a in range(call.dims)))])


def _grid_held(pieces: Pieces, grid: tuple[int, int], n_axes: int) -> list:
    """Which spatial axis each axis of F.fold's grid holds (None: none), read off the digits of
    the input's last dim, one per grid axis of more than one window, in the grid's row-major
    order; an axis without a digit takes a grid axis of one window. Anything else is refused."""
    why = (f"F.fold (col2im) reads its last dim as a grid of {grid[0]}x{grid[1]} windows, row-major; "
           f"rfprobe follows it where that dim holds exactly the grid's digits, as F.unfold leaves them, "
           f"and it holds {pieces.dims[-1]}")
    if any(not isinstance(f, int) for fs in pieces.dims[:-1] for f in fs):
        raise UnknownOpError(f"{why}, while other dims hold spatial positions too ({pieces.dims})")
    found = list(pieces.dims[-1])
    held: list = []
    for n in grid:
        if n == 1:
            held.append(None)
            continue
        f = found.pop(0) if found else None
        if not isinstance(f, Digit) or f.weight != 1 or f.size != n or f.axis in held:
            raise UnknownOpError(why)
        held.append(f.axis)
    rest = [a for a in range(n_axes) if a not in held]
    if found or len(rest) > held.count(None):
        raise UnknownOpError(why)
    for a in rest:
        held[held.index(None)] = a
    return held


# ----------------------------------------------------------------------------- short-time Fourier transforms
def _taps(call: Call, name: str, win_length: int, n_fft: int, left: int) -> list[int]:
    """The offsets in a frame of ``n_fft`` where the window (``win_length`` long, from
    ``left``) is nonzero: a zero tap reads nothing (a periodic Hann window starts with one)."""
    window = call.arg(4, "window", None)
    if window is None:
        return [left + i for i in range(win_length)]
    if window.device.type == "meta":
        raise ValuesNeeded(f"{name}'s window, held on the meta device: its zero taps decide what a frame reads")
    return [left + i for i, w in enumerate(window.reshape(-1).tolist()) if w != 0]


def _window_dep(call: Call, name: str) -> list[InputDep]:
    """A window the trace follows (``torch.hann_window(n).to(x)`` lends ``x`` its device only,
    and reads nothing; one computed from the model input reads it all): every frame reads all of
    it, which adds nothing when it is a constant."""
    window = call.arg(4, "window", None)
    return [InputDep(j, Global(f"{name}'s window computed from the model input"))
            for j in call.data if call.tensors[j] is window]


def _frames(call: Call, name: str, aligns: bool = False):
    """n_fft, hop, the nonzero taps of a frame, and the padding ``center`` adds; ``aligns``:
    the op takes ``align_to_window`` (stft)."""
    n_fft = int(call.arg(1, "n_fft"))
    hop = call.arg(2, "hop_length", None)
    hop = n_fft // 4 if hop is None else int(hop)
    win = call.arg(3, "win_length", None)
    win = n_fft if win is None else int(win)
    center = call.arg(5, "center", True)
    align = call.arg(10, "align_to_window", None) if aligns else None
    left = 0 if align else (n_fft - win) // 2
    return n_fft, hop, _taps(call, name, win, n_fft, left), (n_fft // 2 if center else 0)


def stft(call: Call):
    """``torch.stft(x, n_fft, hop_length, win_length, window, center, pad_mode, ...)`` of a
    (B, T) or (T,) signal: frame ``f`` reads samples ``f*hop - pad + t`` for each tap ``t``
    where the window is nonzero (``pad`` is ``n_fft // 2`` with ``center``, whose border follows
    ``pad_mode``); its frequencies read the whole frame, like channels. The output is (B, F,
    frames), or (B, F, frames, 2) with ``return_complex=False``: returns (layout, deps)."""
    x = call.arg(0, "input")
    k = next((j for j in call.data if call.tensors[j] is x), None)
    if k is None:
        raise UnknownOpError("stft of a signal that is not computed from the model input has no rule")
    n_fft, hop, taps, pad = _frames(call, "stft", aligns=True)
    mode = call.arg(6, "pad_mode", "reflect")
    n = x.shape[-1]
    real = len(call.out_shape) == x.dim() + 2      # (..., F, frames, 2)
    frame = functools.partial(_frame, hop, tuple(taps), pad, n, mode)
    maps, layout = [], []
    for d, size in zip(call.in_layouts[k], call.spatial_in(k)):
        maps.append(Mapped(frame, size) if d == -1 else identity(size))
        layout.append((-2 if real else -1) if d == -1 else d - (2 if real else 1))
    return tuple(layout), [InputDep(k, tuple(maps))] + _window_dep(call, "stft")


def _frame(hop: int, taps: tuple[int, ...], pad: int, n: int, mode: str, f: int, bounded: bool) -> list[int]:
    """The samples frame ``f`` of an stft reads: ``f*hop - pad + t`` for each tap, at the
    border as ``mode`` pads."""
    return [i for t in taps for i in bordered(f * hop - pad + t, n, mode, bounded)]


def istft(call: Call):
    """``torch.istft(X, n_fft, hop_length, win_length, window, center, normalized, onesided,
    length)`` of (B, F, frames): sample ``s`` reads every frame whose window is nonzero at
    ``s + pad`` (overlap-add; ``pad`` is ``n_fft // 2`` with ``center``), all of its
    frequencies; samples past the signal (``length`` longer) read nothing. Returns (layout, deps)."""
    x = call.arg(0, "input")
    k = next((j for j in call.data if call.tensors[j] is x), None)
    if k is None:
        raise UnknownOpError("istft of frames that are not computed from the model input has no rule")
    n_fft, hop, taps, pad = _frames(call, "istft")
    frames = x.shape[-1]
    on = frozenset(taps)
    layout = call.in_layouts[k]
    if -2 in layout:
        return None, Global("istft sums its frequencies over a spatial axis")

    sample = functools.partial(_overlapping, hop, pad, frames, on, n_fft)
    maps, new = [], []
    for d, size in zip(layout, call.spatial_in(k)):
        maps.append(Mapped(sample, size) if d == -1 else identity(size))
        new.append(-1 if d == -1 else d + 1)
    return tuple(new), [InputDep(k, tuple(maps))] + _window_dep(call, "istft")


def _overlapping(hop: int, pad: int, frames: int, on: frozenset, n_fft: int, s: int, bounded: bool) -> list[int]:
    """The frames sample ``s`` of an istft reads: those whose window is nonzero at ``s + pad``."""
    p = s + pad
    return [f for f in range(max(0, (p - n_fft) // hop), min(frames, p // hop + 1)) if p - f * hop in on]


def window_args(dims: int, kernel_size, stride, padding, dilation=1):
    """A pool's kernel, dilation, padding and stride per axis (ints or sequences, as torch takes
    them; no stride means the kernel's)."""
    k = each_axis(kernel_size, dims)
    stride = k if stride is None or stride == [] or stride == () else each_axis(stride, dims)
    return k, each_axis(dilation, dims), each_axis(padding, dims), stride


def maxpool_surrogate(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                       return_indices=False, dims=2):
    """A pool with max-pool's exact geometry that passes gradient to the whole window:
    a depthwise conv with a ones kernel, padded on the right as ceil_mode would."""
    k, d, p, s = window_args(dims, kernel_size, stride, padding, dilation)
    ref = [F.max_pool1d, F.max_pool2d,
           F.max_pool3d][dims - 1]
    with torch.no_grad():
        out_shape = ref(torch.empty(x.shape, device="meta"), k, s, p, d, ceil_mode).shape
    pads = []
    for a in reversed(range(dims)):
        n = x.shape[2 + a]
        need = (out_shape[2 + a] - 1) * s[a] + d[a] * (k[a] - 1) + 1  # span the outputs read
        right = max(need - n - p[a], 0)
        pads += [p[a], right]
    y = F.pad(x, pads)
    c = x.shape[1]
    w = torch.ones((c, 1, *k), dtype=x.dtype, device=x.device)
    conv = [F.conv1d, F.conv2d, F.conv3d][dims - 1]
    out = conv(y, w, None, s, 0, d, c)
    out = out[(slice(None), slice(None)) + tuple(slice(0, m) for m in out_shape[2:])]
    return (out, torch.zeros(out.shape, dtype=torch.long, device=x.device)) if return_indices else out


def maxunpool_surrogate(x, indices, kernel_size, stride=None, padding=0, output_size=None, dims=2):
    """max-unpool's structural geometry: every pooled value reaches its whole window (its index
    may name any position in it), a depthwise transposed conv with a ones kernel, cut or
    zero-padded to the size the real op gives. The surrogate max pool's indices are not used."""
    k, _, p, s = window_args(dims, kernel_size, stride, padding)
    ref = [F.max_unpool1d, F.max_unpool2d, F.max_unpool3d][dims - 1]
    with torch.no_grad():
        out_shape = ref(torch.empty(x.shape, device="meta"), torch.empty(x.shape, dtype=torch.long, device="meta"),
                        k, s, p, output_size).shape
    c = x.shape[1]
    w = torch.ones((c, 1, *k), dtype=x.dtype, device=x.device)
    conv_t = [F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d][dims - 1]
    y = conv_t(x, w, None, s, p, 0, c)
    y = y[(slice(None), slice(None)) + tuple(slice(0, m) for m in out_shape[2:])]
    grow = []
    for a in reversed(range(dims)):
        grow += [0, out_shape[2 + a] - y.shape[2 + a]]
    return F.pad(y, grow) if any(grow) else y


def _surrogate(kind: str, dims: int):
    """The structural probe's replacement for a max pool (or unpool, adaptive max pool) with
    ``dims`` spatial axes, as ``(func, args, kwargs) -> (func, args, kwargs)``."""
    if kind == "max_pool":
        fn = functools.partial(maxpool_surrogate, dims=dims)
    elif kind == "max_unpool":
        fn = functools.partial(maxunpool_surrogate, dims=dims)
    else:
        avg = [F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d][dims - 1]

        def fn(x, output_size, return_indices=False, _indices=kind.endswith("indices")):
            y = avg(x, output_size)
            if _indices or return_indices:
                return y, torch.zeros(y.shape, dtype=torch.long, device=y.device)
            return y
    return lambda func, args, kwargs: (fn, args, kwargs)


# ----------------------------------------------------------------------------- the records
RECORDS = []
for _d in (1, 2, 3):
    RECORDS += [
        Op(f"conv{_d}d", conv, meta=meta.conv(_d), fixed_layout=True),
        Op(f"conv_transpose{_d}d", conv_transpose, fixed_layout=True),
        Op(f"max_pool{_d}d", functools.partial(pool, n=_d, kind="max"), meta=meta.max_pool(_d), fixed_layout=True,
           surrogate=_surrogate("max_pool", _d)),
        Op(f"max_pool{_d}d_with_indices", functools.partial(pool, n=_d, kind="max"), fixed_layout=True,
           surrogate=_surrogate("max_pool", _d)),
        Op(f"avg_pool{_d}d", functools.partial(pool, n=_d, kind="avg"), meta=meta.avg_pool(_d), fixed_layout=True),
        Op(f"lp_pool{_d}d", functools.partial(pool, n=_d, kind="lp"), fixed_layout=True),
        Op(f"max_unpool{_d}d", functools.partial(max_unpool, n=_d), surrogate=_surrogate("max_unpool", _d)),
        Op(f"adaptive_avg_pool{_d}d", functools.partial(adaptive_pool, n_op=_d), meta=meta.adaptive_avg_pool(_d),
           fixed_layout=True),
        Op(f"adaptive_max_pool{_d}d", functools.partial(adaptive_pool, n_op=_d), fixed_layout=True,
           surrogate=_surrogate("adaptive_max_pool", _d)),
        Op(f"adaptive_max_pool{_d}d_with_indices", functools.partial(adaptive_pool, n_op=_d), fixed_layout=True,
           surrogate=_surrogate("adaptive_max_pool_with_indices", _d)),
    ]
del _d
RECORDS += [Op("stft", layout_rule=stft), Op("istft", layout_rule=istft),
            Op("fold", kind=LAYOUT, layout_rule=col2im, pieces_rule=col2im)]
