"""The effective receptive field (Luo, Li, Urtasun & Zemel, NeurIPS 2016).

The theoretical RF says which input pixels *can* change a unit; the effective RF says how much
each one *does*, on average, with the model's real weights: the gradient of the unit with
respect to the input, its magnitude (``|g|``) or energy (``g**2``) summed over input channels
and averaged over many inputs (yours, or random ones). Luo et al. show it is roughly Gaussian
and that its radius grows like the square root of the depth while the theoretical RF grows
linearly, so the ERF fills an ever smaller part of the RF.

The map is normalised to sum 1, so every metric is invariant to scaling the gradient:

* ``center`` and ``std`` per axis: mean and standard deviation of the map's marginals;
* ``radius(p)``: the smallest distance from the centre of mass holding ``p`` of the mass;
* ``ratio``: per axis, the ``±2 std`` span (95% of a Gaussian) over the theoretical RF size;
* ``gaussian``: a least-squares Gaussian fit of each marginal (centre, sigma, r2 of the fit);
* ``area_ratio(t)``: RepLKNet's high-contribution area ratio (Ding et al., CVPR 2022).

Four uniform 3-tap layers in 1-D: the ERF is the 4-fold convolution of a box, variance
``n (k**2 - 1) / 12 = 4 * 8 / 12``, while the theoretical RF has 9 taps:

>>> import torch, rfprobe
>>> net = rfprobe.build("conv3 conv3 conv3 conv3", dims=1).double()
>>> with torch.no_grad():
...     for m in net: _ = m.weight.fill_(1 / 3), m.bias.zero_()
>>> f = erf(net, n=2)
>>> round(f.std[0] ** 2, 9), f.theoretical, round(f.ratio[0], 3)
(2.666666667, (9,), 0.726)
"""
from __future__ import annotations

import itertools
import sys
import time
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn as nn

from ..defaults import as_model
from ..errors import ArgumentError, RFProbeError
from ..hints import STATISTICS, Device, InputShape, Layer, ModelLike, Statistic, Unit
from ..prepare import prepare
from .gradient import ProbePolicy, backprop_units, gradients_allowed
from ..render.messages import progress_line
from ..results import ERF
from ..trace import Tracer, infer_dims, parameter_dtype, private_copy
from ..validate import check_finite


# ----------------------------------------------------------------------------- erf's own arguments
def check_statistic(statistic) -> None:
    if statistic not in STATISTICS:
        raise ArgumentError(f"statistic={statistic!r} must be 'abs' (mean |gradient|) or 'sq' "
                            "(mean squared gradient)")


def check_count(n) -> None:
    """``n=`` of erf: how many inputs to average over."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ArgumentError(f"n={n!r} must be a positive int: the number of inputs to average over")


def check_batch_size(batch_size) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ArgumentError(f"batch_size={batch_size!r} must be a positive int")


def _not_an_input(item) -> ArgumentError:
    return ArgumentError(f"inputs must be a tensor (N, C, ...) or an iterable of tensors or "
                         f"(input, label) pairs; found an item of type {type(item).__name__}")


def input_items(inputs) -> Iterable[torch.Tensor]:
    """erf's ``inputs``, item by item: a tensor, an array, or an iterable of tensors or
    (input, label) pairs (a DataLoader)."""
    if isinstance(inputs, torch.Tensor):
        yield inputs
        return
    if isinstance(inputs, np.ndarray):
        yield torch.from_numpy(inputs)
        return
    for item in inputs:
        if isinstance(item, (tuple, list)):
            item = item[0]
        if not isinstance(item, torch.Tensor):
            raise _not_an_input(item)
        yield item


def first_input_shape(inputs):
    """The first item's shape, and inputs still holding every item (a one-shot iterator,
    such as a generator, is not consumed)."""
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        return tuple(inputs.shape), inputs
    it = iter(inputs)
    for item in it:
        if it is inputs:
            inputs = itertools.chain([item], it)
        if isinstance(item, (tuple, list)):
            item = item[0]
        if not hasattr(item, "shape"):
            raise _not_an_input(item)
        return tuple(item.shape), inputs
    raise ArgumentError("inputs is empty; pass a tensor (N, C, ...) or leave inputs=None for random ones")


def shape_of_batches(model: nn.Module, inputs, input_shape):
    """(C, *spatial) of erf's ``inputs`` (items (N, C, *spatial) or (C, *spatial): the model's
    spatial rank tells which), and inputs still holding every item; they fix the shape, so an
    ``input_shape`` as well is refused."""
    shape, inputs = first_input_shape(inputs)
    if input_shape is not None:
        raise ArgumentError("give inputs= or input_shape=, not both: the inputs fix the shape")
    dims = infer_dims(model)
    return (shape if dims is not None and len(shape) == dims + 1 else shape[1:]), inputs


def check_item_shape(x: torch.Tensor, input_shape) -> None:
    """Every batch of erf's inputs has the first item's (C, *spatial)."""
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise ArgumentError(f"inputs have shape {tuple(x.shape[1:])} per item but the first had "
                            f"{tuple(input_shape)}; all inputs need one shape")


# ----------------------------------------------------------------------------- progress
class Progress:
    """A tiny progress bar on a terminal; silent when the stream is not one.

    >>> import io
    >>> p = Progress(10, stream=io.StringIO()); p.update(10); p.close(); p.stream.getvalue()
    ''
    """

    def __init__(self, total: int, label: str = "erf", stream=None, enabled: bool | None = None):
        self.total, self.label, self.done = total, label, 0
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.start = time.monotonic()

    def update(self, k: int = 1) -> None:
        self.done += k
        if self.enabled:
            self.stream.write("\r" + progress_line(self.label, self.done, self.total,
                                                   time.monotonic() - self.start))
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.done:
            self.stream.write("\n")
            self.stream.flush()


# ----------------------------------------------------------------------------- the probe
def _batches(inputs, n: int, shape, generator, dtype, batch_size: int):
    """Yield float batches of at most ``batch_size`` until ``n`` inputs are used."""
    if inputs is None:
        left = n
        while left > 0:
            b = min(batch_size, left)
            yield torch.randn((b, *shape), generator=generator, dtype=torch.float64).to(dtype)
            left -= b
        return
    left = n
    for item in input_items(inputs):
        x = item
        if x.dim() == len(shape):
            x = x.unsqueeze(0)
        for start in range(0, x.shape[0], batch_size):
            chunk = x[start:start + min(batch_size, left)]
            if len(chunk) == 0:
                break
            if chunk.is_floating_point():
                check_finite(chunk, f" in items {n - left}..{n - left + len(chunk) - 1}")
            yield chunk
            left -= len(chunk)
            if left <= 0:
                return


def _couples_batch(twin: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in twin.modules())


@gradients_allowed
def erf(model: ModelLike, input_shape: InputShape = None, *, inputs: Any = None, n: int = 32,
        layer: Layer = None, output: Any = None, unit: Unit = None, channel: int | None = None,
        statistic: Statistic = "abs", batch_size: int = 8, dtype: torch.dtype | None = None, device: Device = None,
        seed: int = 0, progress: bool | None = None) -> ERF:
    """Effective RF of one output unit, averaged over ``n`` inputs (Luo et al. 2016).

    The model runs with its real weights and its train/eval flags as you have them, on a private
    copy (your model is not changed). ``inputs``: a tensor ``(N, C, *spatial)`` or an iterable of
    tensors or ``(input, label)`` pairs (a DataLoader); at most ``n`` are used. ``None``: ``n``
    standard-normal inputs of ``input_shape`` (chosen so the unit's theoretical RF fits when
    ``None``). ``statistic``: ``'abs'`` averages ``|g|`` (summed over input channels), ``'sq'``
    averages ``g**2``. ``unit``: output position (default: the centre); ``channel``: one output
    channel (default: the sum over all of them). Inputs run ``batch_size`` at a time, one at a
    time when a BatchNorm in training mode couples the batch. ``progress``: a bar on stderr
    (``None``: only when stderr is a terminal and the run is longer than one batch).

    >>> import rfprobe
    >>> f = erf(rfprobe.build("conv3 relu conv3 relu conv3", in_channels=3), n=8, input_shape=(3, 9, 9))
    >>> f.map.shape, f.theoretical, f.theoretical_box, round(float(f.map.sum()), 9)
    ((9, 9), (7, 7), ((1, 7), (1, 7)), 1.0)
    """

    check_statistic(statistic)
    check_count(n)
    check_batch_size(batch_size)
    model = as_model(model)
    if inputs is not None:
        input_shape, inputs = shape_of_batches(model, inputs, input_shape)
    p = prepare(model, input_shape, layer=layer, output=output, unit=unit, channel=channel, device=device,
                dtype=dtype, seed=seed, mode="actual", who="erf (the effective RF)")
    graph, analysis, target, u, dev = p.graph, p.analysis, p.target, p.unit, p.device
    theoretical = analysis.size if analysis.status in ("ok", "varies") else None
    box = None
    if analysis.status != "global":
        try:
            box = analysis.box(u)
        except RFProbeError:
            box = None

    twin = private_copy(model, dev)
    if dtype is not None:
        twin = twin.to(dtype)
    run_dtype = dtype or parameter_dtype(twin)
    for p in twin.parameters():
        p.requires_grad_(False)
    bs = 1 if _couples_batch(twin) else batch_size
    generator = torch.Generator().manual_seed(seed)
    total = np.zeros(graph.input_shape[1:], dtype=np.float64)
    count = 0
    bar = Progress(n, "erf", enabled=progress if progress is not None else (None if n > bs else False))
    try:
        for x in _batches(inputs, n, graph.input_shape, generator, run_dtype, bs):
            check_item_shape(x, graph.input_shape)
            x = x.detach().to(device=dev, dtype=run_dtype).clone().requires_grad_(True)
            tracer = Tracer(graph.dims, ProbePolicy(structural=False))
            g = backprop_units(twin, x, tracer, target, [u], channel,
                               what="erf", every_item=True)
            g = g.detach().to(torch.float64)
            stat = g.abs().sum(1) if statistic == "abs" else (g * g).sum(1)
            total += stat.sum(0).cpu().numpy()
            count += x.shape[0]
            bar.update(x.shape[0])
    finally:
        bar.close()
    if count == 0:
        raise ArgumentError("inputs is empty; pass a tensor (N, C, ...) or leave inputs=None")
    return ERF.from_gradient(total / count, n=count, statistic=statistic, unit=u, target=target.name,
                             input_shape=graph.input_shape, output_shape=target.shape,
                             theoretical=theoretical, theoretical_box=box, analysis=analysis)
