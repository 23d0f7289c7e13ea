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
    the first size tried that 7 divides. (Splitting an axis into windows is reported global,
    a known over-statement, and the cause says so.)"""
    copies = []
    real = rfprobe.graph.private_copy
    monkeypatch.setattr(rfprobe.graph, "private_copy", lambda m, device="meta": copies.append(str(device)) or real(m, device))
    a = rfprobe.analyze(_Windows())
    assert a.input_shape == (1, 224, 224)
    assert "cpu" not in copies      # torch's reshape error is a size error: no real-valued retry
    assert a.status == "global" and "view" in a.global_causes[0]


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
    monkeypatch.setattr(rfprobe.graph, "available_bytes", lambda device: 2 * 2 ** 20)
    with pytest.raises(rfprobe.errors.ResourceError, match=r"shape \(1, 1, 512, 512\).*MiB.*input_shape="):
        rfprobe.analyze(net, input_shape=(1, 512, 512))


class _Transposed(nn.Module):
    """Adds its map to its own transpose, through the ``.mT`` property."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y + y.mT


def test_a_transpose_through_the_mT_property_is_traced():
    """Unit (2, 9) reads the conv window at (2, 9) and, through ``.mT``, the one at (9, 2) (the
    probe sees both). A property access is not a call: untraced, the second window was silently
    lost. Traced, the add of a map and its transpose pairs different axes, which the per-axis
    rules cannot say, so the RF is reported global with that cause: an over-statement made
    visibly, never a smaller set."""
    probe = rfprobe.probe(_Transposed(), input_shape=(1, 12, 12), unit=(2, 9))
    want = np.zeros((12, 12), bool)
    want[1:4, 8:11] = want[8:11, 1:4] = True
    assert (probe.mask == want).all()
    a = rfprobe.analyze(_Transposed(), input_shape=(1, 12, 12))
    assert a.status == "global"
    assert any("transpose" in c or "different dims" in c for c in a.global_causes), a.global_causes
