"""Plots (matplotlib, an optional extra): the gradient heatmap or the exact set, the boxes of
the routes, the RF's centre and, where the output grid is the input's, the unit.

A result says what to draw: its ``plot_data()`` calls one of ``probe_plot_data``,
``report_plot_data``, ``analysis_plot_data`` or ``erf_plot_data`` here, which return
``(map, zero-means-outside, boxes [(label, box, colour, style)], markers [(label, position)],
title, colour bar label)``; :func:`plot` draws that.

Every legend entry is one of ``LABELS`` (``{...}`` filled in):

- ``RF centre``: the middle of the unit's RF, ``u*S - P + (r - 1)/2`` per axis (Distill's
  closed form; the middle of the exact box where the RF varies with position);
- ``unit``: the unit's own index ``u`` in input coordinates, drawn only where the output grid
  is the input's (effective stride 1 and as many output as input positions on every axis:
  causal and 'same'-padded nets); elsewhere the title names the unit;
- ``centre of mass``: the ERF's weighted mean position;
- the boxes: ``closed form 5x5`` (the closed form's box), ``exact box (unbounded)`` (exact
  propagation, reaching into padding where it does), ``theoretical RF 7x7`` and
  ``square holding 50% (area ratio 0.3)`` (the ERF's).

Titles name the selected output as the user knows it: the module returning it and its class,
``'layer3.1' (BasicBlock)``, or the node's name where no module returns it.

>>> import rfprobe
>>> print(probe_plot_data(rfprobe.probe("conv3"))[4])
RF of '0' (Conv2d), unit (0, 0)
3x3, coverage 1
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..errors import ArgumentError, RFProbeError
from ..measure import closed_form_box, projection
from .text import coverage_text, joined

if TYPE_CHECKING:                     # the result classes, for readers and type checkers only
    from ..results import ERF, Analysis, ProbeResult, Report

PLOT_SUFFIXES = (".png", ".svg", ".pdf")
RF_CENTRE, UNIT, MASS_CENTRE = "RF centre", "unit", "centre of mass"
LABELS = (RF_CENTRE, UNIT, MASS_CENTRE, "closed form {size}", "exact box (unbounded)",
          "theoretical RF {size}", "square holding {share} (area ratio {ratio})")
# how each marker looks: 2-D (matplotlib marker style), 1-D (vertical line style)
_MARKER_2D = {RF_CENTRE: dict(marker="P", ms=9, mfc="white", mec="black", mew=1.0),
              UNIT: dict(marker="x", ms=9, color="tab:red", mew=2.2),
              MASS_CENTRE: dict(marker="o", ms=8, mfc="none", mec="tab:red", mew=2.0)}
_MARKER_1D = {RF_CENTRE: dict(color="black", linestyle="--", lw=1.2),
              UNIT: dict(color="tab:red", linestyle=":", lw=2.0),
              MASS_CENTRE: dict(color="tab:red", linestyle="-.", lw=1.2)}


def is_legend_label(text: str) -> bool:
    """Whether ``text`` is one of ``LABELS`` (with its ``{...}`` filled in).

    >>> is_legend_label("closed form 5x5"), is_legend_label("unit (0, 0)")
    (True, False)
    """
    return any(re.fullmatch(re.sub(r"\\\{\w+\\\}", ".+", re.escape(t)), text) for t in LABELS)


def _figure(path, ax, ncols: int):
    """A figure and its axes. With ``path`` and no ``ax``, a pyplot-free Figure (headless,
    not shown); otherwise pyplot's, so Jupyter displays it inline."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RFProbeError("plotting needs matplotlib, an optional extra: pip install 'rfprobe[plot]' "
                           "(or pip install matplotlib)") from None
    if ax is not None:
        return ax.figure, [ax]
    size = (4.2 * ncols + 1.0, 4.8)
    if path is not None:
        from matplotlib.figure import Figure
        fig = Figure(figsize=size, layout="constrained")
    else:
        import matplotlib.pyplot as plt
        fig = plt.figure(figsize=size, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


# ----------------------------------------------------------------------------- what to draw
def output_name(a: Analysis | None, target: str) -> str:
    """The selected output as the user knows it: ``'layer3.1' (BasicBlock)``, the module
    returning it and its class; the node's name, quoted, where no module returns it.

    >>> import rfprobe
    >>> a = rfprobe.analyze(rfprobe.build("conv3 relu"))
    >>> output_name(a, a.target), output_name(None, "up:interpolate#1")
    ("'1' (ReLU)", "'up:interpolate#1'")
    """
    graph = getattr(a, "graph", None)
    owner = None
    if graph is not None:
        try:
            owner = graph.owner(graph.node(target))
        except KeyError:
            owner = None
    selected = f" [{a.selection}]" if getattr(a, "selection", "") else ""
    if owner is None:
        return repr(target) + selected
    kind = graph.module_types.get(owner)
    return (f"{owner!r} ({kind})" if kind else repr(owner)) + selected


def _unit_text(unit) -> str:
    return str(unit[0]) if len(unit) == 1 else "(" + ", ".join(map(str, unit)) + ")"


def rf_markers(a: Analysis | None, unit, box=None) -> list:
    """``[(label, position)]``: the RF's centre (closed form ``u*S - P + (r - 1)/2`` when the
    analysis is 'ok'; otherwise the middle of the exact box, or of ``box`` without an
    analysis; none for a global RF) and, where the output grid is the input's (``_same_grid``),
    the unit itself at input coordinate ``u``.

    >>> import rfprobe
    >>> rf_markers(rfprobe.analyze("conv3/s2 conv3/s2", input_shape=(1, 15, 15)), (1, 2))
    [('RF centre', (7.0, 11.0))]
    >>> rf_markers(rfprobe.analyze("conv3/p1 conv3/p1", input_shape=(1, 8, 8)), (0, 7))
    [('RF centre', (0.0, 7.0)), ('unit', (0, 7))]
    """
    status = getattr(a, "status", None)
    if status == "ok":
        centre = _middle(closed_form_box(unit, a.size, a.stride, a.padding))
    elif status == "global":
        return []
    else:
        if a is not None:
            try:
                box = a.box(unit)
            except RFProbeError:
                return []
        if box is None:
            return []
        centre = _middle(box)
    marks = [(RF_CENTRE, centre)]
    if status == "ok" and _same_grid(a):
        marks.append((UNIT, tuple(unit)))
    return marks


def _same_grid(a: Analysis) -> bool:
    """Whether output index ``u`` is input position ``u``: stride 1 and as many output as input
    positions on every axis (padding ``r - 1`` in all: 'same' and causal nets). A valid conv's
    unit 0 is not at input 0 (it reads ``0 .. r - 1``), so no unit marker there.

    >>> import rfprobe
    >>> _same_grid(rfprobe.analyze("conv3/p1", input_shape=(1, 8, 8))), _same_grid(rfprobe.analyze("conv3"))
    (True, False)
    """
    inputs = a.graph.nodes[0].spatial if a.graph is not None else tuple(a.input_shape[1:])
    return all(s == 1 for s in a.stride) and tuple(a.output_spatial) == tuple(inputs)


def _middle(box):
    return tuple((lo + hi) / 2 for lo, hi in box)


def erf_plot_data(f: ERF):
    """The ERF's map, its theoretical RF box and centre, the square holding half the mass and
    the centre of mass.

    >>> import rfprobe
    >>> print(erf_plot_data(rfprobe.ERF.from_gradient([[0, 1, 0], [1, 4, 1], [0, 1, 0]]))[4])
    ERF (abs, n=1)
    std 0.5x0.5
    """
    boxes, marks = [], []
    if f.theoretical_box is not None:
        boxes.append((f"theoretical RF {joined(f.theoretical)}", f.theoretical_box, "tab:orange", "-"))
        marks += rf_markers(f.analysis, f.unit, f.theoretical_box) if f.unit else [
            (RF_CENTRE, _middle(f.theoretical_box))]
    c = f.square_center
    t = 0.5
    side = _side_of(f, t)
    if side is not None:
        boxes.append((f"square holding {t:.0%} (area ratio {f.area_ratio(t):.3g})",
                      tuple((ci - side / 2, ci + side / 2 - 1) for ci in c), "deeppink", "--"))
    marks.append((MASS_CENTRE, f.center))
    what = "ERF" + (f" of {output_name(f.analysis, f.target)}" if f.target else "") + (
        f", unit {_unit_text(f.unit)}" if f.unit else "")
    title = f"{what} ({f.statistic}, n={f.n})\nstd " + "x".join(f"{s:.3g}" for s in f.std)
    return f.map, False, boxes, marks, title, f"mean {'|g|' if f.statistic == 'abs' else 'g²'} (sums to 1)"


def analysis_plot_data(a: Analysis):
    """The exact set of the centre unit within the input, its unbounded box and centre.

    >>> import rfprobe
    >>> int(analysis_plot_data(rfprobe.analyze("conv3/d2"))[0].sum())     # taps 0, 2, 4 per axis
    9
    """
    import numpy as np
    reg = a.region(None, bounded=True)
    m = reg.input_mask().astype(np.float64)
    boxes = []
    if a.status != "global":
        boxes.append(("exact box (unbounded)", a.box(None), "tab:orange", "-"))
    title = f"exact RF of {output_name(a, a.target)}, unit {_unit_text(a.centre_unit)}\n{joined(a.size)}"
    return m, True, boxes, rf_markers(a, a.centre_unit), title, "in the RF"


def probe_plot_data(e: ProbeResult):
    """The probe's gradient, the exact box of its unit, the RF's centre and the unit."""
    boxes = []
    if e.analysis is not None and e.analysis.status != "global":
        try:
            boxes.append(("exact box (unbounded)", e.analysis.box(e.unit), "tab:orange", "-"))
        except RFProbeError:
            pass
    return _gradient_data(e, boxes)


def report_plot_data(r: Report):
    """The probe's gradient, the closed form's box and the exact one where they differ.

    >>> import rfprobe
    >>> [b[0] for b in report_plot_data(rfprobe.verify("conv3"))[2]]
    ['closed form 3x3']
    """
    boxes = []
    if r.closed_box is not None:
        boxes.append((f"closed form {joined(r.size)}", r.closed_box, "tab:orange", "-"))
    if r.exact_box is not None and r.exact_box != r.closed_box:
        boxes.append(("exact box (unbounded)", r.exact_box, "tab:red", "--"))
    return _gradient_data(r.probe, boxes)


def _gradient_data(e: ProbeResult, boxes):
    if e.grad is None:
        raise ArgumentError("this probe ran in slab mode (per-axis projections only); plot "
                            "rfprobe.probe(model, ..., full=True) to see the whole map")
    title = (f"RF of {output_name(e.analysis, e.target)}, unit {_unit_text(e.unit)}\n"
             f"{joined(e.size)}, coverage {coverage_text(e)}")
    marks = rf_markers(e.analysis, e.unit, e.box)
    return e.grad, True, boxes, marks, title, "|gradient| (0 = outside the RF)"


def _side_of(f, t):
    import numpy as np
    ratio = f.area_ratio(t)
    area = ratio * float(np.prod(f.map.shape))
    # the side of the square whose clipped area is that; exact when the square fits the map
    side = area ** (1 / f.map.ndim)
    return side if all(side <= n for n in f.map.shape) else None


# ----------------------------------------------------------------------------- drawing
def plot(result: Any, path: str | None = None, ax: Any = None, log: bool = False, slices: int = 5) -> Any:
    """Plot a probe, verify, analysis or ERF result: the gradient heatmap (zeros in grey, so
    dilation holes show), the boxes of the routes, the RF's centre and (where the output grid
    is the input's) the unit; the legend sits below the axes, on no data. Drawing into your
    ``ax``, the legend takes no more width than the axes' share of the figure beside their
    colour bar (fewer columns where needed), so panels side by side keep their size; give
    the figure ``layout="constrained"`` (or save it with ``bbox_inches="tight"``, as Jupyter
    does) so it has room below. 1-D as bars, 3-D as slices along the first axis (``slices``
    of them). ``log``: logarithmic colour scale. ``path``: save as PNG, SVG or PDF (by the suffix). Needs matplotlib
    (``pip install 'rfprobe[plot]'``).

    >>> import rfprobe, matplotlib
    >>> fig = plot(rfprobe.verify("conv3/d2 conv3/d2", input_shape=(1, 9, 9)), log=True)
    >>> print(fig.axes[0].get_title())
    RF of '1' (Conv2d), unit (0, 0)
    9x9, coverage 0.309
    """
    import numpy as np
    _check_path(path)
    if not callable(getattr(result, "plot_data", None)):   # each result names its plot-data function
        raise ArgumentError(f"plot takes a ProbeResult, Report, Analysis or ERF, not {type(result).__name__}")
    data, holes, boxes, marks, title, bar_label = result.plot_data()
    data = np.asarray(data, dtype=np.float64)
    idx = _slices(data, boxes, slices, ax) if data.ndim == 3 else [None]
    fig, axes = _figure(path, ax, len(idx))
    norm = _norm(data, log)
    for axis, z in zip(axes, idx):
        if data.ndim == 1:
            _plot_1d(axis, data, boxes, marks, log, bar_label)
            continue
        img = data if z is None else data[z]
        bx = [(lbl, b if z is None else b[1:], col, st) for lbl, b, col, st in boxes
              if z is None or b[0][0] - 0.5 <= z <= b[0][1] + 0.5]
        mk = [(lbl, p if z is None else p[1:]) for lbl, p in marks]
        im = _plot_2d(axis, img, holes, norm, bx, mk)
        if z is not None:
            axis.set_title(f"slice {z} of axis 0", fontsize=9)
    bar = None
    if data.ndim >= 2:
        bar = fig.colorbar(im, ax=axes, shrink=0.8, label=bar_label + (" (log)" if log else ""))
    if data.ndim < 3:
        axes[0].set_title(title, fontsize=9)
    else:
        fig.suptitle(title, fontsize=9)
    _legend(fig, axes, own=ax is None, bar=bar)
    if path is not None:
        fig.savefig(path)
    return fig


def _check_path(path) -> None:
    if path is not None:
        suffix = str(path)[str(path).rfind("."):].lower() if "." in str(path) else ""
        if suffix not in PLOT_SUFFIXES:
            raise ArgumentError(f"path={str(path)!r}: plots save as {', '.join(PLOT_SUFFIXES)}; "
                                "give a file name with one of these suffixes")


def _slices(data, boxes, slices, ax) -> list[int]:
    """The indices along axis 0 to draw a 3-D map at: spread over the first box (or the
    nonzero part); one, the middle, when drawing into a given axes."""
    import numpy as np
    ext = boxes[0][1][0] if boxes else None
    nz = np.flatnonzero(projection(data, 0))
    lo, hi = (ext if ext is not None else ((nz[0], nz[-1]) if len(nz) else (0, data.shape[0] - 1)))
    lo, hi = max(int(np.floor(lo)), 0), min(int(np.ceil(hi)), data.shape[0] - 1)
    idx = sorted({int(round(v)) for v in np.linspace(lo, hi, max(1, min(slices, hi - lo + 1)))})
    return [idx[len(idx) // 2]] if ax is not None else idx


def _norm(data, log):
    from matplotlib import colors
    positive = data[data > 0]
    vmax = float(positive.max()) if positive.size else 1.0
    vmin = float(positive.min()) if positive.size else 1.0
    if log and positive.size and vmin < vmax:
        return colors.LogNorm(vmin=vmin, vmax=vmax)
    return colors.Normalize(vmin=0.0, vmax=vmax)


def _legend(fig, axes, own: bool, bar=None):
    """One legend, below the axes and their labels, covering no data: a figure legend in a
    figure of ours (its layout makes room), else under the given axes' own labels, no wider
    than the axes' share of its figure (see ``_fit_below``)."""
    handles, labels = [], []
    for axis in axes:
        for h, lbl in zip(*axis.get_legend_handles_labels()):
            if lbl not in labels:
                handles.append(h)
                labels.append(lbl)
    if not handles:
        return None
    kw = dict(fontsize=7, frameon=False)
    if own:
        return fig.legend(handles, labels, loc="outside lower center", ncols=_columns(len(labels)), **kw)
    return _fit_below(fig, axes[0], bar, handles, labels, kw)


def _columns(n: int) -> int:
    return 2 if n == 4 else min(n, 3)


def _fit_below(fig, ax, bar, handles, labels, kw):
    """The legend of a given axes, under its x labels, with as many columns as fit in the
    axes' share of the figure less its colour bar (``_room``), centred under the axes where
    it fits there, else flush with their right edge (reaching left under the y labels, not
    right under the colour bar). A wider legend makes a layout engine widen the axes' column
    for it on both sides: one panel of a row gets squashed, its colour bar pushed away, and
    the legends of neighbouring panels overlap."""
    from matplotlib.transforms import ScaledTranslation
    ax.apply_aspect()        # the box drawn (an image keeps its aspect), which the labels hang from
    box, tight = ax.get_window_extent(), ax.get_tightbbox()
    drop = (box.y0 - tight.y0) / fig.dpi                 # inches taken by the x labels
    anchor = ax.transAxes + ScaledTranslation(0, -drop, fig.dpi_scale_trans)
    room = _room(fig, ax, box, tight, bar)
    kw = dict(kw, columnspacing=1.2, handlelength=1.6, handletextpad=0.6)    # compact
    for n in range(_columns(len(labels)), 0, -1):
        leg = ax.legend(handles, labels, loc="upper right", bbox_to_anchor=(1, 0),
                        bbox_transform=anchor, ncols=n, **kw)
        width = leg.get_window_extent().width
        if width <= room:
            break
    leg.set_bbox_to_anchor((min(1.0, 0.5 + width / 2 / box.width), 0), transform=anchor)
    return leg


def _room(fig, ax, box, tight, bar) -> float:
    """The width, in pixels, a legend under ``ax`` may take: the axes' share of the figure's
    width (their columns of the grid they sit in, and of the grid that grid sits in) less the
    span from the axes' right edge to the right of the colour bar's label and the layout's
    pads; where the axes sit in no grid, the axes and their y labels."""
    spec = ax.get_subplotspec()
    if spec is None:
        return box.x1 - tight.x0
    top = spec.get_topmost_subplotspec()
    share = 1.0
    for s in [spec] if top is spec else [spec, top]:
        grid = s.get_gridspec()
        ratios = grid.get_width_ratios() or [1] * grid.ncols
        share *= sum(ratios[c] for c in s.colspan) / sum(ratios)
    beside = bar.ax.get_tightbbox().x1 - box.x1 if bar is not None else 0.0
    return share * fig.bbox.width - beside - 0.15 * fig.dpi


def _plot_1d(ax, data, boxes, marks, log, label):
    import numpy as np
    x = np.arange(len(data))
    ax.bar(x, data, width=1.0, color="tab:blue")
    for lbl, b, col, st in boxes:
        ax.axvspan(b[0][0] - 0.5, b[0][1] + 0.5, alpha=0.15, color=col, label=lbl, linestyle=st)
    for lbl, p in marks:
        ax.axvline(p[0], label=lbl, **_MARKER_1D[lbl])
    if log and (data > 0).any():
        ax.set_yscale("log")
    ax.set_xlim(*_span_1d(len(data), boxes))
    ax.set_xlabel("input index")
    ax.set_ylabel(label, fontsize=8)


def _span_1d(n: int, boxes) -> tuple[float, float]:
    """The x range of a 1-D plot: the input and every box, or around the boxes where they
    fill little of a long input (so the markers stay apart), with context on both sides."""
    lo = min([0] + [b[0][0] for _, b, _, _ in boxes]) - 1
    hi = max([n - 1] + [b[0][1] for _, b, _, _ in boxes]) + 1
    if boxes:
        b_lo = min(b[0][0] for _, b, _, _ in boxes)
        b_hi = max(b[0][1] for _, b, _, _ in boxes)
        margin = max(b_hi - b_lo + 1, 8)
        lo, hi = max(lo, b_lo - margin), min(hi, b_hi + margin)
    return lo, hi


def _plot_2d(ax, img, holes, norm, boxes, marks):
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
    for lbl, (r, c) in marks:
        ax.plot([c], [r], ls="none", label=lbl, **_MARKER_2D[lbl])
    ax.set_xlim(lo_c, hi_c)
    ax.set_ylim(hi_r, lo_r)
    ax.set_xlabel("input column")
    ax.set_ylabel("input row")
    return im
