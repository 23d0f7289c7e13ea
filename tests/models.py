"""Small models the tests share, and the tests' own op without a rule."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
from torch.overrides import wrap_torch_function


@wrap_torch_function(lambda x, dim: (x,))
def rfprobe_test_op(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The op the tests of unknown ops and of user rules call, and the worked example of
    docs/design.md (section 9): a running log-sum-exp along ``dim`` (``torch.logcumsumexp``
    behind a name of its own), so output ``j`` along ``dim`` reads inputs ``0..j`` and every
    other position its own (by hand). It dispatches through ``__torch_function__``, so
    rfprobe's tracer sees it by its ``__name__``, from the caller's line; no torch version will
    add an op of that name, so rfprobe never has a record for it, and a test that needs an op
    without one needs no block that hides a record. (A record for it would make those tests
    fail, loudly: ``tests/test_ops.py`` checks there is none.)

    >>> rfprobe_test_op(torch.zeros(1, 3), 1).exp().tolist()     # e^0 summed over 1, 2, 3 entries
    [[1.0, 2.0, 3.0]]
    """
    return torch.logcumsumexp(x, dim)


# the name rfprobe's errors and register_rule use for it
UNKNOWN_OP = rfprobe_test_op.__name__


class ConvThen(nn.Module):
    """A 3x3 conv (``cin`` -> ``cout`` channels) and then ``tail``, any function of its output:
    the shape of most one-op test models (a known 3x3 RF, then the op under test)."""

    def __init__(self, tail: Callable[[torch.Tensor], torch.Tensor], cin: int = 1, cout: int = 1, k: int = 3):
        super().__init__()
        self.c = nn.Conv2d(cin, cout, k)
        self.tail = tail

    def forward(self, x):
        return self.tail(self.c(x))


class SpaceToDepthStem(nn.Module):
    """A PixelUnshuffle(4) in the model's own code before its first conv (Conv2d(48, ...)):
    the conv's 48 input channels are 3 of the model's."""

    def __init__(self):
        super().__init__()
        self.pu = nn.PixelUnshuffle(4)
        self.conv = nn.Conv2d(48, 8, 3)

    def forward(self, x):
        return self.conv(self.pu(x))


def usable_device(device: str) -> bool:
    """Whether this torch can put a tensor on ``device`` here (plain torch, not rfprobe)."""
    try:
        torch.empty(0, device=device)
    except Exception:
        return False
    return True


class MeanGate(nn.Module):
    """A conv times its own spatial mean (a squeeze-excitation gate without its MLP): every
    output reads every input position, so its RF is global."""

    def __init__(self, channels: int = 1):
        super().__init__()
        self.c = nn.Conv2d(channels, channels, 3)

    def forward(self, x):
        y = self.c(x)
        return y * y.mean((2, 3), keepdim=True)
