"""The vocabulary of receptive-field rules: per-axis maps, a call as a rule sees it, and the
record that holds everything rfprobe knows about one op.

A rule says, for each spatial axis of an op's output, which indices of each data input an
output index reads. Three kinds of per-axis maps cover every op rfprobe knows:

* ``Affine``: output ``j`` reads ``j*stride - padding + t`` for each tap ``t`` (conv, pool,
  pad as a shift, crop, pixel_unshuffle). These are the ops the closed form handles. Stride 0
  with every index as a tap is "the whole axis" (a Linear or softmax along one spatial axis).
* ``Mapped``: any other per-index function (transposed conv, upsampling, pixel_shuffle,
  reflect/replicate/circular padding at the border, adaptive pooling): position-dependent.
* ``Broadcast``: an input of size 1 spread over the axis (squeeze-excitation gates).

An op that couples every position (global pooling, norms over space, attention, ``Linear``
over space) returns ``Global`` with the reason. A rule that cannot follow one use of its op
raises ``UnknownOpError``; the tracer records that use as unknown.

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

from ..errors import UnknownOpError
from ..hints import OpKind

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
class Piece(Affine):
    """Output ``j`` reads input ``j - padding`` only inside the piece, ``padding <= j <
    padding + n_in`` (``torch.cat`` along a spatial axis: each output index reads one input).
    Outside it, the index reads nothing of this input, bounded or not; and paths that meet at a
    cat are alternatives, not a union (the closed form keeps them apart).

    >>> sorted(Piece((0,), 1, 4, 3).deps(np.array([2, 5, 9]), bounded=False).tolist())
    [1]
    """

    def deps(self, idx: np.ndarray, bounded: bool) -> np.ndarray:
        out = super().deps(idx, bounded)
        return out[(out >= 0) & (out < self.n_in)]


@dataclass(frozen=True)
class Mapped:
    """Output ``j`` reads ``fn(j, bounded)``: a position-dependent map. rfprobe's own ``fn`` are
    module-level functions, or ``functools.partial`` of one with the map's numbers, never a
    lambda or a closure: a graph, and the results that hold it, then pickle."""

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


AxisMap = Affine | Piece | Mapped | Broadcast


# the ``fn`` of maps that rules of several ops build, with ``functools.partial`` over the numbers
def group_of(per_out: int, per_in: int, o: int, bounded: bool) -> range:
    """Channel ``o`` reads the ``per_in`` channels of its group, ``per_out`` outputs to a group
    (a grouped conv; a group norm, whose groups keep their size).

    >>> list(functools.partial(group_of, 2, 3)(5, True))
    [6, 7, 8]
    """
    return range((o // per_out) * per_in, (o // per_out + 1) * per_in)


def adaptive_window(n_in: int, n_out: int, j: int, bounded: bool) -> list[int]:
    """Output ``j`` of ``n_out`` reads ``[floor(j*n_in/n_out), ceil((j+1)*n_in/n_out))`` of
    ``n_in`` (adaptive pooling; area interpolation).

    >>> [adaptive_window(5, 3, j, True) for j in range(3)]
    [[0, 1], [1, 2, 3], [3, 4]]
    """
    return list(range((j * n_in) // n_out, -((-(j + 1) * n_in) // n_out)))


def rolled(n: int, shift: int, j: int, bounded: bool) -> list[int]:
    """Output ``j`` of an axis of ``n`` rolled by ``shift`` reads ``(j - shift) mod n`` (a roll;
    an fftshift).

    >>> [rolled(4, 1, j, True) for j in range(4)]
    [[3], [0], [1], [2]]
    """
    return [(j - shift) % n]


@dataclass(frozen=True)
class Global:
    """Every output position depends on every input position; ``why`` names the cause."""

    why: str


@dataclass(frozen=True)
class InputDep:
    """How the op's output depends on one data input: per-axis maps, or ``Global``. Output axis
    ``a`` reads input axis ``a``, or ``perm[a]`` where the input holds its spatial axes in
    another order (a map added to its own transpose)."""

    tensor: int                               # position of the input among the call's tensors (``call.tensors``)
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
    index: int = 0            # which of the op's tensor results this is (split, chunk...)
    out_shapes: tuple = ()    # the shapes of all of them

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


def per_axis(v: Any, n: int) -> tuple[int, ...]:
    """An op's int-or-sequence argument (kernel, stride...) as one int per axis.

    >>> per_axis(3, 2), per_axis([2, 1], 2), per_axis([5], 3)
    ((3, 3), (2, 1), (5, 5, 5))
    """
    if isinstance(v, (list, tuple)):
        return tuple(int(x) for x in v) if len(v) == n else tuple(int(v[0]) for _ in range(n))
    return (int(v),) * n


def each_axis(v: Any, n: int) -> tuple:
    """A value for every axis (repeated ``n`` times), or a list or tuple of them as a tuple, as
    it is: unlike :func:`per_axis`, no conversion and no check, for callers that check or
    convert afterwards.

    >>> each_axis(2, 3), each_axis([1, 2], 3), each_axis(0.5, 1)
    ((2, 2, 2), (1, 2), (0.5,))
    """
    return tuple(v) if isinstance(v, (list, tuple)) else (v,) * n


def negative_dim(d: int, ndim: int) -> int:
    """A dim of a tensor of ``ndim`` dims counted from the end, as layouts hold them (-1 is the
    last dim), whichever way the op's argument counted it.

    >>> negative_dim(1, 4), negative_dim(-1, 4)
    (-3, -1)
    """
    return d - ndim if d >= 0 else d


def negative_dims(dim: Any, ndim: int) -> list[int]:
    """An op's ``dim`` argument, one int or several, as a list of dims counted from the end
    (:func:`negative_dim`).

    >>> negative_dims(2, 4), negative_dims((0, -1), 4)
    ([-2], [-4, -1])
    """
    return [negative_dim(d, ndim) for d in ([dim] if isinstance(dim, int) else dim)]


def from_input(call: Call, main: int) -> list[InputDep]:
    """Deps for the op's other data inputs than ``main``: a weight, bias or scale computed from
    the model input (dynamic filters, a cross-correlation template, AdaLN's scale) reaches
    every output position through every element, so each output reads all of it: every
    position of a template that keeps spatial axes (a cross-correlation), else globally.

    >>> import torch
    >>> x, w = torch.empty(1, 2, 8, 8), torch.empty(2, 2, 3, 3)
    >>> from_input(Call("conv2d", (x, w), {}, (0, 1), (x, w), ((-2, -1), None), (1, 2, 6, 6), 2), 0)
    [InputDep(tensor=1, axes=Global(why='conv2d takes a parameter computed from the model input (its 2nd argument): every output reads all of it'), perm=None)]
    """
    ordinal = {1: "2nd", 2: "3rd"}
    return [InputDep(k, tuple(whole_axis(n) for n in call.spatial_in(k)))
            if call.in_layouts[k] is not None and len(call.in_layouts[k]) == call.dims else
            InputDep(k, Global(f"{call.name} takes a parameter computed from the model input (its "
                               f"{ordinal.get(k, f'{k + 1}th')} argument): every output reads all of it"))
            for k in call.data if k != main]


def global_rule(why: str) -> Rule:
    """A rule that makes every output position read every input position; ``why`` may name
    the op as ``{name}``.

    >>> global_rule("{name} (attention over positions)")(Call("sdpa", (), {}, (), (), (), (1,), 2))
    Global(why='sdpa (attention over positions)')
    """
    def rule(call: Call) -> Global:
        return Global(why.format(name=call.name))
    rule.__doc__ = f"Global coupling: {why}"
    return rule


class ValuesNeeded(UnknownOpError):
    """Raised by a rule that needs the values of a constant argument (an index, a window)
    which the trace holds on the meta device, where tensors have no values: the tracer then
    traces the model again on the CPU, where they are known (and refuses the op if they are
    still unknown there)."""


# ----------------------------------------------------------------------------- the op record
LayoutRule = Callable[[Call], "tuple[tuple[int, ...] | None, list[InputDep] | Global]"]

# what an op does to the spatial dims, as the tracer needs to know it
VALUE: OpKind = "value"           # output keeps its input's spatial dims (sizes may change): ``rule`` maps them
LAYOUT: OpKind = "layout"         # moves, merges or splits dims (view, permute, split...): ``layout_rule``
INDEX: OpKind = "index"           # x[...]: ``layout_rule``, like a layout op, but not a merge of positions
WRITE: OpKind = "write"           # x[...] = v: the tracer writes the value into x's deps (``ops.layout.setitem``)
REDUCTION: OpKind = "reduction"   # drops or keeps reduced dims: ``rule``, output dims from ``reduced``
QUERY: OpKind = "query"           # returns no data (shape, size, flags): not traced


@dataclass(frozen=True, slots=True)
class Op:
    """Everything rfprobe knows about one op, found by the ``__name__`` the tracer sees.

    ``rule`` (exact route) or ``layout_rule`` (ops whose output holds the spatial axes in other
    dims) say which input positions each output position reads; ``fixed_layout`` ops need the
    spatial axes trailing, (N, C, *spatial); ``meta`` answers the op's result on meta tensors
    without running torch's kernel (None: run it); ``surrogate`` is the structural probe's
    replacement, ``(func, args, kwargs) -> (func, args, kwargs)``; ``gradient`` is False for
    ops whose result no gradient passes (a detach, a comparison's mask, argmax's indices);
    ``mixer`` names what an op that reads every position of a token or window dim does
    (attention, a Linear over space), in the reason it is global; ``pieces_rule`` is its rule
    where an input holds its positions as digits of several dims (:mod:`rfprobe.ops.pieces`),
    and ``pairs`` says that rule serves a product of two maps too (attention pairs rows); ``scales``
    marks a product (a squeeze-excitation gate scales a map through it); ``overwrites`` an
    in-place op whose result reads nothing of what it writes over (``fill_``, ``copy_``).

    >>> Op("relu").kind, Op("relu").gradient
    ('value', True)
    """

    name: str
    rule: Rule | None = None
    kind: OpKind = VALUE
    layout_rule: LayoutRule | None = None
    fixed_layout: bool = False
    inplace: bool = False         # an in-place dunder (``__iadd__``); ``add_`` says so by its name
    reads_size: bool = False      # a query that can tell the model a spatial size
    meta: Callable[[tuple, dict], Any] | None = None
    surrogate: Callable[[Callable, tuple, dict], tuple] | None = None
    gradient: bool = True
    mixer: str | None = None
    dim_at: int = 1               # a reduction's positional ``dim`` (``norm(x, p, dim)``: 2)
    scales: bool = False          # a product: a gate broadcast over space scales a map through it
    overwrites: bool = False      # an in-place op whose result does not read its input (fill_)
    drops: bool = False           # the rule reads only some data inputs on purpose (``x.to(y)``: y lends its dtype)
    reads_values: bool = False    # hands a tensor's values to Python (``item``, ``tolist``, ``numpy``)
    from_values: bool = False     # builds a tensor from Python values (``torch.tensor``)
    pieces_rule: LayoutRule | None = None   # the rule where an input's positions sit as digits (ops.pieces)
    pairs: bool = False           # a product of two tensors from the input: ``pieces_rule`` pairs their rows
