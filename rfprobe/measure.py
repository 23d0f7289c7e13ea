"""From a gradient (or any support mask) to the numbers: box, size, coverage.

>>> import numpy as np
>>> m = np.zeros((5, 5), bool); m[1, 1] = m[1, 3] = m[3, 1] = m[3, 3] = True
>>> box_of(m), coverage_of(m, box_of(m))
(((1, 3), (1, 3)), 0.4444444444444444)
"""
from __future__ import annotations

import numpy as np


def box_of(mask: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Per axis (first, last) index where ``mask`` is True; empty mask: (0, -1) per axis."""
    out = []
    for a in range(mask.ndim):
        proj = mask.any(axis=tuple(b for b in range(mask.ndim) if b != a))
        idx = np.flatnonzero(proj)
        out.append((int(idx[0]), int(idx[-1])) if len(idx) else (0, -1))
    return tuple(out)


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

