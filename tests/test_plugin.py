"""assert_receptive_field and the pytest plugin (``rf`` fixture, explained comparisons)."""
from __future__ import annotations

import pickle

import pytest

import rfprobe
from rfprobe.errors import ArgumentError
from rfprobe.testing import assert_receptive_field

pytest_plugins = ["pytester"]


# ----------------------------------------------------------------------------- the assertion
def test_passes_silently_when_right():
    """conv3/s2 conv3: r = 3 + 2*2 = 7, S = 2, P = 0; with /p1 on both: P = 1 + 1*2 = 3."""
    assert assert_receptive_field(rfprobe.build("conv3/s2 conv3"), size=7, stride=2, padding=0) is None
    assert assert_receptive_field("conv3/s2/p1 conv3/p1", size=(7, 7), stride=(2, 2), padding=3) is None
    assert assert_receptive_field("conv3 conv3", input_shape=(1, 9, 9), unit=(0, 0), size=5) is None


@pytest.mark.parametrize("kw, line", [
    ({"size": 7}, "receptive field size is (5, 5), expected (7, 7)"),
    ({"size": 5, "stride": 2}, "receptive field stride is (1, 1), expected (2, 2)"),
    ({"padding": (1, 0)}, "receptive field padding is (0, 0), expected (1, 0)"),
])
def test_raises_with_the_table_when_wrong(kw, line):
    with pytest.raises(AssertionError) as info:
        assert_receptive_field("conv3 relu conv3", **kw)
    msg = str(info.value)
    assert msg.splitlines()[0] == line
    assert "layer  op" in msg and "conv2d" in msg           # the per-layer table
    assert "RF 5x5, stride 1x1" in msg                      # the summary under it


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
    assert request.config.pluginmanager.get_plugin("rfprobe") is rfprobe.testing


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
        "*OK: all routes agree, RF 5x5*",
    ])
    result.stdout.fnmatch_lines(["*rfprobe Analysis.stride is (2, 2), compared with (1, 1):*",
                                 "*RF 7x7, stride 2x2*"])
    result.stdout.fnmatch_lines(["*rfprobe ProbeResult.size is (9, 9), compared with (3, 3):*",
                                 "*probe of '0' unit*RF 9x9*"])
    result.stdout.fnmatch_lines(["*rfprobe Report == 3:*"])
    result.stdout.fnmatch_lines(["*receptive field size is (5, 5), expected (3, 3)*"])
    assert out.count("layer  op") >= 4
