"""Property test: random small DAGs agree across routes.

Hypothesis builds small ``nn.Module`` graphs out of convs (strided, dilated, padded),
transposed convs (strided, dilated, output_padding), max/avg pools (ceil_mode too),
``F.interpolate`` (nearest, nearest-exact, bilinear, bicubic, area; to any size),
``pixel_shuffle``, ``F.pad`` (constant, reflect, replicate, circular), crops, residual adds and
channel concats, and picks random
output units. For each unit the exact bounded region (``Analysis.region(unit, bounded=True)``)
must equal the gradient probe's mask position for position; where a closed form exists its box
must contain the exact box (the formula gives the hull).

Profiles: 100 examples by default (CI), ``RFPROBE_FUZZ=long`` for 2000.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rfprobe
from rfprobe import probe_many

C = 2
EXAMPLES = 2000 if os.environ.get("RFPROBE_FUZZ") == "long" else 100


def _out(n, k, s, p, d=1):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


class DAG(nn.Module):
    """Runs a plan: a list of (op, args, input node indices); node 0 is the input."""

    def __init__(self, plan):
        super().__init__()
        self.plan = plan
        self.mods = nn.ModuleList()
        for op, a, _ in plan:
            if op == "conv":
                self.mods.append(nn.Conv2d(C, C, a["k"], a["s"], a["p"], a["d"]))
            elif op == "convT":
                self.mods.append(nn.ConvTranspose2d(C, C, a["k"], a["s"], a["p"], a["op"], dilation=a["d"]))
            elif op == "shuffle":
                self.mods.append(nn.Conv2d(C, C * a["r"] ** 2, 1))
            elif op == "cat":
                self.mods.append(nn.Conv2d(2 * C, C, 1))
            else:
                self.mods.append(nn.Identity())

    def forward(self, x):
        nodes = [x.expand(-1, C, -1, -1) if x.shape[1] == 1 else x]
        for (op, a, ins), m in zip(self.plan, self.mods):
            xs = [nodes[i] for i in ins]
            if op in ("conv", "convT"):
                y = F.relu(m(xs[0]))
            elif op == "pool":
                f = F.max_pool2d if a["max"] else F.avg_pool2d
                y = f(xs[0], a["k"], a["s"], a["p"], ceil_mode=a["ceil"])
            elif op == "shuffle":
                y = F.pixel_shuffle(m(xs[0]), a["r"])
            elif op == "up":
                kw = {"align_corners": a["align"]} if a["mode"] in ("bilinear", "bicubic") else {}
                y = F.interpolate(xs[0], size=a["size"], mode=a["mode"], **kw)
            elif op == "pad":
                y = F.pad(xs[0], a["w"], mode=a["mode"])
            elif op == "crop":
                t, l = a["tl"]
                y = xs[0][:, :, t:, l:]
            else:   # add / cat: crop both to the smaller map
                h = min(v.shape[-2] for v in xs)
                w = min(v.shape[-1] for v in xs)
                xs = [v[..., :h, :w] for v in xs]
                y = xs[0] + xs[1] if op == "add" else m(torch.cat(xs, 1))
            nodes.append(y)
        return nodes[-1]


@st.composite
def dags(draw):
    size = (draw(st.integers(6, 14)), draw(st.integers(6, 14)))
    shapes = [size]
    plan = []
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(shapes) - 1)) if draw(st.booleans()) else len(shapes) - 1
        h, w = shapes[i]
        op = draw(st.sampled_from(["conv", "conv", "convT", "pool", "up", "pad", "crop", "add", "cat",
                                   "shuffle"]))
        if op == "conv":
            a = {"k": draw(st.integers(1, 3)), "s": draw(st.integers(1, 2)), "p": draw(st.integers(0, 1)),
                 "d": draw(st.integers(1, 2))}
            new = (_out(h, a["k"], a["s"], a["p"], a["d"]), _out(w, a["k"], a["s"], a["p"], a["d"]))
        elif op == "convT":
            a = {"k": draw(st.integers(1, 3)), "s": draw(st.integers(1, 2)), "d": draw(st.integers(1, 2))}
            a["p"] = draw(st.integers(0, a["d"] * (a["k"] - 1)))
            a["op"] = draw(st.integers(0, max(a["s"], a["d"]) - 1))
            new = tuple((n - 1) * a["s"] - 2 * a["p"] + a["d"] * (a["k"] - 1) + 1 + a["op"] for n in (h, w))
        elif op == "shuffle":
            a = {"r": draw(st.integers(2, 3))}
            new = (h * a["r"], w * a["r"])
        elif op == "pool":
            a = {"max": draw(st.booleans()), "k": draw(st.integers(2, 3)), "s": draw(st.integers(1, 2)),
                 "ceil": draw(st.booleans())}
            a["p"] = draw(st.integers(0, a["k"] // 2))
            new = tuple(F.max_pool2d(torch.empty(1, 1, h, w, device="meta"), a["k"], a["s"], a["p"],
                                     ceil_mode=a["ceil"]).shape[-2:]) if min(h, w) + 2 * a["p"] >= a["k"] else (0, 0)
        elif op == "up":
            mode = draw(st.sampled_from(["nearest", "bilinear", "nearest-exact", "bicubic", "area"]))
            new = (draw(st.integers(h, 2 * h + 1)), draw(st.integers(w, 2 * w + 1)))
            a = {"mode": mode, "size": new, "align": draw(st.booleans())}
        elif op == "pad":
            mode = draw(st.sampled_from(["constant", "reflect", "replicate", "circular"]))
            lim = 2 if mode != "reflect" else 1
            wd = tuple(draw(st.integers(0, min(lim, n - 1))) for n in (w, w, h, h))
            a = {"mode": mode, "w": wd}
            new = (h + wd[2] + wd[3], w + wd[0] + wd[1])
        elif op == "crop":
            a = {"tl": (draw(st.integers(0, max(h - 3, 0))), draw(st.integers(0, max(w - 3, 0))))}
            new = (h - a["tl"][0], w - a["tl"][1])
        else:
            j = draw(st.integers(0, len(shapes) - 1))
            a = {}
            new = (min(h, shapes[j][0]), min(w, shapes[j][1]))
            if min(new) < 1 or max(new) > 40:
                continue
            plan.append((op, a, (i, j)))
            shapes.append(new)
            continue
        if min(new) < 1 or max(new) > 40:
            continue
        plan.append((op, a, (i,)))
        shapes.append(new)
    if not plan:
        plan.append(("conv", {"k": 3, "s": 1, "p": 1, "d": 1}, (0,)))
        shapes.append(size)
    out = shapes[-1]
    units = {(0, 0), (out[0] - 1, out[1] - 1), (out[0] // 2, out[1] // 2)}
    units.add((draw(st.integers(0, out[0] - 1)), draw(st.integers(0, out[1] - 1))))
    return size, plan, sorted(units)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags())
def test_random_dag_exact_equals_probe(case):
    size, plan, units = case
    torch.manual_seed(0)
    model = DAG(plan)
    shape = (1, *size)
    a = rfprobe.analyze(model, input_shape=shape)
    probes = probe_many(model, units, input_shape=shape)
    for unit, e in zip(units, probes):
        exact = a.region(unit, bounded=True).input_mask()
        assert (e.mask == exact).all(), (
            f"plan {plan} unit {unit}: probe box {e.box}, exact box {a.region(unit, bounded=True).box}")
        if a.status == "ok":
            hull = tuple((u * s - p, u * s - p + r - 1) for u, r, s, p in zip(unit, a.size, a.stride, a.padding))
            box = a.region(unit, bounded=False).box
            if a.region(unit, bounded=False).products:
                assert all(h0 <= b0 and b1 <= h1 for (h0, h1), (b0, b1) in zip(hull, box)), (plan, unit, hull, box)
