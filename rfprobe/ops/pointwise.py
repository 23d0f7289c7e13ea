"""Pointwise ops and masks: each output position reads the same position of each input
(broadcast where an input has size 1), plus the ops that write constants or copies.

Activations, arithmetic, dropout, BatchNorm in eval mode, type casts and ``detach`` read their
own position only. Comparisons and logical ops make bool masks: the exact route follows them
(``where``/``masked_fill``/``x * mask`` read the positions the mask was computed from), though
no gradient passes a mask, so the probe stops there and verify names the mask.

>>> import torch
>>> x = torch.empty(1, 1, 4, 4)
>>> call = Call("relu", (x,), {}, (0,), (x,), ((-2, -1),), (1, 1, 4, 4), 2)
>>> [d.axes for d in elementwise(call)]
[(Affine(taps=(0,), stride=1, padding=0, n_in=4), Affine(taps=(0,), stride=1, padding=0, n_in=4))]
"""
from __future__ import annotations

import functools

from ..errors import UnknownOpError
from . import meta
from .maps import QUERY, Affine, AxisMap, Broadcast, Call, Global, InputDep, Op, identity

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


def cast(call: Call) -> list[InputDep]:
    """``x.to(...)``, ``x.type_as(y)``, ``x.cpu()``: ``x``'s values, pointwise; a tensor ``y``
    lends only its dtype and device, so its positions are not read (``ones.to(g)`` reads
    nothing of ``g``)."""
    return [d for d in elementwise(call) if d.tensor == 0]


def copy_from(call: Call) -> list[InputDep]:
    """``x.copy_(src)``: afterwards ``x`` holds ``src`` (broadcast), not its old values."""
    return elementwise(call)[1:] if 0 in call.data else elementwise(call)


def constant(call: Call) -> list[InputDep]:
    """``x.zero_()``, ``x.fill_(v)``, ``zeros_like``...: the result depends on no input value."""
    return []


def across_channels(call: Call) -> list[InputDep]:
    """``F.local_response_norm(x, size)``: output ``c`` of dim 1 reads ``c - size//2 ..
    c + (size-1)//2`` of dim 1 (zero padded), every other dim its own index: pointwise in
    space, unless dim 1 holds a spatial axis (a channels-last map), which then reads that window."""
    k = call.data[0]
    nd = len(call.shape(k))
    size = int(call.arg(1, "size"))
    return [InputDep(k, tuple(Affine(tuple(range(size)), 1, size // 2, n) if d == 1 - nd else identity(n)
                              for d, n in zip(call.in_layouts[k], call.spatial_in(k))))]


def dropped(call: Call, training: bool = True) -> list[InputDep]:
    """Dropout reads its own position; with ``p = 1`` in training every value is dropped and
    the result is constant. (A random drop below 1 still reads every position it keeps.)
    ``training``: the op's default (``F.alpha_dropout``'s is False)."""
    p = call.arg(1, "p", 0.5)
    training = call.arg(2, "training", call.kwargs.get("train", training))
    if training and isinstance(p, (int, float)) and p >= 1:
        return []
    return elementwise(call)


def where(call: Call) -> list[InputDep]:
    """``torch.where(condition, x, y)`` reads each position of all three (broadcast);
    ``torch.where(condition)`` alone returns the indices of its true elements, a list whose
    length depends on the values, which rfprobe does not follow."""
    if len(call.args) + len(call.kwargs) == 1:
        raise UnknownOpError("torch.where(condition) with one argument returns the indices of the true "
                             "elements (torch.nonzero), which rfprobe does not follow")
    return elementwise(call)


def copied(call: Call) -> list[InputDep]:
    """``x.new_tensor(data)``: ``data``'s values, pointwise; ``x`` lends its dtype and device."""
    return [d for d in elementwise(call) if d.tensor != 0]


def batch_norm(call: Call):
    """Eval mode normalises with running statistics (pointwise); training mode with the batch's
    statistics, which couples every position."""
    training = call.arg(5, "training", False)
    if training:
        return Global("batch_norm in training mode (batch statistics couple every position; "
                      "call model.eval() to measure the inference RF)")
    return elementwise(call)


# ----------------------------------------------------------------------------- the records
_ARITHMETIC = """
add add_ sub sub_ mul mul_ div div_ true_divide neg abs exp log sqrt rsqrt pow pow_ square
clamp clamp_ clamp_min clamp_max clip sin cos erf reciprocal sign
__add__ __radd__ __iadd__ __sub__ __rsub__ __isub__ __mul__ __rmul__ __imul__ __truediv__
__rtruediv__ __itruediv__ __neg__ __pow__ __rpow__ __abs__
where maximum minimum lerp addcmul addcdiv
""".split()
_ACTIVATIONS = """
relu relu_ relu6 gelu silu silu_ sigmoid sigmoid_ tanh tanh_ hardtanh hardtanh_ hardswish hardswish_
hardsigmoid hardsigmoid_ leaky_relu leaky_relu_ elu elu_ selu selu_ celu celu_ softplus mish prelu
rrelu threshold threshold_ logsigmoid softsign tanhshrink hardshrink softshrink glu_pointwise
""".split()
# dropout (off in the structural probe: every position passes)
_DROPOUT = "dropout dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout".split()
_OFF_BY_DEFAULT = ("alpha_dropout", "feature_alpha_dropout")     # F.alpha_dropout(..., training=False)
# casts, copies and views of values: nothing moves
_CASTS = "dropout_ contiguous clone float double half bfloat16 type requires_grad_".split()
# x.to(y), x.type_as(y): x's values; y lends its dtype and device only
_MOVES = "to type_as cpu cuda".split()
# ops whose bool result is a mask of the data: traced like values (the positions a mask is
# computed from are read by whatever it selects or fills), though no gradient passes them
MASKS = """
gt lt ge le eq ne greater less greater_equal less_equal not_equal
__gt__ __lt__ __ge__ __le__ __eq__ __ne__
logical_and logical_or logical_xor logical_not __and__ __or__ __xor__ __invert__ __rand__ __ror__ __rxor__
bitwise_and bitwise_or bitwise_xor bitwise_not isnan isinf isfinite isposinf isneginf signbit
""".split()
_CONSTANTS = "fill_ zero_ zeros_like ones_like full_like empty_like".split()
# x.new_zeros(size) and its kin: a tensor of constants in x's dtype and device, read from no
# data, as torch.zeros is (untraced: adding one to data adds no position, an output built
# from them alone does not depend on the input); new_tensor(data) copies data
_NEW = "new_zeros new_ones new_full new_empty new_empty_strided".split()
# in-place dunders (``add_`` and the like say so by their trailing underscore)
_INPLACE_DUNDERS = "__iadd__ __isub__ __imul__ __itruediv__ __ipow__ __iand__ __ior__".split()

# the answers on meta tensors: arithmetic, activations (and their in-place forms), dropout
_META = {k: meta.binary(k, False) for k in ("add", "sub", "mul", "div")}
_META.update({k + "_": meta.binary(k, True) for k in ("add", "sub", "mul", "div")})
for _dunder, _k in (("add", "add"), ("sub", "sub"), ("mul", "mul"), ("truediv", "div")):
    _META[f"__{_dunder}__"] = meta.binary(_k, False)
    _META[f"__i{_dunder}__"] = meta.binary(_k, True)
_META["__radd__"] = meta.binary("add", False)
_META["__rmul__"] = meta.binary("mul", False)
for _k, (_names, _defaults) in {   # name -> (extra argument names, their defaults)
    "relu": (("inplace",), (False,)),
    "relu6": (("inplace",), (False,)),
    "hardtanh": (("min_val", "max_val", "inplace"), (-1.0, 1.0, False)),
    "silu": (("inplace",), (False,)),
    "gelu": (("approximate",), ("none",)),
    "sigmoid": ((), ()),
    "tanh": ((), ()),
    "hardswish": (("inplace",), (False,)),
    "hardsigmoid": (("inplace",), (False,)),
    "leaky_relu": (("negative_slope", "inplace"), (0.01, False)),
    "elu": (("alpha", "inplace"), (1.0, False)),
    "mish": (("inplace",), (False,)),
    "softplus": (("beta", "threshold"), (1.0, 20.0)),
}.items():
    _META[_k], _META[_k + "_"] = meta.activation(
        _names, _defaults, check=(lambda lo, hi, inplace: lo <= hi) if _k == "hardtanh" else None)
_META["dropout"] = meta.dropout(None)
for _n in (1, 2, 3):
    _META[f"dropout{_n}d"] = meta.dropout(_n + 2)
del _dunder, _k, _names, _defaults, _n


def dropout_off(func, args, kwargs):
    """The structural probe's dropout: the same call with ``training=False`` (every position
    passes; a random drop could hide one), unless ``p = 1`` drops everything anyway."""
    p = args[1] if len(args) > 1 else kwargs.get("p", 0.5)
    if isinstance(p, (int, float)) and p >= 1:
        return func, args, kwargs
    if len(args) > 2:
        args = (*args[:2], False, *args[3:])
    else:
        kwargs = {**kwargs, ("train" if "train" in kwargs else "training"): False}
    return func, args, kwargs


_PRODUCTS = ("mul", "__mul__", "__rmul__", "mul_", "__imul__")


def both_surrogate(func, args, kwargs):
    """The structural probe's ``maximum(x, y)`` (and ``minimum``, ``max(x, y)``): ``x + y``,
    whose gradient reaches both inputs at every position (the max's reaches only the larger,
    while the forward reads both).

    >>> import torch
    >>> fn, a, k = both_surrogate(torch.maximum, (torch.ones(2), torch.zeros(2)), {})
    >>> fn(*a, **k).tolist()
    [1.0, 1.0]
    """
    def both(x, other=None, **kw):
        return x + (kw.pop("other") if other is None else other)
    return both, args, kwargs


_BOTH = ("maximum", "minimum")


def _record(name: str) -> Op:
    rule = (functools.partial(dropped, training=name not in _OFF_BY_DEFAULT) if name in _DROPOUT
            else where if name == "where" else elementwise)
    return Op(name, rule, meta=_META.get(name), inplace=name in _INPLACE_DUNDERS,
              surrogate=dropout_off if name in _DROPOUT else both_surrogate if name in _BOTH else None,
              gradient=name not in MASKS,
              scales=name in _PRODUCTS)


RECORDS = [_record(n) for n in _ARITHMETIC + _ACTIVATIONS + _DROPOUT + _CASTS + MASKS]
RECORDS += [
    *(Op(n, cast, drops=True) for n in _MOVES),
    Op("detach", elementwise, gradient=False),
    Op("detach_", gradient=False),     # no rule (unknown), but it stops gradients
    Op("masked_fill", elementwise), Op("masked_fill_", elementwise),
    Op("copy_", copy_from, overwrites=True, drops=True),
    *(Op(n, constant, overwrites=n in ("fill_", "zero_"), drops=True) for n in _CONSTANTS),
    *(Op(n, kind=QUERY) for n in _NEW),
    Op("new_tensor", copied, drops=True),     # x.new_tensor(data): x lends its dtype and device
    Op("batch_norm", batch_norm, meta=meta.batch_norm, fixed_layout=True),
    Op("local_response_norm", across_channels),
    *(Op(n, inplace=True) for n in ("__ipow__", "__iand__", "__ior__") if n not in _ARITHMETIC),
]
