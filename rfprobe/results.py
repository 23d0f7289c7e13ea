"""The results rfprobe returns: frozen dataclasses holding the numbers, one home for all of
them. A result knows nothing of the routes that build it (rfprobe.routes, verify, cost and
the tracer are never imported here): where a result needs a route later (``Analysis.region``), the
route hands it a callable. Its views (``str``, Jupyter HTML, ``to_dict``, ``plot``) are the
functions of :mod:`rfprobe.render`, named in each class.

>>> import rfprobe
>>> r = rfprobe.verify("conv3 relu conv3")
>>> type(r) is Report, type(r.analysis) is Analysis, type(r.probe) is ProbeResult
(True, True, True)
>>> print(str(r).splitlines()[-1])
OK: all routes agree, RF 5x5
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .errors import ArgumentError, GlobalOpError, RFProbeError
from .hints import LayerStatus, Mode, Statistic, Status
from .measure import gaussian, mass_in_square, moments, remember, square_area
from .render import data, html, text
from .render.plot import analysis_plot_data, erf_plot_data, plot, probe_plot_data, report_plot_data
from .validate import check_fraction, normalize_unit


# ----------------------------------------------------------------------------- the analytic routes
Product = tuple  # per axis: sorted np.ndarray of indices


class _Remembers:
    """A result whose per-axis tuples point back at it (``measure.remember``): an unpickled or
    copied one points them at itself again (an ``RFTuple`` pickles as a plain tuple)."""

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__post_init__()


@dataclass(frozen=True)
class Region:
    """An exact set of input positions: a union of products of per-axis index sets. Where an
    op mixes every position of a tensor (attention, a global pool), ``global_cause`` names it,
    and ``products`` are still what the mixed tensors read (pooled keys whose stride exceeds
    their kernel skip positions); empty there, every position (the mixed tensor has no
    spatial axes)."""

    products: tuple[Product, ...]
    global_cause: str | None = None
    extent: tuple[int, ...] = ()          # the input's spatial shape

    @property
    def every(self) -> bool:
        """Every input position, without a set: a tensor without spatial axes mixed them."""
        return self.global_cause is not None and not self.products

    @property
    def box(self) -> tuple[tuple[int, int], ...]:
        if self.every:
            return tuple((0, n - 1) for n in self.extent)
        if not self.products:           # a unit that reads only padding: empty, as measure.box_of
            return tuple((0, -1) for _ in self.extent)
        return tuple((int(min(p[a][0] for p in self.products)), int(max(p[a][-1] for p in self.products)))
                     for a in range(len(self.extent)))

    @property
    def size(self) -> tuple[int, ...]:
        return tuple(b - a + 1 for a, b in self.box)

    def mask(self) -> np.ndarray:
        """Dense boolean mask over the box (global: over the whole input)."""
        box = self.box
        m = np.zeros([b - a + 1 for a, b in box], dtype=bool)
        if self.every:
            m[...] = True
            return m
        for p in self.products:
            m[np.ix_(*[ix - box[a][0] for a, ix in enumerate(p)])] = True
        return m

    def input_mask(self) -> np.ndarray:
        """Dense mask over the input tensor's spatial extent (indices outside are dropped)."""
        m = np.zeros(self.extent, dtype=bool)
        if self.every:
            m[...] = True
            return m
        for p in self.products:
            ix = [a[(a >= 0) & (a < n)] for a, n in zip(p, self.extent)]
            m[np.ix_(*ix)] = True
        return m

    @property
    def coverage(self) -> float:
        m = self.mask()
        return float(m.mean()) if m.size else 0.0


@dataclass(frozen=True)
class LayerRow:
    """One row of the per-layer table."""

    name: str
    op: str
    shape: tuple[int, ...]
    size: tuple[int, ...] | None
    stride: tuple[int, ...] | None
    padding: tuple[int, ...] | None
    status: LayerStatus
    why: str = ""


@dataclass(frozen=True, eq=False)
class Analysis(_Remembers):
    """Closed form and exact propagation for one output of a model.

    ``size``/``stride``/``padding`` are per-axis tuples from the closed form; when the RF varies
    with position they come from the exact route (``size`` is the largest, ``size_min`` the
    smallest over one period of units) and ``status`` is ``'varies'``; when an op couples every
    position ``status`` is ``'global'`` and ``global_causes`` names it, and ``suggested_layer``
    the last module before it whose output has a local RF (None where none has).
    """

    layers: tuple[LayerRow, ...]
    size: tuple[int, ...] | None
    stride: tuple[int, ...] | None
    padding: tuple[int, ...] | None
    status: Status
    global_causes: tuple[str, ...]
    notes: tuple[str, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    target: str
    size_min: tuple[int, ...] | None = None
    graph: Any = field(default=None, repr=False)        # the traced rfprobe.trace.Graph
    # the exact route for this output: _exact(unit, bounded) -> Region (routes.exact.propagate,
    # bound to the graph and the target by routes.analyze.analysis_of)
    _exact: Callable[[tuple[int, ...], bool], Region] | None = field(default=None, repr=False, compare=False)
    # where the RF is global: the last module on the path whose output has a local RF (a layer= to try)
    suggested_layer: str | None = None
    # how the user selected the output (``layer='backbone', output='out'``), '' for the model's own
    selection: str = ""

    def __post_init__(self):
        remember(self, "size", "stride", "padding")   # so pytest can show the table on failure

    def __str__(self) -> str:
        return text.analysis_text(self)

    def _repr_html_(self) -> str:
        return html.analysis_html(self)

    def to_dict(self) -> dict:
        """The result as plain JSON-ready values (``json.dumps(r.to_dict())`` works)."""
        return data.analysis_dict(self)

    def plot(self, **kw):
        """Draw the result (see :func:`rfprobe.plot`; matplotlib is optional)."""
        return plot(self, **kw)

    def plot_data(self):
        """What :func:`rfprobe.plot` draws (see :mod:`rfprobe.render.plot`)."""
        return analysis_plot_data(self)

    @property
    def is_global(self) -> bool:
        return self.status == "global"

    @property
    def output_spatial(self) -> tuple[int, ...]:
        """The selected output's spatial sizes, in the input's axis order (wherever its spatial
        axes sit: (N, C, H, W) or channels-last)."""
        if self.graph is not None:
            return self.graph.node(self.target).spatial
        return tuple(self.output_shape[-(len(self.input_shape) - 1):])

    @property
    def centre_unit(self) -> tuple[int, ...]:
        return tuple(n // 2 for n in self.output_spatial)

    def _unit(self, unit) -> tuple[int, ...]:
        return normalize_unit(unit, self.output_spatial)

    def region(self, unit=None, bounded: bool = False) -> Region:
        """Exact set of input positions of ``unit`` (default: the centre unit)."""
        unit = self.centre_unit if unit is None else self._unit(unit)
        if self._exact is None:
            raise RFProbeError("this Analysis has no exact route (build it with rfprobe.analyze)")
        return self._exact(unit, bounded)

    def box(self, unit=None, bounded: bool = False) -> tuple[tuple[int, int], ...]:
        """Per axis (first, last) input index that ``unit`` depends on, exactly. Unbounded by
        default (may reach into padding, as the closed form); ``bounded=True`` clips as the
        real input does."""
        reg = self.region(unit, bounded)
        if reg.global_cause is not None and not bounded:
            raise GlobalOpError(f"the RF is global: {reg.global_cause}; there is no local box")
        return reg.box


# ----------------------------------------------------------------------------- probe, verify
@dataclass(frozen=True, eq=False)
class ProbeResult(_Remembers):
    """The empirical RF of one output unit.

    In slab mode (``slab`` is not None) only the per-axis projections are measured: ``mask``,
    ``grad`` and ``coverage`` are ``None`` and ``axis_masks`` hold the projections."""

    mask: np.ndarray | None             # bool, the input's spatial shape: True = in the RF
    grad: np.ndarray | None             # |input gradient| summed over channels
    box: tuple[tuple[int, int], ...]    # per axis (first, last) index of the mask
    size: tuple[int, ...]
    coverage: float | None              # fraction of the box inside the RF (holes show here)
    truncated: bool                     # the full RF does not fit in the input
    input_shape: tuple[int, ...]        # (C, *spatial) the box refers to (used, unless slab)
    unit: tuple[int, ...]
    units_probed: tuple[tuple[int, ...], ...]   # every unit seeded in the same backward
    target: str
    mode: Mode
    output_shape: tuple[int, ...] = ()
    analysis: Analysis | None = field(default=None, repr=False)
    slab: tuple[tuple[int, ...], ...] | None = None     # the thin inputs used, one per axis
    axis_masks: tuple[np.ndarray, ...] = field(default=(), repr=False)  # per-axis projections

    def __post_init__(self):
        remember(self, "size")                        # so pytest can show the result on failure

    def __str__(self) -> str:
        return text.probe_text(self)

    def _repr_html_(self) -> str:
        return html.probe_html(self)

    def to_dict(self) -> dict:
        """The result as plain JSON-ready values (``json.dumps(r.to_dict())`` works)."""
        return data.probe_dict(self)

    def plot(self, **kw):
        """Draw the result (see :func:`rfprobe.plot`; matplotlib is optional)."""
        return plot(self, **kw)

    def plot_data(self):
        """What :func:`rfprobe.plot` draws (see :mod:`rfprobe.render.plot`)."""
        return probe_plot_data(self)

    @property
    def axis_coverage(self) -> tuple[float, ...]:
        """Per axis, the fraction of the box's span the RF touches along that axis."""
        return tuple(float(proj[lo:hi + 1].mean()) if hi >= lo else 0.0
                     for proj, (lo, hi) in zip(self.axis_masks, self.box))


@dataclass(frozen=True, eq=False)
class Report(_Remembers):
    """All routes for one unit: closed form, exact propagation, gradient probe."""

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
    def __str__(self) -> str:
        return text.report_text(self)

    def _repr_html_(self) -> str:
        return html.report_html(self)

    def to_dict(self) -> dict:
        """The result as plain JSON-ready values (``json.dumps(r.to_dict())`` works)."""
        return data.report_dict(self)

    def plot(self, **kw):
        """Draw the result (see :func:`rfprobe.plot`; matplotlib is optional)."""
        return plot(self, **kw)

    def plot_data(self):
        """What :func:`rfprobe.plot` draws (see :mod:`rfprobe.render.plot`)."""
        return report_plot_data(self)


# ----------------------------------------------------------------------------- erf
@dataclass(frozen=True)
class GaussianFit:
    """A Gaussian fitted to each axis's marginal: centre and sigma in input pixels; ``r2`` is
    the coefficient of determination of the separable Gaussian against the whole map (1 = a
    perfect fit). ``sigma`` is ``inf`` for a flat marginal and ``nan`` with fewer than three
    nonzero values."""

    center: tuple[float, ...]
    sigma: tuple[float, ...]
    r2: float


@dataclass(frozen=True, eq=False)
class ERF:
    """An effective receptive field: the normalised map and its statistics.

    ``map`` has the input's spatial shape and sums to 1. Positions are input indices; the
    continuous coordinate of pixel ``i`` spans ``[i, i+1)`` (used by ``area_ratio``).
    """

    map: np.ndarray = field(repr=False)
    n: int = 1                               # inputs averaged
    statistic: Statistic = "abs"             # 'abs' (mean |g|) or 'sq' (mean g**2)
    unit: tuple[int, ...] = ()
    target: str = ""
    input_shape: tuple[int, ...] = ()
    output_shape: tuple[int, ...] = ()
    theoretical: tuple[int, ...] | None = None          # closed-form RF size per axis
    theoretical_box: tuple[tuple[int, int], ...] | None = None
    analysis: Any = field(default=None, repr=False, compare=False)   # the selected output's Analysis
    center: tuple[float, ...] = field(init=False)
    std: tuple[float, ...] = field(init=False)
    gaussian: GaussianFit = field(init=False, repr=False)

    def __post_init__(self):
        m = np.asarray(self.map, dtype=np.float64)
        object.__setattr__(self, "map", m)
        centre, std = moments(m)
        object.__setattr__(self, "center", centre)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "gaussian", GaussianFit(*gaussian(m)))

    def __str__(self) -> str:
        return text.erf_text(self)

    def _repr_html_(self) -> str:
        return html.erf_html(self)

    def to_dict(self) -> dict:
        """The result as plain JSON-ready values (``json.dumps(r.to_dict())`` works)."""
        return data.erf_dict(self)

    def plot(self, **kw):
        """Draw the result (see :func:`rfprobe.plot`; matplotlib is optional)."""
        return plot(self, **kw)

    def plot_data(self):
        """What :func:`rfprobe.plot` draws (see :mod:`rfprobe.render.plot`)."""
        return erf_plot_data(self)

    @classmethod
    def from_gradient(cls, grad, **kw) -> "ERF":
        """An ERF from an unnormalised, non-negative gradient statistic map (any scale).

        >>> f = ERF.from_gradient([0, 1, 2, 1, 0])
        >>> f.center, round(f.std[0] ** 2, 6), f.radius(0.5)
        ((2.0,), 0.5, 0.0)
        """
        g = np.asarray(grad, dtype=np.float64)
        if g.ndim < 1 or g.size == 0:
            raise ArgumentError(f"grad must be a non-empty array with one axis per spatial axis, "
                                f"not shape {g.shape}")
        if not np.isfinite(g).all() or (g < 0).any():
            raise ArgumentError("grad must be finite and non-negative (a mean of |g| or g**2); "
                                f"it has min {np.nanmin(g):.3g} and {int((~np.isfinite(g)).sum())} "
                                "non-finite values")
        total = g.sum()
        if total <= 0:
            raise RFProbeError("the gradient is zero at every input position: the unit does not "
                               "depend on the input for these inputs (a dead unit, or a detached "
                               "path); try other inputs, another unit, or channel=")
        kw.setdefault("n", 1)
        kw.setdefault("statistic", "abs")
        return cls(g / total, **kw)

    # -- metrics on demand
    def radius(self, p: float = 0.95) -> float:
        """Smallest Euclidean distance ``r`` (input pixels) from the centre of mass such that
        the pixels whose centres lie within ``r`` hold at least ``p`` of the mass.

        >>> ERF.from_gradient([1, 1, 1, 1, 1]).radius(0.6)
        1.0
        """
        p = check_fraction(p, "p")
        grids = np.meshgrid(*[np.arange(n, dtype=np.float64) - c for n, c in zip(self.map.shape, self.center)],
                            indexing="ij")
        d = np.sqrt(sum(g * g for g in grids)).ravel()
        order = np.argsort(d, kind="stable")
        cum = np.cumsum(self.map.ravel()[order])
        k = int(np.searchsorted(cum, p * cum[-1] * (1 - 1e-12)))
        return float(d[order[min(k, len(order) - 1)]])

    @property
    def ratio(self) -> tuple[float, ...] | None:
        """Per axis, the ERF's ``±2 std`` span over the theoretical RF size (None when the
        theoretical RF is global or unknown). Luo et al.: it shrinks like ``1/sqrt(depth)``."""
        if self.theoretical is None:
            return None
        return tuple(4 * s / r for s, r in zip(self.std, self.theoretical))

    @property
    def square_center(self) -> tuple[float, ...]:
        """Continuous centre of ``area_ratio``'s squares: the theoretical RF box's centre
        (the probed unit's), else the map's centre."""
        if self.theoretical_box is not None:
            return tuple((lo + hi + 1) / 2 for lo, hi in self.theoretical_box)
        return tuple(n / 2 for n in self.map.shape)

    def area_ratio(self, t: float = 0.2) -> float:
        """RepLKNet's high-contribution area ratio: the area of the smallest centred square
        (segment in 1-D, cube in 3-D) holding ``t`` of the mass, as a fraction of the map's area.

        Pixels are unit squares with their mass spread evenly, and the square's side varies
        continuously, so the metric is defined for every map size (even, odd, not square) and a
        uniform map gives exactly ``t``. (RepLKNet grows odd squares a ring at a time around the
        map centre and has no answer past the border or for even sizes.) The square is clipped
        to the map. Centre: ``square_center``. Being a fraction of the map, it depends on the
        input size: fix ``input_shape`` when you compare designs.

        >>> round(ERF.from_gradient(np.ones((10, 7))).area_ratio(0.3), 9)
        0.3
        """
        t = check_fraction(t, "t")
        c = self.square_center
        hi = 2 * max(max(abs(ci), abs(n - ci)) for ci, n in zip(c, self.map.shape))
        lo = 0.0
        goal = t * (1 - 1e-13)
        for _ in range(200):
            mid = (lo + hi) / 2
            if mass_in_square(self.map, c, mid) >= goal:
                hi = mid
            else:
                lo = mid
            if hi - lo < 1e-12 * max(hi, 1.0):
                break
        return square_area(self.map.shape, c, hi) / float(np.prod(self.map.shape))


# ----------------------------------------------------------------------------- cost
@dataclass(frozen=True)
class Cost:
    """Parameters and multiply-accumulates of a model.

    ``params_no_bias`` counts every parameter except those named ``*bias``.
    ``macs_per_position`` sums, over every conv and linear layer, the MACs one position of
    that layer's output costs (``weight.numel()``); a transposed conv is counted per *input*
    position, since each input value is scattered through its whole kernel. ``macs`` is the
    total for one input of ``input_shape`` (batch 1), when given.
    """

    params: int
    params_no_bias: int
    macs_per_position: int
    macs: int | None = None
    input_shape: tuple[int, ...] | None = None

    def __str__(self) -> str:
        return text.cost_text(self)


@dataclass(frozen=True)
class CompareRow:
    """One design: its verified RF and what it costs."""

    spec: str
    size: tuple[int, ...] | None
    stride: tuple[int, ...] | None
    params: int
    params_no_bias: int
    macs_per_position: int
    macs: int | None = None
    ok: bool = True                      # all three RF routes agreed


@dataclass(frozen=True)
class Comparison:
    """Rows of ``compare``; iterate it, index it, print it, or show it in Jupyter."""

    rows: tuple[CompareRow, ...]
    channels: int
    input_shape: tuple[int, ...] | None = None

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i) -> CompareRow:
        return self.rows[i]

    def __str__(self) -> str:
        return text.comparison_text(self)

    def _repr_html_(self) -> str:
        return html.comparison_html(self)
