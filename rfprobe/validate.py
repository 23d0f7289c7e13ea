"""Checks at the public entry points: refuse what cannot give an exact answer, before any work,
with a message that names the argument, shows the bad value and says what to do.

Every argument check lives here; :func:`rfprobe.prepare.prepare` runs the ones the entry
points share, in one order, and each entry point runs its own (a probe's mode, erf's inputs).

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

from . import render
from .errors import ArgumentError, ModelError, ResourceError

from .spec import build
from .trace.model_copy import available_bytes, infer_channels, infer_dims
from .ops.maps import each_axis

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
    """A seed torch's generators take: an int in ``-2**63 .. 2**64 - 1``.

    >>> check_seed(2**70)
    Traceback (most recent call last):
    ...
    rfprobe.errors.ArgumentError: seed=1180591620717411303424 is out of range: give an int from -2**63 to 2**64 - 1
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ArgumentError(f"seed={seed!r} must be an int")
    if not -2**63 <= seed < 2**64:
        raise ArgumentError(f"seed={seed!r} is out of range: give an int from -2**63 to 2**64 - 1")


def _tensors(model: nn.Module) -> Iterable[tuple[str, torch.Tensor]]:
    yield from model.named_parameters()
    yield from model.named_buffers()


def check_model(model: nn.Module, mode: str, who: str = "actual mode") -> None:
    """Complex weights, weights on the meta device, non-finite weights (actual mode). ``who``:
    what needs the real weights, named in the message (``erf`` runs them too)."""
    for name, t in _tensors(model):
        if t.is_complex():
            raise ArgumentError(f"model has a complex tensor {name!r} ({t.dtype}): rfprobe handles real "
                                "models only; a complex model's RF is that of its real and "
                                "imaginary parts, probe a real twin of it")
    meta = [name for name, t in _tensors(model) if t.device.type == "meta"]
    if meta:
        if mode == "actual":
            raise ArgumentError(f"model is on the meta device ({meta[0]!r} has no values): {who} "
                                "needs the real weights. Load them (model.to_empty(device='cpu') then "
                                "load_state_dict), or use mode='structural' (rfprobe.probe), or rfprobe.analyze(model)")
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
    """``device`` as a ``torch.device`` this PyTorch can use on this machine: a string or device
    naming a backend ('cpu', 'cuda', 'cuda:1', 'mps', 'xpu'), for CUDA a GPU that is there, and
    for any other backend one that can hold a tensor here (torch's own errors for a backend it was
    built without run to 7,000 characters and name no argument).

    >>> check_device("cpu")
    device(type='cpu')
    >>> check_device("gpu")
    Traceback (most recent call last):
    ...
    rfprobe.errors.ArgumentError: device='gpu' is not a device torch knows, such as 'cpu', 'cuda', 'cuda:1', 'mps' or 'xpu' (a string or a torch.device); use 'cpu' (usable here), or None for the model's own device
    """
    try:
        if not isinstance(device, (str, torch.device)):
            raise TypeError(device)
        dev = torch.device(device)
    except (TypeError, RuntimeError, ValueError):
        kind = "" if isinstance(device, str) else f" (type {type(device).__name__})"
        raise _device_refused(device, f"{kind} is not a device torch knows, such as 'cpu', 'cuda', 'cuda:1', 'mps' "
                                      "or 'xpu' (a string or a torch.device)") from None
    if dev.type == "meta":
        raise ArgumentError(f"device={device!r}: a gradient route computes values, which meta tensors do "
                            "not hold; use device='cpu' or 'cuda' (rfprobe.analyze needs no device)")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise _device_refused(device, " but CUDA is not available here")
        if dev.index is not None and dev.index >= count:
            raise _device_refused(device, f" but this machine has {count} CUDA device(s): cuda:0..cuda:{count - 1}")
    elif dev.type != "cpu" and not _holds_a_tensor(dev):
        raise _device_refused(device, f" is not available here: this PyTorch ({torch.__version__}) cannot put a "
                                      f"tensor on {str(dev)!r} (it was built without that backend, or the machine "
                                      "has no such device)")
    return dev


def _device_refused(device, problem: str) -> ArgumentError:
    """``device=`` refused: the ``problem`` after the value, then the devices usable here, in the
    Python API's words and the command line's (``--device``)."""
    usable = _usable_devices()
    return ArgumentError(f"device={_shown(device)}{problem}; use {', '.join(map(repr, usable))} (usable here), "
                         "or None for the model's own device",
                         cli=f"--device {device}{problem}; use --device {' or '.join(usable)} (usable here), or "
                         "leave --device out for the model's own device")


def _holds_a_tensor(dev: torch.device) -> bool:
    """Whether an empty tensor can be made on ``dev``: the one test every backend answers (torch
    raises NotImplementedError, RuntimeError, AssertionError or ImportError where it cannot)."""
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.empty(0, device=dev)
    except Exception:
        return False
    return True


def _usable_devices() -> list[str]:
    """The devices a gradient route can run on here: 'cpu', then CUDA's and the current
    accelerator's (mps, xpu) where one is available."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    accelerator = getattr(torch, "accelerator", None)    # torch >= 2.6
    if accelerator is not None and accelerator.is_available():
        current = accelerator.current_accelerator()
        if current is not None and current.type not in found:
            found.append(current.type)
    return found


# the smallest value each expectation can have: no RF has a size below 1 or a negative stride
_LEAST = {"size": 1, "stride": 0, "padding": None}   # stride 0: a whole axis read (Linear over space)


def check_expectation(name: str, value, n: int | None) -> tuple[int, ...] | None:
    """An int (every axis) or one int per axis, checked; None stays None. ``n`` None: the
    number of axes is not known yet (only the values are checked)."""
    if value is None:
        return None
    values = each_axis(value, n or 1)
    least = _LEAST[name]
    if (n is not None and len(values) != n) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                      and (least is None or v >= least) for v in values):
        floor = "" if least is None else f" of at least {least}"
        raise ArgumentError(f"{name}={value!r} must be an int{floor} or one such int per spatial axis"
                            + (f" for this {n}-D output" if n is not None else ""))
    return values


# ----------------------------------------------------------------------------- the model and its input
def as_model(model_or_spec, **build_kw) -> nn.Module:
    """Accept a module, or a spec string/list (built with ``rfprobe.build`` and put in eval
    mode: a spec describes an architecture, whose BatchNorm should not couple the batch)."""
    if isinstance(model_or_spec, torch.jit.ScriptModule):
        raise ArgumentError(f"model is a TorchScript module ({type(model_or_spec).__name__}): rfprobe follows "
                            "the Python module's own code, which scripting or tracing compiles away. Pass "
                            "the module before torch.jit.script / torch.jit.trace (the same weights)")
    if isinstance(model_or_spec, nn.Module):
        return _uncompiled(model_or_spec)
    if isinstance(model_or_spec, (str, list, tuple)):
        return build(model_or_spec, **build_kw).eval()
    raise ArgumentError(f"model must be a torch.nn.Module or a spec string, not "
                        f"{type(model_or_spec).__name__} ({model_or_spec!r:.60})")


def _uncompiled(model: nn.Module) -> nn.Module:
    """The module ``torch.compile`` wrapped (its ``_orig_mod``): rfprobe runs that module's code on
    its own copy and never calls the compiled forward. Told by the class's name, so that rfprobe
    imports no ``torch._dynamo`` (seconds) for models that were never compiled."""
    while type(model).__name__ == "OptimizedModule" and isinstance(getattr(model, "_orig_mod", None), nn.Module):
        model = model._orig_mod
    return model


def layer_name(model: nn.Module, layer) -> str | None:
    """``layer=`` as the name the rest of rfprobe selects by: a name stays; a module of ``model``
    (found by identity among ``model.named_modules()``, so a module of the model that was given
    to ``torch.compile`` is found too) becomes its path; the model itself is its own output (None).
    A message names a module by its class, never by its repr (a model's repr runs to pages).

    >>> import rfprobe
    >>> net = rfprobe.build("conv3 relu conv3")
    >>> layer_name(net, net[1]), layer_name(net, "2"), layer_name(net, net)
    ('1', '2', None)
    >>> layer_name(net, rfprobe.build("conv3")[0])
    Traceback (most recent call last):
    ...
    rfprobe.errors.ArgumentError: layer= got a Conv2d module that is not part of this model (it is not among model.named_modules(); a copy of a module, or a module of another instance of the model, is another object): pass a module of the model you analyse, such as model.layer3, or its name as a string, such as '0'
    """
    if layer is None or isinstance(layer, str):
        return layer
    if not isinstance(layer, nn.Module):
        text = repr(layer)
        shown = f"layer={text}" if len(text) <= 60 and "\n" not in text else "layer="
        raise ArgumentError(f"{shown} (type {type(layer).__name__}) must be a module name like 'layer3' or "
                            "'features.16', a module of the model (model.layer3), or a node name from "
                            "rfprobe.analyze(model).layers")
    layer = _uncompiled(layer)
    for name, module in model.named_modules():
        if module is layer:
            return name or None
    example = next((n for n, _ in model.named_children()), "layer3")
    raise ArgumentError(f"layer= got a {type(layer).__name__} module that is not part of this model (it is not "
                        "among model.named_modules(); a copy of a module, or a module of another instance of "
                        "the model, is another object): pass a module of the model you analyse, such as "
                        f"model.layer3, or its name as a string, such as {example!r}")


def _whole(s) -> int:
    """A size: an int, or a float with no fraction (8.0); 8.5 is an error, not 8."""
    if isinstance(s, bool) or (isinstance(s, float) and not s.is_integer()):
        raise ValueError(s)
    return int(s)


def resolve_input_shape(model: nn.Module, input_shape, check_channels: bool = True
                        ) -> tuple[tuple[int, ...] | None, int, int]:
    """(shape or None, channels, dims) from the user's ``input_shape`` and the model.

    ``check_channels=False`` trusts the user's channel count and spatial rank (the first conv
    registered need not be the first one applied: a 2D model may run a Conv1d along rows);
    :func:`rfprobe.routes.fit.choose_input` then checks them only if the model fails. A bad
    ``input_shape`` that would be a valid unit (the second positional argument of ``probe`` and
    ``verify`` was the unit before 0.2.0) is refused with "did you mean unit=...".

    >>> import rfprobe
    >>> resolve_input_shape(rfprobe.build("conv3"), (1, 8, 8))
    ((1, 8, 8), 1, 2)
    >>> resolve_input_shape(rfprobe.build("conv3"), (3, 4))
    Traceback (most recent call last):
    ...
    rfprobe.errors.ArgumentError: input_shape=(3, 4) has rank 2 but this model takes (C, H, W): give 3 numbers, channels first, no batch. Did you mean unit=(3, 4)? Everything after input_shape is keyword-only since rfprobe 0.2.0.
    """
    if isinstance(input_shape, torch.Tensor):
        raise ArgumentError(f"input_shape= got a tensor of shape {tuple(input_shape.shape)}: input_shape is "
                            "(C, *spatial) as a tuple; to measure with real inputs pass them as inputs=... "
                            "(everything after input_shape is keyword-only since rfprobe 0.2.0)")
    try:
        return _resolve_input_shape(model, input_shape, check_channels)
    except ArgumentError as e:
        hint = _unit_hint(input_shape, infer_dims(model))
        if hint:
            raise ArgumentError(f"{str(e).rstrip('.')}. {hint}") from None
        raise


def _unit_hint(value, dims: int | None) -> str:
    """"Did you mean unit=...?" when ``value`` (a rejected input_shape) would be a valid unit."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_unit = is_int or (isinstance(value, (tuple, list)) and dims is not None and len(value) == dims
                         and all(isinstance(v, int) and not isinstance(v, bool) for v in value))
    if not is_unit:
        return ""
    return (f"Did you mean unit={tuple(value) if not is_int else value!r}? Everything after input_shape is "
            "keyword-only since rfprobe 0.2.0.")


def _resolve_input_shape(model: nn.Module, input_shape, check_channels: bool):
    dims = infer_dims(model)
    channels = infer_channels(model)
    if input_shape is None:
        if dims is None or channels is None:
            raise ArgumentError("input_shape is needed: rfprobe cannot tell the input's channels "
                                "and spatial rank from this model; pass input_shape=(C, H, W)")
        return None, channels, dims
    shown = _shown(input_shape)
    if not isinstance(input_shape, (tuple, list)) and hasattr(input_shape, "shape") and hasattr(input_shape, "dtype"):
        raise ArgumentError(f"input_shape= got an array of shape {tuple(input_shape.shape)}: input_shape is "
                            "(C, *spatial) as a tuple, such as (3, 224, 224)")
    try:
        if isinstance(input_shape, (str, bytes)):
            raise TypeError(input_shape)
        shape = tuple(None if s is None else _whole(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ArgumentError(f"input_shape={shown} must be a tuple like (3, 224, 224)") from None
    if (dims is not None and len(shape) == dims + 2 and shape[0] == 1
            and (not check_channels or channels is None or shape[1] in (None, channels))):
        # a batch of one given explicitly; unless the channels after it are wrong: then it is the
        # rank (a 1-D model given (1, 64, 64) is told the rank, not that it has 64 channels)
        shape = shape[1:]
    if dims is not None and len(shape) != dims + 1 and check_channels:
        raise ArgumentError(f"input_shape={shown} has rank {len(input_shape)} but this model "
                            f"takes (C, {', '.join('L' if dims == 1 else 'HWD'[i] for i in range(dims))})"
                            f": give {dims + 1} numbers, channels first, no batch")
    if len(shape) < 2:
        raise ArgumentError(f"input_shape={shown} needs channels and at least one spatial size")
    if any(s is not None and s < 1 for s in shape):
        raise ArgumentError(f"input_shape={shown} has a size below 1")
    if check_channels and channels is not None and shape[0] is not None and shape[0] != channels:
        raise ArgumentError(f"input_shape={shown} has {shape[0]} channels but the model's first "
                            f"conv takes {channels}; use input_shape=({channels}, ...)")
    if shape[0] is None:
        if channels is None:
            raise ArgumentError("input_shape has no channel count and the model has no conv to tell it")
        shape = (channels,) + shape[1:]
    return shape, shape[0], len(shape) - 1


def _shown(value, limit: int = 80) -> str:
    """``repr(value)`` for a message, cut at ``limit`` characters (an input_shape that is a nested
    list of numbers, or a tuple of tensors, is not printed whole)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def shape_of_inputs(model: nn.Module, inputs: torch.Tensor, input_shape) -> tuple[int, ...]:
    """(C, *spatial) of actual mode's ``inputs``, given as (C, *spatial) or (1, C, *spatial):
    the model's spatial rank tells which (a (C, H, W) image lost its channels before)."""
    dims = infer_dims(model)
    if input_shape is not None:
        dims = len(tuple(input_shape)) - 1
    shape = tuple(inputs.shape)
    if dims is None:
        dims = len(shape) - 2 if len(shape) >= 3 else len(shape) - 1
    if len(shape) == dims + 2:
        if shape[0] != 1:
            raise ArgumentError(f"inputs has a batch of {shape[0]} (shape {shape}): the probe measures one "
                                "input; pass inputs[i:i + 1], or average over many with rfprobe.erf")
        shape = shape[1:]
    elif len(shape) != dims + 1:
        raise ArgumentError(f"inputs has shape {shape}, but this model takes {dims} spatial axes: give "
                            f"(C, *spatial) or (1, C, *spatial)")
    if input_shape is not None and tuple(input_shape) != shape:
        raise ArgumentError(f"input_shape={tuple(input_shape)!r} disagrees with inputs of shape {shape}; "
                            "give one of them")
    return shape


def run_device(model: nn.Module, device) -> torch.device:
    """Where a gradient route runs: ``device`` (checked), else the model's own device (its first
    parameter not on meta), else the CPU."""
    if device is not None:
        return check_device(device)
    for p in model.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


# ----------------------------------------------------------------------------- the selected output
def check_spatial_output(target, suggested: str | None = None, lost=None) -> None:
    """The selected output (a graph node) has spatial axes; ``suggested`` names a layer to pick
    (:func:`rfprobe.routes.closed.suggest_layer`), in the API's words and the command line's;
    ``lost`` the node whose op lost them (``trace.graph.axes_lost_at``), named in the error."""
    if target.spatial is None:
        where = (None,) if lost is None else (lost.op, lost.name, getattr(lost.deps, "why", ""))
        raise ArgumentError(render.no_spatial_output(target.name, target.shape, suggested, False, *where),
                            cli=render.no_spatial_output(target.name, target.shape, suggested, True, *where))


def check_target(target, shape, suggested: str | None = None, lost=None) -> None:
    """The selected output of a trace at ``shape`` has spatial axes, none of them empty."""
    check_spatial_output(target, suggested, lost)
    if any(s < 1 for s in target.spatial):
        raise ArgumentError(f"input_shape={shape} is too small: output {target.name!r} has spatial "
                            f"shape {target.spatial}")


def normalize_units(units, out_spatial) -> list[tuple[int, ...]]:
    """``units=`` of probe_many: a non-empty list of units, each checked and normalised."""
    if isinstance(units, (int, str)) or (isinstance(units, tuple) and all(isinstance(v, int) for v in units)):
        raise ArgumentError(f"units={units!r} must be a list of units, e.g. [(0, 0), (-1, -1)]")
    try:
        us = [normalize_unit(v, out_spatial, "units") for v in units]
    except TypeError:
        raise ArgumentError(f"units={units!r} must be a list of units, e.g. [(0, 0), (-1, -1)]") from None
    if not us:
        raise ArgumentError("units=[] is empty: give at least one output unit")
    return us


# ----------------------------------------------------------------------------- probe's and erf's own
def check_mode(mode) -> None:
    if mode not in ("structural", "actual"):
        raise ArgumentError(f"mode={mode!r} must be 'structural' or 'actual'")


def check_full(full) -> None:
    if full not in (None, True, False):
        raise ArgumentError(f"full={full!r} must be True (whole map), False (slab mode when "
                            "possible) or None (slab mode for large inputs)")


STATISTICS = ("abs", "sq")


def check_statistic(statistic) -> None:
    if statistic not in STATISTICS:
        raise ArgumentError(f"statistic={statistic!r} must be 'abs' (mean |gradient|) or 'sq' "
                            "(mean squared gradient)")


def check_count(n) -> None:
    """``n=`` of erf: how many inputs to average over."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ArgumentError(f"n={n!r} must be a positive int: the number of inputs to average over")


def check_batch_size(batch_size) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ArgumentError(f"batch_size={batch_size!r} must be a positive int")


def _not_an_input(item) -> ArgumentError:
    return ArgumentError(f"inputs must be a tensor (N, C, ...) or an iterable of tensors or "
                         f"(input, label) pairs; found an item of type {type(item).__name__}")


def input_items(inputs) -> Iterable[torch.Tensor]:
    """erf's ``inputs``, item by item: a tensor, an array, or an iterable of tensors or
    (input, label) pairs (a DataLoader)."""
    import numpy as np
    if isinstance(inputs, torch.Tensor):
        yield inputs
        return
    if isinstance(inputs, np.ndarray):
        yield torch.from_numpy(inputs)
        return
    for item in inputs:
        if isinstance(item, (tuple, list)):
            item = item[0]
        if not isinstance(item, torch.Tensor):
            raise _not_an_input(item)
        yield item


def first_input_shape(inputs):
    """The first item's shape, and inputs still holding every item (a one-shot iterator,
    such as a generator, is not consumed)."""
    import itertools
    import numpy as np
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        return tuple(inputs.shape), inputs
    it = iter(inputs)
    for item in it:
        if it is inputs:
            inputs = itertools.chain([item], it)
        if isinstance(item, (tuple, list)):
            item = item[0]
        if not hasattr(item, "shape"):
            raise _not_an_input(item)
        return tuple(item.shape), inputs
    raise ArgumentError("inputs is empty; pass a tensor (N, C, ...) or leave inputs=None for random ones")


def shape_of_batches(model: nn.Module, inputs, input_shape):
    """(C, *spatial) of erf's ``inputs`` (items (N, C, *spatial) or (C, *spatial): the model's
    spatial rank tells which), and inputs still holding every item; they fix the shape, so an
    ``input_shape`` as well is refused."""
    shape, inputs = first_input_shape(inputs)
    if input_shape is not None:
        raise ArgumentError("give inputs= or input_shape=, not both: the inputs fix the shape")
    dims = infer_dims(model)
    return (shape if dims is not None and len(shape) == dims + 1 else shape[1:]), inputs


def check_item_shape(x: torch.Tensor, input_shape) -> None:
    """Every batch of erf's inputs has the first item's (C, *spatial)."""
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise ArgumentError(f"inputs have shape {tuple(x.shape[1:])} per item but the first had "
                            f"{tuple(input_shape)}; all inputs need one shape")
