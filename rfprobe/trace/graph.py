"""The traced graph as plain data: nodes (one per op), the graph, and queries on it.

A ``Node`` records one op's name, inputs, rule (``deps``), shape and which of its dims are
the spatial axes (``layout``); a ``Graph`` lists the nodes in execution order with where each
module's output and the model's output are. ``select`` picks the output to analyse,
``ancestors`` what it reads. A graph is data only (it pickles, and holds no model or tracer):
what is computed from it or kept for it lives beside it (:class:`PerGraph`).

>>> import torch.nn as nn
>>> from rfprobe.trace import trace
>>> g = trace(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), (1, 8, 8))
>>> [n.op for n in g.nodes], g.nodes[-1].shape
(['input', 'conv2d', 'relu'], (1, 2, 6, 6))
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from torch.utils._pytree import tree_flatten

from ..errors import ArgumentError, UnknownOpError, did_you_mean
from ..ops import Global, InputDep


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
    pieces: Any = None             # where ``layout`` is None: the positions as digits of dims (ops.pieces)

    @property
    def spatial(self) -> tuple[int, ...] | None:
        """Positions per axis: the sizes of the spatial dims, or of the axes whose digits sit in
        other dims (tokens) where each position is one element of those dims; else None."""
        if self.layout is not None:
            return tuple(self.shape[d] for d in self.layout)
        if self.pieces is not None and self.pieces.index((0,) * self.pieces.axes) is not None:
            return self.pieces.extents()
        return None

    @property
    def placed(self) -> bool:
        """Whether the tensor holds spatial positions (one dim per axis, or as digits)."""
        return self.layout is not None or self.pieces is not None

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
        if self.layout is None:     # tokens: each dim that holds digits at the unit's place
            at = self.pieces.index(tuple(unit))
            index = [slice(None) if i is None else i for i in at]
            if at[0] is None and rank > 1:
                index[0] = item
            return tuple(index)
        if rank > len(self.layout) and -rank not in self.layout:
            index[0] = item
        if self.channel_dim is not None and channel is not None:
            index[self.channel_dim] = channel
        for d, u in zip(self.layout, unit):
            index[d] = u
        return tuple(index)


_CONTAINERS = ("Sequential", "ModuleList", "ModuleDict")


@dataclass
class Graph:
    """Traced ops in execution order, with where each module's output and the model's are, and
    the class name of each module by its path (``module_types``: names only, no reference to
    the user's model). Data only: a cache of what a route computes from it, or the tracer that
    can replay it, is kept beside it (:class:`PerGraph`)."""

    nodes: list[Node]
    dims: int
    input_shape: tuple[int, ...]             # (C, *spatial), no batch
    outputs: Any                             # the model's output structure with node ids
    module_outputs: dict[str, int]
    notes: list[str] = field(default_factory=list)
    module_types: dict[str, str] = field(default_factory=dict)   # module path -> class name
    module_containers: dict[str, Any] = field(default_factory=dict)  # module -> its container output, node ids

    def owner(self, node: Node) -> str | None:
        """The module whose output ``node`` is, as the user knows it: the shortest path among
        the modules returning it that ran it (not an nn.Identity that hands it on) and are not
        a bare container (Sequential, ModuleList, ModuleDict), else the shortest; None where no
        module returns it (an op inside one). It is the node's name too (:func:`name_outputs`).

        >>> import torch.nn as nn
        >>> from rfprobe.trace import trace
        >>> g = trace(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), (1, 8, 8))
        >>> g.owner(g.nodes[-1]), g.module_types["1"]
        ('1', 'ReLU')
        """
        paths = [p for p, i in self.module_outputs.items() if i == node.id]
        return _owner(paths, self.module_types, node.module) if paths else None

    def node(self, key: str | int) -> Node:
        if isinstance(key, int):
            return self.nodes[key]
        for n in self.nodes:
            if n.name == key:
                return n
        raise KeyError(key)


class PerGraph:
    """One value per graph, kept beside the graph rather than in it, for as long as the graph
    lives (a route's cache of what it computes from a graph; what a replay needs): the graph
    stays data that pickles and keeps no tracer alive, and a copy or an unpickled graph starts
    without, so a cache is rebuilt from the data when it is asked for. A value must not refer
    to its graph (the graph would never go).

    >>> import torch.nn as nn
    >>> from rfprobe.trace import trace
    >>> g, seen = trace(nn.Conv2d(1, 1, 3), (1, 8, 8)), PerGraph()
    >>> seen.put(g, "computed once"); seen.get(g)
    'computed once'
    >>> del g; len(seen)
    0
    """

    def __init__(self):
        self._values: dict[int, tuple[weakref.ref, Any]] = {}   # id(graph) -> (weak ref to it, value)

    def get(self, graph: "Graph", default: Any = None) -> Any:
        hit = self._values.get(id(graph))
        return hit[1] if hit is not None and hit[0]() is graph else default

    def put(self, graph: "Graph", value: Any) -> None:
        key = id(graph)
        # the entry goes with its graph (before its id can name another one)
        self._values[key] = (weakref.ref(graph, lambda _, key=key: self._values.pop(key, None)), value)

    def drop(self, graph: "Graph") -> None:
        if self.get(graph, self) is not self:
            del self._values[id(graph)]

    def __len__(self) -> int:
        return len(self._values)


def _owner(paths, module_types, module: str) -> str:
    """Of the module paths returning one node, the one a user knows it by (see Graph.owner):
    among those that ran the op (``module``, the innermost one, or a module around it; not an
    nn.Identity after it that hands the tensor on), the shortest that is not a bare container.
    ``module_types``: path -> class name or class."""
    around = [p for p in paths if module == p or module.startswith(p + ".")] or paths
    around = sorted(around, key=lambda p: (len(p), p))
    plain = [p for p in around if getattr(module_types.get(p), "__name__", module_types.get(p)) not in _CONTAINERS]
    return (plain or around)[0]


def name_outputs(nodes: list[Node], module_outputs: dict[str, int], module_types: dict) -> None:
    """Rename ``nodes`` in place so that each name selects its own node with ``layer=``: a
    module's output node is named by the module (:meth:`Graph.owner`), and an op that a module
    runs first but does not return (a residual block's add, before its last ReLU) is named by
    module and op (``'layer1.0:add_#0'``), so its bare module name is left to the module's
    output. The tracer names ops as they run, before it knows which one a module returns.

    >>> import torch.nn as nn
    >>> from rfprobe.trace import trace
    >>> class Block(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv, self.act = nn.Conv2d(1, 1, 3, padding=1), nn.ReLU()
    ...     def forward(self, x):
    ...         return self.act(self.conv(x) + x)
    >>> g = trace(nn.Sequential(Block()), (1, 8, 8))
    >>> [n.name for n in g.nodes]
    ['input', '0.conv', '0:add#0', '0']
    """
    paths: dict[int, list[str]] = {}
    for p, i in module_outputs.items():
        paths.setdefault(i, []).append(p)
    for node in nodes:
        if node.id == 0:                      # the model input keeps its name (an nn.Identity returns it)
            continue
        if node.id in paths:
            node.name = _owner(paths[node.id], module_types, node.module)
        elif node.name in module_outputs:     # the module's first op, not what it returns
            node.name = f"{node.name}:{node.op}#0"


class Unknown(Global):
    """An op without a rule (or a use a rule refuses). Recorded, so ops that only follow the
    selected output do not matter; selecting an output that depends on it raises."""


def select(graph: Graph, layer: str | None = None, output: Any = None, confirm=None) -> Node:
    """The node to probe: a module's or node's output (``layer``), or the model output
    (``output`` = index or key for tuples and dicts). Raises ``UnknownOpError`` when the
    selected output depends on an op without a rule, or (``confirm``: a check by experiment
    that the output depends on the input) when the trace lost the path to it.

    >>> import torch.nn as nn
    >>> from collections import OrderedDict
    >>> from rfprobe.trace import trace
    >>> net = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 1, 3), act=nn.ReLU()))
    >>> g = trace(net, (1, 8, 8))
    >>> select(g, layer="conv").name, select(g).name
    ('conv', 'act')
    >>> select(g, layer="cnov")
    Traceback (most recent call last):
    ...
    rfprobe.errors.ArgumentError: layer='cnov' is not a module or node of this model. Did you mean 'conv'? ...
    """
    node = _pick(graph, layer, output, confirm)
    if node.layout is not None and node.layout != tuple(range(-graph.dims, 0)) and node.channel_dim is None:
        raise ArgumentError(f"the output of {node.name!r} (shape {node.shape}) keeps its spatial axes in dims "
                            f"{node.layout} among {len(node.shape)}: rfprobe probes outputs shaped (N, C, "
                            "*spatial) or channels-last (N, *spatial, C); select a module whose output "
                            "has that shape")
    unknown = unknown_ancestor(graph, node)
    if unknown is not None:
        raise UnknownOpError(f"{unknown.deps.why.rstrip('.')}. The selected output {node.name!r} depends on it "
                             f"(node {unknown.name!r}).")
    return node


def _pick(graph: Graph, layer, output, confirm=None) -> Node:
    if layer is not None:
        if not isinstance(layer, str):
            raise ArgumentError(f"layer={layer!r} must be a module name like 'layer3' or 'features.16', "
                                "or a node name from rfprobe.analyze(model).layers")
        if layer in graph.module_outputs:
            if output is None:
                return graph.nodes[graph.module_outputs[layer]]
            if layer not in graph.module_containers:
                raise ArgumentError(f"output={output!r}: module {layer!r} returns a single tensor; leave output=None "
                                    "or select another layer=")
            return _within(graph, graph.module_containers[layer], output, f"module {layer!r}", confirm)
        for n in graph.nodes:
            if n.name == layer:
                if output is not None:
                    raise ArgumentError(f"output={output!r}: node {layer!r} is one tensor; leave output=None")
                return n
        if layer in graph.module_types:
            raise ArgumentError(f"layer={layer!r} is a module of this model, but its forward did not run on this "
                                "input or returned no tensor computed from it; select a module the forward runs "
                                "(see rfprobe.analyze(model).layers)")
        names = list(graph.module_outputs) + [n.name for n in graph.nodes]
        raise ArgumentError(f"layer={layer!r} is not a module or node of this model."
                            + did_you_mean(layer, names) + " See rfprobe.analyze(model).layers for the names.")
    out = graph.outputs
    if output is not None:
        if not isinstance(out, (dict, list)):
            raise ArgumentError(f"output={output!r}: the model returns a single tensor; leave output=None")
        return _within(graph, out, output, "the model's output", confirm)
    return _first(graph, out, output, confirm)


def _within(graph: Graph, out, output, where: str, confirm=None) -> Node:
    """The tensor at key ``output`` of a container output (dicts, dataclasses and ModelOutputs
    by key, tuples and lists by index; a nested one by a tuple of keys or a dotted key such as
    ``'0.boxes'``)."""
    path = _path(out, output)
    if path is None:
        keys = _keys(out)
        raise ArgumentError(f"output={output!r} is not in {where}; choose one of {keys}."
                            + did_you_mean(str(output), [str(k) for k in keys]))
    for key in path:
        out = out[key]
    return _first(graph, out, output, confirm)


def _path(out, output) -> list | None:
    """The keys that lead to ``output`` in ``out``, or None where there is none."""
    if _has(out, output):
        return [output]
    if isinstance(output, str) and "." in output:
        output = tuple(output.split("."))
    if not isinstance(output, (tuple, list)) or not output:
        return None
    path = []
    for key in output:
        if isinstance(out, list) and isinstance(key, str) and key.lstrip("-").isdigit():
            key = int(key)
        if not _has(out, key):
            return None
        path.append(key)
        out = out[key]
    return path


def _has(out, key) -> bool:
    if isinstance(out, dict):
        try:
            return key in out
        except TypeError:       # an unhashable key
            return False
    return isinstance(out, list) and isinstance(key, int) and not isinstance(key, bool) and -len(out) <= key < len(out)


def _keys(out, prefix: str = "") -> list:
    """Every key of a container output, nested ones dotted (``'0.boxes'``)."""
    items = out.items() if isinstance(out, dict) else enumerate(out) if isinstance(out, list) else ()
    keys: list = []
    for k, v in items:
        keys.append(f"{prefix}{k}" if prefix else k)
        if isinstance(v, (dict, list)):
            keys.extend(_keys(v, f"{prefix}{k}."))
    return keys


def _first(graph: Graph, out, output, confirm=None) -> Node:
    if isinstance(out, (dict, list)):
        first = next((v for v in tree_flatten(out)[0] if isinstance(v, int)), None)
        if first is None:
            raise ArgumentError("the model returns no tensor derived from its input")
        out = first
    if out is None:
        if confirm is not None and confirm():
            raise UnknownOpError(f"the selected output{'' if output is None else f' (output={output!r})'} changes "
                                 "with the model input, but rfprobe lost the path from the input to it: an op it "
                                 "does not see (values read into Python and made a tensor again, or an op run "
                                 "outside torch) cuts it; compute that part with torch functions")
        raise ArgumentError(f"the selected output{'' if output is None else f' (output={output!r})'} "
                            "does not depend on the model input")
    return graph.nodes[out]


def ancestors(graph: Graph, node: Node) -> list[Node]:
    """``node`` and every node it reads from, directly or not, in execution order.

    >>> import torch.nn as nn
    >>> from rfprobe.trace import trace
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


def own_global(nodes: list[Node], node: Node) -> str | None:
    """Why ``node`` itself couples every position of a tensor that has spatial axes (a mean
    over space, a flatten, a BatchNorm in training mode, attention reading a map whole), or
    None. An op on a tensor that an earlier op left without spatial axes (the second Linear
    after a flatten, the convs of a pooled gate) is global because of that earlier op, not its
    own; a flatten only moves the positions into one dim, and the Linear over it mixes them.

    >>> import torch.nn as nn
    >>> from rfprobe.trace import trace
    >>> g = trace(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 3), nn.Linear(3, 3)), (1, 8, 8))
    >>> [(n.op, own_global(g.nodes, n) is not None) for n in g.nodes[1:]]
    [('conv2d', False), ('flatten', False), ('linear', True), ('linear', False)]
    """
    if isinstance(node.deps, Global):
        first = nodes[node.inputs[0]] if node.inputs else None
        return node.deps.why if first is not None and first.placed else None
    for dep, src in zip(node.deps or (), node.inputs):
        if isinstance(dep.axes, Global) and nodes[src].placed:
            return dep.axes.why
    return None


def axes_lost_at(graph: Graph, node: Node) -> Node | None:
    """The op on ``node``'s path that lost the spatial axes: the last node without them whose
    input had them (a reduction that dropped them, a Linear that mixed them), else the last one
    that merged them with other dims (a flatten with the channels); None if none.

    >>> import torch.nn as nn
    >>> from rfprobe.trace import trace
    >>> g = trace(nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), (1, 8, 8))
    >>> axes_lost_at(g, g.nodes[-1]).op         # the flatten of a 1x1 map: no dim is left for the axes
    'flatten'
    """
    found = merged = None
    for n in ancestors(graph, node):
        if not n.placed and any(graph.nodes[i].placed for i in n.inputs):
            found = n
        if n.spatial is None and n.inputs and all(graph.nodes[i].spatial is not None for i in n.inputs):
            merged = n      # holds them only mixed with other dims (a flatten with the channels)
    return found or merged


def unknown_ancestor(graph: Graph, node: Node) -> Node | None:
    """The first op without a rule that ``node`` depends on, if any."""
    return next((n for n in ancestors(graph, node) if isinstance(n.deps, Unknown)), None)
