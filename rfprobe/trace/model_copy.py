"""Private copies of the user's model, what can be read off a model without running it, and
the memory a device has left for a copy to run in.

rfprobe never runs the user's object: every route runs a copy that shares nothing with it (on
``meta`` for the analytic routes, so no parameter memory is copied). The user's forward hooks
run on the copy (bound methods rebound to the copies of their objects, closures over the model's
objects rebuilt over the copy's: ``closures.py``); backward and state-dict hooks are removed.
:func:`user_state_kept` puts back anything a hook wrote into the user's modules.

>>> import torch.nn as nn
>>> net = nn.Sequential(nn.Conv2d(3, 2, 3))
>>> infer_dims(net), infer_channels(net), input_dtype(net)
(2, 3, torch.float32)
"""
from __future__ import annotations

import contextlib
import copy
import functools
import threading
import weakref
from typing import Any

import torch
import torch.nn as nn
import torch.utils.checkpoint as ck

from .closures import over_copies


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


_FORWARD_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs",
                  "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called")
_CLEARED_HOOKS = ("_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks", "_state_dict_pre_hooks",
                  "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")
_HOOKS = _FORWARD_HOOKS + _CLEARED_HOOKS

# private copy -> the user's model it copies, for copies of models with forward hooks: running
# the copy runs the user's hooks, which may write into the user's modules (user_state_kept)
_SOURCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def private_copy(model: nn.Module, device: str | torch.device = "meta") -> nn.Module:
    """A deep copy of ``model`` that shares nothing with it; its modules carry the user's
    forward hooks (bound methods rebound to the copies of their objects, closures over the
    model's objects rebuilt over the copy's), no backward or state-dict hooks.

    On ``meta`` no parameter memory is copied. The user's object is never touched.

    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3))
    >>> twin = private_copy(net)
    >>> twin[0].weight.device.type, twin[0] is net[0], net[0].weight.device.type
    ('meta', False, 'cpu')
    """
    memo: dict[Any, Any] = _held_results(model)
    if str(device) == "meta":
        with torch.no_grad():
            twin = _meta_module(model, memo)
            for user, mine in memo.pop(_PENDING, ()):
                _copy_forward_hooks(user, mine, memo)
    else:
        with torch.no_grad():
            twin = copy.deepcopy(model, memo)    # deep-copies the hook dicts, rebinding bound methods
        for m in twin.modules():
            _clear_hooks(m)
        twin.to(device)
    if any(_has_forward_hooks(m) for m in model.modules()):
        _hooks_over_copies(twin, memo)
        _SOURCES[twin] = weakref.ref(model)
    return twin


def _hooks_over_copies(twin: nn.Module, memo: dict[Any, Any]) -> None:
    """Point the closures among ``twin``'s forward hooks at the copy's objects (``closures.py``),
    once the whole model is copied and ``memo`` knows every copy."""
    done: dict[int, Any] = {}
    for m in twin.modules():
        for attr in _FORWARD_HOOKS:
            hooks = m.__dict__.get(attr)
            for key, hook in (hooks or {}).items():    # _forward_hooks_with_kwargs holds flags
                hooks[key] = over_copies(hook, memo, done)


def _held_results(model: nn.Module) -> dict[Any, Any]:
    """A deepcopy memo that copies the results a module holds (a dict that its hooks filled
    during a plain call, ``torch.Tensor`` with a ``grad_fn``, which ``deepcopy`` refuses) as
    detached clones."""
    memo: dict[Any, Any] = {}
    skip = _NOT_HELD
    for m in model.modules():
        for k, v in m.__dict__.items():
            if k in skip:
                continue
            for t in (v.values() if isinstance(v, dict) else v if isinstance(v, (list, tuple)) else (v,)):
                if isinstance(t, torch.Tensor) and t.grad_fn is not None and id(t) not in memo:
                    memo[id(t)] = t.detach().clone()
    return memo


_NOT_HELD = frozenset(("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set", *_HOOKS))
_PENDING = "forward hooks to copy"     # a key of _meta_module's memo (the others are ids)


def _has_forward_hooks(m: nn.Module) -> bool:
    return bool(m.__dict__.get("_forward_hooks") or m.__dict__.get("_forward_pre_hooks"))


def _copy_forward_hooks(user: nn.Module, mine: nn.Module, memo: dict[Any, Any]) -> None:
    """Give ``mine`` the forward hooks of ``user``, in the same order, once the whole model is
    copied: a hook bound to a module (or to an object the model holds, timm's FeatureHooks) is
    rebound to its copy through ``memo``; a hook that cannot be copied is shared."""
    for attr in _FORWARD_HOOKS:
        theirs = user.__dict__.get(attr)
        if not theirs:
            continue
        ours = mine.__dict__[attr]
        for key, hook in theirs.items():
            if callable(hook):
                try:
                    hook = copy.deepcopy(hook, memo)
                except Exception:
                    pass
            ours[key] = hook


def _clear_hooks(m: nn.Module) -> None:
    for attr in _CLEARED_HOOKS:
        d = getattr(m, attr, None)
        if isinstance(d, dict):
            d.clear()
    m._is_full_backward_hook = None


def source_of(twin: nn.Module) -> nn.Module | None:
    """The user's model ``twin`` copies, where running ``twin`` runs the user's forward hooks."""
    ref = _SOURCES.get(twin)
    return None if ref is None else ref()


@contextlib.contextmanager
def user_state_kept(model: nn.Module | None):
    """Put every module of ``model`` back as it was when the block began, also after an
    exception: the user's hooks run on the private copy, and one that closes over the user's
    model (timm's FeatureHooks fill a dict owned by the wrapper) writes into it. Each module's
    ``__dict__`` is restored in place, and the contents of the dicts, lists and sets it holds
    (``_parameters``, ``_buffers``, a dict of features). Objects outside the model are not
    watched: a hook that appends to a global list does so, as in any forward.

    >>> net = nn.Sequential(nn.Conv2d(1, 1, 1)); net.feats = {}
    >>> with user_state_kept(net):
    ...     net.feats["a"] = 1; net.extra = 2
    >>> net.feats, hasattr(net, "extra")
    ({}, False)
    """
    if model is None:
        yield
        return
    saved = []
    for m in model.modules():
        d = m.__dict__
        contents = [(v, dict(v) if isinstance(v, dict) else list(v)) for v in d.values()
                    if isinstance(v, (dict, list, set))]
        saved.append((d, dict(d), contents))
    try:
        yield
    finally:
        for d, before, contents in saved:
            d.clear()
            d.update(before)
            for v, old in contents:
                if isinstance(v, dict):
                    v.clear()
                    v.update(old)
                elif isinstance(v, list):
                    v[:] = old
                else:
                    v.clear()
                    v.update(old)


class _Off(threading.local):
    depth = 0       # this thread's runs of a private copy under way (nested: a probe inside verify)


_OFF = _Off()
_LOCK = threading.Lock()
_ORIGINALS: dict[str, Any] = {}     # torch.utils.checkpoint's names while the stand-ins are in
_USERS = [0]                        # checkpoint_off blocks under way, in every thread


class _Reentrant:
    """Stands in for ``torch.utils.checkpoint.CheckpointFunction``, which runs the function under
    ``no_grad`` and again in the backward, out of the tracing mode; in a thread inside
    :func:`checkpoint_off` it runs the function plainly, elsewhere it hands on."""

    def __init__(self, original):
        self.original = original

    def apply(self, function, preserve_rng_state, *args):
        if _OFF.depth:
            return function(*args)
        return self.original.apply(function, preserve_rng_state, *args)

    def __getattr__(self, name: str):
        return getattr(self.original, name)


def _no_recompute(original):
    """Stands in for ``torch.utils.checkpoint._checkpoint_hook``, the saved-tensor hooks of
    ``use_reentrant=False`` (they drop what the backward needs and recompute it there): inside
    :func:`checkpoint_off`, the forward keeps its tensors as a plain one does."""
    def hook(frame):
        return contextlib.nullcontext() if _OFF.depth else original(frame)
    return hook


_STAND_INS = {"CheckpointFunction": _Reentrant, "_checkpoint_hook": _no_recompute}


@contextlib.contextmanager
def checkpoint_off():
    """Within this block, in this thread, ``torch.utils.checkpoint`` runs its function as a plain
    call. Activation checkpointing (timm's ``set_grad_checkpointing()``) recomputes a segment in
    the backward, outside the tracing mode: the probe's surrogates and per-op rescaling would
    not run there (a max pool's gradient reaches one element; torch refuses the recompute's
    other tensors), and ``use_reentrant=True`` runs the forward under ``no_grad`` and refuses
    ``autograd.grad``. Checkpointing changes memory, never values or gradients, so the copy runs
    without it. Other threads keep theirs; torch's names are put back when the last block ends.

    >>> original = ck.CheckpointFunction
    >>> with checkpoint_off():
    ...     ck.CheckpointFunction is original
    False
    >>> ck.CheckpointFunction is original
    True
    """
    with _LOCK:
        if not _USERS[0]:
            for name, stand_in in _STAND_INS.items():
                _ORIGINALS[name] = getattr(ck, name)
                setattr(ck, name, stand_in(_ORIGINALS[name]))
        _USERS[0] += 1
    _OFF.depth += 1
    try:
        yield
    finally:
        _OFF.depth -= 1
        with _LOCK:
            _USERS[0] -= 1
            if not _USERS[0]:
                for name, original in _ORIGINALS.items():
                    setattr(ck, name, original)
                _ORIGINALS.clear()


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
        twin = copy.deepcopy(m, memo)    # its hook dicts too, bound methods rebound
        for sub in twin.modules():
            _clear_hooks(sub)
        return twin
    twin = cls.__new__(cls)
    memo[id(m)] = twin
    if _has_forward_hooks(m):
        memo.setdefault(_PENDING, []).append((m, twin))
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


def backward_hooks(model: nn.Module) -> list[str]:
    """The modules of the user's model that have backward or backward-pre hooks, which the
    private copies do not run.

    >>> net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU())
    >>> _ = net[1].register_full_backward_hook(lambda m, gi, go: None)
    >>> backward_hooks(net)
    ["'1'"]
    """
    kinds = ("_backward_hooks", "_backward_pre_hooks")
    return [repr(name or "<model>") for name, m in model.named_modules()
            if any(getattr(m, k, None) for k in kinds)]


def input_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating (or complex) parameter: its input's, most likely."""
    return parameter_dtype(model, or_complex=True)


def parameter_dtype(model: nn.Module, default: torch.dtype = torch.float32, or_complex: bool = False) -> torch.dtype:
    """The dtype of the model's first floating parameter (``or_complex``: or complex one), the
    dtype its weights compute in; ``default`` for a model without one.

    >>> parameter_dtype(nn.Sequential(nn.ReLU(), nn.Conv2d(1, 1, 1).double()))
    torch.float64
    >>> parameter_dtype(nn.ReLU(), torch.float16), parameter_dtype(nn.Linear(1, 1, dtype=torch.cfloat), or_complex=True)
    (torch.float16, torch.complex64)
    """
    return next((p.dtype for p in model.parameters() if p.is_floating_point() or (or_complex and p.is_complex())),
                default)


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
