"""From a gradient (or any support mask) to the numbers: box, size, coverage, with the closed
form's box they are compared with; and the effective RF's statistics (moments, Gaussian fit,
mass in a square). Pure numpy.

>>> import numpy as np
>>> m = np.zeros((5, 5), bool); m[1, 1] = m[1, 3] = m[3, 1] = m[3, 3] = True
>>> box_of(m), coverage_of(m, box_of(m))
(((1, 3), (1, 3)), 0.4444444444444444)
"""
from __future__ import annotations

import math

import numpy as np


def box_of(mask: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Per axis (first, last) index where ``mask`` is True; empty mask: (0, -1) per axis."""
    return tuple(span(projection(mask, a)) for a in range(mask.ndim))


def projection(mask: np.ndarray, axis: int) -> np.ndarray:
    """The indices along ``axis`` where ``mask`` holds anything: True where any position with
    that index on ``axis`` is (``mask.any`` over every other axis).

    >>> m = np.zeros((3, 4), bool); m[1, 2] = True
    >>> projection(m, 0).tolist(), projection(m, 1).tolist()
    ([False, True, False], [False, False, True, False])
    """
    return mask.any(axis=tuple(b for b in range(mask.ndim) if b != axis))


def span(proj: np.ndarray) -> tuple[int, int]:
    """(first, last) index where the 1-D ``proj`` is True; (0, -1) where it is nowhere.

    >>> span(np.array([False, True, True, False])), span(np.zeros(3, bool))
    ((1, 2), (0, -1))
    """
    idx = np.flatnonzero(proj)
    return (int(idx[0]), int(idx[-1])) if len(idx) else (0, -1)


def closed_form_box(unit, size, stride, padding) -> tuple[tuple[int, int], ...]:
    """Per axis the (first, last) input index that ``unit`` reads by the closed form: unit
    ``u`` of an RF of size ``r``, effective stride ``S`` and padding ``P`` reads ``[u*S - P,
    u*S - P + r - 1]``.

    >>> closed_form_box((1, 2), size=(3, 5), stride=(2, 1), padding=(0, 2))
    ((2, 4), (0, 4))
    """
    return tuple(closed_form_span(u, r, s, p) for u, r, s, p in zip(unit, size, stride, padding))


def closed_form_span(u: int, r: int, s: int, p: int) -> tuple[int, int]:
    """One axis of :func:`closed_form_box`, as the input search asks it for each size it tries.

    >>> closed_form_span(1, 3, 2, 0)
    (2, 4)
    """
    return u * s - p, u * s - p + r - 1


def coverage_of(mask: np.ndarray, box) -> float:
    """Fraction of the box's positions that are in the mask (1.0 for a solid RF)."""
    sl = tuple(slice(a, b + 1) for a, b in box)
    sub = mask[sl]
    return float(sub.mean()) if sub.size else 0.0


class RFTuple(tuple):
    """A per-axis tuple (size, stride, padding) that remembers the result it came from, so a
    failed ``assert report.size == (7, 7)`` can show the whole table (see rfprobe.testing).
    It is a plain tuple in every other respect: equal, hashed and printed as one.

    >>> t = RFTuple((5, 5), "size", None)
    >>> t == (5, 5), repr(t), hash(t) == hash((5, 5))
    (True, '(5, 5)', True)
    """

    def __new__(cls, values, what: str = "", result=None):
        t = super().__new__(cls, values)
        t.rfprobe_what = what
        t.rfprobe_result = result
        return t

    def __reduce__(self):                   # copies and pickles carry the values only
        return (tuple, (tuple(self),))


def remember(result, *fields: str) -> None:
    """Turn a frozen result's tuple ``fields`` into :class:`RFTuple` pointing back at it."""
    for name in fields:
        value = getattr(result, name)
        if isinstance(value, tuple):
            object.__setattr__(result, name, RFTuple(value, name, result))



# ----------------------------------------------------------------------------- effective-RF statistics
def marginals(m: np.ndarray) -> list[np.ndarray]:
    """Per axis, the map summed over every other axis.

    >>> [a.tolist() for a in marginals(np.array([[1, 2], [3, 4]]))]
    [[3, 7], [4, 6]]
    """
    return [m.sum(axis=tuple(b for b in range(m.ndim) if b != a)) for a in range(m.ndim)]


def moments(m: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per axis, the mean and the standard deviation of a map that sums to 1.

    >>> moments(np.array([0.25, 0.5, 0.25]))
    ((1.0,), (0.7071067811865476,))
    """
    centre, std = [], []
    for marg in marginals(m):
        x = np.arange(marg.size, dtype=np.float64)
        mu = float((marg * x).sum())
        centre.append(mu)
        std.append(math.sqrt(max(float((marg * (x - mu) ** 2).sum()), 0.0)))
    return tuple(centre), tuple(std)


def fit_axis(y: np.ndarray) -> tuple[float, float]:
    """(centre, sigma) of a Gaussian fitted to ``y``: weighted least squares of log(y) by a
    parabola (weights y, as Guo 2011 suggests), exact for sampled Gaussians, robust to the zero
    tails. Sigma is ``inf`` for a flat ``y``, ``nan`` with fewer than three nonzero values.

    >>> c, s = fit_axis(np.exp(-(np.arange(9) - 4.0) ** 2 / 8))
    >>> round(c, 9), round(s, 9)
    (4.0, 2.0)
    """
    x = np.flatnonzero(y > 0)
    if len(x) < 3:
        return (float(x.mean()) if len(x) else float("nan")), float("nan")
    v = y[x]
    xc = x.astype(np.float64) - x.mean()
    a, b, _ = np.polyfit(xc, np.log(v), 2, w=np.sqrt(v / v.max()))
    if a >= 0:
        return float((v * x).sum() / v.sum()), float("inf")
    return float(x.mean() - b / (2 * a)), float(math.sqrt(-1 / (2 * a)))


def gaussian(m: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], float]:
    """(centre, sigma, r2): a Gaussian fitted to each axis's marginal, and the coefficient of
    determination of the separable Gaussian against the whole map (``nan`` when a sigma is
    not finite and positive).

    >>> g = np.exp(-(np.arange(9) - 4.0) ** 2 / 8)
    >>> c, s, r2 = gaussian(np.outer(g, g))
    >>> [round(v, 9) for v in c + s], round(r2, 9)
    ([4.0, 4.0, 2.0, 2.0], 1.0)
    """
    fits = [fit_axis(marg) for marg in marginals(m)]
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
    return centre, sigma, r2


def overlap(n: int, lo: float, hi: float) -> np.ndarray:
    """Length of [lo, hi] inside each pixel [i, i+1) of an axis of n pixels.

    >>> overlap(4, 0.5, 2.0).tolist()
    [0.5, 1.0, 0.0, 0.0]
    """
    edges = np.arange(n, dtype=np.float64)
    return np.clip(np.minimum(edges + 1, hi) - np.maximum(edges, lo), 0.0, 1.0)


def mass_in_square(m: np.ndarray, centre, side: float) -> float:
    """Mass of the map inside the square of ``side`` centred at ``centre`` (continuous
    coordinates, pixels as unit squares with their mass spread evenly).

    >>> mass_in_square(np.full((4, 4), 1 / 16), (2.0, 2.0), 2.0)
    0.25
    """
    out = m
    for a in reversed(range(m.ndim)):
        w = overlap(m.shape[a], centre[a] - side / 2, centre[a] + side / 2)
        out = out @ w if a == out.ndim - 1 else np.tensordot(out, w, axes=([a], [0]))
    return float(out)


def square_area(shape, centre, side: float) -> float:
    """Area of that square clipped to a map of ``shape``.

    >>> square_area((4, 4), (1.0, 2.0), 4.0)
    12.0
    """
    return float(np.prod([min(c + side / 2, n) - max(c - side / 2, 0.0) for n, c in zip(shape, centre)]))
