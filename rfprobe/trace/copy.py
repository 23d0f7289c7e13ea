"""Private copies of the user's model, what can be read off a model without running it, and
the memory a device has left for a copy to run in.

rfprobe never runs the user's object: every route runs a copy that shares nothing with it (on
``meta`` for the analytic routes, so no parameter memory is copied), hooks removed.

>>> import torch.nn as nn
>>> net = nn.Sequential(nn.Conv2d(3, 2, 3))
>>> infer_dims(net), infer_channels(net), input_dtype(net)
(2, 3, torch.float32)
"""
from __future__ import annotations

import contextlib
import copy
import functools
from typing import Any

import torch
import torch.nn as nn


def infer_dims(model: nn.Module) -> int | None:
    """Number of spatial axes, from the first conv or pool module (None if there is none)."""
    for m in model.modules():
        for d, classes in ((1, (nn.Conv1d, nn.ConvTranspose1d, nn.MaxPool1d, nn.AvgPool1d, nn.BatchNorm1d)),
                           (2, (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.AvgPool2d, nn.BatchNorm2d)),
                           (3, (nn.Conv3d, nn.ConvTranspose3d, nn.MaxPool3d, nn.AvgPool3d, nn.BatchNorm3d))):
            if isinstance(m, classes):
                return d
    return None


def infer_channels(model: nn.Module) -> int | None:
    """Input channels of the first conv module (None if there is none), read through a
    space-to-depth (or depth-to-space) at the model's entry: ``nn.Sequential(PixelUnshuffle(4),
    Conv2d(48, ...))`` takes 3 channels, not 48.

    >>> infer_channels(nn.Sequential(nn.PixelUnshuffle(4), nn.Conv2d(48, 8, 3)))
    3
    """
    conv = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    if conv is None:
        return None
    entry = entry_module(model)
    if isinstance(entry, nn.PixelUnshuffle) and conv.in_channels % entry.downscale_factor ** 2 == 0:
        return conv.in_channels // entry.downscale_factor ** 2
    if isinstance(entry, nn.PixelShuffle):
        return conv.in_channels * entry.upscale_factor ** 2
    return conv.in_channels


def entry_module(model: nn.Module) -> nn.Module | None:
    """The first leaf module the model runs, where that is known without running it: the first
    leaf of nested ``nn.Sequential`` containers (None where the order is the model's code's)."""
    m = model
    while isinstance(m, nn.Sequential):
        if len(m) == 0:
            return None
        m = m[0]
    return m if not list(m.children()) else None


_SHARED_META: dict[int, nn.Module | None] = {}   # id(model) -> its meta copy, inside one_meta_copy


@contextlib.contextmanager
def one_meta_copy(model: nn.Module):
    """Within this block every trace of ``model`` reuses one meta copy: choosing an input traces
    a model at several sizes, and deep-copying it each time cost more than the traces."""
    key = id(model)
    owner = key not in _SHARED_META
    if owner:
        _SHARED_META[key] = None
    try:
        yield
    finally:
        if owner:
            _SHARED_META.pop(key, None)


def meta_twin(model: nn.Module) -> nn.Module:
    twin = _SHARED_META.get(id(model))
    if twin is None:
        twin = private_copy(model, "meta")
        if id(model) in _SHARED_META:
            _SHARED_META[id(model)] = twin
    return twin


_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
          "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called",
          "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
          "_load_state_dict_post_hooks")


def private_copy(model: nn.Module, device: str | torch.device = "meta") -> nn.Module:
    """A deep copy of ``model`` that shares nothing with it, hooks removed.

    On ``meta`` no parameter memory is copied. The user's object is never touched.

    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3))
    >>> twin = private_copy(net)
    >>> twin[0].weight.device.type, twin[0] is net[0], net[0].weight.device.type
    ('meta', False, 'cpu')
    """
    if str(device) == "meta":
        with torch.no_grad():
            return _meta_module(model, {})
    with torch.no_grad():
        twin = copy.deepcopy(model)
    for m in twin.modules():
        _clear_hooks(m)
    twin.to(device)
    return twin


def _clear_hooks(m: nn.Module) -> None:
    for attr in _HOOKS:
        d = getattr(m, attr, None)
        if isinstance(d, dict):
            d.clear()
    m._is_full_backward_hook = None


# attribute values a copy may share with the user's module: nothing in them can change
_IMMUTABLE = frozenset([int, float, complex, bool, str, bytes, type(None), torch.dtype, torch.device, torch.Size,
                        torch.memory_format, torch.layout, type, range, frozenset])


@functools.lru_cache(maxsize=None)
def _plain_module_class(cls: type) -> bool:
    """True when ``copy.deepcopy`` of a ``cls`` instance would do nothing but deep-copy
    ``nn.Module.__getstate__``'s dict into ``__setstate__`` (no custom copy or pickle protocol,
    no slots, not scripted)."""
    return (getattr(cls, "__deepcopy__", None) is None and cls.__reduce_ex__ is nn.Module.__reduce_ex__
            and cls.__reduce__ is nn.Module.__reduce__ and cls.__getstate__ is nn.Module.__getstate__
            and not hasattr(cls, "__slots__") and not issubclass(cls, torch.jit.ScriptModule))


def _meta_module(m: nn.Module, memo: dict[int, Any]) -> nn.Module:
    """``m`` copied onto meta the way ``copy.deepcopy`` would, but built directly: parameters
    and buffers become meta tensors (plain tensor attributes are copied as they are, as
    ``.to(device)`` moves them not), child modules are copied the same way,
    hook dicts start empty, immutable attributes are shared and anything else is deep-copied.
    Choosing an input traces a model more than once, and ``deepcopy`` of a 600-module densenet
    cost 30 ms, a third of one forward at 224."""
    if id(m) in memo:
        return memo[id(m)]
    cls = type(m)
    if not _plain_module_class(cls):
        _meta_tensors(m, memo)
        twin = copy.deepcopy(m, memo)
        for sub in twin.modules():
            _clear_hooks(sub)
        return twin
    twin = cls.__new__(cls)
    memo[id(m)] = twin
    state = m.__getstate__()     # a new dict: its values are replaced in place
    for k, v in state.items():
        kind = _STATE_KIND.get(k)
        if kind is None:
            if type(v) in _IMMUTABLE:
                continue
            if isinstance(v, torch.Tensor) and id(v) in memo:   # a parameter or buffer held twice
                state[k] = memo[id(v)]
            elif type(v) in (tuple, list, set) and all(type(x) in _IMMUTABLE for x in v):
                if type(v) is not tuple:
                    state[k] = type(v)(v)       # e.g. _non_persistent_buffers_set
            else:
                state[k] = copy.deepcopy(v, memo)
        elif kind == "tensors":
            state[k] = type(v)((n, None if t is None else _meta_tensor(t, memo)) for n, t in v.items())
        elif kind == "modules":
            state[k] = type(v)((n, None if c is None else _meta_module(c, memo)) for n, c in v.items())
        elif kind == "hooks":
            state[k] = type(v)()
        else:
            state[k] = None
    twin.__setstate__(state)   # as deepcopy does: Conv2d's adds padding_mode to old pickles
    return twin


_STATE_KIND = {"_parameters": "tensors", "_buffers": "tensors", "_modules": "modules",
               "_is_full_backward_hook": "none", **{h: "hooks" for h in _HOOKS}}


def _meta_tensor(t: torch.Tensor, memo: dict[int, Any]) -> torch.Tensor:
    """A meta tensor like ``t`` (a Parameter again if ``t`` is one of the model's), one per
    original so tied weights stay tied."""
    new = memo.get(id(t))
    if new is None:
        new = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")
        if type(t) is nn.Parameter or (type(t) is not torch.Tensor and isinstance(t, nn.Parameter)):
            new = nn.Parameter(new, requires_grad=t.requires_grad)
        memo[id(t)] = new
    return new


def _meta_tensors(m: nn.Module, memo: dict[int, Any]) -> None:
    """Enter every parameter and buffer under ``m`` in ``memo`` as meta, so ``deepcopy`` of an
    unusual module copies no parameter memory."""
    for t in list(m.parameters()) + list(m.buffers()):
        _meta_tensor(t, memo)


def forward_hooks(model: nn.Module) -> list[str]:
    """Where the user's model (or torch, globally) has forward or forward-pre hooks."""
    kinds = ("_forward_hooks", "_forward_pre_hooks")
    where = [repr(name or "<model>") for name, m in model.named_modules()
             if any(getattr(m, k, None) for k in kinds)]
    from torch.nn.modules import module as _nn_module
    if getattr(_nn_module, "_global_forward_hooks", None) or getattr(_nn_module, "_global_forward_pre_hooks", None):
        where.append("every module (global hooks)")
    return where


def input_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating (or complex) parameter: its input's, most likely."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point() or p.is_complex()),
                torch.float32)


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
