"""Layout inference: where an op's output holds the spatial positions, and which input
positions each output position reads, from the op's record (:mod:`rfprobe.ops`).

:class:`Inference` is called once per traced tensor and dispatches on what the op is and
where its inputs hold their positions, one small method per kind, as torch.fx's
``Interpreter`` runs one method per node kind:

* :meth:`Inference.moved`: an op that moves dims (reshape, permute, split, index);
* :meth:`Inference.valued`: an op that keeps its input's dims (conv, ReLU, add, softmax) or
  reduces some of them;
* :meth:`Inference.folded`: any op on a tensor whose positions sit as digits of several dims
  (:mod:`rfprobe.ops.pieces`: tokens, windows, rows folded into the batch);
* :meth:`Inference.unplaced`: an op whose data holds no spatial axes (a pooled vector).

A layout is a tuple of dims, one per spatial axis; a :class:`~rfprobe.ops.pieces.Pieces` where
the positions are digits of several dims; or None where the tensor holds none.

>>> import torch.nn as nn
>>> from rfprobe.trace import trace
>>> g = trace(nn.Sequential(nn.Conv2d(1, 4, 2, stride=2), nn.Flatten(2)), (1, 8, 8))
>>> g.nodes[-1].layout, g.nodes[-1].pieces.dims[2]      # the flatten holds a token dim: H and W
(None, (Digit(axis=0, weight=1, size=4), Digit(axis=1, weight=1, size=4)))
"""
from __future__ import annotations

import torch

from .. import render
from ..errors import UnknownOpError
from ..ops import REDUCTION, Affine, Call, Global, InputDep, Op, ValuesNeeded, reduced_layout
from ..ops.maps import identity, negative_dims
from ..ops.pieces import Digit, Lead, Pieces, blocked, carry, plan_map, plan_maps
from .graph import Unknown


class Inference:
    """The layout and deps of each traced tensor, for the tracer ``tracer`` (its ``dims``, its
    module stack for messages, and ``meta``: a rule that needs values then traces again)."""

    def __init__(self, tracer):
        self.tracer = tracer
        self.dims = tracer.dims
        self.trailing = tuple(range(-self.dims, 0))

    def __call__(self, op: Op, name: str, args, kwargs, tensors, data, layouts, out, site, index=0, outs=()):
        """(layout, deps) of ``out``, the ``index``-th tensor result of the op."""
        if any(isinstance(layouts[k], Pieces) for k in data) or (
                op.pairs and sum(layouts[k] is not None for k in data) > 1):
            # positions as digits; or a product of two maps (attention), whose rows the digits pair
            return self.folded(op, name, args, kwargs, tensors, data, layouts, out, site, index, outs)
        ref = next((layouts[k] for k in data if layouts[k] is not None), None)
        if ref is None and op.rule is None and op.layout_rule is None and op.pieces_rule is None:
            # an op rfprobe knows nothing of reads what it likes: unknown, named, as anywhere else
            return None, Unknown(render.no_rule(name, str(site or "?"), self.tracer.module_stack[-1]))
        if ref is None or (op.layout_rule is not None and layouts[data[0]] is None
                           and isinstance(args[0], torch.Tensor)):
            return self.unplaced(name, tensors, data, layouts, out, ref)
        if op.layout_rule is not None:
            return self.moved(op, name, args, kwargs, tensors, data, layouts, out, site, index, outs)
        return self.valued(op, name, args, kwargs, tensors, data, layouts, out, site, index, outs)

    # ------------------------------------------------------------------------- the kinds
    def unplaced(self, name, tensors, data, layouts, out, ref):
        """The data moved or computed has no spatial axes (pooled to a vector): every output
        element reads every position already. Another input that has them lends its layout
        where the output has its shape (``y.expand_as(x)``)."""
        k = next((k for k in data if layouts[k] is not None), None)
        layout = ref if k is not None and tuple(out.shape) == tuple(tensors[k].shape) else None
        return layout, Global(f"{name} of a tensor without spatial axes")

    def moved(self, op, name, args, kwargs, tensors, data, layouts, out, site, index, outs):
        """A layout op's ``layout_rule``: the output's layout (a tuple, pieces where it merged or
        split spatial axes, None where nothing of them is left) and deps."""
        call = self._call(name, args, kwargs, tensors, data, layouts, out, None, index, outs)
        return self._guard(lambda: op.layout_rule(call), name, site, None)

    def valued(self, op, name, args, kwargs, tensors, data, layouts, out, site, index, outs):
        """An op that keeps (or reduces) its input's dims: its layout follows the input's, its
        deps are the op's ``rule``."""
        ref = next(layouts[k] for k in data if layouts[k] is not None)
        main = layouts[data[0]]
        if op.kind == REDUCTION:
            layout = reduced_layout(*_plain(args, kwargs, tensors, data), tensors[data[0]], ref, out, op.dim_at)
            if layout is None and out.dim() < tensors[data[0]].dim():
                return self._dropped(op, name, args, kwargs, tensors, data, layouts, out, site, index, outs)
        else:
            layout = ref if out.dim() >= -min(ref) and _same_sizes(tensors[data[0]], ref, out) else None
        if op.rule is None:
            return layout, Unknown(render.no_rule(name, str(site or "?"), self.tracer.module_stack[-1]))
        if op.fixed_layout and main != self.trailing:
            return layout, Unknown(render.not_trailing(name, str(site or "?"), main, tuple(tensors[data[0]].shape),
                                                       self.dims))
        call = self._call(name, args, kwargs, tensors, data, layouts, out, layout, index, outs)
        deps = self._rule(op, call, name, site)
        if isinstance(deps, Unknown):
            return layout, deps
        return self._checked(op, name, tensors, data, layouts, out, site, layout, deps, main)

    def folded(self, op, name, args, kwargs, tensors, data, layouts, out, site, index, outs):
        """An op on a tensor whose positions sit as digits of several dims. An op that knows
        digits (its record's ``pieces_rule``: reshapes, permutes, matmul, attention) says where
        they go; one that needs the spatial axes trailing (conv, pooling) sees the coarse grid
        of each axis' top digit, unless they all sit in the batch dim (F.unfold's patches, each
        run through a conv of its own: the op keeps that dim, as any other op does); any other
        op sees each dim that holds digits as one axis, and what its rule does to that dim is
        done to the digits in it (:meth:`_carried`)."""
        pieces = [k for k in data if layouts[k] is not None]
        layouts = tuple(_as_pieces(tensors[k], layouts[k]) if k in pieces else layouts[k]
                        for k in range(len(layouts)))
        if not any(layouts[k].digits() for k in pieces):
            # a grid of one position (subsampled to 1x1): each axis in a dim of size 1, where
            # there is one, is a plain layout again; else every output reads that one position
            plain = [layouts[k].whole(tuple(tensors[k].shape), self.dims) for k in pieces]
            if all(p is not None for p in plain) and op.pieces_rule is None and op.layout_rule is None:
                layouts = tuple(plain[pieces.index(k)] if k in pieces else layouts[k] for k in range(len(layouts)))
                return self.valued(op, name, args, kwargs, tensors, data, layouts, out, site, index, outs)
            if op.pieces_rule is None:
                return self._lost(name, tensors, data, layouts, out, UnknownOpError("a grid of one position"))
        if op.rule is None and op.layout_rule is None and op.pieces_rule is None:
            return None, Unknown(render.no_rule(name, str(site or "?"), self.tracer.module_stack[-1]))
        try:
            if op.pieces_rule is not None:
                layout, deps = op.pieces_rule(self._call(name, args, kwargs, tensors, data, layouts, out, None,
                                                         index, outs))
                return layout, (tuple(deps) if isinstance(deps, list) else deps)
            if op.layout_rule is not None:
                raise UnknownOpError(f"{name} of a tensor whose positions sit as digits of several dims has no rule")
            if op.kind == REDUCTION:
                return self._reduced_digits(op, name, tensors, data, layouts, out, site, args, kwargs)
            if op.fixed_layout and self._windows(layouts[data[0]], tensors[data[0]], out):
                return self._windowed(op, name, args, kwargs, tensors, data, layouts, out, site, index, outs)
            if op.fixed_layout and not _batch_only(layouts[data[0]]):
                return self._coarse(op, name, args, kwargs, tensors, data, layouts, out, site, index, outs)
            return self._carried(op, name, args, kwargs, tensors, data, layouts, out, site, index, outs)
        except ValuesNeeded as e:
            if self.tracer.meta:
                raise       # trace() traces again on the CPU, where the values are known
            return None, self.refused(name, site, e)
        except UnknownOpError as e:
            return self._lost(name, tensors, data, layouts, out, e)

    def _lost(self, name, tensors, data, layouts, out, error):
        """An op rfprobe knows, on positions held as digits where it cannot follow them: every
        output reads every position, as when merged axes were global; where the output keeps
        the input's dims their digits stay, so a reshape back finds the grid (still global)."""
        held = [k for k in data if isinstance(layouts[k], Pieces)]
        k = next((k for k in held if tuple(tensors[k].shape) == tuple(out.shape)), held[0])   # the output's own
        src = tensors[k]
        kept = {i: i + out.dim() - src.dim() for i in range(src.dim())
                if 0 <= i + out.dim() - src.dim() and out.shape[i + out.dim() - src.dim()] == src.shape[i]}
        found, _ = carry([(layouts[k], kept)], tuple(out.shape), self.dims)
        return found, Global(f"{name} on positions held as digits of several dims: {error} (every position "
                             "can reach every output)")

    # ------------------------------------------------------------------------- helpers
    def _call(self, name, args, kwargs, tensors, data, layouts, out, out_layout, index, outs, dims=None) -> Call:
        return Call(name, *_plain(args, kwargs, tensors, data), data, tensors, tuple(layouts), tuple(out.shape),
                    dims or self.dims, out_layout, index, tuple(tuple(o.shape) for o in outs))

    def _rule(self, op, call, name, site):
        try:
            return op.rule(call)
        except UnknownOpError as e:     # the rule refuses this use of the op
            if isinstance(e, ValuesNeeded) and self.tracer.meta:
                raise       # trace() traces again on the CPU, where the values are known
            return self.refused(name, site, e)

    def _guard(self, fn, name, site, fallback_layout):
        """Run a rule; an op it refuses becomes an ``Unknown`` node naming the op and call site."""
        try:
            return fn()
        except UnknownOpError as e:
            if isinstance(e, ValuesNeeded) and self.tracer.meta:
                raise       # trace() traces again on the CPU, where the values are known
            return fallback_layout, self.refused(name, site, e)

    def refused(self, name, site, error) -> Unknown:
        return Unknown(render.rule_refused(name, str(site or "?"), self.tracer.module_stack[-1], error))

    def _checked(self, op, name, tensors, data, layouts, out, site, layout, deps, main):
        """The rule's deps, kept honest: a rule that says nothing of a data input cuts a path."""
        if deps and not isinstance(deps, Global) and not op.drops:
            # a rule that forgets an argument computed from the input cuts a path (no deps at all
            # says the result reads nothing: softmax along a size-1 dim is constant)
            missing = set(data) - {d.tensor for d in deps}
            if missing:
                return layout, Unknown(render.rule_skips(name, str(site or "?"), self.tracer.module_stack[-1],
                                                         sorted(missing)))
        if layout is None and deps and not isinstance(deps, Global):   # a result reading nothing stays so
            deps = Global(f"{name} changes the layout so that spatial axes are lost")
        if main is None and isinstance(deps, Global) and layout is not None and not any(
                _spatial(tensors[k], layouts[k]) == _spatial(out, layout) for k in data if layouts[k] is not None):
            # the first input has no spatial axes and the output has none of the others' sizes
            # (``v @ attn`` with v flattened): the layout borrowed from another input is not the output's
            layout = None
        return layout, (deps if isinstance(deps, Global) else tuple(deps))

    def _dropped(self, op, name, args, kwargs, tensors, data, layouts, out, site, index, outs):
        """A reduction that drops some spatial dims but not all (``x.mean(2)``, strip pooling
        without ``keepdim``): the axes it keeps go on as digits, the dropped ones are read whole
        (an unsqueeze puts them back as axes of one position)."""
        k = data[0]
        src = tensors[k]
        if not all(d in _reduced(args, kwargs, src, op.dim_at) for d in layouts[k]) and op.rule is not None:
            layouts = tuple(Pieces.of_layout(tuple(t.shape), layouts[j]) if j == k else layouts[j]
                            for j, t in enumerate(tensors))
            return self._reduced_digits(op, name, tensors, data, layouts, out, site, args, kwargs)
        return None, self._rule(op, self._call(name, args, kwargs, tensors, data, layouts, out, None, index, outs),
                                name, site)

    def _reduced_digits(self, op, name, tensors, data, layouts, out, site, args, kwargs):
        """A reduction over some dims of a tensor held as digits: the digits of the dims it
        keeps stay where they are, those of the dims it reduces are read whole."""
        k = data[0]
        if isinstance(args[op.dim_at] if len(args) > op.dim_at else kwargs.get("dim"), torch.Tensor):
            raise UnknownOpError(f"{name} of two tensors whose positions sit as digits of several dims has no rule")
        kept = _kept_by_reduction(args, kwargs, tensors[k], out, op.dim_at)
        found, plans = carry([(layouts[k], kept)], tuple(out.shape), self.dims)
        deps = [InputDep(k, plan_maps(plans[0], name))]
        if found is None or isinstance(deps[0].axes, Global):
            return found, Global(f"{name} over spatial dims (global pooling)")
        return self._checked(op, name, tensors, data, layouts, out, site, found, deps, layouts[k])

    def _coarse(self, op, name, args, kwargs, tensors, data, layouts, out, site, index, outs):
        """A conv or pool on a tensor whose trailing dims hold each axis' top digit (a
        space-to-depth by reshape: the lower digits went into the channels, which the op reads
        whole): the op's maps on the coarse grid, each coarse index reading its block."""
        k = data[0]
        pieces, shape = layouts[k], tuple(tensors[k].shape)
        top = {}
        for i, d in pieces.digits():
            if d.axis not in top or d.weight > top[d.axis][1].weight:
                top[d.axis] = (i, d)
        coarse = Pieces(tuple(fs if any(j == i for j, _ in top.values()) and len(fs) == 1 else
                              tuple(f if not isinstance(f, Digit) else f.size for f in fs)
                              for i, fs in enumerate(pieces.dims)), pieces.axes)
        view = coarse.whole(shape, self.dims)
        lower = {i for i, d in pieces.digits() if (i, d) not in top.values()}
        if view is None or view != self.trailing or any(
                out.dim() != len(shape) or out.shape[i] == shape[i] for i in lower):
            raise UnknownOpError(f"{name} on a tensor whose positions sit as digits of several dims "
                                 f"({pieces.dims}) has no rule; rfprobe follows it where the spatial axes "
                                 "are trailing dims of their own")
        layouts = tuple(view if j == k else layouts[j] for j in range(len(layouts)))
        layout = view if _same_sizes(tensors[k], view, out) else None
        deps = self._rule(op, self._call(name, args, kwargs, tensors, data, layouts, out, layout, index, outs),
                          name, site)
        if isinstance(deps, (Global, Unknown)):
            return layout, deps
        blocks = [top[a][1].weight if a in top else 1 for a in range(self.dims)]
        deps = [d if d.tensor != k or isinstance(d.axes, Global) else
                InputDep(k, tuple(blocked(m, b, n) for m, b, n in zip(d.axes, blocks, pieces.extents(self.dims))))
                for d in deps]
        return self._checked(op, name, tensors, data, layouts, out, site, layout, deps, view)

    def _windows(self, pieces: Pieces, src, out) -> bool:
        """Whether ``pieces`` are windows folded into the batch, as a conv or pool sees them:
        each trailing dim holds one digit, of each axis in order, and the other digits sit in
        the batch dims (before the channels), which the output keeps."""
        n = src.dim()
        first = n - self.dims
        trailing = [pieces.dims[first + a] for a in range(self.dims)]
        if not all(len(fs) == 1 and isinstance(fs[0], Digit) and fs[0].axis == a for a, fs in enumerate(trailing)):
            return False
        rest = [(i, d) for i, d in pieces.digits() if i < first]
        return (bool(rest) and all(i < first - 1 for i, _ in rest) and out.dim() == n
                and tuple(out.shape[:first - 1]) == tuple(src.shape[:first - 1]))

    def _windowed(self, op, name, args, kwargs, tensors, data, layouts, out, site, index, outs):
        """A conv or pool on windows folded into the batch (SAM2's pooled queries): the op's
        maps act on each axis' digit in the trailing dims, inside its range (beyond it the op
        pads the window), and the digits in the batch dims are carried."""
        k = data[0]
        pieces = layouts[k]
        view = tuple(layouts[j] if j != k else self.trailing for j in range(len(layouts)))
        deps = self._rule(op, self._call(name, args, kwargs, tensors, data, view, out, self.trailing, index, outs),
                          name, site)
        found, renamed = _windows_out(pieces, tuple(out.shape), self.dims)
        if isinstance(deps, (Global, Unknown)):
            return found, deps
        deps = [d if d.tensor != k or isinstance(d.axes, Global) else
                InputDep(k, tuple(_window_map(pieces, renamed, a, m) for a, m in enumerate(d.axes))) for d in deps]
        return self._checked(op, name, tensors, data, layouts, out, site, found, deps, pieces)

    def _carried(self, op, name, args, kwargs, tensors, data, layouts, out, site, index, outs):
        """Each dim that holds digits is one axis to the op's rule; what the rule does to that
        dim is done to its digits: read in place (carried to the output), or read whole. Inputs
        that hold digits in different dims (attention logits plus a relative-position term over
        the queries alone) all see every dim that any of them holds digits in."""
        held = {k: _held(layouts[k]) for k in data if isinstance(layouts[k], Pieces)}
        first = tuple(sorted(set().union(*held.values())))
        if any(tensors[k].dim() < -first[0] for k in held):
            raise UnknownOpError(f"{name} combines tensors that hold spatial positions in different dims")
        held = {k: first for k in held}
        view = tuple(layouts[j] if not isinstance(layouts[j], Pieces) else held[j] for j in range(len(layouts)))
        if any(isinstance(v, tuple) and v != first for v in view if v is not None):
            raise UnknownOpError(f"{name} combines a map with a tensor whose positions sit as digits of several dims")
        src = tensors[data[0]]
        if op.kind == REDUCTION:
            kept_dims = _kept_by_reduction(args, kwargs, src, out, op.dim_at)
        else:
            kept_dims = {i: i + out.dim() - src.dim() for i in range(src.dim())
                         if 0 <= i + out.dim() - src.dim() and out.shape[i + out.dim() - src.dim()] == src.shape[i]}
        out_view = tuple(kept_dims[d % src.dim()] - out.dim() for d in first if d % src.dim() in kept_dims)
        call = self._call(name, args, kwargs, tensors, data, view, out,
                          out_view if len(out_view) == len(first) else None, index, outs, dims=len(first))
        deps = self._rule(op, call, name, site)
        if isinstance(deps, Unknown):
            return None, deps
        if isinstance(deps, Global):
            keep = {j: {d % src.dim(): kept_dims[d % src.dim()] for d in first if d % src.dim() in kept_dims}
                    for j in held}
            found, _ = carry([(layouts[j], keep[j]) for j in held], tuple(out.shape), self.dims)
            return found, deps
        sources, rest = [], []
        for dep in deps:
            if isinstance(dep.axes, Global) or dep.tensor not in held:
                rest.append(dep)
                continue
            nd = tensors[dep.tensor].dim()
            kept = {}
            for d, m in zip(first, dep.axes):
                if not any(isinstance(f, Digit) for f in layouts[dep.tensor].dims[d]):
                    continue        # a dim where only another input holds positions
                if _in_place(m) and d % nd in kept_dims:
                    kept[d % nd] = kept_dims[d % nd]
                elif not _whole(m):
                    raise UnknownOpError(f"{name} maps a dim that holds spatial positions of several axes "
                                         f"({layouts[dep.tensor].dims[d]}) other than in place or whole")
            sources.append((dep.tensor, kept))
        same = _unmoved(sources, layouts, tensors, out)
        if same is not None and not rest:      # most ops on tokens (a LayerNorm, a GELU): no digit moves
            return same, tuple(InputDep(j, tuple(identity(n) for n in layouts[j].extents(self.dims)))
                               for j, _ in sources)
        found, plans = carry([(layouts[j], kept) for j, kept in sources], tuple(out.shape), self.dims)
        named = f"{op.mixer}: {name}" if op.mixer else name
        deps = [InputDep(j, plan_maps(plans[n], named)) for n, (j, _) in enumerate(sources)] + rest
        return self._checked(op, name, tensors, data, layouts, out, site, found, deps, layouts[data[0]])


def _windows_out(pieces: Pieces, out_shape: tuple[int, ...], n_axes: int):
    """The output pieces of an op on windows folded into the batch (:meth:`Inference._windowed`)
    and each input digit's output digit: the trailing digits take the output's sizes, and each
    axis' digits are weighed anew in their order."""
    first = len(pieces.dims) - n_axes
    sized = {d: out_shape[i] for i, d in pieces.digits() if i >= first}
    renamed = {}
    for a in range(n_axes):
        w = 1
        for d in sorted((d for _, d in pieces.digits() if d.axis == a), key=lambda d: d.weight):
            renamed[d] = Digit(a, w, sized.get(d, d.size))
            w *= renamed[d].size
    dims = tuple(tuple(renamed[f] if isinstance(f, Digit) else f for f in fs) if i < first - 1 else
                 ((renamed[fs[0]],) if renamed[fs[0]].size > 1 else ()) if i >= first else
                 ((out_shape[i],) if out_shape[i] > 1 else ())
                 for i, fs in enumerate(pieces.dims))
    return Pieces(dims, n_axes), renamed


def _window_map(pieces: Pieces, renamed: dict, a: int, m):
    """Axis ``a``'s map of an op on windows folded into the batch: its digit in the trailing
    dims through the op's map ``m``, its digits in the batch dims carried."""
    first = len(pieces.dims) - pieces.axes
    return plan_map(tuple((d.weight, d.size, (renamed[d].weight, renamed[d].size) + ((m,) if i >= first else ()))
                          for i, d in pieces.digits() if d.axis == a))


def _unmoved(sources, layouts, tensors, out) -> Pieces | None:
    """The output's pieces where every data input holds the same pieces and keeps each of its
    dims with digits in place, the output being of its rank: its own pieces, the dims without
    digits at the output's sizes (what :func:`~rfprobe.ops.pieces.carry` would say, for less)."""
    if not sources:
        return None
    first = layouts[sources[0][0]]
    if any(layouts[j] != first or tensors[j].dim() != out.dim() for j, _ in sources):
        return None
    dims = []
    for i, fs in enumerate(first.dims):
        if any(isinstance(f, (Digit, Lead)) for f in fs):
            if any(kept.get(i) != i for _, kept in sources):
                return None
            dims.append(fs)
        else:
            dims.append((out.shape[i],) if out.shape[i] != 1 else ())
    return Pieces(tuple(dims), first.axes)


def _in_place(m) -> bool:
    return type(m) is Affine and m.taps == (0,) and m.stride == 1 and m.padding == 0


def _whole(m) -> bool:
    return isinstance(m, Affine) and m.stride == 0 and len(m.taps) == m.n_in


def _batch_only(pieces) -> bool:
    """Every digit sits in dim 0 (the batch, where a window op keeps each element apart)."""
    return isinstance(pieces, Pieces) and all(i == 0 for i, _ in pieces.digits())


def _held(pieces: Pieces) -> tuple[int, ...]:
    """The dims (negative) that hold digits."""
    n = len(pieces.dims)
    return tuple(i - n for i, fs in enumerate(pieces.dims) if any(isinstance(f, Digit) for f in fs))


def _as_pieces(t: torch.Tensor, layout):
    return layout if isinstance(layout, Pieces) else Pieces.of_layout(tuple(t.shape), layout)


def _reduced(args, kwargs, src, dim_at: int) -> set[int]:
    """The dims (negative) a reduction reduces (every dim without ``dim``)."""
    dim = kwargs.get("dim", args[dim_at] if len(args) > dim_at and not isinstance(args[dim_at], torch.Tensor)
                     else None)
    if dim is None or (isinstance(dim, (list, tuple)) and not dim):
        return set(range(-src.dim(), 0))
    return set(negative_dims(dim, src.dim()))


def _kept_by_reduction(args, kwargs, src, out, dim_at: int) -> dict[int, int]:
    """Input dim -> output dim, for the dims a reduction keeps element for element."""
    gone = {d % src.dim() for d in _reduced(args, kwargs, src, dim_at)}
    if out.dim() == src.dim():
        return {i: i for i in range(src.dim()) if i not in gone}
    rest = [i for i in range(src.dim()) if i not in gone]
    return {i: o for o, i in enumerate(rest)} if len(rest) == out.dim() else {}


def _plain(args, kwargs, tensors, data) -> tuple[tuple, dict]:
    """The arguments a rule sees: a 0-dim integer tensor that holds a size, a dim or a pad
    amount (``F.pad(x, (torch.tensor(3), 0))``, as a model computes them from sizes) as the int
    it holds, when its value is known (not on the meta device) and it is not data."""
    found = [t for k, t in enumerate(tensors) if k not in data and t.dim() == 0 and t.device.type != "meta"
             and not t.is_floating_point() and not t.is_complex() and t.dtype is not torch.bool]
    if not found:
        return args, kwargs
    ids = {id(t) for t in found}

    def plain(v):
        if isinstance(v, torch.Tensor):
            return int(v) if id(v) in ids else v
        if type(v) in (list, tuple):
            return type(v)(plain(x) for x in v)
        return v
    return tuple(plain(a) for a in args), {k: plain(v) for k, v in kwargs.items()}


def _spatial(t, layout) -> tuple[int, ...]:
    return tuple(t.shape[d] for d in layout)


def _same_sizes(src, layout, out) -> bool:
    """True when ``out`` keeps ``layout``'s dims (sizes may change, e.g. a conv's). An output of
    lower rank keeps them only when it dropped leading dims, its dims from the first spatial one
    on being the input's (``einsum('bchw->bhw')``); one that dropped a trailing dim (a
    channels-last map times a vector, ``kthvalue`` over the last dim) has its spatial axes one
    dim further right, which negative dims would misplace onto the batch."""
    if out.dim() < src.dim():
        return tuple(out.shape[min(layout):]) == tuple(src.shape[min(layout):])
    return out.dim() == src.dim() or all(-d <= out.dim() for d in layout)
