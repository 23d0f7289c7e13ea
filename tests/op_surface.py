"""torch's op surface, applied one op at a time after a conv, judged against the oracle.

The surface is every function and method of ``torch.overrides.get_testing_overrides()`` plus
the members of ``torch.fft``, ``torch.special`` and ``torch.nn.functional``. For each op this
module draws arguments that fit a float feature map (from the op's ATen schema or its Python
signature, by type and by name: dims, sizes, scalars, index tensors, masks, a second data
tensor...), builds a tiny model ``conv -> op -> back to (N, C, *spatial)`` in one of four
layouts (1D and 2D, channels first and last), and compares what ``rfprobe.analyze`` says of one
output unit with the perturbation oracle (``tests/oracle.py``, which imports nothing from
rfprobe) in both of its modes.

Outcomes of one case (an op, its arguments, a layout and a unit):

* ``followed``: rfprobe's bounded set is the oracle's (``global`` where the oracle moves the
  whole input), or rfprobe says the output does not depend on the input and no perturbation
  moves it;
* ``refused``: an ``RFProbeError`` (not an ``InternalError``) whose message names the op;
* ``over``: ``global`` where the oracle reads a bounded part (listed, not a failure);
* ``unjudged``: an op that no mode of the oracle can judge: rfprobe's set holds the oracle's
  but is larger for an op of ``NO_MODE`` (an equality of continuous values, isnan...), the op
  draws random values, or the oracle's float64 copy cannot run the call;
* ``failed``: anything else: a set that misses what the oracle moves, a larger set with status
  ``ok`` or ``varies``, a raw exception, an ``InternalError``, a refusal that does not name
  the op.

Ops whose arguments no draw fits a feature map (integer-only ops, factories, 2-D matrix ops
on a 3-D map...) are ``not applicable``, with the error of their first draw.

``python -m tests.op_surface`` writes ``docs/ops.md`` (the short profile's coverage);
``tests/test_op_surface.py`` runs the profiles and fails when that page is stale.

>>> e = entry("torch.add")
>>> e.traced, [p.kind for p in params_of(e)[0]][:2]
('add', ['tensor', 'tensor'])
"""
from __future__ import annotations

import inspect
import math
import random
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.oracle import MODES, each_position

LAYOUTS = ("1d", "1d-last", "2d", "2d-last")
CHANNELS = 4
SPATIAL = {1: (9,), 2: (5, 6)}     # small: the oracle tries every position alone; sizes differ from C
IN_CHANNELS = 2


# ----------------------------------------------------------------------------- the surface
@dataclass(frozen=True)
class Entry:
    """One op of the surface: ``key`` its public name (``torch.add``, ``Tensor.add``,
    ``Tensor.real``, ``F.pad``), ``func`` what is called, ``traced`` the name rfprobe's tracer
    sees (``func.__name__``; a property's own name)."""

    key: str
    func: Callable
    traced: str
    prop: bool = False

    def __call__(self, *args, **kwargs):
        if self.prop:
            return self.func(args[0])
        return self.func(*args, **kwargs)


# namespaces searched, in order, for an override's public name
_SPACES = (("Tensor", torch.Tensor), ("torch", torch), ("F", F), ("torch.fft", torch.fft),
           ("torch.special", torch.special), ("torch.linalg", torch.linalg), ("torch.nn.init", nn.init),
           ("torch.sparse", torch.sparse), ("torch.nested", torch.nested))
# never called: what they do reaches outside the tensor (processes, shared memory, devices)
EXCLUDED = {
    "torch.choose_qparams_optimized": "a quantization search that runs for many minutes with drawn arguments",
    "torch.native_batch_norm": "crashes the interpreter (segmentation fault) with drawn arguments",
    "torch.fused_moving_avg_obs_fake_quant": "crashes the interpreter (segmentation fault) with drawn arguments",
    "torch.distributed.*": "collectives need a process group",
    "Tensor.share_memory_": "moves the storage to shared memory",
    "Tensor.pin_memory": "needs an accelerator",
    "Tensor.record_stream": "needs an accelerator stream",
    "Tensor.backward": "autograd, not a forward op",
    "Tensor.register_hook": "autograd, not a forward op",
    "Tensor.register_post_accumulate_grad_hook": "autograd, not a forward op",
    "torch.autograd.*": "autograd, not a forward op",
    "torch.lstm": "the draw passes a feature map as its flat weights, which torch reads past their end: "
                  "the output is random or it raises, run to run (tests/test_recurrent.py holds its rule)",
}


def _excluded(key: str) -> bool:
    last = key.split(".")[-1]
    if last.startswith("_") and not (last.startswith("__") and last.endswith("__")):
        return True         # private (torch._foo, Tensor._bar): models call the public op
    return key in EXCLUDED or any(k.endswith("*") and key.startswith(k[:-1]) for k in EXCLUDED)


def _public_names() -> dict:
    names = {}
    for space, ns in _SPACES:
        for attr in dir(ns):
            if space != "Tensor" and attr.startswith("_"):
                continue
            try:
                obj = getattr(ns, attr)
            except Exception:
                continue
            if space == "Tensor" and type(obj).__name__ in ("getset_descriptor", "property"):
                obj = obj.__get__
            try:
                names.setdefault(obj, f"{space}.{attr}")
            except TypeError:       # unhashable
                continue
    return names


PRIVATE: set[str] = set()     # private names met by surface(): counted among the excluded


def surface() -> list[Entry]:
    """Every op of the surface once, sorted by key (excluded ones left out)."""
    names = _public_names()
    funcs = list(torch.overrides.get_testing_overrides())
    for ns in (torch.fft, torch.special, F):
        for attr in dir(ns):
            obj = getattr(ns, attr)
            if not attr.startswith("_") and callable(obj) and not isinstance(obj, type) and \
                    getattr(obj, "__module__", "") and "torch" in str(getattr(obj, "__module__", "")):
                funcs.append(obj)
    entries = {}
    for f in funcs:
        try:
            key = names.get(f)
        except TypeError:
            key = None
        if key is None:
            key = f"{getattr(f, '__module__', None) or type(f).__name__}.{getattr(f, '__qualname__', f)}"
        if _excluded(key) or key in entries or key.startswith("F.") and key[2:] in _F_HELPERS:
            last = key.split(".")[-1]
            if last.startswith("_") and not last.endswith("__"):
                PRIVATE.add(key)
            continue
        prop = key.startswith("Tensor.") and getattr(f, "__name__", "") == "__get__"
        traced = key.split(".")[-1] if prop else getattr(f, "__name__", key.split(".")[-1])
        entries[key] = Entry(key, f, traced, prop)
    return [entries[k] for k in sorted(entries)]


_F_HELPERS = {"Optional", "assert_int_or_pair", "boolean_dispatch", "handle_torch_function", "has_torch_function",
              "has_torch_function_unary", "has_torch_function_variadic", "Callable", "TYPE_CHECKING"}


_BY_KEY: dict[str, Entry] = {}


def entry(key: str) -> Entry:
    """The surface's entry for ``key`` (``'torch.add'``, ``'Tensor.real'``...)."""
    if not _BY_KEY:
        _BY_KEY.update((e.key, e) for e in surface())
    return _BY_KEY[key]


# ----------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class Param:
    name: str
    kind: str              # tensor tensors int ints float floats scalar bool str dtype skip var
    optional: bool = False
    default: Any = None
    kwonly: bool = False


def _kind_of_schema(arg) -> str | None:
    t = str(arg.type)
    name = arg.name
    if "Dimname" in t or t.startswith("complex") or "Storage" in t or "Stream" in t or "Any" in t:
        return None
    if name in ("dtype", "out_dtype"):
        return "dtype"
    if name in ("layout", "device", "memory_format", "pin_memory", "generator") or "Generator" in t \
            or "Device" in t or "Layout" in t:
        return "skip"
    base = t[len("Optional["):-1] if t.startswith("Optional[") else t
    return {"Tensor": "tensor", "List[Tensor]": "tensors", "List[Optional[Tensor]]": "tensors",
            "int": "int", "List[int]": "ints", "float": "float", "List[float]": "floats",
            "number": "scalar", "bool": "bool", "str": "str", "List[bool]": None}.get(base)


def _schemas(name: str) -> list:
    try:
        return torch._C._jit_get_schemas_for_operator("aten::" + name)
    except Exception:
        return []


def _from_schema(schema) -> list[Param] | None:
    args = schema.arguments
    if not args or str(args[0].type) not in ("Tensor", "Optional[Tensor]", "List[Tensor]"):
        return None
    out = []
    for a in args:
        if a.is_out or a.name in ("out", "out0", "out1", "out2"):
            return None
        kind = _kind_of_schema(a)
        if kind is None:
            if a.has_default_value():
                continue
            return None
        nullable = str(a.type).startswith("Optional[")
        out.append(Param(a.name, kind, a.has_default_value() or nullable,
                         a.default_value if a.has_default_value() else None, a.kwarg_only))
    return out


_ANNOT = (("Tensor]", "tensors"), ("list[Tensor", "tensors"), ("List[Tensor", "tensors"),
          ("Tensor", "tensor"), ("list[int]", "ints"), ("List[int]", "ints"), ("BroadcastingList", "ints"),
          ("list[float]", "floats"), ("List[float]", "floats"), ("bool", "bool"), ("float", "float"),
          ("int", "int"), ("str", "str"), ("dtype", "dtype"), ("Generator", "skip"))
_BY_NAME = {"input": "tensor", "self": "tensor", "tensor": "tensor", "other": "tensor", "x": "tensor",
            "weight": "tensor", "bias": "tensor", "target": "tensor", "mask": "tensor", "tensors": "tensors",
            "dim": "int", "dims": "ints", "keepdim": "bool", "split_size": "int", "split_size_or_sections": "int",
            "indices_or_sections": "int", "sections": "int", "p": "float", "eps": "float", "inplace": "bool",
            "training": "bool", "train": "bool", "window": "tensor", "n_fft": "int", "hop_length": "int",
            "win_length": "int", "generator": "skip", "dtype": "dtype", "return_inverse": "bool",
            "return_counts": "bool", "sorted": "bool", "shape": "ints", "size": "ints", "equation": "str",
            "a": "tensor", "b": "tensor", "A": "tensor", "B": "tensor", "lengths": "tensor"}


def _from_signature(f) -> list[Param] | None:
    try:
        sig = inspect.signature(f)
    except (TypeError, ValueError):
        return None
    out = []
    for p in sig.parameters.values():
        if p.kind == p.VAR_KEYWORD:
            continue
        if p.kind == p.VAR_POSITIONAL:
            out.append(Param(p.name, "var"))
            continue
        if p.name in ("out",):
            continue
        ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", None) \
            if p.annotation is not inspect.Parameter.empty and isinstance(p.annotation, type) else \
            (str(p.annotation) if p.annotation is not inspect.Parameter.empty else "")
        kind = next((k for needle, k in _ANNOT if ann and needle in ann), None)
        has_default = p.default is not inspect.Parameter.empty
        if kind is None:
            kind = _BY_NAME.get(p.name)
        if kind is None and has_default and p.default is not None:
            kind = {bool: "bool", int: "int", float: "float", str: "str"}.get(type(p.default))
        if kind is None:
            if has_default:
                continue
            kind = "tensor" if not out else "unknown"
        out.append(Param(p.name, kind, has_default, p.default if has_default else None,
                         p.kind == p.KEYWORD_ONLY))
    return out


_DUNDER = {"__radd__": "add", "__rmul__": "mul", "__rsub__": "rsub", "__rtruediv__": "div",
           "__rdiv__": "div", "__rpow__": "pow", "__rmatmul__": "matmul", "__rfloordiv__": "floor_divide",
           "__rmod__": "remainder", "__floordiv__": "floor_divide", "__truediv__": "div", "__div__": "div",
           "__idiv__": "div_", "__itruediv__": "div_", "__ifloordiv__": "floor_divide_", "__imod__": "remainder_",
           "__add__": "add", "__sub__": "sub", "__mul__": "mul", "__pow__": "pow", "__matmul__": "matmul",
           "__mod__": "remainder", "__iadd__": "add_", "__isub__": "sub_", "__imul__": "mul_",
           "__ipow__": "pow_", "__neg__": "neg", "__abs__": "abs", "__invert__": "bitwise_not",
           "__rand__": "__and__", "__ror__": "__or__", "__rxor__": "__xor__", "__rlshift__": "__lshift__",
           "__rrshift__": "__rshift__"}


def params_of(e: Entry) -> list[list[Param]]:
    """The call signatures to draw from (one per ATen overload that takes a tensor first, or
    the Python signature), each a list of parameters."""
    if e.prop:
        return [[Param("self", "tensor")]]
    name = getattr(e.func, "__name__", e.traced)
    sig = _from_signature(e.func)
    found = [p for s in _schemas(_DUNDER.get(name, name)) if (p := _from_schema(s)) is not None]
    if sig is not None and not (sig and sig[0].kind == "var" and found):
        # a Python signature; its untyped parameters take the schema's kinds where one matches
        kinds = {p.name: p.kind for ps in found for p in ps}
        sig = [Param(p.name, kinds.get(p.name, p.kind), p.optional, p.default, p.kwonly)
               if p.kind in ("unknown", "tensor") and p.name in kinds else p for p in sig]
        sig = [p for p in sig if p.kind != "unknown" or not p.optional]
        return [sig] if not any(p.kind == "unknown" for p in sig) else found
    return found


# ----------------------------------------------------------------------------- drawing a call
@dataclass(frozen=True)
class Data:
    """A tensor computed in the model: ``y`` (the conv's output, the op's input), ``y2`` (a
    second, dilated conv of the same input), ``mask`` (``y2 > 0``)."""

    which: str


@dataclass(frozen=True)
class Part:
    """``Data(which)[index]``: a piece of a computed tensor (the value of ``y[index] = ...``)."""

    which: str
    index: tuple


@dataclass(frozen=True)
class Const:
    """A constant tensor, held by the model as a buffer (so the oracle's float64 copy casts it)."""

    value: torch.Tensor


@dataclass
class Draw:
    """One call: positional and keyword arguments (``Data``/``Const``/lists of them/plain
    values), which output to keep, and how the feature map is prepared (``pre``)."""

    args: list
    kwargs: dict
    pick: int = 0
    pre: str = ""          # '' | 'fold' (batch and channels folded: (N*C, *spatial)) | 'complex'
    high: int = 0          # an output of higher rank: 0 flattens leading dims, 1 sums trailing ones

    def describe(self) -> str:
        def show(v):
            if isinstance(v, Data):
                return v.which
            if isinstance(v, Part):
                return f"{v.which}[{show(v.index)[1:-1]}]"
            if isinstance(v, Const):
                return f"const{tuple(v.value.shape)}:{str(v.value.dtype)[6:]}"
            if isinstance(v, (list, tuple)):
                inner = ", ".join(show(x) for x in v)
                return f"[{inner}]" if isinstance(v, list) else f"({inner}{',' if len(v) == 1 else ''})"
            if isinstance(v, slice):
                return ":".join("" if x is None else str(x) for x in (v.start, v.stop, v.step))
            if v is Ellipsis:
                return "..."
            return repr(v)
        parts = [show(a) for a in self.args] + [f"{k}={show(v)}" for k, v in self.kwargs.items()]
        extra = (f" pre={self.pre}" if self.pre else "") + (f" pick={self.pick}" if self.pick else "")
        return f"({', '.join(parts)}){extra}"


class Ctx:
    """The feature map the op receives: its shape, where its channels and spatial axes sit."""

    def __init__(self, layout: str, pre: str = ""):
        self.dims = 1 if layout.startswith("1d") else 2
        self.last = layout.endswith("last")
        self.pre = pre
        sp = SPATIAL[self.dims]
        if pre == "fold":                       # (N*C, *spatial)
            self.shape = (CHANNELS, *sp)
            self.channel, self.spatial = None, tuple(range(1, 1 + self.dims))
        elif self.last:
            self.shape = (1, *sp, CHANNELS)
            self.channel, self.spatial = 1 + self.dims, tuple(range(1, 1 + self.dims))
        else:
            self.shape = (1, CHANNELS, *sp)
            self.channel, self.spatial = 1, tuple(range(2, 2 + self.dims))
        self.rank = len(self.shape)

    def broadcast(self) -> tuple[int, ...]:
        """A per-channel shape that broadcasts against the map."""
        if self.channel is None:
            return (self.shape[0],) + (1,) * self.dims
        return tuple(n if d == self.channel else 1 for d, n in enumerate(self.shape))


def _dims(ctx: Ctx, rng: random.Random) -> int:
    pool = list(ctx.spatial) * 3 + ([ctx.channel] * 2 if ctx.channel is not None else []) + [0]
    d = rng.choice(pool)
    return d - ctx.rank if rng.random() < 0.5 else d


def _data(rng: random.Random, drawn: dict) -> Data:
    """A second (third) data tensor, one not used yet in this call: two operands computed alike
    cancel (``addcdiv(y, y2, y2)`` adds a constant) and would hide what one of them reads."""
    used = drawn.setdefault("_data", set())
    which = next((w for w in rng.sample(["y2", "y3"], 2) if w not in used), "y2")
    used.add(which)
    return Data(which)


def _tensor(ctx: Ctx, name: str, rng: random.Random, drawn: dict):
    """A tensor argument other than the feature map. Constants are fixed values the oracle
    keeps, so none makes the op degenerate: no constant mask varies over space (rfprobe reads
    no constant's values, so a fixed pattern of masked positions is beyond what it claims),
    clamp bounds are ordered, windows have few zeros."""
    shape = ctx.shape
    g = torch.Generator().manual_seed(rng.randrange(1 << 30))
    if name in ("index", "indices"):
        dim = drawn.get("dim", rng.choice(ctx.spatial))
        dim = dim if isinstance(dim, int) else ctx.spatial[-1]
        n = shape[dim]
        if rng.random() < 0.5:
            k = rng.randint(1, n + 2)
            return Const(torch.tensor([rng.randrange(n) for _ in range(k)], dtype=torch.long))
        return Const(torch.randint(0, n, shape, generator=g))
    if name in ("mask", "condition"):
        return Data("mask") if rng.random() < 0.7 else Const(torch.rand(ctx.broadcast(), generator=g) < 0.5)
    if name in ("window",):
        n = int(drawn.get("win_length") or drawn.get("n_fft") or 4)
        return Const(rng.choice([torch.hann_window(n), torch.hann_window(n) + 0.1, torch.ones(n)]))
    if name in ("min", "min_val", "lower"):
        return Data("low") if rng.random() < 0.4 else Const(-torch.rand(ctx.broadcast(), generator=g) - 0.2)
    if name in ("max", "max_val", "upper"):
        return Data("high") if rng.random() < 0.4 else Const(torch.rand(ctx.broadcast(), generator=g) + 0.2)
    if name in ("running_mean", "running_var", "weight", "bias", "mean", "var", "invstd", "save_mean",
                "save_invstd") and rng.random() < 0.6:
        return Const(torch.rand(shape[ctx.channel] if ctx.channel is not None else shape[0], generator=g) + 0.5)
    choices = ["data", "same", "channel", "scalar", "last", "matrix", "kernel"]
    how = rng.choice(choices[:4] * 3 + choices[4:])
    if how == "data":
        return _data(rng, drawn)
    if how == "same":
        return Const(torch.rand(shape, generator=g) + 0.5)
    if how == "channel":
        return Const(torch.rand(ctx.broadcast(), generator=g) + 0.5)
    if how == "scalar":
        return Const(torch.tensor(rng.choice([0.5, 2.0, 1.5])))
    if how == "last":
        return Const(torch.rand(shape[-1], generator=g) + 0.5)
    if how == "matrix":
        return Const(torch.rand(shape[-1], rng.choice([shape[-1], 3]), generator=g) + 0.5)
    c = shape[ctx.channel] if ctx.channel is not None else 1
    return Const(torch.rand(c, c, *([3] * ctx.dims), generator=g) * 0.2)


_SIZES = {"n_fft": (4, 6, 8), "hop_length": (1, 2, 3), "win_length": (None,), "upscale_factor": (2,),
          "downscale_factor": (2,), "groups": (1, 2), "chunks": (2, 3), "k": (1, 2, 3), "n": (1, 2, 3),
          "diagonal": (0, 1, -1), "offset": (0, 1), "kernel_size": (2, 3), "stride": (1, 2), "padding": (0, 1),
          "dilation": (1, 2), "output_size": (2, 3), "repeats": (2,), "shifts": (1, -2, 3), "size": (2, 3),
          "step": (1, 2), "start": (0, 1), "length": (1, 2), "end": (3,), "split_size": (1, 2, 3),
          "sections": (2,), "bins": (3,), "num_classes": (3,), "exponent": (2,), "decimals": (0, 1),
          "norm_type": (2,), "blank": (0,), "padding_idx": (None,), "correction": (0, 1),
          "unbiased": (True,), "margin": (1,), "ignore_index": (-100,), "momentum": (0.1,)}
_FLOATS = {"p": (2.0, 1.0, 0.5), "eps": (1e-5,), "alpha": (0.5, 2.0), "negative_slope": (0.1,), "lambd": (0.5,),
           "beta": (1.0, 2.0), "threshold": (0.5,), "value": (0.5, -1.0), "min": (-0.5, 0.2), "max": (0.5, 1.0),
           "min_val": (-0.5,), "max_val": (0.5,), "scale_factor": (2.0, 0.5), "momentum": (0.1,),
           "upper": (0.3,), "lower": (0.1,), "q": (0.25, 0.5), "exponent": (2.0, 0.5), "other": (0.5, 2.0),
           "tau": (1.0,), "weight": (0.3,), "end": (2.0,), "rtol": (1e-5,), "atol": (1e-8,), "ord": (2.0, 1.0)}
_STRS = {"mode": ("constant", "reflect", "replicate", "circular", "nearest", "linear", "bilinear", "bicubic",
                  "area", "nearest-exact", "reduced", "complete", "r", "trilinear"),
         "reduction": ("mean", "sum", "none"), "rounding_mode": (None, "trunc", "floor"),
         "norm": (None, "ortho", "forward", "backward"), "pad_mode": ("reflect", "constant"),
         "approximate": ("none", "tanh"), "side": ("left", "right"), "interpolation": ("linear", "nearest", "midpoint"),
         "padding": ("same", "valid"), "padding_mode": ("zeros", "border", "reflection"), "UPLO": ("L", "U"),
         "ord": ("fro", "nuc"), "driver": (None,), "indexing": ("ij", "xy"), "reduce": ("sum", "prod", "mean", "amax")}


def _int(ctx: Ctx, p: Param, rng: random.Random):
    name = p.name
    if name in ("dim", "dim0", "dim1", "dim2", "axis", "axis0", "axis1", "start_dim", "end_dim", "source",
                "destination", "sorted_dim", "dimension", "chunk_dim"):
        return _dims(ctx, rng)
    if name in _SIZES:
        return rng.choice(_SIZES[name])
    if name in ("N", "C", "HxW", "group"):      # native_group_norm(x, w, b, N, C, HxW, group, eps)
        return {"N": ctx.shape[0], "C": ctx.shape[1], "HxW": math.prod(ctx.shape[2:]), "group": rng.choice((1, 2))}[name]
    return rng.choice((1, 2, 3, 0, -1))


def _ints(ctx: Ctx, p: Param, rng: random.Random):
    name, d = p.name, ctx.dims
    if name in ("dim", "dims", "axis", "axes", "source", "destination"):
        k = rng.choice((1, 1, 2))
        pool = list(ctx.spatial) + ([ctx.channel] if ctx.channel is not None else [])
        return tuple(rng.sample(pool, min(k, len(pool))))
    if name in ("size", "shape", "sizes"):
        shape = list(ctx.shape)
        way = rng.choice(("same", "same", "minus", "merge", "split", "grow"))
        if way == "minus":
            shape[rng.randrange(len(shape))] = -1
        elif way == "merge" and ctx.dims == 2:
            shape = shape[:ctx.spatial[0]] + [shape[ctx.spatial[0]] * shape[ctx.spatial[1]]] + shape[ctx.spatial[1] + 1:]
        elif way == "split" and ctx.channel is not None:
            shape = shape[:ctx.channel] + [2, shape[ctx.channel] // 2] + shape[ctx.channel + 1:]
        elif way == "grow":
            shape = [2] + shape
        return tuple(shape)
    if name in ("pad",):
        return tuple(rng.choice((0, 1, 2, -1)) for _ in range(2 * rng.randint(1, d)))
    if name in ("dims_permute", "permutation"):
        return tuple(rng.sample(range(ctx.rank), ctx.rank))
    if name in ("kernel_size", "stride", "padding", "dilation", "output_size", "output_padding"):
        lo = {"kernel_size": (2, 3), "stride": (1, 2), "padding": (0, 1), "dilation": (1, 2),
              "output_size": (2, 3), "output_padding": (0,)}[name]
        return tuple(rng.choice(lo) for _ in range(d))
    if name in ("shifts",):
        return (rng.choice((1, -2, 3)),)
    if name in ("repeats",):
        return tuple(rng.choice((1, 1, 2)) for _ in range(ctx.rank))
    if name in ("split_size", "split_sizes", "split_size_or_sections", "sections", "indices", "tensor_indices_or_sections"):
        return (1, 2)
    if name in ("normalized_shape",):
        return tuple(ctx.shape[-rng.randint(1, 2):])
    if name in ("dims",) or "perm" in name:
        return tuple(rng.sample(range(ctx.rank), ctx.rank))
    n = rng.randint(1, ctx.rank)
    return tuple(rng.choice((1, 2, 3)) for _ in range(n))


def _as_tensors(v, rng: random.Random):
    """Sometimes ints as 0-dim tensors, as models compute sizes (Encodec's pad amounts)."""
    if rng.random() >= 0.1:
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return torch.tensor(v)
    if isinstance(v, tuple) and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return tuple(torch.tensor(x) for x in v)
    return v


def _value(ctx: Ctx, p: Param, rng: random.Random, drawn: dict):
    k = p.kind
    if k == "tensor":
        return _tensor(ctx, p.name, rng, drawn)
    if k == "tensors":
        return [Data("y"), _data(rng, drawn) if rng.random() < 0.5 else _tensor(ctx, "same", rng, drawn)]
    if k == "int":
        return _as_tensors(_int(ctx, p, rng), rng)
    if k == "ints":
        if p.name == "dims" and rng.random() < 0.3:
            return tuple(rng.sample(range(ctx.rank), ctx.rank))
        return _as_tensors(_ints(ctx, p, rng), rng)
    if k in ("float", "scalar"):
        return rng.choice(_FLOATS.get(p.name, (0.5, 2.0, -1.5, 3)))
    if k == "floats":
        return tuple(rng.choice((2.0, 0.5)) for _ in range(ctx.dims))
    if k == "bool":
        if p.name in ("training", "train"):
            return rng.random() < 0.1
        return rng.random() < 0.5
    if k == "str":
        return rng.choice(_STRS.get(p.name, ("mean",)))
    if k == "dtype":
        return rng.choice((None, torch.float64))
    return p.default


def draw(e: Entry, sig: list[Param], ctx: Ctx, rng: random.Random) -> Draw:
    """One random call of ``e`` with signature ``sig`` on the feature map ``ctx`` describes."""
    tensors = [i for i, p in enumerate(sig) if p.kind == "tensor"]
    named = [i for i in tensors if sig[i].name in ("self", "input", "x", "a", "A", "tensor", "input1")]
    home = named[0] if named and rng.random() < 0.8 else (rng.choice(tensors) if tensors else 0)
    if sig and sig[0].kind in ("tensors", "var"):
        home = -1
    args, kwargs, drawn = [], {}, {}
    for i, p in enumerate(sig):           # scalars first: an index tensor needs its dim
        if p.kind not in ("tensor", "tensors", "var", "skip"):
            drawn[p.name] = _value(ctx, p, rng, drawn)
    optional_rate = rng.choice((0.0, 0.3, 0.6))
    last_pos = -1
    values = {}
    for i, p in enumerate(sig):
        if p.kind == "skip":
            continue
        if i == home:
            values[i] = Data("y")
        elif p.kind == "var":
            other = _data(rng, drawn) if rng.random() < 0.5 else _tensor(ctx, "same", rng, drawn)
            values[i] = [Data("y"), other] if i == 0 or home == -1 else [other]
        elif p.optional and rng.random() >= optional_rate and not (p.kind == "tensor" and i == home):
            continue
        elif p.kind == "tensors" and i == 0:
            values[i] = [Data("y"), _data(rng, drawn) if rng.random() < 0.5 else _tensor(ctx, "same", rng, drawn)]
        elif p.kind in ("tensor", "tensors"):
            values[i] = _value(ctx, p, rng, drawn)
        else:
            values[i] = drawn[p.name]
        if not p.kwonly:
            last_pos = i
    for i, p in enumerate(sig):
        if i not in values and (p.kind == "skip" or i > last_pos or p.kwonly):
            continue
        v = values.get(i, p.default)
        if p.kind == "var":
            args.extend(v)
        elif p.kwonly or (i > last_pos):
            kwargs[p.name] = v
        else:
            args.append(v)
    return Draw(args, kwargs, pick=rng.randrange(2), high=rng.randrange(2))


# ----------------------------------------------------------------------------- special recipes
def _index_draws(ctx: Ctx, rng: random.Random) -> Draw:
    """``y[index]``: slices of spatial axes (crops, steps), ints, None, ..., index tensors, masks."""
    d = rng.choice(ctx.spatial)
    n = ctx.shape[d]
    way = rng.choice(("crop", "crop", "step", "int", "none", "ellipsis", "tensor", "mask", "list", "negstep"))
    idx: list = [slice(None)] * ctx.rank
    if way == "crop":
        idx[d] = slice(rng.randint(0, 2), rng.randint(n - 2, n))
    elif way == "step":
        idx[d] = slice(rng.randint(0, 1), None, 2)
    elif way == "negstep":
        return Draw([Data("y"), (Ellipsis, slice(None, None, 1))], {})
    elif way == "int":
        target = ctx.channel if ctx.channel is not None and rng.random() < 0.5 else d
        idx[target] = rng.randrange(ctx.shape[target])
    elif way == "none":
        idx.insert(rng.randrange(ctx.rank + 1), None)
    elif way == "ellipsis":
        return Draw([Data("y"), (Ellipsis, slice(1, None))], {})
    elif way == "tensor":
        idx[d] = Const(torch.tensor([rng.randrange(n) for _ in range(3)]))
    elif way == "list":
        c = ctx.channel if ctx.channel is not None else d
        idx[c] = Const(torch.tensor([0, ctx.shape[c] - 1]))
    else:
        return Draw([Data("y"), Data("mask")], {})
    return Draw([Data("y"), tuple(idx)], {})


def _setitem_draws(ctx: Ctx, rng: random.Random) -> Draw:
    d = rng.choice(ctx.spatial)
    n = ctx.shape[d]
    idx: list = [slice(None)] * ctx.rank
    way = rng.choice(("spatial", "channel", "all", "mask"))
    if way == "spatial":
        idx[d] = slice(1, n - 1)
    elif way == "channel" and ctx.channel is not None:
        idx[ctx.channel] = slice(0, 2)
    elif way == "mask":
        return Draw([Data("y"), Data("mask"), rng.choice([0.5, Const(torch.tensor(2.0))])], {})
    value = rng.choice(["scalar", "data"])
    if value == "data":
        return Draw([Data("y"), tuple(idx), Part("y2", tuple(idx))], {})
    return Draw([Data("y"), tuple(idx), 0.5], {})


def _einsum_draws(ctx: Ctx, rng: random.Random) -> Draw:
    """``torch.einsum(equation, ...)``: a product of two maps, a channel mix, a sum over
    channels or over a spatial axis, a transpose of the spatial axes."""
    letters = "abcdefg"[:ctx.rank]
    c = letters[ctx.channel] if ctx.channel is not None else letters[0]
    s = letters[rng.choice(ctx.spatial)]
    way = rng.choice(("product", "mix", "channels", "axis", "transpose"))
    if way == "product":
        return Draw([f"{letters},{letters}->{letters}", Data("y"), _data(rng, {})], {})
    if way == "mix":
        g = torch.Generator().manual_seed(rng.randrange(1 << 30))
        n = ctx.shape[ctx.channel if ctx.channel is not None else 0]
        return Draw([f"{letters},z{c}->{letters.replace(c, 'z')}", Data("y"), Const(torch.rand(3, n, generator=g))], {})
    if way == "channels":
        return Draw([f"{letters}->{letters.replace(c, '')}", Data("y")], {})
    if way == "axis":
        return Draw([f"{letters}->{letters.replace(s, '')}", Data("y")], {})
    a, b = (letters[d] for d in ctx.spatial[:2]) if len(ctx.spatial) > 1 else (s, s)
    return Draw([f"{letters}->{letters.translate(str.maketrans(a + b, b + a))}", Data("y")], {})


def _pool(y, dims: int):
    """A max pool of ``y`` (kernel 2) with its indices: what a max unpool takes."""
    return (F.max_pool1d if dims == 1 else F.max_pool2d)(y, 2, return_indices=True)


def _unpool_draws(ctx: Ctx, rng: random.Random) -> Draw:
    """``max_unpool(pooled, indices, 2)``: the indices of the matching pool, as the op's contract says."""
    if ctx.last:
        raise ValueError("a max pool of a channels-last map")
    return Draw([Data("pooled"), Data("pool_indices"), 2], {})


RECIPES: dict[str, Callable[[Ctx, random.Random], Draw]] = {
    "torch.einsum": _einsum_draws,
    "F.max_unpool1d": _unpool_draws,
    "F.max_unpool2d": _unpool_draws,
    "Tensor.__getitem__": _index_draws,
    "Tensor.__setitem__": _setitem_draws,
}


# ----------------------------------------------------------------------------- the model
def _materialize(v, env: dict, consts: dict):
    if isinstance(v, Data):
        return env[v.which]() if callable(env[v.which]) else env[v.which]
    if isinstance(v, Part):
        return _materialize(Data(v.which), env, consts)[_materialize(v.index, env, consts)]
    if isinstance(v, Slot):
        return consts[v.name]
    if isinstance(v, list):
        return [_materialize(x, env, consts) for x in v]
    if isinstance(v, tuple):
        return tuple(_materialize(x, env, consts) for x in v)
    return v


@dataclass(frozen=True)
class Slot:
    """Where a ``Const`` sits in the model: buffer ``name`` (survives a deep copy, as an
    object's id would not)."""

    name: str


def _slotted(v, table: dict):
    """``v`` with each ``Const`` replaced by a ``Slot``; ``table`` maps slot names to values."""
    if isinstance(v, Const):
        name = f"c{len(table)}"
        table[name] = v.value
        return Slot(name)
    if isinstance(v, list):
        return [_slotted(x, table) for x in v]
    if isinstance(v, tuple):
        return tuple(_slotted(x, table) for x in v)
    if isinstance(v, Part):
        return Part(v.which, _slotted(v.index, table))
    return v


class OpModel(nn.Module):
    """``conv -> op -> (N, C, *spatial)``: the op applied to a conv's output in one layout."""

    def __init__(self, e: Entry, d: Draw, layout: str):
        super().__init__()
        # the op by its key: a property's getter cannot be deep-copied, and rfprobe copies the model
        self.key, self.d, self.layout = e.key, d, layout
        if e.key:
            _BY_KEY.setdefault(e.key, e)
        self.dims = 1 if layout.startswith("1d") else 2
        self.last = layout.endswith("last")
        conv = nn.Conv1d if self.dims == 1 else nn.Conv2d
        self.conv = conv(IN_CHANNELS, CHANNELS, 3, padding=1)
        self.conv2 = conv(IN_CHANNELS, CHANNELS, 3, padding=2, dilation=2)
        self.conv3 = conv(IN_CHANNELS, CHANNELS, 1)
        table: dict = {}
        self.args = _slotted(list(d.args), table)
        self.kwargs = {k: _slotted(v, table) for k, v in d.kwargs.items()}
        for name, value in table.items():
            self.register_buffer(name, value.clone(), persistent=False)
        self.slots = tuple(table)

    def prepare(self, t, real: bool = False):
        if self.last:
            t = t.movedim(1, -1)
        if self.d.pre == "fold":
            t = t.reshape(-1, *t.shape[2:])
        elif self.d.pre == "complex" and not real:
            # a turn in the complex plane: real and imaginary parts both hold the data
            t = t.to(torch.promote_types(t.dtype, torch.complex64)) * (0.6 + 0.8j)
        return t

    def forward(self, x):
        y = self.prepare(self.conv(x))
        env = {"y": y, "y2": lambda: self.prepare(self.conv2(x)), "y3": lambda: self.prepare(self.conv3(x)),
               "mask": lambda: self.prepare(self.conv2(x), real=True) > 0,
               "low": lambda: self.prepare(self.conv2(x), real=True) - 1.0,
               "high": lambda: self.prepare(self.conv2(x), real=True) + 1.0,
               "pooled": lambda: _pool(y, self.dims)[0], "pool_indices": lambda: _pool(y, self.dims)[1]}
        consts = {name: getattr(self, name) for name in self.slots}
        args = _materialize(self.args, env, consts)
        kwargs = {k: _materialize(v, env, consts) for k, v in self.kwargs.items()}
        z = _BY_KEY[self.key](*args, **kwargs)
        return self.restore(z, y)

    def restore(self, z, y):
        return restore(z, y, self.d, self.dims, self.last, self.conv.weight.dtype)


def restore(z, y, d: Draw, dims: int, last: bool, dtype):
    """The op's output ``z`` as (N, C, *spatial) of the model's rank: the chosen one of several
    outputs, complex as its modulus, bool and int as floats, channels first; a rank one higher
    (or more) flattened or summed, one lower given a channel dim, a scalar added to ``y``."""
    if z is None:
        z = y                       # an in-place op that returns nothing (__setitem__)
    if isinstance(z, (tuple, list)):
        ts = [t for t in z if isinstance(t, torch.Tensor)]
        if not ts:
            raise TypeError("no tensor among the op's results")
        z = ts[d.pick % len(ts)]
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"the op returned {type(z).__name__}")
    if z.is_complex():
        z = z.abs()
    if not z.is_floating_point():
        z = z.to(dtype)
    rank = dims + 2
    if d.pre == "fold":
        if z.dim() < dims:
            return y.reshape(1, -1, *y.shape[1:]) + z.sum()
        return z.reshape(1, -1, *z.shape[z.dim() - dims:])
    if z.dim() > rank:
        lead, trail = z.shape[z.dim() - rank + 1:] == y.shape[1:], z.shape[:rank] == y.shape
        flatten = lead if lead != trail else d.high == 0
        z = z.flatten(0, z.dim() - rank) if flatten else z.sum(tuple(range(rank, z.dim())))
    if z.dim() == rank - 1:
        # the dim the op removed gets size 1 back (a channel: (N, 1, *spatial))
        gone = next((k for k in range(rank) if z.shape == y.shape[:k] + y.shape[k + 1:]), 1 if not last else rank - 1)
        z = z.unsqueeze(gone)
    if z.dim() == rank:
        return z.movedim(-1, 1) if last else z
    base = y.movedim(-1, 1) if last else y
    return base + z.sum()


def input_shape(layout: str) -> tuple[int, ...]:
    return (IN_CHANNELS, *SPATIAL[1 if layout.startswith("1d") else 2])


# ----------------------------------------------------------------------------- finding calls that run
@dataclass
class Case:
    entry: Entry
    layout: str
    draw: Draw
    model: OpModel
    random: bool = False


_ENV: dict = {}


def _env(layout: str, pre: str) -> dict:
    """Real tensors as the model computes them (for a quick call before a model is built)."""
    if (layout, pre) not in _ENV:
        torch.manual_seed(0)
        d = Draw([], {}, pre=pre)
        m = OpModel(Entry("", None, ""), d, layout).eval()
        x = torch.randn(1, *input_shape(layout))
        with torch.no_grad():
            y, y2, y3 = m.prepare(m.conv(x)), m.prepare(m.conv2(x)), m.prepare(m.conv3(x))
            real = m.prepare(m.conv2(x), real=True)
        _ENV[layout, pre] = {"y": y, "y2": y2, "y3": y3, "mask": real > 0, "low": real - 1.0, "high": real + 1.0,
                             "pooled": lambda y=y, d=m.dims: _pool(y, d)[0],
                             "pool_indices": lambda y=y, d=m.dims: _pool(y, d)[1]}
    return _ENV[layout, pre]


def _quick(e: Entry, d: Draw, layout: str) -> str:
    """The error of one eager call of the draw on real tensors ('' when it runs)."""
    env = dict(_env(layout, d.pre))
    env["y"] = env["y"].clone()
    consts: dict = {}
    slotted = _slotted(list(d.args), consts), {k: _slotted(v, consts) for k, v in d.kwargs.items()}
    dims = 1 if layout.startswith("1d") else 2
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            args = _materialize(slotted[0], env, consts)
            kwargs = {k: _materialize(v, env, consts) for k, v in slotted[1].items()}
            restore(e(*args, **kwargs), env["y"], d, dims, layout.endswith("last"), torch.float32)
    except Exception as err:
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return ""


def _runs(e: Entry, d: Draw, layout: str) -> tuple[Case | None, str]:
    error = _quick(e, d, layout)
    if error:
        return None, error
    torch.manual_seed(0)
    model = OpModel(e, d, layout).eval()
    x = torch.randn(1, *input_shape(layout))
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = model(x)
            again = [model(x) for _ in range(3)]      # a random op can repeat itself once by chance
    except Exception as err:
        return None, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    if not isinstance(out, torch.Tensor) or out.layout != torch.strided or type(out) is not torch.Tensor:
        return None, f"output of type {type(out).__name__}, layout {getattr(out, 'layout', None)}"
    if out.dim() != 2 + model.dims or out.shape[0] != 1 or out.numel() == 0 \
            or any(n == 0 for n in out.shape):
        return None, f"output of shape {tuple(out.shape)}"
    same = all(out.shape == a.shape and bool(((out == a) | (out.isnan() & a.isnan())).all()) for a in again)
    return Case(e, layout, d, model, random=not same), ""


_HOPELESS = re.compile(r"not implemented for '(Float|Double|ComplexFloat)'|only supports (integer|boolean)|"
                       r"Integer or boolean|must be (integer|bool)|Could not run '[^']+' with arguments from|"
                       r"the op returned (str|bool|int|float|NoneType|list|tuple|dict|Size|dtype|device)")


def cases(e: Entry, layouts=LAYOUTS, per_layout: int = 1, tries: int = 20, seed: int = 0,
          pres=("", "fold"), every_pre: bool = False, limit: int | None = None) -> tuple[list[Case], str]:
    """Up to ``per_layout`` calls of ``e`` that run, per layout and ``pre`` (the first ``pre``
    that gives any, or each with ``every_pre``), found among ``tries`` random draws each, at
    most ``limit`` in all; and the first error met."""
    first_error = ""
    sigs = params_of(e)
    recipe = RECIPES.get(e.key)
    if not sigs and recipe is None:
        return [], "no signature that takes a tensor"
    found: list[Case] = []
    for layout in layouts:
        for pre in pres:
            ctx = Ctx(layout, pre)
            rng = random.Random(f"{e.key}/{layout}/{pre}/{seed}")
            got = 0
            for _ in range(tries if (pre == "" and not found) else tries // 2):
                try:
                    d = recipe(ctx, rng) if recipe else draw(e, rng.choice(sigs), ctx, rng)
                except Exception as err:      # a drawer that cannot fit this signature
                    first_error = first_error or f"draw: {type(err).__name__}: {err}"
                    continue
                d.pre = pre if pre != "" else d.pre
                case, error = _runs(e, d, layout)
                if case is None:
                    first_error = first_error or error
                    if _HOPELESS.search(error):
                        if not found:
                            return [], error    # no draw changes that (integer ops, other backends, str)
                        break
                    continue
                found.append(case)
                got += 1
                if got >= per_layout or (limit is not None and len(found) >= limit):
                    break
            if limit is not None and len(found) >= limit:
                return found, first_error
            if got and not every_pre:
                break
    return found, first_error


# ----------------------------------------------------------------------------- judging
@dataclass
class Verdict:
    key: str
    layout: str
    call: str
    outcome: str        # followed refused over unjudged failed
    why: str = ""
    modes: tuple = ()   # which oracle modes reached the answer
    unit: tuple = ()


# ops no mode of the oracle can judge: their output moves only on perturbations the oracle
# never makes, so a set smaller than rfprobe's says nothing
NO_MODE = {
    "eq": "equality of continuous values: no perturbation makes two random values equal",
    "ne": "inequality of continuous values: no perturbation makes two random values equal",
    "__eq__": "equality of continuous values", "__ne__": "inequality of continuous values",
    "equal": "equality of continuous values", "not_equal": "inequality of continuous values",
    "isclose": "closeness of continuous values", "allclose": "closeness of continuous values",
    "isnan": "a finite perturbation never makes NaN", "isinf": "a finite perturbation never makes an infinity",
    "isfinite": "a finite perturbation never makes NaN or an infinity", "isposinf": "idem",
    "isneginf": "idem", "isreal": "a real tensor is always real", "nan_to_num": "no NaN appears",
    "signbit": "steps cross 0 only where the base is near it",
    **{n: "tests x != 0: no perturbation makes a random float exactly 0" for n in (
        "logical_not", "logical_or", "logical_and", "logical_xor", "logical_not_", "logical_or_", "logical_and_",
        "logical_xor_", "bool", "count_nonzero", "any", "all", "nonzero", "nonzero_static", "argwhere")},
    **{n: "uninitialised memory: its values are whatever was there" for n in (
        "empty_like", "new_empty", "new_empty_strided", "empty_strided", "resize_", "resize_as_")},
}


def _named_op(msg: str, e: Entry) -> str | None:
    """The op a refusal names: ``e``'s traced name, or the op rfprobe saw inside it (a Python
    function such as ``pca_lowrank`` calls ``linalg_qr``; ``__ifloordiv__`` runs
    ``floor_divide_``); None when the message names no op."""
    if re.search(rf"(?<![A-Za-z_0-9]){re.escape(e.traced)}(?![A-Za-z_0-9])", msg):
        return e.traced
    m = re.search(r"op '([^']+)'", msg)
    return m.group(1) if m else None


def judge(case: Case, unit_rng: random.Random | None = None, modes=MODES, seeds=(0, 1)) -> Verdict:
    """rfprobe's answer for one unit of ``case`` against the oracle (see the module's doc)."""
    import rfprobe
    from rfprobe.errors import RFProbeError
    e, shape = case.entry, input_shape(case.layout)
    v = Verdict(e.key, case.layout, case.draw.describe(), "failed")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = rfprobe.analyze(case.model, shape)
    except RFProbeError as err:
        return _refusal(case, err, v, modes, seeds)
    except Exception as err:
        v.why = f"raw {type(err).__name__}: {_first_line(err)}"
        return v
    node = a.graph.node(a.target)
    unit = a.centre_unit if unit_rng is None else tuple(unit_rng.randrange(n) for n in node.spatial)
    v.unit = unit
    index = node.unit_index(unit)
    if node.layout is None:     # tokens: dim 0 is the batch where it holds no position
        batch = len(node.shape) > 1 and node.pieces.index(unit)[0] is None
    else:
        batch = len(node.shape) > len(node.layout) and -len(node.shape) not in node.layout

    def at(y, batched):
        if not batched:
            return y[index]
        if not batch:
            raise ValueError("the output's dim 0 is not the batch")
        return y[(slice(None),) + tuple(index[1:])]
    region = a.region(unit, bounded=True)
    mine = region.input_mask()
    if case.random:
        v.outcome, v.why = "unjudged", "random: the op draws new values at every call"
        return v
    try:
        moved, per_mode = _oracle(case, shape, at, modes, seeds)
        if not (moved & ~mine).any() and not (moved == mine).all() and region.global_cause is None:
            # a smaller set: more seeds before calling it a failure (a mask may hide a path on
            # one base input and open it on another)
            moved, per_mode = _oracle(case, shape, at, modes, tuple(range(8)))
    except Exception as err:
        v.outcome, v.why = "unjudged", f"the oracle's float64 copy cannot run it: {type(err).__name__}: {_first_line(err)}"
        return v
    return _compare(v, e, a, region, mine, moved, per_mode)


def _compare(v: Verdict, e: Entry, a, region, mine, moved, per_mode) -> Verdict:
    reached = tuple(m for m, mask in per_mode.items() if (mask == mine).all())
    if a.status == "global" and region.global_cause is not None:
        if moved.all():
            v.outcome, v.modes = "followed", reached or ("union",)
        else:
            v.outcome, v.why = "over", f"global ({region.global_cause}); the oracle moves {_box(moved)}"
        return v
    if (moved == mine).all():
        v.outcome, v.modes = "followed", reached or ("union",)
    elif (moved & ~mine).any():
        v.why = f"status {a.status}: rfprobe {_box(mine)} misses what the oracle moves {_box(moved)}"
    elif e.traced in NO_MODE:
        v.outcome, v.why = "unjudged", NO_MODE[e.traced]
    else:
        v.why = f"status {a.status}: rfprobe {_box(mine)} is larger than the oracle's {_box(moved)}"
    return v


def _refusal(case: Case, err, v: Verdict, modes, seeds) -> Verdict:
    """An RFProbeError: a refusal naming the op, a true 'does not depend on the input', or a
    failure (an InternalError, a refusal that names no op, a false 'does not depend')."""
    from rfprobe.errors import InternalError
    e, msg = case.entry, str(err)
    if isinstance(err, InternalError):
        v.why = f"InternalError: {_first_line(err)}"
        return v
    if "does not depend on the model input" in msg:
        try:
            moved = _oracle(case, input_shape(case.layout), lambda y, b: y, modes, seeds)[0]
        except Exception as oracle_error:
            v.outcome, v.why = "unjudged", f"the oracle's float64 copy cannot run it: {oracle_error}"
            return v
        if not moved.any():
            v.outcome, v.why, v.modes = "followed", "constant", tuple(modes)
        elif e.traced in NO_MODE or case.random:
            v.outcome, v.why = "unjudged", NO_MODE.get(e.traced, "random")
        else:
            v.why = f"said 'does not depend on the model input' ({type(err).__name__}); the oracle moves it"
        return v
    named = _named_op(msg, e)
    if named is not None:
        v.outcome, v.why = "refused", _reason(msg, e) + ("" if named == e.traced else f" (op {named!r})")
        return v
    v.why = f"{type(err).__name__} not naming {e.traced!r}: {_first_line(err)}"
    return v


def _oracle(case: Case, shape, at, modes, seeds):
    per_mode = {}
    for m in modes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            per_mode[m] = each_position(case.model, shape, at, mode=m, seeds=seeds).mask
    union = np.logical_or.reduce(list(per_mode.values()))
    return union, per_mode


def _box(mask: np.ndarray) -> str:
    if not mask.any():
        return "nothing"
    if mask.all():
        return "everything"
    box = tuple((int(ix.min()), int(ix.max())) for ix in np.nonzero(mask))
    holes = "" if mask[tuple(slice(a, b + 1) for a, b in box)].all() else " with holes"
    return "box " + " x ".join(f"{a}..{b}" for a, b in box) + holes


def _first_line(err) -> str:
    s = str(err).splitlines()[0] if str(err) else ""
    return s[:300]


def _reason(msg: str, e: Entry) -> str:
    """A short, stable reason for a refusal: no call site, node name or shape."""
    if "has no receptive-field rule" in msg:
        return "no rule"
    m = re.search(r"\(module '[^']*'\): (.*?)(?:\. The selected output|$)", msg, re.S)
    text = m.group(1) if m else msg
    text = re.sub(r" at [\w./<>-]+:\d+", "", text)
    text = re.sub(r" \(module '[^']*'\)", "", text)
    text = re.sub(r"'[\w.]+#\d+'", "…", text)
    text = re.sub(r"\(-?\d+(, -?\d+)*,?\)", "(…)", text)
    text = re.sub(r"(?<![\w.-])-?\d+(?![\w.])", "…", text)
    text = re.sub(r"\s+", " ", text).replace("|", "/")
    return text if len(text) <= 110 else text[:110].rsplit(" ", 1)[0] + " …"


# ----------------------------------------------------------------------------- profiles and the report
PROFILES = {
    # one call per op, in one layout (rotating over the four), the centre unit, one seed per mode
    "short": dict(per_layout=1, limit=1, every_pre=False, pres=("", "fold"), seeds=(0,), units=False),
    # three calls per op in every layout and every preparation (complex included), random units
    "long": dict(per_layout=3, limit=None, every_pre=True, pres=("", "fold", "complex"), seeds=(0, 1), units=True),
}


@dataclass
class Sweep:
    """Everything one profile found: each op's verdicts, and why the others were not run."""

    verdicts: dict[str, list[Verdict]] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)

    def outcome(self, key: str) -> str:
        """One word per op: failed, over, unjudged, partly (followed and refused), followed, refused."""
        got = {v.outcome for v in self.verdicts[key]}
        for word in ("failed", "over", "unjudged"):
            if word in got:
                return word
        if got == {"followed", "refused"}:
            return "partly"
        return got.pop()

    def by_outcome(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for key in self.verdicts:
            out.setdefault(self.outcome(key), []).append(key)
        return out


def sweep(profile: str = "short", keys=None, log: Callable[[str], None] | None = None,
          progress: Callable[[str], None] | None = None) -> Sweep:
    """Run ``profile`` over the surface (or over ``keys``); ``log`` gets each finding that is
    neither followed nor refused, ``progress`` each op's key before it runs."""
    conf = PROFILES[profile]
    ops = surface()
    result = Sweep(excluded=dict(sorted(EXCLUDED.items())))
    result.excluded["torch._*, Tensor._* and the like"] = (f"{len(PRIVATE)} private names: models call the "
                                                           "public op")
    for i, e in enumerate(ops):
        if keys is not None and e.key not in keys:
            continue
        if progress is not None:
            progress(e.key)
        layouts = LAYOUTS[i % 4:] + LAYOUTS[:i % 4]
        found, error = cases(e, layouts, per_layout=conf["per_layout"], pres=conf["pres"],
                             every_pre=conf["every_pre"], limit=conf["limit"])
        if not found:
            result.not_applicable[e.key] = error or "no call found"
            continue
        rng = random.Random(f"{e.key}/units") if conf["units"] else None
        verdicts = []
        for case in found:
            try:
                verdicts.append(judge(case, rng, seeds=conf["seeds"]))
            except Exception as err:        # the harness itself: reported, never a pass
                verdicts.append(Verdict(e.key, case.layout, case.draw.describe(), "failed",
                                        f"harness {type(err).__name__}: {_first_line(err)}"))
        result.verdicts[e.key] = verdicts
        if log is not None:
            for v in verdicts:
                if v.outcome not in ("followed", "refused"):
                    log(f"{v.outcome:9} {v.key} {v.layout} {v.call}: {v.why}")
    return result


def report(result: Sweep) -> str:
    """The coverage as text: counts, then each outcome's ops."""
    groups = result.by_outcome()
    lines = [f"op surface: {len(result.verdicts)} ops run, {len(result.not_applicable)} not applicable, "
             f"{len(result.excluded)} excluded"]
    lines += [f"  {word}: {len(groups.get(word, []))}" for word in OUTCOMES]
    for word in ("failed", "over", "unjudged", "partly", "refused"):
        for key in groups.get(word, []):
            why = "; ".join(dict.fromkeys(v.why for v in result.verdicts[key] if v.outcome != "followed"))
            lines.append(f"{word:9} {key}: {why}")
    return "\n".join(lines)


OUTCOMES = ("followed", "refused", "partly", "over", "unjudged", "failed")


# ----------------------------------------------------------------------------- the coverage page
DOC = "docs/ops.md"
_MEANING = {
    "followed": "rfprobe's set for the unit is the oracle's (or both say the output reads nothing)",
    "refused": "an `RFProbeError` naming the op: the to-do list below",
    "partly": "followed in one call, refused in another",
    "over": "`global` where the oracle reads a bounded part (an over-statement, listed)",
    "unjudged": "no mode of the oracle can judge it (listed, never counted as a pass)",
    "failed": "a different set with status `ok` or `varies`, a raw exception, a refusal naming no op",
}


def render_doc(result: Sweep, known: dict[str, str]) -> str:
    """The coverage page, ``docs/ops.md``: counts, then each outcome's ops (sorted)."""
    groups = result.by_outcome()
    out = [
        "# Op coverage",
        "",
        "Which of torch's ops rfprobe follows exactly and which it refuses, as the short profile of",
        "`tests/test_op_surface.py` finds them: every function and method of",
        "`torch.overrides.get_testing_overrides()` and of `torch.fft`, `torch.special` and",
        "`torch.nn.functional`, applied after a conv to a float feature map (1D or 2D, channels first or",
        "last) with arguments drawn to fit, one output unit compared with the perturbation oracle",
        "(`tests/oracle.py`, in its `huge` and `steps` modes). How the calls are drawn and judged:",
        "`tests/op_surface.py`. The long profile (`RFPROBE_FUZZ=long`) tries more calls per op.",
        "",
        f"Generated for torch {torch.__version__.split('+')[0]}; regenerate after changing a rule with",
        "",
        "```",
        "python -m tests.op_surface",
        "```",
        "",
        "(`tests/test_op_surface.py` fails when this page differs from a fresh run.)",
        "",
        "## Summary",
        "",
        "| outcome | ops | meaning |",
        "|---|---|---|",
    ]
    for word in OUTCOMES:
        out.append(f"| {word} | {len(groups.get(word, []))} | {_MEANING[word]} |")
    out.append(f"| not applicable | {len(result.not_applicable)} | no drawn call takes a float feature map "
               "(integer ops, factories, other backends, matrix ops on a 3-D map...) |")
    out.append(f"| excluded | {len(result.excluded)} kinds | never called (below) |")
    out += ["", "## Refused: the to-do list for rules", "",
            "Each is a rule to write (`docs/design.md`, section 9, says how). `traced as` is the name",
            "the unknown-op error shows and `rfprobe.register_rule` takes.", "",
            "| op | traced as | why |", "|---|---|---|"]
    for key in groups.get("refused", []) + groups.get("partly", []):
        why = "; ".join(dict.fromkeys(v.why for v in result.verdicts[key] if v.outcome == "refused"))
        out.append(f"| `{key}` | `{entry(key).traced}` | {why} |")
    for word, title in (("over", "Over-statements"), ("unjudged", "Not judged"), ("failed", "Failures")):
        keys = groups.get(word, [])
        out += ["", f"## {title}", ""]
        if not keys:
            out.append("None.")
            continue
        for key in keys:
            why = "; ".join(dict.fromkeys(v.why for v in result.verdicts[key] if v.outcome == word))
            note = f" (known: {known[key]})" if key in known and word == "failed" else ""
            out.append(f"- `{key}`: {why}{note}")
    out += ["", "## Followed", "", "By the oracle modes whose set alone equals rfprobe's (both: either mode",
            "judges the op; `union`: only the two together).", ""]
    by_mode: dict[str, list[str]] = {}
    for key in groups.get("followed", []):
        modes = sorted({m for v in result.verdicts[key] for m in v.modes} or {"constant"})
        constant = all(v.why == "constant" for v in result.verdicts[key])
        label = "constant (no perturbation moves the output, as rfprobe says)" if constant else " and ".join(modes)
        by_mode.setdefault(label, []).append(key)
    for label in sorted(by_mode):
        out += [f"- {label} ({len(by_mode[label])}): " + ", ".join(f"`{k}`" for k in by_mode[label]), ""]
    out += ["## Not applicable", "", ", ".join(f"`{k}`" for k in result.not_applicable), "",
            "## Excluded", ""]
    out += [f"- `{k}`: {why}" for k, why in result.excluded.items()]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    """``python -m tests.op_surface``: run the short profile and write ``docs/ops.md``."""
    import pathlib

    from tests.test_op_surface import KNOWN
    torch.set_num_threads(1)
    result = sweep("short")
    path = pathlib.Path(__file__).resolve().parent.parent / DOC
    path.write_text(render_doc(result, KNOWN))
    print(report(result))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
