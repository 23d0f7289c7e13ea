"""Complex values and Fourier transforms: ``.real``/``.imag``, conjugates, complex views, the
``torch.fft`` family and its shifts.

Taking the real or imaginary part, a conjugate or a phase reads each position alone
(pointwise). ``view_as_real`` adds a trailing dim of 2 that holds no position (like a channel)
and ``view_as_complex`` folds it back. A Fourier transform reads the whole of every axis it
transforms: along one spatial axis of several, output ``j`` reads that whole axis and its own
index on the others (a strip); over every spatial axis it is global, with the op named.
``fftshift``/``ifftshift`` are rolls by half the axis.

>>> import torch
>>> x = torch.empty(1, 4, 8, 6)
>>> fourier(Call("fft_fft2", (x,), {}, (0,), (x,), ((-2, -1),), (1, 4, 8, 6), 2), rank=2, half=False)
Global(why='fft_fft2 over every spatial axis (a Fourier transform reads the whole axis)')
>>> [m.stride for m in fourier(Call("fft_rfft", (x,), {"dim": -1}, (0,), (x,), ((-2, -1),), (1, 4, 8, 4), 2),
...                               rank=1, half=False)[0].axes]
[1, 0]
"""
from __future__ import annotations

import functools

import torch

from ..errors import UnknownOpError
from .maps import LAYOUT, Affine, Call, Global, InputDep, Mapped, Op, identity, negative_dims, rolled
from .pointwise import channel_only, elementwise


def _transformed_dims(rank: int | str, args: tuple, kwargs: dict, ndim: int) -> list[int]:
    """The dims a ``torch.fft`` call transforms (negative), from its ``dim`` (and ``s``) as
    torch reads them: one dim (default -1) for the 1-D transforms (``rank`` 1), (-2, -1) for
    the 2-D ones (2), every dim (or the last ``len(s)``) for the n-D ones ("n")."""
    call = Call("fft", args, kwargs, (), (), (), (), 0)
    if rank == 2:
        dim = call.arg(2, "dim", (-2, -1))
    elif rank == "n":
        dim = call.arg(2, "dim", None)
        if dim is None:
            s = call.arg(1, "s", None)
            dim = range(-len(s), 0) if s is not None else range(-ndim, 0)
    else:
        dim = call.arg(2, "dim", -1)
    return negative_dims(dim, ndim)


def _read_lengths(rank: int | str, half: bool, args: tuple, kwargs: dict, shape: tuple[int, ...]) -> dict[int, int]:
    """Per transformed dim (negative), how many leading input indices a transform of ``rank``
    reads: ``n``/``s`` trims (or zero-pads) the input to that length first, and the inverse
    real transforms (``irfft*``, ``hfft*``: ``half``) read ``n // 2 + 1`` of their last dim;
    all of it without ``n``/``s``.

    >>> _read_lengths(1, False, (None,), {"n": 6}, (1, 12)), _read_lengths(1, True, (None, 8), {}, (1, 12))
    ({-1: 6}, {-1: 5})
    """
    dims = _transformed_dims(rank, args, kwargs, len(shape))
    call = Call("fft", args, kwargs, (), (), (), (), 0)
    sizes = call.arg(1, "n" if rank == 1 else "s", None)
    sizes = [None] * len(dims) if sizes is None else [sizes] if isinstance(sizes, int) else list(sizes)
    out = {}
    for i, (d, n) in enumerate(zip(dims, sizes)):
        used = None if n is None or n == -1 else (n // 2 + 1 if half and i == len(dims) - 1 else n)
        out[d] = shape[d] if used is None else min(used, shape[d])
    return out


def fourier(call: Call, *, rank: int | str, half: bool):
    """A ``torch.fft`` transform (of ``rank`` and ``half`` as :func:`_read_lengths` says, bound
    by the record): each transformed spatial axis is read whole (or the part that ``n``/``s``
    keeps: output ``j`` reads input ``0..m-1``); global when every spatial axis is read whole;
    over channels only, each position reads its own."""
    k = call.data[0]
    layout = call.in_layouts[k]
    lengths = _read_lengths(rank, half, call.args, call.kwargs, call.shape(k))
    if not any(d in layout for d in lengths):
        return channel_only(call)
    sizes = call.spatial_in(k)
    if all(lengths.get(d) == n for d, n in zip(layout, sizes)):
        return Global(f"{call.name} over every spatial axis (a Fourier transform reads the whole axis)")
    return [InputDep(k, tuple(Affine(tuple(range(lengths[d])), 0, 0, n) if d in lengths else identity(n)
                              for d, n in zip(layout, sizes)))]


def shift(call: Call, sign: int = 1) -> list[InputDep]:
    """``fftshift``/``ifftshift(x, dim)``: a roll by ``n // 2`` (``-(n // 2)`` for the inverse,
    ``sign`` -1) of each shifted axis (every axis when ``dim`` is None)."""
    k = call.data[0]
    ndim = len(call.shape(k))
    dim = call.arg(1, "dim", None)
    dims = set(range(-ndim, 0) if dim is None else negative_dims(dim, ndim))
    return [InputDep(k, tuple(Mapped(functools.partial(rolled, n, sign * (n // 2)), n) if d in dims
                              else identity(n) for d, n in zip(call.in_layouts[k], call.spatial_in(k))))]


def as_real(call: Call):
    """``view_as_real(z)``: (..., 2) with real and imaginary parts in a new last dim, which holds
    no position; the spatial axes move one dim to the left."""
    k = call.data[0]
    return tuple(d - 1 for d in call.in_layouts[k]), channel_only(call)


def as_complex(call: Call):
    """``view_as_complex(x)``: the last dim (of size 2) becomes complex values; it must not be a
    spatial axis."""
    k = call.data[0]
    layout = call.in_layouts[k]
    if -1 in layout:
        raise UnknownOpError("view_as_complex folds a spatial axis (the last dim) into complex values; "
                             "rfprobe has no rule for that")
    return tuple(d + 1 for d in layout), channel_only(call)


class _Spread(torch.autograd.Function):
    """Forward: the transform itself. Backward: every element of each transformed slice of the
    input that the transform reads (``lengths``: its leading indices per dim) gets the sum of
    the gradient's magnitudes over that slice of the output (positive, so the sums of complex
    exponentials that the true adjoint makes cannot cancel to zero)."""

    @staticmethod
    def forward(ctx, x, func, args, kwargs, lengths):
        ctx.shape, ctx.dtype, ctx.lengths = x.shape, x.dtype, lengths
        return func(x, *args, **kwargs)

    @staticmethod
    def backward(ctx, g):
        spread = g.abs().sum(dim=list(ctx.lengths), keepdim=True).expand(ctx.shape).to(ctx.dtype).clone()
        for d, m in ctx.lengths.items():
            spread.narrow(d, m, ctx.shape[d] - m).zero_()      # trimmed away by n=/s=: not read
        return spread, None, None, None, None


def fourier_surrogate(func, args, kwargs, *, rank: int | str, half: bool):
    """The structural probe's Fourier transform (of ``rank`` and ``half``, bound by the record):
    the same values, a positive backward (:class:`_Spread`) with the transform's support (each
    transformed axis read whole, or the leading part ``n``/``s`` keeps).

    >>> x = torch.ones(1, 4, requires_grad=True)
    >>> fn, a, k = fourier_surrogate(torch.fft.rfft, (x,), {"n": 3}, rank=1, half=False)
    >>> y = fn(*a, **k); y.real[0, 1].backward(); x.grad.tolist()
    [[1.0, 1.0, 1.0, 0.0]]
    """
    def spread(x, *rest, **kw):
        lengths = _read_lengths(rank, half, (x, *rest), kw, tuple(x.shape))
        return _Spread.apply(x, func, rest, kw, {d % x.dim(): m for d, m in lengths.items()})
    return spread, args, kwargs


def angle_surrogate(func, args, kwargs):
    """The structural probe's ``angle``: ``abs``, with the same (pointwise) support; the phase
    of a positive real value has no gradient with respect to it."""
    return torch.abs, args, kwargs


_POINTWISE = "real imag conj conj_physical resolve_conj resolve_neg complex polar".split()


def _fourier(base: str, rank: int | str) -> Op:
    """The record of ``torch.fft.<base>`` of ``rank`` (1: ``fft``, 2: ``fft2``, "n": ``fftn``)."""
    how = {"rank": rank, "half": base in ("irfft", "hfft")}    # they read n // 2 + 1 of their last dim
    return Op(f"fft_{base}{'' if rank == 1 else rank}", functools.partial(fourier, **how),
              surrogate=functools.partial(fourier_surrogate, **how))


RECORDS = [
    *(Op(n, elementwise) for n in _POINTWISE),
    Op("angle", elementwise, surrogate=angle_surrogate),
    *(_fourier(base, rank) for rank in (1, 2, "n") for base in "fft ifft rfft irfft hfft ihfft".split()),
    Op("fft_fftshift", shift),
    Op("fft_ifftshift", functools.partial(shift, sign=-1)),
    Op("view_as_real", kind=LAYOUT, layout_rule=as_real),
    Op("view_as_complex", kind=LAYOUT, layout_rule=as_complex),
]
