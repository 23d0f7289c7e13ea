"""The types that rfprobe's public signatures share: what a model, an input shape, a unit and
a device may be, and the words each string option takes, written once.

The string options are ``Literal`` types, so an IDE completes them and a type checker catches
a typo (``mode="structual"``); the values stay plain strings. The tuples beside them
(``MODES``, ``STATISTICS``...) are the same words for the checks that run, read from the
``Literal`` itself, so the two cannot drift apart.

>>> from rfprobe.hints import InputShape, MODES, STATUSES
>>> InputShape
typing.Optional[typing.Sequence[typing.Optional[int]]]
>>> MODES, STATUSES
(('structural', 'actual'), ('ok', 'varies', 'global'))
"""
from __future__ import annotations

from typing import Literal, Optional, Sequence, Union, get_args

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

# the gradient probe's mode: "structural" (what the architecture can see: positive weights, a
# max pool passing gradient to its whole window) or "actual" (the model's weights and an input)
Mode = Literal["structural", "actual"]
# what erf averages: "abs" (mean |gradient|) or "sq" (mean squared gradient)
Statistic = Literal["abs", "sq"]
# what kind of RF an Analysis found: "ok" (one closed form), "varies" (the RF depends on the
# unit's position) or "global" (an op couples every position)
Status = Literal["ok", "varies", "global"]
# a row of the per-layer table (and a node's closed form) may also read no input position
LayerStatus = Literal["ok", "varies", "global", "constant"]
# an op record's role in the trace (rfprobe.ops.maps says what each means)
OpKind = Literal["value", "layout", "index", "write", "reduction", "query"]

# the same words, for the checks that run
MODES: tuple[Mode, ...] = get_args(Mode)
STATISTICS: tuple[Statistic, ...] = get_args(Statistic)
STATUSES: tuple[Status, ...] = get_args(Status)
LAYER_STATUSES: tuple[LayerStatus, ...] = get_args(LayerStatus)
OP_KINDS: tuple[OpKind, ...] = get_args(OpKind)

__all__ = ["ModelLike", "InputShape", "Unit", "Layer", "Device", "Expected", "Mode", "Statistic", "Status",
           "LayerStatus", "OpKind", "MODES", "STATISTICS", "STATUSES", "LAYER_STATUSES", "OP_KINDS"]
