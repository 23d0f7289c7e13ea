"""The types that rfprobe's public signatures share: what a model, an input shape, a unit and
a device may be, written once.

>>> from rfprobe.hints import InputShape
>>> InputShape
typing.Optional[typing.Sequence[typing.Optional[int]]]
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

# a module, or a stack spec ("conv3 relu conv3", a list of tokens or of dicts)
ModelLike = Union[nn.Module, str, Sequence]
# (C, *spatial), no batch; None (or None entries) for sizes rfprobe chooses
InputShape = Optional[Sequence[Optional[int]]]
# one output position: one int per spatial axis (negative counts from the end), or one int
# for every axis; None for the centre unit
Unit = Optional[Union[int, Sequence[int]]]
# the output to measure: a module's or node's name ('layer3', 'features.16'), or the module
# object itself (one of the model's, found by identity); None for the model's output
Layer = Optional[Union[str, nn.Module]]
# where a gradient route runs: "cpu", "cuda", "cuda:1", "mps" or a torch.device that this torch
# can use here; None for the model's own
Device = Optional[Union[str, torch.device]]

# an expected RF size, stride or padding: one int for every axis, or one per axis
Expected = Optional[Union[int, Sequence[int]]]

__all__ = ["ModelLike", "InputShape", "Unit", "Layer", "Device", "Expected"]
