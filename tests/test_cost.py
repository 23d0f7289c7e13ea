"""Cost of designs and the collapse of linear stacks.

Parameter counts are checked against k*k*C*C computed here; MACs against PyTorch's own FLOP
counter (torch.utils.flop_counter, 2 FLOPs per MAC); collapsed convs against running the stack.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings, strategies as st
from torch.utils.flop_counter import FlopCounterMode

import rfprobe
from rfprobe.cost import collapse, compare, cost
from rfprobe.errors import RFProbeError


def rf_size(kernels_strides) -> int:
    """The closed form by hand: r = 1 + sum (k - 1) * (product of earlier strides)."""
    r, jump = 1, 1
    for k, s in kernels_strides:
        r += (k - 1) * jump
        jump *= s
    return r


@pytest.mark.parametrize("C", [1, 3, 16])
def test_compare_reproduces_the_seed_table(C):
    rows = compare("conv5", "conv3 relu conv3", "conv7", "conv3 relu conv3 relu conv3",
                   "conv3/s2 relu conv3", channels=C)
    w5, w3, w7 = 5 * 5 * C * C, 3 * 3 * C * C, 7 * 7 * C * C
    assert [r.params_no_bias for r in rows] == [w5, 2 * w3, w7, 3 * w3, 2 * w3]
    assert [r.params for r in rows] == [w5 + C, 2 * w3 + 2 * C, w7 + C, 3 * w3 + 3 * C, 2 * w3 + 2 * C]
    five = rf_size([(3, 1), (3, 1)])
    seven = rf_size([(3, 1), (3, 1), (3, 1)])
    assert five == 5 and seven == 7 and rf_size([(3, 2), (3, 1)]) == 7
    assert [r.size for r in rows] == [(5, 5), (five, five), (7, 7), (seven, seven), (7, 7)]
    assert all(r.ok for r in rows)
    assert rows[4].stride == (2, 2) and rows[3].stride == (1, 1)
    text = str(rows)
    assert "conv3 relu conv3 relu conv3" in text and str(3 * w3) in text


def test_compare_totals_macs_for_an_input():
    C = 4
    rows = compare("conv5", "conv3 relu conv3", channels=C, input_shape=(12, 12))
    # conv5 on 12x12: 8x8 outputs * 25 C^2; two conv3: 10x10 * 9C^2 + 8x8 * 9C^2
    assert rows[0].macs == 64 * 25 * C * C
    assert rows[1].macs == (100 + 64) * 9 * C * C
    assert "<table" in rows._repr_html_() and "conv3 relu conv3" in rows._repr_html_()


def flops_macs(model: nn.Module, shape) -> int:
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(1, *shape))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("spec,shape,dims", [
    ("conv3 relu conv3/s2", (2, 13, 13), 2),
    ("convT4/s2/p1 conv3", (2, 6, 7), 2),
    ("conv3/g2/c4 conv1/c6 convT3/s3/g2", (2, 9, 9), 2),
    ("conv5/s2 maxpool2 conv3/d2", (3, 40), 1),
    ("conv3 convT2/s2 conv3/s2", (1, 6, 6, 6), 3),
])
def test_macs_agree_with_torch_flop_counter(spec, shape, dims):
    model = rfprobe.build(spec, in_channels=shape[0], dims=dims, channels=4)
    c = cost(model, input_shape=shape)
    assert c.macs == flops_macs(model, shape)
    assert c.input_shape == shape


def test_macs_of_a_model_with_a_linear_head():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    c = cost(model, input_shape=(3, 8, 8))
    assert c.macs == flops_macs(model, (3, 8, 8)) == 6 * 6 * 8 * 27 + 288 * 10
    assert c.params == 8 * 27 + 8 + 2880 + 10 and c.params_no_bias == 8 * 27 + 2880
    assert c.macs_per_position == 8 * 27 + 2880


def test_cost_errors():
    with pytest.raises(RFProbeError, match="input_shape"):
        cost("conv3", input_shape=(2, 8, 8))
    with pytest.raises(RFProbeError, match="channels"):
        compare("conv3", channels=0)


# ----------------------------------------------------------------------------- collapse
def _check(net: nn.Module, shape, atol=1e-10):
    net = net.double().eval()
    one = collapse(net)
    x = torch.randn(2, *shape, dtype=torch.float64)
    want = net(x)
    got = one(x)
    assert got.shape == want.shape
    assert torch.allclose(got, want, rtol=1e-9, atol=atol)
    return one


def test_conv3_conv3_is_a_5x5_conv():
    torch.manual_seed(0)
    one = _check(rfprobe.build("conv3 conv3", in_channels=3, channels=5), (3, 13, 11))
    assert one.kernel_size == (5, 5) and one.stride == (1, 1) and one.groups == 1
    assert isinstance(one, nn.Conv2d) and one.weight.dtype == torch.float64


def test_collapsed_kernel_by_hand():
    net = rfprobe.build("conv3/nobias conv3/nobias")
    with torch.no_grad():
        for m in net:
            m.weight.fill_(1.0)
    one = collapse(net)
    tent = torch.tensor([1.0, 2, 3, 2, 1])
    assert one.bias is None
    assert torch.equal(one.weight[0, 0], torch.outer(tent, tent))


@pytest.mark.parametrize("spec,shape,dims", [
    ("conv3/p1/s2 conv3/d2", (2, 17, 18), 2),
    ("conv3/d2/s2 conv3/s2 conv1", (2, 31, 29), 2),
    ("conv5/s3 conv3/d2 conv2", (2, 60), 1),
    ("conv3 conv3/s2", (1, 9, 10, 11), 3),
    ("conv1x3 conv3x1/s2x1", (2, 9, 9), 2),
    ("conv3/g2/c4 conv3/g2", (4, 12, 12), 2),
    ("conv3/dw conv1/c6", (3, 10, 10), 2),
    ("conv3/p2 bn avgpool2 conv3", (2, 14, 14), 2),
    ("conv2/s2 conv2/s2 conv2/s2", (1, 32), 1),
])
def test_collapse_handles_stride_dilation_padding_groups(spec, shape, dims):
    torch.manual_seed(1)
    net = rfprobe.build(spec, in_channels=shape[0], dims=dims, channels=4)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 2)
            m.bias.data.uniform_(-1, 1)
    one = _check(net, shape)
    assert one.in_channels == shape[0]


def test_groups_survive_when_the_stack_keeps_them():
    one = collapse(rfprobe.build("conv3/g2 conv3/g2", in_channels=4))
    assert one.groups == 2 and one.weight.shape == (4, 2, 5, 5)
    assert collapse(rfprobe.build("conv3/dw conv3/dw", in_channels=3)).groups == 3
    assert collapse(rfprobe.build("conv3/g2 conv1", in_channels=4)).groups == 1


def test_collapse_refuses_a_nonlinearity_by_name():
    with pytest.raises(RFProbeError, match=r"layer 1 \(ReLU, 'relu'\).*not linear"):
        collapse("conv3 relu conv3")
    with pytest.raises(RFProbeError, match=r"MaxPool2d"):
        collapse("conv3 maxpool2 conv3")
    with pytest.raises(RFProbeError, match=r"transposed"):
        collapse("conv3 convT2/s2")
    bn = rfprobe.build("conv3 bn conv3")
    with pytest.raises(RFProbeError, match=r"\.eval\(\)"):
        collapse(bn.train())
    with pytest.raises(RFProbeError, match="Sequential"):
        collapse(nn.ModuleDict({"a": nn.Conv2d(1, 1, 3)}))


def test_padding_after_the_first_layer_matches_only_the_interior():
    torch.manual_seed(3)
    net = rfprobe.build("conv3 conv3/p1", in_channels=2).double()
    with pytest.raises(RFProbeError, match="strict=False"):
        collapse(net)
    one = collapse(net, strict=False)
    x = torch.randn(1, 2, 12, 12, dtype=torch.float64)
    want, got = net(x), one(x)
    assert got.shape == want.shape
    assert torch.allclose(got[..., 1:-1, 1:-1], want[..., 1:-1, 1:-1], rtol=1e-9, atol=1e-10)
    assert not torch.allclose(got, want)         # the border differs, as documented


def test_collapse_leaves_the_stack_untouched():
    net = rfprobe.build("conv3 conv3/s2", in_channels=2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    collapse(net)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3)), min_size=1, max_size=4),
       st.integers(0, 2), st.integers(0, 7))
def test_collapse_property_1d(layers, first_pad, extra):
    spec = " ".join(f"conv{k}/s{s}/d{d}" for k, s, d in layers)
    spec = spec.replace(f"conv{layers[0][0]}", f"conv{layers[0][0]}/p{first_pad}", 1)
    net = rfprobe.build(spec, in_channels=2, dims=1).double()
    need = 1
    for k, s, d in reversed(layers):
        need = (need - 1) * s + d * (k - 1) + 1
    x = torch.randn(1, 2, max(need - 2 * first_pad, 1) + extra, dtype=torch.float64)
    try:
        want = net(x)
    except RuntimeError:
        return                                   # input too small for this stack
    got = collapse(net)(x)
    assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-9, atol=1e-10)
