"""This checkout against another one, side by side in one process: trace and analyze per model.

    python bench/against_checkout.py /path/to/other/checkout [--reps 7] [--only resnet50 ...]

A change to the house (a rename, a split module, a cache) must not make rfprobe dearer. This
script loads the other checkout's package under the name ``rfprobe_base`` next to this one's
``rfprobe`` (both run their own code: rfprobe's modules import each other relatively), then
times, interleaved in the same rounds (the fastest of ``--reps``, the order reversed each
round, after a warm-up), what
``bench/trace_per_op.py`` times (one ``trace`` of a torchvision trunk at 224) and what
``bench/analyze_zoo.py`` times (one ``rfprobe.analyze`` of the trunk). ``new / base`` is the
ratio that holds on a busy machine. It runs twice: at the default thread count and at one
thread.
"""
from __future__ import annotations

import importlib.util
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rfprobe  # noqa: E402
from common import clock, start  # noqa: E402

from rfprobe.trace import trace  # noqa: E402

# trunk: the 'features' attribute, or a layer= name (as in analyze_zoo.py)
TRUNKS = {"resnet50": "layer4", "densenet121": "features", "mobilenet_v2": "features",
          "shufflenet_v2_x1_0": "conv5", "regnet_x_400mf": "trunk_output", "efficientnet_b0": "features",
          "convnext_tiny": "features", "inception_v3": "Mixed_7c", "maxvit_t": "blocks.3"}
KWARGS = {"inception_v3": {"aux_logits": False, "init_weights": False}}


def load_other(checkout: str):
    """The package at ``checkout/rfprobe``, imported as ``rfprobe_base``."""
    root = os.path.join(os.path.abspath(checkout), "rfprobe")
    spec = importlib.util.spec_from_file_location("rfprobe_base", os.path.join(root, "__init__.py"),
                                                  submodule_search_locations=[root])
    module = importlib.util.module_from_spec(spec)
    sys.modules["rfprobe_base"] = module
    spec.loader.exec_module(module)
    return module


def alternating(fns: dict[str, object], reps: int) -> dict[str, float]:
    """Fastest of ``reps`` timed calls of each function, interleaved, the order reversed every
    round (one warm-up round first): the fastest run of deterministic work is the one the
    machine's other load disturbed least, and reversing the order cancels a cost that falls
    on whichever runs first."""
    for f in fns.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    for _ in range(reps):
        for k in order:
            times[k].append(clock(fns[k]))
        order.reverse()
    return {k: min(v) for k, v in times.items()}


def _round(base, args) -> list[float]:
    import torchvision

    base_trace = importlib.import_module("rfprobe_base.trace").trace
    ratios = []
    print("| model | trace ms (new) | trace ms (base) | trace new / base | analyze ms (new) "
          "| analyze ms (base) | analyze new / base |")
    print("|---|---|---|---|---|---|---|")
    for name, trunk in TRUNKS.items():
        if args.only and name not in args.only:
            continue
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None, **KWARGS.get(name, {})).eval()
        target, layer = (model.features, None) if trunk == "features" else (model, trunk)
        shape = (3, 299, 299) if name == "inception_v3" else (3, 224, 224)
        t = alternating({"trace": lambda: trace(target, shape),
                          "trace_base": lambda: base_trace(target, shape),
                          "analyze": lambda: rfprobe.analyze(target, layer=layer),
                          "analyze_base": lambda: base.analyze(target, layer=layer)}, args.reps)
        tr, an = t["trace"] / t["trace_base"], t["analyze"] / t["analyze_base"]
        ratios += [tr, an]
        print(f"| {name} | {t['trace'] * 1e3:.1f} | {t['trace_base'] * 1e3:.1f} | {tr:.3f} | "
              f"{t['analyze'] * 1e3:.1f} | {t['analyze_base'] * 1e3:.1f} | {an:.3f} |", flush=True)
    return ratios


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        return 2
    base = load_other(argv.pop(0))
    args = start(__doc__, argv, reps=7, extra=f"; base rfprobe from {os.path.dirname(base.__file__)}")
    for threads in (torch.get_num_threads(), 1):
        torch.set_num_threads(threads)
        print(f"\n{threads} thread(s)\n")
        ratios = _round(base, args)
        print(f"\nworst new / base: {max(ratios):.3f}; geometric mean: "
              f"{torch.tensor(ratios).log().mean().exp().item():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
