"""Pictures in which every marker says what it marks: positions read back from the matplotlib
artists (data coordinates) against hand-computed ones, legend labels from the documented list,
titles that name the module, and legends and labels that cover no data and are not clipped.

The closed form (Distill): unit ``u`` of a stack with RF size ``r``, effective stride ``S`` and
effective padding ``P`` reads inputs ``u*S - P .. u*S - P + r - 1``; its centre is
``u*S - P + (r - 1)/2``.
"""
from __future__ import annotations

from collections import OrderedDict

import matplotlib
import pytest
import torch.nn as nn
import torch.nn.functional as F

matplotlib.use("Agg")

import rfprobe  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from rfprobe.render.plot import LABELS, is_legend_label, output_name  # noqa: E402


def causal(layers: int = 4, k: int = 3) -> nn.Sequential:
    """A causal 1-D stack: each conv sees its own index and the k-1 before it."""
    mods = []
    for _ in range(layers):
        mods += [nn.ConstantPad1d((k - 1, 0), 0.0), nn.Conv1d(1, 1, k)]
    return nn.Sequential(*mods)


def _lines(ax, label):
    return [ln for ln in ax.lines if ln.get_label() == label]


def _data_axes(fig):
    return [a for a in fig.axes if a.get_label() != "<colorbar>"]


def _legends(fig):
    return list(fig.legends) + [a.get_legend() for a in fig.axes if a.get_legend() is not None]


def _renderer(fig):
    if not hasattr(fig.canvas, "get_renderer"):        # a pyplot-free Figure: give it Agg
        FigureCanvasAgg(fig)
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)                                   # lays it out (constrained layout)
    return renderer


# ----------------------------------------------------------------------------- (a) causal 1-D
def test_causal_1d_net_marks_the_unit_at_its_index_and_the_rf_centre_mid_box(tmp_path):
    # 4 x (pad 2 on the left, conv3): r = 1 + 4*(3-1) = 9, S = 1, P = 4*2 = 8 (all left);
    # unit 255 of 256 outputs reads 255*1 - 8 .. 255 - 8 + 9 - 1 = 247..255: its RF ends at
    # the unit itself; the centre is 255 - 8 + (9 - 1)/2 = 251
    r = rfprobe.verify(causal(), input_shape=(1, 256), unit=(255,))
    assert r.ok and (r.size, r.stride, r.padding) == ((9,), (1,), (8,))
    fig = r.plot(path=tmp_path / "causal.png")
    (ax,) = _data_axes(fig)
    (unit,) = _lines(ax, "unit")
    assert list(unit.get_xdata()) == [255, 255]                  # a vertical line at x = 255
    (centre,) = _lines(ax, "RF centre")
    assert list(centre.get_xdata()) == [251.0, 251.0]
    (box,) = [p for p in ax.patches if p.get_label() == "closed form 9"]
    assert isinstance(box, Rectangle)
    assert (box.get_x(), box.get_x() + box.get_width()) == (246.5, 255.5)   # cells 247..255
    assert (box.get_x() + box.get_x() + box.get_width()) / 2 == 251.0      # centre mid-box
    # the same markers on the analysis of that unit and on the probe alone
    e = rfprobe.probe(causal(), input_shape=(1, 256), unit=(255,))
    (ax,) = _data_axes(e.plot(path=tmp_path / "probe.png"))
    assert [list(ln.get_xdata()) for ln in _lines(ax, "unit")] == [[255, 255]]
    assert [list(ln.get_xdata()) for ln in _lines(ax, "RF centre")] == [[251.0, 251.0]]
    assert "unit 255" in ax.get_title()
    # the centre unit of the analysis: 128, reading 120..128, centre 124
    a = rfprobe.analyze(causal(), input_shape=(1, 256))
    (ax,) = _data_axes(a.plot(path=tmp_path / "analysis.png"))
    assert [list(ln.get_xdata()) for ln in _lines(ax, "unit")] == [[128, 128]]
    assert [list(ln.get_xdata()) for ln in _lines(ax, "RF centre")] == [[124.0, 124.0]]


def test_same_padded_2d_net_marks_the_unit_on_the_rf_centre(tmp_path):
    # conv3/p1 twice ('same'): r = 5, S = 1, P = 2; unit (0, 7) of an 8x8 output reads rows
    # -2..2 and columns 5..9; centre (0*1 - 2 + 2, 7 - 2 + 2) = (0, 7), the unit itself
    r = rfprobe.verify("conv3/p1 conv3/p1", input_shape=(1, 8, 8), unit=(0, 7))
    (ax,) = _data_axes(r.plot(path=tmp_path / "same.png"))
    (centre,) = _lines(ax, "RF centre")
    (unit,) = _lines(ax, "unit")
    assert (centre.get_xdata()[0], centre.get_ydata()[0]) == (7.0, 0.0)   # (column, row)
    assert (unit.get_xdata()[0], unit.get_ydata()[0]) == (7, 0)


@pytest.mark.parametrize("spec, unit, box", [("conv3 conv3", (1, 2), ((1, 5), (2, 6))),
                                             ("conv5/p1", (0, 0), ((-1, 3), (-1, 3)))])
def test_no_unit_marker_where_the_output_grid_is_not_the_input_s(tmp_path, spec, unit, box):
    # stride 1 but padding less than r - 1 (conv3 conv3: r = 5, P = 0, 8x8 -> 4x4; conv5/p1:
    # r = 5, P = 1, 8x8 -> 6x6): unit u reads u - P .. u - P + 4, so input position u is not
    # where the unit sits; the RF centre u - P + 2 is drawn, the unit is named in the title
    e = rfprobe.probe(spec, input_shape=(1, 8, 8), unit=unit)
    assert e.box == tuple((max(lo, 0), hi) for lo, hi in box)
    (ax,) = _data_axes(e.plot(path=tmp_path / "valid.png"))
    (centre,) = _lines(ax, "RF centre")
    assert (centre.get_ydata()[0], centre.get_xdata()[0]) == tuple((lo + hi) / 2 for lo, hi in box)
    assert _lines(ax, "unit") == []
    assert f"unit {unit}" in ax.get_title()


# ----------------------------------------------------------------------------- (b) strided 2-D
@pytest.mark.parametrize("spec, padding", [("conv3/s2 conv3/s2", 0), ("conv3/s2/p1 conv3/s2", 1)])
def test_strided_2d_net_marks_the_rf_centre_and_names_the_unit_in_the_title(tmp_path, spec, padding):
    # conv3/s2 twice: r = 3 + (3-1)*2 = 7, S = 4, P = p1 + 0*2 = padding; on 15x15 the output
    # is 3x3; unit (1, 2) reads rows 4 - P .. 10 - P, columns 8 - P .. 14 - P, centre
    # (1*4 - P + 3, 2*4 - P + 3); no "unit" marker: output index 2 is not input position 2
    unit = (1, 2)
    centre = (1 * 4 - padding + (7 - 1) / 2, 2 * 4 - padding + (7 - 1) / 2)
    e = rfprobe.probe(spec, input_shape=(1, 15, 15), unit=unit)
    assert (e.analysis.size, e.analysis.stride, e.analysis.padding) == ((7, 7), (4, 4), (padding, padding))
    fig = e.plot(path=tmp_path / "strided.png")
    (ax,) = _data_axes(fig)
    (mark,) = _lines(ax, "RF centre")
    assert (mark.get_ydata()[0], mark.get_xdata()[0]) == centre          # (row, column)
    assert _lines(ax, "unit") == []
    (box,) = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert box.get_xy() == (8 - padding - 0.5, 4 - padding - 0.5) and box.get_width() == 7
    assert "unit (1, 2)" in ax.get_title()
    # verify's picture: the same centre, still no unit marker
    r = rfprobe.verify(spec, input_shape=(1, 15, 15), unit=unit)
    (ax,) = _data_axes(r.plot(path=tmp_path / "strided_verify.png"))
    assert [(ln.get_ydata()[0], ln.get_xdata()[0]) for ln in _lines(ax, "RF centre")] == [centre]
    assert _lines(ax, "unit") == []


def test_rf_centre_of_a_varying_rf_is_the_exact_box_middle(tmp_path):
    # up2 then conv3: no closed form ('varies'); unit 3 of the conv reads upsampled 3..5, i.e.
    # inputs 1..2 (nearest: j // 2); the centre is the middle of that box, 1.5; no unit marker
    net = rfprobe.build("up2 conv3", dims=1)
    e = rfprobe.probe(net, input_shape=(1, 8), unit=(3,))
    assert e.analysis.status == "varies" and e.box == ((1, 2),)
    (ax,) = _data_axes(e.plot(path=tmp_path / "varies.png"))
    assert [list(ln.get_xdata()) for ln in _lines(ax, "RF centre")] == [[1.5, 1.5]]
    assert _lines(ax, "unit") == []


# ----------------------------------------------------------------------------- labels and titles
def _all_pictures(tmp_path):
    """One picture of each kind, in figures of ours, and two drawn into a given axes."""
    import matplotlib.pyplot as plt
    figs = {
        "causal": rfprobe.verify(causal(), input_shape=(1, 256), unit=(255,)).plot(path=tmp_path / "c.png"),
        "probe": rfprobe.probe("conv3/s2 relu conv3/s2", input_shape=(1, 23, 23), unit=(2, 4))
        .plot(path=tmp_path / "p.png"),
        "analysis": rfprobe.analyze("conv3/d2 conv3/p1", input_shape=(1, 12, 12)).plot(path=tmp_path / "a.png"),
        "erf": rfprobe.erf(rfprobe.build("conv3/c4 relu conv3 relu conv3", in_channels=2), n=4)
        .plot(path=tmp_path / "e.png", log=True),
        "3d": rfprobe.verify(rfprobe.build("conv3 conv3", dims=3)).plot(path=tmp_path / "t.png", slices=3),
    }
    given, axes = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    rfprobe.erf(rfprobe.build("conv3 relu conv3"), n=2).plot(ax=axes[0])
    rfprobe.verify("conv3/p1 conv3/p1", input_shape=(1, 8, 8), unit=(0, 7)).plot(ax=axes[1])
    figs["given axes"] = given
    return figs


def test_every_legend_entry_is_a_documented_label_and_covers_no_data(tmp_path):
    import matplotlib.pyplot as plt
    figs = _all_pictures(tmp_path)
    try:
        for name, fig in figs.items():
            renderer = _renderer(fig)
            legends = _legends(fig)
            assert legends, name
            texts = [t.get_text() for leg in legends for t in leg.get_texts()]
            assert texts and all(is_legend_label(t) for t in texts), (name, texts, LABELS)
            assert "RF centre" in texts, name
            width, height = fig.bbox.width, fig.bbox.height
            for leg in legends:
                box = leg.get_window_extent(renderer)
                for ax in _data_axes(fig):                       # the axes' data area
                    assert not box.overlaps(ax.get_window_extent(renderer)), (name, box, ax)
                assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, (name, box)
            # no axis label, title or colour bar label clipped by the figure's edge
            for ax in fig.axes:
                for t in (ax.xaxis.label, ax.yaxis.label, ax.title):
                    if t.get_text():
                        b = t.get_window_extent(renderer)
                        assert b.x0 >= 0 and b.y0 >= 0 and b.x1 <= width and b.y1 <= height, (name, t)
    finally:
        plt.close(figs["given axes"])


@pytest.fixture(scope="module")
def panels():
    """Four pictures' results: ERFs with four and five legend entries, a verify and a probe."""
    return [rfprobe.erf(rfprobe.build("conv3 relu conv3 relu conv3", in_channels=2), n=2),
            rfprobe.verify("conv3/p1 conv3/p1", input_shape=(1, 8, 8), unit=(0, 7)),
            rfprobe.erf(rfprobe.build("conv3/p1 relu conv3/p1"), n=2, input_shape=(1, 9, 9)),
            rfprobe.probe("conv3/s2 relu conv3/s2", input_shape=(1, 23, 23), unit=(2, 4))]


@pytest.mark.parametrize("rows, cols, size", [(1, 2, (9, 3.6)), (2, 2, (8, 7))])
def test_panels_drawn_into_given_axes_keep_their_size(panels, rows, cols, size):
    """Pictures drawn into the axes of one constrained figure (notebook 03's is 1x2, 9x3.6):
    each image keeps at least 0.45 of its grid cell's smaller side (a legend wider than the
    axes' share of the figure made the layout shrink the images to 1.1 inches of 3.6, and
    collapse them on a 7x3 figure), the layout is applied, and no legend covers any axes or
    another legend or leaves the figure."""
    import warnings

    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(rows, cols, figsize=size, layout="constrained", squeeze=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")          # 'constrained_layout not applied ...'
            for ax, r in zip(axes.flat, panels if rows * cols > 2 else panels[::2]):
                r.plot(ax=ax)
            renderer = _renderer(fig)
        assert all(ax.get_legend() is not None for ax in axes.flat)
        cell = min(size[0] / cols, size[1] / rows) * fig.dpi
        for ax in axes.flat:
            box = ax.get_window_extent(renderer)
            assert min(box.width, box.height) >= 0.45 * cell, (box.width / fig.dpi, box.height / fig.dpi)
        legends = [ax.get_legend().get_window_extent(renderer) for ax in axes.flat]
        for i, leg in enumerate(legends):
            assert leg.x0 >= 0 and leg.y0 >= 0 and leg.x1 <= fig.bbox.width and leg.y1 <= fig.bbox.height
            assert not any(leg.overlaps(a.get_window_extent(renderer)) for a in fig.axes)
            assert not any(leg.overlaps(other) for other in legends[i + 1:])
    finally:
        plt.close(fig)


def test_the_colour_bar_label_is_inside_the_figure(tmp_path):
    fig = rfprobe.erf(rfprobe.build("conv3/c4 relu conv3 relu conv3", in_channels=2), n=4).plot(
        path=tmp_path / "e.png", log=True)
    renderer = _renderer(fig)
    (bar,) = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert bar.yaxis.label.get_text() == "mean |g| (sums to 1) (log)"
    assert bar.yaxis.label.get_window_extent(renderer).x1 <= fig.bbox.width


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x))) + x)


def test_titles_name_the_module_and_its_class(tmp_path):
    net = nn.Sequential(OrderedDict(stem=nn.Conv2d(1, 4, 3, padding=1),
                                    layer3=nn.Sequential(Block(), Block())))
    # the output of 'layer3' is the output of 'layer3.1' (a Block) and of its last relu; the
    # title names the shortest that is not a bare container
    e = rfprobe.probe(net, input_shape=(1, 16, 16), layer="layer3", unit=(7, 7))
    (ax,) = _data_axes(e.plot(path=tmp_path / "block.png"))
    assert ax.get_title().splitlines()[0] == "RF of 'layer3.1' (Block), unit (7, 7)"
    a = rfprobe.analyze(net, input_shape=(1, 16, 16), layer="stem")
    (ax,) = _data_axes(a.plot(path=tmp_path / "stem.png"))
    assert ax.get_title().splitlines()[0] == "exact RF of 'stem' (Conv2d), unit (8, 8)"
    assert a.graph.module_types["layer3.1"] == "Block" and a.graph.module_types[""] == "Sequential"


def test_titles_keep_the_node_name_where_no_module_returns_the_output(tmp_path):
    class Tail(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)

        def forward(self, x):
            return F.relu(self.conv(x)) * 2        # ops of the model itself, no module's output
    a = rfprobe.analyze(Tail(), input_shape=(1, 8, 8))
    assert a.graph.owner(a.graph.node(a.target)) is None
    assert output_name(a, a.target) == repr(a.target)
    (ax,) = _data_axes(a.plot(path=tmp_path / "tail.png"))
    assert ax.get_title().startswith(f"exact RF of {a.target!r}, unit (3, 3)")


def test_torchvision_trunk_title():
    torchvision = pytest.importorskip("torchvision")
    a = rfprobe.analyze(torchvision.models.resnet18(), input_shape=(3, 64, 64), layer="layer3")
    assert output_name(a, a.target) == "'layer3.1' (BasicBlock)"


def test_the_erf_picture_names_the_module_and_marks_the_unit():
    """A causal 1D net of two 3-taps (r = 5, S = 1, P = 4 by hand): unit 31's RF centre is
    31 - 4 + 2 = 29, the unit itself at 31; the title names the module and its class."""
    from rfprobe.render.plot import erf_plot_data
    net = nn.Sequential(nn.ConstantPad1d((2, 0), 0), nn.Conv1d(1, 1, 3), nn.ConstantPad1d((2, 0), 0),
                        nn.Conv1d(1, 1, 3))
    f = rfprobe.erf(net, (1, 32), unit=(31,), n=2)
    _, _, _, marks, title, _ = erf_plot_data(f)
    marks = dict(marks)
    assert marks["RF centre"] == (29.0,) and marks["unit"] == (31,)
    assert title.startswith("ERF of '3' (Conv1d), unit 31")
