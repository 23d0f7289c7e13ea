"""Benchmark the gradient probe against what one gradient costs a user, in one run.

    python bench/run.py [--reps 3] [--only vgg16.features resnet50.layer4 ...] [--device cuda]

Prints markdown tables (paste them into bench/RESULTS.md with the machine line and the date):

1. probe: the input rfprobe chose against the RF per axis (auto-sizing), full or slab mode,
   and the probe's time against one plain float32 forward+backward of the same model at that
   input (the floor: what one gradient costs a user; in slab mode the floor is one plain pass
   at each thin input, and at the full input where affordable). ``exact`` says whether the
   probe's set equals the exact route's (per-axis projections in slab mode).
2. analyze: its time against one plain float32 forward at 224 (the model's natural size).
3. alternatives: a jotaf98-style probe and shelfwise ``receptivefield`` (where installed),
   their answers beside rfprobe's and the truth (the exact route), and their times against
   the same floor.
All times are medians of ``--reps`` interleaved repetitions.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import sys
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rfprobe  # noqa: E402
from alternatives import jotaf98_style, shelfwise  # noqa: E402
from common import cases, fwd, fwd_bwd, machine, side_by_side  # noqa: E402


def _x(t) -> str:
    return "-" if t is None else "x".join("?" if v is None else str(v) for v in t)


def _exact(e) -> bool:
    want = e.analysis.region(e.unit, bounded=True).input_mask()
    if e.mask is not None:
        return bool(np.array_equal(want, e.mask))
    return all(np.array_equal(want.any(axis=tuple(b for b in range(want.ndim) if b != a)), proj)
               for a, proj in enumerate(e.axis_masks))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--no-alternatives", action="store_true")
    ap.add_argument("--both-modes", action="store_true",
                    help="also time the other mode (slab where full was chosen, full where slab was)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", str(os.cpu_count() or 1))))
    print(f"machine: {machine()}; device {args.device or 'cpu'}; "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; reps {args.reps}\n")

    probe_rows, analyze_rows, alt_rows, refused = [], [], [], []
    for case in cases(args.only):
        m, layer = case.model, case.layer
        # analyze against one forward at the natural size
        t = side_by_side({"analyze": lambda: rfprobe.analyze(m, layer=layer),
                          "fwd": fwd(case.trunk, case.natural)}, args.reps)
        a = rfprobe.analyze(m, layer=layer)
        analyze_rows.append([case.name, _x(a.size), f"{t['analyze']:.3f}", f"{t['fwd']:.3f}",
                             f"{t['analyze'] / t['fwd']:.2f}"])

        modes = [None] + ([True, False] if args.both_modes else [])
        seen = set()
        for full in modes:
            try:
                e = rfprobe.probe(m, layer=layer, full=full, device=args.device)
            except rfprobe.RFProbeError as err:   # e.g. the full map would not fit in memory
                print(f"{case.name} full={full}: refused: {str(err)[:120]}", flush=True)
                refused.append(f"{case.name}, full={full}: {str(err)[:200]}")
                continue
            kind = "slab" if e.slab else "full"
            if kind in seen:
                continue
            seen.add(kind)
            if e.slab is None and not case.full_floor:
                continue
            shape = e.input_shape
            floors = {}
            if e.slab:
                for i, s in enumerate(e.slab):
                    floors[f"slab{i}"] = fwd_bwd(case.trunk, s)
                    floors[f"slab{i}_in"] = fwd_bwd(case.trunk, s, weights=False)
            if e.slab is None or (case.full_floor and args.both_modes):
                floors["full"] = fwd_bwd(case.trunk, shape)
                floors["full_in"] = fwd_bwd(case.trunk, shape, weights=False)
            as_full = e.slab is None
            fns = {"probe": (lambda as_full=as_full: rfprobe.probe(m, layer=layer, full=as_full,
                                                                   device=args.device))}
            fns.update(floors)
            t = side_by_side(fns, args.reps)
            if e.slab:
                floor = sum(v for k, v in t.items() if k.startswith("slab") and not k.endswith("_in"))
                floor_in = sum(v for k, v in t.items() if k.startswith("slab") and k.endswith("_in"))
                where = " + ".join(_x(s[1:]) for s in e.slab)
            else:
                floor, floor_in, where = t["full"], t["full_in"], _x(shape[1:])
            rf = a.size
            stride = a.stride or (1,) * len(rf)
            per_axis = tuple(n / r for n, r in zip(shape[1:], rf))
            within = all(n <= 1.25 * r + s for n, r, s in zip(shape[1:], rf, stride))
            probe_rows.append([case.name, kind, _x(rf), _x(shape[1:]), " ".join(f"{v:.3f}" for v in per_axis),
                               "yes" if within else "NO", where, f"{t['probe']:.3f}", f"{floor:.3f}",
                               f"{t['probe'] / floor:.2f}", f"{t['probe'] / floor_in:.2f}",
                               "yes" if _exact(e) and e.size == rf else "NO"])
            print("| " + " | ".join(probe_rows[-1]) + " |", flush=True)

        # alternatives, at the full input rfprobe chose (they have no slab mode)
        if args.no_alternatives or not case.full_floor:
            continue
        shape = a.input_shape
        fns = {"floor": fwd_bwd(case.trunk, shape),
               "rfprobe": lambda: rfprobe.probe(m, layer=layer, full=True, device=args.device),
               "jotaf98": lambda: jotaf98_style(m, layer, shape)}
        sw = None
        if len(shape) == 3:
            sw = shelfwise(m, layer, shape)
            if sw is not None:
                fns["shelfwise"] = lambda: shelfwise(m, layer, shape)
        t = side_by_side(fns, args.reps)
        mine = rfprobe.probe(m, layer=layer, full=True)
        jo = jotaf98_style(m, layer, shape)
        truth = f"{_x(a.size)} / {_x(a.stride)}"
        alt_rows.append([case.name, _x(shape[1:]), truth, f"{_x(mine.size)} ({t['rfprobe'] / t['floor']:.2f}x)",
                         f"{_x(jo[0])} / {_x(jo[1])} ({t['jotaf98'] / t['floor']:.2f}x)",
                         "not installed" if sw is None else (sw if isinstance(sw, str) else
                                                             f"{_x(sw[0])} / {_x(sw[1])} ({t['shelfwise'] / t['floor']:.2f}x)")])
        print("| " + " | ".join(alt_rows[-1]) + " |", flush=True)

    print("\n### probe: auto-sized input and time against one plain float32 forward+backward\n")
    print("| model | mode | RF (exact) | input chosen | input / RF per axis | <= 1.25 RF + stride | floor input(s) "
          "| probe s | floor s (fwd+bwd, weight grads too) | probe / floor | probe / input-only floor | exact |")
    print("|" + "---|" * 12)
    for r in probe_rows:
        print("| " + " | ".join(r) + " |")
    print("\n### analyze against one plain float32 forward at the natural size\n")
    print("| model | RF | analyze s | forward s | analyze / forward |")
    print("|" + "---|" * 5)
    for r in analyze_rows:
        print("| " + " | ".join(r) + " |")
    for r in refused:
        print(f"\nrefused: {r}")
    if alt_rows:
        print("\n### alternatives at the same (full) input: size / stride (time / floor)\n")
        print("| model | input | truth (exact route) | rfprobe | jotaf98-style | shelfwise receptivefield |")
        print("|" + "---|" * 6)
        for r in alt_rows:
            print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
