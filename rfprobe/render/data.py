"""JSON-ready views (``to_dict``): plain lists, dicts, numbers and strings, so
``json.dumps(result.to_dict())`` works.

>>> import rfprobe
>>> analysis_dict(rfprobe.analyze("conv3"))["size"]
(3, 3)
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:                     # the result classes, for readers and type checkers only
    from ..results import ERF, Analysis, ProbeResult, Report


def jsonable(v: Any) -> Any:
    """Tuples as lists, numpy scalars as Python numbers, recursively.

    >>> import numpy as np
    >>> jsonable({"box": ((0, np.int64(2)),), "ok": np.bool_(True)})
    {'box': [[0, 2]], 'ok': True}
    """
    if isinstance(v, tuple):
        return [jsonable(x) for x in v]
    if isinstance(v, list):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if hasattr(v, "item"):
        return v.item()
    return v


def to_json(d: dict) -> str:
    """``d`` as indented JSON.

    >>> print(to_json({"size": (5, 5)}))
    {
      "size": [
        5,
        5
      ]
    }
    """
    return json.dumps(jsonable(d), indent=2)


def analysis_dict(a: Analysis) -> dict:
    """The analysis and its per-layer rows (module example)."""
    return {
        "status": a.status, "size": a.size, "size_min": a.size_min, "stride": a.stride,
        "padding": a.padding, "global_causes": list(a.global_causes), "notes": list(a.notes),
        "input_shape": a.input_shape, "output_shape": a.output_shape, "target": a.target,
        "selection": a.selection,
        "suggested_layer": a.suggested_layer,
        "layers": [{"name": r.name, "op": r.op, "shape": r.shape, "size": r.size, "stride": r.stride,
                    "padding": r.padding, "status": r.status, "why": r.why} for r in a.layers],
    }


def probe_dict(e: ProbeResult) -> dict:
    """The probe's numbers (not its maps).

    >>> import rfprobe
    >>> probe_dict(rfprobe.probe("conv3"))["box"]
    [[0, 2], [0, 2]]
    """
    return jsonable({
        "target": e.target, "unit": e.unit, "size": e.size, "box": e.box, "coverage": e.coverage,
        "axis_coverage": e.axis_coverage, "truncated": e.truncated, "input_shape": e.input_shape,
        "output_shape": e.output_shape, "mode": e.mode, "slab": e.slab,
        "units_probed": e.units_probed,
    })


def report_dict(r: Report) -> dict:
    """Every route's box, the findings and the analysis.

    >>> import rfprobe
    >>> d = report_dict(rfprobe.verify("conv3"))
    >>> d["ok"], d["exact_box"], d["analysis"]["size"]
    (True, [[0, 2], [0, 2]], [3, 3])
    """
    return jsonable({
        "ok": r.ok, "size": r.size, "stride": r.stride, "padding": r.padding,
        "unit": r.probe.unit, "closed_box": r.closed_box, "exact_box": r.exact_box,
        "exact_clipped_box": r.exact_clipped_box, "probe_box": r.probe_box,
        "coverage": r.probe.coverage, "truncated": r.probe.truncated,
        "mismatches": list(r.mismatches), "diagnoses": list(r.diagnoses),
        "analysis": analysis_dict(r.analysis),
    })


def erf_dict(f: ERF) -> dict:
    """The ERF's statistics (not its map).

    >>> import rfprobe
    >>> erf_dict(rfprobe.ERF.from_gradient([0, 1, 2, 1, 0]))["center"]
    [2.0]
    """
    g = f.gaussian
    return jsonable({
        "target": f.target, "unit": f.unit, "n": f.n, "statistic": f.statistic,
        "input_shape": f.input_shape, "theoretical": f.theoretical, "center": f.center, "std": f.std,
        "ratio": f.ratio, "gaussian": {"center": g.center, "sigma": g.sigma, "r2": g.r2},
        "radius": {str(p): f.radius(p) for p in (0.5, 0.95)},
        "area_ratio": {str(t): f.area_ratio(t) for t in (0.2, 0.3, 0.5, 0.99)},
    })
