"""Where a tensor holds the model input's spatial positions when they are no longer one dim
per axis: each dim lists its factors, most significant first, and a factor is either a digit
of a spatial axis or an opaque size (channels, heads, the batch).

An axis's index is the sum of its digits times their weights (mixed radix). Axis H of 56 split
into windows of 7 is a coarse digit (weight 7, size 8) and a fine one (weight 1, size 7); a
token dim ``L = H*W`` holds an H digit and a W digit; a window partition puts the coarse digits
into the batch dim and the fine ones into the token dim. Reshapes and permutes move digits and
never change an index, so the exact route's per-axis maps stay what they were; an op that
mixes along one dim makes each output read every value of the digits in that dim
(:func:`digit_map`), which is the window for window attention and the row for a row-wise
recurrent layer.

>>> p = Pieces.of_layout((1, 8, 56, 56), (-2, -1))
>>> w = p.reshaped((1, 8, 56, 56), (1, 8, 8, 7, 8, 7))
>>> w.dims[2:]
((Digit(axis=0, weight=7, size=8),), (Digit(axis=0, weight=1, size=7),), (Digit(axis=1, weight=7, size=8),), (Digit(axis=1, weight=1, size=7),))
>>> w.permuted((0, 2, 4, 3, 5, 1)).reshaped((1, 8, 8, 7, 7, 8), (64, 49, 8)).dims[0]
(Digit(axis=0, weight=7, size=8), Digit(axis=1, weight=7, size=8))
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np

from .maps import Affine, Broadcast, Global, Mapped, identity, whole_axis


@dataclass(frozen=True)
class Digit:
    """One digit of spatial axis ``axis``: index along the axis += digit * ``weight``."""

    axis: int
    weight: int
    size: int


@dataclass(frozen=True)
class Lead:
    """The first ``size`` entries of a dim, before its grid: class, distillation or register
    tokens, which hold no position. ``reads``: whether they read every position of the input
    (after an op that mixes the tokens), or nothing (a learned token put in front)."""

    size: int
    reads: bool = False


Factor = Digit | Lead | int        # an int is an opaque factor of that size


def _normal(factors) -> tuple[Factor, ...]:
    """Factors without size-1 ones, adjacent opaque factors joined, and adjacent digits of one
    axis joined where the major one continues the minor one (its weight is the minor's weight
    times its size): a window reverse gives back one digit per axis."""
    out: list[Factor] = []
    for f in factors:
        size = f if isinstance(f, int) else f.size
        if size == 1 and not isinstance(f, Lead) or size == 0:
            continue
        last = out[-1] if out else None
        if isinstance(f, int) and isinstance(last, int):
            out[-1] = last * f
        elif (isinstance(f, Digit) and isinstance(last, Digit) and last.axis == f.axis
              and last.weight == f.weight * f.size):
            out[-1] = Digit(f.axis, f.weight, last.size * f.size)
        else:
            out.append(f)
    return tuple(out)


def _size(f: Factor) -> int:
    return f if isinstance(f, int) else f.size


def _dim_size(fs) -> int:
    lead = fs[0].size if fs and isinstance(fs[0], Lead) else 0
    return lead + math.prod(_size(f) for f in fs[1 if lead else 0:])


def _split(f: Factor, major: int) -> tuple[Factor, Factor]:
    """``f`` as (major part of size ``major``, the minor rest), row-major."""
    minor = _size(f) // major
    if isinstance(f, int):
        return major, minor
    return Digit(f.axis, f.weight * minor, major), Digit(f.axis, f.weight, minor)


@dataclass(frozen=True)
class Pieces:
    """Per tensor dim, its factors, most significant first (size-1 factors left out); ``axes``:
    how many spatial axes the model input has (an axis without digits has one position)."""

    dims: tuple[tuple[Factor, ...], ...]
    axes: int

    @staticmethod
    def of_layout(shape: tuple[int, ...], layout: tuple[int, ...]) -> "Pieces":
        """A layout with one dim per axis (``layout[a]`` holds axis ``a``) as pieces."""
        n = len(shape)
        where = {d % n: a for a, d in enumerate(layout)}
        return Pieces(tuple(_normal([Digit(where[i], 1, s)] if i in where else [s])
                            for i, s in enumerate(shape)), len(layout))

    def digits(self) -> list[tuple[int, Digit]]:
        """Every digit with its dim."""
        return [(i, f) for i, fs in enumerate(self.dims) for f in fs if isinstance(f, Digit)]

    def extents(self, n_axes: int | None = None) -> tuple[int, ...]:
        """How many positions each axis has in this tensor (1 for an axis without digits)."""
        ext = [1] * (self.axes if n_axes is None else n_axes)
        for _, d in self.digits():
            ext[d.axis] *= d.size
        return tuple(ext)

    def lead(self) -> tuple[int, Lead] | None:
        """The dim that starts with tokens before the grid, and its :class:`Lead`; None if none."""
        return next(((i, fs[0]) for i, fs in enumerate(self.dims) if fs and isinstance(fs[0], Lead)), None)

    def index(self, unit) -> tuple | None:
        """Per dim, the index of spatial position ``unit`` (one int per axis) where it holds
        digits (after its lead tokens), None where it holds none; None in all where a dim
        mixes digits with other factors (one position spans several elements there)."""
        out = []
        for fs in self.dims:
            if not any(isinstance(f, Digit) for f in fs):
                out.append(None)
                continue
            at, place = 0, 1
            for f in reversed(fs):
                if isinstance(f, Lead):
                    at += f.size
                elif isinstance(f, Digit):
                    at += ((unit[f.axis] // f.weight) % f.size) * place
                    place *= f.size
                else:
                    return None
            out.append(at)
        return tuple(out)

    def reshaped(self, old: tuple[int, ...], new: tuple[int, ...]) -> "Pieces | None":
        """The pieces after a row-major reshape from ``old`` to ``new``; None where a new dim
        would cut a factor unevenly."""
        # a dim with lead tokens moves whole: its grid does not start at its first entry
        todo = [f for fs in self.dims for f in ([fs] if fs and isinstance(fs[0], Lead) else fs)]
        todo.reverse()
        dims = []
        for size in new:
            got: list[Factor] = []
            need = size
            while need > 1:
                if not todo:
                    return None
                f = todo.pop()
                if isinstance(f, tuple):
                    if need != _dim_size(f) or got:
                        return None
                    got, need = list(f), 1
                    continue
                s = _size(f)
                if s <= need:
                    if need % s:
                        return None
                    got.append(f)
                    need //= s
                else:
                    if s % need:
                        return None
                    major, minor = _split(f, need)
                    got.append(major)
                    todo.append(minor)
                    need = 1
            dims.append(_normal(got))
        return Pieces(tuple(dims), self.axes) if not todo else None

    def permuted(self, perm) -> "Pieces":
        """Output dim ``i`` is input dim ``perm[i]``."""
        return Pieces(tuple(self.dims[p] for p in perm), self.axes)

    def whole(self, shape: tuple[int, ...], n_axes: int) -> tuple[int, ...] | None:
        """The plain layout (one dim per axis) where each axis with more than one position is
        one digit alone in its dim, and each other axis finds a dim of size 1 of its own (the
        rightmost free one before the next axis' dim, as an unsqueeze put it back); else None."""
        n = len(shape)
        at: dict[int, int] = {}
        for i, fs in enumerate(self.dims):
            ds = [f for f in fs if not isinstance(f, int)]
            if not ds:
                continue
            if len(fs) != 1 or isinstance(ds[0], Lead) or ds[0].axis in at:
                return None
            at[ds[0].axis] = i
        free = [i for i in range(n) if shape[i] == 1 and i not in at.values()]
        for a in range(n_axes - 1, -1, -1):
            if a in at:
                continue
            limit = min([at[b] for b in at if b > a], default=n)
            options = [i for i in free if i < limit and i > max([at[b] for b in at if b < a], default=-1)]
            if not options:
                return None
            at[a] = options[-1]
            free.remove(options[-1])
        return tuple(at[a] - n for a in range(n_axes))


def digit_map(plan: tuple, j: int, bounded: bool) -> list[int]:
    """The input indices along one axis that output index ``j`` reads, by ``plan``: per input
    digit (weight, size, source), where source is the digit's (weight, size) in the output,
    which holds it with the same value, or None for a digit read whole (mixed along its dim),
    or (weight, size, map) for a digit an op maps on its own (a conv inside each window: the
    output digit's value ``v`` reads the values ``map`` gives for ``v`` inside the digit's
    range, since beyond it the op padded the window, not the neighbouring one).

    >>> window = ((7, 8, (1, 8)), (1, 7, None))     # coarse digit carried, fine one read whole
    >>> digit_map(window, 1, True)
    [7, 8, 9, 10, 11, 12, 13]
    >>> conv = ((4, 2, (4, 2)), (1, 4, (1, 4, Affine((0, 1, 2), 1, 1, 4))))   # conv3 in windows of 4
    >>> digit_map(conv, 4, False), digit_map(conv, 5, False)
    ([4, 5], [4, 5, 6])
    """
    choices = []
    for weight, size, source in plan:
        if source is None:
            choices.append([v * weight for v in range(size)])
        elif len(source) == 3:
            out_weight, out_size, m = source
            read = m.deps(np.array([(j // out_weight) % out_size]), True)
            choices.append([int(v) * weight for v in read])
        else:
            out_weight, out_size = source
            choices.append([((j // out_weight) % out_size) * weight])
    return sorted(sum(c) for c in itertools.product(*choices))


def carry(sources, out_shape: tuple[int, ...], n_axes: int):
    """The output's pieces, and per source and axis a :func:`digit_map` plan, for an op whose
    output dims keep some input dims element for element. ``sources``: per data input, (its
    pieces, {input dim: output dim} for the dims the output keeps). A kept dim's digits go to
    the output (the first input to bring a digit of an axis into one dim wins; another input's
    digit at the same place of that dim, the same axis with the same size and place value, is
    carried as it: pooled queries against their window's keys); every other digit is read
    whole. An axis's digits left in the output are weighed anew (the output indexes what it
    holds, without gaps); an output digit an input lacks enters its plan as a digit of size 1
    and weight 0 (the input's index does not follow it).
    Returns (output pieces or None when it holds no digit, plans per source)."""
    dims: list[list] = [[] for _ in out_shape]
    placed: dict[Digit, int] = {}       # digit -> the output dim that holds it
    for pieces, kept in sources:
        for i, o in kept.items():
            got = [f for f in pieces.dims[i] if not isinstance(f, int)]
            if not got or dims[o] or any(placed.get(d, o) != o for d in got if isinstance(d, Digit)):
                continue
            dims[o] = list(pieces.dims[i])
            placed.update({d: o for d in got if isinstance(d, Digit)})
    renamed = _reweighed(dims, n_axes)
    mixing = any(i not in kept and any(isinstance(f, Digit) for f in fs)
                 for pieces, kept in sources for i, fs in enumerate(pieces.dims))
    # lead tokens in a row that reads positions whole read positions from then on
    renamed.update({f: Lead(f.size, f.reads or mixing) for fs in dims for f in fs if isinstance(f, Lead)})
    out = Pieces(tuple(_normal(fs if fs else [s]) for fs, s in
                       zip(([renamed.get(f, f) for f in fs] for fs in dims), out_shape)), n_axes)
    held = [renamed[f] for fs in dims for f in fs if isinstance(f, Digit)]    # the output's, before joins
    plans = []
    for pieces, kept in sources:
        if any(i not in kept and fs and isinstance(fs[0], Lead) and fs[0].reads for i, fs in enumerate(pieces.dims)):
            plans.append(None)      # mixes in tokens that read every position
            continue
        per_axis = []
        for a in range(n_axes):
            plan = []
            for i, d in pieces.digits():
                if d.axis != a:
                    continue
                o = kept.get(i)
                twin = _aligned(pieces.dims[i], dims[o]).get(d) if o is not None else None
                new = renamed.get(twin) if twin is not None else None
                plan.append((d.weight, d.size, (new.weight, new.size) if new else None))
            got = {(s[0], s[1]) for _, _, s in plan if s is not None}
            # an output digit this input lacks (a query shared by every window, an input of one
            # position): the input's index does not follow it, as a digit of size 1 it holds
            plan += [(0, 1, (f.weight, f.size)) for f in held if f.axis == a and (f.weight, f.size) not in got]
            per_axis.append(tuple(plan))
        plans.append(tuple(per_axis))
    # no digit left: the positions are gone, unless an input without any (a 1x1 grid's tokens,
    # the queries of a grid subsampled to one position) keeps dims: a grid of one position
    one = any(not pieces.digits() and kept for pieces, kept in sources)
    return (out if out.digits() or one else None), plans


def _aligned(mine, theirs) -> dict[Digit, Digit]:
    """Each digit of ``mine`` with the digit of ``theirs`` at its place, for two factor lists of
    one dim kept element for element: a factor's place is its size and its place value within
    the dim (the product of the sizes after it), so both take the same value at every index.
    Where one holds lead tokens the other lacks, their grids start apart: the same digit only."""
    if _lead_of(mine) != _lead_of(theirs):
        return {f: f for f in mine if isinstance(f, Digit) and f in theirs}
    at = {place: f for place, f in _places(theirs) if isinstance(f, Digit)}
    return {f: at[place] for place, f in _places(mine)
            if isinstance(f, Digit) and place in at and at[place].axis == f.axis}


def _lead_of(factors) -> int:
    return factors[0].size if factors and isinstance(factors[0], Lead) else 0


def _places(factors):
    """(size, place value) and factor, for each factor of a dim."""
    value = 1
    for f in reversed(factors):
        yield (_size(f), value), f
        value *= _size(f)


def _reweighed(dims, n_axes: int) -> dict[Digit, Digit]:
    """Each digit among ``dims`` with its weight in a complete decomposition of what its axis
    keeps there (the smallest digit weighs 1)."""
    renamed = {}
    for a in range(n_axes):
        mine = sorted({f for fs in dims for f in fs if isinstance(f, Digit) and f.axis == a}, key=lambda d: d.weight)
        w = 1
        for d in mine:
            renamed[d] = Digit(a, w, d.size)
            w *= d.size
    return renamed


def is_identity(plan: tuple) -> bool:
    """Every digit carried with its weight: output index ``j`` reads ``j``."""
    return all(s is not None and len(s) == 2 and s[0] == w for w, _, s in plan)


def reads_whole(plan: tuple) -> bool:
    """Every digit read whole: every output index reads the whole axis (an output digit the
    input lacks, of size 1 in its plan, changes nothing)."""
    return all(s is None for _, size, s in plan if size > 1)


def size_of(plan: tuple) -> int:
    """How many positions the axis has in the input."""
    return math.prod(s for _, s, _ in plan)


# ----------------------------------------------------------------------------- maps from digits
def plan_maps(plans, named: str) -> tuple | Global:
    """The per-axis maps of :func:`~rfprobe.ops.pieces.carry`'s plans for one input: ``Global``
    where the input's every position is read whole on every axis it holds, or where its lead
    tokens, which read every position, are (``plans`` None); ``named`` names the op there."""
    if plans is None:
        return Global(f"{named} mixes in tokens put before the grid that read every position (a class token)")
    if all(reads_whole(p) for p in plans) and any(size > 1 for p in plans for _, size, _ in p):
        return Global(f"{named} mixes every position of a tensor whose positions sit as digits of its dims")
    return tuple(plan_map(p) for p in plans)


def plan_map(plan: tuple):
    """One axis' map from a digit plan: the identity, an ``Affine`` where the output index
    scales into the input's (a block read whole: coarse index ``j`` reads ``j*B .. j*B+B-1``),
    else a ``Mapped`` of :func:`~rfprobe.ops.pieces.digit_map`."""
    n = size_of(plan)
    if is_identity(plan):
        return identity(n)
    if reads_whole(plan):
        return whole_axis(n)
    if any(s is not None and len(s) == 3 for _, _, s in plan):
        return _op_in_windows(plan, n)
    carried = sorted(((w, s) for w, _, s in plan if s is not None), key=lambda c: c[1][0])
    scale = {w // s[0] for w, s in carried if w % s[0] == 0}
    # the output index is the carried digits' alone (their output weights 1, s0, s0*s1...), each
    # weighing ``scale`` times as much in the input: j reads j*scale plus the whole-read spans
    complete = all(s[0] == math.prod(c[1][1] for c in carried[:i]) for i, (_, s) in enumerate(carried))
    if complete and len(scale) == 1 and all(w % s[0] == 0 for w, s in carried):
        spans = [0]
        for w, size, s in plan:
            if s is None:
                spans = [a + v * w for a in spans for v in range(size)]
        return Affine(tuple(sorted(spans)), scale.pop(), 0, n)
    return Mapped(functools.partial(digit_map, plan), n)


def _op_in_windows(plan: tuple, n: int):
    """The map of a plan whose lowest digit an op maps on its own (:func:`digit_map`): an
    ``Affine`` where the op never reaches past the digit's range and the windows tile the axis
    at the op's stride (a pool whose kernel tiles the window: output ``j`` reads ``j*s + t``),
    else a ``Mapped``."""
    low = min(plan, key=lambda e: e[0])
    rest = [e for e in plan if e is not low]
    w, size, s = low
    m = s[2] if s is not None and len(s) == 3 else None
    if (type(m) is Affine and w == 1 and s[0] == 1 and m.stride * s[1] == size
            and all(e[2] is not None and len(e[2]) == 2 and e[0] == e[2][0] * m.stride for e in rest)):
        reach = m.deps(np.array([0, s[1] - 1]), False)
        if reach.min() >= 0 and reach.max() < size:
            return Affine(m.taps, m.stride, m.padding, n)
    return Mapped(functools.partial(digit_map, plan), n)


def blocked(m, block: int, n: int):
    """Map ``m`` on a coarse grid, each coarse index standing for ``block`` consecutive indices
    of an axis of ``n``: an ``Affine`` stays one (taps spread over the block, stride and
    padding scaled), any other map reads whole blocks."""
    if block == 1:
        return m
    if type(m) is Affine:
        taps = sorted({t * block + f for t in m.taps for f in range(block)})
        return Affine(tuple(taps), m.stride * block, m.padding * block, n)
    if isinstance(m, Broadcast):
        return m
    return Mapped(functools.partial(_blocks_of, m, block), n)


def _blocks_of(m, block: int, j: int, bounded: bool) -> list[int]:
    coarse = m.deps(np.array([j]), bounded)
    return [int(c) * block + f for c in coarse for f in range(block)]
