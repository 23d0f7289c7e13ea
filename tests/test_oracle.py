"""Every route against the perturbation oracle (tests/oracle.py), on random chains and DAGs.

Profiles: the default ("ci") runs 400 examples (derandomized) in well under a minute;
``RFPROBE_FUZZ=long`` runs 10,200 random ones across 1D/2D/3D chains and DAGs (about 12 minutes
on one core), recording every failure and going on. ``RFPROBE_FUZZ_LOG=path`` appends, per test,
the number of examples, the findings and which properties were exercised;
``RFPROBE_FUZZ_SECONDS=s`` caps each test's time in the long profile. For example::

    RFPROBE_FUZZ=long RFPROBE_FUZZ_LOG=fuzz.log OMP_NUM_THREADS=1 pytest tests/test_oracle.py

What must hold, for a random model, input shape and unit (any unit, borders included):

* the exact bounded set (``analyze(...).region(unit, bounded=True)``) equals the oracle's set,
  except for two known limitations, each accepted only when its explanation is verified on the
  example (see ``_known_limitation``; the long profile's log counts them);
* the gradient probe's mask equals the oracle's set;
* the exact bounded box equals the oracle's box (found by bisection on the region's edge);
* the closed-form box (when the RF has a closed form): for zero-padded models it contains the
  oracle's box clipped to the input; with no crops, it equals the oracle's box whenever it lies
  inside the input (the closed form is exact for the hull of an unbounded affine chain).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rfprobe
from tests.oracle import perturbation_rf

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")
PROFILE = os.environ.get("RFPROBE_FUZZ", "ci")
EXAMPLES = {"ci": {"chain1": 100, "chain2": 100, "chain3": 50, "dag": 150},
            "long": {"chain1": 2600, "chain2": 2600, "chain3": 1400, "dag": 3600}}[PROFILE]
SETTINGS = dict(deadline=None, database=None, derandomize=PROFILE == "ci", print_blob=True,
                suppress_health_check=list(HealthCheck))
MAX_NUMEL = 40_000         # per intermediate tensor, batch 1
CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONVT = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
MAXP = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
AVGP = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
AADP = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}
AMAXP = {1: nn.AdaptiveMaxPool1d, 2: nn.AdaptiveMaxPool2d, 3: nn.AdaptiveMaxPool3d}
LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}
_counts: dict[str, int] = {}
_stats: dict[str, int] = {}       # which properties were exercised (reported in the long log)
_findings: dict[str, list[str]] = {}
_started: dict[str, float] = {}
BUDGET = float(os.environ.get("RFPROBE_FUZZ_SECONDS", "inf"))   # per test, long profile only


# ----------------------------------------------------------------------------- model pieces
class Pad(nn.Module):
    """``F.pad`` with per-axis (left, right) widths; negative widths crop."""

    def __init__(self, widths, mode="constant"):
        super().__init__()
        self.widths, self.mode = [int(w) for w in widths], mode

    def forward(self, x):
        return F.pad(x, self.widths, mode=self.mode)


class Crop(nn.Module):
    """``x[..., a:b:step]`` on every spatial axis."""

    def __init__(self, slices):
        super().__init__()
        self.slices = tuple(slices)

    def forward(self, x):
        return x[(Ellipsis,) + self.slices]


class Up(nn.Module):
    def __init__(self, factor, mode, align):
        super().__init__()
        self.factor, self.mode, self.align = factor, mode, align

    def forward(self, x):
        kw = {} if self.mode in ("nearest", "nearest-exact") else {"align_corners": self.align}
        return F.interpolate(x, scale_factor=self.factor, mode=self.mode, **kw)


class Resize(nn.Module):
    def __init__(self, size, mode, align):
        super().__init__()
        self.size, self.mode, self.align = size, mode, align

    def forward(self, x):
        kw = {"align_corners": self.align} if self.mode in ("linear", "bilinear", "trilinear") else {}
        return F.interpolate(x, size=(self.size,) * (x.dim() - 2), mode=self.mode, **kw)


class ChannelSlice(nn.Module):
    """Keep channels ``start:`` (a channel op: the spatial RF is unchanged)."""

    def __init__(self, start):
        super().__init__()
        self.start = start

    def forward(self, x):
        return x[:, self.start:]


class Dag(nn.Module):
    """Nodes computed in order: ('op', src, module), ('add', a, adapter(b)), ('cat', a, adapter(b))."""

    def __init__(self, steps, mods, aux=None):
        super().__init__()
        self.steps = [tuple(s) for s in steps]
        self.mods = nn.ModuleList(mods)
        self.aux = aux

    def forward(self, x):
        v = [x]
        for kind, a, b, m in self.steps:
            if kind == "op":
                v.append(self.mods[m](v[a]))
            elif kind == "add":
                v.append(v[a] + self.mods[m](v[b]))
            else:
                v.append(torch.cat([v[a], self.mods[m](v[b])], 1))
        return v[-1] if self.aux is None else {"out": v[-1], "aux": v[self.aux]}


class Flags:
    """What the closed-form properties may assume about a generated model."""

    def __init__(self):
        self.wrapping = False   # reflect/replicate/circular padding: the bounded set leaves the hull
        self.crops = False      # negative pads or slicing: the bounded set may shrink inside the box


def _shape_of(module, shape):
    """Output shape of ``module`` on zeros of ``shape`` (batch 1), or None if it cannot run."""
    try:
        with torch.no_grad():
            y = module(torch.zeros((1, *shape)))
    except Exception:
        return None
    if y.dim() != len(shape) + 1 or any(n < 1 for n in y.shape[2:]) or y.numel() > MAX_NUMEL:
        return None
    return tuple(y.shape[1:])


def _draw_op(draw, dims, c, flags: Flags):
    """One random op on ``c`` channels: (module, flags to set if it is kept)."""
    kind = draw(st.sampled_from(["conv", "conv", "conv", "maxpool", "avgpool", "relu", "bn", "convT",
                                 "up", "pad", "crop", "dropout", "adaptive", "resize", "chslice"]
                                + (["shuffle", "unshuffle"] if dims == 2 else [])))
    wrap = crop = False
    if kind == "conv":
        k = draw(st.integers(1, 4))
        s = draw(st.integers(1, 3))
        d = draw(st.integers(1, 3))
        c_out = draw(st.integers(1, 3))
        mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
        if s == 1 and draw(st.booleans()) and mode == "zeros":
            p = "same"
        else:
            p = draw(st.integers(0, d * (k - 1)))
        wrap = mode != "zeros" and p not in (0, "same")
        m = CONV[dims](c, c_out, k, s, p, d, padding_mode=mode, bias=draw(st.booleans()))
    elif kind == "convT":
        k = draw(st.integers(1, 4))
        s = draw(st.integers(1, 3))
        d = draw(st.integers(1, 2))
        p = draw(st.integers(0, d * (k - 1)))
        op = draw(st.integers(0, max(s, d) - 1))
        m = CONVT[dims](c, draw(st.integers(1, 3)), k, s, p, op, dilation=d, bias=draw(st.booleans()))
    elif kind == "maxpool":
        k = draw(st.integers(1, 3))
        m = MAXP[dims](k, draw(st.integers(1, 3)), draw(st.integers(0, k // 2)), draw(st.integers(1, 2)),
                       ceil_mode=draw(st.booleans()))
    elif kind == "avgpool":
        k = draw(st.integers(1, 3))
        m = AVGP[dims](k, draw(st.integers(1, 3)), draw(st.integers(0, k // 2)),
                       ceil_mode=draw(st.booleans()), count_include_pad=draw(st.booleans()))
    elif kind == "relu":
        m = nn.ReLU()
    elif kind == "bn":
        m = BN[dims](c).eval()
    elif kind == "up":
        mode = draw(st.sampled_from(["nearest", "nearest-exact", LINEAR[dims]]))
        factor = draw(st.sampled_from([2, 2, 3])) if mode != LINEAR[dims] else 2
        m = Up(float(factor), mode, draw(st.booleans()))
    elif kind == "pad":
        mode = draw(st.sampled_from(["constant", "constant", "reflect", "replicate", "circular"]))
        lo = -2 if mode == "constant" else 0
        widths = [draw(st.integers(lo, 3)) for _ in range(2 * dims)]
        wrap = mode != "constant" and any(widths)
        crop = any(w < 0 for w in widths)
        m = Pad(widths, mode)
    elif kind == "crop":
        sl = [slice(draw(st.integers(0, 2)), -draw(st.integers(0, 2)) or None, draw(st.integers(1, 2)))
              for _ in range(dims)]
        crop = True
        m = Crop(sl)
    elif kind == "dropout":        # off in the oracle (eval) and in the structural probe
        m = nn.Dropout(0.5).train(draw(st.booleans()))
    elif kind == "adaptive":       # windows [floor(j*n/m), ceil((j+1)*n/m)): overlapping if n % m
        size = draw(st.integers(2, 5))
        m = (AADP if draw(st.booleans()) else AMAXP)[dims](size)
    elif kind == "resize":         # interpolate to a size, not a scale: non-integer ratios
        mode = draw(st.sampled_from(["nearest", "nearest-exact", LINEAR[dims], "area"]))
        m = Resize(draw(st.integers(2, 12)), mode, draw(st.booleans()))
    elif kind == "chslice":
        m = ChannelSlice(draw(st.integers(0, max(c - 1, 0))))
    elif kind == "shuffle":
        m = nn.Sequential(nn.Conv2d(c, 4, 1), nn.PixelShuffle(2))
    else:
        m = nn.PixelUnshuffle(2)
    return m, wrap, crop


def _input_shape(draw, dims):
    lo, hi = {1: (6, 40), 2: (5, 18), 3: (4, 9)}[dims]
    return (draw(st.integers(1, 2)),) + tuple(draw(st.integers(lo, hi)) for _ in range(dims))


def _unit(draw, out_spatial):
    return tuple(draw(st.sampled_from([0, n - 1, n // 2]) | st.integers(0, n - 1)) for n in out_spatial)


@dataclass
class Case:
    """One random example: the model, its input and unit, and which output rfprobe is asked
    about (``layer=``/``output=``/``channel=``) with the oracle's way of reaching the same one."""

    model: nn.Module
    shape: tuple
    unit: tuple
    flags: Flags
    target: dict = field(default_factory=dict)     # rfprobe keyword arguments: layer, output
    oracle_model: nn.Module | None = None           # what the oracle runs (default: model)
    pick: object = None                             # the oracle's output selector
    channel: int | None = None

    def __repr__(self):
        steps = f"\nsteps (kind, input, other input, module): {self.model.steps}" \
            if isinstance(self.model, Dag) else ""
        return (f"Case(shape={self.shape}, unit={self.unit}, target={self.target}, "
                f"channel={self.channel})\n{self.model}{steps}")


def _channel(draw, channels):
    return draw(st.sampled_from([None, None, None]) | st.integers(0, channels - 1))


@st.composite
def chains(draw, dims):
    shape = _input_shape(draw, dims)
    flags, layers, shapes = Flags(), [], [shape]
    for _ in range(draw(st.integers(1, 6))):
        m, wrap, crop = _draw_op(draw, dims, shapes[-1][0], flags)
        nxt = _shape_of(m, shapes[-1])
        if nxt is None:
            continue
        layers.append(m)
        shapes.append(nxt)
        flags.wrapping |= wrap
        flags.crops |= crop
    if not layers:
        layers, shapes = [nn.Identity()], [shape, shape]
    model = nn.Sequential(*layers).eval()
    # the model's output, or (one time in four) an intermediate layer by its module name
    i = len(layers) - 1
    if len(layers) > 1 and draw(st.integers(0, 3)) == 0:
        i = draw(st.integers(0, len(layers) - 2))
    target = {} if i == len(layers) - 1 else {"layer": str(i)}
    out = shapes[i + 1]
    return Case(model, shape, _unit(draw, out[1:]), flags, target, nn.Sequential(*layers[:i + 1]),
                channel=_channel(draw, out[0]))


@st.composite
def dags(draw):
    dims = draw(st.sampled_from([1, 2, 2, 3]))
    shape = _input_shape(draw, dims)
    flags, steps, mods, shapes = Flags(), [], [], [shape]
    for _ in range(draw(st.integers(2, 7))):
        kind = draw(st.sampled_from(["op", "op", "add", "cat"]))
        a = draw(st.integers(0, len(shapes) - 1))
        if kind == "op":
            m, wrap, crop = _draw_op(draw, dims, shapes[a][0], flags)
            out = _shape_of(m, shapes[a])
            if out is None:
                continue
        else:
            b = draw(st.integers(0, len(shapes) - 1))
            sa, sb = shapes[a], shapes[b]
            widths, wrap, crop = [], False, False
            for ax in reversed(range(dims)):           # F.pad order: last axis first
                diff = sa[1 + ax] - sb[1 + ax]
                left = draw(st.integers(min(0, diff), max(0, diff)))
                widths += [left, diff - left]
            crop = any(w < 0 for w in widths)
            parts = [Pad(widths)] if any(widths) else []
            if kind == "add" and sa[0] != sb[0]:
                parts.append(CONV[dims](sb[0], sa[0], 1))
            m = nn.Sequential(*parts) if parts else nn.Identity()
            adapted = _shape_of(m, sb)
            if adapted is None or adapted[1:] != sa[1:]:
                continue
            out = (sa[0] + adapted[0],) + sa[1:] if kind == "cat" else sa
            if int(np.prod(out)) > MAX_NUMEL:
                continue
        steps.append((kind, a, None if kind == "op" else b, len(mods)))
        mods.append(m)
        shapes.append(out)
        flags.wrapping |= wrap
        flags.crops |= crop
    if not steps:
        steps, mods, shapes = [("op", 0, None, 0)], [nn.Identity()], shapes + [shape]
    # one time in three the model returns a dict {"out": last node, "aux": an earlier one}
    aux = draw(st.integers(1, len(shapes) - 1)) if draw(st.integers(0, 2)) == 0 else None
    model = Dag(steps, mods, aux).eval()
    key = None if aux is None else draw(st.sampled_from(["out", "aux"]))
    out = shapes[-1] if key in (None, "out") else shapes[aux]
    target = {} if key is None else {"output": key}
    pick = None if key is None else (lambda y, k=key: y[k])
    return Case(model, shape, _unit(draw, out[1:]), flags, target, model, pick, _channel(draw, out[0]))


# ----------------------------------------------------------------------------- the checks
def _diff(name, got, want, case) -> str:
    extra = np.argwhere(got & ~want)[:8].tolist()
    missing = np.argwhere(want & ~got)[:8].tolist()
    return (f"{name} differs from the perturbation oracle:\n"
            f"  extra positions (first 8): {extra} of {int((got & ~want).sum())}\n"
            f"  missing positions (first 8): {missing} of {int((want & ~got).sum())}\n{case!r}")


def _stat(key, what):
    _stats[f"{key} {what}"] = _stats.get(f"{key} {what}", 0) + 1


def check_all_routes(case: Case, key: str):
    """In the long profile a failure is recorded and the run goes on (the test fails at the
    end, listing every finding); in CI hypothesis stops and shrinks the first one."""
    if time.monotonic() - _started.setdefault(key, time.monotonic()) > BUDGET:
        return                       # out of time: the examples left are not run nor counted
    _counts[key] = _counts.get(key, 0) + 1
    if PROFILE != "long":
        return _check(case, key)
    try:
        _check(case, key)
    except Exception as e:  # noqa: BLE001 - every failure is a finding to report
        _findings.setdefault(key, []).append(f"{type(e).__name__}: {e}\n{case!r}")


def _check(case: Case, key: str):
    model, shape, unit, flags = case.model, case.shape, case.unit, case.flags
    _stat(key, "layer=" if "layer" in case.target else "output=" if "output" in case.target else "model-output")
    omodel = case.oracle_model or model
    o = perturbation_rf(omodel, shape, unit, pick=case.pick)
    assert o.box == o.bisected, f"oracle: mask hull {o.box} vs bisection {o.bisected}"
    empty = tuple((0, -1) for _ in unit)      # rfprobe's box of an empty set (measure.box_of)
    a = rfprobe.analyze(model, shape, **case.target)
    assert a.input_shape == tuple(shape)
    exact = a.region(unit, bounded=True)
    assert exact.global_cause is None, exact.global_cause
    got = exact.input_mask()
    if not (got == o.mask).all():
        known = _known_limitation(case, got, o.mask)
        assert known, _diff("exact bounded set", got, o.mask, case)
        _stat(key, f"known:{known}")
        return
    assert a.box(unit, bounded=True) == (o.box or empty)
    e = rfprobe.probe(model, shape, unit=unit, **case.target)
    assert (e.mask == o.mask).all(), _diff("gradient probe", e.mask, o.mask, case)
    assert e.box == (o.box or empty)
    if case.channel is not None:          # one channel: its RF can be smaller (concat)
        oc = perturbation_rf(omodel, shape, unit, pick=case.pick, channel=case.channel, seeds=(0,))
        ec = rfprobe.probe(model, shape, unit=unit, channel=case.channel, **case.target)
        assert (ec.mask == oc.mask).all(), _diff(f"probe of channel {case.channel}", ec.mask, oc.mask, case)
        _stat(key, "channel")
    _stat(key, "empty" if o.box is None else "nonempty")
    if a.status == "ok" and not flags.wrapping:
        closed = tuple((u * s - p, u * s - p + r - 1) for u, r, s, p in zip(unit, a.size, a.stride, a.padding))
        clipped = tuple((max(lo, 0), min(hi, n - 1)) for (lo, hi), n in zip(closed, shape[1:]))
        inside = all(lo >= 0 and hi < n for (lo, hi), n in zip(closed, shape[1:]))
        if o.box is None:   # a unit that reads only padding: its closed box cannot lie inside
            assert not (inside and not flags.crops), f"closed-form box {closed} is inside, oracle empty"
            return
        assert all(c_lo <= lo and hi <= c_hi for (c_lo, c_hi), (lo, hi) in zip(clipped, o.box)), \
            f"closed-form box {closed} does not hold the oracle's box {o.box}\n{case!r}"
        _stat(key, "closed-hull")
        if inside and not flags.crops:
            assert closed == o.box, f"closed-form box {closed} vs oracle {o.box} (inside the input)\n{case!r}"
            _stat(key, "closed-exact")


def _known_limitation(case: Case, exact: np.ndarray, oracle: np.ndarray) -> str | None:
    """Two known limitations of the exact route, each accepted only when its explanation is
    verified on the example itself (else the example fails):

    * ``channel-blind``: the exact route tracks one spatial set per tensor, not per channel.
      pixel_unshuffle puts each phase of a window in its own channel, and a concat joins
      channels with different RFs; after a channel selection the exact route still keeps every
      phase / every input of the concat. Verified: the exact set contains the oracle's and the
      gradient probe (which measures) equals the oracle.
    * ``float32-index``: interpolation source indices are rounded in float32 by the rule (as
      PyTorch does for float32 tensors); the oracle runs in float64, where PyTorch rounds in
      float64 and a non-integer ratio can pick other neighbours. Verified: the float32 probe
      equals the exact route and a float64 probe equals the oracle.
    """
    mods = list(case.model.modules())
    kw = case.target
    mixes = any(isinstance(m, nn.PixelUnshuffle) for m in mods) or (
        isinstance(case.model, Dag) and any(step[0] == "cat" for step in case.model.steps))
    if mixes and any(isinstance(m, ChannelSlice) for m in mods) and not (oracle & ~exact).any():
        e = rfprobe.probe(case.model, case.shape, unit=case.unit, **kw)
        if (e.mask == oracle).all():
            return "channel-blind"
    if any(isinstance(m, (Resize, Up)) for m in mods):
        e32 = rfprobe.probe(case.model, case.shape, unit=case.unit, **kw)
        e64 = rfprobe.probe(case.model, case.shape, unit=case.unit, dtype=torch.float64, **kw)
        if (e32.mask == exact).all() and (e64.mask == oracle).all():
            return "float32-index"
    return None


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_chains_agree_with_oracle(dims):
    n = EXAMPLES[f"chain{dims}"]

    @settings(max_examples=n, **SETTINGS)
    @given(chains(dims))
    def run(case):
        check_all_routes(case, f"chain{dims}")

    run()
    _no_findings(f"chain{dims}")


def test_dags_agree_with_oracle():
    @settings(max_examples=EXAMPLES["dag"], **SETTINGS)
    @given(dags())
    def run(case):
        check_all_routes(case, "dag")

    run()
    _no_findings("dag")


def _no_findings(key):
    found = _findings.get(key, [])
    log = os.environ.get("RFPROBE_FUZZ_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{PROFILE} {key}: {_counts.get(key, 0)} examples, {len(found)} findings; "
                    + ", ".join(f"{k.split(' ', 1)[1]} {v}" for k, v in sorted(_stats.items())
                                if k.split(" ")[0] == key) + "\n")
            for text in found:
                f.write(f"--- finding in {key}\n{text}\n")
    assert not found, f"{len(found)} of {_counts.get(key)} examples disagree; first:\n" + "\n".join(found[:3])


def test_oracle_sees_holes_and_borders():
    """Hand-made: conv3/d2/s2 then conv2, 1-D, length 16. By hand: conv 1 output j reads
    2j, 2j+2, 2j+4 (7 outputs); conv 2 unit 2 reads conv-1 outputs 2 and 3, i.e. inputs
    {4, 6, 8} U {6, 8, 10} = {4, 6, 8, 10}: a box (4, 10) with holes."""
    net = nn.Sequential(nn.Conv1d(1, 1, 3, stride=2, dilation=2), nn.Conv1d(1, 1, 2))
    o = perturbation_rf(net, (1, 16), (2,))
    assert np.flatnonzero(o.mask).tolist() == [4, 6, 8, 10]
    assert o.box == o.bisected == ((4, 10),)
    # border: zero padding 2 on a conv5, unit 0 reads inputs 0..2 only
    o = perturbation_rf(nn.Conv1d(1, 1, 5, padding=2), (1, 9), (0,))
    assert np.flatnonzero(o.mask).tolist() == [0, 1, 2]


def test_first_hit_stops_after_the_first_batch_with_a_hit():
    """A mean over 600 positions (after a 1x1 conv) reads every position, by hand. The full run
    finds all 600; ``first_hit`` gives the same answer to "does any position move the unit?"
    from the first batch alone: its 256 positions (``CHUNK``), two batched forwards fewer."""
    from tests.oracle import CHUNK
    net = nn.Sequential(nn.Conv1d(1, 1, 1), nn.AdaptiveAvgPool1d(1))
    full = perturbation_rf(net, (1, 600), (0,), seeds=(0,))
    first = perturbation_rf(net, (1, 600), (0,), seeds=(0,), first_hit=True)
    assert full.mask.all() and full.box == full.bisected == first.bisected == ((0, 599),)
    assert np.flatnonzero(first.mask).tolist() == list(range(CHUNK)) and CHUNK == 256
    assert full.forwards - first.forwards == 2


def test_oracle_max_pool_is_not_fooled():
    """Max-pool routes the value of one element; huge perturbations still reach the unit from
    every position of the window (2x2 pool after a conv3: unit (1, 1) reads 2..5 on each axis)."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2))
    o = perturbation_rf(net, (1, 10, 10), (1, 1))
    assert o.box == ((2, 5), (2, 5)) and o.mask[2:6, 2:6].all() and int(o.mask.sum()) == 16
