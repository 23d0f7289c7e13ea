"""Small models the tests share, and the tests' own op without a rule."""
from __future__ import annotations

from typing import Callable, ContextManager

import torch
import torch.nn as nn

import rfprobe
from rfprobe.ops import Rule, removed_records

# The op the tests of unknown ops and of user rules call (torch.logcumsumexp, a running
# log-sum-exp: output j along its axis reads inputs 0..j). rfprobe ships no record for it today,
# but a test never relies on that: it runs the part that needs the op unknown inside
# ``unknown_op()``, so the suite stays right once the op gets a record (docs/design.md, section 9).
UNKNOWN_OP = "logcumsumexp"


def unknown_op() -> ContextManager[None]:
    """``with unknown_op():`` the block runs as if rfprobe had no record for :data:`UNKNOWN_OP`."""
    return removed_records(UNKNOWN_OP)


def rule_for_unknown_op(rule: Rule | str) -> ContextManager[None]:
    """``rfprobe.registered_rule(UNKNOWN_OP, rule)`` for the block: the user's rule, whatever rfprobe
    ships for the op (``override=True`` because removing a record for a test does not make
    register_rule forget that rfprobe has one; without one, it changes nothing)."""
    return rfprobe.registered_rule(UNKNOWN_OP, rule, override=True)


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
