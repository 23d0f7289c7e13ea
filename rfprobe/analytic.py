"""The analytic routes: the closed form per layer and the exact per-unit propagation.

Closed form (Araujo, Norris & Sim, Distill 2019), per axis: a node whose index ``i`` sees
input ``[i*S - P, i*S - P + r - 1]``, followed by an op of kernel extent ``k``, stride ``s``
and padding ``p``, gives::

    r' = r + (k - 1) * S        S' = S * s        P' = P + p * S

Exact propagation walks the traced graph backwards from one unit, carrying the exact set of
indices it depends on, as a union of per-axis index sets (products). ``bounded=True`` follows
the real tensor extents (zero padding reads nothing, reflect/circular padding wraps) and is
what the gradient probe must reproduce; ``bounded=False`` pretends every tensor is infinite,
which gives the theoretical box that may reach into the padding.

>>> import rfprobe
>>> a = analyze(rfprobe.build("conv3 conv3/s2 conv3"))
>>> a.size, a.stride, a.padding
((9, 9), (2, 2), (0, 0))
>>> a.input_shape, a.box((0, 0))       # the smallest input that holds the whole RF
((1, 9, 9), ((0, 8), (0, 8)))
"""
from __future__ import annotations

import contextlib
import functools
import gc
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch.nn as nn

from .errors import ArgumentError, ModelError, RFProbeError, model_raised, raised_text
from .ops import Affine, Broadcast, Global
from .results import Analysis, LayerRow, Region
from .trace import Graph, Node, one_meta_copy, replay, select, trace
from .validate import as_model, check_spatial_output, check_target, check_unit, normalize_unit, resolve_input_shape


# ----------------------------------------------------------------------------- formulas
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
    status: str = "ok"          # ok | global | varies
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


def closed_forms(graph: Graph) -> tuple[list[Closed], list[str]]:
    """Closed form of every node, forward through the graph, plus alignment notes (computed
    once per graph: choosing the input and the analysis both read them)."""
    if graph.closed is None:
        graph.closed = _closed_forms(graph)
    return graph.closed


def _closed_forms(graph: Graph) -> tuple[list[Closed], list[str]]:
    out: list[Closed] = []
    notes: list[str] = []
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
                paths.append((graph.nodes[src].name, tuple(rsp)))
        if result is not None and result.status == "global":
            out.append(result)
            continue
        if result is not None:
            out.append(result)
            continue
        out.append(_merge(node, paths, notes))
    return out, notes


def _merge(node: Node, paths, notes: list[str]) -> Closed:
    if len(paths) == 1:
        return Closed(paths[0][1])
    merged = []
    for a in range(len(paths[0][1])):
        strides = {rsp[a][1] for _, rsp in paths}
        if len(strides) > 1:
            detail = " vs ".join(f"{rsp[a][1]} ({name})" for name, rsp in paths)
            return Closed(None, "varies", f"{node.name}: paths are not aligned: strides {detail} on axis {a}")
        left = min(-rsp[a][2] for _, rsp in paths)
        right = max(-rsp[a][2] + rsp[a][0] - 1 for _, rsp in paths)
        centres = {(-2 * rsp[a][2] + rsp[a][0] - 1) for _, rsp in paths}
        if len(centres) > 1:
            detail = ", ".join(f"{name} centred at {(-2 * rsp[a][2] + rsp[a][0] - 1) / 2:g}" for name, rsp in paths)
            notes.append(f"{node.name}: paths are not aligned on axis {a}: {detail}")
        merged.append((right - left + 1, strides.pop(), -left))
    return Closed(tuple(merged))


# ----------------------------------------------------------------------------- exact sets
Product = tuple  # per axis: sorted np.ndarray of indices


def _simplify(products: list[Product]) -> list[Product]:
    uniq = {}
    for p in products:
        uniq[tuple(a.tobytes() for a in p)] = p
    ps = list(uniq.values())
    changed = True
    while changed and len(ps) > 1:
        changed = False
        for i in range(len(ps)):
            for j in range(len(ps)):
                if i == j:
                    continue
                a, b = ps[i], ps[j]
                if all(np.isin(x, y, assume_unique=True).all() for x, y in zip(a, b)):
                    ps.pop(i)                       # a is inside b
                    changed = True
                    break
                diff = [k for k, (x, y) in enumerate(zip(a, b)) if not np.array_equal(x, y)]
                if len(diff) == 1:                  # equal but on one axis: one product
                    k = diff[0]
                    merged = tuple(np.union1d(x, y) if n == k else x for n, (x, y) in enumerate(zip(a, b)))
                    ps[i] = merged
                    ps.pop(j)
                    changed = True
                    break
            if changed:
                break
    return ps


def propagate(graph: Graph, target: Node, unit: Sequence[int], bounded: bool) -> Region:
    """Exact set of input positions that output ``unit`` of ``target`` depends on."""
    extent = graph.nodes[0].spatial
    regions: dict[int, list[Product] | str] = {target.id: [tuple(np.array([u], dtype=np.int64) for u in unit)]}
    for node in reversed(graph.nodes[1:target.id + 1]):
        reg = regions.pop(node.id, None)
        if reg is None:
            continue
        if isinstance(reg, str) or isinstance(node.deps, Global) or node.layout is None:
            why = reg if isinstance(reg, str) else (node.deps.why if isinstance(node.deps, Global)
                                                      else f"{node.op} has no spatial axes")
            if not isinstance(reg, str):
                why = f"{node.name}: {why}"
            for src in node.inputs:
                if not isinstance(regions.get(src), str):
                    regions[src] = why
            continue
        for dep, src in zip(node.deps, node.inputs):
            if isinstance(regions.get(src), str):
                continue
            if isinstance(dep.axes, Global):      # every position of this input reaches the unit
                regions[src] = f"{node.name}: {dep.axes.why}"
                continue
            mapped = []
            for p in reg:
                axes = tuple(np.unique(m.deps(ix, bounded)) for m, ix in zip(dep.axes, p))
                if dep.perm is not None:     # output axis a read the input's axis perm[a]
                    axes = tuple(axes[dep.perm.index(b)] for b in range(len(axes)))
                if all(len(a) for a in axes):
                    mapped.append(axes)
            regions[src] = _simplify(regions.get(src, []) + mapped)
    reg = regions.get(0, [])
    if isinstance(reg, str):
        return Region((), reg, extent)
    return Region(tuple(reg), None, extent)


# ----------------------------------------------------------------------------- analysis


def choose_input(model: nn.Module, input_shape, layer=None, output=None, unit=None) -> Graph:
    """Trace at the input the user gave, or at the smallest input (per axis) in which the
    centre unit's whole RF fits, so the probe sees it without border truncation."""
    with one_meta_copy(model), _no_gc():
        graph = _choose_input(model, input_shape, layer, output, unit)
    graph.recording = None    # what a replay needs keeps the meta copy alive: not past this call
    return graph


def _trace_at(model, g: Graph, shape) -> Graph:
    """``model`` traced at ``shape``, replayed from ``g``'s recording where that is sound."""
    return replay(g, shape) or trace(model, shape, g.dims, record=True)


@contextlib.contextmanager
def _no_gc():
    """No cyclic garbage collection while tracing: a trace allocates thousands of small objects,
    and a full collection they trigger (tens of ms with torch loaded) cost more than the trace.
    Reference counting still frees everything; the collector's previous state is restored."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _choose_input(model: nn.Module, input_shape, layer=None, output=None, unit=None) -> Graph:
    check_unit(unit)
    shape, channels, dims = resolve_input_shape(model, input_shape, check_channels=False)
    fixed = [None] * dims if shape is None else list(shape[1:])
    if all(f is not None for f in fixed):
        try:
            g = trace(model, (channels, *fixed), dims)
        except ModelError as e:
            err = _diagnose(model, input_shape, dims, e)
            raise err from (e.__cause__ if err is e else None)
        check_target(select(g, layer, output), (channels, *fixed))
        if unit is not None:       # the input is the user's: the unit must exist in its output
            normalize_unit(unit, select(g, layer, output).spatial)
        return g
    g, first_error = None, None
    # 32 first: most trunks need it (a failed trace at 8 or 16 costs as much as one that works),
    # and the closed form shrinks the input afterwards anyway; 224 (and its multiples) for the
    # models that split their maps into 7x7 windows (maxvit)
    for n in (32, 64, 128, 224, 256, 448, 512, 896, 1024, 2048, 4096, 16, 8):
        size = tuple(f if f is not None else n for f in fixed)
        try:
            g = trace(model, (channels, *size), dims, record=True)
            target = select(g, layer, output)
            if target.spatial is None:      # flattened or pooled away: no input size helps
                check_target(target, (channels, *size))
            if all(s >= 1 for s in target.spatial):
                break
        except RFProbeError as e:
            if not isinstance(e, ModelError):
                raise
            first_error = first_error or e
        g = None
    if g is None:
        if first_error is not None:
            err = _diagnose(model, input_shape, dims, first_error, retry=False)
            raise err from (first_error.__cause__ if err is first_error else None)
        raise ArgumentError("no input size up to 4096 gives this model a spatial output")
    predicted = _shrink(model, g, fixed, layer, output, unit, channels, dims, upto=1 << 16)
    if predicted is not g:
        return predicted  # the closed form's smallest fitting size, confirmed by one trace
    previous = None
    for _ in range(40):
        target = select(g, layer, output)
        size = list(g.input_shape[1:])
        if target.spatial is None:
            return g
        if closed_forms(g)[0][target.id].status == "global":
            return g   # no size holds a global RF (the exact route would walk the graph to say so)
        u = tuple(m // 2 for m in target.spatial) if unit is None else tuple(
            (x % m) for x, m in zip(unit if not isinstance(unit, int) else (unit,) * dims, target.spatial))
        reg = propagate(g, target, u, bounded=False)
        if reg.global_cause is not None:
            return g
        deficit = [(max(-lo, 0), max(hi - cur + 1, 0)) for (lo, hi), cur in zip(reg.box, size)]
        if unit is not None and deficit == previous:
            return g  # growing does not help: this unit's RF reaches into the padding anywhere
        previous = deficit
        need = []
        for a, ((lo, hi), cur) in enumerate(zip(reg.box, size)):
            if fixed[a] is not None:
                need.append(cur)
            elif lo >= 0 and hi < cur:
                need.append(cur)
            else:
                # the centre unit moves as the input grows: add twice the deficit, then shrink
                need.append(max(cur + 2 * (max(-lo, 0) + max(hi - cur + 1, 0)), hi - lo + 1))
        if need == size:
            return _shrink(model, g, fixed, layer, output, unit, channels, dims)
        g = _trace_at(model, g, (channels, *need))
    return g


def _fitting_size(r: int, S: int, P: int, unit, upto: int) -> int | None:
    """Smallest n < ``upto`` whose output (a chain of floor-mode ops: floor((n + 2P - r) / S)
    + 1 units) holds the unit (the centre when None) with its whole RF [u*S - P, u*S - P + r - 1]
    inside [0, n - 1]; None if there is none."""
    for n in range(max(r - 2 * P, 1), upto):
        out = (n + 2 * P - r) // S + 1
        if out < 1:
            continue
        u = out // 2 if unit is None else unit % out if unit < 0 else unit
        if u < out and u * S - P >= 0 and u * S - P + r - 1 <= n - 1:
            return n
    return None


def _shrink(model, g: Graph, fixed, layer, output, unit, channels, dims, upto: int | None = None) -> Graph:
    """The closed form predicts the smallest size per axis below ``upto`` (default: the current
    size, which the growth search can overshoot), and one more trace confirms that the unit's
    whole RF fits in it; otherwise ``g`` is returned unchanged."""
    target = select(g, layer, output)
    c = closed_forms(g)[0][target.id]
    if c.status != "ok":
        return g
    units = (None,) * dims if unit is None else ((unit,) * dims if isinstance(unit, int) else tuple(unit))
    size = list(g.input_shape[1:])
    want = []
    for a, ((r, S, P), cur) in enumerate(zip(c.rsp, size)):
        n = None if fixed[a] is not None else _fitting_size(r, S, P, units[a], upto or cur)
        want.append(cur if n is None else n)
    if want == size:
        return g
    try:
        small = _trace_at(model, g, (channels, *want))
        t = select(small, layer, output)
        if t.spatial is None or any(m < 1 for m in t.spatial):
            return g
        u = tuple(m // 2 if v is None else v % m for v, m in zip(units, t.spatial))
        if unit is not None and any(v is not None and not -m <= v < m for v, m in zip(units, t.spatial)):
            return g
        box = _closed_box(small, t, u)
        if box is None:    # not translation-invariant at this size: ask the exact route
            reg = propagate(small, t, u, bounded=False)
            box = None if reg.global_cause is not None else reg.box
    except RFProbeError:
        return g
    if box is None or any(lo < 0 or hi >= n for (lo, hi), n in zip(box, want)):
        return g
    return small


def _closed_box(graph: Graph, target: Node, unit) -> tuple[tuple[int, int], ...] | None:
    """Per axis (first, last) input index that ``unit`` reads, from the closed form (None when
    its status is not 'ok'): unit ``u`` reads [u*S - P, u*S - P + r - 1]."""
    c = closed_forms(graph)[0][target.id]
    if c.status != "ok":
        return None
    return tuple((u * S - P, u * S - P + r - 1) for u, (r, S, P) in zip(unit, c.rsp))


def _diagnose(model: nn.Module, input_shape, dims: int, error: RFProbeError, retry: bool = True) -> RFProbeError:
    """The user's input_shape made the model raise: say which argument is wrong if we can tell
    (channels, too small), else pass the model's own error on."""
    try:
        resolve_input_shape(model, input_shape)      # the channel mismatch, if any
    except ArgumentError as bad:
        return ArgumentError(f"{bad} ({model_raised(error)})")
    if not retry:
        return error
    try:
        bigger = choose_input(model, (input_shape[0],) + (None,) * dims)
    except RFProbeError:
        return error
    return ArgumentError(f"input_shape={tuple(input_shape)!r} is too small for this model (it raised: "
                         f"{raised_text(error)}); an input of {bigger.input_shape} works. "
                         "Pass a larger input_shape, or None entries to let rfprobe choose.")


def analyze(model, input_shape=None, *, layer: str | None = None, output: Any = None,
            unit=None) -> Analysis:
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
    check_spatial_output(target, "'features'")
    closed, notes = closed_forms(graph)
    rows = tuple(LayerRow(n.name, n.op, n.shape, c.size, c.stride, c.padding, c.status, c.why)
                 for n, c in zip(graph.nodes[1:target.id + 1], closed[1:target.id + 1]))
    c = closed[target.id]
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
