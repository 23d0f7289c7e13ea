"""Every string rfprobe shows: text tables, JSON-ready dicts, HTML for Jupyter, and plots.

>>> import rfprobe
>>> print(rfprobe.analyze(rfprobe.build("conv3 conv3/s2")))
layer  op      output        size  stride  padding
0      conv2d  (1, 1, 3, 3)  3x3   1x1     0x0
1      conv2d  (1, 1, 1, 1)  5x5   2x2     0x0
RF 5x5, stride 2x2, padding 0x0 (input (1, 5, 5), output '1')
"""
from __future__ import annotations

import html
import json
from typing import Any


class Rendered:
    """Every view of a result, drawn by this module: ``str()``, Jupyter HTML, a JSON-ready dict
    and a plot. A result class names its view (``_view = "report"``) and this module holds
    ``report_text``, ``report_html`` and ``report_dict``."""

    _view = ""

    def __str__(self) -> str:
        return globals()[f"{self._view}_text"](self)

    def _repr_html_(self) -> str:
        return globals()[f"{self._view}_html"](self)

    def to_dict(self) -> dict:
        """The result as plain JSON-ready values (``json.dumps(r.to_dict())`` works)."""
        return globals()[f"{self._view}_dict"](self)

    def plot(self, **kw):
        """Draw the result (see :func:`rfprobe.plot`; matplotlib is optional)."""
        return plot(self, **kw)


def _x(t) -> str:
    return "-" if t is None else "x".join(str(v) for v in t)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _rows(a) -> list[list[str]]:
    rows = []
    for r in a.layers:
        if r.status == "ok":
            rows.append([r.name, r.op, str(r.shape), _x(r.size), _x(r.stride), _x(r.padding)])
        else:
            rows.append([r.name, r.op, str(r.shape), r.status, "", ""])
    return rows


def summary(a) -> str:
    where = f"(input {a.input_shape}, output {a.target!r})"
    if a.status == "global":
        return f"RF global: {'; '.join(a.global_causes)} {where}"
    if a.status == "varies":
        return (f"RF varies with position: size {_x(a.size_min)} to {_x(a.size)} {where}")
    return f"RF {_x(a.size)}, stride {_x(a.stride)}, padding {_x(a.padding)} {where}"


def analysis_text(a) -> str:
    body = _table(["layer", "op", "output", "size", "stride", "padding"], _rows(a))
    lines = [body, summary(a)]
    lines += [f"note: {n}" for n in a.notes]
    return "\n".join(lines)


def analysis_dict(a) -> dict:
    return {
        "status": a.status, "size": a.size, "size_min": a.size_min, "stride": a.stride,
        "padding": a.padding, "global_causes": list(a.global_causes), "notes": list(a.notes),
        "input_shape": a.input_shape, "output_shape": a.output_shape, "target": a.target,
        "layers": [{"name": r.name, "op": r.op, "shape": r.shape, "size": r.size, "stride": r.stride,
                    "padding": r.padding, "status": r.status, "why": r.why} for r in a.layers],
    }


def probe_text(e) -> str:
    trunc = " (truncated by the input border)" if e.truncated else ""
    return (f"probe of {e.target!r} unit {e.unit}: RF {_x(e.size)} box {e.box}, "
            f"coverage {_coverage(e)}{trunc}; input {e.input_shape}, mode {e.mode}")


def probe_dict(e) -> dict:
    return _jsonable({
        "target": e.target, "unit": e.unit, "size": e.size, "box": e.box, "coverage": e.coverage,
        "axis_coverage": e.axis_coverage, "truncated": e.truncated, "input_shape": e.input_shape,
        "output_shape": e.output_shape, "mode": e.mode, "slab": e.slab,
        "units_probed": e.units_probed,
    })


def _coverage(e) -> str:
    """Coverage, or why it is unknown (slab mode measures per-axis projections only)."""
    if e.coverage is None:
        return "unknown (slab mode: thin inputs " + ", ".join(map(str, e.slab or ())) + "; full=True maps it)"
    return f"{e.coverage:.3g}"


def report_text(r) -> str:
    parts = [analysis_text(r.analysis), "",
             f"unit {r.probe.unit}: closed form {r.closed_box}, exact {r.exact_box}, "
             f"exact within input {r.exact_clipped_box}, probe {r.probe_box}"]
    parts += [f"diagnosis: {d}" for d in r.diagnoses]
    parts += [f"MISMATCH: {m}" for m in r.mismatches]
    parts.append(report_verdict(r))
    return "\n".join(parts)


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if hasattr(v, "item"):
        return v.item()
    return v


def report_dict(r) -> dict:
    return _jsonable({
        "ok": r.ok, "size": r.size, "stride": r.stride, "padding": r.padding,
        "unit": r.probe.unit, "closed_box": r.closed_box, "exact_box": r.exact_box,
        "exact_clipped_box": r.exact_clipped_box, "probe_box": r.probe_box,
        "coverage": r.probe.coverage, "truncated": r.probe.truncated,
        "mismatches": list(r.mismatches), "diagnoses": list(r.diagnoses),
        "analysis": analysis_dict(r.analysis),
    })


def to_json(d: dict) -> str:
    return json.dumps(_jsonable(d), indent=2)


_GREEN, _AMBER, _RED = "#1a7f37", "#9a6700", "#cf222e"
_CSS = ("border-collapse:collapse;font-family:monospace;font-size:12px", "padding:2px 8px;text-align:left")


def _html_table(headers, rows) -> str:
    th, td = _CSS[1], _CSS[1]
    head = "".join(f'<th style="{th}">{html.escape(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f'<td style="{td}">{html.escape(str(c))}</td>' for c in r) + "</tr>"
                   for r in rows)
    return f'<table style="{_CSS[0]}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _verdict_html(text: str, colour: str) -> str:
    return f'<p style="color:{colour};font-weight:bold">{html.escape(text)}</p>'


def analysis_html(a) -> str:
    """The per-layer table and the summary line, coloured by status (ok, varies, global)."""
    colour = {"ok": _GREEN, "varies": _AMBER, "global": _RED}.get(a.status, _AMBER)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in a.notes)
    return (_html_table(["layer", "op", "output", "size", "stride", "padding"], _rows(a))
            + (f"<ul>{notes}</ul>" if notes else "") + _verdict_html(summary(a), colour))


def _probe_rows(e) -> list[list[str]]:
    return [["output", e.target], ["unit", str(e.unit)], ["RF size", _x(e.size)], ["box", str(e.box)],
            ["coverage", _coverage(e)], ["truncated", "yes" if e.truncated else "no"],
            ["input", str(e.input_shape)], ["mode", e.mode]]


def probe_html(e) -> str:
    """The probe's numbers as a table; amber when the RF is truncated by the input border."""
    colour = _AMBER if e.truncated else _GREEN
    return _html_table(["probe", "value"], _probe_rows(e)) + _verdict_html(probe_text(e), colour)


def report_verdict(r) -> str:
    verdict = "OK: all routes agree" if r.ok else "FAIL: the routes disagree"
    if r.ok and r.analysis.status == "global":     # no local RF: never print the input size as one
        verdict += f": the RF is global (every position of the {_x(r.probe.input_shape[1:])} input)"
    elif r.size is not None and r.ok:
        verdict += f", RF {_x(r.size)}"
    return verdict


def report_html(r) -> str:
    """Per-layer table, the unit's box by each route, diagnoses and the coloured verdict."""
    routes = [["closed form (hull)", str(r.closed_box)], ["exact propagation", str(r.exact_box)],
              ["exact within input", str(r.exact_clipped_box)], ["gradient probe", str(r.probe_box)]]
    items = "".join(f"<li>diagnosis: {html.escape(d)}</li>" for d in r.diagnoses)
    items += "".join(f'<li style="color:{_RED}">MISMATCH: {html.escape(m)}</li>' for m in r.mismatches)
    return (analysis_html(r.analysis)
            + f"<p>unit {html.escape(str(r.probe.unit))} of {html.escape(r.probe.target)}:</p>"
            + _html_table(["route", "box (first, last) per axis"], routes)
            + (f"<ul>{items}</ul>" if items else "")
            + _verdict_html(report_verdict(r), _GREEN if r.ok else _RED))


# ----------------------------------------------------------------------------- plots
_PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def _figure(path, ax, ncols: int):
    """A figure and its axes. With ``path`` and no ``ax``, a pyplot-free Figure (headless,
    not shown); otherwise pyplot's, so Jupyter displays it inline."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        from .errors import RFProbeError
        raise RFProbeError("plotting needs matplotlib, an optional extra: pip install 'rfprobe[plot]' "
                           "(or pip install matplotlib)") from None
    if ax is not None:
        return ax.figure, [ax]
    size = (4.2 * ncols + 0.8, 4.0)
    if path is not None:
        from matplotlib.figure import Figure
        fig = Figure(figsize=size, layout="constrained")
    else:
        import matplotlib.pyplot as plt
        fig = plt.figure(figsize=size, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _plot_data(result):
    """(map, zero-means-outside, boxes [(label, box, colour, style)], marker, title, bar label)."""
    import numpy as np
    from .erf import ERF
    if isinstance(result, ERF):
        f = result
        boxes = []
        if f.theoretical_box is not None:
            boxes.append((f"theoretical RF {_x(f.theoretical)}", f.theoretical_box, "tab:orange", "-"))
        c = f.square_center
        t = 0.5
        side = _side_of(f, t)
        if side is not None:
            boxes.append((f"square holding {t:.0%} (area ratio {f.area_ratio(t):.3g})",
                          tuple((ci - side / 2, ci + side / 2 - 1) for ci in c), "white", "--"))
        title = (f"ERF of {f.target} unit {f.unit} ({f.statistic}, n={f.n}): std "
                 + "x".join(f"{s:.3g}" for s in f.std))
        return f.map, False, boxes, (f.center, "centre of mass"), title, f"mean {'|g|' if f.statistic == 'abs' else 'g²'} (sums to 1)"
    if hasattr(result, "layers") and hasattr(result, "region"):      # Analysis: the exact set
        a = result
        reg = a.region(None, bounded=True)
        m = reg.input_mask().astype(np.float64)
        boxes = []
        if a.status != "global":
            boxes.append(("exact box (unbounded)", a.box(None), "tab:orange", "-"))
        return m, True, boxes, (_centre_of(boxes), f"unit {a.centre_unit}"), \
            f"exact RF of {a.target} unit {a.centre_unit}: {_x(a.size)}", "in the RF"
    e = getattr(result, "probe", result)
    if not hasattr(e, "grad"):
        from .errors import ArgumentError
        raise ArgumentError(f"plot takes a ProbeResult, Report, Analysis or ERF, not {type(result).__name__}")
    boxes = []
    if e is not result:                       # a Report: the closed form's and the exact box
        r = result
        if r.closed_box is not None:
            boxes.append((f"closed form {_x(r.size)}", r.closed_box, "tab:orange", "-"))
        if r.exact_box is not None and r.exact_box != r.closed_box:
            boxes.append(("exact (unbounded)", r.exact_box, "tab:red", "--"))
    elif e.analysis is not None and e.analysis.status != "global":
        try:
            boxes.append(("analytic box", e.analysis.box(e.unit), "tab:orange", "-"))
        except Exception:
            pass
    marker = _centre_of(boxes) or tuple((lo + hi) / 2 for lo, hi in e.box)
    if e.grad is None:
        from .errors import ArgumentError
        raise ArgumentError("this probe ran in slab mode (per-axis projections only); plot "
                            "rfprobe.probe(model, ..., full=True) to see the whole map")
    title = f"RF of {e.target} unit {e.unit}: {_x(e.size)}, coverage {_coverage(e)}"
    return e.grad, True, boxes, (marker, f"unit {e.unit}"), title, "|gradient| (0 = outside the RF)"


def _side_of(f, t):
    import numpy as np
    ratio = f.area_ratio(t)
    area = ratio * float(np.prod(f.map.shape))
    # the side of the square whose clipped area is that; exact when the square fits the map
    side = area ** (1 / f.map.ndim)
    return side if all(side <= n for n in f.map.shape) else None


def _centre_of(boxes):
    if not boxes:
        return None
    return tuple((lo + hi) / 2 for lo, hi in boxes[0][1])


def plot(result, path: str | None = None, ax=None, log: bool = False, slices: int = 5):
    """Plot a probe, verify, analysis or ERF result: the gradient heatmap (zeros in grey, so
    dilation holes show), the analytic box, and the probed unit. 1-D as bars, 3-D as slices
    along the first axis (``slices`` of them). ``log``: logarithmic colour scale. ``path``:
    save as PNG, SVG or PDF (by the suffix). Needs matplotlib (``pip install 'rfprobe[plot]'``).

    >>> import rfprobe, matplotlib
    >>> fig = plot(rfprobe.verify("conv3/d2 conv3/d2", input_shape=(1, 9, 9)), log=True)
    >>> fig.axes[0].get_title()
    'RF of 1 unit (0, 0): 9x9, coverage 0.309'
    """
    import numpy as np
    if path is not None:
        suffix = str(path)[str(path).rfind("."):].lower() if "." in str(path) else ""
        if suffix not in _PLOT_SUFFIXES:
            from .errors import ArgumentError
            raise ArgumentError(f"path={str(path)!r}: plots save as {', '.join(_PLOT_SUFFIXES)}; "
                                "give a file name with one of these suffixes")
    data, holes, boxes, (marker, marker_label), title, bar_label = _plot_data(result)
    data = np.asarray(data, dtype=np.float64)
    if data.ndim == 3:
        ext = boxes[0][1][0] if boxes else None
        nz = np.flatnonzero(data.reshape(data.shape[0], -1).any(axis=1))
        lo, hi = (ext if ext is not None else ((nz[0], nz[-1]) if len(nz) else (0, data.shape[0] - 1)))
        lo, hi = max(int(np.floor(lo)), 0), min(int(np.ceil(hi)), data.shape[0] - 1)
        idx = sorted({int(round(v)) for v in np.linspace(lo, hi, max(1, min(slices, hi - lo + 1)))})
        if ax is not None:
            idx = [idx[len(idx) // 2]]
    else:
        idx = [None]
    fig, axes = _figure(path, ax, len(idx))
    from matplotlib import colors
    positive = data[data > 0]
    vmax = float(positive.max()) if positive.size else 1.0
    vmin = float(positive.min()) if positive.size else 1.0
    norm = colors.LogNorm(vmin=vmin, vmax=vmax) if log and positive.size and vmin < vmax else \
        colors.Normalize(vmin=0.0, vmax=vmax)
    for axis, z in zip(axes, idx):
        if data.ndim == 1:
            _plot_1d(axis, data, boxes, marker, marker_label, log, bar_label)
        else:
            img = data if z is None else data[z]
            bx = [(lbl, b if z is None else b[1:], col, st) for lbl, b, col, st in boxes
                  if z is None or b[0][0] - 0.5 <= z <= b[0][1] + 0.5]
            mk = None if marker is None else (marker if z is None else marker[1:])
            im = _plot_2d(axis, img, holes, norm, bx, mk, marker_label)
            if z is not None:
                axis.set_title(f"slice {z} of axis 0", fontsize=9)
    if data.ndim >= 2:
        fig.colorbar(im, ax=axes, shrink=0.8, label=bar_label + (" (log)" if log else ""))
    head = axes[0] if data.ndim < 3 else None
    if head is not None:
        head.set_title(title, fontsize=9)
    else:
        fig.suptitle(title, fontsize=9)
    if path is not None:
        fig.savefig(path)
    return fig


def _plot_1d(ax, data, boxes, marker, marker_label, log, label):
    import numpy as np
    x = np.arange(len(data))
    ax.bar(x, data, width=1.0, color="tab:blue", label=label)
    for lbl, b, col, st in boxes:
        ax.axvspan(b[0][0] - 0.5, b[0][1] + 0.5, alpha=0.15, color=col, label=lbl, linestyle=st)
    if marker is not None:
        ax.axvline(marker[0], color="tab:red", linestyle=":", label=marker_label)
    if log and (data > 0).any():
        ax.set_yscale("log")
    lo = min([0] + [b[0][0] for _, b, _, _ in boxes]) - 1
    hi = max([len(data) - 1] + [b[0][1] for _, b, _, _ in boxes]) + 1
    ax.set_xlim(lo, hi)
    ax.set_xlabel("input index")
    ax.legend(fontsize=7, loc="upper right")


def _plot_2d(ax, img, holes, norm, boxes, marker, marker_label):
    import numpy as np
    from matplotlib.patches import Rectangle
    from matplotlib import colormaps
    cmap = colormaps["viridis"].with_extremes(bad="#d9d9d9")
    shown = np.ma.masked_where(img <= 0, img)   # zeros (outside the RF, holes) in grey
    im = ax.imshow(shown, cmap=cmap, norm=norm, interpolation="nearest", origin="upper")
    rows, cols = img.shape
    lo_r, hi_r, lo_c, hi_c = -0.5, rows - 0.5, -0.5, cols - 0.5
    for lbl, b, col, st in boxes:
        (r0, r1), (c0, c1) = b
        ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False,
                               edgecolor=col, lw=1.5, linestyle=st, label=lbl))
        lo_r, hi_r = min(lo_r, r0 - 1), max(hi_r, r1 + 1)
        lo_c, hi_c = min(lo_c, c0 - 1), max(hi_c, c1 + 1)
    if marker is not None:
        ax.plot([marker[1]], [marker[0]], marker="x", color="tab:red", ms=8, mew=2, ls="none",
                label=marker_label)
    ax.set_xlim(lo_c, hi_c)
    ax.set_ylim(hi_r, lo_r)
    ax.set_xlabel("input column")
    ax.set_ylabel("input row")
    if boxes or marker is not None:
        ax.legend(fontsize=7, loc="upper right", framealpha=0.7)
    return im


def compare_text(rows) -> str:
    return _table(["stack", "RF", "params", "weights", "MACs/position"],
                  [[r.spec, _x(r.size), str(r.params), str(r.params_no_bias), str(r.macs_per_position)]
                   for r in rows])


# ----------------------------------------------------------------------------- erf, cost
def progress_line(label: str, done: int, total: int, seconds: float, width: int = 24) -> str:
    """One line of the progress bar (no newline).

    >>> progress_line("erf", 8, 32, 1.0)
    'erf    8/32  [######                  ] 1.0s'
    """
    fill = int(width * min(done, total) / total) if total else width
    return f"{label} {done:4d}/{total}  [{'#' * fill}{' ' * (width - fill)}] {seconds:.1f}s"


def _f(v, digits: int = 4) -> str:
    return "-" if v is None else "x".join(f"{x:.{digits}g}" for x in v)


def _erf_rows(f) -> list[list[str]]:
    g = f.gaussian
    rows = [["output, unit", f"{f.target} {f.unit}"], ["inputs averaged", f"{f.n} (mean {f.statistic})"],
            ["input", str(f.input_shape)], ["theoretical RF", _x(f.theoretical)],
            ["centre of mass", _f(f.center)], ["std per axis", _f(f.std)],
            ["ratio (4 std / RF)", _f(f.ratio, 3)],
            ["gaussian fit", f"centre {_f(g.center)}, sigma {_f(g.sigma)}, r2 {g.r2:.3g}"]]
    rows += [[f"radius holding {p:.0%}", f"{f.radius(p):.4g}"] for p in (0.5, 0.95)]
    rows += [[f"area ratio t={t:g}", f"{f.area_ratio(t):.4g}"] for t in (0.2, 0.3, 0.5, 0.99)]
    return rows


def erf_text(f) -> str:
    """The ERF's metrics, one per line."""
    return "effective RF\n" + _table(["metric", "value"], _erf_rows(f))


def erf_html(f) -> str:
    """The ERF's metrics as an HTML table."""
    return _html_table(["effective RF", "value"], _erf_rows(f))


def erf_dict(f) -> dict:
    g = f.gaussian
    return _jsonable({
        "target": f.target, "unit": f.unit, "n": f.n, "statistic": f.statistic,
        "input_shape": f.input_shape, "theoretical": f.theoretical, "center": f.center, "std": f.std,
        "ratio": f.ratio, "gaussian": {"center": g.center, "sigma": g.sigma, "r2": g.r2},
        "radius": {str(p): f.radius(p) for p in (0.5, 0.95)},
        "area_ratio": {str(t): f.area_ratio(t) for t in (0.2, 0.3, 0.5, 0.99)},
    })


def _compare_rows(rows) -> list[list[str]]:
    out = []
    for r in rows:
        macs = getattr(r, "macs", None)
        out.append([r.spec, _x(r.size), _x(getattr(r, "stride", None)), str(r.params), str(r.params_no_bias),
                    str(r.macs_per_position), "-" if macs is None else str(macs)])
    return out


_COMPARE_HEAD = ["stack", "RF", "stride", "params", "weights", "MACs/position", "MACs"]


def comparison_text(c) -> str:
    """The side-by-side table of ``rfprobe.compare``."""
    lines = [_table(_COMPARE_HEAD, _compare_rows(c.rows))]
    if c.input_shape is not None:
        lines.append(f"channels {c.channels}; MACs for an input of {c.input_shape}")
    else:
        lines.append(f"channels {c.channels}; MACs/position: per output position of every conv, summed")
    return "\n".join(lines)


def comparison_html(c) -> str:
    return _html_table(_COMPARE_HEAD, _compare_rows(c.rows))


def cost_text(c) -> str:
    macs = "" if c.macs is None else f", {c.macs} MACs for input {c.input_shape}"
    return (f"{c.params} parameters ({c.params_no_bias} without biases), "
            f"{c.macs_per_position} MACs per output position{macs}")


def collapse_refusal(index: int, module, why: str) -> str:
    token = getattr(module, "rfprobe_token", None)
    name = f"layer {index} ({type(module).__name__}{', ' + repr(token) if token else ''})"
    return f"cannot collapse the stack: {name} {why}"


def fallback_note(error_type: str, error: str) -> str:
    """The note a graph carries when the model had to be traced with real values."""
    return (f"traced on the CPU with real values, because on meta tensors the model raised "
            f"{error_type}: {error[:160]}. The model reads tensor values (data-dependent control "
            "flow): the graph is the path this random input took; other inputs may take other "
            "branches, whose ops rfprobe has not seen")


def hooks_note(where: list[str]) -> str:
    """The note a graph carries when the user's model has forward hooks, which rfprobe's
    private copy runs without."""
    shown = ", ".join(where[:4]) + (f" and {len(where) - 4} more" if len(where) > 4 else "")
    return (f"forward hooks on {shown} were not run: rfprobe traces a private copy without hooks, "
            "so that they cannot write into your objects. A hook that changes a module's input or "
            "output changes the model: remove it, or put its computation in a module")


def trace_memory(spent: int, budget: int, input_shape: tuple[int, ...]) -> str:
    """Why a trace with real values was stopped."""
    return (f"tracing the model with real values on an input of shape {input_shape} (it cannot run on "
            f"meta tensors) kept {_bytes(spent)}, above half the free memory ({_bytes(budget)}), so "
            "rfprobe stopped it. Pass a smaller input_shape=(C, H, W) that the model accepts")


def _bytes(n: float) -> str:
    return f"{n / 2 ** 30:.2f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.1f} MiB"


# ----------------------------------------------------------------------------- verify's findings
def global_coupling(cause: str) -> str:
    return f"global coupling: {cause}"


def hull(closed_box, exact_box) -> str:
    return (f"closed-form box {closed_box} is the hull; the exact set spans {exact_box}: "
            "a strided dilated kernel or a pad/crop leaves the formula's edge indices unread")


def varies(size_min, size) -> str:
    return (f"the RF varies with position: sizes {size_min} to {size} "
            "per axis (the closed form needs a fixed stride and offset)")


def holes(coverage: float) -> str:
    return f"holes: only {coverage:.3g} of the box is in the RF (dilation or stride gridding)"


def routes_differ(extra: int, missing: int, axis: int | None = None) -> str:
    if axis is None:
        return (f"exact propagation and gradient probe differ: the probe has {extra} "
                f"positions the exact route lacks and misses {missing}")
    return (f"exact propagation and gradient probe differ on axis {axis} (slab mode): the "
            f"probe has {extra} indices the exact route lacks and misses {missing}")


def truncated(exact_box, spatial) -> str:
    return (f"border truncation: the unit's RF {exact_box} does not fit in the input "
            f"{spatial}; the probed box is clipped")


def probe_saw_local() -> str:
    return ("the analytic route says global but the probe saw a local RF: the global op "
            "may not reach the probed output")


def gradient_stops(stops) -> str:
    """``stops``: the nodes (a detach, a bool mask, argmax) the gradient cannot pass, first ones first."""
    names = ", ".join(f"{n.name!r} ({n.op})" for n in stops[:3]) + (
        f" and {len(stops) - 3} more" if len(stops) > 3 else "")
    return (f"the path through {names} carries values but no gradient (a detach, a bool mask "
            "from a comparison, or argmax indices): the unit does depend on the positions behind it (the "
            "exact route follows the values); the gradient probe cannot see past it")


def possible_causes() -> str:
    return ("possible causes: an op whose gradient is zero where its output still depends on "
            "the input (integer ops, argmax routing), or a rule that does not match the op")


# ----------------------------------------------------------------------------- command line
CLI_DESCRIPTION = ("Exact receptive fields of PyTorch models, computed three ways (closed form, "
                   "exact propagation, gradient probe) and checked against each other. "
                   "Without a command: the seed demo. Exit 0 ok, 1 mismatch, 2 bad input.")
CLI_HELP = {"verify": "all routes for one unit, compared (exit 1 when they disagree)",
            "table": "the per-layer closed-form table",
            "compare": "RF, parameters and MACs of stacks side by side"}


def demo_text(groups) -> str:
    """The seed demo: groups of (spec, Report, Cost), a big kernel against a stack of 3x3."""
    lines = ["Receptive fields of small stacks, verified three ways (closed form, exact, gradient)", "",
             f"{'stack':34} {'RF':>6} {'weights/ch pair':>16} {'routes':>8}"]
    for group in groups:
        for spec, r, c in group:
            lines.append(f"{spec:34} {_x(r.size):>6} {c.params_no_bias:>16} "
                         f"{'agree' if r.ok else 'DIFFER':>8}")
        lines.append("")
    lines.append("Two 3x3 see 5x5 with 18 weights instead of 25; three see 7x7 with 27 instead of 49.")
    return "\n".join(lines)


def expectation_failed(what: str, want, got, status: str = "ok") -> str:
    if status == "global":
        return f"expected {what} {_x(want)}, but the receptive field is global (see the diagnosis)"
    return f"expected {what} {_x(want)}, got {_x(got)}"


def cli_error(e: Exception) -> str:
    return f"rfprobe: error: {e}"
