"""The stack spec language: three spellings, one meaning; every option reaches PyTorch; typos
are SpecErrors that name the token, its position and the nearest valid word.

Output sizes are checked against PyTorch's own shape formulas, computed by hand here:
conv ``floor((n + 2p - d(k-1) - 1) / s) + 1``; transposed conv ``(n-1)s - 2p + d(k-1) + op + 1``;
pool with ``ceil_mode`` rounds up (but the last window must start inside the input or the left
padding).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import rfprobe
from rfprobe.errors import RFProbeError, SpecError
from rfprobe.spec import build, parse


def _out(net, *shape):
    with torch.no_grad():
        return tuple(net.eval()(torch.zeros(1, *shape)).shape)


def _same_modules(a: nn.Sequential, b: nn.Sequential) -> bool:
    return [repr(m) for m in a] == [repr(m) for m in b]


# ----------------------------------------------------------------------------- three spellings
@pytest.mark.parametrize("text, tokens, dicts", [
    ("conv3/s2 relu maxpool2",
     ["conv3/s2", "relu", "maxpool2"],
     [{"op": "conv", "kernel": 3, "stride": 2}, {"op": "relu"}, {"op": "maxpool", "kernel": 2}]),
    ("conv1x7/p0x3/c8, bn, conv3/d2/g2/nobias",
     ["conv1x7/p0x3/c8", "bn", "conv3/d2/g2/nobias"],
     [{"op": "conv", "kernel": (1, 7), "padding": (0, 3), "channels": 8}, {"op": "bn"},
      {"op": "conv", "kernel": 3, "dilation": 2, "groups": 2, "bias": False}]),
    ("convT4/s2/p1/op1 avgpool3/s2/p1/ceil up2/bilinear",
     ["convT4/s2/p1/op1", "avgpool3/s2/p1/ceil", "up2/bilinear"],
     [{"op": "convT", "kernel": 4, "stride": 2, "padding": 1, "output_padding": 1},
      {"op": "avgpool", "kernel": 3, "stride": 2, "padding": 1, "ceil": True},
      {"op": "up", "factor": 2, "mode": "bilinear"}]),
    ("conv3/same/dw",
     ["conv3/same/dw"],
     [{"op": "conv", "kernel": [3, 3], "padding": "same", "depthwise": True}]),
])
def test_string_tokens_and_dicts_mean_the_same(text, tokens, dicts):
    nets = [build(s, in_channels=4) for s in (text, tokens, dicts)]
    assert _same_modules(nets[0], nets[1]) and _same_modules(nets[0], nets[2])
    shapes = {_out(n, 4, 12, 12) for n in nets}
    assert len(shapes) == 1
    # options in any order
    flipped = " ".join("/".join([t.split("/")[0]] + t.split("/")[1:][::-1]) for t in tokens)
    assert _same_modules(build(flipped, in_channels=4), nets[0])


def test_layers_carry_their_token():
    net = build("conv3/s2 relu maxpool2/ceil", in_channels=3)
    assert [m.rfprobe_token for m in net] == ["conv3/s2", "relu", "maxpool2/ceil"]


# ----------------------------------------------------------------------------- conv options
def test_per_axis_kernels_and_dims():
    assert build("conv1x7")[0].kernel_size == (1, 7)
    assert build("conv3x3x3", dims=3)[0].kernel_size == (3, 3, 3)
    assert build("conv5", dims=3)[0].kernel_size == (5, 5, 5)
    assert isinstance(build("conv5", dims=1)[0], nn.Conv1d)
    # conv1x7 on 9x9: height 9 - 1 + 1 = 9, width 9 - 7 + 1 = 3
    assert _out(build("conv1x7"), 1, 9, 9)[2:] == (9, 3)
    with pytest.raises(SpecError, match=r"token 0 'conv1x7'.*2 values.*1-D"):
        build("conv1x7", dims=1)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("spec, n, want", [
    ("conv3/s2", 9, 4),            # (9 - 3) // 2 + 1
    ("conv3/s3", 10, 3),           # (10 - 3) // 3 + 1
    ("conv3/p1", 9, 9),            # 9 + 2 - 3 + 1
    ("conv5/p2/s2", 9, 5),         # (9 + 4 - 5) // 2 + 1
    ("conv3/same", 9, 9),
    ("conv4/same", 9, 9),          # even kernel: PyTorch pads asymmetrically
    ("conv3/d3/same", 9, 9),
    ("conv3/valid", 9, 7),
    ("conv3/d2", 9, 5),            # extent 2 * 2 + 1 = 5: 9 - 5 + 1
    ("conv3/d3/p3", 9, 9),         # extent 7, padding 3 each side
    ("conv1/s2", 9, 5),
])
def test_conv_stride_padding_dilation(spec, n, want):
    assert _out(build(spec), 1, n, n)[2:] == (want, want)


def test_per_axis_options():
    m = build("conv3x5/s1x2/p1x2/d2x1")[0]
    assert (m.kernel_size, m.stride, m.padding, m.dilation) == ((3, 5), (1, 2), (1, 2), (2, 1))
    with pytest.raises(SpecError, match="stride has 3 values"):
        build("conv3/s1x2x3")


def test_groups_depthwise_channels_bias():
    net = build("conv3/c8 conv3/g4 conv3/dw conv1/c2/nobias", in_channels=4, channels=16)
    c1, c2, c3, c4 = net
    assert (c1.in_channels, c1.out_channels) == (4, 8)
    assert (c2.in_channels, c2.out_channels, c2.groups) == (8, 16, 4)     # width from channels=
    assert (c3.in_channels, c3.out_channels, c3.groups) == (16, 16, 16)
    assert c3.weight.shape == (16, 1, 3, 3)
    assert c4.bias is None and c1.bias is not None
    assert build("conv3", in_channels=3)[0].out_channels == 3           # width defaults to in_channels
    with pytest.raises(SpecError, match=r"token 0 'conv3/c8/g3'.*groups=3 must divide"):
        build("conv3/c8/g3", in_channels=4)


def test_transposed_conv_with_output_padding():
    t = build("convT4/s2/p1/op1")[0]
    assert isinstance(t, nn.ConvTranspose2d) and t.output_padding == (1, 1)
    # (8 - 1) * 2 - 2 * 1 + (4 - 1) + 1 (+ op)
    assert _out(build("convT4/s2/p1"), 1, 8, 8)[2:] == (16, 16)
    assert _out(build("convT4/s2/p1/op1"), 1, 8, 8)[2:] == (17, 17)
    assert _out(build("convT3/s2/d2", dims=1), 1, 5)[2:] == (13,)       # 4*2 + 2*2 + 1
    with pytest.raises(SpecError, match="output_padding"):
        build("convT3/op2")                                            # op must be < stride
    with pytest.raises(SpecError, match="numeric /p"):
        build("convT3/same")


# ----------------------------------------------------------------------------- pooling, up, pointwise
@pytest.mark.parametrize("spec, n, want", [
    ("maxpool2", 7, 3), ("maxpool2/ceil", 7, 4),
    ("maxpool3/s2", 8, 3), ("maxpool3/s2/ceil", 8, 4),
    ("maxpool3/s2/p1", 8, 4),
    ("maxpool3/d2", 11, 3),                  # extent 5, stride 3 (the kernel, not its extent)
    ("avgpool2", 7, 3), ("avgpool2/ceil", 7, 4),
    ("avgpool3/s2/p1", 8, 4), ("avgpool3/s2/p1/ceil", 8, 5),
    ("maxpool3/same/s1", 7, 7),
])
def test_pools_and_ceil_mode(spec, n, want):
    assert _out(build(spec), 1, n, n)[2:] == (want, want)


def test_pool_modules():
    m, a = build("maxpool3/s2/p1/ceil avgpool2")
    assert isinstance(m, nn.MaxPool2d) and (m.kernel_size, m.stride, m.padding, m.ceil_mode) == ((3, 3), (2, 2), (1, 1), True)
    assert isinstance(a, nn.AvgPool2d) and a.stride == (2, 2) and a.ceil_mode is False
    assert isinstance(build("maxpool2", dims=3)[0], nn.MaxPool3d)
    with pytest.raises(SpecError, match="at most half the kernel"):
        build("maxpool3/p2")
    with pytest.raises(SpecError, match="'dilation' does not apply to 'avgpool'"):
        build("avgpool3/d2")


def test_upsample():
    u = build("up2")[0]
    assert isinstance(u, nn.Upsample) and u.mode == "nearest"
    assert _out(build("up2"), 1, 5, 5)[2:] == (10, 10)
    assert _out(build("up2x3"), 1, 5, 5)[2:] == (10, 15)
    assert build("up2/bilinear")[0].mode == "bilinear"
    assert build("up2/bilinear", dims=1)[0].mode == "linear"
    assert build("up2/bilinear", dims=3)[0].mode == "trilinear"


def test_pointwise_layers():
    net = build("relu gelu silu sigmoid tanh id bn", in_channels=5)
    assert [type(m) for m in net] == [nn.ReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Identity,
                                      nn.BatchNorm2d]
    assert net[-1].num_features == 5
    for dims, cls in ((1, nn.BatchNorm1d), (2, nn.BatchNorm2d), (3, nn.BatchNorm3d)):
        assert isinstance(build("conv3/c6 bn", dims=dims)[1], cls)
        assert build("conv3/c6 bn", dims=dims)[1].num_features == 6


def test_parse_returns_layer_specs():
    layers = parse("conv3/s2/d2 maxpool2/ceil")
    assert [(l.op, l.kernel, l.stride, l.dilation, l.position) for l in layers] == [
        ("conv", (3,), (2,), (2,), 0), ("maxpool", (2,), None, (1,), 1)]
    assert layers[1].ceil is True


def test_a_spec_is_accepted_wherever_a_model_is():
    assert rfprobe.analyze("conv3 conv3").size == (5, 5)
    assert rfprobe.analyze(["conv3", {"op": "conv", "kernel": 3}]).size == (5, 5)


# ----------------------------------------------------------------------------- typos and bad values
@pytest.mark.parametrize("spec, position, token, hint", [
    ("conv3 rleu", 1, "rleu", "relu"),
    ("cnov3", 0, "cnov3", "conv"),
    ("conv3 relu maxpol2", 2, "maxpol2", "maxpool"),
    ("conv3 bnn", 1, "bnn", "bn"),
    ("conv3/stride2", 0, "conv3/stride2", "/s2"),
    ("relu conv3/dd2", 1, "conv3/dd2", "/d2"),
    ("maxpool2/ciel", 0, "maxpool2/ciel", "/ceil"),
    ("conv3/nobais", 0, "conv3/nobais", "/nobias"),
    ("up2/bilnear", 0, "up2/bilnear", "/bilinear"),
    (["conv3", "relu", "gleu"], 2, "gleu", "gelu"),
    ("CONV3", 0, "CONV3", "conv"),
    ("relu ConvT4/s2", 1, "ConvT4/s2", "convT"),
    ([{"op": "conv", "kernel": 3}, {"op": "cnov", "kernel": 3}], 1, "'cnov'", "conv"),
    ([{"op": "conv", "kernel": 3, "strdie": 2}], 0, "'strdie'", "stride"),
    ([{"op": "conv", "kernel": 3, "padding": "smae"}], 0, "'smae'", "same"),
    ([{"op": "up", "factor": 2, "mode": "bilnear"}], 0, "'bilnear'", "bilinear"),
])
def test_typo_names_token_position_and_nearest_word(spec, position, token, hint):
    with pytest.raises(SpecError) as info:
        build(spec)
    msg = str(info.value)
    assert f"spec token {position} " in msg
    assert token in msg
    assert f"Did you mean '{hint}'?" in msg


@pytest.mark.parametrize("spec, match", [
    ("", "empty"),
    ("conv", "needs a size"),
    ("conv0", "0 is impossible"),
    ("conv3.0", "whole numbers.*'3.0'"),
    ("up1.5", "factors must be whole numbers.*'1.5'"),
    ("relu2", "'relu' takes no size"),
    ("conv3/s0", "stride"),
    ("conv3/d0", "dilation"),
    ("conv3/g0", "groups"),
    ("conv3/c0", "channels"),
    ("conv3/sx", "whole numbers"),
    ("relu/s2", "takes no options"),
    ("conv3 maxpool2/g2", "'groups' does not apply to 'maxpool'"),
    ("conv3/same/s2", "needs stride 1"),
    ([{"kernel": 3}], "needs an 'op' key"),
    ([{"op": "relu", "kernel": 3}], "takes no options"),
    ([{"op": "conv", "kernel": "3"}], "kernel must be an int"),
    ([{"op": "conv"}], "needs 'kernel'"),
    ([{"op": "conv", "kernel": 3, "stride": 0}], "stride"),
    ([{"op": "conv", "kernel": 3, "bias": "no"}], "True or False"),
    (["conv3", 7], "item 1"),
    (5, "must be a string"),
])
def test_bad_specs_raise_spec_error(spec, match):
    with pytest.raises(SpecError, match=match):
        build(spec)


def test_spec_error_is_an_rfprobe_error_and_a_value_error():
    with pytest.raises(RFProbeError):
        build("conv3 rleu")
    assert issubclass(SpecError, ValueError)


@pytest.mark.parametrize("kw, match", [
    ({"dims": 4}, "dims must be 1, 2 or 3"),
    ({"in_channels": 0}, "in_channels"),
    ({"channels": -1}, "channels"),
])
def test_bad_build_arguments(kw, match):
    with pytest.raises(SpecError, match=match):
        build("conv3", **kw)


# ----------------------------------------------------------------------------- round trip (property)
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def _layers(draw):
    """One random layer as (token, dict, torch module maker) over ``dims`` axes."""
    dims = draw(st.integers(1, 3))
    ax = lambda lo, hi: tuple(draw(st.integers(lo, hi)) for _ in range(dims))  # noqa: E731
    x = lambda t: "x".join(map(str, t))  # noqa: E731
    kind = draw(st.sampled_from(["conv", "convT", "maxpool", "avgpool", "relu"]))
    if kind == "relu":
        return dims, "relu", {"op": "relu"}, lambda c: nn.ReLU()
    k, s = ax(1, 5), ax(1, 3)
    if kind in ("conv", "convT"):
        d, p = ax(1, 3), tuple(draw(st.integers(0, kk)) for kk in k)
        g = draw(st.sampled_from([1, 2]))
        opad = tuple(draw(st.integers(0, max(ss, dd) - 1)) for ss, dd in zip(s, d)) if kind == "convT" else None
        token = f"{kind}{x(k)}/s{x(s)}/p{x(p)}/d{x(d)}/g{g}/c4" + (f"/op{x(opad)}" if opad else "")
        spec = {"op": kind, "kernel": k, "stride": s, "padding": p, "dilation": d, "groups": g,
                "channels": 4}
        if kind == "conv":
            cls = [nn.Conv1d, nn.Conv2d, nn.Conv3d][dims - 1]
            return dims, token, spec, lambda c: cls(c, 4, k, s, p, d, g)
        spec["output_padding"] = opad
        cls = [nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d][dims - 1]
        return dims, token, spec, lambda c: cls(c, 4, k, s, p, opad, g, dilation=d)
    p = tuple(draw(st.integers(0, kk // 2)) for kk in k)
    ceil = draw(st.booleans())
    token = f"{kind}{x(k)}/s{x(s)}/p{x(p)}" + ("/ceil" if ceil else "")
    spec = {"op": kind, "kernel": k, "stride": s, "padding": p, "ceil": ceil}
    if kind == "maxpool":
        cls = [nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d][dims - 1]
        return dims, token, spec, lambda c: cls(k, s, p, ceil_mode=ceil)
    cls = [nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d][dims - 1]
    return dims, token, spec, lambda c: cls(k, s, p, ceil_mode=ceil)


@settings(max_examples=150, deadline=None, database=None)
@given(_layers())
def test_token_and_dict_build_the_module_pytorch_would(layer):
    dims, token, spec, make = layer
    want = _geometry(make(2), dims)
    assert _geometry(build(token, in_channels=2, dims=dims)[0], dims) == want
    assert _geometry(build([spec], in_channels=2, dims=dims)[0], dims) == want


def _geometry(m: nn.Module, dims: int) -> tuple:
    """Class and every geometric attribute, ints spread over the axes (PyTorch keeps pool
    arguments as given, so 1 and (1,) mean the same)."""
    keys = ("kernel_size", "stride", "padding", "dilation", "output_padding", "groups",
            "in_channels", "out_channels", "ceil_mode", "count_include_pad")
    out = [type(m).__name__, getattr(m, "bias", None) is not None]
    for k in keys:
        v = getattr(m, k, None)
        out.append((v,) * dims if isinstance(v, int) and not isinstance(v, bool)
                   and k not in ("groups", "in_channels", "out_channels") else v)
    return tuple(out)
