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

from .. import render
from ..defaults import as_model, layer_name
from ..errors import ArgumentError
from ..hints import InputShape, Layer, ModelLike, Unit
from ..results import Analysis, LayerRow
from ..trace import Graph, Node, ancestors, axes_lost_at, own_global, select
from ..validate import check_spatial_output
from .closed import closed_forms, suggest_layer
from .exact import propagate
from .fit import choose_input


def analyze(model: ModelLike, input_shape: InputShape = None, *, layer: Layer = None,
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
    layer = layer_name(model, layer)
    # the fitted input, not just any: whether an op is global can depend on the size (an
    # adaptive pool to 1x1 of a 1x1 map is the identity)
    graph = choose_input(model, input_shape, layer, output, unit)
    return analysis_of(graph, layer, output)


def analysis_of(graph: Graph, layer=None, output=None) -> Analysis:
    target = select(graph, layer, output)
    check_spatial_output(target, suggest_layer(graph, target) if target.spatial is None else None,
                         axes_lost_at(graph, target))
    closed, notes = closed_forms(graph)
    # only what the selected output reads: a detector head's 'ctr' table shows no 'cls' branch
    path = ancestors(graph, target)[1:]
    rows = tuple(LayerRow(n.name, n.op, n.shape, closed[n.id].size, closed[n.id].stride, closed[n.id].padding,
                          closed[n.id].status, closed[n.id].why) for n in path)
    c = closed[target.id]
    if c.status == "constant":
        raise ArgumentError(f"the selected output {target.name!r} does not depend on the model input: it is "
                            f"computed from constants ({c.why}); select another layer= or output=")
    causes = _causes(graph, path, c)
    on_path = {n.id for n in path}
    notes = [text for at, text in notes if at in on_path]
    size = stride = padding = size_min = None
    status = c.status
    if c.status == "ok":
        size, stride, padding = c.size, c.stride, c.padding
    elif c.status == "varies":
        size, size_min, stride, padding = _varying(graph, target)
    if target.layout is not None and list(target.layout) != sorted(target.layout):
        notes.append(render.axes_order_note(target.layout, len(target.shape)))
    a = Analysis(rows, size, stride, padding, status, causes, tuple(notes) + tuple(graph.notes),
                 graph.input_shape, target.shape, target.name, size_min, graph,
                 functools.partial(propagate, graph, target),
                 suggested_layer=suggest_layer(graph, target) if status == "global" else None,
                 selection=render.selection(layer, output))
    return a


def _causes(graph: Graph, path: list[Node], closed) -> tuple[str, ...]:
    """Every op on ``path`` that itself makes the RF global, once per op node, in the order they
    run (EfficientNet-B0's 16 squeeze-excitation gates, not only the first); none unless the
    selected output's closed form ``closed`` is global."""
    if closed.status != "global":
        return ()
    causes = [f"{n.name}: {why}" for n in path if (why := own_global(graph.nodes, n)) is not None]
    return tuple(causes) or (closed.why,)    # never none: at worst the closed form's own


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
