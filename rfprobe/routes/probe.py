"""The gradient probe's entry points: the empirical receptive field, exact by construction.

It runs the model's own code on a private copy and backpropagates a one-hot gradient from one
output unit. Structural mode (the default) makes a zero gradient mean "outside the RF" and a
nonzero one "inside", with no exceptions; how, and what it costs, is the machinery's part
(:mod:`rfprobe.routes.gradient`).

Slab mode: a separable RF's box is found from thin inputs (full length on one axis, small on the
others), one per axis, so the cost grows with the RF's length rather than its area or volume.
``probe`` uses it when the full input would be large (``ProbeResult.slab`` lists the thin inputs;
``mask``, ``grad`` and ``coverage`` are then ``None``, ``axis_masks`` hold the per-axis
projections); ``full=True`` asks for the whole map (heatmaps, holes).

Several units whose RFs do not overlap are probed in one backward by :func:`probe_many`.

Actual mode (``mode="actual"``) uses the model's real weights and an input of yours instead:
"what does this trained model really use".

>>> import rfprobe
>>> e = probe(rfprobe.build("conv3 relu conv3"))
>>> e.size, e.box, e.truncated
((5, 5), ((0, 4), (0, 4)), False)
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ArgumentError, RFProbeError
from ..hints import MODES, Device, InputShape, Layer, Mode, ModelLike, Unit
from ..measure import box_of, coverage_of, projection, span
from ..prepare import Prepared, prepare
from ..results import Analysis, ProbeResult
from ..trace import Graph, select, trace
from ..validate import normalize_unit
from .exact import propagate
from .gradient import check_gradient, check_memory, gradients_allowed, input_gradient, private_twin

# slab mode is chosen automatically above this many input positions (512x512, 64x64x64)
SLAB_ABOVE = 1 << 18


# ----------------------------------------------------------------------------- the probe's own arguments
def normalize_units(units, out_spatial) -> list[tuple[int, ...]]:
    """``units=`` of probe_many: a non-empty list of units, each checked and normalised."""
    if isinstance(units, (int, str)) or (isinstance(units, tuple) and all(isinstance(v, int) for v in units)):
        raise ArgumentError(f"units={units!r} must be a list of units, e.g. [(0, 0), (-1, -1)]")
    try:
        us = [normalize_unit(v, out_spatial, "units") for v in units]
    except TypeError:
        raise ArgumentError(f"units={units!r} must be a list of units, e.g. [(0, 0), (-1, -1)]") from None
    if not us:
        raise ArgumentError("units=[] is empty: give at least one output unit")
    return us


def check_mode(mode) -> None:
    if mode not in MODES:
        raise ArgumentError(f"mode={mode!r} must be 'structural' or 'actual'")


def check_full(full) -> None:
    if full not in (None, True, False):
        raise ArgumentError(f"full={full!r} must be True (whole map), False (slab mode when "
                            "possible) or None (slab mode for large inputs)")


# ----------------------------------------------------------------------------- the entry points
@gradients_allowed
def probe(model: ModelLike, input_shape: InputShape = None, *, unit: Unit = None, layer: Layer = None,
          output: Any = None, channel: int | None = None, mode: Mode = "structural",
          inputs: torch.Tensor | None = None, device: Device = None, dtype: torch.dtype = torch.float32,
          seed: int = 0, full: bool | None = None, max_memory: int | None = None) -> ProbeResult:
    """Backpropagate from one output unit and return the input positions with nonzero gradient.

    ``unit``: spatial index of the output unit (default: the centre; negative counts from the
    end). ``input_shape``: (C, *spatial) without batch; ``None`` entries (or ``None``) are
    chosen so the unit's whole RF fits. ``channel``: one output channel (default: all).
    ``full``: ``True`` measures the whole map; ``False`` uses slab mode whenever the RF allows
    it; ``None`` (default) uses slab mode when the input has more than ``SLAB_ABOVE`` positions.
    ``max_memory``: bytes the full probe may use (default: half the free memory); estimated from
    the traced shapes before running, and refused with ``ResourceError`` above it.
    ``inputs`` (``mode='actual'``): one input, (C, *spatial) or (1, C, *spatial); a batch of
    several is refused (``rfprobe.erf`` averages over many).

    >>> import rfprobe
    >>> e = probe(rfprobe.build("conv3/d4"))
    >>> e.size, round(e.coverage, 4), e.axis_coverage
    ((9, 9), 0.1111, (0.3333333333333333, 0.3333333333333333))
    >>> s = probe(rfprobe.build("conv3/p1 " * 4 + "conv3/s2/p1 conv3/d2/p2"), full=False)
    >>> s.slab, s.size, s.box, s.mask is None
    (((1, 20, 8), (1, 8, 20)), (19, 19), ((1, 19), (1, 19)), True)
    """
    check_mode(mode)
    check_full(full)
    p = prepare(model, input_shape, layer=layer, output=output, unit=unit, channel=channel, device=device,
                dtype=dtype, mode=mode, inputs=inputs, seed=seed)
    return probe_prepared(p, mode=mode, inputs=inputs, dtype=dtype, seed=seed, full=full, max_memory=max_memory)


@gradients_allowed
def probe_prepared(p: Prepared, *, mode: Mode = "structural", inputs: torch.Tensor | None = None,
                   dtype: torch.dtype = torch.float32, seed: int = 0, full: bool | None = None,
                   max_memory: int | None = None) -> ProbeResult:
    """:func:`probe` of a call that :func:`rfprobe.prepare.prepare` made ready (with the same
    ``mode``, ``inputs``, ``dtype`` and ``seed``, which it checked)."""
    model, graph, analysis, target, u, channel, dev = (p.model, p.graph, p.analysis, p.target, p.unit,
                                                         p.channel, p.device)
    structural = mode == "structural"
    spatial = graph.input_shape[1:]
    if structural and full is not True and (full is False or math.prod(spatial) > SLAB_ABOVE):
        plan = _slab_plan(model, graph, analysis, target, u, p.layer, p.output)
        if plan is not None:
            return _probe_slabs(model, graph, analysis, target, u, channel, plan, dev, dtype, seed)
    check_memory(graph, model, dtype, dev, max_memory)
    generator = torch.Generator().manual_seed(seed)
    twin = private_twin(model, structural, dev, dtype, generator)
    grad = input_gradient(twin, graph, target.id, [u], channel, structural, inputs, dev, dtype, generator)
    check_gradient(grad, mode)
    return _result(grad, graph, analysis, target, u, (u,), mode)


@gradients_allowed
def probe_many(model: ModelLike, units: Sequence[Unit], input_shape: InputShape = None, *,
               layer: Layer = None, output: Any = None, channel: int | None = None, device: Device = None,
               dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[ProbeResult, ...]:
    """Structural probes of several units of one output, sharing backward passes: units whose
    RF boxes (from the exact route, clipped to the input) do not overlap are seeded in the same
    backward and told apart by those boxes. Each result equals ``probe`` of that unit alone on
    the same input; ``units_probed`` says which units shared its pass. A gradient outside every
    box of a pass (the routes disagree) makes that pass's units run one by one.

    ``units``: output indices (negative count from the end); the input is the one ``probe``
    chooses for the centre unit unless ``input_shape`` is given. Two units ``k`` apart give the
    effective stride, the first unit's box the offset, the corner units the borders.

    >>> import rfprobe
    >>> net = rfprobe.build("conv3/s2/p1 conv3/s2/p1 conv3")
    >>> first, second, corner = probe_many(net, [(2, 2), (6, 2), (-1, -1)], input_shape=(1, 40, 40))
    >>> first.units_probed == second.units_probed == ((2, 2), (6, 2), (7, 7))
    True
    >>> stride = (second.box[0][0] - first.box[0][0]) // (6 - 2)
    >>> stride, 2 * stride - first.box[0][0], corner.box      # stride, padding, a clipped corner
    (4, 3, ((25, 39), (25, 39)))
    """
    p = prepare(model, input_shape, layer=layer, output=output, channel=channel, device=device, dtype=dtype,
                mode="structural")
    model, graph, analysis, target, dev = p.model, p.graph, p.analysis, p.target, p.device
    us = normalize_units(units, target.spatial)
    check_memory(graph, model, dtype, dev, None)
    generator = torch.Generator().manual_seed(seed)
    twin = private_twin(model, True, dev, dtype, generator)
    spatial = graph.input_shape[1:]
    boxes = [_clipped_box(analysis, v, spatial) for v in us]
    groups: list[list[int]] = []
    for i, b in enumerate(boxes):
        for grp in groups:
            if b is not None and all(boxes[j] is not None and _disjoint(b, boxes[j]) for j in grp):
                grp.append(i)
                break
        else:
            groups.append([i])
    out: list[ProbeResult | None] = [None] * len(us)
    for grp in groups:
        seeds = [us[i] for i in grp]
        grad = input_gradient(twin, graph, target.id, seeds, channel, True, None, dev, dtype, generator)
        check_gradient(grad, "structural")
        if len(grp) > 1:
            inside = np.zeros(grad.shape, dtype=bool)
            for i in grp:
                inside[_slices(boxes[i])] = True
            if (grad[~inside] != 0).any():   # not separable by the boxes: one pass per unit
                grp_runs = [[i] for i in grp]
            else:
                for i in grp:
                    g = np.zeros_like(grad)
                    g[_slices(boxes[i])] = grad[_slices(boxes[i])]
                    out[i] = _result(g, graph, analysis, target, us[i], tuple(seeds), "structural")
                continue
        else:
            grp_runs = [grp]
        for one in grp_runs:
            i = one[0]
            g = grad if one == grp else input_gradient(twin, graph, target.id, [us[i]], channel, True, None,
                                                  dev, dtype, generator)
            out[i] = _result(g, graph, analysis, target, us[i], (us[i],), "structural")
    return tuple(out)


def _clipped_box(analysis: Analysis, unit, spatial):
    try:
        # bounded: reflect/circular padding reads indices the unbounded box does not reach
        box = analysis.box(unit, bounded=True)
    except RFProbeError:
        return None
    clipped = tuple((max(lo, 0), min(hi, n - 1)) for (lo, hi), n in zip(box, spatial))
    return None if any(lo > hi for lo, hi in clipped) else clipped


def _disjoint(a, b) -> bool:
    return any(ah < bl or bh < al for (al, ah), (bl, bh) in zip(a, b))


def _slices(box):
    return tuple(slice(lo, hi + 1) for lo, hi in box)


def _result(grad: np.ndarray, graph: Graph, analysis: Analysis, target, u, probed, mode) -> ProbeResult:
    mask = grad != 0
    box = box_of(mask)
    axis_masks = tuple(projection(mask, a) for a in range(mask.ndim))
    truncated = _truncated(analysis, u, mask.shape, mask)
    return ProbeResult(mask, grad, box, tuple(b - a + 1 for a, b in box), coverage_of(mask, box),
                       truncated, graph.input_shape, u, tuple(probed), target.name, mode, target.shape,
                       analysis, None, axis_masks)


def _truncated(analysis: Analysis, unit, shape, mask=None) -> bool:
    if analysis.status == "global":
        return False
    try:
        box = analysis.region(unit, bounded=False).box
    except RFProbeError:
        return bool(mask is not None and mask.any() and any(
            mask.take(0, axis=a).any() or mask.take(-1, axis=a).any() for a in range(mask.ndim)))
    return any(lo < 0 or hi >= n for (lo, hi), n in zip(box, shape))


# ----------------------------------------------------------------------------- slab mode
def _slab_plan(model, graph: Graph, analysis: Analysis, target, unit, layer, output):
    """Per axis a thin input (the full extent on that axis, small on the others) and the unit
    to seed in it, such that the exact route's projection of that unit's RF on the axis is the
    same as in the full input; None when some axis has no such input that is cheaper."""
    if graph.dims < 2 or analysis.status == "global":
        return None
    full_spatial = graph.input_shape[1:]
    try:
        full_region = propagate(graph, target, unit, bounded=True)
    except RFProbeError:
        return None
    if full_region.global_cause is not None:
        return None
    full_mask = full_region.input_mask()
    plan = []
    thin = 8      # each axis starts where the previous one succeeded (a trace can cost a second)
    for a in range(graph.dims):
        want = projection(full_mask, a)
        found = None
        while True:
            shape = tuple(n if b == a else min(thin, n) for b, n in enumerate(full_spatial))
            if math.prod(shape) * 2 > math.prod(full_spatial):
                return None  # not worth it
            try:
                g = trace(model, (graph.input_shape[0], *shape), graph.dims)
                t = select(g, layer, output)
            except RFProbeError:
                t = None
            if t is not None and t.spatial is not None and t.spatial[a] == target.spatial[a] and \
                    all(s >= 1 for s in t.spatial):
                su = tuple(unit[a] if b == a else s // 2 for b, s in enumerate(t.spatial))
                reg = propagate(g, t, su, bounded=True)
                if reg.global_cause is None and np.array_equal(projection(reg.input_mask(), a), want):
                    found = (g, t.id, su)
                    break
            if all(min(thin, n) == n for b, n in enumerate(full_spatial) if b != a):
                return None
            thin *= 2
        plan.append(found)
    return plan


def _probe_slabs(model, graph, analysis, target, u, channel, plan, device, dtype, seed) -> ProbeResult:
    generator = torch.Generator().manual_seed(seed)
    twin = private_twin(model, True, device, dtype, generator)
    axis_masks = []
    for a, (g, tid, su) in enumerate(plan):
        grad = input_gradient(twin, g, tid, [su], channel, True, None, device, dtype, generator)
        check_gradient(grad, "structural")
        axis_masks.append(projection(grad != 0, a))
    box = tuple(span(proj) for proj in axis_masks)
    truncated = _truncated(analysis, u, graph.input_shape[1:])
    return ProbeResult(None, None, box, tuple(b - a + 1 for a, b in box), None, truncated,
                       graph.input_shape, u, tuple(su for _, _, su in plan), target.name, "structural",
                       target.shape, analysis, tuple(g.input_shape for g, _, _ in plan), tuple(axis_masks))


