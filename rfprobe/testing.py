"""Assertions for test suites; the pytest plugin (``rfprobe_pytest``) gives them as the ``rf``
fixture.

>>> import rfprobe
>>> assert_receptive_field(rfprobe.build("conv3 relu conv3"), size=5, stride=1)
>>> assert_receptive_field(rfprobe.build("conv3"), size=5)
Traceback (most recent call last):
...
AssertionError: expected size (5, 5), got (3, 3)
...

With the plugin (installed with rfprobe, nothing to configure), a failed comparison of an
rfprobe result's ``size``/``stride``/``padding`` shows the per-layer table and the diagnosis::

    def test_stem(rf):
        report = rf.verify(my_stem)
        assert report.size == (7, 7)     # on failure: the table, the boxes, the verdict

A failure's traceback ends at the test's own line: these helpers hide their frames.
"""
from __future__ import annotations

from typing import Any

from . import render
from .hints import Device, Expected, InputShape, Layer, ModelLike, Unit
from .measure import RFTuple
from .results import Analysis, ProbeResult
from .validate import check_expectation
from .verify import Report, verify

try:    # the plugin's names, so that ``-p rfprobe.testing`` and an install made before the plugin
    # moved to rfprobe_pytest (whose entry point still names this module) register them too
    from rfprobe_pytest import pytest_assertrepr_compare, rf  # noqa: F401  (re-exported)
except ModuleNotFoundError:     # such an editable install maps the package only: the file is beside it
    import importlib.util
    import sys
    from pathlib import Path
    _spec = importlib.util.spec_from_file_location(
        "rfprobe_pytest", Path(__file__).resolve().parent.parent / "rfprobe_pytest.py")
    _plugin = sys.modules["rfprobe_pytest"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_plugin)
    pytest_assertrepr_compare, rf = _plugin.pytest_assertrepr_compare, _plugin.rf


def assert_receptive_field(model: ModelLike, input_shape: InputShape = None, *, size: Expected = None,
                           stride: Expected = None, padding: Expected = None, unit: Unit = None, layer: Layer = None,
                           output: Any = None, device: Device = None) -> None:
    """Verify all routes agree and the RF has the given size/stride/padding (int = every axis).

    Passes silently. On failure raises ``AssertionError`` whose message leads with what differs,
    one line per field ("expected size (7, 7), got (5, 5)"), then the per-layer table and the
    diagnosis; pytest shows the caller's line, not this function. ``input_shape``, ``unit``,
    ``layer``, ``output`` and ``device`` are :func:`rfprobe.verify`'s (its whole signature, so a
    misspelt keyword is named as this function's).

    >>> import rfprobe
    >>> assert_receptive_field(rfprobe.build("conv3/s2 conv3"), size=7, stride=(2, 2), padding=0)
    >>> assert_receptive_field(rfprobe.build("conv3"), rf=3)
    Traceback (most recent call last):
    ...
    TypeError: assert_receptive_field() got an unexpected keyword argument 'rf'...
    """
    __tracebackhide__ = True
    for what, want in (("size", size), ("stride", stride), ("padding", padding)):
        check_expectation(what, want, None)     # a bad expectation is an argument error, before any work
    r = verify(model, input_shape, unit=unit, layer=layer, output=output, device=device)
    n = len(r.probe.size)
    wants = [(what, check_expectation(what, want, n), got) for what, want, got in
             (("size", size, r.size), ("stride", stride, r.stride), ("padding", padding, r.padding))]
    differs = []
    if r.analysis.status == "global":
        if any(want is not None for _, want, _ in wants):
            differs.append(render.assertion_global(r.analysis.global_causes))
    else:
        differs += [render.assertion_differs(what, want, got) for what, want, got in wants
                    if want is not None and tuple(got or ()) != want]
    if r.ok and not differs:
        return
    lines = differs + ([] if r.ok else [render.assertion_disagree(r.mismatches)])
    raise AssertionError("\n".join(lines + ["", render.report_text(r, differs)]))


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


def _explain(result, failed: str) -> list[str]:
    """The result's text for a failed comparison: a report's verdict says FAIL, never OK."""
    if isinstance(result, Report):
        return render.report_text(result, [failed]).splitlines()
    lines = str(result).splitlines()
    if isinstance(result, ProbeResult) and result.analysis is not None:
        lines = str(result.analysis).splitlines() + [""] + lines
    return lines


def explain_comparison(op: str, left, right) -> list[str] | None:
    """The lines pytest shows under a failed ``left op right`` when a side is an rfprobe result
    or its ``size``/``stride``/``padding`` (None otherwise: pytest's own explanation).

    >>> import rfprobe
    >>> lines = explain_comparison("==", rfprobe.verify("conv3").size, (5, 5))
    >>> lines[:2] + lines[-1:]
    ['(3, 3) == (5, 5)', 'rfprobe Report.size is (3, 3), compared with (5, 5):', 'FAIL: (3, 3) == (5, 5) is false (the routes agree, RF 3x3)']
    """
    failed = f"{left!r} {op} {right!r} is false"
    for side in (left, right):
        other = right if side is left else left
        if isinstance(side, RFTuple) and side.rfprobe_result is not None:
            kind = type(side.rfprobe_result).__name__
            return ([f"{left!r} {op} {right!r}",
                     f"rfprobe {kind}.{side.rfprobe_what} is {tuple(side)!r}, compared with {other!r}:"]
                    + _explain(side.rfprobe_result, failed))
        if isinstance(side, (Report, Analysis, ProbeResult)):
            return [f"rfprobe {type(side).__name__} {op} {other!r}:"] + _explain(side, failed)
    return None
