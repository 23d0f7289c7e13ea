"""Checks at the public entry points: refuse what cannot give an exact answer, before any work,
with a message that names the argument, shows the bad value and says what to do.

>>> import torch
>>> check_dtype(torch.float64)
>>> check_dtype(torch.int64)
Traceback (most recent call last):
...
rfprobe.errors.ArgumentError: dtype=torch.int64 cannot carry a gradient: use a real floating dtype (torch.float32 or torch.float64)
>>> probe_bytes([(1, 3, 64, 64), (1, 16, 62, 62)], torch.float32, params=0) == 3 * 4 * (3 * 64 * 64 + 16 * 62 * 62)
True
"""
from __future__ import annotations

import math
import operator
from typing import Iterable, Sequence

import torch
import torch.nn as nn

from .errors import ArgumentError, ModelError, ResourceError

# every node's output is kept, autograd saves what backward needs, backward makes a gradient
# of each: about three tensors per node
_COPIES = 3
_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


def check_dtype(dtype, arg: str = "dtype") -> None:
    """The probe's compute dtype must be real floating point."""
    if not isinstance(dtype, torch.dtype):
        raise ArgumentError(f"{arg}={dtype!r} must be a torch dtype such as torch.float32")
    if dtype.is_complex:
        raise ArgumentError(f"{arg}={dtype} is complex: rfprobe measures real gradients; use "
                            "torch.float32 or torch.float64")
    if not dtype.is_floating_point:
        raise ArgumentError(f"{arg}={dtype} cannot carry a gradient: use a real floating dtype "
                            "(torch.float32 or torch.float64)")


def check_inputs(inputs) -> None:
    """``inputs=`` of actual mode: a real floating tensor with finite values."""
    if not isinstance(inputs, torch.Tensor):
        raise ArgumentError(f"inputs must be a torch.Tensor (C, ...) or (1, C, ...), not "
                            f"{type(inputs).__name__}")
    if inputs.is_complex() or not inputs.is_floating_point():
        raise ArgumentError(f"inputs has dtype {inputs.dtype}: the gradient probe needs a real "
                            "floating input; convert it with inputs.float()")
    check_finite(inputs)


def check_finite(inputs, where: str = "") -> None:
    """Real ``inputs`` hold no NaN or infinity (every gradient would be NaN); ``where`` says
    which items, for inputs that come in batches."""
    if inputs.device.type != "meta" and not bool(torch.isfinite(inputs).all()):
        bad = int((~torch.isfinite(inputs)).sum())
        raise ArgumentError(f"inputs has {bad} NaN or infinite values{where}: a non-finite input makes "
                            "every gradient NaN; pass finite values")


def check_seed(seed) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ArgumentError(f"seed={seed!r} must be an int")


def _tensors(model: nn.Module) -> Iterable[tuple[str, torch.Tensor]]:
    yield from model.named_parameters()
    yield from model.named_buffers()


def check_model(model: nn.Module, mode: str) -> None:
    """Complex weights, weights on the meta device, non-finite weights (actual mode)."""
    for name, t in _tensors(model):
        if t.is_complex():
            raise ArgumentError(f"model has a complex tensor {name!r} ({t.dtype}): rfprobe handles real "
                                "models only; a complex model's RF is that of its real and "
                                "imaginary parts, probe a real twin of it")
    meta = [name for name, t in _tensors(model) if t.device.type == "meta"]
    if meta:
        if mode == "actual":
            raise ArgumentError(f"model is on the meta device ({meta[0]!r} has no values): actual mode "
                                "needs the real weights. Load them (model.to_empty(device='cpu') then "
                                "load_state_dict), or use mode='structural', or rfprobe.analyze(model)")
        other = [n for n, t in model.named_buffers() if t.device.type == "meta" and not n.endswith(_BN_STATS)]
        if other:
            raise ArgumentError(f"model is on the meta device and its buffer {other[0]!r} has no values; "
                                "structural mode replaces weights but needs buffer values. Materialise "
                                "the model (model.to_empty(device='cpu'), then load its buffers) or use "
                                "rfprobe.analyze(model), which needs no values")
        return
    if mode == "actual":
        for name, t in _tensors(model):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                n_nan = int(torch.isnan(t).sum())
                n_inf = int(torch.isinf(t).sum())
                raise ArgumentError(
                    f"model has non-finite values in {name!r} ({n_nan} NaN, {n_inf} inf): in "
                    "mode='actual' they make the gradient NaN wherever they reach, so no RF can be "
                    "read from it. Fix the weights, or use mode='structural' (the default), which "
                    "ignores weight values")


def probe_bytes(shapes: Iterable[tuple[int, ...]], dtype: torch.dtype, params: int) -> int:
    """Memory the probe needs, from the traced shapes: about three tensors per node (the kept
    output, what autograd saves, its gradient) plus the parameters."""
    item = torch.empty((), dtype=dtype).element_size()
    return _COPIES * item * sum(math.prod(s) for s in shapes) + item * params


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` (None when unknown)."""
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def check_memory(graph, model: nn.Module, dtype: torch.dtype, device: torch.device,
                 max_memory: int | None) -> None:
    """Refuse, before running, a probe that would need more than ``max_memory`` bytes (default:
    half the memory free on the device)."""
    if max_memory is not None and (not isinstance(max_memory, (int, float)) or max_memory <= 0):
        raise ArgumentError(f"max_memory={max_memory!r} must be a positive number of bytes "
                            "(or None for half the free memory)")
    need = probe_bytes([n.shape for n in graph.nodes], dtype, sum(p.numel() for p in model.parameters()))
    limit = max_memory
    if limit is None:
        free = available_bytes(device)
        if free is None:
            return
        limit = free // 2
    if need > limit:
        gib = 2 ** 30
        raise ResourceError(
            f"the probe would need about {need / gib:.2f} GiB on {device} (input_shape="
            f"{tuple(graph.input_shape)}, every traced tensor kept for the backward), above "
            f"max_memory={limit / gib:.2f} GiB{' (half the free memory)' if max_memory is None else ''}. "
            "Shrink it: leave input_shape=None (or None entries) so rfprobe picks the smallest input "
            "that holds the RF; use slab mode (full=False, structural mode) for the per-axis box; "
            "probe an earlier layer=...; use dtype=torch.float32; or raise max_memory= (bytes)")


def check_gradient(grad, mode: str) -> None:
    """A NaN or infinite gradient says nothing about the RF: refuse it."""
    import numpy as np
    if not np.isfinite(grad).all():
        bad = int((~np.isfinite(grad)).sum())
        raise ModelError(f"the input gradient has {bad} NaN or infinite values in mode={mode!r} (an "
                         "overflow, or a NaN produced inside the model), so zero and nonzero cannot be "
                         "told apart. Use mode='structural' (rescaled per layer, never overflows), or "
                         "dtype=torch.float64, or smaller inputs")


def check_unit(unit, arg: str = "unit") -> None:
    """A unit is None, an int (every axis) or a sequence of ints, one per spatial axis; the
    range is checked once the output's shape is known (:func:`normalize_unit`)."""
    if unit is None or (isinstance(unit, int) and not isinstance(unit, bool)):
        return
    ok = isinstance(unit, (tuple, list)) and all(
        isinstance(u, int) and not isinstance(u, bool) or (hasattr(u, "__index__") and not isinstance(u, bool))
        for u in unit)
    if not ok:
        raise ArgumentError(f"{arg}={unit!r} must be an int or a tuple of ints, one per spatial axis of "
                            "the output, e.g. (3, 4); negative counts from the end")


def normalize_unit(unit, out_spatial: Sequence[int], arg: str = "unit") -> tuple[int, ...]:
    """Check and normalise a unit (negative indices count from the end).

    >>> normalize_unit(-1, (4, 5)), normalize_unit((1, -2), (4, 5))
    ((3, 4), (1, 3))
    >>> normalize_unit((4, 0), (4, 5))
    Traceback (most recent call last):
    ...
    rfprobe.errors.ArgumentError: unit=(4, 0) is out of range for the output's spatial shape (4, 5); valid indices are -n..n-1 per axis
    """
    if isinstance(unit, int) and not isinstance(unit, bool):
        unit = (unit,) * len(out_spatial)
    try:
        if isinstance(unit, bool) or any(isinstance(u, bool) for u in unit):
            raise TypeError(unit)
        unit = tuple(operator.index(u) for u in unit)     # 2 or np.int64(2), not 1.5
    except TypeError:
        raise ArgumentError(f"{arg}={unit!r} must be a tuple of ints, one per spatial axis") from None
    if len(unit) != len(out_spatial):
        raise ArgumentError(f"{arg}={unit!r} has {len(unit)} indices but the output has "
                            f"{len(out_spatial)} spatial axes (shape {tuple(out_spatial)})")
    fixed = []
    for u, n in zip(unit, out_spatial):
        if not -n <= u < n:
            raise ArgumentError(f"{arg}={unit!r} is out of range for the output's spatial shape "
                                f"{tuple(out_spatial)}; valid indices are -n..n-1 per axis")
        fixed.append(u % n)
    return tuple(fixed)


def check_fraction(v, name: str) -> float:
    """A fraction in (0, 1] (``ERF.radius``'s ``p``, ``ERF.area_ratio``'s ``t``), as a float.

    >>> check_fraction(0.5, "t")
    0.5
    >>> check_fraction(20, "t")
    Traceback (most recent call last):
    ...
    rfprobe.errors.ArgumentError: t=20.0 must be a fraction in (0, 1] (0.2 means 20%), e.g. t=0.5
    """
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ArgumentError(f"{name}={v!r} must be a fraction in (0, 1], e.g. {name}=0.5") from None
    if not 0 < v <= 1:
        raise ArgumentError(f"{name}={v!r} must be a fraction in (0, 1] (0.2 means 20%), e.g. {name}=0.5")
    return v


def check_channel(channel, target) -> None:
    """``channel`` is None or the index of one channel of the selected output (a graph node;
    its channels may sit in dim 1 or last, channels-last)."""
    if channel is None:
        return
    if target.channel_dim is None:
        raise ArgumentError(f"channel={channel!r} but the output (shape {target.shape}) has no channel "
                            "dim besides the batch and the spatial axes; leave channel=None")
    n = target.shape[target.channel_dim]
    if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < n:
        raise ArgumentError(f"channel={channel!r} is out of range: the output has {n} channels "
                            f"(shape {target.shape}); give an int in 0..{n - 1}, or None for all")


def check_device(device) -> torch.device:
    """``device`` as a ``torch.device`` that exists here: a string or device naming a backend
    torch knows ('cpu', 'cuda', 'cuda:1', 'mps'), and for CUDA a GPU that is there."""
    try:
        if not isinstance(device, (str, torch.device)):
            raise TypeError(device)
        dev = torch.device(device)
    except (TypeError, RuntimeError, ValueError):
        raise ArgumentError(f"device={device!r} is not a device: use 'cpu', 'cuda' or 'cuda:N' "
                            "(a string or a torch.device)") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ArgumentError(f"device={device!r} but CUDA is not available here; use device='cpu' "
                                "(or None: the model's own device)")
        if dev.index is not None and dev.index >= count:
            raise ArgumentError(f"device={device!r} but this machine has {count} CUDA device(s): "
                                f"cuda:0..cuda:{count - 1}")
    return dev


# the smallest value each expectation can have: no RF has a size below 1 or a negative stride
_LEAST = {"size": 1, "stride": 0, "padding": None}   # stride 0: a whole axis read (Linear over space)


def check_expectation(name: str, value, n: int | None) -> tuple[int, ...] | None:
    """An int (every axis) or one int per axis, checked; None stays None. ``n`` None: the
    number of axes is not known yet (only the values are checked)."""
    if value is None:
        return None
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,) * (n or 1)
    least = _LEAST[name]
    if (n is not None and len(values) != n) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                      and (least is None or v >= least) for v in values):
        floor = "" if least is None else f" of at least {least}"
        raise ArgumentError(f"{name}={value!r} must be an int{floor} or one such int per spatial axis"
                            + (f" for this {n}-D output" if n is not None else ""))
    return values
