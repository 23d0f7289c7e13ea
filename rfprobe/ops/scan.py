"""Running ops along one axis: cumulative sums and products, running extremes, differences.

Along a spatial axis, output ``j`` of ``cumsum``/``cumprod``/``cummax``/``cummin`` reads
inputs ``0..j`` (a prefix: a ``Mapped`` map, position-dependent); ``diff(x, n)`` reads
``j..j+n`` (an ``Affine`` window of ``n + 1`` taps, stride 1, the output ``n`` shorter).
Every other spatial axis reads its own index; along channels they are pointwise.

>>> import torch
>>> x = torch.empty(1, 4, 6, 6)
>>> call = Call("diff", (x,), {"n": 2, "dim": 2}, (0,), (x,), ((-2, -1),), (1, 4, 4, 6), 2)
>>> diff(call)[0].axes[0]
Affine(taps=(0, 1, 2), stride=1, padding=0, n_in=6)
>>> call = Call("cumsum", (x, 3), {}, (0,), (x,), ((-2, -1),), (1, 4, 6, 6), 2)
>>> list(prefix(call)[0].axes[1].fn(3, True))
[0, 1, 2, 3]
"""
from __future__ import annotations

import functools

import torch

from ..errors import UnknownOpError
from .maps import (Affine, Call, InputDep, Mapped, Op, identity, negative_dim)
from .pointwise import elementwise


def _reads_prefix(j: int, bounded: bool) -> range:
    return range(j + 1)


def prefix(call: Call):
    """``cumsum(x, dim)`` and its kin: along a spatial ``dim`` output ``j`` reads ``0..j``,
    the other spatial axes their own index; along any other dim, pointwise."""
    k = call.data[0]
    ndim = len(call.shape(k))
    dim = call.arg(1, "dim")
    dim = negative_dim(dim, ndim)
    layout = call.in_layouts[k]
    if call.index == 1 and call.shape(k)[dim] == 1:
        return []           # indices along a dim of one element: always 0
    if dim not in layout:
        return elementwise(call)
    # cummax's and cummin's indices: at j = 0 the index of the one element so far, always 0
    reads = _reads_prefix if call.index == 0 else _index_prefix
    return [InputDep(k, tuple(Mapped(reads, n) if d == dim else identity(n)
                              for d, n in zip(layout, call.spatial_in(k))))]


def _index_prefix(j: int, bounded: bool) -> range:
    return range(j + 1) if j else range(0)


def diff(call: Call):
    """``diff(x, n=1, dim=-1, prepend=None, append=None)``: along a spatial ``dim`` output ``j``
    reads ``j..j+n`` of ``cat(prepend, x, append)`` (an ``Affine`` window of ``n + 1`` taps,
    stride 1; a prepend of length ``p`` shifts ``x`` by ``p``, as a padding would); pointwise
    elsewhere. A prepend or append computed from the model input reads the part of the
    window that falls on it (a ``Mapped`` map); one whose spatial axes sit in other dims is
    refused."""
    x = call.args[0] if call.args else call.kwargs.get("input")
    k = next((j for j in call.data if call.tensors[j] is x), None)
    if k is None:
        raise UnknownOpError("diff reads the model's data only through its prepend or append tensor; "
                             "rfprobe follows diff of the data itself (declare a rule for 'diff')")
    ndim = x.dim()
    n = int(call.arg(1, "n", 1))
    dim = call.arg(2, "dim", -1)
    dim = negative_dim(dim, ndim)
    layout = call.in_layouts[k]
    if dim not in layout:
        return elementwise(call)
    sides = {}
    for i, name in ((3, "prepend"), (4, "append")):
        t = call.arg(i, name)
        if isinstance(t, torch.Tensor):
            sides[name] = (t, t.shape[dim] if t.dim() == ndim else 1)
    p = sides["prepend"][1] if "prepend" in sides else 0
    deps = [InputDep(k, tuple(Affine(tuple(range(n + 1)), 1, p, m) if d == dim else identity(m)
                              for d, m in zip(layout, call.spatial_in(k))))]
    start = {"prepend": 0, "append": p + x.shape[dim]}
    for name, (t, length) in sides.items():
        j = next((j for j in call.data if call.tensors[j] is t), None)
        if j is None:
            continue                    # a constant: it only shifts x
        if tuple(call.in_layouts[j]) != tuple(layout) or t.dim() != ndim:
            raise UnknownOpError(f"diff's {name}= tensor holds its spatial axes in other dims than the "
                                 "input's; declare a rule for 'diff'")
        deps.append(InputDep(j, tuple(Mapped(functools.partial(_window_on, n, start[name], length), m) if d == dim
                                      else identity(m) for d, m in zip(layout, call.spatial_in(j)))))
    return deps


def _window_on(n: int, start: int, length: int, j: int, bounded: bool) -> range:
    """Output ``j`` of a diff reads ``j..j+n`` of the concatenation; the part on a piece that
    starts at ``start`` and holds ``length`` entries, in that piece's indices."""
    return range(max(j - start, 0), min(j + n - start, length - 1) + 1)


# ----------------------------------------------------------------------------- surrogates
def running_surrogate(func, args, kwargs, indices: bool = False):
    """The structural probe's cumprod/cummax/cummin: a cumsum along the same dim, whose
    gradient reaches every element of the prefix (cummax's reaches only the running winner,
    cumprod's is a product of the others, which can vanish). With ``indices`` (cummax's and
    cummin's records bind it: they return values and indices) the indices come back as zeros.

    >>> import torch
    >>> fn, a, k = running_surrogate(torch.cummax, (torch.ones(1, 3), 1), {}, indices=True)
    >>> fn(*a, **k).values.tolist()
    [[1.0, 2.0, 3.0]]
    """
    return functools.partial(_running_sum, indices=indices), args, kwargs


def _running_sum(x, *rest, indices: bool = False, **kw):
    dim = kw.pop("dim", rest[0] if rest else None)
    values = torch.cumsum(x, dim)
    if indices:
        return torch.return_types.cummax((values, torch.zeros(values.shape, dtype=torch.long, device=x.device)))
    return values


def diff_surrogate(func, args, kwargs):
    """The structural probe's ``diff``: the sum of the same ``n + 1`` taps (diff's signed
    coefficients can cancel another path's gradient at the same input).

    >>> import torch
    >>> fn, a, k = diff_surrogate(torch.diff, (torch.arange(4.0),), {"n": 2})
    >>> fn(*a, **k).tolist()
    [3.0, 6.0]
    """
    def summed(x, n=1, dim=-1, prepend=None, append=None):
        parts = [t for t in (prepend, x, append) if t is not None]
        full = torch.cat(parts, dim) if len(parts) > 1 else x
        return full.unfold(dim, n + 1, 1).sum(-1) if n else full
    return summed, args, kwargs


RECORDS = [
    Op("cumsum", prefix),
    Op("cumprod", prefix, surrogate=running_surrogate),
    # values and indices: the surrogate returns both
    *(Op(name, prefix, surrogate=functools.partial(running_surrogate, indices=True)) for name in ("cummax", "cummin")),
    Op("diff", diff, surrogate=diff_surrogate),
]
