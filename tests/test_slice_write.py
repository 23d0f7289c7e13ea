"""Writes into a spatial slice of every channel (``y[:, :, :2] = 0``, ``y[:, :, 2:5] +=
z[:, :, 2:5]``): a position inside the slice reads what was written, one outside it keeps what
it read. Each model is conv, write, conv; the exact bounded region of units inside, across and
outside the slice must equal the perturbation oracle's mask (``tests/oracle.py``, which shares
no code with rfprobe), and ``verify`` (the exact route against the gradient probe) must agree.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn

import rfprobe
from rfprobe.errors import UnknownOpError
from tests.oracle import perturbation_rf


class SliceWrite(nn.Module):
    """conv3 of x (y), a dilated conv3 of x (z: taps -3, 0, 3, none of y's -1 or 1), a write
    into y that ``write(self, y, z)`` makes, conv3. z reads x, not y: a write into y after a conv
    of y would break that conv's backward."""

    def __init__(self, write, dims=2):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        self.a, self.c = conv(1, 2, 3, padding=1), conv(2, 1, 3, padding=1)
        self.b = conv(1, 2, 3, padding=3, dilation=3)
        self.register_buffer("const", torch.full((2, 3) + (1,) * (dims - 1), 0.5))
        self.write = write

    def forward(self, x):
        y = self.a(x)
        z = self.b(x)
        self.write(self, y, z)
        return self.c(y)


def zero_rows(m, y, z):
    y[:, :, :2] = 0


def zero_last(m, y, z):
    y[..., -3:] = 0.0


def zero_one_row(m, y, z):
    y[:, :, -2] = 0.0                    # an int: one row


def add_rows(m, y, z):
    y[:, :, 2:5] += z[:, :, 2:5]


def add_every_other(m, y, z):
    y[:, :, 1:7:2] += z[:, :, 1:7:2]


def assign_rows(m, y, z):
    y[:, :, 3:6] = z[:, :, 3:6]


def assign_shifted(m, y, z):
    y[:, :, 4:7] = z[:, :, 0:3]           # the written rows read other rows of z


def assign_constant(m, y, z):
    y[:, :, 5:8] = m.const                # a buffer: reads no input position


def assign_made_constant(m, y, z):
    y[:, :, :3] = torch.ones_like(z[:, :, :3])


def zero_view(m, y, z):
    y[:, :, 2:4].zero_()                   # an in-place op on the view writes back into y


def copy_view(m, y, z):
    y[:, :, 5:8].copy_(z[:, :, :3])


def zero_block(m, y, z):
    y[:, :, 2:5, 1:6] = 0                 # outside a block: a union of two products


def add_block(m, y, z):
    y[:, :, 1:7:2, -3:] += z[:, :, 1:7:2, -3:]


def assign_block(m, y, z):
    y[:, :, -4:-1, 2::3] = z[:, :, :3, 1:9:3]


WRITES_1D = [zero_rows, zero_last, zero_one_row, add_rows, add_every_other, assign_rows, assign_shifted,
             assign_constant, assign_made_constant, zero_view, copy_view]
WRITES_2D = WRITES_1D + [zero_block, add_block, assign_block]


def _agrees(model, shape, unit):
    """The exact bounded region of ``unit`` is the oracle's mask, and verify agrees."""
    a = rfprobe.analyze(model, input_shape=shape)
    want = perturbation_rf(model, shape, unit, seeds=(0,)).mask
    got = a.region(unit, bounded=True).input_mask()
    assert np.array_equal(got, want), (unit, np.argwhere(got != want).tolist())
    if want.any():            # verify's probe needs a unit that reads something
        r = rfprobe.verify(model, input_shape=shape, unit=unit)
        assert r.ok, str(r)


@pytest.mark.parametrize("write", WRITES_1D, ids=lambda w: w.__name__)
def test_a_write_into_a_slice_of_a_1d_map_is_followed(write):
    model = SliceWrite(write, dims=1).eval()
    for u in (0, 1, 2, 3, 4, 5, 6, 7, 8, 11):
        _agrees(model, (1, 12), (u,))


@pytest.mark.parametrize("write", WRITES_2D, ids=lambda w: w.__name__)
def test_a_write_into_a_slice_of_a_2d_map_is_followed(write):
    model = SliceWrite(write, dims=2).eval()
    for u in ((0, 0), (1, 3), (2, 5), (3, 0), (4, 7), (5, 6), (6, 2), (7, 4), (9, 9)):
        _agrees(model, (1, 10, 10), u)


def test_a_write_into_a_slice_is_position_dependent_in_the_closed_form():
    """No one box fits every unit: the closed form says ``varies`` and gives no size."""
    a = rfprobe.analyze(SliceWrite(zero_block).eval(), input_shape=(1, 10, 10))
    assert a.status == "varies"
    row = next(r for r in a.layers if r.op == "__setitem__")
    assert row.status == "varies" and row.size is None
    # the maps of both deps on y pickle with the result, and answer as before
    again = pickle.loads(pickle.dumps(a))
    assert again.region((3, 4), bounded=True) == a.region((3, 4), bounded=True)


def add_channels(m, y, z):
    y[:, :1] += z[:, :1]


def assign_channels(m, y, z):
    y[:, 1:] = z[:, 1:]


@pytest.mark.parametrize("write", [add_channels, assign_channels], ids=lambda w: w.__name__)
def test_a_write_into_some_channels_of_the_whole_map_keeps_the_closed_form(write):
    """Every position reads the old y (the other channels) and z alike: the closed form holds,
    its box for an inner unit the oracle's (conv3 + conv3 beside a dilated conv3 + conv3)."""
    model = SliceWrite(write).eval()
    a = rfprobe.analyze(model, input_shape=(1, 12, 12))
    assert a.status == "ok" and a.stride == (1, 1)
    for u in ((5, 5), (4, 7)):
        want = perturbation_rf(model, (1, 12, 12), u, seeds=(0,)).box
        assert tuple((i - p, i - p + r - 1) for i, r, p in zip(u, a.size, a.padding)) == want
        _agrees(model, (1, 12, 12), u)


def test_a_traced_value_written_at_an_int_index_of_a_spatial_axis_is_refused():
    """The value has no dim for that axis: the rule does not say which of its positions it holds
    (``z[:, :, 5]`` itself is refused by ``__getitem__``, hence the squeeze)."""
    def write(m, y, z):
        y[:, :, 3] = z[:, :, 5:6].squeeze(2)
    with pytest.raises(UnknownOpError, match="__setitem__.*int index on a spatial axis"):
        rfprobe.analyze(SliceWrite(write), input_shape=(1, 10, 10))
