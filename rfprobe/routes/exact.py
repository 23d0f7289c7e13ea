"""Exact propagation: the set of input positions one output unit reads, found by walking the
traced graph backwards from the unit, carrying per axis the exact set of indices it depends on
(a union of products of per-axis index sets).

``bounded=True`` follows the real tensor extents (zero padding reads nothing, reflect/circular
padding wraps) and is what the gradient probe must reproduce; ``bounded=False`` pretends every
tensor is infinite, which gives the theoretical box that may reach into the padding.

>>> import rfprobe
>>> from rfprobe.trace import trace
>>> g = trace(rfprobe.build("conv3/d2 conv3"), (1, 12, 12))
>>> reg = propagate(g, g.nodes[-1], (0, 0), bounded=True)
>>> reg.box, reg.size
(((0, 6), (0, 6)), (7, 7))
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np

from ..ops import Global
from ..results import Product, Region
from ..trace import Graph, Node, PerGraph

# each graph's walked units, (output node id, unit, bounded) -> Region: beside the graph, which
# holds data only (a copy or an unpickled graph walks again)
REGIONS = PerGraph()


def _inside(x: np.ndarray, y: np.ndarray) -> bool:
    """Sorted unique index sets: is ``x`` a subset of ``y``? Bounds first (most pairs fail
    there), a contiguous ``y`` needs nothing more; ``isin`` only for gapped sets."""
    if len(x) > len(y) or x[0] < y[0] or x[-1] > y[-1]:
        return False
    return len(y) == y[-1] - y[0] + 1 or bool(np.isin(x, y, assume_unique=True).all())


def _simplify(products: list[Product]) -> list[Product]:
    """Fewer products for the same set: join the products that are equal on every axis but
    one (grouped by the other axes), drop one inside another; repeat until nothing changes.
    Each axis of a product is a sorted array of unique indices."""
    ps = list({tuple(a.tobytes() for a in p): p for p in products}.values())
    ndim = len(ps[0]) if ps else 0
    changed = True
    while changed and len(ps) > 1:
        changed = False
        for k in range(ndim):
            groups: dict[tuple, list[Product]] = {}
            for p in ps:
                groups.setdefault(tuple(a.tobytes() for n, a in enumerate(p) if n != k), []).append(p)
            if len(groups) < len(ps):
                ps = [g[0] if len(g) == 1 else
                      tuple(functools.reduce(np.union1d, [q[k] for q in g]) if n == k else a
                            for n, a in enumerate(g[0]))
                      for g in groups.values()]
                changed = True
        ps.sort(key=lambda p: -math.prod(len(a) for a in p))
        keep: list[Product] = []
        for p in ps:
            if not any(all(_inside(x, y) for x, y in zip(p, q)) for q in keep):
                keep.append(p)
        changed = changed or len(keep) < len(ps)
        ps = keep
    return ps


def propagate(graph: Graph, target: Node, unit: Sequence[int], bounded: bool) -> Region:
    """Exact set of input positions that output ``unit`` of ``target`` depends on, walked once
    per graph: the routes ask for the same unit several times (one ``verify`` asks for its unit
    bounded and unbounded, the probe and the sizes of a position-dependent RF ask again), so
    the answer is kept beside the graph in :data:`REGIONS`, by (output node id, unit, bounded),
    plain ints and a frozen :class:`~rfprobe.results.Region`.

    >>> import rfprobe
    >>> from rfprobe.trace import trace
    >>> g = trace(rfprobe.build("conv3 conv3"), (1, 8, 8))
    >>> propagate(g, g.nodes[-1], (1, 2), bounded=False) is propagate(g, g.nodes[-1], [1, 2], False)
    True
    >>> list(REGIONS.get(g))
    [(2, (1, 2), False)]
    """
    key = (target.id, tuple(int(u) for u in unit), bool(bounded))
    regions = REGIONS.get(graph)
    if regions is None:
        regions = {}
        REGIONS.put(graph, regions)
    region = regions.get(key)
    if region is None:
        region = regions[key] = _walk(graph, target, key[1], key[2])
    return region


def _walk(graph: Graph, target: Node, unit: tuple[int, ...], bounded: bool) -> Region:
    """:func:`propagate`'s walk, backwards from ``unit`` through the graph (uncached). An op
    that reads every position of an input that holds positions (attention over pooled keys,
    a global pool) reads all of them, and the walk goes on from there: the region is then
    global, with the exact set of what the mixed tensors read (``global_cause`` and
    ``products``). Only an input without spatial axes makes the set every position."""
    extent = graph.nodes[0].spatial
    regions: dict[int, list[Product] | str] = {target.id: [tuple(np.array([u], dtype=np.int64) for u in unit)]}
    causes: dict[int, str] = {}         # the first global op on the way to a node's region
    for node in reversed(graph.nodes[1:target.id + 1]):
        reg = regions.pop(node.id, None)
        if reg is None:
            continue
        if isinstance(reg, str) or (node.layout is None and node.pieces is None):
            why = reg if isinstance(reg, str) else f"{node.name}: {node.op} has no spatial axes"
            for src in node.inputs:
                if not isinstance(regions.get(src), str):
                    regions[src] = why
            continue
        for dep, src in zip(node.deps if not isinstance(node.deps, Global) else
                            [_WHOLE] * len(node.inputs), node.inputs):
            if isinstance(regions.get(src), str):
                continue
            cause = causes.get(node.id)
            if dep is _WHOLE or isinstance(dep.axes, Global):    # every position of this input reaches the unit
                why = f"{node.name}: {(node.deps if dep is _WHOLE else dep.axes).why}"
                whole = _every_position(graph.nodes[src])
                if whole is None:
                    regions[src] = why
                    continue
                mapped, cause = [whole], cause or why
            else:
                mapped = _mapped(dep, reg, bounded)
            if cause is not None:
                causes.setdefault(src, cause)
            regions[src] = _simplify(regions.get(src, []) + mapped)
    reg = regions.get(0, [])
    if isinstance(reg, str):
        return Region((), reg, extent)
    return Region(tuple(reg), causes.get(0), extent)


_WHOLE = object()       # a dep of a node whose deps are Global: it reads all of each input


def _every_position(node: Node) -> Product | None:
    """Every position a tensor holds, as one product; None for one without spatial axes."""
    sizes = node.spatial if node.layout is not None else (
        node.pieces.extents() if node.pieces is not None else None)
    return None if sizes is None else tuple(np.arange(n, dtype=np.int64) for n in sizes)


def _mapped(dep, reg: list[Product], bounded: bool) -> list[Product]:
    """The products of an input that the products ``reg`` of a node read through ``dep``."""
    mapped = []
    for p in reg:
        axes = tuple(np.unique(m.deps(ix, bounded)) for m, ix in zip(dep.axes, p))
        if dep.perm is not None:     # output axis a read the input's axis perm[a]
            axes = tuple(axes[dep.perm.index(b)] for b in range(len(axes)))
        if all(len(a) for a in axes):
            mapped.append(axes)
    return mapped


# ----------------------------------------------------------------------------- analysis
