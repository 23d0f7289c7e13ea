"""Shared helpers for the benchmarks: the models, the floors and the timers.

Every ratio is measured side by side in one run (the floor and the probe alternate, several
repetitions, median), because the machine these run on is shared and noisy.
"""
from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

import rfprobe


@dataclass
class Case:
    """One benchmark model: the module to probe, the layer (or None), the sub-module whose
    output that layer is (for the plain forward+backward floor), and its natural input."""

    name: str
    model: nn.Module
    layer: str | None
    trunk: nn.Module                 # the model up to the probed output, for the floor
    natural: tuple[int, ...]         # (C, *spatial): where analyze is compared with a forward
    full_floor: bool = True          # whether a plain pass at the full chosen input is affordable


def cases(only: list[str] | None = None) -> list[Case]:
    """The benchmark set: a 20-layer conv3 stack, vgg16 features, resnet50 layer4,
    densenet121 features, and a 3D conv stack with RF 101^3 (all in eval mode)."""
    import torchvision
    out = []

    def want(name):
        return not only or name in only

    if want("conv3x20"):
        m = rfprobe.build("conv3/p1/c64 relu " * 20, in_channels=3).eval()
        out.append(Case("conv3x20", m, None, m, (3, 224, 224)))
    if want("vgg16.features"):
        m = torchvision.models.vgg16().eval().features
        out.append(Case("vgg16.features", m, None, m, (3, 224, 224)))
    if want("resnet50.layer4"):
        m = torchvision.models.resnet50().eval()
        trunk = nn.Sequential(*list(m.children())[:-2])
        out.append(Case("resnet50.layer4", m, "layer4", trunk, (3, 224, 224)))
    if want("densenet121.features"):
        m = torchvision.models.densenet121().eval().features
        out.append(Case("densenet121.features", m, None, m, (3, 224, 224), full_floor=False))
    if want("conv3d.rf101"):
        m = rfprobe.build("conv3x3x3/p1/c8 relu " * 50, in_channels=1, dims=3).eval()
        out.append(Case("conv3d.rf101", m, None, m, (1, 64, 64, 64), full_floor=False))
    return out


def clock(fn: Callable[[], object]) -> float:
    gc.collect()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def fwd_bwd(trunk: nn.Module, shape: tuple[int, ...], weights: bool = True) -> Callable[[], None]:
    """One plain float32 forward and backward at ``shape``, as a user computes a gradient:
    weight gradients too (``weights=False``: the input gradient only, the probe's own floor)."""
    def run():
        for p in trunk.parameters():
            p.requires_grad_(weights)
            p.grad = None
        x = torch.rand((1, *shape), requires_grad=True)
        y = trunk(x)
        y.backward(torch.ones_like(y))
        for p in trunk.parameters():
            p.grad = None
            p.requires_grad_(True)
    return run


def fwd(trunk: nn.Module, shape: tuple[int, ...]) -> Callable[[], None]:
    def run():
        with torch.no_grad():
            trunk(torch.rand((1, *shape)))
    return run


def side_by_side(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median seconds of each function, interleaved ``reps`` times (one warm-up round first)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for k, f in fns.items():
        f()
    for _ in range(reps):
        for k, f in fns.items():
            times[k].append(clock(f))
    return {k: statistics.median(v) for k, v in times.items()}


def machine() -> str:
    import os
    import platform
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(l.split()[1] for l in f if l.startswith("MemTotal")))
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores{mem}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads, oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'}), "
            f"python {platform.python_version()}")


def start(doc: str, argv, reps: int, extra: str = ""):
    """What every model-zoo bench does first: parse ``--reps`` and ``--only``, silence
    warnings, use ``BENCH_THREADS`` intra-op threads, and print the machine line."""
    import argparse
    import datetime
    import os
    import warnings
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=reps)
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", str(os.cpu_count() or 1))))
    print(f"machine: {machine()}; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
          f"reps {args.reps}{extra}\n")
    return args
