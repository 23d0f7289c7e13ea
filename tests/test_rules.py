"""Per-op rules on small hand-written models: global coupling named, unions at adds and
concats, alignment notes, unknown ops, selection of what to probe, the data-dependent fallback.

Numbers in docstrings are computed by hand; every RF is also checked against the probe.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import rfprobe
from tests.models import UNKNOWN_OP, ConvThen, rfprobe_test_op
from rfprobe import rules
from rfprobe.ops import removed_records, user_rules
from rfprobe.errors import ArgumentError, UnknownOpError


class Wrap(nn.Module):
    """conv3/p1 then ``fn`` (a lambda over the feature map), then conv1."""

    def __init__(self, fn, c=4):
        super().__init__()
        self.c1 = nn.Conv2d(1, c, 3, padding=1)
        self.fn = fn
        self.c2 = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return self.c2(self.fn(self.c1(x)))


class SE(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.fc = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc(F.adaptive_avg_pool2d(x, 1)))


class Attention(nn.Module):
    def forward(self, y):
        b, c, h, w = y.shape
        t = y.flatten(2).transpose(1, 2)
        return F.scaled_dot_product_attention(t, t, t).transpose(1, 2).reshape(b, c, h, w)


class ManualAttention(nn.Module):
    def forward(self, y):
        b, c, h, w = y.shape
        t = y.reshape(b, c, h * w)
        att = torch.softmax(t.transpose(1, 2) @ t, dim=-1)
        return (t @ att).reshape(b, c, h, w)


class MHA(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(4, 2, batch_first=True)

    def forward(self, y):
        b, c, h, w = y.shape
        t = y.flatten(2).transpose(1, 2)
        return self.mha(t, t, t, need_weights=False)[0].transpose(1, 2).reshape(b, c, h, w)


GLOBALS = {
    "multihead_attention": (lambda: Wrap(MHA()).eval(), "attention"),
    "adaptive_avg_pool": (lambda: Wrap(lambda y: y + F.adaptive_avg_pool2d(y, 1)), "adaptive_avg_pool2d"),
    "adaptive_max_pool": (lambda: Wrap(lambda y: y * nn.AdaptiveMaxPool2d(1)(y)), "adaptive_max_pool2d"),
    "mean_over_space": (lambda: Wrap(lambda y: y - y.mean((2, 3), keepdim=True)), "mean"),
    "squeeze_excitation": (lambda: Wrap(SE()), "squeeze-excitation"),
    "sdpa": (lambda: Wrap(Attention()), "attention: scaled_dot_product_attention"),
    "manual_attention": (lambda: Wrap(ManualAttention()), "attention"),
    "linear_over_space": (lambda: Wrap(nn.Sequential(nn.Flatten(2), nn.Linear(144, 144), nn.Unflatten(2, (12, 12)))),
                          "Linear over space"),
    "batchnorm_training": (lambda: Wrap(nn.BatchNorm2d(4)).train(), "training mode"),
    "instance_norm": (lambda: Wrap(nn.InstanceNorm2d(4)), "instance_norm"),
    "group_norm": (lambda: Wrap(nn.GroupNorm(2, 4)), "group_norm"),
    "layer_norm_over_space": (lambda: Wrap(nn.LayerNorm([4, 12, 12])), "layer_norm over spatial"),
}


@pytest.mark.parametrize("key", list(GLOBALS))
def test_global_ops_are_named(key):
    """Each op couples every position: analyze says 'global' with the op, and verify explains a
    probe that covers the whole input by that op."""
    make, word = GLOBALS[key]
    model = make()
    a = rfprobe.analyze(model, input_shape=(1, 12, 12))
    assert a.status == "global", str(a)
    assert a.size is None and a.stride is None
    assert any(word in c for c in a.global_causes), a.global_causes
    r = rfprobe.verify(model, input_shape=(1, 12, 12))
    assert r.ok, str(r)
    assert r.probe.mask.all(), "the probe should see the whole input"
    assert any(d.startswith("global coupling") and word in d for d in r.diagnoses), r.diagnoses
    assert "RF global" in str(a)


def test_linear_over_one_spatial_axis_reads_that_whole_axis():
    """nn.Linear on the width of a 2-D map: every output column reads all 12 input columns, rows
    stay local (conv3/p1: 3 rows). Exact, not global: stride 0 on that axis. Hand-computed for
    the centre unit: the conv's padding makes the theoretical box columns -1..12 (14 wide, as
    the closed form says), rows 5..7; within the input, columns 0..11."""
    model = Wrap(nn.Linear(12, 10))
    r = rfprobe.verify(model, input_shape=(1, 12, 12))
    assert r.ok, str(r)
    assert r.analysis.size == (3, 14) and r.stride == (1, 0)
    assert r.closed_box == r.exact_box == ((5, 7), (-1, 12))
    assert r.probe_box == ((5, 7), (0, 11))


def test_batchnorm_eval_is_pointwise():
    """The same BatchNorm in eval mode uses running statistics: RF stays 3x3."""
    model = Wrap(nn.BatchNorm2d(4)).eval()
    assert rfprobe.verify(model, input_shape=(1, 12, 12)).size == (3, 3)


def test_layer_norm_over_channels_only_is_local():
    """LayerNorm over the channel dim, reached by a permute, is per position (hand: 3x3)."""
    model = Wrap(lambda y: nn.functional.layer_norm(y.permute(0, 2, 3, 1), (4,)).permute(0, 3, 1, 2))
    r = rfprobe.verify(model, input_shape=(1, 12, 12))
    assert r.ok and r.size == (3, 3), str(r)


class Residual(nn.Module):
    """x -> conv3 -> conv3, plus a shortcut conv1: the union of a 5x5 and a 1x1 RF."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.b = nn.Conv2d(2, 2, 3, padding=1)
        self.s = nn.Conv2d(1, 2, 1)

    def forward(self, x):
        return self.b(F.relu(self.a(x))) + self.s(x)


def test_residual_add_is_the_union():
    """Aligned paths (both centred on the unit): the union is 5x5, no alignment note."""
    r = rfprobe.verify(Residual(), input_shape=(1, 16, 16))
    assert r.ok and r.size == (5, 5) and r.closed_box == r.exact_box
    assert not any("not aligned" in n for n in r.analysis.notes)


class Misaligned(nn.Module):
    """A conv2 (centre at +0.5) added to a crop x[..., :-1, :-1] (centre at 0): not aligned.
    Unit i reads {i, i+1} through the conv and {i} through the crop: union 2 wide."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 1, 2)

    def forward(self, x):
        return self.c(x) + x[..., :-1, :-1]


def test_misaligned_paths_are_reported():
    r = rfprobe.verify(Misaligned(), input_shape=(1, 9, 9))
    assert r.ok and r.size == (2, 2), str(r)
    notes = [n for n in r.analysis.notes if "not aligned" in n]
    assert notes, r.analysis.notes
    assert "c" in notes[0] and "__getitem__" in notes[0]
    assert any("not aligned" in d for d in r.diagnoses)


class TwoStrides(nn.Module):
    """A stride-2 path added to an upsampled stride-4 path: the strides differ, so no closed
    form exists; the note names both paths and their strides."""

    def __init__(self):
        super().__init__()
        self.s2 = nn.Conv2d(1, 1, 3, stride=2, padding=1)
        self.s4 = nn.Conv2d(1, 1, 3, stride=4, padding=1)

    def forward(self, x):
        return self.s2(x) + F.interpolate(self.s4(x), scale_factor=2.0, mode="nearest")


def test_unaligned_strides_vary_and_agree_with_probe():
    a = rfprobe.analyze(TwoStrides(), input_shape=(1, 16, 16))
    assert a.status == "varies" and a.size_min is not None
    from rfprobe import probe_many
    units = [(i, j) for i in range(8) for j in (0, 3, 7)]
    for u, e in zip(units, probe_many(TwoStrides(), units, input_shape=(1, 16, 16))):
        assert (e.mask == a.region(u, bounded=True).input_mask()).all(), u


def test_concat_on_channels_is_the_union():
    """cat([conv3(x), conv5(x)], dim=1): per unit the union of 3x3 and 5x5 = 5x5."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 2, 3, padding=1)
            self.b = nn.Conv2d(1, 2, 5, padding=2)

        def forward(self, x):
            return torch.cat([self.a(x), self.b(x)], 1)
    r = rfprobe.verify(M(), input_shape=(1, 12, 12))
    assert r.ok and r.size == (5, 5)
    r0 = rfprobe.verify(M(), input_shape=(1, 12, 12), unit=(0, 0))
    assert r0.ok and r0.probe_box == ((0, 2), (0, 2))


# ----------------------------------------------------------------------------- unknown ops
class Running(nn.Module):
    """A 3x3 conv, then the tests' own op without a record along the width."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 1, 3)

    def forward(self, x):
        return rfprobe_test_op(self.c(x), dim=-1)


def test_unknown_op_names_the_op_and_call_site():
    with pytest.raises(UnknownOpError) as err:
        rfprobe.analyze(Running(), input_shape=(1, 10, 10))
    msg = str(err.value)
    assert f"'{UNKNOWN_OP}'" in msg and "test_rules.py:" in msg and "register_rule" in msg
    # the op after the selected layer does not matter
    a = rfprobe.analyze(Running(), input_shape=(1, 10, 10), layer="c")
    assert a.size == (3, 3)


def test_register_rule_by_function_and_by_word():
    """A running log-sum-exp along the width: out j reads 0..j (hand: unit (4, 5) of the conv
    output -> columns 0..7 of the input, rows 4..6)."""
    def prefix_rule(call):
        k = call.data[0]
        h, w = call.spatial_in(k)
        return [rules.InputDep(k, (rules.identity(h), rules.Mapped(lambda j, b: range(j + 1), w)))]
    rfprobe.register_rule(UNKNOWN_OP, prefix_rule)
    try:
        r = rfprobe.verify(Running(), input_shape=(1, 10, 10), unit=(4, 5))
        assert r.ok, str(r)
        assert r.exact_clipped_box == ((4, 6), (0, 7)) == r.probe_box
        rfprobe.register_rule(UNKNOWN_OP, "global")
        a = rfprobe.analyze(Running(), input_shape=(1, 10, 10))
        assert a.status == "global" and UNKNOWN_OP in a.global_causes[0]
    finally:
        rfprobe.unregister_rule(UNKNOWN_OP)
    assert UNKNOWN_OP not in user_rules()
    with pytest.raises(rfprobe.RFProbeError, match="pointwise"):
        rfprobe.register_rule(UNKNOWN_OP, "pointwize")


def test_register_pointwise_word():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 1, 3)

        def forward(self, x):
            return torch.special.erfcx(self.c(x))
    names = ("special_erfcx", "erfcx")       # whichever name the tracer sees
    with removed_records(*names):            # the test needs erfcx unknown, whatever rfprobe ships
        with pytest.raises(UnknownOpError, match="erfcx"):
            rfprobe.analyze(M(), input_shape=(1, 8, 8))
        # override=True: the user's word replaces a record rfprobe may have one day
        with rfprobe.registered_rule(names[0], "pointwise", override=True), \
                rfprobe.registered_rule(names[1], "pointwise", override=True):
            assert rfprobe.verify(M(), input_shape=(1, 8, 8)).size == (3, 3)


# ----------------------------------------------------------------------------- selection
class Heads(nn.Module):
    """Returns a dict and a tuple: 'fine' (conv3) and 'coarse' (conv3 -> conv3/s2 -> conv3)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.down = nn.Conv2d(2, 2, 3, stride=2, padding=1)
        self.head = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        f = self.stem(x)
        return {"fine": f, "coarse": (self.head(self.down(f)), f * 2)}


def test_output_key_and_index():
    """coarse[0]: 3 + 2*1 + 2*2 = 9 wide, stride 2 (hand-computed)."""
    m = Heads()
    a = rfprobe.analyze(m, input_shape=(1, 16, 16), output="fine")
    assert a.size == (3, 3)
    with pytest.raises(ArgumentError, match="fine"):
        rfprobe.analyze(m, input_shape=(1, 16, 16), output="coarser")
    class Tup(nn.Module):
        def __init__(self):
            super().__init__()
            self.h = Heads()

        def forward(self, x):
            d = self.h(x)
            return d["coarse"][0], d["fine"]
    r = rfprobe.verify(Tup(), input_shape=(1, 16, 16), output=0)
    assert r.ok and r.size == (9, 9) and r.stride == (2, 2)
    r = rfprobe.verify(Tup(), input_shape=(1, 16, 16), output=1, unit=(-1, 0))
    assert r.ok and r.probe_box == ((14, 15), (0, 1))
    with pytest.raises(ArgumentError, match=r"choose one of \[0, 1\]"):
        rfprobe.analyze(Tup(), input_shape=(1, 16, 16), output=2)


def test_layer_by_module_and_by_node_name():
    m = Residual()
    a = rfprobe.analyze(m, input_shape=(1, 16, 16))
    names = [row.name for row in a.layers]
    assert "a" in names and "b" in names
    node = next(row.name for row in a.layers if row.op == "add")
    assert rfprobe.analyze(m, input_shape=(1, 16, 16), layer=node).size == (5, 5)
    assert rfprobe.analyze(m, input_shape=(1, 16, 16), layer="b").size == (5, 5)
    assert rfprobe.verify(m, input_shape=(1, 16, 16), layer="a").size == (3, 3)
    with pytest.raises(ArgumentError, match="Did you mean 'b'|Did you mean 'a'"):
        rfprobe.analyze(m, input_shape=(1, 16, 16), layer="bb")


def test_unit_anywhere_and_bad_unit():
    r = rfprobe.verify(Residual(), input_shape=(1, 16, 16), unit=(0, -1))
    assert r.ok and r.probe_box == ((0, 2), (13, 15))     # 5x5 around (0, 15), clipped
    with pytest.raises(ArgumentError, match="unit"):
        rfprobe.verify(Residual(), input_shape=(1, 16, 16), unit=(16, 0))


# ----------------------------------------------------------------------------- fallback
class DataDependent(nn.Module):
    """Reads a value (``.item()``) to choose a branch: meta tensors cannot trace it."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 1, 3)
        self.d = nn.Conv2d(1, 1, 5, padding=2)

    def forward(self, x):
        y = self.c(x)
        if y.mean().item() > -1e9:
            y = self.d(y)
        return y


def test_data_dependent_fallback_says_what_was_lost():
    a = rfprobe.analyze(DataDependent(), input_shape=(1, 12, 12))
    assert a.size == (7, 7)
    assert any("real values" in n and "branch" in n for n in a.notes), a.notes
    assert rfprobe.verify(DataDependent(), input_shape=(1, 12, 12)).ok


def test_node_names_are_unique_and_say_where():
    a = rfprobe.analyze(Wrap(SE()), input_shape=(1, 8, 8))
    names = [row.name for row in a.layers]
    assert len(names) == len(set(names))
    assert "fn.fc" in names and any(n.startswith("fn:") for n in names)


def test_channel_reductions_stay_local():
    """CBAM-style spatial attention: mean and max over channels (with and without keepdim),
    concat, conv7/p3, sigmoid gate on a conv3/p1 map: union of 3x3 and 3+6 = 9x9 (hand)."""
    class CBAM(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 4, 3, padding=1)
            self.att = nn.Conv2d(2, 1, 7, padding=3)

        def forward(self, x):
            y = self.c(x)
            s = torch.cat([y.mean(1).unsqueeze(1), y.max(dim=1, keepdim=True)[0]], dim=1)
            return y * torch.sigmoid(self.att(s))
    r = rfprobe.verify(CBAM(), input_shape=(1, 16, 16))
    assert r.ok and r.size == (9, 9), str(r)
    r = rfprobe.verify(CBAM(), input_shape=(1, 16, 16), unit=(1, 14))
    assert r.ok and r.probe_box == ((0, 5), (10, 15)), str(r)


def test_channels_last_outputs_are_probed_where_their_axes_sit():
    """Between two permutes the spatial axes are dims 1, 2 and the channels last: the unit is
    seeded there (not in dims 2, 3), so the probe equals the exact route, and the RF is the
    same as after the permute back. An output whose spatial axes come in another order
    (N, W, H, C) is indexed per input axis all the same."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(4)

        def forward(self, x):
            return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), Block(), nn.Conv2d(4, 4, 3))
    inside = rfprobe.verify(net, input_shape=(1, None, None), layer="1.norm", unit=(2, 5))
    after = rfprobe.verify(net, input_shape=(1, None, None), layer="1", unit=(2, 5))
    assert inside.analysis.output_shape[-1] == 4 and after.analysis.output_shape[1] == 4
    assert inside.ok and after.ok, (str(inside), str(after))
    assert inside.exact_box == after.exact_box == ((2, 4), (5, 7))   # a 3x3 conv, unit (2, 5)
    assert inside.probe_box == inside.exact_box

    class Swapped(nn.Module):     # (N, C, H, W) -> (N, W, H, C)
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(2, 3, 3, stride=2)
            self.d = nn.Conv2d(3, 5, (1, 3))

        def forward(self, x):
            return self.d(self.c(x)).permute(0, 3, 2, 1)
    r = rfprobe.verify(Swapped(), input_shape=(2, 21, 17), unit=(1, 2))
    assert r.analysis.output_shape == (1, 6, 10, 5)     # W: (17-3)//2+1 - 2 = 6, H: (21-3)//2+1 = 10, C = 5
    assert r.ok and r.size == (3, 7) and r.probe_box == r.exact_box == ((2, 4), (4, 10)), str(r)
    one = rfprobe.probe(Swapped(), unit=(1, 2), input_shape=(2, 21, 17), channel=4)   # the last dim's
    assert one.box == r.probe_box
    with pytest.raises(ArgumentError, match=r"channel=5 is out of range: the output has 5 channels"):
        rfprobe.probe(Swapped(), unit=(1, 2), input_shape=(2, 21, 17), channel=5)
    f = rfprobe.erf(Swapped(), n=2, input_shape=(2, 21, 17), unit=(1, 2))    # seeded the same way
    rows, cols = np.nonzero(f.map)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (2, 4, 4, 10)


def test_an_output_with_spatial_axes_among_other_dims_is_refused():
    """(N, H, W, 1, C) for a 2D input: spatial axes not last and no single channel dim, so
    rfprobe says what it probes instead of guessing. With the spatial axes last, extra dims
    are fine: (N, 1, C, H, W) is seeded on every channel."""
    split = ConvThen(lambda y: y.permute(0, 2, 3, 1).unflatten(-1, (1, 3)), cout=3)
    with pytest.raises(ArgumentError, match=r"\(N, C, \*spatial\) or channels-last \(N, \*spatial, C\)"):
        rfprobe.probe(split, input_shape=(1, 9, 9))
    r = rfprobe.verify(ConvThen(lambda y: y.unsqueeze(1), cout=3), input_shape=(1, 9, 9), unit=(4, 1))
    assert r.ok and r.exact_box == ((4, 6), (1, 3)), str(r)


def test_outputs_without_a_channel_dim_are_probed_and_channel_is_refused():
    """(N, H, W) (channels squeezed away) and (H, W) (batch and channels indexed away): the
    unit is seeded on the spatial axes, the batch item where there is one; channel= has
    nothing to pick from and says so."""
    squeezed = ConvThen(lambda y: y.squeeze(1))
    for net in (squeezed, ConvThen(lambda y: y[0, 0])):
        r = rfprobe.verify(net, input_shape=(1, 9, 9), unit=(1, 2))
        assert r.ok and r.exact_box == ((1, 3), (2, 4)) == r.probe_box, str(r)
    with pytest.raises(ArgumentError, match="has no channel dim"):
        rfprobe.probe(squeezed, input_shape=(1, 9, 9), channel=0)
