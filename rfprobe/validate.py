"""The argument checks the entry points share: refuse what cannot give an exact answer, before
any work, with a message that names the argument, shows the bad value and says what to do.

:func:`rfprobe.prepare.prepare` runs the shared ones in one order. A check that one route alone
needs lives with that route (a probe's ``mode``, ``full`` and memory in
:mod:`rfprobe.routes.probe` and :mod:`rfprobe.routes.gradient`; erf's ``inputs``, ``n`` and
``statistic`` in :mod:`rfprobe.routes.erf`), and what rfprobe reads off the model for the
arguments left out (input shape, device, the module behind a spec or a compiled model) lives in
:mod:`rfprobe.defaults`. Nothing here traces or builds a model: the results use two of these
checks, and they import neither the tracer nor the spec parser.

>>> import torch
>>> check_dtype(torch.float64)
>>> check_dtype(torch.int64)
Traceback (most recent call last):
...
rfprobe.errors.ArgumentError: dtype=torch.int64 cannot carry a gradient: use a real floating dtype (torch.float32 or torch.float64)
"""
from __future__ import annotations

import operator
from typing import Iterable, Sequence

import torch
import torch.nn as nn

from . import render
from .errors import ArgumentError

from .ops.maps import each_axis
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
    return ArgumentError(f"device={short_repr(device)}{problem}; use {', '.join(map(repr, usable))} (usable here), "
                         "or None for the model's own device",
                         cli=f"--device {device}{problem}; use --device {' or '.join(usable)} (usable here), or "
                         "leave --device out for the model's own device")


def short_repr(value, limit: int = 80) -> str:
    """``repr(value)`` for a message, cut at ``limit`` characters (an input_shape that is a nested
    list of numbers, or a tuple of tensors, is not printed whole).

    >>> short_repr(tuple(range(40)), limit=20)
    '(0, 1, 2, 3, 4, 5...'
    """
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


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
