"""What a design costs: parameters (with and without bias) and multiply-accumulates.

>>> import rfprobe
>>> c = cost("conv3 conv3", channels=64, in_channels=64)
>>> c.params_no_bias == 2 * 9 * 64 * 64, c.params - c.params_no_bias
(True, 128)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from .analytic import as_model


@dataclass(frozen=True)
class Cost:
    params: int              # every parameter
    params_no_bias: int      # weights only
    macs_per_position: int   # multiply-accumulates for one output position of every layer
    macs: int | None = None  # for a whole input, when input_shape is given


def cost(model_or_spec, input_shape=None, *, in_channels: int = 1, channels: int | None = None,
         dims: int = 2) -> Cost:
    """Parameters and MACs of a model or spec (spec options as in ``rfprobe.build``)."""
    model = as_model(model_or_spec, in_channels=in_channels, channels=channels, dims=dims) \
        if not isinstance(model_or_spec, nn.Module) else model_or_spec
    params = sum(p.numel() for p in model.parameters())
    no_bias = sum(p.numel() for n, p in model.named_parameters() if not n.endswith("bias"))
    per_pos = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd))
    macs = None
    if input_shape is not None:
        macs = _macs(model, tuple(input_shape))
    return Cost(params, no_bias, per_pos, macs)


def _macs(model: nn.Module, input_shape) -> int:
    import torch
    total = 0
    handles = []

    def hook(m, inp, out):
        nonlocal total
        positions = 1
        for s in (out.shape[2:] if not isinstance(m, nn.modules.conv._ConvTransposeNd) else inp[0].shape[2:]):
            positions *= s
        total += m.weight.numel() * positions
    from .graph import private_copy
    twin = private_copy(model, "meta")
    for m in twin.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            handles.append(m.register_forward_hook(hook))
    with torch.no_grad():
        twin(torch.empty((1, *input_shape), device="meta"))
    return total


@dataclass(frozen=True)
class CompareRow:
    spec: str
    size: tuple[int, ...]
    params: int
    params_no_bias: int
    macs_per_position: int


def compare(*specs, channels: int = 1, dims: int = 2) -> list[CompareRow]:
    """RF, parameters and MACs of stacks side by side, every conv ``channels`` wide.

    >>> [(r.spec, r.size, r.params_no_bias) for r in compare("conv5", "conv3 relu conv3")]
    [('conv5', (5, 5), 25), ('conv3 relu conv3', (5, 5), 18)]
    """
    from .verify import verify
    rows = []
    for spec in specs:
        model = as_model(spec, in_channels=channels, channels=channels, dims=dims)
        r = verify(model)
        c = cost(model)
        rows.append(CompareRow(spec if isinstance(spec, str) else repr(spec), r.size, c.params,
                               c.params_no_bias, c.macs_per_position))
    return rows
