"""The per-layer table as a user reads it: each module named on the row that ``layer=`` selects
for it (its output, not its first op), only the ops the selected output reads, and every global
op on the path named, once each.

Sizes are computed by hand (in the docstrings) and checked against the perturbation oracle
(``tests/oracle.py``); the table's own rows are checked against ``analyze(layer=row)``, the
promise the table makes.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import rfprobe
from tests.oracle import perturbation_rf


# ----------------------------------------------------------------------------- rows named by layer=
class Block(nn.Module):
    """A residual block whose first op (conv1) is not its output, whose own op is the add, and
    whose ReLU module runs twice: layer='relu' selects the second call, layer=block the last
    ReLU. conv3 + conv3 beside the shortcut: 2 + 2 = 4 more positions of RF at stride 1."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.relu(self.conv1(x))
        return self.relu(self.conv2(y) + x)


class Padded(nn.Module):
    """Pads first (its first op), then runs its conv (its output): conv3 on a 1-padded map, RF 3."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3)

    def forward(self, x):
        return self.conv(F.pad(x, (1, 1, 1, 1)))


class Nested(nn.Module):
    """stem 3; stage.0 3 + 4 = 7; stage.1 11; head: an Identity hands stage.1 on (it does not
    name it), a conv3/s2 gives 11 + 2 = 13 at stride 2."""

    def __init__(self):
        super().__init__()
        self.stem = Padded(1, 2)
        self.stage = nn.Sequential(Block(2), Block(2))
        self.head = nn.Sequential(nn.Identity(), nn.Conv2d(2, 2, 3, stride=2), nn.ReLU())

    def forward(self, x):
        return self.head(self.stage(self.stem(x)))


BY_HAND = {"stem": 3, "stage.0.conv1": 5, "stage.0": 7, "stage.1.conv1": 9, "stage.1": 11, "head.1": 13}


def _rows_select_themselves(model, shape, layer=None, modules_only=False):
    """Every row of the table (or every row named by a module) is where ``layer=`` its name
    lands, with the row's numbers."""
    a = rfprobe.analyze(model, shape, layer=layer)
    names = [r.name for r in a.layers]
    assert len(set(names)) == len(names), names
    modules = dict(model.named_modules())
    for row in a.layers:
        if modules_only and row.name not in modules:
            continue
        b = rfprobe.analyze(model, shape, layer=row.name)
        assert b.target == row.name, (row.name, b.target)
        assert (b.size, b.stride, b.padding, b.output_shape) == (row.size, row.stride, row.padding, row.shape), row
    return a


def test_each_module_is_named_on_the_row_layer_selects():
    model = Nested()
    a = _rows_select_themselves(model, (1, 24, 24))
    rows = {r.name: r for r in a.layers}
    modules = dict(model.named_modules())
    shown = [n for n in rows if n in modules]
    assert {n: rows[n].size[0] for n in BY_HAND} == BY_HAND
    # the block's first op, its own add and the first ReLU call are named by module and op, so
    # the block's name and the ReLU's are free for what layer= selects
    assert "stage.0.conv1" in shown and "stage.0" in shown and rows["stage.0"].op == "relu"
    assert rows["stage.0:add#0"].op == "add" and rows["stage.0.relu:relu#0"].op == "relu"
    assert rows["stem"].op == "conv2d" and rows["stem:pad#0"].op == "pad"
    assert "head.0" not in rows         # the Identity's output is stage.1's
    for name in ("stage.0", "stage.1", "head.1"):
        o = perturbation_rf(_Upto(model, name), (1, 24, 24), (6, 6) if name != "head.1" else (5, 5), hooks=True)
        width = o.box[0][1] - o.box[0][0] + 1
        assert width == BY_HAND[name] == rows[name].size[0], (name, o.box)


class _Upto(nn.Module):
    """The model's output at module ``name``, taken by a forward hook (for the oracle)."""

    def __init__(self, model, name):
        super().__init__()
        self.model, self.name, self.seen = model, name, {}
        model.get_submodule(name).register_forward_hook(self.grab)

    def grab(self, module, args, out):
        self.seen["out"] = out

    def forward(self, x):
        self.model(x)
        return self.seen.pop("out")


def test_a_conv_with_reflect_padding_is_named_on_its_conv():
    """nn.Conv2d(padding_mode='reflect') pads first: the module's name goes to its conv."""
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"), nn.Conv2d(1, 1, 3))
    a = rfprobe.analyze(net, (1, 16, 16))
    assert [(r.name, r.op) for r in a.layers] == [("0:pad#0", "pad"), ("0", "conv2d"), ("1", "conv2d")]
    assert rfprobe.analyze(net, (1, 16, 16), layer="0").target == "0"


def test_the_probe_keeps_a_module_output_that_is_written_in_place_later():
    """The module 'm' pads (its first op) then convolves (its output, named 'm' when it
    returns); the caller then adds a 5x5 conv into it in place. The probe must measure 'm' as
    it was returned: conv3, a 3x3 box (by hand), not the 5x5 the in-place add makes."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")
            self.c = nn.Conv2d(1, 1, 5, padding=2)

        def forward(self, x):
            y = self.m(x)
            y += self.c(x)
            return y

    r = rfprobe.verify(Net(), (1, 16, 16), layer="m", unit=(8, 8))
    assert r.analysis.target == "m" and r.ok, str(r)
    assert r.probe_box == r.exact_box == ((7, 9), (7, 9))


@pytest.mark.slow
def test_resnet18_rows_select_themselves():
    """torchvision's resnet18 up to layer4: every module shown is where layer= lands. By hand:
    layer1.0 is stem 7/s2, maxpool +2*2 = 11 at stride 4, two 3x3 convs +2*2*4 = 27; layer4 is
    435 at stride 32."""
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18().eval()
    a = _rows_select_themselves(model, (3, 64, 64), layer="layer4", modules_only=True)
    rows = {r.name: r for r in a.layers}
    assert rows["layer1.0"].op == "relu" and rows["layer1.0"].size == (27, 27)
    assert rows["layer4.1"].size == (435, 435) and rows["layer4.1"].stride == (32, 32)   # layer4: a Sequential
    blocks = [n for n, m in model.named_modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 8 and all(rows[b].op == "relu" for b in blocks)
    # by hand: the stem's conv1, bn1, relu, maxpool; per block conv1, bn1, conv2, bn2 and the
    # block (its ReLU's second call); layers 2-4 add downsample.0 and .1: 4 + 8*5 + 3*2 = 50
    assert sum(r.name in dict(model.named_modules()) for r in a.layers) == 50


# ----------------------------------------------------------------------------- only what output= reads
class Heads(nn.Module):
    """A trunk conv3 and three heads on it, returned as a dict. cls: conv3 added to a crop
    (misaligned on purpose: a note); box: conv5 'same'; ctr: conv1. By hand, ctr's RF is the
    trunk's 3."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Conv2d(1, 2, 3, padding=1)
        self.cls = nn.Conv2d(2, 2, 2)
        self.box = nn.Conv2d(2, 2, 5, padding=2)
        self.ctr = nn.Conv2d(2, 1, 1)

    def forward(self, x):
        y = self.trunk(x)
        return {"cls": self.cls(y) + y[..., :-1, :-1], "box": self.box(y), "ctr": self.ctr(y)}


def test_output_table_lists_only_what_the_output_reads():
    shape = (1, 16, 16)
    ctr = rfprobe.analyze(Heads(), shape, output="ctr")
    assert [r.name for r in ctr.layers] == ["trunk", "ctr"]
    assert ctr.size == (3, 3) and not ctr.notes
    o = perturbation_rf(Heads(), shape, (8, 8), pick=lambda d: d["ctr"])
    assert o.box == ((7, 9), (7, 9))
    cls = rfprobe.analyze(Heads(), shape, output="cls")
    assert [r.name for r in cls.layers] == ["trunk", "cls", "__getitem__#0", "add#1"]
    assert any("not aligned" in n for n in cls.notes), cls.notes
    box = rfprobe.analyze(Heads(), shape, output="box")
    assert [r.name for r in box.layers] == ["trunk", "box"] and box.size == (7, 7)
    for text in (str(ctr), ctr._repr_html_(), str(ctr.to_dict())):
        assert "cls" not in text and "'box'" not in text


# ----------------------------------------------------------------------------- every global op
class SE(nn.Module):
    """Squeeze-excitation: a pooled gate (1x1 convs on the 1x1 map) scales the map."""

    def __init__(self, c):
        super().__init__()
        self.fc = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc(F.adaptive_avg_pool2d(x, 1)))


class ECA(nn.Module):
    """ECA's gate: the pooled vector runs through a Conv1d over channels (ops on a tensor
    without spatial axes, global because of the pool, not causes of their own), and is
    expanded to the map's shape (so not named as a broadcast gate: the mean is the cause)."""

    def __init__(self):
        super().__init__()
        self.k = nn.Conv1d(1, 1, 3, padding=1)

    def forward(self, x):
        y = self.k(x.mean((2, 3)).unsqueeze(1)).squeeze(1).sigmoid()
        return x * y[:, :, None, None].expand_as(x)


class ThreeGates(nn.Module):
    def __init__(self, bn_training=False):
        super().__init__()
        self.c0 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.se1, self.se2, self.eca = SE(4), SE(4), ECA()
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)
        self.train(bn_training)

    def forward(self, x):
        return self.c1(self.eca(self.se2(self.se1(self.bn(self.c0(x))))))


def test_every_global_op_on_the_path_is_a_cause():
    a = rfprobe.analyze(ThreeGates(), (1, 8, 8))
    assert a.status == "global" and len(a.global_causes) == 3, a.global_causes
    for cause, module in zip(a.global_causes[:2], ("se1", "se2")):
        assert "squeeze-excitation" in cause and f"'{module}'" in cause, cause
    assert a.global_causes[2].startswith("eca:mean#0: mean over spatial dims")
    text = str(a)
    assert "RF global: 3 global ops on the path, the first " + a.global_causes[0] in text
    assert [line for line in text.splitlines() if line.startswith("global op ")] == [
        f"global op {i}/3: {c}" for i, c in enumerate(a.global_causes, 1)]
    assert all(c in a._repr_html_().replace("&#x27;", "'") for c in a.global_causes)
    assert a.to_dict()["global_causes"] == list(a.global_causes)
    r = rfprobe.verify(ThreeGates(), (1, 8, 8))
    assert r.ok and sum(d.startswith("global coupling") for d in r.diagnoses) == 3, r.diagnoses
    # by experiment: every position moves the centre unit
    assert perturbation_rf(ThreeGates(), (1, 8, 8), (4, 4)).mask.all()


def test_a_batchnorm_in_training_mode_is_its_own_cause_not_a_gate():
    """Before the gates, a BatchNorm in training mode: four causes, the gates still named as
    gates and the BatchNorm as itself."""
    a = rfprobe.analyze(ThreeGates(bn_training=True), (1, 8, 8))
    assert len(a.global_causes) == 4, a.global_causes
    assert a.global_causes[0].startswith("bn: batch_norm in training mode")
    assert ["squeeze-excitation" in c for c in a.global_causes] == [False, True, True, False]


@pytest.mark.slow
def test_efficientnet_b0_names_its_16_squeeze_excitation_gates():
    torchvision = pytest.importorskip("torchvision")
    from torchvision.ops.misc import SqueezeExcitation
    model = torchvision.models.efficientnet_b0().eval()
    gates = [n for n, m in model.named_modules() if isinstance(m, SqueezeExcitation)]
    a = rfprobe.analyze(model, (3, 64, 64), layer="features")
    assert len(gates) == 16 and len(a.global_causes) == 16, a.global_causes
    for gate, cause in zip(gates, a.global_causes):
        assert cause.startswith(f"{gate}.avgpool: squeeze-excitation"), cause
    assert "RF global: 16 global ops on the path" in str(a)
