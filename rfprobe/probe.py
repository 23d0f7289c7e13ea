"""The gradient probe: the empirical receptive field, exact by construction.

It runs the model's own code on a private copy and backpropagates a one-hot gradient from one
output unit. Structural mode (the default) makes a zero gradient mean "outside the RF" and a
nonzero one "inside", with no exceptions:

* every weight is positive and every op's forward output is replaced by positive values, so
  no sum cancels and every ReLU-like gate is open;
* max-pooling (which routes gradient to one element of a window) runs as a surrogate with the
  same geometry that passes gradient to the whole window;
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

Slab mode: a separable RF's box is found from thin inputs (full length on one axis, small on the
others), one per axis, so the cost grows with the RF's length rather than its area or volume.
``probe`` uses it when the full input would be large (``ProbeResult.slab`` lists the thin inputs;
``mask``, ``grad`` and ``coverage`` are then ``None``, ``axis_masks`` hold the per-axis
projections); ``full=True`` asks for the whole map (heatmaps, holes).

Several units whose RFs do not overlap are probed in one backward by :func:`probe_many`.

Actual mode (``mode="actual"``) uses the model's real weights and an input of yours instead:
"what does this trained model really use".

>>> import rfprobe
>>> e = probe(rfprobe.build("conv3 relu conv3"))
>>> e.size, e.box, e.truncated
((5, 5), ((0, 4), (0, 4)), False)
"""
from __future__ import annotations

import contextlib
import functools
import math
import random
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils._pytree import tree_map

from .analytic import propagate
from .errors import ModelError, RFProbeError, model_raised
from .trace import Graph, Node, Policy, Tracer, private_copy, run, select, trace
from .prepare import Prepared, prepare
from .validate import check_full, check_gradient, check_memory, check_mode, normalize_units
from .measure import box_of, coverage_of
from .results import Analysis, ProbeResult

# slab mode is chosen automatically above this many input positions (512x512, 64x64x64)
SLAB_ABOVE = 1 << 18


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


def _twin(model: nn.Module, structural: bool, device: torch.device, dtype: torch.dtype,
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


# ----------------------------------------------------------------------------- public API
def gradients_allowed(fn):
    """Run ``fn`` with autograd available even inside ``torch.inference_mode()`` (a notebook cell
    or an eval loop may wrap the call): there every tensor made is an inference tensor, no
    gradient is recorded, and the probe measured an empty RF without saying why."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.inference_mode(False):
            return fn(*args, **kwargs)
    return wrapper


@gradients_allowed
def probe(model, unit=None, input_shape=None, *, layer: str | None = None, output: Any = None,
          channel: int | None = None, mode: str = "structural", inputs: torch.Tensor | None = None,
          device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
          seed: int = 0, full: bool | None = None, max_memory: int | None = None) -> ProbeResult:
    """Backpropagate from one output unit and return the input positions with nonzero gradient.

    ``unit``: spatial index of the output unit (default: the centre; negative counts from the
    end). ``input_shape``: (C, *spatial) without batch; ``None`` entries (or ``None``) are
    chosen so the unit's whole RF fits. ``channel``: one output channel (default: all).
    ``full``: ``True`` measures the whole map; ``False`` uses slab mode whenever the RF allows
    it; ``None`` (default) uses slab mode when the input has more than ``SLAB_ABOVE`` positions.
    ``max_memory``: bytes the full probe may use (default: half the free memory); estimated from
    the traced shapes before running, and refused with ``ResourceError`` above it.
    ``inputs`` (``mode='actual'``): one input, (C, *spatial) or (1, C, *spatial); a batch of
    several is refused (``rfprobe.erf`` averages over many).

    >>> import rfprobe
    >>> e = probe(rfprobe.build("conv3/d4"))
    >>> e.size, round(e.coverage, 4), e.axis_coverage
    ((9, 9), 0.1111, (0.3333333333333333, 0.3333333333333333))
    >>> s = probe(rfprobe.build("conv3/p1 " * 4 + "conv3/s2/p1 conv3/d2/p2"), full=False)
    >>> s.slab, s.size, s.box, s.mask is None
    (((1, 20, 8), (1, 8, 20)), (19, 19), ((1, 19), (1, 19)), True)
    """
    check_mode(mode)
    check_full(full)
    p = prepare(model, input_shape, layer=layer, output=output, unit=unit, channel=channel, device=device,
                dtype=dtype, mode=mode, inputs=inputs, seed=seed)
    return probe_prepared(p, mode=mode, inputs=inputs, dtype=dtype, seed=seed, full=full, max_memory=max_memory)


@gradients_allowed
def probe_prepared(p: Prepared, *, mode: str = "structural", inputs: torch.Tensor | None = None,
                   dtype: torch.dtype = torch.float32, seed: int = 0, full: bool | None = None,
                   max_memory: int | None = None) -> ProbeResult:
    """:func:`probe` of a call that :func:`rfprobe.prepare.prepare` made ready (with the same
    ``mode``, ``inputs``, ``dtype`` and ``seed``, which it checked)."""
    model, graph, analysis, target, u, channel, dev = (p.model, p.graph, p.analysis, p.target, p.unit,
                                                         p.channel, p.device)
    structural = mode == "structural"
    spatial = graph.input_shape[1:]
    if structural and full is not True and (full is False or math.prod(spatial) > SLAB_ABOVE):
        plan = _slab_plan(model, graph, analysis, target, u, p.layer, p.output)
        if plan is not None:
            return _probe_slabs(model, graph, analysis, target, u, channel, plan, dev, dtype, seed)
    check_memory(graph, model, dtype, dev, max_memory)
    generator = torch.Generator().manual_seed(seed)
    twin = _twin(model, structural, dev, dtype, generator)
    grad = _gradient(twin, graph, target.id, [u], channel, structural, inputs, dev, dtype, generator)
    check_gradient(grad, mode)
    return _result(grad, graph, analysis, target, u, (u,), mode)


@gradients_allowed
def probe_many(model, units, input_shape=None, *, layer: str | None = None, output: Any = None,
               channel: int | None = None, device: str | torch.device | None = None,
               dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[ProbeResult, ...]:
    """Structural probes of several units of one output, sharing backward passes: units whose
    RF boxes (from the exact route, clipped to the input) do not overlap are seeded in the same
    backward and told apart by those boxes. Each result equals ``probe`` of that unit alone on
    the same input; ``units_probed`` says which units shared its pass. A gradient outside every
    box of a pass (the routes disagree) makes that pass's units run one by one.

    ``units``: output indices (negative count from the end); the input is the one ``probe``
    chooses for the centre unit unless ``input_shape`` is given. Two units ``k`` apart give the
    effective stride, the first unit's box the offset, the corner units the borders.

    >>> import rfprobe
    >>> net = rfprobe.build("conv3/s2/p1 conv3/s2/p1 conv3")
    >>> first, second, corner = probe_many(net, [(2, 2), (6, 2), (-1, -1)], input_shape=(1, 40, 40))
    >>> first.units_probed == second.units_probed == ((2, 2), (6, 2), (7, 7))
    True
    >>> stride = (second.box[0][0] - first.box[0][0]) // (6 - 2)
    >>> stride, 2 * stride - first.box[0][0], corner.box      # stride, padding, a clipped corner
    (4, 3, ((25, 39), (25, 39)))
    """
    p = prepare(model, input_shape, layer=layer, output=output, channel=channel, device=device, dtype=dtype,
                mode="structural")
    model, graph, analysis, target, dev = p.model, p.graph, p.analysis, p.target, p.device
    us = normalize_units(units, target.spatial)
    check_memory(graph, model, dtype, dev, None)
    generator = torch.Generator().manual_seed(seed)
    twin = _twin(model, True, dev, dtype, generator)
    spatial = graph.input_shape[1:]
    boxes = [_clipped_box(analysis, v, spatial) for v in us]
    groups: list[list[int]] = []
    for i, b in enumerate(boxes):
        for grp in groups:
            if b is not None and all(boxes[j] is not None and _disjoint(b, boxes[j]) for j in grp):
                grp.append(i)
                break
        else:
            groups.append([i])
    out: list[ProbeResult | None] = [None] * len(us)
    for grp in groups:
        seeds = [us[i] for i in grp]
        grad = _gradient(twin, graph, target.id, seeds, channel, True, None, dev, dtype, generator)
        check_gradient(grad, "structural")
        if len(grp) > 1:
            inside = np.zeros(grad.shape, dtype=bool)
            for i in grp:
                inside[_slices(boxes[i])] = True
            if (grad[~inside] != 0).any():   # not separable by the boxes: one pass per unit
                grp_runs = [[i] for i in grp]
            else:
                for i in grp:
                    g = np.zeros_like(grad)
                    g[_slices(boxes[i])] = grad[_slices(boxes[i])]
                    out[i] = _result(g, graph, analysis, target, us[i], tuple(seeds), "structural")
                continue
        else:
            grp_runs = [grp]
        for one in grp_runs:
            i = one[0]
            g = grad if one == grp else _gradient(twin, graph, target.id, [us[i]], channel, True, None,
                                                  dev, dtype, generator)
            out[i] = _result(g, graph, analysis, target, us[i], (us[i],), "structural")
    return tuple(out)


def _clipped_box(analysis: Analysis, unit, spatial):
    try:
        # bounded: reflect/circular padding reads indices the unbounded box does not reach
        box = analysis.box(unit, bounded=True)
    except RFProbeError:
        return None
    clipped = tuple((max(lo, 0), min(hi, n - 1)) for (lo, hi), n in zip(box, spatial))
    return None if any(lo > hi for lo, hi in clipped) else clipped


def _disjoint(a, b) -> bool:
    return any(ah < bl or bh < al for (al, ah), (bl, bh) in zip(a, b))


def _slices(box):
    return tuple(slice(lo, hi + 1) for lo, hi in box)


def _result(grad: np.ndarray, graph: Graph, analysis: Analysis, target, u, probed, mode) -> ProbeResult:
    mask = grad != 0
    box = box_of(mask)
    axis_masks = tuple(mask.any(axis=tuple(b for b in range(mask.ndim) if b != a)) for a in range(mask.ndim))
    truncated = _truncated(analysis, u, mask.shape, mask)
    return ProbeResult(mask, grad, box, tuple(b - a + 1 for a, b in box), coverage_of(mask, box),
                       truncated, graph.input_shape, u, tuple(probed), target.name, mode, target.shape,
                       analysis, None, axis_masks)


def _truncated(analysis: Analysis, unit, shape, mask=None) -> bool:
    if analysis.status == "global":
        return False
    try:
        box = analysis.region(unit, bounded=False).box
    except RFProbeError:
        return bool(mask is not None and mask.any() and any(
            mask.take(0, axis=a).any() or mask.take(-1, axis=a).any() for a in range(mask.ndim)))
    return any(lo < 0 or hi >= n for (lo, hi), n in zip(box, shape))


# ----------------------------------------------------------------------------- slab mode
def _projection(mask: np.ndarray, a: int) -> np.ndarray:
    return mask.any(axis=tuple(b for b in range(mask.ndim) if b != a))


def _slab_plan(model, graph: Graph, analysis: Analysis, target, unit, layer, output):
    """Per axis a thin input (the full extent on that axis, small on the others) and the unit
    to seed in it, such that the exact route's projection of that unit's RF on the axis is the
    same as in the full input; None when some axis has no such input that is cheaper."""
    if graph.dims < 2 or analysis.status == "global":
        return None
    full_spatial = graph.input_shape[1:]
    try:
        full_region = propagate(graph, target, unit, bounded=True)
    except RFProbeError:
        return None
    if full_region.global_cause is not None:
        return None
    full_mask = full_region.input_mask()
    plan = []
    thin = 8      # each axis starts where the previous one succeeded (a trace can cost a second)
    for a in range(graph.dims):
        want = _projection(full_mask, a)
        found = None
        while True:
            shape = tuple(n if b == a else min(thin, n) for b, n in enumerate(full_spatial))
            if math.prod(shape) * 2 > math.prod(full_spatial):
                return None  # not worth it
            try:
                g = trace(model, (graph.input_shape[0], *shape), graph.dims)
                t = select(g, layer, output)
            except RFProbeError:
                t = None
            if t is not None and t.spatial is not None and t.spatial[a] == target.spatial[a] and \
                    all(s >= 1 for s in t.spatial):
                su = tuple(unit[a] if b == a else s // 2 for b, s in enumerate(t.spatial))
                reg = propagate(g, t, su, bounded=True)
                if reg.global_cause is None and np.array_equal(_projection(reg.input_mask(), a), want):
                    found = (g, t.id, su)
                    break
            if all(min(thin, n) == n for b, n in enumerate(full_spatial) if b != a):
                return None
            thin *= 2
        plan.append(found)
    return plan


def _probe_slabs(model, graph, analysis, target, u, channel, plan, device, dtype, seed) -> ProbeResult:
    generator = torch.Generator().manual_seed(seed)
    twin = _twin(model, True, device, dtype, generator)
    axis_masks = []
    for a, (g, tid, su) in enumerate(plan):
        grad = _gradient(twin, g, tid, [su], channel, True, None, device, dtype, generator)
        check_gradient(grad, "structural")
        axis_masks.append(_projection(grad != 0, a))
    box = []
    for proj in axis_masks:
        idx = np.flatnonzero(proj)
        box.append((int(idx[0]), int(idx[-1])) if len(idx) else (0, -1))
    box = tuple(box)
    truncated = _truncated(analysis, u, graph.input_shape[1:])
    return ProbeResult(None, None, box, tuple(b - a + 1 for a, b in box), None, truncated,
                       graph.input_shape, u, tuple(su for _, _, su in plan), target.name, "structural",
                       target.shape, analysis, tuple(g.input_shape for g, _, _ in plan), tuple(axis_masks))


# ----------------------------------------------------------------------------- the gradient
def _gradient(twin, graph: Graph, target_id: int, units, channel, structural, inputs, device, dtype,
              generator) -> np.ndarray:
    """|input gradient| summed over channels (float64, the input's spatial shape) after one
    backward seeded at every unit in ``units``."""
    pool = None
    if structural:
        biggest = max((math.prod(n.shape) for n in graph.nodes), default=1)
        pool = _Pool(biggest, dtype, device, generator)
    if inputs is None:
        if not structural:   # the user's weights, in their dtype: the input must match them
            dtype = next((p.dtype for p in twin.parameters() if p.is_floating_point()), dtype)
        x = torch.rand((1, *graph.input_shape), generator=generator, dtype=dtype).add_(1.0).to(device)
    else:
        x = inputs.detach().clone().to(device)
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
            (g,) = torch.autograd.grad(y, x, seed, allow_unused=True)
            return torch.zeros_like(x) if g is None else g
    except RFProbeError:
        raise
    except Exception as e:
        done = [n.name for n in tracer.nodes[-3:]]
        raise ModelError(model_raised(e, tuple(x.shape), during=what, done=done)) from e
