"""The traced graph as plain data: nodes (one per op), the graph, and queries on it.

A ``Node`` records one op's name, inputs, rule (``deps``), shape and which of its dims are
the spatial axes (``layout``); a ``Graph`` lists the nodes in execution order with where each
module's output and the model's output are. ``select`` picks the output to analyse,
``ancestors`` what it reads.

>>> import torch.nn as nn
>>> from rfprobe.trace import trace
>>> g = trace(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), (1, 8, 8))
>>> [n.op for n in g.nodes], g.nodes[-1].shape
(['input', 'conv2d', 'relu'], (1, 2, 6, 6))
"""
from __future__ import annotations

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


_CONTAINERS = ("Sequential", "ModuleList", "ModuleDict")


@dataclass
class Graph:
    """Traced ops in execution order, with where each module's output and the model's are, and
    the class name of each module by its path (``module_types``: names only, no reference to
    the user's model)."""

    nodes: list[Node]
    dims: int
    input_shape: tuple[int, ...]             # (C, *spatial), no batch
    outputs: Any                             # the model's output structure with node ids
    module_outputs: dict[str, int]
    notes: list[str] = field(default_factory=list)
    module_types: dict[str, str] = field(default_factory=dict)   # module path -> class name
    closed: Any = field(default=None, repr=False, compare=False)   # routes.closed.closed_forms' cache
    recording: Any = field(default=None, repr=False, compare=False)  # what replay() needs (meta traces)

    def owner(self, node: Node) -> str | None:
        """The module whose output ``node`` is, as the user knows it: the shortest path among
        the modules returning it that is not a bare container (Sequential, ModuleList,
        ModuleDict), else the shortest; None where no module returns it (an op inside one).

        >>> import torch.nn as nn
        >>> from rfprobe.trace import trace
        >>> g = trace(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), (1, 8, 8))
        >>> g.owner(g.nodes[-1]), g.module_types["1"]
        ('1', 'ReLU')
        """
        paths = sorted((p for p, i in self.module_outputs.items() if i == node.id), key=lambda p: (len(p), p))
        plain = [p for p in paths if self.module_types.get(p) not in _CONTAINERS]
        return (plain or paths or [None])[0]

    def node(self, key: str | int) -> Node:
        if isinstance(key, int):
            return self.nodes[key]
        for n in self.nodes:
            if n.name == key:
                return n
        raise KeyError(key)


class Unknown(Global):
    """An op without a rule (or a use a rule refuses). Recorded, so ops that only follow the
    selected output do not matter; selecting an output that depends on it raises."""


def select(graph: Graph, layer: str | None = None, output: Any = None) -> Node:
    """The node to probe: a module's or node's output (``layer``), or the model output
    (``output`` = index or key for tuples and dicts). Raises ``UnknownOpError`` when the
    selected output depends on an op without a rule.

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
    node = _pick(graph, layer, output)
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


def axes_lost_at(graph: Graph, node: Node) -> Node | None:
    """The op on ``node``'s path that lost the spatial axes: the last node without them whose
    input had them (a reshape that merged them, a reduction that dropped one); None if none.

    >>> import torch.nn as nn
    >>> from rfprobe.trace import trace
    >>> g = trace(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()), (1, 8, 8))
    >>> axes_lost_at(g, g.nodes[-1]).op
    'flatten'
    """
    found = None
    for n in ancestors(graph, node):
        if n.layout is None and any(graph.nodes[i].layout is not None for i in n.inputs):
            found = n
    return found


def unknown_ancestor(graph: Graph, node: Node) -> Node | None:
    """The first op without a rule that ``node`` depends on, if any."""
    return next((n for n in ancestors(graph, node) if isinstance(n.deps, Unknown)), None)
