"""Trace any ``nn.Module`` into a graph of ops with shapes and receptive-field rules.

The tracer is a ``TorchFunctionMode``: it sees every torch function, ``torch.nn.functional``
call and tensor method the model's own code makes (modules and functional code alike), on a
private copy of the model whose tensors live on the ``meta`` device, so no real compute runs.
Data-dependent control flow simply takes the branch the trace input takes; a model that
cannot run on ``meta`` (it reads values, e.g. ``.item()``) is traced again on the CPU with
real values, and ``Graph.notes`` says so.

Each node records which dims of its tensor are the spatial axes (``layout``), so reshapes,
permutes (channels-last blocks such as ConvNeXt's LayerNorm), slicing and channel shuffles
keep them; a reshape that merges them loses them (everything after is global, and an
attention or Linear that then mixes the merged axis is named as the cause). In-place ops
become nodes of their own. An op without a rule becomes an ``Unknown`` node: it only raises
(naming the op and its call site) when the selected output depends on it.

>>> import torch.nn as nn
>>> g = trace(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), (1, 8, 8))
>>> [n.op for n in g.nodes]
['input', 'conv2d', 'relu']
>>> g.nodes[-1].shape
(1, 2, 6, 6)
"""
from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from . import render, rules, shapes
from .errors import ArgumentError, ModelError, ResourceError, RFProbeError, UnknownOpError, did_you_mean
from .rules import Call, Global, InputDep
from .validate import available_bytes

_HERE = os.path.dirname(os.path.abspath(__file__))
_TORCH = os.path.dirname(os.path.abspath(torch.__file__))


@dataclass(slots=True)
class Node:
    """One op in the traced graph (node 0 is the model input)."""

    id: int
    name: str                      # unique, e.g. 'layer1.0.conv1' or 'up:interpolate#2'
    op: str                        # function name: 'conv2d', 'add', 'input'
    module: str                    # path of the innermost module running it ('' for the model)
    inputs: tuple[int, ...]        # node ids of the data inputs, in ``deps`` order
    deps: tuple[InputDep, ...] | Global | None
    shape: tuple[int, ...]
    layout: tuple[int, ...] | None  # dims that are spatial (negative), None if none are
    site: str = ""                 # file:line of the call in user code

    @property
    def spatial(self) -> tuple[int, ...] | None:
        return None if self.layout is None else tuple(self.shape[d] for d in self.layout)

    @property
    def channel_dim(self) -> int | None:
        """The dim holding channels (negative): the one that is neither the batch (dim 0) nor
        spatial, as in (N, C, H, W) or channels-last (N, H, W, C); None for other shapes."""
        if self.layout is None or len(self.shape) != len(self.layout) + 2:
            return None
        rank = len(self.shape)
        rest = [d for d in range(-rank + 1, 0) if d not in self.layout]
        return rest[0] if len(rest) == 1 else None

    def unit_index(self, unit, channel: int | None = None, item: Any = 0) -> tuple:
        """Index of ``unit`` (one index per spatial axis, in the input's axis order) in this
        node's tensor: batch ``item`` (dim 0, when the tensor has more dims than spatial ones),
        every channel or ``channel``, wherever the spatial axes and the channels sit."""
        rank = len(self.shape)
        index: list[Any] = [slice(None)] * rank
        if rank > len(self.layout) and -rank not in self.layout:
            index[0] = item
        if self.channel_dim is not None and channel is not None:
            index[self.channel_dim] = channel
        for d, u in zip(self.layout, unit):
            index[d] = u
        return tuple(index)


@dataclass
class Graph:
    """Traced ops in execution order, with where each module's output and the model's are."""

    nodes: list[Node]
    dims: int
    input_shape: tuple[int, ...]             # (C, *spatial), no batch
    outputs: Any                             # the model's output structure with node ids
    module_outputs: dict[str, int]
    notes: list[str] = field(default_factory=list)
    closed: Any = field(default=None, repr=False, compare=False)   # analytic.closed_forms' cache
    recording: Any = field(default=None, repr=False, compare=False)  # what replay() needs (meta traces)

    def node(self, key: str | int) -> Node:
        if isinstance(key, int):
            return self.nodes[key]
        for n in self.nodes:
            if n.name == key:
                return n
        raise KeyError(key)


def _site() -> str:
    f = sys._getframe(2)
    while f is not None:
        user = _user_file(f.f_code.co_filename)
        if user:
            return f"{user}:{f.f_lineno}"
        f = f.f_back
    return ""


class _Site:
    """The user-code call site of the op being traced, looked up only when a message or a
    global node needs it (walking the stack for every op was a tenth of a trace). Read it only
    while that op is being traced: the stack is the op's then."""

    __slots__ = ("value",)

    def __init__(self):
        self.value = None

    def __str__(self) -> str:
        if self.value is None:
            self.value = _site()
        return self.value

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __bool__(self) -> bool:
        return bool(str(self))


@functools.lru_cache(maxsize=4096)
def _user_file(filename: str) -> str:
    """The base name of a file outside rfprobe and torch ('' for theirs); cached, as every
    traced op asks for each frame of its stack."""
    fn = os.path.abspath(filename)
    # with the separator: torchvision/ is a user file, not torch/
    return "" if fn.startswith(_HERE + os.sep) or fn.startswith(_TORCH + os.sep) else os.path.basename(fn)


class Unknown(Global):
    """An op without a rule (or a use a rule refuses). Recorded, so ops that only follow the
    selected output do not matter; selecting an output that depends on it raises."""


# ops with a fixed (N, C, *spatial) layout: their rules need the spatial axes trailing
FIXED_LAYOUT = frozenset(
    [f"{p}{d}d" for d in (1, 2, 3) for p in ("conv", "conv_transpose", "max_pool", "avg_pool", "lp_pool",
                                              "adaptive_avg_pool", "adaptive_max_pool")]
    + [f"max_pool{d}d_with_indices" for d in (1, 2, 3)] + [f"adaptive_max_pool{d}d_with_indices" for d in (1, 2, 3)]
    + ["interpolate", "upsample", "pixel_shuffle", "pixel_unshuffle", "batch_norm", "group_norm",
       "instance_norm"])
# shape queries that can tell the model a spatial size (dim, dtype, device... cannot)
_SIZE_READS = frozenset("__get__ size numel stride __len__ __format__ __repr__ tolist item __array__".split())
REDUCTIONS = frozenset("mean sum amax amin max min std var logsumexp prod norm nansum nanmean argmax argmin".split())
INPLACE_DUNDER = frozenset("__iadd__ __isub__ __imul__ __itruediv__ __ipow__ __iand__ __ior__".split())
RESHAPES = frozenset("view reshape flatten unflatten squeeze unsqueeze view_as reshape_as".split())
PERMUTES = frozenset("permute transpose swapaxes swapdims movedim moveaxis t".split())
PIECES = frozenset("chunk split tensor_split narrow unbind select split_with_sizes".split())
STACKS = frozenset("stack".split())
MIXERS = {"scaled_dot_product_attention": "attention", "multi_head_attention_forward": "attention",
          "softmax": "attention (softmax over positions)", "matmul": "attention (matrix product over positions)",
          "bmm": "attention (matrix product over positions)", "linear": "Linear over space",
          "einsum": "einsum over positions"}


class _Tracer(TorchFunctionMode):
    def __init__(self, dims: int):
        super().__init__()
        self.dims = dims
        self.trailing = tuple(range(-dims, 0))
        self.nodes: list[Node] = []
        self.of: dict[int, int] = {}        # id(tensor) -> node id
        self.keep: list[torch.Tensor] = []  # keeps traced tensors alive so ids stay unique
        self.module_stack: list[str] = [""]
        self.module_outputs: dict[str, int] = {}
        self.module_types: dict[str, type] = {}
        self.counts: dict[str, int] = {}
        self.taint: dict[int, int] = {}     # node id -> id of the global op it derives from
        self.named_se: set[int] = set()
        self.lost_shapes: set[tuple[int, ...]] = set()   # spatial sizes a reshape merged away
        self.views: dict[int, tuple] = {}   # id(view made by x[...]) -> (x, index)
        self.protect: int | None = None     # node whose tensor must survive in-place ops (the probe's target)
        self.budget: int | None = None      # bytes a trace with real values may keep (None: no limit)
        self.meta = False                   # tracing on meta tensors: results of known ops are built, not run
        self.calls: list | None = None      # (func, name, args, kwargs, module, out) of each recorded op
        self.read_sizes = False             # the model's own code read a spatial size (see replay)
        self.private_args = False           # the calls' arguments are rfprobe's own (a replay's)
        self.spent = 0

    def _spend(self, t: torch.Tensor) -> None:
        """Count what a real-valued trace keeps, and stop it before it exhausts the memory (an
        input size search can reach 4096^2, where a real trace of a big model cannot run)."""
        self.spent += t.numel() * t.element_size()
        if self.spent > self.budget:
            raise ResourceError(render.trace_memory(self.spent, self.budget, tuple(self.keep[0].shape)))

    def post(self, out):
        """What the probe does to an op's output before it is recorded (here: nothing)."""
        return out

    def add(self, op, inputs, deps, t, layout, site="") -> int:
        module = self.module_stack[-1]
        base = module if op != "input" else "input"
        # the first op a module runs is named by the module alone ('layer1.0.conv1'), the rest
        # by module and op ('up:interpolate#1'), so a name says where to look
        n = self.counts.get(base, 0)
        self.counts[base] = n + 1
        name = base if (n == 0 and base) else f"{base + ':' if base else ''}{op}#{n}"
        # the call site matters where a message may quote it: ops that are global or unknown
        site = str(site) if isinstance(deps, Global) else ""
        node = Node(len(self.nodes), name, op, module, tuple(inputs), deps, tuple(t.shape), layout, site)
        self.nodes.append(node)
        self.of[id(t)] = node.id
        self.keep.append(t)
        if self.budget is not None:
            self._spend(t)
        self._taint(node)
        return node.id

    def _taint(self, node: Node) -> None:
        """Follow which global op each node derives from, and name squeeze-excitation: a gate
        computed from a global op, broadcast over space and multiplied into a feature map."""
        if isinstance(node.deps, Global):
            if not isinstance(node.deps, Unknown):
                self.taint[node.id] = next((self.taint[s] for s in node.inputs if s in self.taint), node.id)
                self._name_mixer(node)
                cls, path = self._owner(node.module)
                if cls and path != node.module:
                    node.deps = Global(f"{node.deps.why} in {cls} {path!r}")
            return
        if node.deps is None or not self.taint:
            return
        tainted = [(d, s) for d, s in zip(node.deps, node.inputs) if s in self.taint]
        if not tainted:
            return
        self.taint[node.id] = self.taint[tainted[0][1]]
        spread = [d for d in node.deps if not isinstance(d.axes, Global)
                  and not all(isinstance(m, rules.Broadcast) for m in d.axes)]
        if node.op not in ("mul", "__mul__", "__rmul__", "mul_", "__imul__") or not spread:
            return
        for d, s in tainted:
            if not isinstance(d.axes, Global) and all(isinstance(m, rules.Broadcast) for m in d.axes):
                origin = self.nodes[self.taint[s]]
                self.taint[node.id] = origin.id
                if origin.id not in self.named_se:
                    self.named_se.add(origin.id)
                    origin.deps = Global(f"squeeze-excitation: {origin.deps.why} computes a gate that "
                                         f"scales the whole feature map at {node.name!r}")

    def _name_mixer(self, node: Node) -> None:
        """Positions flattened into one axis are global from the flatten on; when an op that
        mixes that axis follows (attention, a Linear), the flatten's cause names it."""
        kind = MIXERS.get(node.op)
        if kind is None:
            return
        if node.op == "linear":   # a Linear over channels mixes nothing spatial: name only one over positions
            last = self.nodes[node.inputs[0]].shape[-1] if node.inputs else None
            if last not in {math.prod(sh) for sh in self.lost_shapes} | {n for sh in self.lost_shapes for n in sh}:
                return
        for s in node.inputs:
            origin = self.nodes[self.taint.get(s, s)]
            if origin.op in rules.LAYOUT_OPS and origin.id not in self.named_se and origin.id != node.id:
                self.named_se.add(origin.id)
                origin.deps = Global(f"{kind}: {node.op} at {node.name!r} mixes the positions that "
                                     f"{origin.op} at {origin.name!r} merged into one axis (rfprobe "
                                     "treats a merged spatial axis as global)")

    def _owner(self, module: str) -> tuple[str, str]:
        """Class and path of the innermost user-defined module around ``module`` (not torch.nn's)."""
        parts = module.split(".") if module else []
        for cut in range(len(parts), -1, -1):
            path = ".".join(parts[:cut])
            cls = self.module_types.get(path)
            if cls is not None and not cls.__module__.startswith("torch.nn"):
                return cls.__name__, path
        return "", ""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", None) or str(func)
        if name in rules.IGNORED:       # shape queries and the like: most calls, keep them cheap
            if name == "__get__" and args and id(args[0]) in self.of:
                view = self._view_property(func, types, args[0])
                if view is not None:
                    return view
            if name in _SIZE_READS and self.calls is not None and not self.read_sizes:
                self.read_sizes = self._reads_space(func, name, args)
            return func(*args, **kwargs)
        tensors = _tensors_of(args, kwargs)
        of, nodes = self.of, self.nodes
        data, in_ids, layouts = [], [], []
        for k, t in enumerate(tensors):
            i = of.get(id(t))
            if i is None:
                layouts.append(None)
            else:
                data.append(k)
                in_ids.append(i)
                layouts.append(nodes[i].layout)
        if not data:
            return func(*args, **kwargs)
        data, layouts = tuple(data), tuple(layouts)
        site = _Site()
        if name == "__setitem__":
            out = func(*args, **kwargs)
            t = args[0]
            layout, deps = self._guard(lambda: _setitem(args, tensors, data, layouts, self.dims), name, site,
                                       layouts[0])
            self.add(name, [in_ids[data.index(k)] for k in _dep_args(deps, data)], deps, t, layout, site)
            if self.calls is not None:
                self._record(func, name, args, kwargs, out)
            return out
        inplace = ((name.endswith("_") and not name.startswith("__")) or name in INPLACE_DUNDER
                   or kwargs.get("inplace") is True)
        if inplace and self.protect is not None and self.of.get(id(tensors[0])) == self.protect:
            self.keep[self.protect] = tensors[0].clone()   # the selected output, before the op mutates it
        raw = shapes.meta_result(name, args, kwargs) if self.meta else None
        if raw is None:
            raw = func(*args, **kwargs)
        # an in-place op returns its input, a view shares its input's memory: keep the object the
        # model holds (the probe may not swap it), so writes through it reach the base
        alias = any(raw is t for t in tensors) or _view_of(raw, tensors)
        out = raw if alias else self.post(raw)
        outs = [out] if isinstance(out, torch.Tensor) else [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        # values, masks (bool) and indices (argmax) computed from them: all are followed
        if not outs and raw is not None and not isinstance(raw, (torch.Tensor, tuple, list)):
            self.read_sizes = True   # not a tensor: maybe a size in disguise (x.untyped_storage())
        for i, t in enumerate(outs):
            layout, deps = self._rule(func, name, args, kwargs, tensors, data, layouts, t, site, i, outs)
            self.add(name, [in_ids[data.index(k)] for k in _dep_args(deps, data)], deps, t, layout, site)
        if name == "__getitem__" and alias:
            self.views[id(raw)] = (args[0], args[1])
        if inplace and raw is tensors[0] and getattr(raw, "_base", None) is not None:
            self._write_back(raw, name, site)
        if self.calls is not None:
            self._record(func, name, args, kwargs, out)
        return out

    def _record(self, func, name, args, kwargs, out) -> None:
        """Keep the call for :func:`replay`, its arguments as they are now (a replay's own
        arguments are already private copies, which the model's code never sees)."""
        if not self.private_args:
            args, kwargs = _frozen(args), _frozen(kwargs)
        self.calls.append((func, name, args, kwargs, self.module_stack[-1], out))

    def _view_property(self, func, types, x):
        """``x.mT``, ``x.T`` (and ``.mH``, ``.H`` of a real tensor) are properties, not calls:
        traced as the transpose/permute they are, so the positions they move stay tracked
        (a property access is otherwise not an op, and the path through it would be lost)."""
        prop = getattr(getattr(func, "__self__", None), "__name__", "")
        if prop in ("mT", "mH") and x.dim() >= 2 and (prop == "mT" or not x.is_complex()):
            return self.__torch_function__(torch.Tensor.transpose, types, (x, -2, -1), {})
        if prop in ("T", "H") and (prop == "T" or not x.is_complex()):
            return self.__torch_function__(torch.Tensor.permute, types, (x, *range(x.dim() - 1, -1, -1)), {})
        return None

    def _reads_space(self, func, name, args) -> bool:
        """Whether a shape query reads a spatial size of a traced tensor (``x.shape``,
        ``x.size()``, ``x.size(-1)``...): the model's code may then compute with it, and a trace
        at another size cannot be replayed from this one."""
        t = args[0] if args else None
        i = self.of.get(id(t)) if isinstance(t, torch.Tensor) else None
        layout = None if i is None else self.nodes[i].layout
        if layout is None:
            return False
        if name == "__get__":
            return getattr(getattr(func, "__self__", None), "__name__", "") in ("shape", "nbytes")
        if name == "size" and len(args) > 1 and isinstance(args[1], int):
            return (args[1] % t.dim()) - t.dim() in layout
        if name == "__len__":
            return -t.dim() in layout
        return True

    def _write_back(self, view, name, site) -> None:
        """An in-place op on a view also changes its base: the base becomes a new node that
        reads the old base and, in the view's slice, the view (as ``base[index] = view``)."""
        base = view._base
        if id(base) not in self.of:
            return
        b, v = self.of[id(base)], self.of[id(view)]
        layouts = (self.nodes[b].layout, self.nodes[v].layout)
        if id(view) in self.views and self.views[id(view)][0] is base:
            index = self.views[id(view)][1]
            keep = name not in ("copy_", "fill_", "zero_")   # these overwrite the slice
            layout, deps = self._guard(lambda: _setitem((base, index, view), (base, view), (0, 1), layouts,
                                                        self.dims, keep), name, site, layouts[0])
        else:
            layout, deps = layouts[0], Unknown(
                f"op {name!r} at {site or '?'} writes in place into a view of {self.nodes[b].name!r} made "
                "by an op other than indexing; rfprobe follows in-place writes through x[...] views only")
        ids = (b, v)
        self.add(name, [ids[k] for k in _dep_args(deps, (0, 1))], deps, base, layout, site)

    def _guard(self, fn, name, site, fallback_layout):
        """Run a rule; an op it refuses becomes an ``Unknown`` node naming the op and call site."""
        try:
            return fn()
        except UnknownOpError as e:
            return fallback_layout, self._refused(name, site, e)

    def _refused(self, name, site, error) -> Unknown:
        return Unknown(f"op {name!r} at {site or '?'} (module {self.module_stack[-1] or '<model>'!r}): {error}")

    def _rule(self, func, name, args, kwargs, tensors, data, layouts, out, site, index=0, outs=()):
        main = layouts[data[0]]
        trailing = self.trailing
        ref = next((layouts[k] for k in data if layouts[k] is not None), None)
        if ref is None:
            # a reshape back to a spatial shape that a flatten lost (e.g. after attention over
            # flattened positions): the spatial axes are back, every position still global
            back = (name in rules.LAYOUT_OPS and out.dim() >= self.dims + 1
                    and tuple(out.shape[-self.dims:]) in self.lost_shapes)
            return (trailing if back else None), Global(f"{name} of a tensor without spatial axes")
        if name in rules.LAYOUT_OPS or name == "__getitem__":
            layout, deps = self._guard(lambda: _layout_op(name, args, kwargs, tensors, data, layouts, out,
                                                          self.dims, index, outs), name, site, None)
            if layout is None and main is not None:
                self.lost_shapes.add(tuple(tensors[data[0]].shape[d] for d in main))
            return layout, deps
        if name in REDUCTIONS:
            layout = _reduced_layout(name, args, kwargs, tensors[data[0]], ref, out)
        else:
            layout = ref if out.dim() >= -min(ref) and _same_sizes(tensors[data[0]], ref, out) else None
        rule = rules.RULES.get(name)
        if rule is None:
            return layout, Unknown(
                f"op {name!r} at {site or '?'} (module {self.module_stack[-1] or '<model>'!r}) has no "
                f"receptive-field rule. Declare one: rfprobe.register_rule({name!r}, 'pointwise' | "
                f"'channel' | 'global' | function): 'pointwise' only if each output position reads "
                f"just its own input position, 'global' is always safe (it reports every position).")
        if name in FIXED_LAYOUT and main != trailing:
            return layout, Unknown(f"op {name!r} at {site or '?'} runs on a tensor whose spatial axes are "
                                   f"dims {main} of shape {tuple(tensors[data[0]].shape)}, not the trailing "
                                   f"{self.dims}; rfprobe has no rule for that (a spatial axis folded into "
                                   "the batch, e.g. a Conv1d run along each row: an nn.Conv2d with a (1, k) "
                                   "kernel computes the same and is followed)")
        call = Call(name, args, kwargs, data, tensors, layouts, tuple(out.shape), self.dims, layout)
        try:
            deps = rule(call)
        except UnknownOpError as e:     # the rule refuses this use of the op
            return layout, self._refused(name, site, e)
        if layout is None and not isinstance(deps, Global):
            deps = Global(f"{name} changes the layout so that spatial axes are lost")
        return layout, (deps if isinstance(deps, Global) else tuple(deps))


# argument types that hold no tensor: pytree treats them as leaves too
_LEAVES = (int, float, complex, bool, str, type(None), torch.dtype, torch.device, torch.layout,
           torch.memory_format, torch.Size, slice, type(Ellipsis))


def _tensors_of(args, kwargs) -> tuple[torch.Tensor, ...]:
    """The tensors among an op's arguments, in ``tree_flatten`` order. Ops take tensors, scalars
    and flat lists of them; that case is walked here directly (pytree costs ~15 us a call,
    a third of a traced op), anything else goes through ``tree_flatten``."""
    out = []
    for group in (args, kwargs.values()):
        for a in group:
            if isinstance(a, torch.Tensor):
                out.append(a)
            elif type(a) is list or type(a) is tuple:
                for b in a:
                    if isinstance(b, torch.Tensor):
                        out.append(b)
                    elif not isinstance(b, _LEAVES):
                        return _tensors_slow(args, kwargs)
            elif not isinstance(a, _LEAVES):
                return _tensors_slow(args, kwargs)
    return tuple(out)


def _tensors_slow(args, kwargs) -> tuple[torch.Tensor, ...]:
    flat, _ = tree_flatten((args, kwargs))
    return tuple(x for x in flat if isinstance(x, torch.Tensor))


def _frozen(v):
    """``v`` with its lists and dicts copied: the model may append to a list after passing it
    (densenet's ``cat(features)``), and a replay needs the arguments as they were."""
    if type(v) is list:
        return [_frozen(a) for a in v]
    if type(v) is tuple:
        return tuple(_frozen(a) for a in v) if any(type(a) in (list, tuple, dict) for a in v) else v
    if type(v) is dict:
        return {k: _frozen(a) for k, a in v.items()}
    return v


def _view_of(t, tensors) -> bool:
    base = getattr(t, "_base", None) if isinstance(t, torch.Tensor) else None
    return base is not None and any(base is x or base is getattr(x, "_base", None) for x in tensors)


def _same_sizes(src, layout, out) -> bool:
    """True when ``out`` keeps ``layout``'s dims (sizes may change, e.g. a conv's)."""
    return out.dim() == src.dim() or all(-d <= out.dim() for d in layout)


def _reduced_layout(name, args, kwargs, src, layout, out):
    dim = kwargs.get("dim", args[1] if len(args) > 1 and not isinstance(args[1], torch.Tensor) else None)
    keep = kwargs.get("keepdim", args[2] if len(args) > 2 and isinstance(args[2], bool) else False)
    if out.dim() == src.dim() or keep:
        return layout
    if dim is None:
        return None
    nd = src.dim()
    gone = sorted({d % nd for d in ([dim] if isinstance(dim, int) else dim)})
    if any(g - nd in layout for g in gone):
        return None
    new = []
    for d in layout:
        p = d + nd
        q = p - sum(1 for g in gone if g < p)
        new.append(q - out.dim())
    return tuple(new)


def _setitem(args, tensors, data, layouts, dims, keep_old=False):
    """``x[index] = value``: ``x`` keeps its positions and the written slice reads ``value``
    (``keep_old``: the slice also still reads the old ``x``, as after ``x[index].add_(v)``)."""
    x, index, value = args[0], args[1], args[2]
    layout = layouts[0]
    if layout is None:
        return None, Global("__setitem__ into a tensor without spatial axes")
    idx = index if isinstance(index, tuple) else (index,)
    ndim = x.dim()
    dots = [i for i, item in enumerate(idx) if item is Ellipsis]
    used = sum(1 for i in idx if i is not None and i is not Ellipsis)
    if dots:
        idx = idx[:dots[0]] + (slice(None),) * (ndim - used) + idx[dots[0] + 1:]
    if any(item is None or not isinstance(item, (slice, int)) for item in idx):
        raise UnknownOpError(f"assignment x[{index!r:.40}] = ... with this index has no rule")
    idx = idx + (slice(None),) * (ndim - len(idx))
    whole_spatial = all(idx[d + ndim] == slice(None) for d in layout)
    whole_rest = all(idx[d] == slice(None) for d in range(ndim) if d - ndim not in layout)
    if not whole_spatial and whole_rest and not keep_old:
        raise UnknownOpError("assignment into a spatial slice of every channel has no rule "
                             "(positions inside and outside the slice read different tensors)")
    deps = []
    if keep_old or not (whole_spatial and whole_rest):
        deps.append(InputDep(0, tuple(rules.identity(x.shape[d]) for d in layout)))
    if isinstance(value, torch.Tensor) and any(tensors[k] is value for k in data):
        k = next(k for k in data if tensors[k] is value)
        vl = layouts[k]
        axes = []
        for a, d in enumerate(layout):
            if any(i is not slice(None) and isinstance(i, int) for i in idx[d + ndim:d + ndim + 1]):
                raise UnknownOpError("assignment with an int index on a spatial axis has no rule")
            start, stop, step = idx[d + ndim].indices(x.shape[d])
            if vl is None or value.dim() < -d or value.shape[d] == 1:
                axes.append(rules.Broadcast())
            else:
                axes.append(rules.Mapped(lambda j, b, s=start, st=step, e=stop:
                                         [(j - s) // st] if s <= j < e and (j - s) % st == 0 else [],
                                         value.shape[d]))
        deps.append(InputDep(k, tuple(axes) if vl is not None or all(isinstance(m, rules.Broadcast) for m in axes)
                             else Global("__setitem__ writes a tensor without spatial axes into space")))
    return layout, deps


def _dep_args(deps, data):
    if deps is None or isinstance(deps, Global):
        return data
    return [d.arg for d in deps]


def _layout_op(name, args, kwargs, tensors, data, layouts, out, dims, index=0, outs=()):
    """view/reshape/permute/slicing/...: which dims of the output are the spatial axes, and how
    each output index maps to the input's (identity, crop, repeat or broadcast)."""
    k = data[0]
    src = tensors[k]
    layout = layouts[k]
    if name == "__getitem__":
        call = Call(name, args, kwargs, data, tensors, layouts, tuple(out.shape), dims)
        return rules.getitem(call)
    nd, no = src.dim(), out.dim()
    ident = tuple(rules.identity(src.shape[d]) for d in layout)

    def keep(new):
        return tuple(new), [InputDep(k, ident)]

    if name in RESHAPES or (name == "contiguous"):
        new = _reshape_layout(tuple(src.shape), tuple(out.shape), layout)
        if new is None:
            return None, Global(f"{name} merges or splits spatial axes {tuple(src.shape)} -> "
                                f"{tuple(out.shape)} (every position can reach every output)")
        return keep(new)
    if name in PERMUTES:
        perm = _perm(name, args, kwargs, nd)
        return keep(perm.index(d % nd) - nd for d in layout)
    if name in ("channel_shuffle", "native_channel_shuffle"):
        return keep(layout)
    if name == "unfold":
        if no != nd + 1:    # F.unfold (im2col), which shares the name: positions merged into one axis
            raise UnknownOpError("F.unfold (im2col) puts every window's positions into one axis, which "
                                 "rfprobe does not follow; a conv (or x.unfold(dim, size, step) per "
                                 "spatial dim) computes the same windows")
        dim = (args[1] if len(args) > 1 else kwargs["dimension"]) % nd
        size = args[2] if len(args) > 2 else kwargs["size"]
        step = args[3] if len(args) > 3 else kwargs["step"]
        # x.unfold(dim, size, step): window j of that dim reads j*step .. j*step + size - 1,
        # its elements along a new last dim (like channels); every other dim moves one left
        axes = tuple(rules.Affine(tuple(range(size)), step, 0, src.shape[d]) if d == dim - nd
                     else rules.identity(src.shape[d]) for d in layout)
        return tuple(d - 1 for d in layout), [InputDep(k, axes)]
    if name in ("expand", "expand_as", "broadcast_to"):
        axes = tuple(rules.Broadcast() if src.shape[d] == 1 and out.shape[d] != 1 else rules.identity(src.shape[d])
                     for d in layout)
        return tuple(layout), [InputDep(k, axes)]
    if name == "repeat":
        axes = tuple(rules.identity(src.shape[d]) if out.shape[d] == src.shape[d] else
                     rules.Mapped(lambda j, b, n=src.shape[d]: [j % n], src.shape[d]) for d in layout)
        return tuple(layout), [InputDep(k, axes)]
    if name in STACKS:
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0) % no
        deps, new = [], None
        for j in data:
            lay = layouts[j]
            if lay is None:
                deps.append(InputDep(j, Global("stack of a tensor without spatial axes")))
                continue
            mine = tuple((d + nd) + (1 if d + nd >= dim else 0) - no for d in lay)
            if new is not None and mine != new:
                raise UnknownOpError("stack of tensors whose spatial axes sit in different dims")
            new = mine
            deps.append(InputDep(j, tuple(rules.identity(tensors[j].shape[d]) for d in lay)))
        return new, deps
    if name in PIECES:
        dim = _piece_dim(name, args, kwargs) % nd
        if name in ("unbind", "select"):
            if dim - nd in layout:
                raise UnknownOpError(f"{name} on spatial dim {dim} removes that axis; rfprobe needs every "
                                     "spatial axis in the output")
            return keep(d + (1 if d + nd < dim else 0) for d in layout)
        if dim - nd not in layout:
            return keep(layout)
        if name == "narrow":
            offset = args[2] if len(args) > 2 else kwargs["start"]
        else:
            offset = sum(o.shape[dim] for o in outs[:index])
        offset = offset % src.shape[dim] if offset < 0 else offset
        axes = tuple(rules.Affine((0,), 1, -offset, src.shape[d]) if d == dim - nd else rules.identity(src.shape[d])
                     for d in layout)
        return tuple(layout), [InputDep(k, axes)]
    raise UnknownOpError(f"{name} has no layout rule")


def _piece_dim(name, args, kwargs) -> int:
    if "dim" in kwargs:
        return kwargs["dim"]
    if name in ("chunk", "split", "tensor_split", "split_with_sizes"):
        return args[2] if len(args) > 2 else 0
    return args[1] if len(args) > 1 else 0


def _perm(name, args, kwargs, nd) -> list[int]:
    if name == "permute":
        p = args[1:] if len(args) > 1 and isinstance(args[1], int) else tuple(args[1] if len(args) > 1 else kwargs["dims"])
        return [d % nd for d in p]
    if name == "t":
        return list(range(nd))[::-1]
    if name in ("movedim", "moveaxis"):
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
    """Row-major reshape: spatial dim ``d`` survives as output dim ``e`` exactly when both have
    the same size and the same number of elements to their right (then index i_e == i_d)."""
    new = []
    for d in layout:
        right = math.prod(sin[len(sin) + d + 1:])
        hits = [e for e in range(len(sout)) if sout[e] == sin[d] and math.prod(sout[e + 1:]) == right]
        hits = [e - len(sout) for e in hits if e - len(sout) not in new]
        if not hits:
            return None
        new.append(d if d in hits else hits[-1])
    return tuple(new)


def infer_dims(model: nn.Module) -> int | None:
    """Number of spatial axes, from the first conv or pool module (None if there is none)."""
    for m in model.modules():
        for d, classes in ((1, (nn.Conv1d, nn.ConvTranspose1d, nn.MaxPool1d, nn.AvgPool1d, nn.BatchNorm1d)),
                           (2, (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.AvgPool2d, nn.BatchNorm2d)),
                           (3, (nn.Conv3d, nn.ConvTranspose3d, nn.MaxPool3d, nn.AvgPool3d, nn.BatchNorm3d))):
            if isinstance(m, classes):
                return d
    return None


def infer_channels(model: nn.Module) -> int | None:
    """Input channels of the first conv module (None if there is none)."""
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return m.in_channels
    return None


_SHARED_META: dict[int, nn.Module | None] = {}   # id(model) -> its meta copy, inside one_meta_copy


@contextlib.contextmanager
def one_meta_copy(model: nn.Module):
    """Within this block every trace of ``model`` reuses one meta copy: choosing an input traces
    a model at several sizes, and deep-copying it each time cost more than the traces."""
    key = id(model)
    owner = key not in _SHARED_META
    if owner:
        _SHARED_META[key] = None
    try:
        yield
    finally:
        if owner:
            _SHARED_META.pop(key, None)


def _meta_twin(model: nn.Module) -> nn.Module:
    twin = _SHARED_META.get(id(model))
    if twin is None:
        twin = private_copy(model, "meta")
        if id(model) in _SHARED_META:
            _SHARED_META[id(model)] = twin
    return twin


_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
          "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called",
          "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
          "_load_state_dict_post_hooks")


def private_copy(model: nn.Module, device: str | torch.device = "meta") -> nn.Module:
    """A deep copy of ``model`` that shares nothing with it, hooks removed.

    On ``meta`` no parameter memory is copied. The user's object is never touched.

    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3))
    >>> twin = private_copy(net)
    >>> twin[0].weight.device.type, twin[0] is net[0], net[0].weight.device.type
    ('meta', False, 'cpu')
    """
    if str(device) == "meta":
        with torch.no_grad():
            return _meta_module(model, {})
    with torch.no_grad():
        twin = copy.deepcopy(model)
    for m in twin.modules():
        _clear_hooks(m)
    twin.to(device)
    return twin


def _clear_hooks(m: nn.Module) -> None:
    for attr in _HOOKS:
        d = getattr(m, attr, None)
        if isinstance(d, dict):
            d.clear()
    m._is_full_backward_hook = None


# attribute values a copy may share with the user's module: nothing in them can change
_IMMUTABLE = frozenset([int, float, complex, bool, str, bytes, type(None), torch.dtype, torch.device, torch.Size,
                        torch.memory_format, torch.layout, type, range, frozenset])


@functools.lru_cache(maxsize=None)
def _plain_module_class(cls: type) -> bool:
    """True when ``copy.deepcopy`` of a ``cls`` instance would do nothing but deep-copy
    ``nn.Module.__getstate__``'s dict into ``__setstate__`` (no custom copy or pickle protocol,
    no slots, not scripted)."""
    return (getattr(cls, "__deepcopy__", None) is None and cls.__reduce_ex__ is nn.Module.__reduce_ex__
            and cls.__reduce__ is nn.Module.__reduce__ and cls.__getstate__ is nn.Module.__getstate__
            and not hasattr(cls, "__slots__") and not issubclass(cls, torch.jit.ScriptModule))


def _meta_module(m: nn.Module, memo: dict[int, Any]) -> nn.Module:
    """``m`` copied onto meta the way ``copy.deepcopy`` would, but built directly: parameters
    and buffers become meta tensors (plain tensor attributes are copied as they are, as
    ``.to(device)`` moves them not), child modules are copied the same way,
    hook dicts start empty, immutable attributes are shared and anything else is deep-copied.
    Choosing an input traces a model more than once, and ``deepcopy`` of a 600-module densenet
    cost 30 ms, a third of one forward at 224."""
    if id(m) in memo:
        return memo[id(m)]
    cls = type(m)
    if not _plain_module_class(cls):
        _meta_tensors(m, memo)
        twin = copy.deepcopy(m, memo)
        for sub in twin.modules():
            _clear_hooks(sub)
        return twin
    twin = cls.__new__(cls)
    memo[id(m)] = twin
    state = m.__getstate__()     # a new dict: its values are replaced in place
    for k, v in state.items():
        kind = _STATE_KIND.get(k)
        if kind is None:
            if type(v) in _IMMUTABLE:
                continue
            if isinstance(v, torch.Tensor) and id(v) in memo:   # a parameter or buffer held twice
                state[k] = memo[id(v)]
            elif type(v) in (tuple, list, set) and all(type(x) in _IMMUTABLE for x in v):
                if type(v) is not tuple:
                    state[k] = type(v)(v)       # e.g. _non_persistent_buffers_set
            else:
                state[k] = copy.deepcopy(v, memo)
        elif kind == "tensors":
            state[k] = type(v)((n, None if t is None else _meta_tensor(t, memo)) for n, t in v.items())
        elif kind == "modules":
            state[k] = type(v)((n, None if c is None else _meta_module(c, memo)) for n, c in v.items())
        elif kind == "hooks":
            state[k] = type(v)()
        else:
            state[k] = None
    twin.__setstate__(state)   # as deepcopy does: Conv2d's adds padding_mode to old pickles
    return twin


_STATE_KIND = {"_parameters": "tensors", "_buffers": "tensors", "_modules": "modules",
               "_is_full_backward_hook": "none", **{h: "hooks" for h in _HOOKS}}


def _meta_tensor(t: torch.Tensor, memo: dict[int, Any]) -> torch.Tensor:
    """A meta tensor like ``t`` (a Parameter again if ``t`` is one of the model's), one per
    original so tied weights stay tied."""
    new = memo.get(id(t))
    if new is None:
        new = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")
        if type(t) is nn.Parameter or (type(t) is not torch.Tensor and isinstance(t, nn.Parameter)):
            new = nn.Parameter(new, requires_grad=t.requires_grad)
        memo[id(t)] = new
    return new


def _meta_tensors(m: nn.Module, memo: dict[int, Any]) -> None:
    """Enter every parameter and buffer under ``m`` in ``memo`` as meta, so ``deepcopy`` of an
    unusual module copies no parameter memory."""
    for t in list(m.parameters()) + list(m.buffers()):
        _meta_tensor(t, memo)


def _run(twin: nn.Module, x: torch.Tensor, tracer: _Tracer):
    """Run ``twin`` on ``x`` under ``tracer``, which learns the module running each op.

    Each module's ``forward`` is wrapped on the instance (the twin is ours) rather than hooked:
    a module with hooks takes ``nn.Module``'s slow call path, about a tenth of a trace."""
    names = {m: n for n, m in twin.named_modules()}
    tracer.module_types.update({n: type(m) for m, n in names.items()})
    stack, of, outputs = tracer.module_stack, tracer.of, tracer.module_outputs

    def wrap(inner, name):
        def forward(*args, **kwargs):
            stack.append(name)
            try:
                out = inner(*args, **kwargs)
            finally:
                stack.pop()
            first = out if isinstance(out, torch.Tensor) else next(
                (t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)), None)
            if first is not None and name and id(first) in of:
                outputs[name] = of[id(first)]
            return out
        return forward

    own = {m: m.__dict__.get("forward") for m in names}
    for m, name in names.items():
        m.__dict__["forward"] = wrap(own[m] or types.MethodType(type(m).forward, m), name)
    try:
        tracer.add("input", (), None, x, tuple(range(-tracer.dims, 0)))
        # the model's own randomness (dropout in training mode) must not move the user's RNG
        cuda = [x.device.index or 0] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), tracer:
            return twin(x)
    finally:
        for m, f in own.items():
            if f is None:
                del m.__dict__["forward"]
            else:
                m.__dict__["forward"] = f


# torch's messages for an input too small (or of a size the model cannot split): the same on
# the CPU, so a real-valued trace is not tried
_SHAPE_ERRORS = ("Kernel size can't be greater", "too small", "Output size is", "non-positive",
                 "Calculated output size", "Padding size should be less", "Expected input's",
                 "is invalid for input of size")


def _forward_hooks(model: nn.Module) -> list[str]:
    """Where the user's model (or torch, globally) has forward or forward-pre hooks."""
    kinds = ("_forward_hooks", "_forward_pre_hooks")
    where = [repr(name or "<model>") for name, m in model.named_modules()
             if any(getattr(m, k, None) for k in kinds)]
    from torch.nn.modules import module as _nn_module
    if getattr(_nn_module, "_global_forward_hooks", None) or getattr(_nn_module, "_global_forward_pre_hooks", None):
        where.append("every module (global hooks)")
    return where


def _input_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating (or complex) parameter: its input's, most likely."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point() or p.is_complex()),
                torch.float32)


def trace(model: nn.Module, input_shape: tuple[int, ...], dims: int | None = None, record: bool = False) -> Graph:
    """Trace ``model`` on an input of ``input_shape`` = (C, *spatial) (batch 1 is added).
    ``record``: keep what :func:`replay` needs on the graph (``graph.recording``)."""
    if not isinstance(model, nn.Module):
        raise ArgumentError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    dims = dims or len(input_shape) - 1
    notes: list[str] = []
    hooked = _forward_hooks(model)
    if hooked:
        notes.append(render.hooks_note(hooked))
    try:
        twin = _meta_twin(model)
        x = torch.empty((1, *input_shape), device="meta", dtype=_input_dtype(model))
        tracer = _Tracer(dims)
        tracer.meta = True
        tracer.calls = [] if record else None
        out = _run(twin, x, tracer)
    except RFProbeError:
        raise
    except Exception as meta_error:  # the model reads values: trace for real on the CPU
        from .errors import model_raised
        if any(w in str(meta_error) for w in _SHAPE_ERRORS):   # too small an input: same on the CPU
            done = [n.name for n in tracer.nodes[-3:]]
            raise ModelError(model_raised(meta_error, input_shape, done=done)) from meta_error
        notes.append(render.fallback_note(type(meta_error).__name__, str(meta_error)))
        try:
            twin = private_copy(model, "cpu")
            x = torch.rand((1, *input_shape), dtype=_input_dtype(model),
                           generator=torch.Generator().manual_seed(0))  # the user's RNG stays put
            tracer = _Tracer(dims)
            free = available_bytes(torch.device("cpu"))
            tracer.budget = None if free is None else free // 2
            with torch.no_grad():
                out = _run(twin, x, tracer)
        except RFProbeError:
            raise
        except Exception as e:
            done = [n.name for n in tracer.nodes[-3:]]
            raise ModelError(model_raised(e, input_shape, done=done)) from e
    outputs = _map_outputs(out, tracer)
    graph = Graph(tracer.nodes, dims, tuple(input_shape), outputs, tracer.module_outputs, notes)
    if tracer.calls is not None and not tracer.read_sizes and not any(isinstance(n.deps, Unknown) for n in tracer.nodes):
        graph.recording = (tracer, x)
    return graph


def replay(graph: Graph, input_shape: tuple[int, ...]) -> Graph | None:
    """The graph ``trace`` would give at ``input_shape``, from the ops ``graph``'s trace
    recorded, without running the model's code again; None when that cannot be vouched for.

    A model whose own code never read a spatial size (``x.shape``, ``x.size(-1)``...) and never
    read a value (no real-valued fallback) makes the same calls with the same arguments at any
    input size: only the tensors differ. So each recorded op runs again on the new tensors,
    through the same tracer code (results, rules, names): what changes with the size (output
    shapes, the maps' extents, a size-1 axis broadcasting or not) is recomputed, nothing is
    copied. Any difference in what an op returns (another number of outputs), any error, or
    a different node sequence gives None, and the caller traces the model for real.
    """
    if graph.recording is None:
        return None
    old, x_old = graph.recording
    tracer = _Tracer(graph.dims)
    tracer.meta = True
    tracer.calls = []               # so the result can be replayed in turn
    tracer.private_args = True      # swap() below builds new lists, tuples and dicts
    tracer.module_types = old.module_types
    x = torch.empty((1, *input_shape), device="meta", dtype=x_old.dtype)
    new = {id(x_old): x}

    def swap(v):
        if isinstance(v, torch.Tensor):
            return new.get(id(v), v)
        if type(v) is list or type(v) is tuple:
            return type(v)(swap(a) for a in v)
        if type(v) is dict:
            return {k: swap(a) for k, a in v.items()}
        return v

    try:
        tracer.add("input", (), None, x, tuple(range(-graph.dims, 0)))
        with torch.random.fork_rng(devices=[]):
            for func, name, args, kwargs, module, out in old.calls:
                tracer.module_stack = [module]
                got = tracer.__torch_function__(func, (), swap(args), swap(kwargs))
                before = [out] if isinstance(out, torch.Tensor) else tree_flatten(out)[0]
                after = [got] if isinstance(got, torch.Tensor) else tree_flatten(got)[0]
                if len(before) != len(after):
                    return None
                for a, b in zip(before, after):
                    if isinstance(a, torch.Tensor) != isinstance(b, torch.Tensor):
                        return None
                    if isinstance(a, torch.Tensor):
                        new[id(a)] = b
    except Exception:     # the model would raise at this size, or behave otherwise: trace it
        return None
    if [(n.name, n.op, n.inputs) for n in tracer.nodes] != [(n.name, n.op, n.inputs) for n in graph.nodes]:
        return None
    for mine, theirs in zip(tracer.nodes, graph.nodes):
        mine.site = theirs.site     # the user's call site, which the replay does not run
    result = Graph(tracer.nodes, graph.dims, tuple(input_shape), graph.outputs, graph.module_outputs,
                   list(graph.notes))
    result.recording = (tracer, x)
    return result


def _map_outputs(out, tracer):
    if isinstance(out, torch.Tensor):
        return tracer.of.get(id(out))
    if isinstance(out, dict):
        return {k: _map_outputs(v, tracer) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return [_map_outputs(v, tracer) for v in out]
    return None


def select(graph: Graph, layer: str | None = None, output: Any = None) -> Node:
    """The node to probe: a module's or node's output (``layer``), or the model output
    (``output`` = index or key for tuples and dicts). Raises ``UnknownOpError`` when the
    selected output depends on an op without a rule.

    >>> import torch.nn as nn
    >>> from collections import OrderedDict
    >>> net = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 1, 3), act=nn.ReLU()))
    >>> g = trace(net, (1, 8, 8))
    >>> select(g, layer="conv").name, select(g).name
    ('conv', 'act')
    >>> select(g, layer="cnov")
    Traceback (most recent call last):
    ...
    rfprobe.errors.ArgumentError: layer='cnov' is not a module or node of this model. Did you mean 'conv'? ...
    """
    node = _pick(graph, layer, output)
    if node.layout is not None and node.layout != tuple(range(-graph.dims, 0)) and node.channel_dim is None:
        raise ArgumentError(f"the output of {node.name!r} (shape {node.shape}) keeps its spatial axes in dims "
                            f"{node.layout} among {len(node.shape)}: rfprobe probes outputs shaped (N, C, "
                            "*spatial) or channels-last (N, *spatial, C); select a module whose output "
                            "has that shape")
    unknown = _unknown_ancestor(graph, node)
    if unknown is not None:
        raise UnknownOpError(f"{unknown.deps.why.rstrip('.')}. The selected output {node.name!r} depends on it "
                             f"(node {unknown.name!r}).")
    return node


def _pick(graph: Graph, layer, output) -> Node:
    if layer is not None:
        if not isinstance(layer, str):
            raise ArgumentError(f"layer={layer!r} must be a module name like 'layer3' or 'features.16', "
                                "or a node name from rfprobe.analyze(model).layers")
        if layer in graph.module_outputs:
            return graph.nodes[graph.module_outputs[layer]]
        for n in graph.nodes:
            if n.name == layer:
                return n
        names = list(graph.module_outputs) + [n.name for n in graph.nodes]
        raise ArgumentError(f"layer={layer!r} is not a module or node of this model."
                            + did_you_mean(layer, names) + " See rfprobe.analyze(model).layers for the names.")
    out = graph.outputs
    if output is not None:
        if not isinstance(out, (dict, list)):
            raise ArgumentError(f"output={output!r}: the model returns a single tensor; leave output=None")
        try:
            out = out[output]
        except (KeyError, IndexError, TypeError):
            keys = list(out) if isinstance(out, dict) else list(range(len(out)))
            raise ArgumentError(f"output={output!r} is not in the model's output; choose one of {keys}") from None
    if isinstance(out, (dict, list)):
        first = next((v for v in tree_flatten(out)[0] if isinstance(v, int)), None)
        if first is None:
            raise ArgumentError("the model returns no tensor derived from its input")
        out = first
    if out is None:
        raise ArgumentError(f"the selected output{'' if output is None else f' (output={output!r})'} "
                            "does not depend on the model input")
    return graph.nodes[out]


def ancestors(graph: Graph, node: Node) -> list[Node]:
    """``node`` and every node it reads from, directly or not, in execution order.

    >>> import torch.nn as nn
    >>> g = trace(nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU()), (1, 8, 8))
    >>> [n.op for n in ancestors(g, g.nodes[-1])]
    ['input', 'conv2d', 'relu']
    """
    seen, todo = set(), [node.id]
    while todo:
        i = todo.pop()
        if i not in seen:
            seen.add(i)
            todo.extend(graph.nodes[i].inputs)
    return [graph.nodes[i] for i in sorted(seen)]


def _unknown_ancestor(graph: Graph, node: Node) -> Node | None:
    """The first op without a rule that ``node`` depends on, if any."""
    return next((n for n in ancestors(graph, node) if isinstance(n.deps, Unknown)), None)
