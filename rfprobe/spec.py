"""The stack spec language: a compact way to write a conv stack and build it.

Tokens are separated by spaces or commas; options follow ``/`` in any order::

    conv3 conv3x3 conv1x7 conv3x3x3   convolution, kernel per axis (one number = all axes)
      /s2 stride  /p1 padding (/same, /valid)  /d2 dilation  /g4 groups  /dw depthwise
      /c64 output channels  /nobias    (per-axis values: /s1x2)
    convT4/s2                          transposed convolution (/op1 output_padding)
    maxpool2 avgpool3/s2/p1 /ceil      pooling; stride defaults to the kernel
    up2 up2/bilinear                   upsampling by a factor
    relu gelu silu sigmoid tanh bn id  pointwise layers

>>> net = build("conv3/c8 relu conv3/s2", in_channels=3)
>>> [type(m).__name__ for m in net]
['Conv2d', 'ReLU', 'Conv2d']
>>> net[2].rfprobe_token
'conv3/s2'
>>> parse("maxpool2/ceil")[0].ceil
True
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence, Union

import torch.nn as nn

from .errors import SpecError, did_you_mean, nearest

Spec = Union[str, Sequence[Union[str, dict]]]

POINTWISE = {
    "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh, "id": nn.Identity, "bn": None,  # bn depends on dims
}
WINDOWED = ("conv", "convT", "maxpool", "avgpool", "up")
WORDS = WINDOWED + tuple(POINTWISE)
UP_MODES = ("nearest", "bilinear", "bicubic", "linear", "trilinear", "nearest-exact")
_OPTION_FLAGS = ("s", "p", "d", "g", "c", "op", "dw", "nobias", "ceil", "same", "valid") + UP_MODES


@dataclass(frozen=True)
class LayerSpec:
    """One parsed layer. Tuples are per spatial axis once ``dims`` is known."""

    op: str
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] | None = None
    padding: tuple[int, ...] | str = (0,)
    dilation: tuple[int, ...] = (1,)
    groups: int = 1
    depthwise: bool = False
    channels: int | None = None
    bias: bool = True
    output_padding: tuple[int, ...] = (0,)
    ceil: bool = False
    mode: str = "nearest"
    token: str = ""
    position: int = 0


def _fail(token: str, position: int, why: str) -> SpecError:
    return SpecError(f"spec token {position} {token!r}: {why}")


def _ints(text: str, token: str, position: int, what: str) -> tuple[int, ...]:
    parts = text.split("x")
    if not all(p.isdigit() for p in parts):
        raise _fail(token, position, f"{what} must be whole numbers like 3 or 1x7, not {text!r}")
    return tuple(int(p) for p in parts)


def _parse_token(token: str, position: int) -> LayerSpec:
    head, *options = token.split("/")
    match = re.fullmatch(r"(convT|conv|maxpool|avgpool|up)([\dx]*)", head)
    if match is None:
        if head in POINTWISE:
            if options:
                raise _fail(token, position, f"{head!r} takes no options")
            return LayerSpec(op=head, token=token, position=position)
        sized = re.fullmatch(r"(convT|conv|maxpool|avgpool|up)(\d.*)", head)
        if sized:                               # conv3.0, up1.5, conv-3
            op, size = sized.groups()
            raise _fail(token, position, f"{'factors' if op == 'up' else 'kernel sizes'} must be whole "
                        f"numbers like 3 or 1x7, not {size!r}")
        plain = re.fullmatch(r"([a-z]+)\d+", head)
        if plain and plain.group(1) in POINTWISE:   # relu2
            raise _fail(token, position, f"{plain.group(1)!r} takes no size; write {plain.group(1)!r}")
        lowered = {o.lower(): o for o in WORDS}      # 'CONV3' and 'Relu' find their word too
        hit = nearest(head.lower(), list(lowered), strip_digits=True)
        raise _fail(token, position, "unknown layer." + (f" Did you mean {lowered[hit]!r}?" if hit else "")
                    + f" Valid layers: {', '.join(WORDS)}.")
    op, digits = match.groups()
    if not digits:
        raise _fail(token, position, f"{op!r} needs a size, as in {op}3")
    size = _ints(digits, token, position, "kernel sizes")
    if 0 in size:
        raise _fail(token, position, "a kernel or factor of 0 is impossible; use 1 or more")
    kw: dict[str, Any] = {"op": op, "kernel": size, "token": token, "position": position}
    for opt in options:
        m = re.fullmatch(r"(op|s|p|d|g|c)([\dx]+)", opt)
        if m:
            name, value = m.groups()
            nums = _ints(value, token, position, f"/{name} values")
            key = {"s": "stride", "p": "padding", "d": "dilation", "op": "output_padding"}.get(name)
            if key:
                kw[key] = nums
            elif len(nums) != 1:
                raise _fail(token, position, f"/{name} takes one number")
            else:
                kw["groups" if name == "g" else "channels"] = nums[0]
        elif opt in ("same", "valid"):
            kw["padding"] = opt
        elif opt == "dw":
            kw["depthwise"] = True
        elif opt == "nobias":
            kw["bias"] = False
        elif opt == "ceil":
            kw["ceil"] = True
        elif opt in UP_MODES and op == "up":
            kw["mode"] = opt
        else:
            raise _fail(token, position, f"unknown option '/{opt}'." + _option_hint(opt))
    _check_option_fits(kw, token, position)
    _check_values(kw, token, position)
    return LayerSpec(**kw)


# long names people write for the short flags, so '/stride2' suggests '/s2'
_OPTION_ALIASES = {"stride": "s", "strides": "s", "step": "s", "pad": "p", "padding": "p",
                   "dilation": "d", "dil": "d", "dilate": "d", "rate": "d", "group": "g",
                   "groups": "g", "channels": "c", "ch": "c", "out": "c", "outpad": "op",
                   "output_padding": "op", "depthwise": "dw", "bias": "nobias", "nb": "nobias",
                   "ceil_mode": "ceil"}
_NUMERIC_FLAGS = ("s", "p", "d", "g", "c", "op")


def _option_hint(opt: str) -> str:
    """' Did you mean '/s2'?' for '/stride2': keeps the number, fixes the name."""
    m = re.fullmatch(r"([A-Za-z_-]*)([\dx]*)", opt)
    name, digits = (m.groups() if m else (opt, ""))
    hit = _OPTION_ALIASES.get(name.lower())
    if hit is None:
        words = [f for f in _OPTION_FLAGS if (f in _NUMERIC_FLAGS) == bool(digits)] or list(_OPTION_FLAGS)
        hit = nearest(name, words) or nearest(name, list(_OPTION_ALIASES))
        hit = _OPTION_ALIASES.get(hit, hit)
    if hit is None:
        return " Options: /s2 /p1 /same /valid /d2 /g4 /dw /c64 /nobias /op1 /ceil /bilinear."
    if hit in _NUMERIC_FLAGS:
        return f" Did you mean '/{hit}{digits or 2}'?"
    return f" Did you mean '/{hit}'?"


def _check_values(kw: dict, token: str, position: int) -> None:
    """Every value in range (shared by tokens and dicts, so both fail the same way)."""
    def ints(key, low):
        v = kw.get(key)
        if v is None:
            return
        if not isinstance(v, tuple) or not v or not all(isinstance(x, int) and not isinstance(x, bool)
                                                         for x in v):
            raise _fail(token, position, f"{key} must be an int or a tuple of ints, not {v!r}")
        if any(x < low for x in v):
            raise _fail(token, position, f"{key} {v} must be {low} or more on every axis")
    ints("kernel", 1)
    ints("stride", 1)
    ints("dilation", 1)
    ints("output_padding", 0)
    pad = kw.get("padding")
    if isinstance(pad, str):
        if pad not in ("same", "valid"):
            raise _fail(token, position, f"padding {pad!r} must be a number, 'same' or 'valid'."
                        + did_you_mean(pad, ("same", "valid")))
    else:
        ints("padding", 0)
    for key in ("groups", "channels"):
        v = kw.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise _fail(token, position, f"{key} must be a positive int, not {v!r}")
    for key in ("depthwise", "bias", "ceil"):
        if key in kw and not isinstance(kw[key], bool):
            raise _fail(token, position, f"{key} must be True or False, not {kw[key]!r}")
    if "mode" in kw and kw["mode"] not in UP_MODES:
        raise _fail(token, position, f"upsampling mode {kw['mode']!r} is not one of {', '.join(UP_MODES)}."
                    + did_you_mean(str(kw["mode"]), UP_MODES))


def _check_option_fits(kw: dict, token: str, position: int) -> None:
    op = kw["op"]
    allowed = {
        "conv": {"stride", "padding", "dilation", "groups", "depthwise", "channels", "bias"},
        "convT": {"stride", "padding", "dilation", "groups", "depthwise", "channels", "bias",
                  "output_padding"},
        "maxpool": {"stride", "padding", "dilation", "ceil"},
        "avgpool": {"stride", "padding", "ceil"},
        "up": {"mode"},
    }[op]
    for key in set(kw) - {"op", "kernel", "token", "position"}:
        if key not in allowed:
            raise _fail(token, position, f"option {key!r} does not apply to {op!r}")
    if op == "convT" and kw.get("padding") in ("same", "valid"):
        raise _fail(token, position, "transposed convs take a numeric /p, not /same or /valid")


_DICT_KEYS = {"op", "kernel", "stride", "padding", "dilation", "groups", "depthwise", "channels",
              "bias", "output_padding", "ceil", "mode", "factor"}


def _parse_dict(d: dict, position: int) -> LayerSpec:
    token = repr(d)
    if "op" not in d:
        raise _fail(token, position, "a layer dict needs an 'op' key, e.g. {'op': 'conv', 'kernel': 3}")
    unknown = set(d) - _DICT_KEYS
    if unknown:
        bad = sorted(unknown)[0]
        raise _fail(token, position, f"unknown key {bad!r}." + did_you_mean(bad, _DICT_KEYS))
    op = d["op"]
    if op not in WORDS:
        raise _fail(token, position, f"unknown op {op!r}." + did_you_mean(op, WORDS))

    def tup(v):
        return tuple(v) if isinstance(v, (list, tuple)) else (v,)

    kw: dict[str, Any] = {"op": op, "token": token, "position": position}
    if op in WINDOWED:
        size = d.get("kernel", d.get("factor"))
        if size is None:
            raise _fail(token, position, f"{op!r} needs 'kernel' (or 'factor' for up)")
        kw["kernel"] = tup(size)
    for key in ("stride", "dilation", "output_padding"):
        if key in d:
            kw[key] = tup(d[key])
    if "padding" in d:
        kw["padding"] = d["padding"] if isinstance(d["padding"], str) else tup(d["padding"])
    for key in ("groups", "depthwise", "channels", "bias", "ceil", "mode"):
        if key in d:
            kw[key] = d[key]
    if op in POINTWISE:
        extra = sorted(set(d) - {"op"})
        if extra:
            raise _fail(token, position, f"{op!r} takes no options, got {extra}")
    else:
        _check_option_fits({k: v for k, v in kw.items() if k not in ("bias",) or op in ("conv", "convT")},
                           token, position)
    _check_values(kw, token, position)
    return LayerSpec(**kw)


def parse(spec: Spec) -> list[LayerSpec]:
    """Parse a spec string, token list or list of dicts into ``LayerSpec`` objects.

    >>> [l.op for l in parse("conv3, relu, maxpool2")]
    ['conv', 'relu', 'maxpool']
    >>> parse([{"op": "conv", "kernel": 3, "stride": 2}])[0].stride
    (2,)
    >>> parse("conv3 rleu")
    Traceback (most recent call last):
    ...
    rfprobe.errors.SpecError: spec token 1 'rleu': unknown layer. Did you mean 'relu'? Valid layers: conv, convT, maxpool, avgpool, up, relu, gelu, silu, sigmoid, tanh, id, bn.
    """
    if isinstance(spec, str):
        items: list = [t for t in re.split(r"[\s,]+", spec.strip()) if t]
    elif isinstance(spec, (list, tuple)):
        items = list(spec)
    else:
        raise SpecError(f"spec must be a string, a list of tokens or a list of dicts, "
                        f"not {type(spec).__name__}")
    if not items:
        raise SpecError("spec is empty; write at least one layer, e.g. 'conv3'")
    layers = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            layers.append(_parse_token(item, i))
        elif isinstance(item, dict):
            layers.append(_parse_dict(item, i))
        else:
            raise SpecError(f"spec item {i} is a {type(item).__name__}; use a token string or a dict")
    return layers


def _per_axis(values: tuple[int, ...] | None, dims: int, layer: LayerSpec, what: str):
    if values is None:
        return None
    if len(values) == 1:
        return values * dims
    if len(values) != dims:
        raise _fail(layer.token, layer.position,
                    f"{what} has {len(values)} values but the stack is {dims}-D (dims={dims})")
    return values


def build(spec: Spec, in_channels: int = 1, dims: int = 2, channels: int | None = None) -> nn.Sequential:
    """Build an ``nn.Sequential`` from a spec.

    ``channels`` is the width of every conv without ``/c`` (default: ``in_channels``).

    >>> net = build("conv3 conv3", in_channels=1)
    >>> sum(p.numel() for n, p in net.named_parameters() if n.endswith("weight"))
    18
    >>> build("conv1x7", dims=1)
    Traceback (most recent call last):
    ...
    rfprobe.errors.SpecError: spec token 0 'conv1x7': kernel has 2 values but the stack is 1-D (dims=1)
    """
    if dims not in (1, 2, 3):
        raise SpecError(f"dims must be 1, 2 or 3, not {dims!r}")
    for name, value in (("in_channels", in_channels), ("channels", channels)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise SpecError(f"{name} must be a positive int, not {value!r}")
    width = channels or in_channels
    layers = parse(spec)
    modules: list[nn.Module] = []
    c = in_channels
    for layer in layers:
        m, c = _module(layer, dims, c, width)
        m.rfprobe_token = layer.token
        modules.append(m)
    return nn.Sequential(*modules)


def _module(layer: LayerSpec, dims: int, c: int, width: int) -> tuple[nn.Module, int]:
    op = layer.op
    if op in POINTWISE:
        if op == "bn":
            return [nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d][dims - 1](c), c
        return POINTWISE[op](), c
    k = _per_axis(layer.kernel, dims, layer, "kernel")
    if op == "up":
        mode = layer.mode
        if mode in ("bilinear", "linear", "trilinear"):
            mode = ("linear", "bilinear", "trilinear")[dims - 1]
        if mode == "bicubic" and dims != 2:
            raise _fail(layer.token, layer.position, "bicubic upsampling is 2-D only")
        kwargs = {"align_corners": False} if mode != "nearest" and mode != "nearest-exact" else {}
        return nn.Upsample(scale_factor=tuple(float(f) for f in k), mode=mode, **kwargs), c
    stride = _per_axis(layer.stride, dims, layer, "stride")
    dilation = _per_axis(layer.dilation, dims, layer, "dilation")
    padding: Any = layer.padding
    if not isinstance(padding, str):
        padding = _per_axis(padding, dims, layer, "padding")
    if op in ("maxpool", "avgpool"):
        stride = stride or k
        if padding == "valid":
            padding = (0,) * dims
        elif padding == "same":
            eff = [d * (kk - 1) for kk, d in zip(k, dilation)]
            if any(e % 2 for e in eff):
                raise _fail(layer.token, layer.position, "/same needs an odd (dilated) kernel for pooling")
            padding = tuple(e // 2 for e in eff)
        if any(2 * p > kk for p, kk in zip(padding, k)):
            raise _fail(layer.token, layer.position,
                        f"pool padding {padding} must be at most half the kernel {k} (PyTorch's rule)")
        if op == "maxpool":
            cls = [nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d][dims - 1]
            return cls(k, stride, padding, dilation, ceil_mode=layer.ceil), c
        cls = [nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d][dims - 1]
        return cls(k, stride, padding, ceil_mode=layer.ceil), c
    stride = stride or (1,) * dims
    out = layer.channels or (c if layer.depthwise else width)
    groups = c if layer.depthwise else layer.groups
    if c % groups or out % groups:
        raise _fail(layer.token, layer.position,
                    f"groups={groups} must divide both in channels ({c}) and out channels ({out})")
    if padding == "same" and any(s != 1 for s in stride):
        raise _fail(layer.token, layer.position, "/same padding needs stride 1 (PyTorch's rule); give /p instead")
    if op == "conv":
        cls = [nn.Conv1d, nn.Conv2d, nn.Conv3d][dims - 1]
        return cls(c, out, k, stride, padding, dilation, groups, bias=layer.bias), out
    op_ = _per_axis(layer.output_padding, dims, layer, "output_padding")
    if any(o >= max(s, d) for o, s, d in zip(op_, stride, dilation)):
        raise _fail(layer.token, layer.position,
                    f"output_padding {op_} must be smaller than the stride or the dilation")
    cls = [nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d][dims - 1]
    return cls(c, out, k, stride, padding, op_, groups, bias=layer.bias, dilation=dilation), out
