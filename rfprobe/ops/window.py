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
from .maps import Affine, AxisMap, Call, Global, InputDep, Mapped, Op, from_input, per_axis

def _window(call: Call, kernel, stride, padding, dilation) -> list[InputDep]:
    k = call.data[0]
    return [InputDep(k, _window_axes(tuple(kernel), tuple(stride), tuple(padding), tuple(dilation),
                                     call.spatial_in(k)))] + from_input(call, k)


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
    stride = per_axis(call.arg(3, "stride", 1), n)
    dilation = per_axis(call.arg(5, "dilation", 1), n)
    padding = call.arg(4, "padding", 0)
    if padding == "valid":
        padding = (0,) * n
    elif padding == "same":
        # PyTorch pads the extra element on the right when the total is odd
        padding, _ = _same_padding(call, kernel, dilation)
    return _window(call, kernel, stride, per_axis(padding, n), dilation)


def pool(call: Call) -> list[InputDep]:
    """``F.max_pool*d`` / ``F.avg_pool*d`` / ``F.lp_pool*d``: kernel, stride (default kernel),
    padding, dilation; ceil_mode only changes the output size, which the trace records."""
    n = call.dims
    lp = call.name.startswith("lp_pool")    # F.lp_pool*d(input, norm_type, kernel_size, stride, ...)
    kernel = per_axis(call.arg(2 if lp else 1, "kernel_size"), n)
    stride = call.arg(3 if lp else 2, "stride", None)
    stride = kernel if stride is None or stride == [] or stride == () else per_axis(stride, n)
    if lp:
        return _window(call, kernel, stride, (0,) * n, (1,) * n)
    padding = per_axis(call.arg(3, "padding", 0), n)
    dilation = per_axis(call.arg(4, "dilation", 1), n) if call.name.startswith("max") else (1,) * n
    return _window(call, kernel, stride, padding, dilation)


def conv_transpose(call: Call) -> list[InputDep]:
    """``F.conv_transpose*d(input, weight, bias, stride, padding, output_padding, groups,
    dilation)``: output ``j`` reads input ``i`` where ``j = i*s - p + t*d``; position-dependent."""
    n = call.dims
    weight = call.arg(1, "weight")
    kernel = tuple(weight.shape[2:])
    stride = per_axis(call.arg(3, "stride", 1), n)
    padding = per_axis(call.arg(4, "padding", 0), n)
    dilation = per_axis(call.arg(7, "dilation", 1), n)
    k = call.data[0]
    return [InputDep(k, _transposed_axes(kernel, stride, padding, dilation, call.spatial_in(k)))] + from_input(call, k)


def _transposed_axes(kernel, stride, padding, dilation, sizes) -> tuple[AxisMap, ...]:
    """A window's transposed geometry per axis: output ``j`` reads every input ``i`` whose
    window ``i*s - p + t*d`` (t < k) lands on ``j`` (transposed convs, max unpool)."""
    axes = []
    for kk, s, p, d, n_in in zip(kernel, stride, padding, dilation, sizes):
        def fn(j, bounded, kk=kk, s=s, p=p, d=d):
            return [(j + p - t * d) // s for t in range(kk) if (j + p - t * d) % s == 0]
        axes.append(Mapped(fn, n_in))
    return tuple(axes)



def max_unpool(call: Call) -> list[InputDep]:
    """``F.max_unpool*d(input, indices, kernel_size, stride, padding, output_size)``: each pooled
    value goes back to the position its index names, inside its own pooling window, so output
    ``j`` reads every pooled unit whose window ``[i*s - p, i*s - p + k - 1]`` holds ``j`` (the
    transposed geometry of the pool). Assumes the indices come from the matching max pool, as
    the op's contract says. The indices, where computed from the input, are read at the same
    pooled positions as the values (the index that sends a value to ``j`` sits beside it)."""
    n = call.dims
    kernel = per_axis(call.arg(2, "kernel_size"), n)
    stride_arg = call.arg(3, "stride", None)
    stride = kernel if stride_arg is None else per_axis(stride_arg, n)
    padding = per_axis(call.arg(4, "padding", 0), n)
    return [InputDep(k, _transposed_axes(kernel, stride, padding, (1,) * n, call.spatial_in(k)))
            for k in call.data if k in (0, 1) and call.in_layouts[k] is not None] + [
            d for d in from_input(call, 0) if d.arg > 1 or call.in_layouts[d.arg] is None]



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


def window_args(dims: int, kernel_size, stride, padding, dilation=1):
    """A pool's kernel, dilation, padding and stride per axis (ints or sequences, as torch takes
    them; no stride means the kernel's)."""
    def t(v):
        return tuple(v) if isinstance(v, (list, tuple)) else (v,) * dims
    k = t(kernel_size)
    return k, t(dilation), t(padding), k if stride is None or stride == [] or stride == () else t(stride)


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
        Op(f"max_pool{_d}d", pool, meta=meta.max_pool(_d), fixed_layout=True, surrogate=_surrogate("max_pool", _d)),
        Op(f"max_pool{_d}d_with_indices", pool, fixed_layout=True, surrogate=_surrogate("max_pool", _d)),
        Op(f"avg_pool{_d}d", pool, meta=meta.avg_pool(_d), fixed_layout=True),
        Op(f"lp_pool{_d}d", pool, fixed_layout=True),
        Op(f"max_unpool{_d}d", max_unpool, surrogate=_surrogate("max_unpool", _d)),
        Op(f"adaptive_avg_pool{_d}d", adaptive_pool, meta=meta.adaptive_avg_pool(_d), fixed_layout=True),
        Op(f"adaptive_max_pool{_d}d", adaptive_pool, fixed_layout=True,
           surrogate=_surrogate("adaptive_max_pool", _d)),
        Op(f"adaptive_max_pool{_d}d_with_indices", adaptive_pool, fixed_layout=True,
           surrogate=_surrogate("adaptive_max_pool_with_indices", _d)),
    ]
del _d
