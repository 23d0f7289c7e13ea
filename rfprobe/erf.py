"""The effective receptive field (Luo, Li, Urtasun & Zemel, NeurIPS 2016).

The theoretical RF says which input pixels *can* change a unit; the effective RF says how much
each one *does*, on average, with the model's real weights: the gradient of the unit with
respect to the input, its magnitude (``|g|``) or energy (``g**2``) summed over input channels
and averaged over many inputs (yours, or random ones). Luo et al. show it is roughly Gaussian
and that its radius grows like the square root of the depth while the theoretical RF grows
linearly, so the ERF fills an ever smaller part of the RF.

The map is normalised to sum 1, so every metric is invariant to scaling the gradient:

* ``center`` and ``std`` per axis: mean and standard deviation of the map's marginals;
* ``radius(p)``: the smallest distance from the centre of mass holding ``p`` of the mass;
* ``ratio``: per axis, the ``±2 std`` span (95% of a Gaussian) over the theoretical RF size;
* ``gaussian``: a least-squares Gaussian fit of each marginal (centre, sigma, r2 of the fit);
* ``area_ratio(t)``: RepLKNet's high-contribution area ratio (Ding et al., CVPR 2022).

Four uniform 3-tap layers in 1-D: the ERF is the 4-fold convolution of a box, variance
``n (k**2 - 1) / 12 = 4 * 8 / 12``, while the theoretical RF has 9 taps:

>>> import torch, rfprobe
>>> net = rfprobe.build("conv3 conv3 conv3 conv3", dims=1).double()
>>> with torch.no_grad():
...     for m in net: _ = m.weight.fill_(1 / 3), m.bias.zero_()
>>> f = erf(net, n=2)
>>> round(f.std[0] ** 2, 9), f.theoretical, round(f.ratio[0], 3)
(2.666666667, (9,), 0.726)
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .errors import ArgumentError, RFProbeError
from .prepare import prepare
from .probe import gradients_allowed
from .validate import (as_model, check_batch_size, check_count, check_finite, check_fraction,
                       check_item_shape, check_statistic, input_items, shape_of_batches)
from .render import Rendered


# ----------------------------------------------------------------------------- metrics
def _marginals(m: np.ndarray) -> list[np.ndarray]:
    return [m.sum(axis=tuple(b for b in range(m.ndim) if b != a)) for a in range(m.ndim)]


def _moments(m: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    centre, std = [], []
    for marg in _marginals(m):
        x = np.arange(marg.size, dtype=np.float64)
        mu = float((marg * x).sum())
        centre.append(mu)
        std.append(math.sqrt(max(float((marg * (x - mu) ** 2).sum()), 0.0)))
    return tuple(centre), tuple(std)


@dataclass(frozen=True)
class GaussianFit:
    """A Gaussian fitted to each axis's marginal: centre and sigma in input pixels; ``r2`` is
    the coefficient of determination of the separable Gaussian against the whole map (1 = a
    perfect fit). ``sigma`` is ``inf`` for a flat marginal and ``nan`` with fewer than three
    nonzero values."""

    center: tuple[float, ...]
    sigma: tuple[float, ...]
    r2: float


def _fit_axis(y: np.ndarray) -> tuple[float, float]:
    """Weighted least squares of log(y) by a parabola (weights y, as Guo 2011 suggests):
    exact for sampled Gaussians, robust to the zero tails."""
    x = np.flatnonzero(y > 0)
    if len(x) < 3:
        return (float(x.mean()) if len(x) else float("nan")), float("nan")
    v = y[x]
    xc = x.astype(np.float64) - x.mean()
    a, b, _ = np.polyfit(xc, np.log(v), 2, w=np.sqrt(v / v.max()))
    if a >= 0:
        return float((v * x).sum() / v.sum()), float("inf")
    return float(x.mean() - b / (2 * a)), float(math.sqrt(-1 / (2 * a)))


def _gaussian(m: np.ndarray) -> GaussianFit:
    fits = [_fit_axis(marg) for marg in _marginals(m)]
    centre = tuple(c for c, _ in fits)
    sigma = tuple(s for _, s in fits)
    r2 = float("nan")
    if all(math.isfinite(s) and s > 0 for s in sigma):
        model = np.ones(m.shape)
        for a, (c, s) in enumerate(fits):
            shape = [1] * m.ndim
            shape[a] = m.shape[a]
            model = model * np.exp(-((np.arange(m.shape[a]) - c) ** 2) / (2 * s * s)).reshape(shape)
        amp = float((model * m).sum() / (model * model).sum())
        resid = ((m - amp * model) ** 2).sum()
        total = ((m - m.mean()) ** 2).sum()
        r2 = float(1 - resid / total) if total > 0 else float("nan")
    return GaussianFit(centre, sigma, r2)


def _overlap(n: int, lo: float, hi: float) -> np.ndarray:
    """Length of [lo, hi] inside each pixel [i, i+1) of an axis of n pixels."""
    edges = np.arange(n, dtype=np.float64)
    return np.clip(np.minimum(edges + 1, hi) - np.maximum(edges, lo), 0.0, 1.0)


def _mass_in_square(m: np.ndarray, centre, side: float) -> float:
    out = m
    for a in reversed(range(m.ndim)):
        w = _overlap(m.shape[a], centre[a] - side / 2, centre[a] + side / 2)
        out = out @ w if a == out.ndim - 1 else np.tensordot(out, w, axes=([a], [0]))
    return float(out)


def _square_area(shape, centre, side: float) -> float:
    return float(np.prod([min(c + side / 2, n) - max(c - side / 2, 0.0) for n, c in zip(shape, centre)]))


@dataclass(frozen=True, eq=False)
class ERF(Rendered):
    """An effective receptive field: the normalised map and its statistics.

    ``map`` has the input's spatial shape and sums to 1. Positions are input indices; the
    continuous coordinate of pixel ``i`` spans ``[i, i+1)`` (used by ``area_ratio``).
    """

    _view = "erf"          # drawn by render.erf_text/_html/_dict

    map: np.ndarray = field(repr=False)
    n: int = 1                               # inputs averaged
    statistic: str = "abs"                   # 'abs' (mean |g|) or 'sq' (mean g**2)
    unit: tuple[int, ...] = ()
    target: str = ""
    input_shape: tuple[int, ...] = ()
    output_shape: tuple[int, ...] = ()
    theoretical: tuple[int, ...] | None = None          # closed-form RF size per axis
    theoretical_box: tuple[tuple[int, int], ...] | None = None
    center: tuple[float, ...] = field(init=False)
    std: tuple[float, ...] = field(init=False)
    gaussian: GaussianFit = field(init=False, repr=False)

    def __post_init__(self):
        m = np.asarray(self.map, dtype=np.float64)
        object.__setattr__(self, "map", m)
        centre, std = _moments(m)
        object.__setattr__(self, "center", centre)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "gaussian", _gaussian(m))

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
            if _mass_in_square(self.map, c, mid) >= goal:
                hi = mid
            else:
                lo = mid
            if hi - lo < 1e-12 * max(hi, 1.0):
                break
        return _square_area(self.map.shape, c, hi) / float(np.prod(self.map.shape))


# ----------------------------------------------------------------------------- progress
class Progress:
    """A tiny progress bar on a terminal; silent when the stream is not one.

    >>> import io
    >>> p = Progress(10, stream=io.StringIO()); p.update(10); p.close(); p.stream.getvalue()
    ''
    """

    def __init__(self, total: int, label: str = "erf", stream=None, enabled: bool | None = None):
        self.total, self.label, self.done = total, label, 0
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.start = time.monotonic()

    def update(self, k: int = 1) -> None:
        self.done += k
        if self.enabled:
            from .render import progress_line
            self.stream.write("\r" + progress_line(self.label, self.done, self.total,
                                                   time.monotonic() - self.start))
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.done:
            self.stream.write("\n")
            self.stream.flush()


# ----------------------------------------------------------------------------- the probe
def _batches(inputs, n: int, shape, generator, dtype, batch_size: int):
    """Yield float batches of at most ``batch_size`` until ``n`` inputs are used."""
    if inputs is None:
        left = n
        while left > 0:
            b = min(batch_size, left)
            yield torch.randn((b, *shape), generator=generator, dtype=torch.float64).to(dtype)
            left -= b
        return
    left = n
    for item in input_items(inputs):
        x = item
        if x.dim() == len(shape):
            x = x.unsqueeze(0)
        for start in range(0, x.shape[0], batch_size):
            chunk = x[start:start + min(batch_size, left)]
            if len(chunk) == 0:
                break
            if chunk.is_floating_point():
                check_finite(chunk, f" in items {n - left}..{n - left + len(chunk) - 1}")
            yield chunk
            left -= len(chunk)
            if left <= 0:
                return


def _couples_batch(twin: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in twin.modules())


@gradients_allowed
def erf(model, inputs=None, n: int = 32, *, layer: str | None = None, output: Any = None,
        unit=None, channel: int | None = None, statistic: str = "abs", input_shape=None,
        batch_size: int = 8, dtype: torch.dtype | None = None, device=None, seed: int = 0,
        progress: bool | None = None) -> ERF:
    """Effective RF of one output unit, averaged over ``n`` inputs (Luo et al. 2016).

    The model runs with its real weights and its train/eval flags as you have them, on a private
    copy (your model is not changed). ``inputs``: a tensor ``(N, C, *spatial)`` or an iterable of
    tensors or ``(input, label)`` pairs (a DataLoader); at most ``n`` are used. ``None``: ``n``
    standard-normal inputs of ``input_shape`` (chosen so the unit's theoretical RF fits when
    ``None``). ``statistic``: ``'abs'`` averages ``|g|`` (summed over input channels), ``'sq'``
    averages ``g**2``. ``unit``: output position (default: the centre); ``channel``: one output
    channel (default: the sum over all of them). Inputs run ``batch_size`` at a time, one at a
    time when a BatchNorm in training mode couples the batch. ``progress``: a bar on stderr
    (``None``: only when stderr is a terminal and the run is longer than one batch).

    >>> import rfprobe
    >>> f = erf(rfprobe.build("conv3 relu conv3 relu conv3", in_channels=3), n=8, input_shape=(3, 9, 9))
    >>> f.map.shape, f.theoretical, f.theoretical_box, round(float(f.map.sum()), 9)
    ((9, 9), (7, 7), ((1, 7), (1, 7)), 1.0)
    """
    from .graph import private_copy
    from .probe import _ProbeMode, backprop_units

    check_statistic(statistic)
    check_count(n)
    check_batch_size(batch_size)
    model = as_model(model)
    if inputs is not None:
        input_shape, inputs = shape_of_batches(model, inputs, input_shape)
    p = prepare(model, input_shape, layer=layer, output=output, unit=unit, channel=channel, device=device,
                dtype=dtype, seed=seed)
    graph, analysis, target, u, dev = p.graph, p.analysis, p.target, p.unit, p.device
    theoretical = analysis.size if analysis.status in ("ok", "varies") else None
    box = None
    if analysis.status != "global":
        try:
            box = analysis.box(u)
        except RFProbeError:
            box = None

    twin = private_copy(model, dev)
    if dtype is not None:
        twin = twin.to(dtype)
    run_dtype = dtype or next((p.dtype for p in twin.parameters() if p.is_floating_point()), torch.float32)
    for p in twin.parameters():
        p.requires_grad_(False)
    bs = 1 if _couples_batch(twin) else batch_size
    generator = torch.Generator().manual_seed(seed)
    total = np.zeros(graph.input_shape[1:], dtype=np.float64)
    count = 0
    bar = Progress(n, "erf", enabled=progress if progress is not None else (None if n > bs else False))
    try:
        for x in _batches(inputs, n, graph.input_shape, generator, run_dtype, bs):
            check_item_shape(x, graph.input_shape)
            x = x.detach().to(device=dev, dtype=run_dtype).clone().requires_grad_(True)
            tracer = _ProbeMode(graph.dims, structural=False)
            g = backprop_units(twin, x, tracer, target, [u], channel,
                               what="erf", every_item=True)
            g = g.detach().to(torch.float64)
            stat = g.abs().sum(1) if statistic == "abs" else (g * g).sum(1)
            total += stat.sum(0).cpu().numpy()
            count += x.shape[0]
            bar.update(x.shape[0])
    finally:
        bar.close()
    if count == 0:
        raise ArgumentError("inputs is empty; pass a tensor (N, C, ...) or leave inputs=None")
    return ERF.from_gradient(total / count, n=count, statistic=statistic, unit=u, target=target.name,
                             input_shape=graph.input_shape, output_shape=target.shape,
                             theoretical=theoretical, theoretical_box=box)
