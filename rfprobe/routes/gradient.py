"""The gradient probe's machinery: a private copy with positive weights, a tracing policy
that makes every zero gradient mean "outside the RF", and one backward from seeded units.

Structural mode makes a zero gradient mean "outside the RF" and a nonzero one "inside", with
no exceptions:

* every weight is positive and every op's forward output is replaced by positive values, so
  no sum cancels and every ReLU-like gate is open;
* max-pooling (which routes gradient to one element of a window) runs as a surrogate with the
  same geometry that passes gradient to the whole window (each op's record names its
  surrogate, :mod:`rfprobe.ops`);
* after every op the gradient is replaced by positive random values on its support (its
  support depends only on the support downstream), so nothing underflows at any depth;
* convolutions run with direct algorithms (no Winograd/FFT leakage);
* dropout is off; normalisation layers keep the model's train/eval flags, so a BatchNorm in
  training mode shows up as the global coupling it is.

Cost: about one forward and one input-only backward at the smallest input that holds the RF.
The positive values come from one random pool drawn per call (each op reads it at a random
offset), the copy's weights never require a gradient (no weight gradients are computed), and
oneDNN stays on for CPU convolutions (PyTorch calls it with its direct algorithm; cuDNN and
NNPACK, which choose transform algorithms, are off during the probe).

>>> import torch, rfprobe
>>> from rfprobe.trace import trace
>>> net = rfprobe.build("conv3 relu conv3")
>>> g = trace(net, (1, 7, 7))
>>> gen = torch.Generator().manual_seed(0)
>>> twin = private_twin(net, True, torch.device("cpu"), torch.float32, gen)
>>> grad = input_gradient(twin, g, g.nodes[-1].id, [(1, 1)], None, True, None, torch.device("cpu"), torch.float32, gen)
>>> (grad != 0).sum(), (grad[1:6, 1:6] != 0).all()       # unit (1, 1) reads rows and columns 1..5
(np.int64(25), np.True_)
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import random
from typing import Callable, Iterable, ParamSpec, TypeVar

import numpy as np
import torch
import torch.nn as nn
from torch.utils._pytree import tree_map

from .. import render
from ..errors import ArgumentError, InternalError, ModelError, ResourceError, RFProbeError, model_raised
from ..trace import Graph, Node, Policy, Tracer, parameter_dtype, private_copy, run
from ..trace.model_copy import available_bytes


# ----------------------------------------------------------------------------- positive values
_SLACK = 65537  # pool length beyond the largest tensor: offsets to choose from


class _Pool:
    """Positive random values in [1, 2), drawn once per probe; every use is a view at a random
    offset (a fresh draw per op costs more than the op itself on the CPU)."""

    def __init__(self, n: int, dtype: torch.dtype, device: torch.device, generator: torch.Generator):
        self.values = torch.rand(n + _SLACK, generator=generator, dtype=dtype).add_(1.0).to(device)
        self.rng = random.Random(int(generator.initial_seed()) + 1)

    def like(self, t: torch.Tensor) -> torch.Tensor:
        k = t.numel()
        if k + _SLACK > self.values.numel():  # larger than traced: draw afresh
            return torch.rand(t.shape, dtype=self.values.dtype, device=self.values.device).add_(1.0)
        off = self.rng.randrange(0, self.values.numel() - k + 1)
        return self.values[off:off + k].view(t.shape)


class _Support(torch.autograd.Function):
    """Forward: positive values in [1, 2). Backward: positive values in [1, 2) exactly where
    the incoming gradient is nonzero. Keeps gates open and magnitudes bounded at any depth."""

    @staticmethod
    def forward(ctx, x, pool):
        ctx.pool = pool
        return torch.empty_like(x).copy_(pool.like(x))

    @staticmethod
    def backward(ctx, g):
        return torch.where(g != 0, ctx.pool.like(g), 0.0), None


class ProbePolicy(Policy):
    """The gradient probe's tracing policy: structural mode swaps in each op's surrogate (its
    record's, :mod:`rfprobe.ops`: max pools that pass gradient to the whole window, dropout
    off) and replaces every new output by positive values (:class:`_Support`); no rules are
    computed (the probe measures). The tracer still records every op under the names the
    analytic routes gave them, so the probe finds its target by name."""

    rules = False

    def __init__(self, structural: bool, pool: _Pool | None = None):
        self.structural = structural
        self.pool = pool

    def substitute(self, op, func, args, kwargs):
        return op.surrogate(func, args, kwargs) if self.structural else (func, args, kwargs)

    def post(self, out):
        if not self.structural:
            return out
        pool = self.pool
        return tree_map(lambda t: _Support.apply(t, pool) if isinstance(t, torch.Tensor)
                        and t.is_floating_point() and t.requires_grad else t, out)


@contextlib.contextmanager
def direct_algorithms(device: torch.device):
    """Direct convolution algorithms only (transform-based ones leak tiny nonzeros).

    CUDA: cuDNN off (its heuristics pick Winograd/FFT). CPU: NNPACK (Winograd/FFT) off; oneDNN
    (mkldnn) stays on: PyTorch calls it with ``algorithm::convolution_direct`` for the forward
    and the input gradient, and tests/test_perf_exactness.py checks float32 stacks of 11x11 and
    15x15 kernels against the exact route."""
    with contextlib.ExitStack() as stack:
        if device.type == "cuda":
            stack.enter_context(torch.backends.cudnn.flags(enabled=False))
        stack.enter_context(torch.backends.nnpack.flags(enabled=False))
        yield


# ----------------------------------------------------------------------------- private copies
class _WeightPool:
    """Random weights in [0.5, 1.5) for every parameter, read from one draw of at most 4M values
    at random offsets (drawing 25M values one by one costs a third of a resnet50 probe)."""

    def __init__(self, twin: nn.Module, generator: torch.Generator):
        biggest = max((p.numel() for p in twin.parameters() if p.is_floating_point()), default=0)
        self.n = min(biggest, 1 << 22)
        self.values = torch.empty(self.n + _SLACK).uniform_(0.5, 1.5, generator=generator)
        self.on: dict[torch.device, torch.Tensor] = {}
        self.rng = random.Random(int(generator.initial_seed()) + 2)

    def fill(self, p: torch.Tensor) -> None:
        if p.numel() == 0:
            return
        values = self.on.setdefault(p.device, self.values.to(p.device))
        pieces, k = [], p.numel()
        while k > 0:
            m = min(k, self.n)
            off = self.rng.randrange(0, values.numel() - m + 1)
            pieces.append(values[off:off + m])
            k -= m
        src = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        p.copy_(src.view(p.shape))


def private_twin(model: nn.Module, structural: bool, device: torch.device, dtype: torch.dtype,
          generator: torch.Generator) -> nn.Module:
    """A private copy that never requires a weight gradient. Structural: positive weights in
    [0.5, 1.5) (the user's weights are never copied), normalisation statistics neutral
    (mean 0, var 1), other buffers copied; dropout off."""
    if not structural:
        twin = private_copy(model, device)
        for p in twin.parameters():
            p.requires_grad_(False)
        return twin
    twin = private_copy(model, "meta")
    if len({p.dtype for p in twin.parameters() if p.is_floating_point()}) <= 1:
        twin = twin.to(dtype)        # a model that mixes dtypes keeps them (its forward casts)
    twin = twin.to_empty(device=device)
    with torch.no_grad():
        for (name, theirs), (_, mine) in zip(model.named_buffers(), twin.named_buffers()):
            if name.endswith("running_mean"):
                mine.zero_()
            elif name.endswith("running_var"):
                mine.fill_(1.0)
            elif theirs.device.type != "meta":   # a meta model's BN counters: nothing to copy
                mine.copy_(theirs)
            else:
                mine.zero_()
        user = dict(model.named_parameters())
        weights = _WeightPool(twin, generator)
        for name, p in twin.named_parameters():
            p.requires_grad_(False)
            if p.is_floating_point():
                weights.fill(p)
            else:
                p.copy_(user[name])
    for m in twin.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    return twin


_P = ParamSpec("_P")
_R = TypeVar("_R")


def gradients_allowed(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``fn`` with autograd available even inside ``torch.inference_mode()`` (a notebook cell
    or an eval loop may wrap the call): there every tensor made is an inference tensor, no
    gradient is recorded, and the probe measured an empty RF without saying why."""
    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with torch.inference_mode(False):
            return fn(*args, **kwargs)
    return wrapper


# ----------------------------------------------------------------------------- what the probe needs
# every node's output is kept, autograd saves what backward needs, backward makes a gradient
# of each: about three tensors per node
_COPIES = 3


def probe_bytes(shapes: Iterable[tuple[int, ...]], dtype: torch.dtype, params: int) -> int:
    """Memory the probe needs, from the traced shapes: about three tensors per node (the kept
    output, what autograd saves, its gradient) plus the parameters.

    >>> probe_bytes([(1, 3, 64, 64), (1, 16, 62, 62)], torch.float32, params=0) == 3 * 4 * (3 * 64 * 64 + 16 * 62 * 62)
    True
    """
    item = torch.empty((), dtype=dtype).element_size()
    return _COPIES * item * sum(math.prod(s) for s in shapes) + item * params


def check_memory(graph, model: nn.Module, dtype: torch.dtype, device: torch.device,
                 max_memory: int | None) -> None:
    """Refuse, before running, a probe that would need more than ``max_memory`` bytes (default:
    half the memory free on the device)."""
    if max_memory is not None and (not isinstance(max_memory, (int, float)) or max_memory <= 0):
        raise ArgumentError(f"max_memory={max_memory!r} must be a positive number of bytes "
                            "(or None for half the free memory)")
    need = probe_bytes([n.shape for n in graph.nodes], dtype, sum(p.numel() for p in model.parameters()))
    limit = max_memory
    if limit is None:
        free = available_bytes(device)
        if free is None:
            return
        limit = free // 2
    if need > limit:
        gib = 2 ** 30
        raise ResourceError(
            f"the probe would need about {need / gib:.2f} GiB on {device} (input_shape="
            f"{tuple(graph.input_shape)}, every traced tensor kept for the backward), above "
            f"max_memory={limit / gib:.2f} GiB{' (half the free memory)' if max_memory is None else ''}. "
            "Shrink it: leave input_shape=None (or None entries) so rfprobe picks the smallest input "
            "that holds the RF; use slab mode (full=False, structural mode) for the per-axis box; "
            "probe an earlier layer=...; use dtype=torch.float32; or raise max_memory= (bytes)")


def check_gradient(grad, mode: str) -> None:
    """A NaN or infinite gradient says nothing about the RF: refuse it."""
    if not np.isfinite(grad).all():
        bad = int((~np.isfinite(grad)).sum())
        raise ModelError(f"the input gradient has {bad} NaN or infinite values in mode={mode!r} (an "
                         "overflow, or a NaN produced inside the model), so zero and nonzero cannot be "
                         "told apart. Use mode='structural' (rescaled per layer, never overflows), or "
                         "dtype=torch.float64, or smaller inputs")


# ----------------------------------------------------------------------------- the gradient
def input_gradient(twin, graph: Graph, target_id: int, units, channel, structural, inputs, device, dtype,
              generator) -> np.ndarray:
    """|input gradient| summed over channels (float64, the input's spatial shape) after one
    backward seeded at every unit in ``units``."""
    pool = None
    if structural:
        biggest = max((math.prod(n.shape) for n in graph.nodes), default=1)
        pool = _Pool(biggest, dtype, device, generator)
    if inputs is None:
        if not structural:   # the user's weights, in their dtype: the input must match them
            dtype = parameter_dtype(twin, dtype)
        x = torch.rand((1, *graph.input_shape), generator=generator, dtype=dtype).add_(1.0).to(device)
    else:
        # the user's weights, in their dtype: float32 inputs to a float64 model are widened (a
        # plain forward would raise torch's dtype mismatch)
        own = parameter_dtype(twin, inputs.dtype)
        x = inputs.detach().clone().to(device=device, dtype=own if not structural else dtype)
        if x.dim() == len(graph.input_shape):
            x = x.unsqueeze(0)
        x = x[:1]
    x.requires_grad_(True)
    target = graph.nodes[target_id]
    # the target's tensor survives in-place ops that follow it
    tracer = Tracer(graph.dims, ProbePolicy(structural, pool), protect=target.name)
    with direct_algorithms(device):
        g = backprop_units(twin, x, tracer, graph.nodes[target_id], units,
                           channel, what="the probe")
    return g.detach()[0].abs().sum(0).to(torch.float64).cpu().numpy()


def backprop_units(twin: nn.Module, x: torch.Tensor, tracer: Tracer, target: Node,
                   units, channel: int | None, *, what: str,
                   every_item: bool = False) -> torch.Tensor:
    """Run the private copy on ``x`` under ``tracer`` and return the gradient of the seeded
    units (all channels, or ``channel``) with respect to ``x``; shared by the probe and erf.
    ``every_item`` seeds the units in every item of the batch (erf), not only the first.
    ``target`` is the selected output's node in the analysis graph: the run must produce a
    node of the same name and shape, or the model ran differently."""
    try:
        with torch.enable_grad():
            run(twin, x.clone(), tracer)   # a clone: the model may write into its input in place
            mine = next((n for n in tracer.nodes if n.name == target.name), None)
            if mine is None or tuple(mine.shape[1:]) != tuple(target.shape[1:]):
                raise ModelError(f"the model ran differently under {what} than under the trace "
                                 "(data-dependent control flow, or an op that mixes the batch?); "
                                 "pass input_shape= to fix the input")
            y = tracer.keep[mine.id]
            seed = torch.zeros_like(y)
            item = slice(None) if every_item else 0
            for unit in units:
                seed[target.unit_index(unit, channel, item)] = 1.0
            if not y.requires_grad:
                return torch.zeros_like(x)
            try:
                (g,) = torch.autograd.grad(y, x, seed, allow_unused=True)
            except Exception as e:
                if _raised_in_rfprobe(e):   # the probe's own backward (its surrogates), not the model's
                    raise InternalError(render.internal_backward(what, e)) from e
                raise
            return torch.zeros_like(x) if g is None else g
    except RFProbeError:
        raise
    except Exception as e:
        done = [n.name for n in tracer.nodes[-3:]]
        raise ModelError(model_raised(e, tuple(x.shape), during=what, done=done)) from e


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _raised_in_rfprobe(error: BaseException) -> bool:
    """The innermost Python frame of ``error``'s traceback is rfprobe's own code. Only asked of
    the backward pass: there the frames between rfprobe's call and the raise are torch's engine
    (no Python frames), a backward of rfprobe's (the probe's surrogates) or of the user's."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_PACKAGE + os.sep) \
        and tb.tb_frame.f_code is not backprop_units.__code__
