"""Snapshots of a model and of torch's global settings, compared with a readable diff.

A model snapshot records, for every parameter and buffer (by qualified name, duplicates
included): the object's identity and storage pointer, its value bit for bit (NaN-safe), dtype,
device, shape, ``requires_grad``, ``.grad`` (bit for bit) and the tensor hooks registered on it;
for every module: its class, ``training`` flag, every kind of module hook (forward, forward pre,
with kwargs, always-called, backward, backward pre, full-backward flag, state-dict save and load
hooks), the names of its attributes and the values of its plain ones (numbers, strings, tuples).

>>> import torch.nn as nn
>>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
>>> before = snapshot(net)
>>> diff(before, snapshot(net))
[]
>>> _ = net.eval()
>>> diff(before, snapshot(net))
["module '1': training True -> False", "module '0': training True -> False", "module '': training True -> False"]
>>> g = global_settings()
>>> diff_settings(g, global_settings())
[]
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

_MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs",
                 "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called", "_backward_hooks",
                 "_backward_pre_hooks", "_state_dict_hooks", "_state_dict_pre_hooks",
                 "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")


_PLAIN = (bool, int, float, str, tuple, type(None))


def _bits(t: torch.Tensor):
    """A value that compares equal iff the tensor's contents are equal bit for bit."""
    if t.device.type == "meta":
        return ("meta", tuple(t.shape))
    x = t.detach().cpu().contiguous()
    return (tuple(x.shape), x.dtype, bytes(x.reshape(-1).view(torch.uint8).numpy().tobytes()))


def _hooks(d) -> tuple:
    if not d:
        return ()
    return tuple((k, id(v) if not isinstance(v, (bool, int)) else v) for k, v in d.items())


def _tensor(t: torch.Tensor) -> dict[str, Any]:
    return {
        "object": id(t),
        "data_ptr": t.data_ptr() if t.device.type != "meta" else None,
        "value": _bits(t),
        "dtype": t.dtype,
        "device": t.device,
        "requires_grad": t.requires_grad,
        "is_leaf": t.is_leaf,
        "grad": None if t.grad is None else _bits(t.grad),
        "grad_object": None if t.grad is None else id(t.grad),
        "tensor hooks": _hooks(getattr(t, "_backward_hooks", None)),
        "post-accumulate hooks": _hooks(getattr(t, "_post_accumulate_grad_hooks", None)),
    }


def snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything about ``model`` that a call must not change, keyed for :func:`diff`."""
    snap: dict[str, Any] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        snap[f"parameter {name!r}"] = _tensor(p)
    for name, b in model.named_buffers(remove_duplicate=False):
        snap[f"buffer {name!r}"] = _tensor(b)
    for name, m in model.named_modules(remove_duplicate=False):
        entry = {"class": type(m), "training": m.training,
                 "attributes": tuple(sorted(vars(m))),
                 "full backward hook": getattr(m, "_is_full_backward_hook", None),
                 "non-persistent buffers": tuple(sorted(getattr(m, "_non_persistent_buffers_set", ())))}
        for attr in _MODULE_HOOKS:
            entry[attr.strip("_").replace("_", " ")] = _hooks(getattr(m, attr, None))
        for k, v in vars(m).items():
            if k not in ("training", "_is_full_backward_hook") and isinstance(v, _PLAIN):
                entry[f"attribute {k}"] = repr(v)
        snap[f"module {name!r}"] = entry
    return snap


def _describe(v) -> str:
    if isinstance(v, tuple) and len(v) == 3 and isinstance(v[2], bytes):
        return f"<{v[1]} {v[0]}, {len(v[2])} bytes>"
    return repr(v)


def diff(before: dict, after: dict) -> list[str]:
    """Readable differences between two snapshots (empty when equal)."""
    out = []
    for key in before.keys() - after.keys():
        out.append(f"{key} disappeared")
    for key in after.keys() - before.keys():
        out.append(f"{key} appeared")
    for key in before.keys() & after.keys():
        for field in before[key].keys() | after[key].keys():
            a, b = before[key].get(field), after[key].get(field)
            if a != b:
                out.append(f"{key}: {field} {_describe(a)} -> {_describe(b)}")
    return sorted(out, key=lambda s: (s.split(":")[0].count("."), s), reverse=True)


def assert_unchanged(model: nn.Module, before: dict, what: str = "the call") -> None:
    """Raise AssertionError listing every difference between ``before`` and ``model`` now."""
    d = diff(before, snapshot(model))
    assert not d, f"{what} changed the user's model:\n  " + "\n  ".join(d[:20])


def global_settings() -> dict[str, Any]:
    """torch's process-wide state that a library call must leave as it found it."""
    from torch.nn.modules import module as mm
    s: dict[str, Any] = {
        "grad mode": torch.is_grad_enabled(),
        "inference mode": torch.is_inference_mode_enabled(),
        "anomaly mode": torch.is_anomaly_enabled(),
        "default dtype": torch.get_default_dtype(),
        "deterministic algorithms": torch.are_deterministic_algorithms_enabled(),
        "float32 matmul precision": torch.get_float32_matmul_precision(),
        "mkldnn enabled": torch._C._get_mkldnn_enabled(),
        "nnpack enabled": torch._C._get_nnpack_enabled(),
        "cudnn enabled": torch.backends.cudnn.enabled,
        "cudnn benchmark": torch.backends.cudnn.benchmark,
        "cudnn deterministic": torch.backends.cudnn.deterministic,
        "cudnn allow_tf32": torch.backends.cudnn.allow_tf32,
        "cuda matmul allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "torch function modes": torch._C._len_torch_function_stack(),
        "torch dispatch modes": torch._C._len_torch_dispatch_stack(),
        "num threads": torch.get_num_threads(),
        "CPU RNG state": _bits(torch.get_rng_state()),
    }
    if hasattr(torch, "get_default_device"):
        s["default device"] = torch.get_default_device()
    for attr in dir(mm):
        if attr.startswith("_global_") and attr.endswith("hooks"):
            s[f"global module {attr.strip('_')}"] = _hooks(getattr(mm, attr))
    return s


def diff_settings(before: dict, after: dict) -> list[str]:
    return [f"{k}: {_describe(before[k])} -> {_describe(after.get(k))}"
            for k in before if before[k] != after.get(k)]


def assert_settings_unchanged(before: dict, what: str = "the call") -> None:
    d = diff_settings(before, global_settings())
    assert not d, f"{what} left torch's global settings changed:\n  " + "\n  ".join(d)
