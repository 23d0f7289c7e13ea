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

The mode (:class:`Tracer`) takes its policy at construction: :data:`EXACT` computes each node's
layout and rule from the op records (:mod:`rfprobe.ops`); the gradient probe's policy swaps in
its surrogates and replaces values instead, and computes no rules.

>>> import torch.nn as nn
>>> g = trace(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), (1, 8, 8))
>>> [n.op for n in g.nodes]
['input', 'conv2d', 'relu']
>>> g.nodes[-1].shape
(1, 2, 6, 6)
"""
from __future__ import annotations

import dataclasses
import functools
import os
import sys
import types
from typing import Any

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from .. import render
from ..errors import (ArgumentError, InternalError, ModelError, ResourceError, RFProbeError,
                      model_raised)
from ..ops import INDEX, OPS, QUERY, WRITE, Global, Op, ValuesNeeded, answer, setitem, setitem_pieces, user_rules
from ..ops.pieces import Pieces
from .infer import Inference
from .model_copy import (available_bytes, backward_hooks, checkpoint_off, input_dtype, meta_twin, private_copy, source_of,
                         user_state_kept)
from .diagnose import name_global_causes
from .graph import Graph, Node, PerGraph, Unknown, name_outputs

_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))    # rfprobe/
_TORCH = os.path.dirname(os.path.abspath(torch.__file__))
_NO_OP = Op("")     # what an op without a record is: no rule, no role


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


class Policy:
    """What a tracing mode does besides recording nodes. The exact route's policy
    (:data:`EXACT`) computes each node's layout and rule from the op records; a policy with
    ``rules = False`` computes none (the gradient probe measures instead)."""

    rules = True

    def substitute(self, op: Op, func, args, kwargs):
        """The call to run for an op whose record has a surrogate (here: the op itself)."""
        return func, args, kwargs

    def post(self, out):
        """What becomes of an op's new output before it is recorded (here: nothing)."""
        return out


EXACT = Policy()


class Tracer(TorchFunctionMode):
    """Records each op the model's code runs as a :class:`Node` (its name, inputs, shape,
    layout and rule), following tensors by identity. Configured once, here: ``policy`` (what
    else it does), ``meta`` (results of ops with a meta answer are built, not run), ``record``
    (keep the calls for :func:`rfprobe.trace.replay`), ``budget`` (bytes a real-valued trace may
    keep), ``protect`` (the name of a node whose tensor must survive in-place ops that follow:
    the probe's target), ``module_types`` and ``private_args`` (a replay's)."""

    def __init__(self, dims: int, policy: Policy = EXACT, *, meta: bool = False, record: bool = False,
                 budget: int | None = None, protect: str | None = None,
                 module_types: dict[str, type] | None = None, private_args: bool = False):
        super().__init__()
        self.dims = dims
        self.policy = policy
        self.rules = policy.rules
        self.trailing = tuple(range(-dims, 0))
        self.nodes: list[Node] = []
        self.of: dict[int, int] = {}        # id(tensor) -> node id
        self.keep: list[torch.Tensor] = []  # keeps traced tensors alive so ids stay unique
        self.module_stack: list[str] = [""]
        self.module_outputs: dict[str, int] = {}
        self.module_containers: dict[str, Any] = {}   # module -> its container output, with node ids
        self.module_types: dict[str, type] = {} if module_types is None else module_types
        self.counts: dict[str, int] = {}
        self.views: dict[int, tuple] = {}   # id(view made by x[...]) -> (x, index)
        self.protect = protect
        self.protected: int | None = None   # the protected node's id, once it is traced
        self.budget = budget
        self.meta = meta
        self.calls: list | None = [] if record else None   # (func, name, args, kwargs, module, out) per op
        self.read_sizes = False             # the model's own code read a spatial size (see replay)
        self.private_args = private_args    # the calls' arguments are rfprobe's own (a replay's)
        self.spent = 0
        self.value_reads: list[str] = []     # traced values handed to Python (tolist, item...)
        self.capture: str | None = None     # a module whose raw output to keep (``captured``)
        self.captured: Any = None
        self.infer = Inference(self)

    def _spend(self, t: torch.Tensor) -> None:
        """Count what a real-valued trace keeps, and stop it before it exhausts the memory (an
        input size search can reach 4096^2, where a real trace of a big model cannot run)."""
        self.spent += t.numel() * t.element_size()
        if self.spent > self.budget:
            raise ResourceError(render.trace_memory(self.spent, self.budget, tuple(self.keep[0].shape)))

    def add(self, op, inputs, deps, t, layout, site="") -> int:
        module = self.module_stack[-1]
        base = module if op != "input" else "input"
        # the first op a module runs is named by the module alone ('layer1.0.conv1'), the rest
        # by module and op ('up:interpolate#1'), so a name says where to look
        n = self.counts.get(base, 0)
        self.counts[base] = n + 1
        plain = f"{base + ':' if base else ''}{op}#{n}"
        name = base if (n == 0 and base) else plain   # graph.name_outputs renames it where needed
        # the call site matters where a message may quote it: ops that are global or unknown
        site = str(site) if isinstance(deps, Global) else ""
        pieces = None
        if isinstance(layout, Pieces):      # positions as digits: a plain layout where each axis is one dim again
            pieces, layout = layout, layout.whole(tuple(t.shape), self.dims)
            pieces = None if layout is not None else pieces
        node = Node(len(self.nodes), name, op, module, tuple(inputs), deps, tuple(t.shape), layout, site, pieces)
        self.nodes.append(node)
        self.of[id(t)] = node.id
        self.keep.append(t)
        if self.budget is not None:
            self._spend(t)
        if self.protect in (name, plain):   # plain: the name a module's first op gets if not returned
            self.protected = node.id
        return node.id

    def call_in(self, module: str, func, args, kwargs):
        """Trace one call as if module ``module`` ran it (a replay of a recorded call)."""
        self.module_stack = [module]
        return self.__torch_function__(func, (), args, kwargs)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", None) or str(func)
        op = OPS.get(name, _NO_OP)
        if op.kind == QUERY:       # shape queries and the like: most calls, keep them cheap
            return self._query(op, name, func, types, args, kwargs)
        if op.surrogate is not None and any(id(t) in self.of for t in _tensors_of(args, kwargs)):
            # only on the data's path: a max over position ids that the model turns into a shape
            # (gemma4_vit's grid) must stay a max
            try:
                func, args, kwargs = self.policy.substitute(op, func, args, kwargs)
            except RFProbeError:
                raise
            except Exception as e:
                raise self._internal(name, _Site(), e) from e
        tensors = _tensors_of(args, kwargs)
        data, in_ids, layouts = self._inputs(tensors)
        if not data:
            out = func(*args, **kwargs)
            if op.from_values and self.value_reads and isinstance(out, torch.Tensor):
                self._from_values(name, out)
            return out
        data, layouts = tuple(data), tuple(layouts)
        site = _Site()
        if op.kind == WRITE:
            return self._write(name, func, args, kwargs, tensors, data, in_ids, layouts, site)
        inplace = ((name.endswith("_") and not name.startswith("__")) or op.inplace
                   or kwargs.get("inplace") is True)
        if inplace and self.protected is not None and self.of.get(id(tensors[0])) == self.protected:
            self.keep[self.protected] = tensors[0].clone()   # the selected output, before the op mutates it
        raw = answer(op, args, kwargs) if self.meta else None
        if raw is None:
            raw = func(*args, **kwargs)
        # an in-place op returns its input, a view shares its input's memory: keep the object the
        # model holds (the probe may not swap it), so writes through it reach the base
        alias = any(raw is t for t in tensors) or _view_of(raw, tensors)
        out = self._follow(op, name, args, kwargs, tensors, data, in_ids, layouts, raw, alias, site)
        if op.kind == INDEX and alias:
            self.views[id(raw)] = (args[0], args[1])
        if inplace and raw is tensors[0] and getattr(raw, "_base", None) is not None:
            try:
                self._write_back(raw, name, site)
            except RFProbeError:
                raise
            except Exception as e:
                raise self._internal(name, site, e) from e
        if self.calls is not None:
            self._record(func, name, args, kwargs, out)
        return out

    def _follow(self, op, name, args, kwargs, tensors, data, in_ids, layouts, raw, alias, site):
        """A node for each tensor of the op's result ``raw``, from the op's rule; the result the
        model gets (the policy's, unless ``raw`` is an alias of an input)."""
        # what follows is rfprobe's own code (the policy, the op's rules): an exception it raises
        # is rfprobe's limitation, never the model's
        try:
            out = raw if alias else self.policy.post(raw)
            outs = [out] if isinstance(out, torch.Tensor) else [t for t in tree_flatten(out)[0]
                                                                if isinstance(t, torch.Tensor)]
            # values, masks (bool) and indices (argmax) computed from them: all are followed
            if not outs and raw is not None and not isinstance(raw, (torch.Tensor, tuple, list)):
                self.read_sizes = True   # not a tensor: maybe a size in disguise (x.untyped_storage())
            for i, t in enumerate(outs):
                layout, deps = (self.infer(op, name, args, kwargs, tensors, data, layouts, t, site, i, outs)
                                if self.rules else (None, None))
                self.add(name, [in_ids[data.index(k)] for k in _dep_args(deps, data)], deps, t, layout, site)
        except RFProbeError:
            raise
        except Exception as e:
            raise self._internal(name, site, e) from e
        return out

    def _inputs(self, tensors):
        """Which of an op's tensors carry data from the model input: their positions among
        ``tensors``, their node ids, and every tensor's layout (None where it carries none)."""
        of, nodes = self.of, self.nodes
        data, in_ids, layouts = [], [], []
        for k, t in enumerate(tensors):
            i = of.get(id(t))
            if i is None and t._base is not None and id(t._base) in of:
                i = self._lost_view(t)      # a view of traced data made where the tracer did not see
            if i is None:
                layouts.append(None)
            else:
                data.append(k)
                in_ids.append(i)
                node = nodes[i]
                layouts.append(node.layout if node.layout is not None else node.pieces)
        return data, in_ids, layouts

    def _query(self, op, name, func, types, args, kwargs):
        """A call that returns no data (``x.shape``, ``x.size()``): run it, noting whether the
        model's code read a spatial size; ``x.mT``/``x.T`` are traced as the transposes they are."""
        if name == "__get__" and args and id(args[0]) in self.of:
            view = self._view_property(func, types, args[0])
            if view is not None:
                return view
        if op.reads_values and args and id(args[0]) in self.of:
            self.value_reads.append(f"{self.nodes[self.of[id(args[0])]].name!r} by {name} at {_Site() or '?'}")
        if op.reads_size and self.calls is not None and not self.read_sizes:
            self.read_sizes = self._reads_space(func, name, args)
        return func(*args, **kwargs)

    def _lost_view(self, t) -> int:
        """A view of a traced tensor that no traced op made (a property or C code the mode does
        not see): an unknown node, so a path through it is refused, never cut."""
        site = _Site()
        why = render.lost_view(self.nodes[self.of[id(t._base)]].name, str(site or "?"), self.module_stack[-1])
        return self.add("view", [self.of[id(t._base)]], Unknown(why), t, None, site)

    def _from_values(self, name, out) -> None:
        """A tensor built from Python values after the model read traced values into Python:
        it may hold them, and the path through Python is one rfprobe cannot follow, so it is an
        unknown node naming both (it raises only if the selected output depends on it)."""
        site = _Site()
        why = render.values_through_python(name, str(site or "?"), self.module_stack[-1], self.value_reads)
        self.add(name, (), Unknown(why), out, None, site)

    def _write(self, name, func, args, kwargs, tensors, data, in_ids, layouts, site):
        """``x[index] = value``: ``x`` becomes a new node reading its old self and ``value``."""
        out = func(*args, **kwargs)
        try:
            write = setitem_pieces if isinstance(layouts[0], Pieces) else setitem
            if write is setitem and any(isinstance(x, Pieces) for x in layouts):
                layouts = tuple(None if isinstance(x, Pieces) else x for x in layouts)
            layout, deps = (self.infer._guard(lambda: write(args, tensors, data, layouts), name, site, layouts[0])
                            if self.rules else (None, None))
        except RFProbeError:
            raise
        except Exception as e:
            raise self._internal(name, site, e) from e
        self.add(name, [in_ids[data.index(k)] for k in _dep_args(deps, data)], deps, args[0], layout, site)
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
        """A property of a traced tensor that returns a tensor is an op, not a query: ``x.mT``,
        ``x.T`` (and ``.mH``, ``.H`` of a real tensor) are traced as the transposes they are,
        ``x.real``/``x.imag`` as ``torch.real``/``torch.imag``, ``x.data`` as the ``detach`` it
        is. Any other property that returns a new tensor becomes an unknown node naming it: the
        path through it would otherwise be lost, and a lost path reads as "no dependence"."""
        prop = getattr(getattr(func, "__self__", None), "__name__", "")
        if prop in ("mT", "mH") and x.dim() >= 2 and (prop == "mT" or not x.is_complex()):
            return self.__torch_function__(torch.Tensor.transpose, types, (x, -2, -1), {})
        if prop in ("T", "H") and (prop == "T" or not x.is_complex()):
            return self.__torch_function__(torch.Tensor.permute, types, (x, *range(x.dim() - 1, -1, -1)), {})
        if prop in ("real", "imag"):
            return self.__torch_function__(getattr(torch, prop), types, (x,), {})
        if prop == "data":
            return self.__torch_function__(torch.Tensor.detach, types, (x,), {})
        out = func(x)
        if isinstance(out, torch.Tensor) and out is not x and id(out) not in self.of:
            site = _Site()
            why = render.untraced_property(prop, str(site or "?"), self.module_stack[-1])
            self.add(f"Tensor.{prop}", [self.of[id(x)]], Unknown(why), out, None, site)
            return out
        return None     # not a tensor (x.shape, x.device): a query, which _query runs

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
        if not self.rules:
            layout, deps = None, None
        elif id(view) in self.views and self.views[id(view)][0] is base:
            index = self.views[id(view)][1]
            keep = not OPS.get(name, _NO_OP).overwrites   # fill_, copy_: the slice reads nothing old
            layout, deps = self.infer._guard(lambda: setitem((base, index, view), (base, view), (0, 1), layouts, keep),
                                       name, site, layouts[0])
        else:
            layout, deps = layouts[0], Unknown(render.write_through_view(name, str(site or "?"), self.nodes[b].name))
        ids = (b, v)
        self.add(name, [ids[k] for k in _dep_args(deps, (0, 1))], deps, base, layout, site)

    def _internal(self, name, site, error) -> RFProbeError:
        """rfprobe's own code raised on op ``name``: say so, name the op and where it ran. Where
        the op's rule is the user's (``register_rule``), the user's rule is at fault."""
        if name in user_rules():
            return ArgumentError(render.user_rule_raised(name, str(site or "?"), self.module_stack[-1], error))
        return InternalError(render.internal_error(name, str(site or "?"), self.module_stack[-1], error))


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


def _dep_args(deps, data):
    if deps is None or isinstance(deps, Global):
        return data
    return [d.tensor for d in deps]


def run(twin: nn.Module, x: torch.Tensor, tracer: Tracer):
    """Run ``twin`` on ``x`` under ``tracer``, which learns the module running each op.

    Each module's ``forward`` is wrapped on the instance (the twin is ours) rather than hooked:
    a module with hooks takes ``nn.Module``'s slow call path, about a tenth of a trace. A module
    that has the user's forward hooks (copied onto the twin, and run) takes it anyway: its
    ``_call_impl`` is wrapped instead, so the ops of its hooks are its own and its output is the
    one its hooks return. Whatever those hooks write into the user's modules is put back.
    Activation checkpointing is off while it runs (:func:`checkpoint_off`)."""
    names = {m: n for n, m in twin.named_modules()}
    tracer.module_types.update({n: type(m) for m, n in names.items()})
    stack, of, outputs, containers = tracer.module_stack, tracer.of, tracer.module_outputs, tracer.module_containers

    def wrap(inner, name):
        def forward(*args, **kwargs):
            stack.append(name)
            try:
                out = inner(*args, **kwargs)
            finally:
                stack.pop()
            if not name:
                return out
            if name == tracer.capture:
                tracer.captured = out
            if isinstance(out, torch.Tensor):
                if id(out) in of:
                    outputs[name] = of[id(out)]
                    if name == tracer.protect:    # named by the module at the end (name_outputs)
                        tracer.protected = outputs[name]
                return out
            mapped = _map_outputs(out, tracer)      # a container: output= selects within it
            first = next((i for i in tree_flatten(mapped)[0] if isinstance(i, int)), None)
            if first is not None:
                outputs[name], containers[name] = first, mapped
            return out
        return forward

    where = {m: "_call_impl" if m.__dict__.get("_forward_hooks") or m.__dict__.get("_forward_pre_hooks")
             else "forward" for m in names}
    own = {m: m.__dict__.get(where[m]) for m in names}
    for m, name in names.items():
        m.__dict__[where[m]] = wrap(own[m] or types.MethodType(getattr(type(m), where[m]), m), name)
    try:
        tracer.add("input", (), None, x, tuple(range(-tracer.dims, 0)))
        # the model's own randomness (dropout in training mode) must not move the user's RNG
        cuda = [x.device.index or 0] if x.device.type == "cuda" else []
        # checkpointing would recompute a segment in the backward, out of the tracer's sight
        with user_state_kept(source_of(twin)), torch.random.fork_rng(devices=cuda), checkpoint_off(), tracer:
            out = twin(x)
        name_outputs(tracer.nodes, outputs, tracer.module_types)
        return out
    finally:
        for m, f in own.items():
            if f is None:
                del m.__dict__[where[m]]
            else:
                m.__dict__[where[m]] = f


# what replay() needs of a meta trace, (tracer, input), by graph: beside the graph, not in it, as
# it keeps the model's meta copy alive (choose_input drops it before it returns)
RECORDINGS = PerGraph()

# torch's messages for an input too small (or of a size the model cannot split): the same on
# the CPU, so a real-valued trace is not tried
_SHAPE_ERRORS = ("Kernel size can't be greater", "too small", "Output size is", "non-positive",
                 "Calculated output size", "Padding size should be less", "Expected input's",
                 "is invalid for input of size")


def trace(model: nn.Module, input_shape: tuple[int, ...], dims: int | None = None, record: bool = False) -> Graph:
    """Trace ``model`` on an input of ``input_shape`` = (C, *spatial) (batch 1 is added).
    ``record``: keep what :func:`replay` needs, beside the graph (``RECORDINGS``)."""
    if not isinstance(model, nn.Module):
        raise ArgumentError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    dims = dims or len(input_shape) - 1
    notes: list[str] = []
    hooked = backward_hooks(model)
    if hooked:
        notes.append(render.hooks_note(hooked))
    tracer = None     # until the private copy exists: a failure before is the copy's
    meta_error: Exception | None = None
    try:
        twin = meta_twin(model)
        x = torch.empty((1, *input_shape), device="meta", dtype=input_dtype(model))
        tracer = Tracer(dims, meta=True, record=record)
        out = run(twin, x, tracer)
    except ValuesNeeded as e:     # an op's rule needs the values of a constant: trace on the CPU
        meta_error = e
        notes.append(render.values_note(str(e)))
    except RFProbeError:
        raise
    except Exception as e:  # the model reads values: trace for real on the CPU
        if tracer is not None and any(w in str(e) for w in _SHAPE_ERRORS):   # too small: same on the CPU
            done = [n.name for n in tracer.nodes[-3:]]
            raise ModelError(model_raised(e, input_shape, done=done)) from e
        meta_error = e
        notes.append(render.fallback_note(type(e).__name__, str(e)))
    if meta_error is not None:
        tracer = None
        try:
            twin = private_copy(model, "cpu")
            x = torch.rand((1, *input_shape), dtype=input_dtype(model),
                           generator=torch.Generator().manual_seed(0))  # the user's RNG stays put
            free = available_bytes(torch.device("cpu"))
            tracer = Tracer(dims, budget=None if free is None else free // 2)
            with torch.no_grad():
                out = run(twin, x, tracer)
        except RFProbeError:
            raise
        except Exception as e:
            if tracer is None:
                raise ModelError(render.copy_failed(e)) from e
            done = [n.name for n in tracer.nodes[-3:]]
            raise ModelError(model_raised(e, input_shape, done=done)) from e
    name_global_causes(tracer.nodes, tracer.module_types)
    outputs = _map_outputs(out, tracer)
    graph = Graph(tracer.nodes, dims, tuple(input_shape), outputs, tracer.module_outputs, notes,
                  module_types={n: t.__name__ for n, t in tracer.module_types.items()},
                  module_containers=tracer.module_containers)
    if tracer.calls is not None and not tracer.read_sizes and not any(isinstance(n.deps, Unknown) for n in tracer.nodes):
        RECORDINGS.put(graph, (tracer, x))
    return graph


def _map_outputs(out, tracer):
    """The model's output structure with each tensor replaced by its node id: dicts (and
    ``ModelOutput``s) and dataclasses become dicts, tuples and lists become lists."""
    if isinstance(out, torch.Tensor):
        return tracer.of.get(id(out))
    if isinstance(out, dict):
        return {k: _map_outputs(v, tracer) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return [_map_outputs(v, tracer) for v in out]
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        return {f.name: _map_outputs(getattr(out, f.name), tracer) for f in dataclasses.fields(out)}
    return None


def depends_on_input(model: nn.Module, input_shape: tuple[int, ...], layer: str | None, output: Any) -> bool:
    """Whether the selected output changes when the input does, by experiment: runs of a
    private CPU copy on two different random inputs (and the first again: an output that is
    not the same for the same input, such as uninitialised memory, proves nothing). Where the trace found no path from the input to
    the output, this tells a model that ignores its input from a path the tracer lost."""
    values = []
    for seed in (1, 1, 2):      # the same input twice: an output that moves anyway (empty_like) tells nothing
        twin = private_copy(model, "cpu")
        x = torch.rand((1, *input_shape), dtype=input_dtype(model), generator=torch.Generator().manual_seed(seed))
        tracer = Tracer(len(input_shape) - 1)
        tracer.capture = layer
        try:
            with torch.no_grad():
                out = run(twin, x, tracer)
        except Exception:       # the model cannot run on real values here: no evidence either way
            return False
        out = tracer.captured if layer is not None else out
        values.append(_at(out, output))
    a, again, b = values
    if not all(isinstance(v, torch.Tensor) for v in values) or not _same(a, again):
        return False
    return not _same(a, b)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.equal(a, b) or (a.isnan() & b.isnan()).any() and
                                       torch.equal(a.nan_to_num(), b.nan_to_num()))


def _at(out, output):
    """The value at key ``output`` of a (nested) container output, read as :func:`select` reads
    its node ids (a tuple or dotted key walks nested containers)."""
    if output is None:
        flat = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)] if not isinstance(out, torch.Tensor) else [out]
        return flat[0] if flat else None
    keys = [output]
    if isinstance(output, (tuple, list)) or (isinstance(output, str) and "." in output):
        keys = list(output.split(".")) if isinstance(output, str) else list(output)
    for key in keys:
        if dataclasses.is_dataclass(out) and not isinstance(out, dict):
            out = getattr(out, key, None)
        elif isinstance(out, dict):
            out = out.get(key) if key in out else out.get(output)
        elif isinstance(out, (list, tuple)):
            out = out[int(key)]
        else:
            return None
    return _at(out, None)
