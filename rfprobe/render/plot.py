"""Plots (matplotlib, an optional extra): the gradient heatmap or the exact set, the boxes of
the routes, the probed unit.

A result says what to draw: its ``plot_data()`` calls one of ``probe_plot_data``,
``report_plot_data``, ``analysis_plot_data`` or ``erf_plot_data`` here, which return
``(map, zero-means-outside, boxes [(label, box, colour, style)], (marker, marker label),
title, colour bar label)``; :func:`plot` draws that.

>>> import rfprobe
>>> probe_plot_data(rfprobe.probe("conv3"))[4]
'RF of 0 unit (0, 0): 3x3, coverage 1'
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ArgumentError, RFProbeError
from .text import coverage_text, joined

if TYPE_CHECKING:                     # the result classes, for readers and type checkers only
    from ..results import ERF, Analysis, ProbeResult, Report

PLOT_SUFFIXES = (".png", ".svg", ".pdf")


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
    size = (4.2 * ncols + 0.8, 4.0)
    if path is not None:
        from matplotlib.figure import Figure
        fig = Figure(figsize=size, layout="constrained")
    else:
        import matplotlib.pyplot as plt
        fig = plt.figure(figsize=size, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def erf_plot_data(f: ERF):
    """The ERF's map, its theoretical RF box and the square holding half the mass.

    >>> import rfprobe
    >>> erf_plot_data(rfprobe.ERF.from_gradient([[0, 1, 0], [1, 4, 1], [0, 1, 0]]))[4]
    'ERF of  unit () (abs, n=1): std 0.5x0.5'
    """
    boxes = []
    if f.theoretical_box is not None:
        boxes.append((f"theoretical RF {joined(f.theoretical)}", f.theoretical_box, "tab:orange", "-"))
    c = f.square_center
    t = 0.5
    side = _side_of(f, t)
    if side is not None:
        boxes.append((f"square holding {t:.0%} (area ratio {f.area_ratio(t):.3g})",
                      tuple((ci - side / 2, ci + side / 2 - 1) for ci in c), "white", "--"))
    title = (f"ERF of {f.target} unit {f.unit} ({f.statistic}, n={f.n}): std "
             + "x".join(f"{s:.3g}" for s in f.std))
    return f.map, False, boxes, (f.center, "centre of mass"), title, f"mean {'|g|' if f.statistic == 'abs' else 'g²'} (sums to 1)"


def analysis_plot_data(a: Analysis):
    """The exact set of the centre unit within the input, and its unbounded box.

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
    return m, True, boxes, (_centre_of(boxes), f"unit {a.centre_unit}"), \
        f"exact RF of {a.target} unit {a.centre_unit}: {joined(a.size)}", "in the RF"


def probe_plot_data(e: ProbeResult):
    """The probe's gradient and the analytic box of its unit (module example)."""
    boxes = []
    if e.analysis is not None and e.analysis.status != "global":
        try:
            boxes.append(("analytic box", e.analysis.box(e.unit), "tab:orange", "-"))
        except Exception:
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
        boxes.append(("exact (unbounded)", r.exact_box, "tab:red", "--"))
    return _gradient_data(r.probe, boxes)


def _gradient_data(e: ProbeResult, boxes):
    marker = _centre_of(boxes) or tuple((lo + hi) / 2 for lo, hi in e.box)
    if e.grad is None:
        raise ArgumentError("this probe ran in slab mode (per-axis projections only); plot "
                            "rfprobe.probe(model, ..., full=True) to see the whole map")
    title = f"RF of {e.target} unit {e.unit}: {joined(e.size)}, coverage {coverage_text(e)}"
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


def plot(result: Any, path: str | None = None, ax: Any = None, log: bool = False, slices: int = 5) -> Any:
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
        if suffix not in PLOT_SUFFIXES:
            raise ArgumentError(f"path={str(path)!r}: plots save as {', '.join(PLOT_SUFFIXES)}; "
                                "give a file name with one of these suffixes")
    if not callable(getattr(result, "plot_data", None)):   # each result names its plot-data function
        raise ArgumentError(f"plot takes a ProbeResult, Report, Analysis or ERF, not {type(result).__name__}")
    data, holes, boxes, (marker, marker_label), title, bar_label = result.plot_data()
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
