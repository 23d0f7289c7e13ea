"""A fourth, independent route to a receptive field: perturb the input and watch the unit.

This module shares no code with rfprobe (it does not import it). It answers "which input
positions can change output unit ``u``?" the way a sceptic would, by experiment:

1. A private deep copy of the model in float64, eval mode, every floating parameter
   re-initialised positive (uniform in [0.5, 1.5)), BatchNorm statistics neutral (mean 0,
   var 1). Every activation is then positive and every op used by the fuzzers (conv, pools,
   transposed conv, upsampling with non-negative coefficients, pads, ReLU, BN, add, concat) is
   monotone non-decreasing in each input, so a perturbation that increases inputs can never
   be cancelled; float64 on the CPU runs direct convolution kernels (no FFT/Winograd leakage),
   so a position that cannot influence the unit leaves it unchanged up to rounding noise.
2. The base input is uniform in [1, 2). A perturbation *replaces* positions (all channels) by
   huge random values (about 1e50), so the affected activations dominate any max-pool window
   they enter and the unit's change is never absorbed by rounding (a change is a relative
   difference above 1e-9: batched CPU convs round differently from unbatched ones).
3. Box: per axis, bisection on the edge of a half-space region ``{p : p[a] >= t}`` (the unit
   moves iff ``t <= last``) and ``{p : p[a] <= t}`` (moves iff ``t >= first``).
4. Set: inside that box, every position is perturbed alone (batched), giving the exact mask.
5. Steps 1-4 are repeated with a couple of seeds; a position is in the RF if any seed moved the
   unit (the only possible error of this method is a miss, never a false hit).

Ops whose coefficients can be negative (bicubic upsampling) or that saturate (tanh, sigmoid)
break the monotonicity argument: do not feed them to this oracle.

>>> import torch.nn as nn
>>> net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3, dilation=2))
>>> o = perturbation_rf(net, (1, 12, 12), (3, 3))
>>> o.box                       # unit 3 reads 3..7 of conv 1, which read 3..9: by hand
((3, 9), (3, 9))
>>> int(o.mask.sum())           # taps {0,1,2} + {0,2,4} = {0..6}: a full 7x7
49
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

HUGE = 1e50
CHUNK = 256


@dataclass(frozen=True)
class OracleResult:
    mask: np.ndarray                         # bool over the input's spatial shape
    box: tuple[tuple[int, int], ...] | None  # per axis (first, last) of the mask; None when empty
    bisected: tuple[tuple[int, int], ...] | None  # the same box found by bisection alone
    forwards: int                            # number of batched forward calls made


def _private(model: nn.Module, seed: int, hooks: bool = False, signed: bool = False) -> nn.Module:
    twin = copy.deepcopy(model)
    for m in twin.modules() if not hooks else ():  # the user's hooks must not run in the oracle either
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks"):
            d = getattr(m, attr, None)
            if isinstance(d, dict):
                d.clear()
    twin = twin.to(torch.float64).eval()
    g = torch.Generator().manual_seed(20_000 + seed if signed else seed)
    with torch.no_grad():
        for p in twin.parameters():
            if signed:      # the steps mode's weights: signed, each output summing O(1) terms
                fan_in = max(1, p[0].numel()) if p.dim() > 1 else 1
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) / fan_in ** 0.5)
            else:
                p.copy_(torch.rand(p.shape, generator=g, dtype=torch.float64) + 0.5)
        for name, b in twin.named_buffers():
            if name.endswith("running_mean"):
                b.zero_()
            elif name.endswith("running_var"):
                b.fill_(1.0)
    return twin


def _moved(yb: torch.Tensor, y0: torch.Tensor) -> np.ndarray:
    """Per row: did any channel of the unit move? Not bit equality: PyTorch's CPU convs sum in
    an order that depends on the batch size (5.6e-17 apart for batch 10 vs 1 in float64, seen
    with torch 2.14), while a real dependency moves the unit by a factor of about 1e20 or more
    (HUGE through any path); a relative 1e-9 separates the two by many orders of magnitude."""
    return ((yb - y0).abs() > 1e-9 * y0.abs()).any(dim=1).numpy()


class _Runner:
    """Evaluate the unit for a batch of inputs; count forward calls."""

    def __init__(self, twin, unit, pick, channel):
        self.twin, self.unit, self.pick, self.channel = twin, tuple(unit), pick, channel
        self.forwards = 0

    def __call__(self, xb: torch.Tensor) -> torch.Tensor:
        outs = []
        with torch.no_grad():
            for i in range(0, xb.shape[0], CHUNK):
                y = self.twin(xb[i:i + CHUNK])
                y = self.pick(y) if self.pick is not None else y
                self.forwards += 1
                index = (slice(None), slice(None) if self.channel is None else slice(self.channel, self.channel + 1)) \
                    + self.unit
                outs.append(y[index].reshape(y.shape[0], -1))
        return torch.cat(outs)


def perturbation_rf(model: nn.Module, input_shape: Sequence[int], unit: Sequence[int], *,
                    seeds: Sequence[int] = (0, 1), pick: Callable | None = None,
                    channel: int | None = None, hooks: bool = False, first_hit: bool = False) -> OracleResult:
    """Input positions whose perturbation moves output ``unit`` (spatial index, one int per axis,
    non-negative). ``input_shape`` is (C, *spatial) without batch; ``pick`` selects the output
    tensor from whatever the model returns. ``hooks=True`` keeps the model's forward hooks (a
    feature extractor built from hooks, such as timm's, returns nothing without them).

    ``first_hit=True`` is for a caller that only asks whether any position moves the unit: the
    set step stops after the first batch of ``CHUNK`` positions with a hit (the same batches as
    a full run, so the same verdicts), and ``mask`` holds that batch's hits only."""
    shape = tuple(int(s) for s in input_shape)
    spatial = shape[1:]
    dims = len(spatial)
    mask = np.zeros(spatial, dtype=bool)
    forwards = 0
    bisected = None
    for seed in seeds:
        twin = _private(model, seed, hooks)
        run = _Runner(twin, unit, pick, channel)
        g = torch.Generator().manual_seed(10_000 + seed)
        base = torch.rand((1, *shape), generator=g, dtype=torch.float64) + 1.0
        y0 = run(base)[0]
        noise = (torch.rand((1, *shape), generator=g, dtype=torch.float64) + 1.0) * HUGE

        def moves(region_masks: torch.Tensor) -> np.ndarray:
            """region_masks: bool (B, *spatial); True = replaced by a huge value."""
            m = region_masks[:, None].expand(-1, shape[0], *spatial)
            xb = torch.where(m, noise.expand_as(m), base.expand_as(m))
            return _moved(run(xb), y0)

        box = []
        for a in range(dims):
            idx = torch.arange(spatial[a]).view([-1 if b == a else 1 for b in range(dims)])
            full = [spatial[b] for b in range(dims)]

            def half(t, upper):  # positions with p[a] >= t (upper) or p[a] <= t
                sel = (idx >= t) if upper else (idx <= t)
                return sel.expand(full)[None]

            if not moves(half(0, True))[0]:
                box = None
                break
            lo, hi = 0, spatial[a] - 1           # last: largest t with moves({p[a] >= t})
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if moves(half(mid, True))[0]:
                    lo = mid
                else:
                    hi = mid - 1
            last = lo
            lo, hi = 0, spatial[a] - 1           # first: smallest t with moves({p[a] <= t})
            while lo < hi:
                mid = (lo + hi) // 2
                if moves(half(mid, False))[0]:
                    hi = mid
                else:
                    lo = mid + 1
            box.append((lo, last))
        if box is not None:
            bisected = tuple(box) if bisected is None else tuple(
                (min(f, g_), max(l, h)) for (f, l), (g_, h) in zip(bisected, box))
            grids = np.meshgrid(*[np.arange(f, l + 1) for f, l in box], indexing="ij")
            points = np.stack([gr.ravel() for gr in grids], axis=1)
            regions = torch.zeros((len(points), *spatial), dtype=torch.bool)
            regions[(torch.arange(len(points)),) + tuple(torch.from_numpy(points[:, a]) for a in range(dims))] = True
            hit = _hits(moves, regions, first_hit)
            mask[tuple(points[:len(hit)][hit].T)] = True
        forwards += run.forwards
        if first_hit and mask.any():
            break
    if not mask.any():
        return OracleResult(mask, None, bisected, forwards)
    out_box = []
    for a in range(dims):
        proj = np.flatnonzero(mask.any(axis=tuple(b for b in range(dims) if b != a)))
        out_box.append((int(proj[0]), int(proj[-1])))
    return OracleResult(mask, tuple(out_box), bisected, forwards)


def _hits(moves: Callable, regions: torch.Tensor, first_hit: bool) -> np.ndarray:
    """``moves`` of each region; with ``first_hit``, of the regions up to the end of the first
    batch of ``CHUNK`` where one moves (the rest are not run)."""
    if not first_hit:
        return moves(regions)
    done = []
    for i in range(0, len(regions), CHUNK):
        done.append(moves(regions[i:i + CHUNK]))
        if done[-1].any():
            break
    return np.concatenate(done)


def perturbed(net: nn.Module, shape, steps=(1e3, -1e3, 1e6, -1e6), seed: int = 0) -> np.ndarray:
    """The perturbation route: ``moved[(*out_position, *in_position)]`` is True when adding a
    step to that input position (all channels) changes that output position (any channel), in
    float64 from a random input. Two signs, large: enough to flip a mask or move an argmax."""
    torch.manual_seed(seed)
    net = net.double().eval()
    x = torch.rand(1, *shape, dtype=torch.float64) - 0.5
    with torch.no_grad():
        y = net(x)
        moved = np.zeros(tuple(y.shape[2:]) + tuple(shape[1:]), dtype=bool)
        for pos in itertools.product(*(range(n) for n in shape[1:])):
            for step in steps:
                xp = x.clone()
                xp[(0, slice(None)) + pos] += step
                moved[(Ellipsis,) + pos] |= (net(xp) != y)[0].any(0).numpy()
    return moved


# ----------------------------------------------------------------------------- every position, by mode
# The huge replacement above suits monotone ops (a huge value dominates any max and is never
# absorbed). Ops that saturate (tanh, sigmoid), step (sign, round, comparisons) or cancel (a
# difference) hide it: tanh(1e50) == tanh(20) in float64, so the unit does not move. The
# "steps" mode keeps the model's arithmetic in its sensitive range instead: signed random
# weights, a signed random base input, and each position moved alone by several steps of both
# signs and of sizes from 1e-3 (inside a smooth op's linear range) to 64 (across any threshold
# a step function puts in the range the base spans), each step a random vector over the
# channels, so that no fixed combination of weights cancels it.
MODES = ("huge", "steps")
STEPS = (1e-3, -1e-3, 0.5, -0.5, 8.0, -8.0, 64.0, -64.0)


def _signed(model: nn.Module, seed: int) -> nn.Module:
    """A float64 eval copy whose floating parameters are drawn again, signed, so a unit's value
    stays in the range where saturating ops still respond (each output sums O(1) terms)."""
    return _private(model, seed, signed=True)


def _changed(yb: torch.Tensor, y0: torch.Tensor) -> np.ndarray:
    """Per row of ``yb``: does any value differ from ``y0`` (a NaN or an infinity appearing or
    going counts; a relative 1e-9 absorbs the batch-size dependent rounding of CPU kernels)?"""
    yb, y0 = _real(yb), _real(y0).expand_as(_real(yb))
    close = torch.isfinite(y0) & ((yb - y0).abs() <= 1e-9 * y0.abs())
    same = (yb == y0) | (torch.isnan(yb) & torch.isnan(y0)) | close
    return (~same).reshape(same.shape[0], -1).any(dim=1).numpy()


def _real(t: torch.Tensor) -> torch.Tensor:
    t = torch.view_as_real(t) if t.is_complex() else t
    return t if t.is_floating_point() else t.to(torch.float64)


class _Rows:
    """The selected output values of a batch of inputs: one batched forward when the model
    treats each batch row on its own (checked first on two unrelated inputs, whole outputs
    compared), one forward per row when it does not (an op over dim 0 such as a flip of the
    batch, a reshape that folds the batch into another dim)."""

    def __init__(self, twin: nn.Module, at: Callable, probe: torch.Tensor):
        self.twin, self.at, self.forwards = twin, at, 0
        with torch.no_grad():
            single = torch.cat([_real(self.twin(probe[i:i + 1])) for i in range(2)])
            self.forwards += 4
            try:
                # both orders: a running min over the batch gives the same result as the single
                # rows when the second row happens to be larger everywhere, not when it comes first
                both = [_real(self.twin(probe[list(order)])) for order in ((0, 1), (1, 0))]
                self.batched = (single.shape[0] == 2 and all(b.shape == single.shape for b in both)
                                and not _changed(both[0], single).any()
                                and not _changed(both[1], single.flip(0)).any())
                self.at(both[0], True)
            except Exception:           # the model's code assumes batch 1, or its dim 0 is not the batch
                self.batched = False

    def _one(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        return self.at(self.twin(x), False).reshape(-1)

    def _batch(self, xb: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        y = self.at(self.twin(xb), True)
        return y.reshape(y.shape[0], -1)

    def __call__(self, xb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.batched:
                out = torch.cat([self._batch(xb[i:i + CHUNK]) for i in range(0, xb.shape[0], CHUNK)])
                if out.shape[0] == xb.shape[0]:
                    return out
                self.batched = False       # the model kept its own batch on this input
            return torch.stack([self._one(xb[i:i + 1]) for i in range(xb.shape[0])])


def each_position(model: nn.Module, input_shape: Sequence[int], at: Callable, *, mode: str = "huge",
                  seeds: Sequence[int] = (0, 1), steps: Sequence[float] = STEPS) -> OracleResult:
    """Input positions that move the selected output values, each position tried alone (for
    small inputs: no bisection). ``at(output, batched)`` returns the values to watch, with the
    batch first when ``batched`` (e.g. ``lambda y, b: y[:, :, 3] if b else y[0, :, 3]``).

    ``mode="huge"``: the copy and the replacement of :func:`perturbation_rf` (positive weights,
    a position replaced by ~1e50), for monotone ops. ``mode="steps"``: :func:`_signed` weights,
    a signed base input, and every step of ``steps`` along a random channel vector (see
    ``STEPS``), for ops that saturate, step or cancel. Either way a position is in the set
    only if the output moved (the only error is a miss); seeds add to the set.

    >>> net = nn.Sequential(nn.Conv1d(1, 1, 3), nn.Hardtanh(), nn.Conv1d(1, 1, 2))
    >>> pick = lambda y, b: y[:, 0, 4] if b else y[0, 0, 4]
    >>> np.flatnonzero(each_position(net, (1, 10), pick, mode="steps").mask).tolist()   # 4..4+3
    [4, 5, 6, 7]
    >>> each_position(net, (1, 10), pick, mode="huge").box is None    # positive sums clip at 1
    True
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: one of {MODES}")
    shape = tuple(int(s) for s in input_shape)
    spatial = shape[1:]
    points = list(itertools.product(*(range(n) for n in spatial)))
    mask = np.zeros(spatial, dtype=bool)
    forwards = 0
    for seed in seeds:
        g = torch.Generator().manual_seed(30_000 + seed)
        at_point = tuple(torch.tensor([p[a] for p in points]) for a in range(len(spatial)))
        if mode == "huge":
            twin = _private(model, seed)
            base = torch.rand((1, *shape), generator=g, dtype=torch.float64) + 1.0
            noise = (torch.rand((1, *shape), generator=g, dtype=torch.float64) + 1.0) * HUGE
            owner = np.arange(len(points))
            xs = base.repeat(len(points), *([1] * len(shape)))
            rows = torch.arange(len(points))
            # row i: position points[i] replaced (all channels) by its huge value
            xs.permute(0, *range(2, len(shape) + 1), 1)[(rows,) + at_point] = \
                noise[0].permute(*range(1, len(shape)), 0)[at_point]
        else:
            twin = _signed(model, seed)
            base = torch.randn((1, *shape), generator=g, dtype=torch.float64)
            owner = np.repeat(np.arange(len(points)), len(steps))
            n = len(owner)
            xs = base.repeat(n, *([1] * len(shape)))
            sizes = torch.tensor(steps, dtype=torch.float64).repeat(len(points))
            r = (torch.rand((n, shape[0]), generator=g, dtype=torch.float64) + 0.5) * torch.where(
                torch.rand((n, shape[0]), generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
            where = (torch.arange(n),) + tuple(ix.repeat_interleave(len(steps)) for ix in at_point)
            xs.permute(0, *range(2, len(shape) + 1), 1)[where] += sizes[:, None] * r
        other = torch.rand((1, *shape), generator=g, dtype=torch.float64) + (1.0 if mode == "huge" else -0.5)
        rows = _Rows(twin, at, torch.cat([base, other]))
        y0 = rows(base)[0]
        moved = _changed(rows(xs), y0)
        assert len(moved) == len(owner), "one row per perturbed input"
        for i in np.unique(owner[moved]):
            mask[points[i]] = True
        forwards += rows.forwards
    if not mask.any():
        return OracleResult(mask, None, None, forwards)
    box = tuple((int(ix.min()), int(ix.max())) for ix in np.nonzero(mask))
    return OracleResult(mask, box, None, forwards)
