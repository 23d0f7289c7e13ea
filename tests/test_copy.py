"""The private meta copy every trace runs on: built module by module (``deepcopy`` cost a third
of a densenet121 forward), it must be what ``copy.deepcopy`` would give, on meta, and share
nothing the model's forward could change with the user's object."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import rfprobe
from rfprobe.trace import private_copy


def _describe(model: nn.Module) -> list:
    """Everything a trace can see of a module tree, except tensor values and identity."""
    rows = []
    for name, m in model.named_modules():
        attrs = {k: v for k, v in vars(m).items() if k not in ("_parameters", "_buffers", "_modules")
                 and not k.endswith("hooks") and not k.endswith("hooks_with_kwargs")
                 and not k.endswith("always_called") and not isinstance(v, torch.Tensor)}
        tensors = {k: (tuple(t.shape), t.dtype, t.stride(), type(t).__name__, t.requires_grad)
                   for k, t in list(m._parameters.items()) + list(m._buffers.items()) if t is not None}
        rows.append((name, type(m), attrs, tensors))
    return rows


class _Counter(nn.Module):
    """Appends to a list and a dict attribute in forward: a shared container would leak."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3)
        self.seen: list = []
        self.stats = {"calls": 0}
        self.mask = torch.ones(1)            # a plain tensor attribute, not a buffer

    def forward(self, x):
        self.seen.append(tuple(x.shape))
        self.stats["calls"] += 1
        return self.conv(x) * self.mask


class _Custom(nn.Module):
    """A module with its own ``__deepcopy__``: the copy must go through it."""

    copies = 0

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3)

    def __deepcopy__(self, memo):
        type(self).copies += 1
        new = _Custom.__new__(_Custom)
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    def forward(self, x):
        return self.conv(x)


def test_meta_copy_is_what_deepcopy_gives_on_meta():
    tv = pytest.importorskip("torchvision.models")
    for model in (tv.resnet18().eval(), tv.mobilenet_v3_small().eval(), _Counter(),
                  nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).to(memory_format=torch.channels_last)):
        twin = private_copy(model)
        assert _describe(twin) == _describe(copy.deepcopy(model))
        assert all(t.is_meta for t in list(twin.parameters()) + list(twin.buffers()))
        assert not set(map(id, twin.modules())) & set(map(id, model.modules()))


def test_tied_weights_stay_tied():
    a = nn.Conv2d(2, 2, 3)
    b = nn.Conv2d(2, 2, 3)
    b.weight = a.weight
    twin = private_copy(nn.Sequential(a, b, a))
    assert twin[0].weight is twin[1].weight
    assert twin[0] is twin[2]


def test_a_forward_that_changes_its_own_attributes_leaves_the_users_alone():
    model = _Counter()
    rfprobe.analyze(model, input_shape=(1, 16, 16))
    rfprobe.probe(model, input_shape=(1, 16, 16))
    assert model.seen == [] and model.stats == {"calls": 0}
    assert model.mask.device.type == "cpu"


def test_a_module_with_its_own_deepcopy_is_copied_by_it():
    before = _Custom.copies
    model = nn.Sequential(_Custom(), nn.ReLU())
    twin = private_copy(model)
    assert _Custom.copies == before + 1
    assert twin[0].conv.weight.is_meta and not model[0].conv.weight.is_meta
    assert rfprobe.analyze(model, input_shape=(1, 9, 9)).size == (3, 3)
