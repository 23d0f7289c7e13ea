"""Assertions for test suites, and the pytest plugin (registered as ``rfprobe``).

>>> import rfprobe
>>> assert_receptive_field(rfprobe.build("conv3 relu conv3"), size=5, stride=1)
>>> assert_receptive_field(rfprobe.build("conv3"), size=5)
Traceback (most recent call last):
...
AssertionError: receptive field size is (3, 3), expected (5, 5)
...
"""
from __future__ import annotations

from typing import Any

import pytest

from .verify import Report, verify


def _tuple(v, n):
    return None if v is None else (tuple(v) if isinstance(v, (list, tuple)) else (v,) * n)


def assert_receptive_field(model, size=None, stride=None, padding=None, **kw: Any) -> None:
    """Verify all routes agree and the RF has the given size/stride/padding (int = every axis).

    Passes silently; on failure raises ``AssertionError`` carrying the per-layer table and the
    diagnosis. Keyword arguments go to :func:`rfprobe.verify` (``input_shape``, ``layer``...).
    """
    r = verify(model, **kw)
    n = len(r.probe.size)
    problems = []
    if not r.ok:
        problems.append("the routes disagree: " + "; ".join(r.mismatches))
    if r.analysis.status == "global" and (size is not None or stride is not None):
        problems.append("the receptive field is global: " + "; ".join(r.analysis.global_causes))
    for what, want, got in (("size", size, r.size), ("stride", stride, r.stride), ("padding", padding, r.padding)):
        want = _tuple(want, n)
        if want is not None and r.analysis.status != "global" and tuple(got or ()) != want:
            problems.append(f"receptive field {what} is {got}, expected {want}")
    if problems:
        raise AssertionError("\n".join(problems) + "\n\n" + str(r))


@pytest.fixture
def rf():
    """The rfprobe module, for tests: ``def test_x(rf): rf.assert_receptive_field(...)``."""
    import rfprobe
    return rfprobe


def pytest_assertrepr_compare(op, left, right):
    """Explain a failed comparison of an rfprobe result's attribute with the full table."""
    import rfprobe
    for side in (left, right):
        if isinstance(side, (rfprobe.Report, rfprobe.Analysis, rfprobe.ProbeResult)):
            other = right if side is left else left
            return [f"rfprobe result {op} {other!r}"] + str(side).splitlines()
    return None
