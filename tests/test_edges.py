"""Small edges a demanding user hits: a fractional size, a CLI piped into ``head``."""
import subprocess
import sys

import numpy as np
import pytest
import torch.nn as nn

import rfprobe


def test_a_fractional_input_size_is_refused_not_truncated():
    net = rfprobe.build("conv3")
    with pytest.raises(rfprobe.RFProbeError, match="input_shape=.*8.5"):
        rfprobe.probe(net, input_shape=(1, 8.5, 8))
    # a whole float is a size: the probe runs on 8x8 and agrees with the 3x3 kernel
    assert rfprobe.probe(net, input_shape=(1, 8.0, 8)).size == (3, 3)


@pytest.mark.parametrize("entry, broken", [("main", False), ("_main", True)])
def test_cli_piped_into_a_reader_that_leaves_early_is_not_an_error(entry, broken):
    """`rfprobe verify ... --json | head -1`: no BrokenPipeError traceback, exit 0. The inner
    ``_main`` (without the guard) shows the traceback, so the check can fail."""
    script = (f"import sys; from rfprobe.cli import {entry}; sys.exit({entry}(['verify', "
              "'conv3 relu conv3', '--json']))")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()          # the reader leaves before rfprobe prints anything
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=120)
    if broken:
        assert "BrokenPipeError" in err
    else:
        assert code == 0 and "Traceback" not in err and "BrokenPipeError" not in err, err


class _Windows(nn.Module):
    """Splits its map into 7x7 windows (as maxvit and Swin do): only multiples of 7 run."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        b, c, h, w = y.shape
        y = y.view(b, c, h // 7, 7, w // 7, 7)
        return y.permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w) + y.reshape(b, c, h, w)


def test_the_size_search_finds_a_size_the_model_can_split_into_windows(monkeypatch):
    """32, 64 and 128 fail with torch's reshape error (on meta: no real-valued retry); 224 is
    the first size tried that 7 divides. (The split into windows is followed; its reshape back
    without the permute interleaves the windows' rows with each other, which no per-axis map
    follows: reported global, a known over-statement, and the cause names the reshape.)"""
    copies = []
    real = rfprobe.trace.tracer.private_copy
    monkeypatch.setattr(rfprobe.trace.tracer, "private_copy", lambda m, device="meta": copies.append(str(device)) or real(m, device))
    a = rfprobe.analyze(_Windows())
    assert a.input_shape == (1, 224, 224)
    assert "cpu" not in copies      # torch's reshape error is a size error: no real-valued retry
    assert a.status == "global" and "reshape cuts the positions" in a.global_causes[0]


class _ReadsValues(nn.Module):
    """Reads a value (``.item()``), so it cannot be traced on meta tensors."""

    def __init__(self):
        super().__init__()
        self.convs = nn.Sequential(*[nn.Conv2d(8 if i else 1, 8, 3, padding=1) for i in range(6)])

    def forward(self, x):
        return self.convs(x) * (1.0 if x.mean().item() > -1 else 2.0)


def test_a_real_valued_trace_stops_before_it_exhausts_the_memory(monkeypatch):
    """The fallback trace keeps real tensors: above half the free memory it stops with a
    ResourceError naming input_shape, instead of swapping or being killed."""
    net = _ReadsValues()
    assert rfprobe.analyze(net, input_shape=(1, 64, 64)).size == (13, 13)   # it runs at all
    monkeypatch.setattr(rfprobe.trace.tracer, "available_bytes", lambda device: 2 * 2 ** 20)
    with pytest.raises(rfprobe.errors.ResourceError, match=r"shape \(1, 1, 512, 512\).*MiB.*input_shape="):
        rfprobe.analyze(net, input_shape=(1, 512, 512))


class _Transposed(nn.Module):
    """Adds its map to its own transpose, through the ``.mT`` property (a 1x3 kernel, so a
    swapped axis shows)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, (1, 3), padding=(0, 1))

    def forward(self, x):
        y = self.conv(x)
        return y + y.mT


class _Rotated3d(nn.Module):
    """Adds a 3D map to itself with its axes rotated (D, H, W) -> (H, W, D)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 1, (1, 3, 5), padding=(0, 1, 2))

    def forward(self, x):
        y = self.conv(x)
        return y + y.permute(0, 1, 3, 4, 2)


def test_a_transpose_through_the_mT_property_is_traced():
    """Unit (2, 9) reads the 1x3 window at row 2, columns 8-10 and, through ``.mT``, the one
    of y[9, 2]: row 9, columns 1-3. A property access is not a call: untraced, the second
    window was silently lost. The add pairs the map's axes with its transpose's, so no per-axis
    formula follows the unit: the RF varies with position, and the exact route gives both
    windows, as the probe does."""
    probe = rfprobe.probe(_Transposed(), input_shape=(1, 12, 12), unit=(2, 9))
    want = np.zeros((12, 12), bool)
    want[2, 8:11] = want[9, 1:4] = True
    assert (probe.mask == want).all()
    a = rfprobe.analyze(_Transposed(), input_shape=(1, 12, 12))
    assert a.status == "varies" and "transpose" in " ".join(r.why for r in a.layers)
    assert (a.region((2, 9), bounded=True).input_mask() == want).all()
    # along axis 0 (axis 1 at the centre, 6): unit (0, 6) reads row 0 and, transposed, row 6:
    # 7 rows; along axis 1: unit (6, 0) reads columns -1..1 and 5..7: 9 columns
    assert a.size == (7, 9) and a.size_min == (1, 3)
    assert rfprobe.verify(_Transposed(), input_shape=(1, 12, 12), unit=(2, 9)).ok


@pytest.mark.parametrize("unit", [(1, 4, 6), (5, 0, 2)])
def test_rotated_axes_in_3d_match_the_probe(unit):
    """The rotation's direction matters: the exact set must be the probe's, position for
    position (an inverted permutation would read the wrong axes)."""
    r = rfprobe.verify(_Rotated3d(), input_shape=(1, 8, 8, 8), unit=unit)
    assert r.ok, str(r)
    assert r.analysis.status == "varies"
