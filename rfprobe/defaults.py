"""What rfprobe reads off the model for the arguments a call leaves out or gives loosely: the
module behind a spec string or a compiled model, a layer given as a module, the input shape
(channels and spatial rank from the model's first layers), and the device to run on.

It reads the model (:mod:`rfprobe.trace.model_copy` says what a model tells without running),
so it sits below the routes and :mod:`rfprobe.prepare`, which use it, and above
:mod:`rfprobe.validate`, whose checks it runs on what it infers.

>>> net = as_model("conv3 relu conv3")                   # a spec string: the module it builds
>>> resolve_input_shape(net, None), run_device(net, None), layer_name(net, net[2])
((None, 1, 2), device(type='cpu'), '2')
>>> resolve_input_shape(net, (1, 1, 16, 16))             # a batch of one, given explicitly
((1, 16, 16), 1, 2)
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .errors import ArgumentError
from .spec import build
from .trace.model_copy import infer_channels, infer_dims
from .validate import check_device, short_repr


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
    shown = short_repr(input_shape)
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

