"""Reductions, norms, softmax, Linear and attention: ops that read whole axes or everything.

A reduction over channels is pointwise; over some spatial axes with ``keepdim`` (strip
pooling) each output reads those whole axes; over every spatial axis it is global. A Linear or
softmax along one spatial axis reads that whole axis. Norms whose statistics span space, and
attention, couple every position (``Global``, with the op named).

>>> import torch
>>> x = torch.empty(1, 4, 6, 6)
>>> call = Call("mean", (x, (2, 3)), {}, (0,), (x,), ((-2, -1),), (1, 4), 2)
>>> reduction(call)
Global(why='mean over spatial dims (global pooling)')
"""
from __future__ import annotations

import functools

import torch

from ..errors import UnknownOpError
from . import meta
from .maps import (REDUCTION, Broadcast, Call, Global, InputDep, Mapped, Op, from_input, global_rule,
                   group_of, identity, negative_dim, negative_dims, whole_axis)
from .pieces import Digit, carry, plan_maps
from .pointwise import both_surrogate, channel_only, elementwise

def einsum(call: Call):
    """``torch.einsum(equation, *operands)``: a spatial axis whose letter stays in the output is
    read pointwise (channel mixing such as ``'bchw,oc->bohw'``; a sum over channels that drops
    their dim, ``'bhwc->bhw'``, moves the spatial axes to the dims their letters take); one
    summed away is global (attention pooling ``'bnhw,bchw->bnc'``); spatial axes put in another
    order, an ellipsis or the sublist form are refused (declare a rule for it). Returns
    (output layout, deps)."""
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
    deps, out_layout = [], None
    for k in call.data:
        layout = call.in_layouts[k]
        if layout is None or k >= len(subs):
            deps.append(InputDep(k, Global(f"einsum {eq!r} mixes a tensor without spatial axes into space")))
            continue
        sub = subs[k]
        letters = [sub[len(sub) + d] for d in layout]
        gone = next((c for c in letters if c not in rhs), None)
        if gone is not None:
            return None, Global(f"einsum {eq!r} sums over spatial axis {gone!r} (einsum over positions)")
        dims = [rhs.index(c) - len(rhs) for c in letters]
        want = sorted(dims) if out_layout is None else list(out_layout)
        moved = next((c for c, d, w in zip(letters, dims, want) if d != w), None)
        if moved is not None:
            raise UnknownOpError(f"einsum {eq!r} moves spatial axis {moved!r} to another dim; "
                                 "rfprobe follows einsums that keep the spatial axes in their order")
        axes = [Broadcast() if call.tensors[k].shape[d] == 1 and call.out_shape[w] != 1 else identity(call.tensors[k].shape[d])
                for d, w in zip(layout, dims)]
        out_layout = tuple(dims)
        deps.append(InputDep(k, tuple(axes)))
    return out_layout, deps


def reduction(call: Call, dim_at: int = 1, indices_at: int | None = None):
    """``mean``/``sum``/``amax``/``argmax``... over dims: global when every spatial dim is
    reduced (or a reduced one is dropped); over some of them with ``keepdim`` (strip pooling,
    coordinate attention), each output reads the whole of those axes and its own index on
    the others. ``dim_at``: where the op takes ``dim`` positionally (``norm(x, p, dim)``: 2);
    ``indices_at``: which of the op's results holds indices (argmax's 0, ``max(x, dim)``'s 1)."""
    dim = call.arg(dim_at, "dim", None)
    if isinstance(dim, torch.Tensor) or isinstance(call.kwargs.get("other"), torch.Tensor):
        return elementwise(call)        # max(x, y), min(x, y): elementwise, as maximum(x, y)
    k = call.data[0]
    layout = call.in_layouts[k]
    ndim = len(call.shape(k))
    if dim is None or (isinstance(dim, (list, tuple)) and not dim):    # sum(x, []): every dim
        return Global(f"{call.name} over the whole tensor")
    dims = negative_dims(dim, ndim)
    if call.index == indices_at and all(call.shape(k)[d] == 1 for d in dims):
        return []        # the index of the one element along dims of size 1: always 0
    if not any(d in layout for d in dims):
        return channel_only(call)
    kept = len(call.out_shape) == ndim      # keepdim: every axis still there, the reduced ones of size 1
    if not kept or all(d in dims for d in layout):
        return Global(f"{call.name} over spatial dims (global pooling)")
    axes = tuple(whole_axis(n) if d in dims else identity(n) for d, n in zip(layout, call.spatial_in(k)))
    return [InputDep(k, axes)]



def softmax(call: Call):
    """Softmax along a dim: along a spatial dim every output reads that whole axis (global when
    it is the only spatial axis; attention over flattened positions is caught at the flatten).
    Without ``dim`` torch picks dim 0 for 0-, 1- and 3-dim inputs, else dim 1 (deprecated, but
    run); along a dim of size 1 the result is constant (1, or 0 for log_softmax)."""
    dim = call.arg(1, "dim", None)
    k = call.data[0]
    ndim = len(call.shape(k))
    if dim is None:
        dim = 0 if ndim in (0, 1, 3) else 1
    if call.shape(k)[dim] == 1:
        return []
    return _whole_axis(call, negative_dim(dim, ndim), f"{call.name} over a spatial dim")


def linear(call: Call):
    """``F.linear`` acts on the last dim of its input. When that dim is spatial, every output
    index on that axis reads the whole axis: an ``Affine`` with all taps and stride 0 (exact;
    the closed form then has stride 0 there), and ``Global`` when it is the only spatial axis.
    A weight computed from the input (and no data input) is global."""
    if call.data[0] != 0:
        return Global(f"{call.name} with a weight computed from the model input")
    return _whole_axis(call, -1, "linear over a spatial axis (Linear over space)", product=True, named_input=True)


def matmul(call: Call):
    """``a @ b`` sums ``a``'s last dim against ``b``'s second-to-last: the axis a data operand
    loses to the sum is read whole (``x @ W`` mixes ``x``'s last dim, ``P @ y`` mixes ``y``'s
    rows). A 1-D operand drops that dim from the output; where it is spatial, refused."""
    k = call.data[0]
    a, b = call.tensors[0], call.tensors[1] if len(call.tensors) > 1 else None
    layout = call.in_layouts[k] or ()
    vector = a.dim() == 1 or (b is not None and b.dim() == 1)
    mixed = -1 if k == 0 else -2
    if vector and layout and (mixed in layout if k == 0 else min(layout) <= -2):
        raise UnknownOpError(f"{call.name} with a 1-D operand drops a spatial axis of its other operand; "
                             "rfprobe has no rule for that (sum over that axis with torch.sum instead)")
    return _whole_axis(call, mixed, "matmul over a spatial axis (Linear over space)", product=True)


def product_pieces(call: Call, why: str):
    """``a @ b`` where an operand holds its positions as digits (:mod:`rfprobe.ops.pieces`):
    each output keeps ``a``'s row and ``b``'s column and the batch dims, and reads every
    position that ``a``'s summed columns and ``b``'s summed rows hold. Attention's ``q @ k^T``
    reads the keys of its window (the digits its row holds again are read whole), ``attn @ v``
    the values of its window; where that is every position, the input is read globally."""
    a, b = call.tensors[0], call.tensors[1] if len(call.tensors) > 1 else None
    if a.dim() < 2 or b is None or b.dim() < 2:
        raise UnknownOpError(f"{call.name} with a 1-D operand of a tensor whose positions sit as digits has no rule")
    rows = {0: -2, 1: -1}
    if 0 in call.data and call.in_layouts[0] is not None and not call.in_layouts[0].digits():
        rows = {0: -2}      # rows of a grid of one position (subsampled queries): the output is theirs
    return _kept_rows(call, why, rows, lead=2)


def attention_pieces(call: Call, why: str):
    """``scaled_dot_product_attention(q, k, v, mask)`` where the tokens hold their positions as
    digits: each query reads its own row of ``q`` and the mask, and every key and value of its
    batch (the window, in window attention); a query over every position reads globally."""
    return _kept_rows(call, why, {0: -2, 3: -2}, lead=2)      # (query, key, value, mask): the rows are queries


def einsum_pieces(call: Call, why: str):
    """``torch.einsum`` where an operand holds its positions as digits, or of two maps
    (attention written as einsum): a dim whose letter the output keeps carries its digits to
    that output dim, a summed one is read whole (``'bhid,bhjd->bhij'`` reads the keys of the
    window its row holds)."""
    eq = call.args[0] if call.args else None
    if not isinstance(eq, str) or "..." in eq or "->" not in eq:
        raise UnknownOpError("einsum of a tensor whose positions sit as digits of several dims needs an "
                             "equation with '->' and every dim spelt out")
    lhs, rhs = eq.replace(" ", "").split("->")
    subs = lhs.split(",")
    kept = {}
    for k in call.data:
        sub = subs[k] if k < len(subs) else ""
        if len(set(sub)) != len(sub) or call.in_layouts[k] is None:
            raise UnknownOpError(f"einsum {eq!r} takes a diagonal, or a tensor without spatial axes with "
                                 "one whose positions sit as digits; rfprobe has no rule for that")
        kept[k] = {i: rhs.index(c) for i, c in enumerate(sub) if c in rhs}
    summed = [c for k in call.data for i, c in enumerate(subs[k]) if c not in rhs
              and any(isinstance(f, Digit) for f in call.in_layouts[k].dims[i])]
    if summed:      # the reason names the equation and the axis it sums away
        why = f"einsum {eq!r} sums over spatial axis {summed[0]!r} ({why})"
    return _products(call, why, kept)


def sequence_attention_pieces(call: Call, why: str):
    """``nn.MultiheadAttention``'s ``multi_head_attention_forward(query, key, value, ...)`` on
    (L, N, E) sequences (batch-first inputs are transposed before the call): each query reads
    its own row and every key and value of its batch column (the rows folded into N, for
    attention along rows); the weights (N, L, S) keep the query's place. A projection weight
    computed from the input is read whole."""
    weights = call.index == 1
    kept = {}
    for k in call.data:
        if call.in_layouts[k] is None:
            return None, Global(f"{call.name} mixes a tensor without spatial axes into space")
        if k == 0:
            kept[k] = {0: 1, 1: 0} if weights else {0: 0, 1: 1}
        elif k in (1, 2):
            kept[k] = {1: 0} if weights else {1: 1}
        else:
            kept[k] = {}
    return _products(call, why, kept)


def _kept_rows(call: Call, why: str, rows: dict, lead: int):
    """Deps and output pieces of a product over the last two dims: each data input keeps its
    batch dims (all but the last ``lead``, right-aligned with the output's) and the dim
    ``rows[k]`` names (None: none), as the output's dim of that place; the rest is read whole."""
    no = len(call.out_shape)
    kept = {}
    for k in call.data:
        if call.in_layouts[k] is None:
            return None, Global(f"{call.name} mixes a tensor without spatial axes into space")
        t = call.tensors[k]
        nd = t.dim()
        kept[k] = {i: i + no - nd for i in range(nd - lead)
                   if 0 <= i + no - nd and call.out_shape[i + no - nd] == t.shape[i]}
        if rows.get(k) is not None:
            kept[k][nd + rows[k]] = no + rows[k]
    return _products(call, why, kept)


def _products(call: Call, why: str, kept: dict):
    """Output pieces and deps where data input ``k`` keeps its dims ``kept[k]`` (input dim ->
    output dim) element for element and reads the rest whole (``pieces.carry``)."""
    sources = [(k, call.in_layouts[k], kept[k]) for k in call.data]
    found, plans = carry([(p, kept) for _, p, kept in sources], call.out_shape, call.dims)
    deps = [InputDep(k, plan_maps(plans[n], f"{why}: {call.name}")) for n, (k, _, _) in enumerate(sources)]
    if found is None:
        # every position read whole: where an input has the output's shape (``t @ attn``, the
        # values by the attention's columns), the output holds its positions as it does
        same = next((call.in_layouts[k] for k in call.data if tuple(call.tensors[k].shape) == call.out_shape), None)
        return same, Global(f"{why}: {call.name} reads every position")
    return found, deps


def _whole_axis(call: Call, dim: int, why: str, product: bool = False, named_input: bool = False):
    """Every output reads the whole of axis ``dim`` (global when it is the only spatial one).
    ``product``: one operand's rows against the other's columns (Linear, matmul), which over
    channels mixes channels; ``named_input``: the data must be the op's ``input`` argument
    (``F.linear``: otherwise its weight is computed from the model input)."""
    if any(call.in_layouts[j] is None for j in call.data):
        # e.g. ``v @ attn`` where v was flattened over positions: already global
        return Global(f"{call.name} mixes a tensor without spatial axes into space")
    k = call.data[0]
    layout = call.in_layouts[k] or ()
    if product and (len(call.data) > 1 or (named_input and call.tensors[k] is not call.arg(0, "input"))):
        # a weight (or a second operand) computed from the model input: each output sums one
        # operand's row against every column of the other, wherever those sit
        return Global(f"{call.name} of a weight or a second operand computed from the model input")
    if dim not in layout:
        return channel_only(call) if product else elementwise(call)
    if len(layout) == 1 or len(call.data) > 1:
        return Global(why)
    axes = tuple(whole_axis(n) if d == dim else identity(n)
                 for d, n in zip(layout, call.spatial_in(k)))
    return [InputDep(k, axes)]


def normalize(call: Call):
    """``F.normalize(x, p, dim)`` divides by the norm over ``dim`` (int or dims, default 1):
    over channels pointwise, over some spatial axes each output reads those whole axes (and
    its own index on the others), over every spatial axis global. The shape is kept."""
    dim = call.arg(2, "dim", 1)
    k = call.data[0]
    layout = call.in_layouts[k]
    ndim = len(call.shape(k))
    dims = negative_dims(dim, ndim)
    if not any(d in layout for d in dims):
        return elementwise(call)
    if all(d in dims for d in layout):
        return Global(f"{call.name} over spatial dims (statistics couple every position)")
    return [InputDep(k, tuple(whole_axis(n) if d in dims else identity(n)
                              for d, n in zip(layout, call.spatial_in(k))))]


def layer_norm(call: Call):
    """layer_norm normalises over its last ``len(normalized_shape)`` dims: each output reads the
    whole of the spatial axes among them (its own index on the others), global when they hold
    every spatial axis."""
    shape = call.arg(1, "normalized_shape")
    n = len(shape) if isinstance(shape, (list, tuple, torch.Size)) else 1
    k = call.data[0]
    layout = call.in_layouts[k]
    if not any(d >= -n for d in layout):
        return [InputDep(k, tuple(identity(m) for m in call.spatial_in(k)))] + from_input(call, k)
    if all(d >= -n for d in layout):
        return Global("layer_norm over spatial dims (statistics couple every position)")
    return [InputDep(k, tuple(whole_axis(m) if d >= -n else identity(m)
                              for d, m in zip(layout, call.spatial_in(k))))]


def norm_over_space(call: Call, grouped: bool = False, optional_stats: bool = False):
    """group_norm / instance_norm normalise over the dims after (N, C): each output reads the
    whole of the spatial axes among them (its own index on the others), global when they hold
    every spatial axis. ``grouped`` (group_norm): a spatial axis in dim 1 reads its group;
    ``optional_stats`` (instance_norm): ``use_input_stats=False`` normalises with running
    statistics, pointwise."""
    if optional_stats and not call.arg(5, "use_input_stats", True):
        return elementwise(call)        # running statistics (eval with track_running_stats)
    # statistics over dims 2.. of (N, C, ...): a spatial axis folded into C (a (C, H, W) map
    # whose channels went to the batch) reads its group of channels (group_norm) or itself
    k = call.data[0]
    layout = call.in_layouts[k]
    nd = len(call.shape(k))
    if all(d >= 2 - nd for d in layout):
        return Global(f"{call.name} (statistics over space couple every position)")
    groups = int(call.arg(1, "num_groups")) if grouped else None
    maps = []
    for d, m in zip(layout, call.spatial_in(k)):
        if d >= 2 - nd:
            maps.append(whole_axis(m))
        elif d == 1 - nd and groups:
            size = m // groups
            maps.append(Mapped(functools.partial(group_of, size, size), m))
        else:
            maps.append(identity(m))
    return [InputDep(k, tuple(maps))]


def reduced_layout(args, kwargs, src, layout, out, dim_at: int = 1):
    """The spatial dims of a reduction's output: kept with ``keepdim`` (or when nothing is
    dropped), renumbered past the dropped dims, None when a spatial dim is dropped (or every
    dim, without ``dim``). ``dim_at``: where the op takes ``dim`` positionally."""
    dim = kwargs.get("dim", args[dim_at] if len(args) > dim_at and not isinstance(args[dim_at], torch.Tensor)
                     else None)
    # the rank says whether dims were kept: a bool after ``dim`` may be std's ``unbiased``
    if out.dim() == src.dim():
        return layout
    if dim is None:
        return None
    nd = src.dim()
    gone = sorted({d + nd for d in negative_dims(dim, nd)})
    if any(g - nd in layout for g in gone):
        return None
    new = []
    for d in layout:
        p = d + nd
        q = p - sum(1 for g in gone if g < p)
        new.append(q - out.dim())
    return tuple(new)


# ----------------------------------------------------------------------------- the records
def extreme_surrogate(func, args, kwargs, indices: bool = False):
    """The structural probe's max/min/amax/amin over dims: a sum over the same dims, whose
    gradient reaches every element it reduces (the max's reaches one, so the probe saw only
    the winner while the forward reads them all). With ``indices`` (max's and min's records
    bind it), ``max(x, dim)``'s indices come back as zeros. ``max(x, y)`` of two tensors is
    elementwise: a sum of the two, as :func:`~rfprobe.ops.pointwise.both_surrogate` does for
    ``maximum``.

    >>> import torch
    >>> fn, a, k = extreme_surrogate(torch.amax, (torch.ones(2, 3), 1), {"keepdim": True})
    >>> fn(*a, **k).tolist()
    [[3.0], [3.0]]
    >>> fn, a, k = extreme_surrogate(torch.min, (torch.ones(2, 3), 1), {}, indices=True)
    >>> fn(*a, **k).indices.tolist()
    [0, 0]
    """
    if (len(args) > 1 and isinstance(args[1], torch.Tensor)) or isinstance(kwargs.get("other"), torch.Tensor):
        return both_surrogate(func, args, kwargs)
    return functools.partial(_summed, indices=indices), args, kwargs


def _summed(x, *rest, indices: bool = False, **kw):
    dim = kw.pop("dim", rest[0] if rest else None)
    keep = kw.pop("keepdim", rest[1] if len(rest) > 1 else False)
    if dim is None or (isinstance(dim, (tuple, list)) and not dim):    # amax's dim=() is every dim
        return x.sum()
    values = x.sum(dim, keepdim=keep)
    if indices:
        return torch.return_types.max((values, torch.zeros(values.shape, dtype=torch.long, device=x.device)))
    return values


def attention_surrogate(func, args, kwargs):
    """The structural probe's ``scaled_dot_product_attention``: a float ``attn_mask`` adds
    nothing (its finite entries read as 0, with the gradient still passing to the mask), while
    its ``-inf`` entries still mask. A large additive bias (a relative-position bias computed
    with the probe's positive weights) saturated the softmax inside the fused op, so keys
    the forward reads got an exactly zero gradient; a boolean mask is left as it is.

    >>> import torch
    >>> q = torch.ones(1, 2, 4)
    >>> fn, a, k = attention_surrogate(torch.nn.functional.scaled_dot_product_attention, (q, q, q),
    ...                                {"attn_mask": torch.tensor([[500.0, 0.0], [0.0, float("-inf")]])})
    >>> k["attn_mask"].tolist()
    [[0.0, 0.0], [0.0, -inf]]
    """
    at_arg = len(args) > 3
    mask = args[3] if at_arg else kwargs.get("attn_mask")
    if not isinstance(mask, torch.Tensor) or not mask.is_floating_point():
        return func, args, kwargs
    neutral = torch.where(torch.isneginf(mask), mask, mask - mask.detach())
    if at_arg:
        return func, (*args[:3], neutral, *args[4:]), kwargs
    return func, args, {**kwargs, "attn_mask": neutral}


def projection_surrogate(func, args, kwargs):
    """The structural probe's ``multi_head_attention_forward`` (``nn.MultiheadAttention``): the
    in-projection weights scaled so that each row's absolute values sum to 1. The op is traced
    as one, so its queries and keys came from the probe's positive weights on positive values
    and its logits reached thousands: the softmax inside saturated, and keys the forward reads
    got an exactly zero gradient. Masks are left as they are.

    >>> import torch
    >>> fn, a, k = projection_surrogate(None, (0, 0, 0, 4, 1, torch.full((2, 4), 3.0)), {})
    >>> a[5].sum(-1).tolist()
    [1.0, 1.0]
    """
    def scaled(w):
        if not isinstance(w, torch.Tensor) or not w.is_floating_point():
            return w
        return w / w.abs().sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
    if len(args) > 5:
        args = (*args[:5], scaled(args[5]), *args[6:])
    kwargs = {k: scaled(v) if k in ("in_proj_weight", "q_proj_weight", "k_proj_weight") else v
              for k, v in kwargs.items()}
    return func, args, kwargs


def sum_surrogate(func, args, kwargs):
    """The structural probe's ``linalg.vector_norm(x, ord, dim, keepdim)``: a sum over the same
    dims (the norm's gradient reaches only the largest element for ``ord=inf`` and nothing for
    ``ord=0``, while the forward reads them all).

    >>> import torch
    >>> fn, a, k = sum_surrogate(torch.linalg.vector_norm, (torch.ones(2, 3), float("inf"), 1), {})
    >>> fn(*a, **k).tolist()
    [3.0, 3.0]
    """
    def summed(x, ord=2, dim=None, keepdim=False, **kw):
        if dim is None or (isinstance(dim, (tuple, list)) and not dim):
            return x.sum().reshape((1,) * x.dim()) if keepdim else x.sum()
        return x.sum(dim, keepdim=keepdim)
    return summed, args, kwargs


def _reduction(name: str, dim_at: int = 1, indices_at: int | None = None, **kw) -> Op:
    rule = (reduction if dim_at == 1 and indices_at is None
            else functools.partial(reduction, dim_at=dim_at, indices_at=indices_at))
    return Op(name, rule, kind=REDUCTION, dim_at=dim_at, **kw)


_ATTENTION = "attention (matrix product over positions)"
RECORDS = [
    _reduction("mean", meta=meta.mean),
    *(_reduction(n) for n in "sum std var logsumexp prod nansum nanmean".split()),
    *(_reduction(n) for n in ("std_mean", "var_mean")),     # (std, mean): each reads what std reads
    *(_reduction(n, surrogate=extreme_surrogate) for n in ("amax", "amin")),
    # max(x, dim) and min(x, dim): values and indices
    *(_reduction(n, indices_at=1, surrogate=functools.partial(extreme_surrogate, indices=True)) for n in ("max", "min")),
    _reduction("norm", dim_at=2),                    # norm(x, p, dim, keepdim)
    _reduction("linalg_vector_norm", dim_at=2, surrogate=sum_surrogate),   # vector_norm(x, ord, dim, keepdim)
    Op("normalize", normalize),                      # F.normalize(x, p, dim): keeps the shape
    _reduction("argmax", indices_at=0, gradient=False), _reduction("argmin", indices_at=0, gradient=False),
    Op("softmax", softmax, meta=meta.softmax, mixer="attention (softmax over positions)"),
    Op("log_softmax", softmax, meta=meta.softmax),
    Op("linear", linear, meta=meta.linear, mixer="Linear over space"),
    Op("matmul", matmul, mixer=_ATTENTION, pieces_rule=functools.partial(product_pieces, why=_ATTENTION), pairs=True),
    Op("bmm", matmul, mixer=_ATTENTION, pieces_rule=functools.partial(product_pieces, why=_ATTENTION), pairs=True),
    Op("group_norm", functools.partial(norm_over_space, grouped=True), meta=meta.group_norm, fixed_layout=True),
    Op("instance_norm", functools.partial(norm_over_space, optional_stats=True), meta=meta.instance_norm,
       fixed_layout=True),
    Op("layer_norm", layer_norm, meta=meta.layer_norm),
    Op("scaled_dot_product_attention", global_rule("scaled_dot_product_attention (attention over positions)"),
       mixer="attention", surrogate=attention_surrogate,
       pieces_rule=functools.partial(attention_pieces, why="attention"), pairs=True),
    Op("multi_head_attention_forward", global_rule("multi-head attention (attention over positions)"),
       mixer="attention", surrogate=projection_surrogate,
       pieces_rule=functools.partial(sequence_attention_pieces, why="multi-head attention"), pairs=True),
    Op("einsum", layout_rule=einsum, mixer="einsum over positions",
       pieces_rule=functools.partial(einsum_pieces, why="einsum over positions"), pairs=True),
]
