"""Small models the tests share."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn


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
