"""The one way in: what every entry point that measures one output (probe, probe_many, erf,
verify) does before any work, in one order, so each refuses a bad argument the same way.

:func:`prepare` builds the model (a spec string becomes a module), checks the arguments the
routes share, traces the model at the input they will use (the user's, or the smallest that
holds the unit's whole RF), selects the output, and normalises the unit and checks the channel
and the device against it. Each entry point keeps its own extra checks (a probe's ``mode``,
probe_many's ``units``, erf's ``inputs`` and ``n``, in their routes); the shared checks live in
:mod:`rfprobe.validate`, and what is read off the model for the arguments left out (the module
behind a spec, the layer's name, the input shape, the device) in :mod:`rfprobe.defaults`.

>>> p = prepare("conv3 relu conv3")          # the centre unit, in the smallest input that holds its RF
>>> p.input_shape, p.target.shape, p.unit, p.channel, p.device.type
((1, 5, 5), (1, 1, 1, 1), (0, 0), None, 'cpu')
>>> p = prepare("conv3/s2 relu conv3", (1, 16, 16), unit=-1, channel=0)
>>> p.target.shape, p.unit, p.channel
((1, 1, 5, 5), (4, 4), 0)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from .defaults import as_model, layer_name, run_device, shape_of_inputs
from .results import Analysis
from .routes.analyze import analysis_of
from .routes.fit import choose_input
from .errors import ArgumentError
from .hints import Mode
from .trace import Graph, Node
from .validate import check_channel, check_dtype, check_inputs, check_model, check_seed, normalize_unit


@dataclass(frozen=True, eq=False)
class Prepared:
    """A call made ready: the model, its trace at the input to use, the analysis of the
    selected output, and the unit, channel and device, all checked."""

    model: nn.Module              # the user's module, or the one built from a spec string
    layer: str | None             # the selection by name (a route that traces again reuses it)
    output: Any
    graph: Graph                  # the trace at the input the routes use
    analysis: Analysis            # closed form and exact route of the selected output
    target: Node                  # the selected output's node in ``graph``
    unit: tuple[int, ...]         # normalised (non-negative); the centre unit unless one was given
    channel: int | None           # one channel of the output, or None for all
    device: torch.device          # where a gradient route runs

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, *spatial) of the input the routes use."""
        return self.graph.input_shape


def prepare(model, input_shape=None, *, layer: str | nn.Module | None = None, output: Any = None, unit=None,
            channel: int | None = None, device=None, dtype: torch.dtype | None = None,
            mode: Mode | None = None, inputs: torch.Tensor | None = None, seed: int | None = None,
            who: str = "actual mode") -> Prepared:
    """Check the shared arguments, in this order, and trace the model.

    ``model``: a module or a spec string. ``dtype``: the compute dtype (checked when given).
    ``mode``: the probe mode whose demands on the weights are checked (``'structural'`` or
    ``'actual'``, :func:`~rfprobe.validate.check_model`; ``who`` names the caller that needs real
    weights); None checks none. ``inputs``: actual
    mode's one input, which fixes ``input_shape``. ``seed``: checked when given. Then the model
    is traced (``input_shape``, ``layer``, ``output``, ``unit`` as :func:`rfprobe.analyze`
    takes them; a ``layer`` module becomes its name), the unit is normalised (default: the centre unit of the selected output), and
    ``channel`` is checked against it. ``device`` (default: the model's own) is checked first,
    before any work.
    """
    model = as_model(model)
    layer = layer_name(model, layer)
    dev = run_device(model, device)
    if dtype is not None:
        check_dtype(dtype)
    if mode is not None:
        check_model(model, mode, who)
    if inputs is not None:
        check_inputs(inputs)
        if mode != "actual":
            raise ArgumentError("inputs= is for mode='actual'; structural mode chooses its own input")
        input_shape = shape_of_inputs(model, inputs, input_shape)
    if seed is not None:
        check_seed(seed)
    graph = choose_input(model, input_shape, layer, output, unit)
    analysis = analysis_of(graph, layer, output)
    target = graph.node(analysis.target)
    u = analysis.centre_unit if unit is None else normalize_unit(unit, target.spatial)
    check_channel(channel, target)
    return Prepared(model, layer, output, graph, analysis, target, u, channel, dev)
