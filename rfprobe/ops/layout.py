"""Layout and indexing: ops that move, merge or split dims, slice, index, join or write.

Each layout rule returns the output's spatial dims (``None`` when a reshape merges spatial axes
into one, after which every position is global) and how each output index maps to the
input's: reshapes and permutes keep positions (the spatial axes move to other dims, as in a
channels-last block), slices crop (start, step), ``cat`` on a spatial dim shifts, ``expand``
broadcasts, ``repeat`` wraps. Shape queries (``x.shape``, ``x.size()``) are listed here too:
they return no data and are not traced.

>>> import torch
>>> x, out = torch.empty(1, 3, 4, 5), torch.empty(1, 4, 5, 3)
>>> call = Call("permute", (x, 0, 2, 3, 1), {}, (0,), (x,), ((-2, -1),), tuple(out.shape), 2)
>>> permute(call, "permute")[0]          # channels last: H and W now sit in dims -3 and -2
(-3, -2)
"""
from __future__ import annotations

import functools
import math

import torch

from ..errors import UnknownOpError
from . import meta, window
from .maps import (INDEX, LAYOUT, QUERY, WRITE, Affine, Broadcast, Call, Global, InputDep, Mapped, Op, Piece,
                   ValuesNeeded, identity, negative_dim)
from .pieces import Digit, Lead, Pieces, carry, plan_maps

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
    dim = negative_dim(dim, ndim)
    deps, offset = [], 0
    for k, t in enumerate(call.tensors):
        if k in call.data and call.in_layouts[k] is None:
            deps.append(InputDep(k, Global(f"{call.name} joins a tensor without spatial axes")))
        elif k in call.data:
            axes = tuple(Piece((0,), 1, offset, n) if d == dim else identity(n)
                         for d, n in zip(call.in_layouts[k], call.spatial_in(k)))
            deps.append(InputDep(k, axes))
        if t.dim() == ndim:
            offset += t.shape[dim]
    return deps




def setitem(args, tensors, data, layouts, keep_old=False):
    """``x[index] = value``: a position inside the written slice reads ``value`` (and, with
    ``keep_old``, the old ``x`` too, as after ``x[index].add_(v)``), a position outside it the
    old ``x`` only. A write into some channels keeps every position of ``x``: a unit reads the
    union over its channels. Returns (layout, deps); a slice on two spatial axes leaves outside
    it a union of two products, one dep on ``x`` for each.

    >>> import torch
    >>> x = torch.zeros(1, 2, 6, 6)
    >>> layout, deps = setitem((x, (slice(None), slice(None), slice(None, 2)), 0.0), (x,), (0,), ((-2, -1),))
    >>> [deps[0].axes[0].fn(j, True) for j in (1, 2)]      # x[:, :, :2] = 0: row 1 reads nothing
    [[], [2]]
    """
    x, index, value = args[0], args[1], args[2]
    layout = layouts[0]
    if layout is None:
        return None, Global("__setitem__ into a tensor without spatial axes")
    ndim = x.dim()
    idx = _write_index(index, ndim)
    spans = [_span(idx[d + ndim], x.shape[d]) for d in layout]
    every_channel = all(isinstance(idx[d], slice) and _span(idx[d], x.shape[d]) == (0, x.shape[d], 1)
                        for d in range(ndim) if d - ndim not in layout)
    if keep_old or not every_channel:
        deps = [InputDep(0, tuple(identity(x.shape[d]) for d in layout))]
    else:
        deps = _kept(x, layout, spans)
    k = next((k for k in data if tensors[k] is value), None)
    if isinstance(value, torch.Tensor) and k is not None:
        deps.append(_value_dep(k, x, idx, layout, spans, value, layouts[k]))
    return layout, deps


def setitem_pieces(args, tensors, data, layouts, keep_old=False):
    """:func:`setitem` into a tensor whose positions sit as digits (:mod:`rfprobe.ops.pieces`):
    where the write covers every dim that holds digits whole (``attn[:, :, k:, k:] = ...``
    after ``k = 0`` lead tokens, MViTv2's relative positions), each position reads the value
    at its place (and the old ``x``, unless the write covers all of it)."""
    x, index, value = args[0], args[1], args[2]
    ndim = x.dim()
    idx = _write_index(index, ndim)
    spans = [_span(item, n) for item, n in zip(idx, x.shape)]
    if any(isinstance(i, int) for i in idx) or any(
            spans[d] != (0, x.shape[d], 1) for d, _ in layouts[0].digits()):
        raise UnknownOpError("assignment into part of a dim that holds spatial positions folded with others "
                             "has no rule")
    sources = []
    if keep_old or any(sp != (0, n, 1) for sp, n in zip(spans, x.shape)):
        sources.append((0, layouts[0], {i: i for i in range(ndim)}))
    k = next((k for k in data if tensors[k] is value and k != 0), None)
    if k is not None and layouts[k] is not None:
        pv = layouts[k] if isinstance(layouts[k], Pieces) else Pieces.of_layout(tuple(value.shape), layouts[k])
        off = ndim - value.dim()
        sources.append((k, pv, {i: i + off for i in range(value.dim()) if value.shape[i] == x.shape[i + off]}))
    found, plans = carry([(p, kept) for _, p, kept in sources], tuple(x.shape), layouts[0].axes)
    deps = [InputDep(j, plan_maps(plans[n], "__setitem__")) for n, (j, _, _) in enumerate(sources)]
    if k is not None and layouts[k] is None:
        deps.append(InputDep(k, Global("__setitem__ of a value without spatial axes")))
    return found, deps


def _write_index(index, ndim: int) -> tuple:
    """The index of ``x[index] = ...`` as one slice or int per dim of ``x`` (``...`` expanded);
    any other index has no rule."""
    idx = index if isinstance(index, tuple) else (index,)
    dots = [i for i, item in enumerate(idx) if item is Ellipsis]
    used = sum(1 for i in idx if i is not None and i is not Ellipsis)
    if dots:
        idx = idx[:dots[0]] + (slice(None),) * (ndim - used) + idx[dots[0] + 1:]
    if any(isinstance(item, bool) or not isinstance(item, (slice, int)) for item in idx):
        raise UnknownOpError(f"assignment x[{index!r:.40}] = ... with this index has no rule")
    return idx + (slice(None),) * (ndim - len(idx))


def _span(item, n: int) -> tuple[int, int, int]:
    """(start, stop, step) that a slice or an int (one position) writes along a dim of size ``n``."""
    if isinstance(item, slice):
        return item.indices(n)
    i = item % n
    return i, i + 1, 1


def _kept(x, layout, spans) -> list[InputDep]:
    """The old ``x``, read outside the written slice: the slice is a product of one span per
    spatial axis, so outside it is a union of products, one per axis the write does not cover
    whole (that axis outside its span, the others anywhere); none where it covers all of ``x``."""
    deps = []
    for a, d in enumerate(layout):
        n = x.shape[d]
        if spans[a] != (0, n, 1):
            deps.append(InputDep(0, tuple(Mapped(functools.partial(_unwritten, *spans[a]), n) if b == a
                                          else identity(x.shape[e]) for b, e in enumerate(layout))))
    return deps


def _value_dep(k, x, idx, layout, spans, value, value_layout) -> InputDep:
    """What the written slice reads of ``value``, which broadcasts against ``x[idx]`` from the
    right: its dims are those of ``x`` that a slice (not an int) indexes."""
    ndim = x.dim()
    sliced = [d for d in range(-ndim, 0) if isinstance(idx[d + ndim], slice)]
    axes = []
    for a, d in enumerate(layout):
        if not isinstance(idx[d + ndim], slice):
            raise UnknownOpError("assignment with an int index on a spatial axis has no rule")
        vd = sliced.index(d) - len(sliced)      # the dim of x[idx] (and of value) holding axis a
        if value_layout is None or value.dim() < -vd or value.shape[vd] == 1:
            axes.append(Broadcast())
        elif value_layout[a] != vd:
            raise UnknownOpError(f"assignment of a value whose spatial axis {a} sits in dim {value_layout[a]}, "
                                 f"not {vd}, has no rule")
        elif spans[a] == (0, x.shape[d], 1) and value.shape[vd] == x.shape[d]:
            axes.append(identity(x.shape[d]))
        else:
            axes.append(Mapped(functools.partial(_written, *spans[a]), value.shape[vd]))
    return InputDep(k, tuple(axes))


def _written(start: int, stop: int, step: int, j: int, bounded: bool) -> list[int]:
    """Position ``j`` of ``x[start:stop:step] = v`` reads ``v[(j - start) // step]`` where the
    slice writes it, nothing of ``v`` elsewhere."""
    return [(j - start) // step] if start <= j < stop and (j - start) % step == 0 else []


def _unwritten(start: int, stop: int, step: int, j: int, bounded: bool) -> list[int]:
    """Position ``j`` of ``x`` after ``x[start:stop:step] = v`` reads the old ``x[j]`` where the
    slice does not write it, nothing of the old ``x`` where it does."""
    return [] if start <= j < stop and (j - start) % step == 0 else [j]


def index_select(call: Call) -> list[InputDep] | Global:
    """``index_select(x, dim, index)``: along a spatial ``dim`` output ``j`` reads ``index[j]``
    (temporal sampling: SlowFast's slow pathway), along any other dim each position its own. The
    index's values are read when the trace holds them (a tensor the model made on the CPU); on
    the meta device the model is traced again with real values. An index computed from the
    model input makes every output read all it was computed from."""
    x, dim, index = call.arg(0, "input"), call.arg(1, "dim"), call.arg(2, "index")
    k = next((j for j in call.data if call.tensors[j] is x), None)
    if k is None:
        raise UnknownOpError("index_select of a constant by an index computed from the model input has no rule")
    # an index the trace follows reads all of it (nothing more when it is a constant moved to
    # the input's device with .to(x)); its values, as this input made them, pick the positions
    extra = [InputDep(j, Global("index_select's index computed from the model input"))
             for j in call.data if call.tensors[j] is index]
    nd = x.dim()
    dim = negative_dim(dim, nd)
    layout = call.in_layouts[k]
    index = torch.as_tensor(index)      # a 0-dim index the tracer gave as an int
    if dim in layout and index.device.type == "meta":
        raise ValuesNeeded("index_select's index along a spatial axis, held on the meta device")
    picked = tuple(index.reshape(-1).tolist()) if dim in layout else None
    return [InputDep(k, tuple(Mapped(functools.partial(_picked, picked), n) if d == dim else identity(n)
                              for d, n in zip(layout, call.spatial_in(k))))] + extra


def _picked(picked: tuple[int, ...], j: int, bounded: bool) -> list[int]:
    return [picked[j]]


def _keep(call: Call, new) -> tuple:
    """The input's positions unchanged, its spatial axes now in dims ``new``."""
    k = call.data[0]
    src = call.tensors[k]
    return tuple(new), [InputDep(k, tuple(identity(src.shape[d]) for d in call.in_layouts[k]))]


def _shape_only(call: Call):
    """``x.expand_as(y)``, ``x.view_as(y)``, ``x.reshape_as(y)`` where only ``y`` comes from the
    model input: ``y`` lends its shape, and its layout to the result, which reads none of it."""
    if call.data[0] == 0:
        return None
    lent = call.in_layouts[call.data[0]]
    return (lent if isinstance(lent, Pieces) else tuple(lent)), []


def reshape(call: Call):
    """view/reshape/flatten/squeeze...: a spatial axis survives where the same size has the same
    number of elements to its right. A spatial axis split into (coarse, fine...) dims, as in a
    space-to-depth stem, survives as its coarse dim: coarse index ``j`` reads the block
    ``j*B .. j*B + B - 1`` (``B`` the fine dims' product), and the fine dims hold no position
    (like channels, or the window elements of ``unfold``). Merged spatial axes are global."""
    lent = _shape_only(call)
    if lent is not None:
        return lent
    k = call.data[0]
    src = call.tensors[k]
    found = _reshape_layout(tuple(src.shape), call.out_shape, call.in_layouts[k])
    if found is not None and all(b == 1 for b in found[1]) and 1 not in call.spatial_in(k):
        return tuple(found[0]), [InputDep(k, tuple(identity(src.shape[d]) for d in call.in_layouts[k]))]
    # merged or split (or an axis of one position, which any dim of size 1 may hold): the
    # positions go on as digits of the dims that hold them
    moved = Pieces.of_layout(tuple(src.shape), call.in_layouts[k]).reshaped(tuple(src.shape), call.out_shape)
    if moved is not None and not moved.digits():
        moved = moved.whole(call.out_shape, call.dims)
    if moved is None:
        return None, Global(f"{call.name} merges or splits spatial axes {tuple(src.shape)} -> "
                            f"{call.out_shape} (every position can reach every output)")
    return moved, [InputDep(k, same_positions(call, k))]


def same_positions(call: Call, k: int) -> tuple:
    """Every position of input ``k`` read by the output position with its index (an op that
    only moves where the positions sit)."""
    layout = call.in_layouts[k]
    sizes = layout.extents(call.dims) if isinstance(layout, Pieces) else call.spatial_in(k)
    return tuple(identity(n) for n in sizes)


def reshape_pieces(call: Call):
    """:func:`reshape` of a tensor whose positions sit as digits (:mod:`rfprobe.ops.pieces`):
    the digits move with their elements, split or joined, and no index changes."""
    lent = _shape_only(call)
    if lent is not None:
        return lent
    k = call.data[0]
    src = tuple(call.tensors[k].shape)
    if call.in_layouts[k] is None:      # x.reshape_as(y), x without positions: it reads every one already
        return None, Global(f"{call.name} of a tensor without spatial axes")
    moved = call.in_layouts[k].reshaped(src, call.out_shape)
    if moved is None:
        return None, Global(f"{call.name} cuts the positions of {src} unevenly into {call.out_shape} "
                            "(every position can reach every output)")
    if not moved.digits():      # a grid of one position: its axes sit in dims of size 1, where there are
        moved = moved.whole(call.out_shape, call.dims)
    return moved, [InputDep(k, same_positions(call, k))]


def permute_pieces(call: Call, order: str):
    """:func:`permute` of a tensor whose positions sit as digits: the dims move with them."""
    k = call.data[0]
    nd = call.tensors[k].dim()
    return call.in_layouts[k].permuted(_perm(order, call.args, call.kwargs, nd)), [InputDep(k, same_positions(call, k))]


def _opaque_only(call: Call, k: int, dims, what: str) -> None:
    pieces = call.in_layouts[k]
    held = [d for d in dims if any(isinstance(f, Digit) for f in pieces.dims[d])]
    if held:
        raise UnknownOpError(f"{call.name} {what} dim {held[0]}, which holds spatial positions folded "
                             f"with others ({pieces.dims[held[0]]}); rfprobe follows it on the other dims")


def piece_pieces(call: Call, cut: str):
    """:func:`piece` (chunk, split, unbind...) of a tensor whose positions sit as digits: along
    a dim without digits (the heads, q/k/v), every position stays where it is."""
    k = call.data[0]
    pieces = call.in_layouts[k]
    nd = call.tensors[k].dim()
    dim = _piece_dim(cut, call.args, call.kwargs) % nd
    _opaque_only(call, k, [dim], "cuts")
    dims = list(pieces.dims)
    if cut == "drop":
        del dims[dim]
    else:
        dims[dim] = (call.out_shape[dim],) if call.out_shape[dim] != 1 else ()
    return Pieces(tuple(dims), pieces.axes), [InputDep(k, same_positions(call, k))]


def getitem_pieces(call: Call):
    """``x[...]`` of a tensor whose positions sit as digits: ints, slices and ``None`` on the
    dims without digits (``qkv[0]``), whole slices on the others."""
    k = call.data[0]
    pieces = call.in_layouts[k]
    shape = call.shape(k)
    index = call.args[1] if isinstance(call.args[1], tuple) else (call.args[1],)
    used = sum(1 for i in index if i is not None and i is not Ellipsis)
    if Ellipsis in index:
        e = index.index(Ellipsis)
        index = index[:e] + (slice(None),) * (len(shape) - used) + index[e + 1:]
    index = index + (slice(None),) * (len(shape) - sum(1 for i in index if i is not None))
    dims, d = [], 0
    for item in index:
        if item is None:
            dims.append(())
            continue
        if not isinstance(item, (int, slice)) or isinstance(item, bool):
            raise UnknownOpError(f"indexing with {type(item).__name__} a tensor whose spatial positions are "
                                 "folded across dims has no rule")
        whole = isinstance(item, slice) and item.indices(shape[d]) == (0, shape[d], 1)
        lead = pieces.dims[d][0] if pieces.dims[d] and isinstance(pieces.dims[d][0], Lead) else None
        if lead is not None and not whole:
            grid = _lead_cut(item, shape[d], lead)
            if grid is None:                # the lead tokens alone: they hold no position
                return None, (Global(f"{call.name} picks the tokens before the grid, which read every "
                                     "position (a class token)") if lead.reads else [])
            dims.append(pieces.dims[d][1:])
            d += 1
            continue
        if not whole:
            _opaque_only(call, k, [d], "indexes")
        if isinstance(item, slice):
            n = len(range(*item.indices(shape[d])))
            dims.append(pieces.dims[d] if whole else ((n,) if n != 1 else ()))
        d += 1
    return Pieces(tuple(dims), pieces.axes), [InputDep(k, same_positions(call, k))]


def _lead_cut(item, n: int, lead: Lead) -> bool | None:
    """``x[:, k:]`` after ``k`` lead tokens keeps the grid (True), ``x[:, :k]`` or ``x[:, i]``
    with ``i < k`` keeps lead tokens only (None); anything else cuts the grid (refused)."""
    if isinstance(item, int) and item % n < lead.size:
        return None
    if isinstance(item, slice):
        start, stop, step = item.indices(n)
        if (start, stop, step) == (lead.size, n, 1):
            return True
        if step == 1 and stop <= lead.size:
            return None
    raise UnknownOpError(f"indexing {item!r} of a token dim with {lead.size} tokens before its grid keeps part "
                         "of the grid; rfprobe follows x[:, k:] (the grid) and x[:, :k] (the tokens before it)")


def cat_pieces(call: Call):
    """``torch.cat`` of tensors whose positions sit as digits: along a dim without digits the
    positions stay where they are (every input must hold them alike); along the token dim,
    tensors put before the grid (a class token, register tokens) become its lead tokens, which
    read nothing (a learned token) or every position (one computed from the input)."""
    dim = call.arg(1, "dim", 0)
    no = len(call.out_shape)
    dim = dim % no
    held = [k for k in call.data if isinstance(call.in_layouts[k], Pieces)]
    grid = [k for k in held if any(isinstance(f, (Digit, Lead)) for f in call.in_layouts[k].dims[dim])]
    first = call.in_layouts[held[0]]
    if not grid:
        if any(call.in_layouts[k].dims[:dim] + call.in_layouts[k].dims[dim + 1:] !=
               first.dims[:dim] + first.dims[dim + 1:] for k in held):
            raise UnknownOpError(f"{call.name} joins tensors that hold their positions in different dims")
        dims = first.dims[:dim] + ((call.out_shape[dim],),) + first.dims[dim + 1:]
        return Pieces(dims, first.axes), [InputDep(k, same_positions(call, k)) if k in held else
                                          InputDep(k, Global(f"{call.name} joins a tensor without spatial axes"))
                                          for k in call.data]
    k = grid[0]
    if len(grid) > 1 or any(t.dim() == no for t in call.tensors[k + 1:]) or (
            call.in_layouts[k].dims[dim] and isinstance(call.in_layouts[k].dims[dim][0], Lead)):
        raise UnknownOpError(f"{call.name} joins a token grid with tokens after it or with another grid; "
                             "rfprobe follows tokens put before one grid")
    before = sum(t.shape[dim] for t in call.tensors[:k] if t.dim() == no)
    reads = any(j < k for j in call.data)      # a token computed from the input: it read every position
    pieces = call.in_layouts[k]
    dims = pieces.dims[:dim] + ((Lead(before, reads),) + pieces.dims[dim],) + pieces.dims[dim + 1:]
    nothing = tuple(Mapped(_none, 1) for _ in range(call.dims))
    return Pieces(dims, pieces.axes), [InputDep(k, same_positions(call, k)) if j == k else InputDep(j, nothing)
                                      for j in call.data]


def _none(j: int, bounded: bool) -> list[int]:
    """Reads nothing: a grid position of a join does not read the tokens put before it."""
    return []


def expand_pieces(call: Call):
    """``expand`` of a tensor whose positions sit as digits: only its size-1 dims grow."""
    lent = _shape_only(call)
    if lent is not None:
        return lent
    k = call.data[0]
    pieces = call.in_layouts[k]
    extra = len(call.out_shape) - len(pieces.dims)
    dims = [(n,) if n != 1 else () for n in call.out_shape[:extra]]
    dims += [fs if fs else ((n,) if n != 1 else ()) for fs, n in zip(pieces.dims, call.out_shape[extra:])]
    return Pieces(tuple(dims), pieces.axes), [InputDep(k, same_positions(call, k))]


def permute(call: Call, order: str):
    """permute/transpose/movedim...: the spatial axes move with their dims, in the ``order`` the
    op's arguments say (:func:`_perm`)."""
    nd = call.tensors[call.data[0]].dim()
    perm = _perm(order, call.args, call.kwargs, nd)
    return _keep(call, (perm.index(d % nd) - nd for d in call.in_layouts[call.data[0]]))


def channel_shuffle(call: Call):
    """``channel_shuffle(x, groups)`` permutes dim 1: output ``o`` reads ``(o % g) * (C // g) +
    o // g``. Every position stays where it is, unless dim 1 holds a spatial axis (a
    channels-last map whose batch went to dim 0), which is then permuted so."""
    k = call.data[0]
    src, layout = call.tensors[k], call.in_layouts[k]
    g = int(call.arg(1, "groups"))
    n = src.shape[1]
    axes = tuple(Mapped(functools.partial(_shuffled, g, n), n) if d == 1 - src.dim()
                 else identity(src.shape[d]) for d in layout)
    return tuple(layout), [InputDep(k, axes)]


def _shuffled(g: int, n: int, o: int, bounded: bool) -> list[int]:
    return [(o % g) * (n // g) + o // g]


def unfold(call: Call):
    """``x.unfold(dim, size, step)``: window j of that dim reads j*step .. j*step + size - 1,
    its elements along a new last dim (like channels); every other dim moves one left.
    ``F.unfold``, which shares the name, is :func:`~rfprobe.ops.window.im2col`."""
    k = call.data[0]
    src, layout = call.tensors[k], call.in_layouts[k]
    nd = src.dim()
    if len(call.out_shape) != nd + 1:   # F.unfold (im2col), which shares the name
        return window.im2col(call)
    dim = (call.args[1] if len(call.args) > 1 else call.kwargs["dimension"]) % nd
    size = call.args[2] if len(call.args) > 2 else call.kwargs["size"]
    step = call.args[3] if len(call.args) > 3 else call.kwargs["step"]
    axes = tuple(Affine(tuple(range(size)), step, 0, src.shape[d]) if d == dim - nd
                 else identity(src.shape[d]) for d in layout)
    return tuple(d - 1 for d in layout), [InputDep(k, axes)]


def expand(call: Call):
    """expand/broadcast_to: a size-1 spatial axis spread over the output is broadcast."""
    lent = _shape_only(call)
    if lent is not None:
        return lent
    k = call.data[0]
    src, layout = call.tensors[k], call.in_layouts[k]
    axes = tuple(Broadcast() if src.shape[d] == 1 and call.out_shape[d] != 1 else identity(src.shape[d])
                 for d in layout)
    return tuple(layout), [InputDep(k, axes)]


def repeat(call: Call):
    """``x.repeat(...)``: a repeated spatial axis wraps, output j reads j mod n."""
    k = call.data[0]
    src, layout = call.tensors[k], call.in_layouts[k]
    axes = tuple(identity(src.shape[d]) if call.out_shape[d] == src.shape[d] else
                 Mapped(functools.partial(_wrapped, src.shape[d]), src.shape[d]) for d in layout)
    return tuple(layout), [InputDep(k, axes)]


def _wrapped(n: int, j: int, bounded: bool) -> list[int]:
    return [j % n]


def _interleave_args(call: Call) -> tuple[int, int]:
    """(repeats, dim) of ``repeat_interleave``; refused without ``dim`` (it flattens) or with
    a repeat count per element."""
    k = call.data[0]
    repeats, dim = call.arg(1, "repeats"), call.arg(2, "dim")
    if dim is None or not isinstance(repeats, int):
        raise UnknownOpError(f"{call.name} without a dim (it flattens) or with a count per element moves "
                             "positions by values; rfprobe follows one int count along one dim")
    return repeats, dim % call.tensors[k].dim()


def repeat_interleave(call: Call):
    """``x.repeat_interleave(r, dim)``: each element repeated ``r`` times in place, so along a
    spatial dim output j reads j // r (nearest upsampling); along another dim every position
    stays where it is (gcvit's global query, copied to each window in the batch)."""
    k = call.data[0]
    src, layout = call.tensors[k], call.in_layouts[k]
    r, dim = _interleave_args(call)
    nd = src.dim()
    axes = tuple(Mapped(functools.partial(_interleaved, r), src.shape[d]) if d % nd == dim else
                 identity(src.shape[d]) for d in layout)
    return tuple(layout), [InputDep(k, axes)]


def _interleaved(r: int, j: int, bounded: bool) -> list[int]:
    return [j // r]


def repeat_interleave_pieces(call: Call):
    """:func:`repeat_interleave` of a tensor whose positions sit as digits: the repeats are a
    new least significant factor of the dim, which holds no position, so no index changes."""
    k = call.data[0]
    pieces = call.in_layouts[k]
    r, dim = _interleave_args(call)
    fs = pieces.dims[dim]
    grown = fs[:-1] + (fs[-1] * r,) if fs and isinstance(fs[-1], int) else fs + ((r,) if r != 1 else ())
    dims = pieces.dims[:dim] + (grown,) + pieces.dims[dim + 1:]
    return Pieces(dims, pieces.axes), [InputDep(k, same_positions(call, k))]


def stack(call: Call):
    """``torch.stack``: a new dim before the spatial ones; every input keeps its positions."""
    nd = call.tensors[call.data[0]].dim()
    no = len(call.out_shape)
    dim = call.kwargs.get("dim", call.args[1] if len(call.args) > 1 else 0) % no
    deps, new = [], None
    for j in call.data:
        lay = call.in_layouts[j]
        if lay is None:
            deps.append(InputDep(j, Global("stack of a tensor without spatial axes")))
            continue
        mine = tuple((d + nd) + (1 if d + nd >= dim else 0) - no for d in lay)
        if new is not None and mine != new:
            raise UnknownOpError("stack of tensors whose spatial axes sit in different dims")
        new = mine
        deps.append(InputDep(j, tuple(identity(call.tensors[j].shape[d]) for d in lay)))
    return new, deps


def piece(call: Call, cut: str):
    """chunk/split/narrow/unbind/select: a piece of a spatial dim is a crop at its offset.
    ``cut``: "split" (chunk, split...: the pieces tile the dim, ``dim`` is their 3rd argument),
    "narrow" (one piece from ``start``) or "drop" (unbind, select: the dim goes)."""
    k = call.data[0]
    src, layout = call.tensors[k], call.in_layouts[k]
    nd = src.dim()
    dim = _piece_dim(cut, call.args, call.kwargs) % nd
    if cut == "drop":
        if dim - nd in layout:
            raise UnknownOpError(f"{call.name} on spatial dim {dim} removes that axis; rfprobe needs every "
                                 "spatial axis in the output")
        return _keep(call, (d + (1 if d + nd < dim else 0) for d in layout))
    if dim - nd not in layout:
        return _keep(call, layout)
    if cut == "narrow":
        offset = call.args[2] if len(call.args) > 2 else call.kwargs["start"]
    else:
        offset = sum(shape[dim] for shape in call.out_shapes[:call.index])
    offset = offset % src.shape[dim] if offset < 0 else offset
    axes = tuple(Affine((0,), 1, -offset, src.shape[d]) if d == dim - nd else identity(src.shape[d])
                 for d in layout)
    return tuple(layout), [InputDep(k, axes)]


def _piece_dim(cut, args, kwargs) -> int:
    if "dim" in kwargs:
        return kwargs["dim"]
    if cut == "split":
        return args[2] if len(args) > 2 else 0
    return args[1] if len(args) > 1 else 0


def _perm(order, args, kwargs, nd) -> list[int]:
    """The dims of the output, as dims of the input: ``order`` "permute" (the dims given),
    "reverse" (``t``), "move" (movedim's source -> destination) or "swap" (transpose's two)."""
    if order == "permute":
        p = args[1:] if len(args) > 1 and isinstance(args[1], int) else tuple(args[1] if len(args) > 1 else kwargs["dims"])
        return [d % nd for d in p]
    if order == "reverse":
        return list(range(nd))[::-1]
    if order == "move":
        s = args[1] if len(args) > 1 else kwargs["source"]
        t = args[2] if len(args) > 2 else kwargs["destination"]
        s, t = ([s], [t]) if isinstance(s, int) else (list(s), list(t))
        s, t = [x % nd for x in s], [x % nd for x in t]
        rest = [d for d in range(nd) if d not in s]
        perm = [None] * nd
        for a, b in zip(s, t):
            perm[b] = a
        it = iter(rest)
        return [p if p is not None else next(it) for p in perm]
    a = args[1] if len(args) > 1 else kwargs.get("dim0")
    b = args[2] if len(args) > 2 else kwargs.get("dim1")
    perm = list(range(nd))
    perm[a % nd], perm[b % nd] = perm[b % nd], perm[a % nd]
    return perm


def _reshape_layout(sin, sout, layout):
    """Row-major reshape: spatial dim ``d`` survives as output dim ``e`` with block 1 when both
    have the same size and the same number of elements to their right (then index i_e == i_d);
    failing that, as the first dim ``e`` of a run ``e..f`` whose sizes multiply to ``d``'s with
    the same number of elements to the right of ``f`` (a split: i_d == i_e * B + ..., block
    ``B = n_d // n_e``). Returns (output dims, blocks), or None when an axis is merged."""
    new, blocks = [], []
    for d in layout:
        right = math.prod(sin[len(sin) + d + 1:])
        hits = [e for e in range(len(sout)) if sout[e] == sin[d] and math.prod(sout[e + 1:]) == right]
        hits = [e - len(sout) for e in hits if e - len(sout) not in new]
        if hits:
            new.append(d if d in hits else hits[-1])
            blocks.append(1)
            continue
        split = _split_run(sin[d], right, sout, new)
        if split is None:
            return None
        new.append(split - len(sout))
        blocks.append(sin[d] // sout[split])
    return tuple(new), tuple(blocks)


def _split_run(n, right, sout, taken):
    """The first dim of a run of output dims, two or more, whose sizes multiply to ``n`` with
    ``right`` elements after it (a spatial axis of size ``n`` split row-major); None if none."""
    for e in range(len(sout)):
        if e - len(sout) in taken or sout[e] < 2:   # a leading 1 is an unsqueeze, not the coarse dim
            continue
        size = sout[e]
        for f in range(e + 1, len(sout)):
            size *= sout[f]
            if size > n:
                break
            if size == n and math.prod(sout[f + 1:]) == right and f > e and sout[e] != n:
                return e
    return None


# ----------------------------------------------------------------------------- the records
# outputs of these are never data (shapes, sizes, flags): the tracer skips them; the ones
# that can tell the model a spatial size say so (a trace that read one cannot be replayed)
_QUERIES = """
dim size numel __get__ is_contiguous __len__ stride data_ptr element_size is_floating_point
is_complex __bool__ __format__ __repr__ __setstate__ item tolist __hash__ get_device has_names
_has_compatible_shallow_copy_type __array__
""".split()
_SIZE_READS = frozenset("__get__ size numel stride __len__ __format__ __repr__ tolist item __array__".split())

# these hand a tensor's values to Python, and these build a tensor from Python values: a path
# through both is one the tracer cannot follow (``torch.tensor(y.tolist())``)
_VALUE_READS = frozenset("item tolist __array__ numpy __float__ __int__ __index__ __complex__".split())
_FROM_VALUES = "tensor as_tensor asarray scalar_tensor".split()

RECORDS = [Op(n, kind=QUERY, reads_size=n in _SIZE_READS or n not in _QUERIES, reads_values=n in _VALUE_READS)
           for n in _QUERIES + sorted(_VALUE_READS - set(_QUERIES))]
RECORDS += [Op(n, from_values=True) for n in _FROM_VALUES]   # no rule: a copy of traced data is refused
RECORDS += [Op(n, kind=LAYOUT, layout_rule=reshape, pieces_rule=reshape_pieces)
            for n in "view reshape flatten unflatten squeeze unsqueeze view_as reshape_as".split()]
_ORDERS = {"permute": "permute", "transpose": "swap", "swapaxes": "swap", "swapdims": "swap", "movedim": "move",
           "moveaxis": "move", "t": "reverse"}
RECORDS += [Op(n, kind=LAYOUT, layout_rule=functools.partial(permute, order=o),
               pieces_rule=functools.partial(permute_pieces, order=o)) for n, o in _ORDERS.items()]
_CUTS = {"chunk": "split", "split": "split", "tensor_split": "split", "narrow": "narrow", "unbind": "drop",
         "select": "drop", "split_with_sizes": "split"}
RECORDS += [Op(n, kind=LAYOUT, layout_rule=functools.partial(piece, cut=c),
               pieces_rule=functools.partial(piece_pieces, cut=c)) for n, c in _CUTS.items()]
RECORDS += [Op(n, kind=LAYOUT, layout_rule=expand, pieces_rule=expand_pieces)
            for n in ("expand", "expand_as", "broadcast_to")]
RECORDS += [Op(n, kind=LAYOUT, layout_rule=channel_shuffle) for n in ("channel_shuffle", "native_channel_shuffle")]
RECORDS += [
    Op("repeat", kind=LAYOUT, layout_rule=repeat),
    Op("repeat_interleave", kind=LAYOUT, layout_rule=repeat_interleave, pieces_rule=repeat_interleave_pieces),
    Op("stack", kind=LAYOUT, layout_rule=stack),
    Op("unfold", kind=LAYOUT, layout_rule=unfold),
    Op("__getitem__", kind=INDEX, layout_rule=getitem, pieces_rule=getitem_pieces),
    Op("index_select", index_select),
    Op("__setitem__", kind=WRITE),
    *(Op(n, cat, meta=meta.cat, pieces_rule=cat_pieces) for n in ("cat", "concat", "concatenate")),
]
