"""Property test: on random chains of convs and pools the three routes agree exactly.

For a random chain of 1-12 layers (1-D, 2-D or 3-D; kernels 1-7 per axis, stride 1-3, dilation
1-3, padding 0..k, max/avg pooling with and without ceil_mode, random channels and groups,
pointwise layers between) this test computes the closed form itself (the Distill recurrences,
written out below, independent of rfprobe's code) and checks, for the centre unit and a corner
unit:

* ``rfprobe.analyze`` gives the same per-axis size, stride and padding as the hand recurrence;
* the unbounded exact set (``analysis.region(unit)``) has the closed-form box
  ``[i*S - P, i*S - P + r - 1]`` as its hull (or lies inside it and ``verify`` says why);
* the gradient probe's mask equals the bounded exact set position by position;
* when the closed-form box fits in the input, nothing is truncated and all boxes are equal;
  when it does not, the probe says ``truncated`` and its box lies inside the clipped hull.

Run long: ``RFPROBE_FUZZ=long pytest tests/test_properties_chain.py`` (10,000 examples; or
``RFPROBE_FUZZ=3000`` for a given number).
"""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch.nn as nn
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import rfprobe

FUZZ = os.environ.get("RFPROBE_FUZZ", "")
EXAMPLES = 10_000 if FUZZ == "long" else int(FUZZ) if FUZZ.isdigit() else 200
# largest input (positions) a chain may need; keeps every example to a few milliseconds
BUDGET = {1: 2000, 2: 2500, 3: 3000}

PROFILE = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

CONV = [nn.Conv1d, nn.Conv2d, nn.Conv3d]
MAXPOOL = [nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d]
AVGPOOL = [nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d]
BN = [nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d]


@st.composite
def chains(draw):
    """(dims, in_channels, layers) where each layer is a dict of per-axis geometry."""
    dims = draw(st.integers(1, 3))
    n = draw(st.integers(1, 12))
    channels = c = draw(st.integers(1, 4))
    layers = []
    per_axis = lambda s: tuple(draw(s) for _ in range(dims))  # noqa: E731
    for _ in range(n):
        kind = draw(st.sampled_from(["conv", "conv", "conv", "maxpool", "avgpool", "pointwise"]))
        if kind == "pointwise":
            layers.append({"kind": draw(st.sampled_from(["relu", "gelu", "tanh", "bn", "id"]))})
            continue
        k = per_axis(st.integers(1, 7))
        s = per_axis(st.integers(1, 3))
        if kind == "conv":
            d = per_axis(st.integers(1, 3))
            p = tuple(draw(st.integers(0, kk)) for kk in k)
            groups = draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0]))
            out = groups * draw(st.integers(1, max(1, 4 // groups)))
            layers.append({"kind": "conv", "k": k, "s": s, "d": d, "p": p, "groups": groups,
                           "cin": c, "cout": out})
            c = out
        else:
            d = per_axis(st.integers(1, 3)) if kind == "maxpool" else (1,) * dims
            p = tuple(draw(st.integers(0, kk // 2)) for kk in k)
            layers.append({"kind": kind, "k": k, "s": s, "d": d, "p": p,
                           "ceil": draw(st.booleans()),
                           "count_include_pad": draw(st.booleans())})
    # keep the longest prefix that runs on a small input (deep strided chains grow fast)
    while layers and need(hand_closed_form(dims, layers)) > BUDGET[dims]:
        layers.pop()
    assume(layers)
    return dims, channels, layers


def need(rsp) -> int:
    """About the input (positions) rfprobe picks for the centre unit: r + 2P + S per axis."""
    return math.prod(r + 2 * P + S for r, S, P in rsp)


def make(dims, channels, layers) -> nn.Sequential:
    mods = []
    for l in layers:
        kind = l["kind"]
        if kind == "conv":
            mods.append(CONV[dims - 1](l["cin"], l["cout"], l["k"], l["s"], l["p"], l["d"], l["groups"]))
        elif kind == "maxpool":
            mods.append(MAXPOOL[dims - 1](l["k"], l["s"], l["p"], l["d"], ceil_mode=l["ceil"]))
        elif kind == "avgpool":
            mods.append(AVGPOOL[dims - 1](l["k"], l["s"], l["p"], ceil_mode=l["ceil"],
                                          count_include_pad=l["count_include_pad"]))
        elif kind == "bn":
            width = next((m.out_channels for m in reversed(mods) if isinstance(m, nn.modules.conv._ConvNd)),
                         channels)
            mods.append(BN[dims - 1](width))
        else:
            mods.append({"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "id": nn.Identity}[kind]())
    return nn.Sequential(*mods).eval()


def hand_closed_form(dims, layers):
    """Per axis (r, S, P) by the Distill recurrences: r += (d(k-1)+1 - 1) S; P += p S; S *= s."""
    out = []
    for a in range(dims):
        r, S, P = 1, 1, 0
        for l in layers:
            if "k" not in l:
                continue
            extent = l["d"][a] * (l["k"][a] - 1) + 1
            r, P, S = r + (extent - 1) * S, P + l["p"][a] * S, S * l["s"][a]
        out.append((r, S, P))
    return out


def hull(unit, rsp):
    return tuple((u * S - P, u * S - P + r - 1) for u, (r, S, P) in zip(unit, rsp))


def clip(box, extent):
    return tuple((max(lo, 0), min(hi, n - 1)) for (lo, hi), n in zip(box, extent))


def inside(region: rfprobe.Region, box) -> bool:
    return all(all(lo <= int(ix[0]) and int(ix[-1]) <= hi for ix, (lo, hi) in zip(p, box))
               for p in region.products)


def check_unit(net, e: rfprobe.ProbeResult, rsp):
    """All routes for the probed unit, at the input the probe used."""
    a = e.analysis                              # the analytic routes on the probe's own trace
    extent = e.input_shape[1:]
    unit = e.unit
    closed = hull(unit, rsp)
    unb = a.region(unit, bounded=False)
    bnd = a.region(unit, bounded=True)

    # gradient probe == bounded exact set, position by position
    assert e.mask.shape == tuple(extent)
    assert np.array_equal(e.mask, bnd.input_mask()), (unit, e.box, bnd.box)
    assert e.box == bnd.box and e.size == bnd.size
    sub = e.mask[tuple(slice(lo, hi + 1) for lo, hi in e.box)]
    assert e.coverage == (float(sub.mean()) if sub.size else 0.0)   # a unit may read only padding

    # closed form == hull of the unbounded exact set, or the exact set lies inside and is explained
    if unb.box != closed:
        assert inside(unb, closed), (closed, unb.box)
        r = rfprobe.verify(net, e.input_shape, unit=unit)
        assert any("hull" in d for d in r.diagnoses), r.diagnoses

    fits = all(lo >= 0 and hi < n for (lo, hi), n in zip(closed, extent))
    assert e.truncated == (not fits)
    if fits:
        assert bnd.box == unb.box == closed == e.box
        assert e.size == tuple(r for r, _, _ in rsp)
    elif e.mask.any():
        assert all(clo <= lo and hi <= chi for (lo, hi), (clo, chi) in zip(e.box, clip(closed, extent)))
    else:                                       # the unit reads only padding
        assert not bnd.products


@PROFILE
@given(chain=chains(), extra=st.lists(st.integers(0, 6), min_size=3, max_size=3),
       corner=st.lists(st.sampled_from([0, -1]), min_size=3, max_size=3))
def test_closed_form_exact_and_probe_agree(chain, extra, corner):
    dims, channels, layers = chain
    rsp = hand_closed_form(dims, layers)
    net = make(dims, channels, layers)

    # centre unit, input chosen by rfprobe so the whole RF fits (a chain without a conv does not
    # fix its channel count: say it, and let rfprobe choose the spatial sizes)
    has_conv = any(l["kind"] == "conv" for l in layers)
    e = rfprobe.probe(net, None if has_conv else (channels,) + (None,) * dims, unit=None)
    a = e.analysis
    assert a.status == "ok"
    assert (a.size, a.stride, a.padding) == tuple(tuple(v[i] for v in rsp) for i in range(3))
    assert e.unit == a.centre_unit == tuple(n // 2 for n in e.output_shape[2:])
    check_unit(net, e, rsp)
    assert not e.truncated                      # rfprobe chose the input to fit the RF
    assert e.size == a.size
    assert a.box(e.unit) == hull(e.unit, rsp)

    # a corner unit on a slightly larger input (its RF usually reaches into the padding)
    shape = (e.input_shape[0],) + tuple(n + x for n, x in zip(e.input_shape[1:], extra))
    assume(math.prod(shape[1:]) <= 2 * BUDGET[dims])
    corner = tuple(corner[:dims])
    e2 = rfprobe.probe(net, shape, unit=corner)
    assert e2.input_shape == shape
    assert e2.unit == tuple(u % n for u, n in zip(corner, e2.output_shape[2:]))
    check_unit(net, e2, rsp)


@settings(PROFILE, max_examples=EXAMPLES // 2)
@given(chain=chains())
def test_verify_is_ok_on_every_chain(chain):
    """``verify`` (the public one-call route) agrees with itself on the centre unit."""
    dims, channels, layers = chain
    rsp = hand_closed_form(dims, layers)
    has_conv = any(l["kind"] == "conv" for l in layers)
    r = rfprobe.verify(make(dims, channels, layers),
                       input_shape=None if has_conv else (channels,) + (None,) * dims)
    assert r.ok, str(r)
    assert r.size == tuple(v[0] for v in rsp)
    assert r.stride == tuple(v[1] for v in rsp)
    assert r.closed_box == r.exact_box == r.probe_box
