"""``analyze``: the closed form per layer and the exact per-unit propagation of one output,
as an :class:`rfprobe.Analysis`.

>>> import rfprobe
>>> a = analyze(rfprobe.build("conv3 conv3/s2 conv3"))
>>> a.size, a.stride, a.padding
((9, 9), (2, 2), (0, 0))
>>> a.input_shape, a.box((0, 0))       # the smallest input that holds the whole RF
((1, 9, 9), ((0, 8), (0, 8)))
"""
from __future__ import annotations

import functools
from typing import Any

from ..errors import ArgumentError
from ..hints import InputShape, ModelLike, Unit
from ..results import Analysis, LayerRow
from ..trace import Graph, Node, axes_lost_at, select
from ..validate import as_model, check_spatial_output
from .closed import closed_forms
from .exact import propagate
from .fit import choose_input


def analyze(model: ModelLike, input_shape: InputShape = None, *, layer: str | None = None,
            output: Any = None, unit: Unit = None) -> Analysis:
    """Closed form per layer and per axis, and the exact per-unit propagation.

    >>> import rfprobe
    >>> a = analyze(rfprobe.build("conv3 relu conv3"))
    >>> a.size, a.stride, a.padding
    ((5, 5), (1, 1), (0, 0))
    >>> [row.size for row in a.layers]
    [(3, 3), (3, 3), (5, 5)]
    """
    model = as_model(model)
    # the fitted input, not just any: whether an op is global can depend on the size (an
    # adaptive pool to 1x1 of a 1x1 map is the identity)
    graph = choose_input(model, input_shape, layer, output, unit)
    return analysis_of(graph, layer, output)


def analysis_of(graph: Graph, layer=None, output=None) -> Analysis:
    target = select(graph, layer, output)
    check_spatial_output(target, "'features'", axes_lost_at(graph, target))
    closed, notes = closed_forms(graph)
    rows = tuple(LayerRow(n.name, n.op, n.shape, c.size, c.stride, c.padding, c.status, c.why)
                 for n, c in zip(graph.nodes[1:target.id + 1], closed[1:target.id + 1]))
    c = closed[target.id]
    if c.status == "constant":
        raise ArgumentError(f"the selected output {target.name!r} does not depend on the model input: it is "
                            f"computed from constants ({c.why}); select another layer= or output=")
    causes = tuple(dict.fromkeys(r.why for r in rows if r.status == "global" and r.why))
    size = stride = padding = size_min = None
    status = c.status
    if c.status == "ok":
        size, stride, padding = c.size, c.stride, c.padding
    elif c.status == "varies":
        size, size_min, stride, padding = _varying(graph, target)
    a = Analysis(rows, size, stride, padding, status, causes, tuple(notes) + tuple(graph.notes),
                 graph.input_shape, target.shape, target.name, size_min, graph,
                 functools.partial(propagate, graph, target))
    return a


def _varying(graph: Graph, target: Node):
    """``(size_max, size_min, None, None)`` for an RF that varies with position: per axis, the
    largest and smallest exact (unbounded) size over the units along that axis through the
    centre unit (the first 66 of them at most: a whole period of any pattern up to that
    length). Stride and padding are always None: a varying RF has no one stride and padding
    (``Analysis`` says so). All four are None when some unit's RF is global."""
    spatial = target.spatial
    dims = len(spatial)
    sizes_max, sizes_min = [], []
    for a in range(dims):
        sizes = []
        centre = [m // 2 for m in spatial]
        for j in range(spatial[a]):
            u = list(centre)
            u[a] = j
            reg = propagate(graph, target, tuple(u), bounded=False)
            if reg.global_cause is not None:
                return None, None, None, None
            sizes.append(reg.size[a])
            if j > 64:
                break
        sizes_max.append(max(sizes))
        sizes_min.append(min(sizes))
    return tuple(sizes_max), tuple(sizes_min), None, None
