"""rfprobe's pytest plugin: the ``rf`` fixture, and failed comparisons of rfprobe results
explained with the per-layer table and the diagnosis.

Registered as the ``pytest11`` entry point ``rfprobe``, so pytest loads it at the start of
every test run of every project where rfprobe is installed. It therefore imports neither
torch nor rfprobe (whose ``__init__`` imports torch): they come in when a test asks for the
``rf`` fixture, and a failed comparison is explained only when rfprobe is imported already
(no rfprobe result can exist before). It lives outside the ``rfprobe`` package because
importing ``rfprobe.anything`` runs ``rfprobe/__init__.py`` first.
"""
from __future__ import annotations

import sys

import pytest


@pytest.fixture
def rf():
    """rfprobe for tests: ``def test_x(rf): rf.assert_receptive_field(net, size=7)``,
    ``rf.verify(net)``, ``rf.build(...)``; failed comparisons of its results show the table."""
    from rfprobe.testing import RF
    return RF()


def pytest_assertrepr_compare(op, left, right):
    """Explain a failed comparison of an rfprobe result (or its ``size``/``stride``/``padding``)
    with the per-layer table and the diagnosis."""
    if "rfprobe" not in sys.modules:
        return None
    from rfprobe.testing import explain_comparison
    return explain_comparison(op, left, right)
