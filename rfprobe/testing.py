"""Assertions for test suites, and the pytest plugin (registered as ``rfprobe``).

>>> import rfprobe
>>> assert_receptive_field(rfprobe.build("conv3 relu conv3"), size=5, stride=1)
>>> assert_receptive_field(rfprobe.build("conv3"), size=5)
Traceback (most recent call last):
...
AssertionError: receptive field size is (3, 3), expected (5, 5)
...

With the plugin (installed with rfprobe, nothing to configure), a failed comparison of an
rfprobe result's ``size``/``stride``/``padding`` shows the per-layer table and the diagnosis::

    def test_stem(rf):
        report = rf.verify(my_stem)
        assert report.size == (7, 7)     # on failure: the table, the boxes, the verdict
"""
from __future__ import annotations

from typing import Any

import pytest

from .hints import Expected, InputShape, ModelLike
from .validate import check_expectation
from .measure import RFTuple
from .verify import Report, verify


def assert_receptive_field(model: ModelLike, input_shape: InputShape = None, *, size: Expected = None,
                           stride: Expected = None, padding: Expected = None, **kw: Any) -> None:
    """Verify all routes agree and the RF has the given size/stride/padding (int = every axis).

    Passes silently; on failure raises ``AssertionError`` carrying the per-layer table and the
    diagnosis. Keyword arguments go to :func:`rfprobe.verify` (``input_shape``, ``layer``...).

    >>> import rfprobe
    >>> assert_receptive_field(rfprobe.build("conv3/s2 conv3"), size=7, stride=(2, 2), padding=0)
    """
    for what, want in (("size", size), ("stride", stride), ("padding", padding)):
        check_expectation(what, want, None)     # a bad expectation is an argument error, before any work
    r = verify(model, input_shape, **kw)
    n = len(r.probe.size)
    wants = [(what, check_expectation(what, want, n), got) for what, want, got in
             (("size", size, r.size), ("stride", stride, r.stride), ("padding", padding, r.padding))]
    problems = []
    if not r.ok:
        problems.append("the routes disagree: " + "; ".join(r.mismatches))
    asked = any(want is not None for _, want, _ in wants)
    if r.analysis.status == "global":
        if asked:
            problems.append("the receptive field is global: " + "; ".join(r.analysis.global_causes))
    else:
        for what, want, got in wants:
            if want is not None and tuple(got or ()) != want:
                problems.append(f"receptive field {what} is {got}, expected {want}")
    if problems:
        raise AssertionError("\n".join(problems) + "\n\n" + str(r))


class RF:
    """What the ``rf`` fixture gives: rfprobe's API plus :func:`assert_receptive_field`.

    >>> RF().assert_receptive_field("conv3 conv3", size=5)
    >>> RF().verify("conv3").size
    (3, 3)
    """

    assert_receptive_field = staticmethod(assert_receptive_field)

    def __getattr__(self, name: str):
        import rfprobe
        return getattr(rfprobe, name)

    def __repr__(self) -> str:
        return "<rfprobe test helper: rfprobe's API + assert_receptive_field>"


@pytest.fixture
def rf() -> RF:
    """rfprobe for tests: ``def test_x(rf): rf.assert_receptive_field(net, size=7)``,
    ``rf.verify(net)``, ``rf.build(...)``; failed comparisons of its results show the table."""
    return RF()


def _explain(result) -> list[str]:
    from .results import ProbeResult
    lines = str(result).splitlines()
    if isinstance(result, ProbeResult) and result.analysis is not None:
        lines = str(result.analysis).splitlines() + [""] + lines
    return lines


def pytest_assertrepr_compare(op, left, right):
    """Explain a failed comparison of an rfprobe result (or its ``size``/``stride``/``padding``)
    with the per-layer table and the diagnosis."""
    from .results import Analysis, ProbeResult
    for side in (left, right):
        other = right if side is left else left
        if isinstance(side, RFTuple) and side.rfprobe_result is not None:
            kind = type(side.rfprobe_result).__name__
            return ([f"{left!r} {op} {right!r}",
                     f"rfprobe {kind}.{side.rfprobe_what} is {tuple(side)!r}, compared with {other!r}:"]
                    + _explain(side.rfprobe_result))
        if isinstance(side, (Report, Analysis, ProbeResult)):
            return [f"rfprobe {type(side).__name__} {op} {other!r}:"] + _explain(side)
    return None
