"""A pass over a finished graph that names what makes its global nodes global.

A global op's own reason ("mean over spatial dims") is true but does not say why the RF is
global: this pass follows which global op each node derives from and renames the cause where
a pattern explains it, as a user would say it:

* squeeze-excitation: a gate computed from a global op, broadcast over space and multiplied
  into a feature map;
* the user-defined module (not torch.nn's) around a global op.

>>> import torch.nn as nn
>>> from rfprobe.trace import trace
>>> class SE(nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.conv = nn.Conv2d(2, 2, 3, padding=1)
...     def forward(self, x):
...         x = self.conv(x)
...         return x * x.mean((2, 3), keepdim=True).sigmoid()
>>> g = trace(SE(), (2, 8, 8))
>>> g.nodes[2].deps.why.split(":")[0]
'squeeze-excitation'
"""
from __future__ import annotations

from ..ops import OPS, Broadcast, Global
from .graph import Node, Unknown, own_global

def name_global_causes(nodes: list[Node], module_types: dict[str, type]) -> None:
    """Rename the causes of ``nodes``' global ops in place (see the module's docstring).
    ``module_types``: module path -> class, for the owner."""
    taint: dict[int, int] = {}      # node id -> id of the global op it derives from
    named: set[int] = set()         # global ops already renamed by a pattern
    for node in nodes:
        if isinstance(node.deps, Global):
            if not isinstance(node.deps, Unknown):
                # a global op on a map with spatial axes is its own origin (the second of two
                # SE gates pools again), one on a pooled vector carries the origin it reads
                own = own_global(nodes, node) is not None
                taint[node.id] = node.id if own else next((taint[s] for s in node.inputs if s in taint), node.id)
                cls, path = _owner(module_types, node.module)
                if cls and path != node.module:
                    node.deps = Global(f"{node.deps.why} in {cls} {path!r}")
        elif node.deps is not None and taint:
            _follow(nodes, node, taint, named)


def _follow(nodes: list[Node], node: Node, taint: dict[int, int], named: set[int]) -> None:
    """Carry the global origin through a local op; a product of a feature map with a gate
    broadcast over space names the gate's origin as squeeze-excitation."""
    tainted = [(d, s) for d, s in zip(node.deps, node.inputs) if s in taint]
    if not tainted:
        return
    taint[node.id] = taint[tainted[0][1]]
    spread = [d for d in node.deps if not isinstance(d.axes, Global)
              and not all(isinstance(m, Broadcast) for m in d.axes)]
    op = OPS.get(node.op)
    if op is None or not op.scales or not spread:
        return
    for d, s in tainted:
        if not isinstance(d.axes, Global) and all(isinstance(m, Broadcast) for m in d.axes):
            origin = nodes[taint[s]]
            taint[node.id] = origin.id
            if origin.id not in named:
                named.add(origin.id)
                origin.deps = Global(f"squeeze-excitation: {origin.deps.why} computes a gate that "
                                     f"scales the whole feature map at {node.name!r}")


def _owner(module_types: dict[str, type], module: str) -> tuple[str, str]:
    """Class and path of the innermost user-defined module around ``module`` (not torch.nn's)."""
    parts = module.split(".") if module else []
    for cut in range(len(parts), -1, -1):
        path = ".".join(parts[:cut])
        cls = module_types.get(path)
        if cls is not None and not cls.__module__.startswith("torch.nn"):
            return cls.__name__, path
    return "", ""
