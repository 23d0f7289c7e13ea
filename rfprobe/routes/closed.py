"""The closed form (Araujo, Norris & Sim, Distill 2019): each node's receptive-field size,
effective stride and effective padding per axis, forward through the graph.

A node whose index ``i`` sees input ``[i*S - P, i*S - P + r - 1]``, followed by an op of
kernel extent ``k``, stride ``s`` and padding ``p``, gives::

    r' = r + (k - 1) * S        S' = S * s        P' = P + p * S

Each formula is its own small function; a node reached by paths of different strides gets
status ``varies``, and paths of one stride whose boxes share neither their centre nor their last
index (see ``_aligned``) get a note; an op with no affine map (upsampling, a transposed conv)
makes it ``varies`` too, and a global op ``global``.

>>> compose_size(3, 1, 3), compose_stride(1, 2), compose_padding(0, 2, 1)
(5, 2, 2)
>>> import rfprobe
>>> from rfprobe.trace import trace
>>> g = trace(rfprobe.build("conv3 conv3/s2 conv3"), (1, 16, 16))
>>> closed_forms(g)[0][-1].rsp
((9, 2, 0), (9, 2, 0))
"""
from __future__ import annotations

from dataclasses import dataclass

from ..hints import LayerStatus
from ..ops import Affine, Broadcast, Global
from ..ops.maps import Piece
from ..render.messages import not_aligned, strides_differ
from ..trace import Graph, Node, PerGraph, ancestors


def compose_size(r: int, S: int, k: int) -> int:
    """RF size after an op of kernel extent ``k``: ``r + (k - 1) * S``."""
    return r + (k - 1) * S


def compose_stride(S: int, s: int) -> int:
    """Effective stride after an op of stride ``s``: ``S * s``."""
    return S * s


def compose_padding(P: int, S: int, p: int) -> int:
    """Effective padding after an op of padding ``p``: ``P + p * S``."""
    return P + p * S


def dilated(k: int, d: int) -> int:
    """Extent of a kernel ``k`` with dilation ``d``: ``d * (k - 1) + 1``."""
    return d * (k - 1) + 1


@dataclass(frozen=True)
class Closed:
    """Closed form of one node: per-axis (size, stride, padding), or why there is none."""

    rsp: tuple[tuple[int, int, int], ...] | None
    status: LayerStatus = "ok"  # ok | global | varies | constant (reads no input position)
    why: str = ""

    @property
    def size(self):
        return None if self.rsp is None else tuple(r for r, _, _ in self.rsp)

    @property
    def stride(self):
        return None if self.rsp is None else tuple(s for _, s, _ in self.rsp)

    @property
    def padding(self):
        return None if self.rsp is None else tuple(p for _, _, p in self.rsp)


_CLOSED = PerGraph()     # closed_forms of each graph, computed once (beside it: a graph holds data only)


def closed_forms(graph: Graph) -> tuple[list[Closed], list[tuple[int, str]]]:
    """Closed form of every node, forward through the graph, plus alignment notes as (node id,
    note) (computed once per graph: choosing the input and the analysis both read them)."""
    forms = _CLOSED.get(graph)
    if forms is None:
        forms = _closed_forms(graph)
        _CLOSED.put(graph, forms)
    return forms


def _closed_forms(graph: Graph) -> tuple[list[Closed], list[tuple[int, str]]]:
    out: list[Closed] = []
    notes: list[tuple[int, str]] = []
    for node in graph.nodes:
        if node.op == "input":
            out.append(Closed(((1, 1, 0),) * graph.dims))
            continue
        if isinstance(node.deps, Global):
            # downstream of a global op the first cause stands (a tensor without spatial axes
            # after a flatten is global because of the flatten, not because of itself)
            prior = next((out[s] for s in node.inputs if out[s].status == "global"), None)
            out.append(prior or Closed(None, "global", f"{node.name}: {node.deps.why}"))
            continue
        if len(node.deps) == 1 and not isinstance(node.deps[0].axes, Global) and node.deps[0].perm is None and all(
                type(m) is Affine and m.taps == (0,) and m.stride == 1 and m.padding == 0
                for m in node.deps[0].axes):
            out.append(out[node.inputs[0]])   # one input read in place (pointwise ops): same form
            continue
        paths = []
        result = None
        for dep, src in zip(node.deps, node.inputs):
            c = out[src]
            if c.status == "constant":            # reads no input position: adds none
                continue
            if isinstance(dep.axes, Global):      # this input reaches the output everywhere
                c = Closed(None, "global", f"{node.name}: {dep.axes.why}")
            if c.status != "ok":
                result = c if result is None or result.status != "global" else result
                continue
            if dep.perm is not None:   # unit (i, j) reads (j, i): no per-axis formula follows it
                result = result or Closed(None, "varies", f"{node.name}: {node.op} pairs the axes of "
                                          f"{graph.nodes[src].name!r} in another order (a transpose)")
                continue
            rsp = []
            for (r, S, P), m in zip(c.rsp, dep.axes):
                if isinstance(m, Affine):
                    k, s, p = m.closed
                    rsp.append((compose_size(r, S, k), compose_stride(S, s), compose_padding(P, S, p)))
                else:
                    rsp = None
                    kind = "broadcast" if isinstance(m, Broadcast) else "position-dependent"
                    result = result or Closed(None, "varies", f"{node.name}: {node.op} is {kind}")
                    break
            if rsp is not None:
                paths.append((graph.nodes[src].name, tuple(rsp), any(type(m) is Piece for m in dep.axes)))
        if result is not None and result.status == "global":
            out.append(result)
            continue
        if result is not None:
            out.append(result)
            continue
        out.append(_merge(node, paths, notes))
    return out, notes


def _merge(node: Node, paths, notes: list[tuple[int, str]]) -> Closed:
    """One closed form for a node reached by several paths. Paths that are pieces of a cat along
    a spatial axis are alternatives (each unit reads one of them): they give one form only where
    they all give the same one. Other paths (an add) are a union, their hull exact where their
    strides agree."""
    if not paths:       # built from constants only (ones_like(x) reads x's shape, not its values)
        return Closed(None, "constant", f"{node.name}: {node.op} reads no input position")
    pieces = {rsp for _, rsp, piece in paths if piece}
    if len(pieces) > 1:
        detail = ", ".join(f"{name} {_box_text(rsp)}" for name, rsp, piece in paths if piece)
        return Closed(None, "varies", f"{node.name}: {node.op} joins pieces along a spatial axis whose units "
                                      f"read different boxes ({detail}), so the box depends on the unit")
    paths = list({(name if not piece else "", rsp): (name, rsp) for name, rsp, piece in paths}.values())
    if len(paths) == 1:
        return Closed(paths[0][1])
    merged = []
    for a in range(len(paths[0][1])):
        strides = {rsp[a][1] for _, rsp in paths}
        if len(strides) > 1:
            return Closed(None, "varies", strides_differ(node.name, a, [(name, rsp[a][1]) for name, rsp in paths]))
        # each path's box for unit 0: unit i reads the same boxes shifted by i * stride
        boxes = [(name, -rsp[a][2], -rsp[a][2] + rsp[a][0] - 1) for name, rsp in paths]
        left = min(first for _, first, _ in boxes)
        right = max(last for _, _, last in boxes)
        if not _aligned([(first, last) for _, first, last in boxes]):
            notes.append((node.id, not_aligned(node.name, a, boxes)))
        merged.append((right - left + 1, strides.pop(), -left))
    return Closed(tuple(merged))


def _box_text(rsp) -> str:
    """Unit ``i``'s box per axis, as the formula ``i*S - P .. i*S - P + r - 1``."""
    return " x ".join(f"[{S}i{-P:+d}, {S}i{r - 1 - P:+d}]" for r, S, P in rsp)


def suggest_layer(graph: Graph, target: Node) -> str | None:
    """A ``layer=`` to try where ``target``'s RF is global or has no spatial axes: the last
    module on its path whose output has spatial axes and a local RF (closed form ``ok`` or
    ``varies``), by its outermost name (``layer4``, not ``layer4.2.relu``); None where none has.

    >>> import torch.nn as nn
    >>> from rfprobe.trace import trace
    >>> net = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> g = trace(net, (1, 8, 8))
    >>> suggest_layer(g, g.nodes[-1])
    '0'
    """
    closed, _ = closed_forms(graph)
    path = {n.id for n in ancestors(graph, target)}
    best = None
    for name, i in graph.module_outputs.items():
        node = graph.nodes[i]
        if name and i in path and node.spatial is not None and closed[i].status in ("ok", "varies"):
            key = (i, -name.count("."), -len(name))     # the latest output, then its outermost module
            if best is None or key > best[0]:
                best = (key, name)
    return None if best is None else best[1]


def _aligned(boxes) -> bool:
    """Paths are aligned on an axis when their boxes share the centre (what 'same' padding
    gives: a residual block) or the last index (what causal padding gives: a TCN's dilated
    branch beside its shortcut). Either way one box holds the others, so their union is the
    largest box and the closed form's hull holds no position that no path reads. Sharing only
    the first index is what a 'valid' conv beside a shortcut cropped at the end gives
    (``x[..., :-2]`` where ``x[..., 1:-1]`` would centre it): a real misalignment.

    >>> _aligned([(-2, 2), (0, 0)]), _aligned([(-4, 0), (0, 0)]), _aligned([(0, 1), (0, 0)])
    (True, True, False)
    """
    return len({first + last for first, last in boxes}) == 1 or len({last for _, last in boxes}) == 1
