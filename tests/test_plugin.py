"""assert_receptive_field and the pytest plugin (``rf`` fixture, explained comparisons)."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import rfprobe
from rfprobe.errors import ArgumentError
from rfprobe.testing import assert_receptive_field

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parent.parent


def _tree_env() -> dict:
    """A subprocess's environment that finds this checkout's rfprobe and rfprobe_pytest."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1")


# ----------------------------------------------------------------------------- the assertion
def test_passes_silently_when_right():
    """conv3/s2 conv3: r = 3 + 2*2 = 7, S = 2, P = 0; with /p1 on both: P = 1 + 1*2 = 3."""
    assert assert_receptive_field(rfprobe.build("conv3/s2 conv3"), size=7, stride=2, padding=0) is None
    assert assert_receptive_field("conv3/s2/p1 conv3/p1", size=(7, 7), stride=(2, 2), padding=3) is None
    assert assert_receptive_field("conv3 conv3", input_shape=(1, 9, 9), unit=(0, 0), size=5) is None


@pytest.mark.parametrize("kw, line", [
    ({"size": 7}, "expected size (7, 7), got (5, 5)"),
    ({"size": 5, "stride": 2}, "expected stride (2, 2), got (1, 1)"),
    ({"padding": (1, 0)}, "expected padding (1, 0), got (0, 0)"),
])
def test_raises_with_the_table_when_wrong(kw, line):
    """What differs leads ("expected ..., got ...": the old wording put the result first), then
    the table and a verdict that says FAIL: no "OK" anywhere, although the routes agree."""
    with pytest.raises(AssertionError) as info:
        assert_receptive_field("conv3 relu conv3", **kw)
    msg = str(info.value)
    assert msg.splitlines()[0] == line and msg.splitlines()[1] == ""
    assert "layer  op" in msg and "conv2d" in msg           # the per-layer table
    assert "RF 5x5, stride 1x1" in msg                      # the summary under it
    assert msg.splitlines()[-1] == f"FAIL: {line} (the routes agree, RF 5x5)"
    assert "OK" not in msg


def test_one_line_per_differing_field():
    """conv3/s2 conv3 by hand: size 3 + 2*2 = 7, stride 2, padding 0. Two fields wrong, two lines
    first; the padding that holds is not among them."""
    with pytest.raises(AssertionError) as info:
        assert_receptive_field("conv3/s2 conv3", size=5, stride=1, padding=0)
    lines = str(info.value).splitlines()
    assert lines[:3] == ["expected size (5, 5), got (7, 7)", "expected stride (1, 1), got (2, 2)", ""]
    assert "padding (0, 0)" not in "\n".join(lines) and "OK" not in "\n".join(lines)


def test_global_rf_is_a_failure_with_its_diagnosis():
    net = rfprobe.build("conv3 bn relu conv3")                # train mode: BatchNorm couples all
    with pytest.raises(AssertionError) as info:
        assert_receptive_field(net, size=5)
    msg = str(info.value)
    assert msg.startswith("the receptive field is global")
    assert "batch_norm in training mode" in msg
    with pytest.raises(AssertionError, match="global"):
        assert_receptive_field(net, padding=0)               # any expectation fails, not only size
    assert_receptive_field(net.eval(), size=5)


@pytest.mark.parametrize("kw", [{"size": (5, 5, 5)}, {"size": "5"}, {"stride": 1.5}])
def test_bad_expectations_are_argument_errors(kw):
    with pytest.raises(ArgumentError, match=next(iter(kw))):
        assert_receptive_field("conv3 conv3", **kw)


# ----------------------------------------------------------------------------- tuples that remember
def test_result_tuples_are_plain_tuples_that_remember():
    r = rfprobe.verify("conv3 relu conv3")
    for t in (r.size, r.stride, r.padding, r.analysis.size, r.probe.size):
        assert isinstance(t, tuple)
    assert r.size == (5, 5) and (5, 5) == r.size and r.size != (5, 6)
    assert hash(r.size) == hash((5, 5)) and {(5, 5): "x"}[r.size] == "x"
    assert repr(r.size) == "(5, 5)" and list(r.size) == [5, 5]
    assert r.size.rfprobe_result is r and r.analysis.size.rfprobe_result is r.analysis
    assert r.probe.size.rfprobe_result is r.probe and r.stride.rfprobe_what == "stride"
    assert type(pickle.loads(pickle.dumps(r.size))) is tuple


def test_the_plugin_is_registered(request):
    """Registered as 'rfprobe' (the entry point names rfprobe_pytest; an install made before the
    move names rfprobe.testing, which re-exports the same fixture and hook)."""
    import rfprobe_pytest
    plugin = request.config.pluginmanager.get_plugin("rfprobe")
    assert plugin is not None
    assert plugin.pytest_assertrepr_compare is rfprobe_pytest.pytest_assertrepr_compare
    assert plugin.rf is rfprobe_pytest.rf


def test_the_entry_point_is_the_light_module():
    import tomllib
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)
    assert project["project"]["entry-points"]["pytest11"] == {"rfprobe": "rfprobe_pytest"}
    assert "rfprobe_pytest" in project["tool"]["setuptools"]["py-modules"]     # shipped in the wheel


LOAD_PLUGIN = """
import importlib, sys, tomllib
import pytest
with open(sys.argv[1], "rb") as f:
    name = tomllib.load(f)["project"]["entry-points"]["pytest11"]["rfprobe"]
pm = pytest.PytestPluginManager()
pm.register(importlib.import_module(name), "rfprobe")
heavy = sorted(m for m in ("torch", "numpy", "rfprobe") if m in sys.modules)
assert not heavy, heavy
print("light", name)
"""


def test_loading_the_plugin_imports_no_torch():
    """pytest loads the plugin in every run of every project with rfprobe installed: loading the
    entry point's module must not import torch (nor rfprobe, whose __init__ imports torch)."""
    proc = subprocess.run([sys.executable, "-c", LOAD_PLUGIN, str(ROOT / "pyproject.toml")],
                          capture_output=True, text=True, timeout=120, env=_tree_env())
    assert proc.returncode == 0 and proc.stdout.strip() == "light rfprobe_pytest", proc.stderr


LIGHT = '''
import sys

def test_a_test_that_does_not_use_rfprobe():
    assert "torch" not in sys.modules and "rfprobe" not in sys.modules

def test_a_failed_comparison_without_rfprobe():
    assert [1, 2] == [1, 3]

def test_the_fixture_brings_rfprobe(rf):
    assert "torch" in sys.modules
    assert rf.verify("conv3 conv3").size == (5, 5)
'''


def test_a_pytest_run_with_the_plugin_stays_light_until_rf_is_used(pytester, monkeypatch):
    """A whole pytest run in a fresh process with only the plugin loaded (as its entry point):
    torch comes in with the rf fixture, not before; other failed comparisons keep pytest's own
    explanation and do not import rfprobe."""
    for k, v in _tree_env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_light=LIGHT)
    result = pytester.runpytest_subprocess("-p", "rfprobe_pytest", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*At index 1 diff: 2 != 3*"])


def test_rf_fixture(rf):
    assert rf.verify is rfprobe.verify and rf.build is rfprobe.build
    rf.assert_receptive_field("conv3 conv3", size=5)


# ----------------------------------------------------------------------------- pytest output
FAILING = '''
import rfprobe

def test_report_size():
    report = rfprobe.verify("conv3 relu conv3")
    assert report.size == (7, 7)

def test_analysis_stride(rf):
    assert rf.analyze("conv3/s2 conv3").stride == (1, 1)

def test_probe_size(rf):
    e = rf.probe("conv3/d4")
    assert e.size == (3, 3)

def test_whole_report(rf):
    assert rf.verify("conv3") == 3

def test_assertion(rf):
    rf.assert_receptive_field("conv3 conv3", size=3)

def test_passes(rf):
    assert rf.verify("conv3 conv3").size == (5, 5)
'''


def test_failed_comparisons_show_the_table(pytester):
    pytester.makepyfile(test_user=FAILING)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=5)
    out = result.stdout.str()
    result.stdout.fnmatch_lines([
        "*assert (5, 5) == (7, 7)*",
        "*rfprobe Report.size is (5, 5), compared with (7, 7):*",
        "*layer*op*output*size*stride*padding*",
        "*FAIL: (5, 5) == (7, 7) is false (the routes agree, RF 5x5)*",   # was OK: all routes agree
    ])
    result.stdout.fnmatch_lines(["*rfprobe Analysis.stride is (2, 2), compared with (1, 1):*",
                                 "*RF 7x7, stride 2x2*"])
    result.stdout.fnmatch_lines(["*rfprobe ProbeResult.size is (9, 9), compared with (3, 3):*",
                                 "*probe of '0' unit*RF 9x9*"])
    result.stdout.fnmatch_lines(["*rfprobe Report == 3:*"])
    result.stdout.fnmatch_lines(["*expected size (3, 3), got (5, 5)*"])
    assert out.count("layer  op") >= 4
    assert "OK:" not in out


HIDDEN = '''
import rfprobe
from rfprobe.testing import assert_receptive_field

def test_direct():
    net = rfprobe.build("conv3 conv3")
    assert_receptive_field(net, size=7)  # THE USER'S LINE 1

def test_fixture(rf):
    rf.assert_receptive_field("conv3/s2 conv3", stride=1)  # THE USER'S LINE 2
'''


def test_a_failure_shows_the_users_line_not_rfprobes(pytester):
    """assert_receptive_field hides its own frame: the traceback ends at the test's line, and the
    message leads with what differs (conv3 conv3: 5; conv3/s2 conv3: stride 2, by hand)."""
    pytester.makepyfile(test_hidden=HIDDEN)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    result.stdout.fnmatch_lines([">*assert_receptive_field(net, size=7)  # THE USER'S LINE 1",
                                 "E*AssertionError: expected size (7, 7), got (5, 5)"])
    result.stdout.fnmatch_lines([">*rf.assert_receptive_field(*stride=1)  # THE USER'S LINE 2",
                                 "E*AssertionError: expected stride (1, 1), got (2, 2)"])
    assert "testing.py" not in out and "def assert_receptive_field" not in out
    assert "raise AssertionError" not in out and "__tracebackhide__" not in out
    assert "OK" not in out
