"""Causal temporal convolutional networks (Bai, Kolter & Koltun 2018, "An Empirical Evaluation
of Generic Convolutional and Recurrent Networks for Sequence Modeling"): stacks of dilated
causal Conv1d with residual adds. Their paths are aligned by construction (every path ends at
the unit's own time step), so no "paths are not aligned" note; a chomp on the wrong end is
misaligned and is reported.

By hand: a block of two convs of kernel k and dilation d reads 2*(k-1)*d steps back, so unit
t of a stack of blocks with dilations d_1..d_n reads [t - sum 2*(k-1)*d_b, t] (clipped at 0).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

import rfprobe
from tests.oracle import perturbation_rf


class Chomp1d(nn.Module):
    """The reference code's crop of the right end: ``padding`` on both sides, then the last
    ``chomp`` steps dropped, leaves a causal conv."""

    def __init__(self, chomp, left=False):
        super().__init__()
        self.chomp, self.left = chomp, left

    def forward(self, x):
        return (x[:, :, self.chomp:] if self.left else x[:, :, :-self.chomp]).contiguous()


class TemporalBlock(nn.Module):
    """The reference code's block: (weight-normed conv, chomp, ReLU, dropout) twice, plus the
    input (through a 1x1 conv where the channels change), then a ReLU."""

    def __init__(self, cin, cout, k, d, dropout=0.2, wrong_end=False):
        super().__init__()
        p = (k - 1) * d
        self.conv1 = weight_norm(nn.Conv1d(cin, cout, k, padding=p, dilation=d))
        self.chomp1, self.relu1, self.dropout1 = Chomp1d(p, wrong_end), nn.ReLU(), nn.Dropout(dropout)
        self.conv2 = weight_norm(nn.Conv1d(cout, cout, k, padding=p, dilation=d))
        self.chomp2, self.relu2, self.dropout2 = Chomp1d(p, wrong_end), nn.ReLU(), nn.Dropout(dropout)
        self.net = nn.Sequential(self.conv1, self.chomp1, self.relu1, self.dropout1,
                                 self.conv2, self.chomp2, self.relu2, self.dropout2)
        self.downsample = nn.Conv1d(cin, cout, 1) if cin != cout else None
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.net(x)
        res = x if self.downsample is None else self.downsample(x)
        return self.relu(out + res)


class TemporalConvNet(nn.Module):
    """The reference TemporalConvNet: block i has dilation 2**i."""

    def __init__(self, cin, channels, k=2, **kw):
        super().__init__()
        self.network = nn.Sequential(*[TemporalBlock(cin if i == 0 else channels[i - 1], c, k, 2 ** i, **kw)
                                       for i, c in enumerate(channels)])

    def forward(self, x):
        return self.network(x)


class PaddedBlock(nn.Module):
    """The same block written with F.pad on the left (no chomp), shortcut as is."""

    def __init__(self, c, k, d):
        super().__init__()
        self.left = (k - 1) * d
        self.conv1 = nn.Conv1d(c, c, k, dilation=d)
        self.conv2 = nn.Conv1d(c, c, k, dilation=d)

    def forward(self, x):
        y = F.relu(self.conv1(F.pad(x, (self.left, 0))))
        return F.relu(self.conv2(F.pad(y, (self.left, 0))) + x)


def _by_hand(k, dilations):
    return 1 + sum(2 * (k - 1) * d for d in dilations)


@pytest.mark.parametrize("k, channels", [(2, [3, 3, 4, 4]), (3, [2, 3, 3])])
def test_reference_tcn_is_aligned_exact_and_matches_the_oracle(k, channels):
    net = TemporalConvNet(2, channels, k=k).eval()
    rf = _by_hand(k, [2 ** i for i in range(len(channels))])      # k=2: 1+2*15 = 31; k=3: 1+4*7 = 29
    length, t = 48, 40
    r = rfprobe.verify(net, (2, length), unit=(t,))
    assert r.ok and r.analysis.status == "ok", str(r)
    assert r.size == (rf,) and r.stride == (1,) and r.padding == (rf - 1,)
    assert r.exact_box == r.closed_box == ((t - rf + 1, t),)
    assert not any("not aligned" in n for n in r.analysis.notes + r.diagnoses), r.diagnoses
    assert not any(d.startswith("holes") for d in r.diagnoses), r.diagnoses      # no holes: dilation 1 first
    o = perturbation_rf(net, (2, length), (t,))
    assert o.box == ((t - rf + 1, t),) and o.mask.sum() == rf
    assert (o.mask == r.probe.mask).all()
    # a unit near the start: the same box, clipped at step 0
    early = rfprobe.verify(net, (2, length), unit=(5,))
    assert early.ok and early.exact_clipped_box == ((0, 5),) == perturbation_rf(net, (2, length), (5,)).box


def test_left_padded_tcn_is_aligned():
    """F.pad on the left instead of a chomp: dilations 1, 2, 4 and k=3, RF 1+4*7 = 29."""
    net = nn.Sequential(*[PaddedBlock(2, 3, d) for d in (1, 2, 4)])
    r = rfprobe.verify(net, (2, 40), unit=(35,))
    assert r.ok and r.size == (_by_hand(3, (1, 2, 4)),) and r.exact_box == ((7, 35),), str(r)
    assert not any("not aligned" in d for d in r.diagnoses), r.diagnoses
    assert perturbation_rf(net, (2, 40), (35,)).box == ((7, 35),)


def test_a_chomp_on_the_wrong_end_is_not_aligned():
    """Chomping the left end makes each conv read ahead ([t, t+(k-1)d]) while the shortcut
    reads t: the paths share their first index only, a real misalignment (the output at t
    mixes the future into step t), and the note names the add's paths."""
    net = TemporalConvNet(2, [3, 3], k=3, wrong_end=True).eval()
    r = rfprobe.verify(net, (2, 32), unit=(10,))
    assert r.ok and r.exact_box == ((10, 10 + 2 * 2 * (1 + 2)),), str(r)
    assert perturbation_rf(net, (2, 32), (10,)).box == r.exact_box
    notes = [n for n in r.analysis.notes if "not aligned" in n]
    assert len(notes) == 2 and "network.0:add#0" in notes[0] and "network.0.downsample" in notes[0], notes
    assert any("not aligned" in d for d in r.diagnoses)


def test_a_causal_dilated_branch_with_holes_is_aligned_and_says_holes():
    """A causal conv of kernel 2 and dilation 3 beside its shortcut reads {t-3, t}: aligned
    (one last index), but the box has holes, which verify reports as holes."""
    class Gapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv1d(1, 1, 2, dilation=3)

        def forward(self, x):
            return self.c(F.pad(x, (3, 0))) + x

    r = rfprobe.verify(Gapped(), (1, 16), unit=(9,))
    assert r.ok and r.exact_box == ((6, 9),), str(r)
    assert np.flatnonzero(r.probe.mask).tolist() == [6, 9]
    assert not any("not aligned" in d for d in r.diagnoses)
    assert any(d.startswith("holes") for d in r.diagnoses), r.diagnoses
