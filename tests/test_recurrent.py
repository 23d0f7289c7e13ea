"""Recurrent layers over a spatial axis (``rfprobe/ops/recurrent.py``): ``nn.LSTM``, ``nn.GRU``
and ``nn.RNN`` over time (Encodec's LSTM) and over the rows and columns of a map folded into the
batch (Sequencer's LSTM2d), each checked against the perturbation oracle (``tests/oracle.py``,
which shares no code with rfprobe) in its ``steps`` mode: float64, signed weights, every input
position moved alone by small signed steps, which the gates cannot hide (a huge value saturates
them), and by verify (the probe runs the records' gate-free surrogate).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import rfprobe
from rfprobe.ops import Call, OPS
from tests.oracle import each_position

RNNS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN,
        "rnn_relu": lambda *a, **k: nn.RNN(*a, nonlinearity="relu", **k)}


def _oracle(net, shape, unit) -> np.ndarray:
    """The input positions whose small signed steps move any channel of ``unit``."""
    def at(y, batched):
        return y[(slice(None), slice(None)) + unit] if batched else y[(0, slice(None)) + unit]
    return each_position(net, shape, at, mode="steps").mask


def _agrees(net, shape, units) -> rfprobe.Analysis:
    """rfprobe's bounded set equals the oracle's at each unit, and verify passes there."""
    a = rfprobe.analyze(net, shape)
    for u in units:
        mine = a.region(u, bounded=True).input_mask()
        theirs = _oracle(net, shape, u)
        assert (mine == theirs).all(), (u, np.argwhere(mine).tolist(), np.argwhere(theirs).tolist())
        r = rfprobe.verify(net, shape, unit=u)
        assert r.ok, str(r)
    return a


class OverTime(nn.Module):
    """Encodec's SLSTM: a conv over time, then an LSTM over the time steps with a skip. The
    (N, C, L) map is permuted to (L, N, C), or to (N, L, C) for ``batch_first``."""

    def __init__(self, rnn="lstm", batch_first=False, **kw):
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3, padding=1)
        self.rnn = RNNS[rnn](4, 4, batch_first=batch_first, **kw)
        self.batch_first = batch_first

    def forward(self, x):
        y = self.conv(x)
        seq = y.permute(0, 2, 1) if self.batch_first else y.permute(2, 0, 1)
        out, _ = self.rnn(seq)
        out = out.sum(-1, keepdim=True) + seq       # the skip; any hidden size, any directions
        return out.permute(0, 2, 1) if self.batch_first else out.permute(1, 2, 0)


@pytest.mark.parametrize("rnn, batch_first, kw", [
    ("lstm", False, {"num_layers": 2}),
    ("lstm", True, {"proj_size": 3}),
    ("gru", True, {}),
    ("rnn_tanh", False, {"num_layers": 3}),
    ("rnn_relu", True, {}),
])
def test_a_one_directional_layer_over_time_reads_the_prefix(rnn, batch_first, kw):
    """Output j reads the conv's outputs 0..j, however many layers are stacked: input positions
    0..j+1 (a 3-tap conv with padding 1)."""
    a = _agrees(OverTime(rnn, batch_first, **kw), (2, 9), [(0,), (1,), (4,), (8,)])
    assert a.status == "varies"
    assert a.region((4,), bounded=True).box == ((0, 5),)


@pytest.mark.parametrize("rnn, kw", [("lstm", {"num_layers": 2}), ("gru", {})])
def test_a_bidirectional_layer_over_the_only_axis_reads_everything(rnn, kw):
    a = _agrees(OverTime(rnn, bidirectional=True, **kw), (2, 7), [(0,), (3,)])
    assert a.status == "global" and any("bidirectional" in c for c in a.global_causes), a.global_causes


class LSTM2d(nn.Module):
    """timm's Sequencer LSTM2d on a (N, C, H, W) map after a 3x3 conv: the columns folded into
    the batch run through one recurrent layer along H, the rows through another along W, and a
    Linear mixes the two results' channels. Four hidden units: with two, the oracle's signed
    weights left both ReLUs of an ``rnn_relu`` off along part of a row, and it missed positions."""

    def __init__(self, rnn="lstm", bidirectional=True, c=3, hidden=4):
        super().__init__()
        self.conv = nn.Conv2d(1, c, 3, padding=1)
        self.rnn_v = RNNS[rnn](c, hidden, batch_first=True, bidirectional=bidirectional)
        self.rnn_h = RNNS[rnn](c, hidden, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(2 * hidden * (2 if bidirectional else 1), c)

    def forward(self, x):
        x = self.conv(x).permute(0, 2, 3, 1)
        B, H, W, C = x.shape
        v = x.permute(0, 2, 1, 3).reshape(-1, H, C)
        v, _ = self.rnn_v(v)
        v = v.reshape(B, W, H, -1).permute(0, 2, 1, 3)
        h, _ = self.rnn_h(x.reshape(-1, W, C))
        h = h.reshape(B, H, W, -1)
        return self.fc(torch.cat([v, h], dim=-1)).permute(0, 3, 1, 2)


@pytest.mark.parametrize("rnn", sorted(RNNS))
@pytest.mark.parametrize("bidirectional", [True, False])
def test_rows_and_columns_folded_into_the_batch(rnn, bidirectional):
    """Unit (i, j) reads its row and its column of the conv's output: whole ones when the
    layers are bidirectional, the prefixes 0..j and 0..i when not (a cross, dilated by the conv);
    the axis folded into the batch keeps its index."""
    a = _agrees(LSTM2d(rnn, bidirectional), (1, 5, 6), [(0, 0), (2, 3), (4, 5)])
    assert a.status == "varies"
    region = a.region((2, 3), bounded=True)
    last = (4, 5) if bidirectional else (3, 4)
    assert region.box == ((0, last[0]), (0, last[1]))
    assert not region.input_mask()[0, 0]        # outside the cross: another row and column


class RowsFromTheirMean(nn.Module):
    """A GRU along each row that starts from the row's mean: its initial state is computed from
    the input and keeps the rows in its batch dim, so unit (i, j) reads the whole of row i."""

    def __init__(self, c=3):
        super().__init__()
        self.conv = nn.Conv2d(1, c, (1, 3), padding=(0, 1))
        self.rnn = nn.GRU(c, c, batch_first=True)

    def forward(self, x):
        rows = self.conv(x).permute(0, 2, 3, 1).flatten(0, 1)       # (H, W, C)
        h0 = rows.mean(1, keepdim=True).transpose(0, 1)             # (1, H, C)
        out, _ = self.rnn(rows, h0.contiguous())
        return out.unsqueeze(0).permute(0, 3, 1, 2)


def test_an_initial_state_computed_from_the_input_is_read_at_its_batch_index():
    a = _agrees(RowsFromTheirMean(), (1, 4, 5), [(0, 0), (2, 1), (3, 4)])
    assert a.region((2, 1), bounded=True).box == ((2, 2), (0, 4))


class OverChannels(nn.Module):
    """An LSTM whose sequence is the channels: the positions sit in its batch dim, so its output
    and its final state each read their own position of the conv's output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 3, 3)
        self.rnn = nn.LSTM(1, 2, batch_first=True)

    def forward(self, x):
        y = self.conv(x).permute(2, 1, 0)                            # (L, C, 1)
        out, (h, _) = self.rnn(y)                                   # (L, C, 2), (1, L, 2)
        return torch.cat([out.flatten(1).t().unsqueeze(0), h.permute(0, 2, 1)], 1)


def test_a_layer_over_channels_keeps_each_position():
    a = _agrees(OverChannels(), (1, 8), [(0,), (3,), (5,)])
    assert a.status == "ok" and a.size == (3,)


class FinalStateGate(nn.Module):
    """An LSTM over time whose final state gates every step: h_n read all of the sequence."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 3, 3)
        self.rnn = nn.LSTM(3, 3)

    def forward(self, x):
        seq = self.conv(x).permute(2, 0, 1)
        out, (h, c) = self.rnn(seq)
        return (out * h[-1] + c[-1]).permute(1, 2, 0)


def test_the_final_state_over_a_spatial_axis_is_global_and_named():
    a = _agrees(FinalStateGate(), (1, 7), [(0,), (4,)])
    assert a.status == "global" and any("final state" in c for c in a.global_causes), a.global_causes


def test_a_long_sequence_is_seen_whole_by_the_probe():
    """Through the LSTM itself the structural probe's gradient vanished after about a dozen
    steps (at 40 it saw 24..36 of 0..36), as the positive weights saturate the gates; the
    records' surrogate, a gate-free linear scan, passes the whole prefix."""
    r = rfprobe.verify(OverTime("lstm", num_layers=2), (2, 64), unit=(50,))
    assert r.ok and r.probe_box == r.exact_clipped_box == ((0, 51),), str(r)


def test_a_packed_sequence_is_refused_by_name():
    """``pack_padded_sequence`` hands the layer the packed form, ``lstm(data, batch_sizes, hx,
    params, ...)``: its positions are interleaved by length, which no per-axis map follows."""
    data, sizes = torch.empty(6, 3), torch.tensor([2, 2, 1, 1])
    hx = (torch.empty(1, 2, 4), torch.empty(1, 2, 4))
    call = Call("lstm", (data, sizes, hx, [], True, 1, 0.0, False, False), {}, (0,), (data, sizes, *hx),
                ((-2,), None, None, None), (6, 4), 1)
    with pytest.raises(rfprobe.UnknownOpError, match="lstm over a packed sequence"):
        OPS["lstm"].layout_rule(call)
    assert OPS["lstm"].surrogate(torch.lstm, call.args, {})[0] is torch.lstm


@pytest.mark.slow
def test_encodecs_lstm_over_time():
    """transformers' EncodecModel encoder (random weights, no download): its LSTM layer runs over
    the frames of a (L, N, C) sequence with a skip, and was refused. A unit reads from the first
    sample on, and the probe agrees with the exact route."""
    transformers = pytest.importorskip("transformers")
    encoder = transformers.EncodecModel(transformers.EncodecConfig()).encoder.eval()
    lstm = next(i for i, layer in enumerate(encoder.layers)
                if isinstance(layer, transformers.models.encodec.modeling_encodec.EncodecLSTM))
    r = rfprobe.verify(encoder, (1, 4800), layer=f"layers.{lstm}", unit=(10,))
    assert r.ok and r.probe_box == r.exact_clipped_box and r.probe_box[0][0] == 0, str(r)
    conv = rfprobe.analyze(encoder, (1, 4800), layer=f"layers.{lstm - 1}").region((10,), bounded=True)
    assert r.exact_clipped_box[0][1] == conv.box[0][1]       # the prefix ends where the frame's own input does
