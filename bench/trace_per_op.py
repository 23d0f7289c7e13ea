"""What one traced op costs: a trace on meta at 224, per recorded op, against the floor.

    BENCH_THREADS=1 python bench/trace_per_op.py [--reps 7] [--only resnet50 ...]

Each row times, side by side (interleaved, median of ``--reps`` after a warm-up round), one
``trace`` of a torchvision trunk at 224 (the graph with every node's rule) and its floor (the
private meta copy plus one pass of the model's code with every op's result built directly,
no graph, no rule), and divides by the number of nodes: ``us/op`` is what rfprobe's own work
adds per op, ``trace / floor`` the ratio that holds on a busy machine.

The redesign ("one home per op") must not make a traced op dearer: an op's record is one
dictionary lookup. To compare with a checkout from before it (which kept op knowledge in
``rfprobe.graph``, ``rfprobe.shapes`` and ``rfprobe.rules``), run this same script with
``PYTHONPATH`` set to that checkout: the imports below find either layout.
"""
from __future__ import annotations

import os
import sys

import torch
from torch.overrides import TorchFunctionMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import side_by_side, start  # noqa: E402

try:                                    # this layout
    from rfprobe.ops import OPS, QUERY, meta_result
    from rfprobe.trace import private_copy, trace

    def _query(name: str) -> bool:
        op = OPS.get(name)
        return op is not None and op.kind == QUERY
except ImportError:                     # a checkout from before the redesign
    from rfprobe.graph import private_copy, trace
    from rfprobe.rules import IGNORED
    from rfprobe.shapes import meta_result

    def _query(name: str) -> bool:
        return name in IGNORED

TRUNKS = {"resnet50": "layer4", "densenet121": "features", "mobilenet_v2": "features",
          "shufflenet_v2_x1_0": "conv5", "regnet_x_400mf": "trunk_output", "efficientnet_b0": "features",
          "convnext_tiny": "features"}


class _ResultsOnly(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", None) or str(func)
        out = None if _query(name) else meta_result(name, args, kwargs)
        return func(*args, **kwargs) if out is None else out


def _trunk(model, name: str):
    return getattr(model, name) if name == "features" else model


def main(argv=None) -> int:
    import torchvision

    args = start(__doc__, argv, reps=7, extra=f"; rfprobe from {os.path.dirname(sys.modules['rfprobe'].__file__)}")
    print("| model | nodes | trace ms | floor ms | us/op (trace) | us/op (trace - floor) | trace / floor |")
    print("|---|---|---|---|---|---|---|")
    for name, trunk in TRUNKS.items():
        if args.only and name not in args.only:
            continue
        torch.manual_seed(0)
        model = _trunk(getattr(torchvision.models, name)(weights=None).eval(), trunk)
        shape = (3, 224, 224)
        nodes = len(trace(model, shape).nodes)
        x = torch.empty(1, *shape, device="meta")

        def floor(model=model, x=x):
            twin = private_copy(model, "meta")
            with _ResultsOnly():
                twin(x)
        t = side_by_side({"trace": lambda: trace(model, shape), "floor": floor}, args.reps)
        print(f"| {name} | {nodes} | {t['trace'] * 1e3:.1f} | {t['floor'] * 1e3:.1f} | "
              f"{t['trace'] / nodes * 1e6:.1f} | {(t['trace'] - t['floor']) / nodes * 1e6:.1f} | "
              f"{t['trace'] / t['floor']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
