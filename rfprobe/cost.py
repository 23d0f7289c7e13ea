"""What a design costs, and why stacks of small convs won.

``cost``: parameters (with and without biases) and multiply-accumulates (MACs).
``compare``: stacks side by side: RF (verified three ways), parameters, MACs.
``collapse``: a stack of convolutions with nothing non-linear between them *is* one
convolution; this returns it. Two 3x3 convs without an activation are one 5x5 conv with fewer
free parameters: the depth buys nothing until a non-linearity sits between them.

>>> import rfprobe
>>> c = cost("conv3 conv3", channels=64, in_channels=64)
>>> c.params_no_bias == 2 * 9 * 64 * 64, c.params - c.params_no_bias
(True, 128)
>>> collapse("conv3 conv3").kernel_size
(5, 5)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from .defaults import as_model, resolve_input_shape
from .errors import ArgumentError, ModelError, RFProbeError, model_raised
from .hints import InputShape, ModelLike
from .ops.maps import each_axis
from .render.messages import collapse_refusal
from .results import CompareRow, Comparison, Cost

_CONV = nn.modules.conv._ConvNd
_CONVT = nn.modules.conv._ConvTransposeNd


def _macs_per_position(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (_CONV, nn.Linear)))


def cost(model_or_spec: ModelLike, input_shape: InputShape = None, *, in_channels: int = 1,
         channels: int | None = None, dims: int = 2) -> Cost:
    """Parameters and MACs of a model or spec (spec options as in ``rfprobe.build``).

    ``input_shape``: ``(C, *spatial)`` without batch, for the total ``macs``.

    >>> c = cost("conv3", input_shape=(1, 10, 10))
    >>> c.params, c.params_no_bias, c.macs_per_position, c.macs     # 8*8 outputs * 9 taps
    (10, 9, 9, 576)
    >>> cost("convT4/s2", input_shape=(1, 5, 5)).macs                # 5*5 inputs * 16 taps
    400
    """
    model = as_model(model_or_spec, in_channels=in_channels, channels=channels, dims=dims)
    params = sum(p.numel() for p in model.parameters())
    no_bias = sum(p.numel() for n, p in model.named_parameters() if not n.split(".")[-1] == "bias")
    macs = shape = None
    if input_shape is not None:
        shape, _, _ = resolve_input_shape(model, input_shape)
        if shape is None or any(s is None for s in shape):
            raise ArgumentError(f"input_shape={input_shape!r} needs every size for the MACs; "
                                "give (C, H, W) with numbers")
        macs = _macs(model, shape)
    return Cost(params, no_bias, _macs_per_position(model), macs, shape)


def _macs(model: nn.Module, input_shape) -> int:
    from .trace import private_copy
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Linear):
            positions = out.numel() // m.out_features
        else:
            t = inp[0] if isinstance(m, _CONVT) else out
            positions = math.prod(t.shape[2:]) * t.shape[0]
        total += m.weight.numel() * positions

    twin = private_copy(model, "meta")
    for m in twin.modules():
        for hooks in (m._forward_hooks, m._forward_pre_hooks):   # the user's: MACs are the modules'
            hooks.clear()
        if isinstance(m, (_CONV, nn.Linear)):
            m.register_forward_hook(hook)
    try:
        with torch.no_grad():
            twin(torch.empty((1, *input_shape), device="meta"))
    except Exception as e:
        raise ModelError(model_raised(e, input_shape)) from e
    return total


# ----------------------------------------------------------------------------- compare
def compare(*specs: ModelLike, channels: int = 1, dims: int = 2, input_shape: InputShape = None) -> Comparison:
    """RF, parameters and MACs of stacks side by side, every conv ``channels`` wide.

    The RF comes from ``rfprobe.verify`` (closed form, exact propagation and gradient probe);
    ``input_shape``: spatial sizes (or ``(C, *spatial)``) for the total MACs.

    >>> [(r.spec, r.size, r.params_no_bias) for r in compare("conv5", "conv3 relu conv3")]
    [('conv5', (5, 5), 25), ('conv3 relu conv3', (5, 5), 18)]
    """
    from .verify import verify
    if not specs:
        raise ArgumentError("compare needs at least one spec, e.g. compare('conv5', 'conv3 relu conv3')")
    if not isinstance(channels, int) or channels < 1:
        raise ArgumentError(f"channels={channels!r} must be a positive int (the width of every conv)")
    shape = None
    if input_shape is not None:
        shape = tuple(input_shape)
        if len(shape) == dims:
            shape = (channels,) + shape
    rows = []
    for spec in specs:
        model = as_model(spec, in_channels=channels, channels=channels, dims=dims)
        r = verify(model)
        c = cost(model, shape)
        name = spec if isinstance(spec, str) else (" ".join(spec) if isinstance(spec, (list, tuple))
                                                   and all(isinstance(s, str) for s in spec)
                                                   else type(spec).__name__)
        rows.append(CompareRow(name, r.size, r.stride, c.params, c.params_no_bias,
                               c.macs_per_position, c.macs, r.ok))
    return Comparison(tuple(rows), channels, shape)


# ----------------------------------------------------------------------------- collapse
@dataclass
class _Lin:
    """A linear, translation-invariant op as a dense conv: weight (out, in, *k) in float64."""

    weight: torch.Tensor
    bias: torch.Tensor
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    conn: np.ndarray            # bool (out, in): which input channels can reach which outputs


def _block_conn(out_c: int, in_c: int, groups: int) -> np.ndarray:
    o = np.arange(out_c) // (out_c // groups)
    i = np.arange(in_c) // (in_c // groups)
    return o[:, None] == i[None, :]


def _dense(weight: torch.Tensor, groups: int, in_c: int) -> torch.Tensor:
    """Grouped weight (out, in/groups, *k) -> dense (out, in, *k) with zeros across groups."""
    out_c = weight.shape[0]
    dense = weight.new_zeros((out_c, in_c, *weight.shape[2:]))
    og, ig = out_c // groups, in_c // groups
    for g in range(groups):
        dense[g * og:(g + 1) * og, g * ig:(g + 1) * ig] = weight[g * og:(g + 1) * og]
    return dense


def _as_lin(i: int, m: nn.Module, dims: int, channels: int | None) -> _Lin | None:
    """The module as a dense linear op; None for the identity; refusal otherwise."""

    def refuse(why):
        return RFProbeError(collapse_refusal(i, m, why))
    if isinstance(m, nn.Identity) or (isinstance(m, nn.modules.dropout._DropoutNd) and not m.training) \
            or (isinstance(m, nn.Dropout) and not m.training):
        return None
    if isinstance(m, _CONVT):
        raise refuse("is a transposed conv: its RF depends on the position, so it does not fold "
                     "into one ordinary conv")
    if isinstance(m, _CONV):
        return _conv_lin(m, dims, refuse)
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return _batchnorm_lin(m, dims, refuse)
    if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
        return _avgpool_lin(m, dims, channels, refuse)
    raise refuse(f"is not linear ({type(m).__name__}): a stack with a non-linearity (or any op "
                 "other than convs, eval-mode BatchNorm, average pooling, dropout in eval mode and "
                 "identities) is not one conv. That is why the activations between 3x3 convs matter.")


def _conv_lin(m: nn.Module, dims: int, refuse) -> _Lin:
    """A zero-padded conv as itself, its groups as a dense block-diagonal weight."""
    if m.weight.dim() - 2 != dims:
        raise refuse(f"is {m.weight.dim() - 2}-D but the stack is {dims}-D")
    if m.padding_mode != "zeros":
        raise refuse(f"pads with padding_mode={m.padding_mode!r}; only zero padding folds")
    k = tuple(m.weight.shape[2:])
    d = each_axis(m.dilation, dims)
    pad = m.padding
    if isinstance(pad, str):
        if pad == "valid":
            pad = (0,) * dims
        else:
            total = [dd * (kk - 1) for kk, dd in zip(k, d)]
            if any(t % 2 for t in total):
                raise refuse("uses padding='same' with an even kernel extent, which pads one "
                             "side more than the other; one nn.Conv cannot express that")
            pad = tuple(t // 2 for t in total)
    f64 = torch.float64
    w = _dense(m.weight.detach().to(f64), m.groups, m.in_channels)
    b = m.bias.detach().to(f64) if m.bias is not None else torch.zeros(m.out_channels, dtype=f64)
    return _Lin(w, b, each_axis(m.stride, dims), each_axis(pad, dims), d,
                _block_conn(m.out_channels, m.in_channels, m.groups))


def _batchnorm_lin(m: nn.Module, dims: int, refuse) -> _Lin:
    """An eval-mode BatchNorm as the per-channel affine map it is: a 1x1 diagonal conv."""
    if m.training or m.running_mean is None:
        raise refuse("normalises with batch statistics (training mode or no running stats); "
                     "call .eval() so it is a fixed per-channel affine map")
    f64 = torch.float64
    c = m.num_features
    scale = 1 / torch.sqrt(m.running_var.detach().to(f64) + m.eps)
    shift = -m.running_mean.detach().to(f64) * scale
    if m.affine:
        shift = shift * m.weight.detach().to(f64) + m.bias.detach().to(f64)
        scale = scale * m.weight.detach().to(f64)
    w = torch.diag(scale).reshape(c, c, *([1] * dims))
    return _Lin(w, shift, (1,) * dims, (0,) * dims, (1,) * dims, np.eye(c, dtype=bool))


def _avgpool_lin(m: nn.Module, dims: int, channels: int | None, refuse) -> _Lin:
    """Average pooling as a per-channel conv with equal weights (where its window is the same
    everywhere)."""
    k = each_axis(m.kernel_size, dims)
    pad = each_axis(m.padding, dims)
    if m.ceil_mode or getattr(m, "divisor_override", None) or (any(pad) and not m.count_include_pad):
        raise refuse("averages over a window that changes at the border (ceil_mode, "
                     "count_include_pad=False or divisor_override); not one conv")
    if channels is None:
        raise refuse("comes before any conv, so its channel count is unknown; start the stack with a conv")
    w = torch.zeros((channels, channels, *k), dtype=torch.float64)
    for c in range(channels):
        w[c, c] = 1.0 / math.prod(k)
    return _Lin(w, torch.zeros(channels, dtype=torch.float64), each_axis(m.stride or k, dims), pad, (1,) * dims,
                np.eye(channels, dtype=bool))


def _compose(a: _Lin, b: _Lin, strict: bool, index: int, module) -> _Lin:
    """``b`` after ``a``, per axis: stride a.s*b.s, padding a.p + a.s*b.p, taps at
    a.s*b.d*j + a.d*i for tap i of a and j of b."""
    dims = len(a.stride)
    ka, kb = a.weight.shape[2:], b.weight.shape[2:]
    if any(b.padding):
        trivial = (all(k == 1 for k in ka) and all(s == 1 for s in a.stride) and not any(a.padding)
                   and not a.bias.any())
        if strict and not trivial:
            raise RFProbeError(collapse_refusal(index, module, (
                f"pads its input by {b.padding}: zero padding in the middle of a stack is not zero "
                "padding of the stack's input, so one conv matches only the outputs away from the "
                "border. Pass strict=False for that conv (it matches the interior), or pad only the "
                "first layer")))
    dil, size = [], []
    for ax in range(dims):
        step_a = a.dilation[ax] if ka[ax] > 1 else 0
        step_b = a.stride[ax] * b.dilation[ax] if kb[ax] > 1 else 0
        g = math.gcd(step_a, step_b) or 1
        dil.append(g)
        size.append((step_a * (ka[ax] - 1) + step_b * (kb[ax] - 1)) // g + 1)
    w = a.weight.new_zeros((b.weight.shape[0], a.weight.shape[1], *size))
    for tap in np.ndindex(*kb):
        mixed = torch.tensordot(b.weight[(slice(None), slice(None)) + tap], a.weight, dims=([1], [0]))
        index_ = [slice(None), slice(None)]
        for ax in range(dims):
            step_a = a.dilation[ax] // dil[ax] if ka[ax] > 1 else 1
            start = (a.stride[ax] * b.dilation[ax] * tap[ax]) // dil[ax] if kb[ax] > 1 else 0
            index_.append(slice(start, start + step_a * (ka[ax] - 1) + 1, step_a))
        w[tuple(index_)] += mixed
    bias = b.bias + b.weight.sum(dim=tuple(range(2, 2 + dims))) @ a.bias
    stride = tuple(sa * sb for sa, sb in zip(a.stride, b.stride))
    padding = tuple(pa + sa * pb for pa, sa, pb in zip(a.padding, a.stride, b.padding))
    dil = [d if s > 1 else 1 for d, s in zip(dil, size)]
    return _Lin(w, bias, stride, padding, tuple(dil), (b.conn.astype(int) @ a.conn.astype(int)) > 0)


def _layers(stack) -> list[nn.Module]:
    if isinstance(stack, nn.Sequential):
        out = []
        for m in stack:
            out.extend(_layers(m) if isinstance(m, nn.Sequential) else [m])
        return out
    if isinstance(stack, (list, tuple)) and all(isinstance(m, nn.Module) for m in stack):
        return [x for m in stack for x in (_layers(m) if isinstance(m, nn.Sequential) else [m])]
    if isinstance(stack, _CONV):
        return [stack]
    raise ArgumentError(f"collapse needs an nn.Sequential, a list of modules or a spec string, not "
                        f"{type(stack).__name__}: only a sequence says in which order the layers run")


def collapse(stack: ModelLike, *, strict: bool = True, in_channels: int = 1, channels: int | None = None,
             dims: int = 2) -> nn.Module:
    """The one conv that computes what a linear stack of convs computes.

    Handles stride, dilation, zero padding, groups (the result is grouped when the stack's
    channel connections allow), bias, eval-mode BatchNorm, average pooling and identities.
    Refuses, naming the layer, anything non-linear (ReLU, max-pooling, ...). Zero padding on a
    layer after the first is refused unless ``strict=False``: the returned conv then matches the
    stack only at outputs whose window stays clear of that padding. The conv has the stack's
    dtype and device; ``rfprobe_token`` describes it. Spec options as in ``rfprobe.build``.

    >>> import torch, rfprobe
    >>> net = rfprobe.build("conv3 conv3/d2")
    >>> one = collapse(net)
    >>> one.kernel_size, one.dilation, one.rfprobe_token
    ((7, 7), (1, 1), 'conv7')
    >>> x = torch.randn(1, 1, 16, 16)
    >>> torch.allclose(net(x), one(x), atol=1e-5)
    True
    """
    model = as_model(stack, in_channels=in_channels, channels=channels, dims=dims) \
        if isinstance(stack, (str, dict)) or (isinstance(stack, (list, tuple)) and stack
                                              and not isinstance(stack[0], nn.Module)) else stack
    layers = _layers(model)
    first = next((m for m in layers if isinstance(m, _CONV)), None)
    if first is None:
        raise ArgumentError("collapse needs at least one conv in the stack")
    dims = first.weight.dim() - 2
    acc: _Lin | None = None
    width = None
    for i, m in enumerate(layers):
        lin = _as_lin(i, m, dims, width)
        if lin is None:
            continue
        if width is not None and lin.weight.shape[1] != width:
            raise RFProbeError(collapse_refusal(i, m, f"takes {lin.weight.shape[1]} channels but "
                                                      f"the layer before gives {width}"))
        acc = lin if acc is None else _compose(acc, lin, strict, i, m)
        width = lin.weight.shape[0]
    out_c, in_c = acc.weight.shape[:2]
    groups = max(g for g in range(1, math.gcd(out_c, in_c) + 1)
                 if out_c % g == 0 and in_c % g == 0 and not (acc.conn & ~_block_conn(out_c, in_c, g)).any())
    og, ig = out_c // groups, in_c // groups
    w = torch.cat([acc.weight[g * og:(g + 1) * og, g * ig:(g + 1) * ig] for g in range(groups)])
    has_bias = bool(acc.bias.any()) or any(isinstance(getattr(m, "bias", None), torch.Tensor) for m in layers)
    cls = [nn.Conv1d, nn.Conv2d, nn.Conv3d][dims - 1]
    k = tuple(w.shape[2:])
    conv = cls(in_c, out_c, k, stride=acc.stride, padding=acc.padding, dilation=acc.dilation,
               groups=groups, bias=has_bias, device="meta", dtype=first.weight.dtype)
    conv = conv.to_empty(device=first.weight.device)   # no random init: the user's RNG stays put
    with torch.no_grad():
        conv.weight.copy_(w)
        if has_bias:
            conv.bias.copy_(acc.bias)
    conv.rfprobe_token = _token(k, acc.stride, acc.padding, acc.dilation, groups)
    return conv


def _token(k, s, p, d, g) -> str:
    def t(v):
        return str(v[0]) if len(set(v)) == 1 else "x".join(map(str, v))
    token = f"conv{t(k)}"
    for flag, v, neutral in (("s", s, 1), ("p", p, 0), ("d", d, 1)):
        if any(x != neutral for x in v):
            token += f"/{flag}{t(v)}"
    return token + (f"/g{g}" if g > 1 else "")
