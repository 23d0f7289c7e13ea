"""Compare the routes and explain every disagreement.

>>> import rfprobe
>>> r = verify(rfprobe.build("conv3 relu conv3"))
>>> r.ok, r.size
(True, (5, 5))
"""
from __future__ import annotations

from typing import Any

from .hints import Device, InputShape, Layer, ModelLike, Unit
from .measure import closed_form_box, projection
from .ops import gradient_stops, user_rules
from .trace import ancestors
from .prepare import prepare
from .routes.probe import probe_prepared
from .results import Analysis, Report
from . import render


def verify(model: ModelLike, input_shape: InputShape = None, *, unit: Unit = None, layer: Layer = None,
           output: Any = None, device: Device = None) -> Report:
    """Run the closed form, the exact propagation and the gradient probe, and compare.

    ``ok`` is True when the exact route and the probe give the same set of input positions.
    The closed form is the hull: where its box differs from the exact one (a strided dilated
    kernel leaves edge indices unread), ``diagnoses`` says so, as it names global ops, border
    truncation, holes and position-dependent RFs.

    >>> import rfprobe
    >>> r = verify(rfprobe.build("conv3/s2 conv3"))
    >>> r.ok, r.size, r.stride
    (True, (7, 7), (2, 2))
    """
    e = probe_prepared(prepare(model, input_shape, layer=layer, output=output, unit=unit, device=device,
                               mode="structural"))
    a = e.analysis
    unit = e.unit
    mismatches: list[str] = []
    diagnoses: list[str] = list(a.notes)
    exact = a.region(unit, bounded=True)
    exact_mask = exact.input_mask()
    if a.status == "global":
        for cause in a.global_causes:
            diagnoses.append(render.global_coupling(cause))
        exact_box = closed_box = None
    else:
        unb = a.region(unit, bounded=False)
        exact_box = unb.box
        closed_box = None
        if a.status == "ok":
            closed_box = closed_form_box(unit, a.size, a.stride, a.padding)
            if any(e0 < c0 or e1 > c1 for (c0, c1), (e0, e1) in zip(closed_box, exact_box) if e0 <= e1):
                mismatches.append(render.closed_too_small(closed_box, exact_box))   # the formula under-states
            elif closed_box != exact_box:
                diagnoses.append(render.hull(closed_box, exact_box))
        else:
            diagnoses.append(render.varies(a.size_min, a.size))
        if unb.coverage < 1.0:
            diagnoses.append(render.holes(unb.coverage))
    if e.mask is None:   # slab mode: the probe measured each axis's projection (probe(full=True) for the map)
        probe_mask = exact_mask_ax = None
        for ax, proj in enumerate(e.axis_masks):
            want = projection(exact_mask, ax)
            if (want != proj).any():
                probe_mask, exact_mask_ax = proj, want
                break
        if probe_mask is not None:
            extra = int((probe_mask & ~exact_mask_ax).sum())
            missing = int((exact_mask_ax & ~probe_mask).sum())
            mismatches.append(render.routes_differ(extra, missing, ax))
            diagnoses.extend(_probe_explanations(a))
    elif (exact_mask != e.mask).any():
        extra = int((e.mask & ~exact_mask).sum())
        missing = int((exact_mask & ~e.mask).sum())
        mismatches.append(render.routes_differ(extra, missing))
        diagnoses.extend(_probe_explanations(a))
    if e.truncated:
        diagnoses.append(render.truncated(exact_box, e.input_shape[1:]))
    size = a.size if a.status == "ok" and not mismatches else e.size
    return Report(not mismatches, size, a.stride, a.padding, closed_box, exact_box, exact.box,
                  e.box, tuple(mismatches), tuple(dict.fromkeys(diagnoses)), a, e)




def _probe_explanations(a: Analysis) -> list[str]:
    out = []
    # a user's own rule on the path is the likeliest cause: the exact route follows the rule,
    # the probe measures what the op really does
    mine = user_rules()
    suspects = [n for n in ancestors(a.graph, a.graph.node(a.target)) if n.op in mine]
    if suspects:
        out.append(render.user_rules_suspect(suspects))
    if a.status == "global":
        out.append(render.probe_saw_local())
    # ops that pass values on but no gradient (a detach, a comparison's mask, argmax's
    # indices): the exact route follows the values, the probe stops there
    stops_here = gradient_stops()
    stops = [n for n in ancestors(a.graph, a.graph.node(a.target)) if n.op in stops_here]
    first = {n.id for n in stops}
    stops = [n for n in stops if not first.intersection(n.inputs)]   # where each chain starts (not ~mask)
    out.append(render.gradient_stops(stops) if stops else render.possible_causes())
    return out
