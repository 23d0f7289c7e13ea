"""Pictures (headless, Agg) and the HTML shown in Jupyter.

Expected boxes and holes are worked out by hand in each test's comment.
"""
from __future__ import annotations

import dataclasses
import sys

import matplotlib
import numpy as np
import pytest
import torch.nn as nn

matplotlib.use("Agg")

import rfprobe  # noqa: E402
from rfprobe.errors import RFProbeError  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402


def _images(fig):
    return [a for a in fig.axes if any(isinstance(c, AxesImage) for c in a.get_children())
            and a.get_label() != "<colorbar>"]


def test_dilated_stack_shows_holes_box_and_unit(tmp_path):
    # conv3/d2 twice: taps at offsets {0,2,4} + {0,2,4} = {0,2,4,6,8}; on a 9x9 input the one
    # output unit (0,0) sees the even rows and columns of box (0,8) x (0,8); odd ones are holes
    r = rfprobe.verify("conv3/d2 conv3/d2", input_shape=(1, 9, 9))
    fig = rfprobe.plot(r, path=tmp_path / "rf.png")
    (ax,) = _images(fig)
    img = next(c for c in ax.get_children() if isinstance(c, AxesImage)).get_array()
    i, j = np.indices((9, 9))
    np.testing.assert_array_equal(np.ma.getmaskarray(img), (i % 2 == 1) | (j % 2 == 1))
    boxes = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert [(b.get_xy(), b.get_width(), b.get_height()) for b in boxes] == [((-0.5, -0.5), 9, 9)]
    # the RF's centre is the box's middle (Distill: 0*1 - 0 + (9 - 1)/2 = 4 per axis); no
    # 'unit' marker: stride 1, but the output (1x1) is not the input's grid (9x9), and output
    # index 0 reads inputs 0..8, so input position 0 is not where the unit sits
    (centre,) = [ln for ln in ax.lines if ln.get_label() == "RF centre"]
    assert (centre.get_xdata()[0], centre.get_ydata()[0]) == (4.0, 4.0)
    assert [ln for ln in ax.lines if ln.get_label() == "unit"] == []
    assert (tmp_path / "rf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rfprobe.plot(r, path=str(tmp_path / "rf.svg"))
    assert b"<svg" in (tmp_path / "rf.svg").read_bytes()[:400]


def test_a_box_reaching_into_the_padding_is_drawn_outside_the_input(tmp_path):
    # two conv3/p1: unit (0,0) sees input rows -2..2 (closed form: 0*1 - 2 .. -2 + 5 - 1)
    r = rfprobe.verify("conv3/p1 conv3/p1", unit=(0, 0), input_shape=(1, 6, 6))
    fig = rfprobe.plot(r, path=tmp_path / "pad.png")
    (ax,) = _images(fig)
    (box,) = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert box.get_xy() == (-2.5, -2.5) and box.get_width() == 5
    assert ax.get_xlim()[0] <= -2.5 and max(ax.get_ylim()) >= 5.5


def test_log_scale_option(tmp_path):
    fig = rfprobe.plot(rfprobe.probe("conv3 conv3"), path=tmp_path / "log.png", log=True)
    (ax,) = _images(fig)
    im = next(c for c in ax.get_children() if isinstance(c, AxesImage))
    assert isinstance(im.norm, LogNorm)
    fig = rfprobe.plot(rfprobe.probe("conv3 conv3"), path=tmp_path / "lin.png")
    im = next(c for c in _images(fig)[0].get_children() if isinstance(c, AxesImage))
    assert not isinstance(im.norm, LogNorm)


def test_1d_is_a_line_of_bars_and_3d_is_slices(tmp_path):
    e = rfprobe.probe(rfprobe.build("conv3/d2 conv3", dims=1), input_shape=(1, 11))
    fig = e.plot(path=tmp_path / "one.png")
    (ax,) = fig.axes
    heights = [p.get_height() for p in ax.patches if p.get_width() == 1.0]
    assert len(heights) == 11
    # RF 7 = taps {0,2,4} + {0,1,2}: 0..6 around the centre unit 2 of 5 outputs -> inputs 2..8
    assert [h > 0 for h in heights] == [False, False] + [True] * 7 + [False, False]
    r = rfprobe.verify(rfprobe.build("conv3 conv3", dims=3))
    fig = r.plot(path=tmp_path / "three.png", slices=3)
    assert len(_images(fig)) == 3
    fig = r.plot(path=tmp_path / "three.svg", slices=9)
    assert len(_images(fig)) == 5          # the 5x5x5 box has 5 slices along axis 0


def test_erf_plot(tmp_path):
    f = rfprobe.erf(rfprobe.build("conv3/c4 relu conv3 relu conv3", in_channels=2), n=4)
    fig = f.plot(path=tmp_path / "erf.png", log=True)
    (ax,) = _images(fig)
    assert ax.get_title().startswith("ERF of")
    labels = [p.get_label() for p in ax.patches]
    assert any(lbl.startswith("theoretical RF 7x7") for lbl in labels)
    assert any(lbl.startswith("square holding 50%") for lbl in labels)


def test_analysis_plot_is_the_exact_set(tmp_path):
    a = rfprobe.analyze("conv3/d3", input_shape=(1, 7, 7))
    fig = rfprobe.plot(a, path=tmp_path / "a.png")
    im = next(c for c in _images(fig)[0].get_children() if isinstance(c, AxesImage))
    # taps at 0, 3, 6 on both axes
    want = np.zeros((7, 7), bool)
    want[np.ix_([0, 3, 6], [0, 3, 6])] = True
    np.testing.assert_array_equal(~np.ma.getmaskarray(im.get_array()), want)


def test_plot_without_matplotlib_says_how_to_install(monkeypatch):
    e = rfprobe.probe("conv3")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(RFProbeError, match=r"pip install 'rfprobe\[plot\]'"):
        rfprobe.plot(e)


def test_plot_refuses_unknown_suffixes_and_objects(tmp_path):
    with pytest.raises(RFProbeError, match=r"rf\.jpeg"):
        rfprobe.plot(rfprobe.probe("conv3"), path=tmp_path / "rf.jpeg")
    with pytest.raises(RFProbeError, match="ProbeResult, Report"):
        rfprobe.plot(42)


def test_plot_into_a_given_axes():
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    try:
        out = rfprobe.plot(rfprobe.probe("conv3"), ax=ax)
        assert out is fig and ax.images
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------- HTML
def _cells(html: str) -> list[str]:
    import re
    return re.findall(r"<td[^>]*>(.*?)</td>", html)


def test_analysis_html_has_every_layer_row_and_a_green_summary():
    a = rfprobe.analyze("conv3 relu conv3/s2")
    html = a._repr_html_()
    cells = _cells(html)
    assert cells.count("conv2d") == 2 and cells.count("relu") == 1
    assert "5x5" in cells and "3x3" in cells      # layer 0 sees 3x3, the last 5x5 (hand)
    assert "#1a7f37" in html and "RF 5x5, stride 2x2" in html


def test_global_analysis_is_red():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Conv2d(2, 2, 1))
    html = rfprobe.analyze(model, input_shape=(1, 8, 8))._repr_html_()
    assert "#cf222e" in html and "RF global" in html


def test_report_html_has_table_routes_and_verdict():
    r = rfprobe.verify("conv3 relu conv3")
    html = r._repr_html_()
    cells = _cells(html)
    assert cells.count("conv2d") == 2
    assert "gradient probe" in cells and "closed form (hull)" in cells
    assert "OK: all routes agree, RF 5x5" in html and "#1a7f37" in html
    bad = dataclasses.replace(r, ok=False, mismatches=("exact propagation and gradient probe differ",))
    html = bad._repr_html_()
    assert "FAIL: the routes disagree" in html and "#cf222e" in html
    assert "MISMATCH: exact propagation and gradient probe differ" in html


def test_probe_html_table_and_truncation_colour():
    e = rfprobe.probe("conv3 conv3")
    cells = _cells(e._repr_html_())
    assert ["RF size", "5x5"] == cells[cells.index("RF size"):cells.index("RF size") + 2]
    assert "truncated" in cells and "no" in cells
    t = rfprobe.probe("conv3/p1 conv3/p1", unit=(0, 0), input_shape=(1, 6, 6))
    assert t.truncated and "#9a6700" in t._repr_html_()


def test_html_escapes_names():
    class Weird(nn.Module):
        def __init__(self):
            super().__init__()
            self.add_module("<b>", nn.Conv2d(1, 1, 3))

        def forward(self, x):
            return getattr(self, "<b>")(x)
    html = rfprobe.analyze(Weird(), input_shape=(1, 5, 5))._repr_html_()
    assert "&lt;b&gt;" in html and "<td style=\"padding:2px 8px;text-align:left\"><b>" not in html
