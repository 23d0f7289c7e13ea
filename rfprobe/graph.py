"""Trace any ``nn.Module`` into a graph of ops with shapes and receptive-field rules.

The tracer is a ``TorchFunctionMode``: it sees every torch function, ``torch.nn.functional``
call and tensor method the model's own code makes (modules and functional code alike), on a
private copy of the model whose tensors live on the ``meta`` device, so no real compute runs.
Data-dependent control flow simply takes the branch the trace input takes; a model that
cannot run on ``meta`` (it reads values, e.g. ``.item()``) is traced again on the CPU with
real values, and ``Graph.notes`` says so.

>>> import torch.nn as nn
>>> g = trace(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), (1, 8, 8))
>>> [n.op for n in g.nodes]
['input', 'conv2d', 'relu']
>>> g.nodes[-1].shape
(1, 2, 6, 6)
"""
from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from . import rules
from .errors import ArgumentError, ModelError, RFProbeError, UnknownOpError, did_you_mean
from .rules import Call, Global, InputDep

_HERE = os.path.dirname(os.path.abspath(__file__))
_TORCH = os.path.dirname(os.path.abspath(torch.__file__))


@dataclass
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


@dataclass
class Graph:
    """Traced ops in execution order, with where each module's output and the model's are."""

    nodes: list[Node]
    dims: int
    input_shape: tuple[int, ...]             # (C, *spatial), no batch
    outputs: Any                             # the model's output structure with node ids
    module_outputs: dict[str, int]
    notes: list[str] = field(default_factory=list)

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
        fn = os.path.abspath(f.f_code.co_filename)
        if not fn.startswith(_HERE) and not fn.startswith(_TORCH):
            return f"{os.path.basename(fn)}:{f.f_lineno}"
        f = f.f_back
    return ""


class _Tracer(TorchFunctionMode):
    def __init__(self, dims: int):
        super().__init__()
        self.dims = dims
        self.nodes: list[Node] = []
        self.of: dict[int, int] = {}        # id(tensor) -> node id
        self.keep: list[torch.Tensor] = []  # keeps traced tensors alive so ids stay unique
        self.module_stack: list[str] = [""]
        self.module_outputs: dict[str, int] = {}
        self.counts: dict[str, int] = {}

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
        node = Node(len(self.nodes), name, op, module, tuple(inputs), deps, tuple(t.shape), layout, site)
        self.nodes.append(node)
        self.of[id(t)] = node.id
        self.keep.append(t)
        return node.id

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        flat, _ = tree_flatten((args, kwargs))
        tensors = tuple(x for x in flat if isinstance(x, torch.Tensor))
        data = tuple(k for k, t in enumerate(tensors) if id(t) in self.of)
        if not data or name in rules.IGNORED:
            return func(*args, **kwargs)
        in_ids = [self.of[id(tensors[k])] for k in data]
        out = self.post(func(*args, **kwargs))
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        outs = [t for t in outs if t.is_floating_point() or t.is_complex()] or outs[:0]
        site = _site()
        layouts = tuple(self.nodes[self.of[id(t)]].layout if id(t) in self.of else None for t in tensors)
        for t in outs:
            layout, deps = self._rule(func, name, args, kwargs, tensors, data, layouts, t, site)
            self.add(name, [in_ids[data.index(k)] for k in _dep_args(deps, data)], deps, t, layout, site)
        return out

    def _rule(self, func, name, args, kwargs, tensors, data, layouts, out, site):
        main = layouts[data[0]]
        if all(layouts[k] is None for k in data):
            return None, Global(f"{name} of a tensor without spatial axes")
        if name in rules.LAYOUT_OPS:
            return _layout_op(name, args, kwargs, tensors, data, layouts, out, self.dims)
        layout = tuple(range(-self.dims, 0)) if out.dim() >= self.dims + 1 and out.dim() == tensors[data[0]].dim() else None
        rule = rules.RULES.get(name)
        if rule is None:
            raise UnknownOpError(
                f"op {name!r} at {site or '?'} (module {self.module_stack[-1] or '<model>'!r}) has no "
                f"receptive-field rule. Declare one: rfprobe.register_rule({name!r}, 'pointwise' | "
                f"'channel' | 'global' | function).")
        call = Call(name, args, kwargs, data, tensors, layouts, tuple(out.shape), self.dims)
        try:
            deps = rule(call)
        except UnknownOpError as e:
            raise UnknownOpError(f"{e} (op {name!r} at {site or '?'}, module "
                                 f"{self.module_stack[-1] or '<model>'!r})") from None
        if layout is None and not isinstance(deps, Global):
            deps = Global(f"{name} changes the layout so that spatial axes are lost")
        return layout, (deps if isinstance(deps, Global) else tuple(deps))


def _dep_args(deps, data):
    if deps is None or isinstance(deps, Global):
        return data
    return [d.arg for d in deps]


def _layout_op(name, args, kwargs, tensors, data, layouts, out, dims):
    """view/reshape/permute/...: spatial axes survive when they stay the trailing dims with the
    same sizes (row-major reshapes of leading dims, channel shuffles, channel chunks)."""
    k = data[0]
    src = tensors[k]
    layout = layouts[k]
    spatial = tuple(src.shape[d] for d in layout)
    trailing = layout == tuple(range(-dims, 0))
    keeps = (trailing and out.dim() >= dims + 1 and tuple(out.shape[-dims:]) == spatial)
    if keeps and name in ("permute", "transpose", "movedim", "swapaxes"):
        if name == "permute":
            perm = args[1:] if len(args) > 1 and isinstance(args[1], int) else tuple(args[1] if len(args) > 1 else kwargs["dims"])
            perm = [p % src.dim() for p in perm]
            keeps = all(perm[-i] == src.dim() - i for i in range(1, dims + 1))
        else:
            a = args[1] if len(args) > 1 else kwargs.get("dim0")
            b = args[2] if len(args) > 2 else kwargs.get("dim1")
            moved = {a % src.dim(), b % src.dim()}
            keeps = not any(src.dim() + d in moved for d in layout)
    if keeps and name in ("chunk", "split", "narrow", "select", "unbind"):
        dim = args[2] if name in ("chunk", "split") and len(args) > 2 else (args[1] if name in ("narrow", "select", "unbind") and len(args) > 1 else kwargs.get("dim", 0))
        keeps = (dim % src.dim()) - src.dim() not in layout
    if keeps:
        return tuple(range(-dims, 0)), tuple(InputDep(j, tuple(rules.identity(n) for n in spatial)) for j in data[:1])
    return None, Global(f"{name} merges or moves spatial axes (every position can reach every output)")


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


def private_copy(model: nn.Module, device: str | torch.device = "meta") -> nn.Module:
    """A deep copy of ``model`` that shares nothing with it, hooks removed.

    On ``meta`` no parameter memory is copied. The user's object is never touched."""
    memo: dict[int, Any] = {}
    if str(device) == "meta":
        for t in list(model.parameters()) + list(model.buffers()):
            if id(t) in memo:
                continue
            new = torch.empty_like(t, device="meta")
            memo[id(t)] = nn.Parameter(new, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else new
    with torch.no_grad():
        twin = copy.deepcopy(model, memo)
    for m in twin.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                     "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs",
                     "_forward_hooks_always_called", "_state_dict_hooks", "_load_state_dict_pre_hooks"):
            d = getattr(m, attr, None)
            if isinstance(d, dict):
                d.clear()
        m._is_full_backward_hook = None
    if str(device) != "meta":
        twin.to(device)
    return twin


def _run(twin: nn.Module, x: torch.Tensor, tracer: _Tracer):
    names = {m: n for n, m in twin.named_modules()}
    handles = []

    def pre(m, inp):
        tracer.module_stack.append(names[m])

    def post(m, inp, out):
        tracer.module_stack.pop()
        first = next((t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)), None)
        if first is not None and id(first) in tracer.of and names[m]:
            tracer.module_outputs[names[m]] = tracer.of[id(first)]

    for m in twin.modules():
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post, always_call=True))
    try:
        tracer.add("input", (), None, x, tuple(range(-tracer.dims, 0)))
        with tracer:
            return twin(x)
    finally:
        for h in handles:
            h.remove()


def trace(model: nn.Module, input_shape: tuple[int, ...], dims: int | None = None) -> Graph:
    """Trace ``model`` on an input of ``input_shape`` = (C, *spatial) (batch 1 is added)."""
    if not isinstance(model, nn.Module):
        raise ArgumentError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    dims = dims or len(input_shape) - 1
    notes: list[str] = []
    try:
        twin = private_copy(model, "meta")
        x = torch.empty((1, *input_shape), device="meta")
        tracer = _Tracer(dims)
        out = _run(twin, x, tracer)
    except RFProbeError:
        raise
    except Exception as meta_error:  # the model reads values: trace for real on the CPU
        notes.append(f"traced on the CPU with real values: on meta tensors the model raised "
                     f"{type(meta_error).__name__}: {meta_error}"[:300])
        try:
            twin = private_copy(model, "cpu")
            dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
            x = torch.rand((1, *input_shape), dtype=dtype)
            tracer = _Tracer(dims)
            with torch.no_grad():
                out = _run(twin, x, tracer)
        except RFProbeError:
            raise
        except Exception as e:
            done = [n.name for n in tracer.nodes[-3:]]
            raise ModelError(
                f"the model raised {type(e).__name__} on an input of shape {(1, *input_shape)} "
                f"(input_shape={tuple(input_shape)}): {e}. rfprobe had traced up to {done}.") from e
    outputs = _map_outputs(out, tracer)
    return Graph(tracer.nodes, dims, tuple(input_shape), outputs, tracer.module_outputs, notes)


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
    (``output`` = index or key for tuples and dicts)."""
    if layer is not None:
        if layer in graph.module_outputs:
            return graph.nodes[graph.module_outputs[layer]]
        for n in graph.nodes:
            if n.name == layer:
                return n
        names = list(graph.module_outputs) + [n.name for n in graph.nodes]
        raise ArgumentError(f"layer={layer!r} is not a module or node of this model."
                            + did_you_mean(layer, names) + " See rfprobe.analyze(model).layers.")
    out = graph.outputs
    if output is not None:
        try:
            out = out[output]
        except (KeyError, IndexError, TypeError):
            keys = list(out) if isinstance(out, dict) else (list(range(len(out))) if isinstance(out, list) else [])
            raise ArgumentError(f"output={output!r} is not in the model's output; choose one of {keys}") from None
    if isinstance(out, (dict, list)):
        first = next((v for v in (out.values() if isinstance(out, dict) else out) if isinstance(v, int)), None)
        if first is None:
            raise ArgumentError("the model returns no tensor derived from its input")
        out = first
    if out is None:
        raise ArgumentError("the selected output does not depend on the model input")
    return graph.nodes[out]
