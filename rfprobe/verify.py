"""Compare the routes and explain every disagreement.

>>> import rfprobe
>>> r = verify(rfprobe.build("conv3 relu conv3"))
>>> r.ok, r.size
(True, (5, 5))
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .analytic import Analysis, as_model
from .graph import ancestors
from .rules import MASK_NAMES
from .measure import remember
from .probe import ProbeResult, probe
from .render import Rendered


@dataclass(frozen=True, eq=False)
class Report(Rendered):
    """All routes for one unit: closed form, exact propagation, gradient probe."""

    _view = "report"          # drawn by render.report_text/_html/_dict

    ok: bool
    size: tuple[int, ...] | None          # the RF size all routes agree on (probe's when not ok)
    stride: tuple[int, ...] | None
    padding: tuple[int, ...] | None
    closed_box: tuple | None              # closed-form box of the unit (may reach into padding)
    exact_box: tuple | None               # exact propagation, unbounded
    exact_clipped_box: tuple | None       # exact propagation within the input
    probe_box: tuple
    mismatches: tuple[str, ...]
    diagnoses: tuple[str, ...]
    analysis: Analysis = field(repr=False)
    probe: ProbeResult = field(repr=False)

    def __post_init__(self):
        remember(self, "size", "stride", "padding")   # so pytest can show the table on failure


def verify(model, unit=None, input_shape=None, *, layer: str | None = None, output: Any = None,
           device=None) -> Report:
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
    model = as_model(model)
    e = probe(model, unit, input_shape, layer=layer, output=output, device=device)
    a = e.analysis
    unit = e.unit
    mismatches: list[str] = []
    diagnoses: list[str] = list(a.notes)
    exact = a.region(unit, bounded=True)
    exact_mask = exact.input_mask()
    if a.status == "global":
        for cause in a.global_causes:
            diagnoses.append(f"global coupling: {cause}")
        exact_box = closed_box = None
    else:
        unb = a.region(unit, bounded=False)
        exact_box = unb.box
        closed_box = None
        if a.status == "ok":
            closed_box = tuple((u * s - p, u * s - p + r - 1)
                               for u, r, s, p in zip(unit, a.size, a.stride, a.padding))
            if closed_box != exact_box:
                why = _hull_explanation(a, closed_box, exact_box)
                diagnoses.append(why)
        else:
            diagnoses.append(f"the RF varies with position: sizes {a.size_min} to {a.size} "
                             "per axis (the closed form needs a fixed stride and offset)")
        if unb.coverage < 1.0:
            diagnoses.append(f"holes: only {unb.coverage:.3g} of the box is in the RF "
                             "(dilation or stride gridding)")
    if e.mask is None:   # slab mode: the probe measured each axis's projection (probe(full=True) for the map)
        probe_mask = exact_mask_ax = None
        for ax, proj in enumerate(e.axis_masks):
            want = exact_mask.any(axis=tuple(b for b in range(exact_mask.ndim) if b != ax))
            if (want != proj).any():
                probe_mask, exact_mask_ax = proj, want
                break
        if probe_mask is not None:
            extra = int((probe_mask & ~exact_mask_ax).sum())
            missing = int((exact_mask_ax & ~probe_mask).sum())
            mismatches.append(f"exact propagation and gradient probe differ on axis {ax} (slab mode): the "
                              f"probe has {extra} indices the exact route lacks and misses {missing}")
            diagnoses.extend(_probe_explanations(a))
    elif (exact_mask != e.mask).any():
        extra = int((e.mask & ~exact_mask).sum())
        missing = int((exact_mask & ~e.mask).sum())
        mismatches.append(f"exact propagation and gradient probe differ: the probe has {extra} "
                          f"positions the exact route lacks and misses {missing}")
        diagnoses.extend(_probe_explanations(a))
    if e.truncated:
        diagnoses.append(f"border truncation: the unit's RF {exact_box} does not fit in the input "
                         f"{e.input_shape[1:]}; the probed box is clipped")
    size = a.size if a.status == "ok" and not mismatches else e.size
    return Report(not mismatches, size, a.stride, a.padding, closed_box, exact_box, exact.box,
                  e.box, tuple(mismatches), tuple(dict.fromkeys(diagnoses)), a, e)


def _hull_explanation(a, closed_box, exact_box) -> str:
    return (f"closed-form box {closed_box} is the hull; the exact set spans {exact_box}: "
            "a strided dilated kernel or a pad/crop leaves the formula's edge indices unread")


# ops that pass values on but no gradient: the exact route follows the values, the probe stops
# (a detach; a bool mask made by a comparison, which the op it selects or fills with reads)
GRADIENT_STOPS = frozenset({"detach", "detach_"}) | (MASK_NAMES - {"masked_fill", "masked_fill_"})


def _probe_explanations(a: Analysis) -> list[str]:
    out = []
    if a.status == "global":
        out.append("the analytic route says global but the probe saw a local RF: the global op "
                   "may not reach the probed output")
    stops = [n for n in ancestors(a.graph, a.graph.node(a.target)) if n.op in GRADIENT_STOPS]
    first = {n.id for n in stops}
    stops = [n for n in stops if not first.intersection(n.inputs)]   # where each chain starts (not ~mask)
    if stops:
        names = ", ".join(f"{n.name!r} ({n.op})" for n in stops[:3]) + (
            f" and {len(stops) - 3} more" if len(stops) > 3 else "")
        out.append(f"the path through {names} carries values but no gradient (a detach, or a bool "
                   "mask from a comparison): the unit does depend on the positions behind it (the "
                   "exact route follows the values); the gradient probe cannot see past it")
    else:
        out.append("possible causes: an op whose gradient is zero where its output still depends on "
                   "the input (integer ops, argmax routing), or a rule that does not match the op")
    return out
