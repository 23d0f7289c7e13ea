"""The same job done by the best alternatives, for answers and times beside rfprobe's.

* ``jotaf98_style``: the gradient probe as popular scripts do it (re-implemented here from the
  description, not copied): the model's own float32 weights, an input of ones, a forward hook
  on the layer, one forward for the output shape, then one forward+backward from the centre
  unit and one from its neighbour (three passes); the RF is the box of nonzero gradient, the
  stride the shift between the two boxes. Max-pool routes gradient to one element and ReLUs
  close where the trained (here: initial) weights make them negative, so it can miss parts.
* ``shelfwise``: the ``receptivefield`` package from PyPI (0.5.0, installed with --no-deps only
  for the bench: it is not a dependency of rfprobe), driven as its README says: a module that
  keeps its feature maps in ``self.feature_maps``; it probes a zero input with the model's own
  weights (four passes).
Both need the whole input at once (no slab mode); 2D only for shelfwise.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn


def _target_module(model: nn.Module, layer: str | None) -> nn.Module:
    return model if layer is None else dict(model.named_modules())[layer]


def jotaf98_style(model: nn.Module, layer: str | None, shape: tuple[int, ...]):
    """(size per axis, stride per axis) from three float32 passes with hooks; None where the
    gradient is empty."""
    grabbed = {}
    handle = _target_module(model, layer).register_forward_hook(lambda m, i, o: grabbed.__setitem__("y", o))
    try:
        with torch.no_grad():
            model(torch.ones((1, *shape)))                       # pass 1: the output's shape
        spatial = grabbed["y"].shape[2:]
        centre = tuple(n // 2 for n in spatial)
        boxes = []
        for unit in (centre, tuple(min(c + 1, n - 1) for c, n in zip(centre, spatial))):
            x = torch.ones((1, *shape), requires_grad=True)      # passes 2 and 3
            model(x)
            y = grabbed["y"]
            seed = torch.zeros_like(y)
            seed[(0, slice(None)) + unit] = 1.0
            (g,) = torch.autograd.grad(y, x, seed)
            nz = g[0].abs().sum(0) != 0
            box = []
            for a in range(nz.dim()):
                proj = nz.any(dim=tuple(b for b in range(nz.dim()) if b != a)) if nz.dim() > 1 else nz
                idx = torch.nonzero(proj).flatten()
                box.append((int(idx[0]), int(idx[-1])) if len(idx) else None)
            boxes.append(box)
    finally:
        handle.remove()
    size = tuple(None if b is None else b[1] - b[0] + 1 for b in boxes[0])
    stride = tuple(None if (a is None or b is None) else b[0] - a[0] for a, b in zip(*boxes))
    return size, stride


class _FeatureMaps(nn.Module):
    def __init__(self, model: nn.Module, layer: str | None):
        super().__init__()
        self.model = model
        self.target = _target_module(model, layer)
        self.feature_maps = []
        self.target.register_forward_hook(self._keep)

    def _keep(self, m, i, o):
        self.feature_maps = [o]

    def forward(self, x):
        self.feature_maps = []
        self.model(x)
        return self.feature_maps[0]


def shelfwise(model: nn.Module, layer: str | None, shape: tuple[int, ...]):
    """(size, stride) as (h, w) from receptivefield.pytorch, or the error it raised; None if the
    package is not installed."""
    try:
        from receptivefield.pytorch import PytorchReceptiveField
    except ImportError:
        return None
    import copy
    import logging
    logging.disable(logging.INFO)  # it logs every estimate at INFO
    wrapped = _FeatureMaps(copy.deepcopy(model), layer).eval()
    c, h, w = shape
    try:
        with np.errstate(all="ignore"):
            rf = PytorchReceptiveField(lambda: wrapped).compute(input_shape=(h, w, c))[0].rf
    except Exception as e:  # noqa: BLE001 - report what the alternative does
        return f"{type(e).__name__}: {str(e)[:60]}"
    return (rf.size.h, rf.size.w), (rf.stride[1], rf.stride[0])
