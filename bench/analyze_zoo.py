"""analyze against one plain float32 forward at the natural size, for torchvision's trunks.

    python bench/analyze_zoo.py [--reps 5] [--only resnet50 densenet121 ...]

Issue 5's target: ``rfprobe.analyze`` of any torchvision trunk costs less than one float32
forward at 224 (299 for inception_v3). Each row times the two side by side (interleaved,
median of ``--reps`` after a warm-up round), so the ratio holds on a busy machine. The trunk
is the model's ``features`` where it has one, else the last spatial module before the
classifier head (``layer=``); the forward is of that same trunk (a ``features`` module, or the
whole model for ``layer=`` trunks: its head is a global pool and one Linear, under 1% of it).
Random weights, eval mode. ``status``/``RF``/``input`` say what analyze found: ``global`` rows
(squeeze-excitation, attention) stop after the first trace.

``floor`` is what any design that runs the model's own code on meta tensors pays at least,
timed in the same round: the private meta copy of the model plus one pass of the model's code
with every op's result built by ``rfprobe.ops.meta`` (no graph, no rule, no node, no second
size). ``floor / forward`` near or above 1 means the target cannot be met by making rfprobe's
own work cheaper, only by not running the model's code (or not copying it).
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rfprobe  # noqa: E402
from common import fwd, side_by_side, start  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402

from rfprobe.ops import OPS, QUERY, meta_result  # noqa: E402
from rfprobe.trace import private_copy  # noqa: E402

# name -> (trunk: 'features' attribute or a layer= name, constructor kwargs)
TRUNKS = {
    "alexnet": ("features", {}),
    "vgg11": ("features", {}),
    "vgg16": ("features", {}),
    "resnet18": ("layer4", {}),
    "resnet50": ("layer4", {}),
    "resnext50_32x4d": ("layer4", {}),
    "wide_resnet50_2": ("layer4", {}),
    "densenet121": ("features", {}),
    "densenet201": ("features", {}),
    "squeezenet1_0": ("features", {}),
    "squeezenet1_1": ("features", {}),
    "mobilenet_v2": ("features", {}),
    "mobilenet_v3_small": ("features", {}),
    "mobilenet_v3_large": ("features", {}),
    "mnasnet0_5": ("layers", {}),
    "shufflenet_v2_x0_5": ("conv5", {}),
    "shufflenet_v2_x1_0": ("conv5", {}),
    "regnet_x_400mf": ("trunk_output", {}),
    "regnet_y_400mf": ("trunk_output", {}),
    "efficientnet_b0": ("features", {}),
    "efficientnet_v2_s": ("features", {}),
    "googlenet": ("inception5b", {"aux_logits": False, "init_weights": False}),
    "inception_v3": ("Mixed_7c", {"aux_logits": False, "init_weights": False}),
    "convnext_tiny": ("features", {}),
    "maxvit_t": ("blocks.3", {}),
}


class _ResultsOnly(TorchFunctionMode):
    """Each op's result as rfprobe's trace builds it (``rfprobe.ops.meta_result``, else torch's meta
    kernel), and nothing else: the cheapest way to run a model's code on meta."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", None) or str(func)
        op = OPS.get(name)
        out = None if op is None or op.kind == QUERY else meta_result(name, args, kwargs)
        return func(*args, **kwargs) if out is None else out


def floor(model: torch.nn.Module, shape: tuple[int, ...]):
    """The floor described in the module docstring, as one callable (the input's size does
    not change what a pass on meta costs: ``shape`` is one the model accepts)."""
    x = torch.empty(1, *shape, device="meta")

    def run():
        twin = private_copy(model, "meta")
        with _ResultsOnly():
            twin(x)
    return run


def main(argv=None) -> int:
    import torchvision

    args = start(__doc__, argv, reps=5)
    print("| model | trunk | status | RF | input chosen | analyze ms | forward ms | analyze / forward "
          "| floor ms | floor / forward |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    worst = 0.0
    for name, (trunk, kw) in TRUNKS.items():
        if args.only and name not in args.only:
            continue
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None, **kw).eval()
        natural = (3, 299, 299) if name == "inception_v3" else (3, 224, 224)
        if hasattr(model, trunk) and trunk == "features":
            target, layer, forward_of = model.features, None, model.features
        else:
            target, layer, forward_of = model, trunk, model
        a = rfprobe.analyze(target, layer=layer)
        t = side_by_side({"analyze": lambda: rfprobe.analyze(target, layer=layer),
                          "fwd": fwd(forward_of, natural),
                          "floor": floor(target, a.input_shape)}, args.reps)
        ratio = t["analyze"] / t["fwd"]
        worst = max(worst, ratio)
        size = "-" if a.size is None else "x".join(map(str, a.size))
        shape = "x".join(map(str, a.input_shape[1:]))
        print(f"| {name} | {trunk} | {a.status} | {size} | {shape} | {t['analyze'] * 1e3:.1f} | "
              f"{t['fwd'] * 1e3:.1f} | {ratio:.2f} | {t['floor'] * 1e3:.1f} | {t['floor'] / t['fwd']:.2f} |",
              flush=True)
    print(f"\nworst analyze / forward: {worst:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
