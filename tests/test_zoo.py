"""torchvision's zoo, random weights, eval mode: all three routes agree.

Public values (size / effective stride / effective padding, per axis) for the classic trunks
come from the receptive-field literature (Araujo et al., Distill 2019, table of common
networks); the rest of the zoo is checked route against route: the closed form's box must
equal the exact propagation's box, and the gradient probe (which runs PyTorch's own kernels)
must equal the exact set, with the probe's input large enough that nothing is truncated.
Some sizes are hand-computed below from the architectures (shown in the docstrings).

The probe sizes its input to the RF (resnet101: 998 px per side, densenet121: 2074); large
inputs are probed in slab mode (full length along one axis at a time), which keeps the whole
file within a few minutes on two cores.
"""
from __future__ import annotations

import functools

import pytest
import torch

import rfprobe

tv = pytest.importorskip("torchvision.models")

pytestmark = pytest.mark.slow


@functools.lru_cache(maxsize=2)   # vgg16 and resnet50 are used twice; rfprobe never changes a model
def model(name, **kw):
    torch.manual_seed(0)
    return getattr(tv, name)(weights=None, **kw).eval()


def check_routes(r):
    """The routes agree; the closed form's box is the exact box; nothing was truncated."""
    assert r.ok, str(r)
    assert r.analysis.status == "ok", str(r)
    assert r.closed_box == r.exact_box, str(r)
    assert r.probe_box == r.exact_clipped_box == r.exact_box, str(r)
    assert not r.probe.truncated
    assert r.probe.size == r.analysis.size


PUBLIC = [
    ("alexnet", "features", 195, 32, 66),
    ("vgg16", "features", 212, 32, 90),
    ("vgg16", "features.28", 196, 16, 90),      # conv5_3
    ("vgg16", "features.29", 196, 16, 90),      # the relu after conv5_3
    ("resnet18", "layer4", 435, 32, 217),
    ("resnet50", "layer4", 427, 32, 213),
    ("resnet101", "layer4", 971, 32, 485),
]


@pytest.mark.parametrize("name,layer,size,stride,padding", PUBLIC, ids=[f"{n}-{l}" for n, l, *_ in PUBLIC])
def test_public_values(name, layer, size, stride, padding):
    r = rfprobe.verify(model(name), layer=layer)
    check_routes(r)
    assert r.size == (size, size)
    assert r.stride == (stride, stride)
    assert r.padding == (padding, padding)


HAND = [
    # squeezenet1_0: conv7/s2 (7, S2); maxpool3/s2 (+4 -> 11, S4); fire2-4, each expand3x3/p1
    # (+8 each -> 35); maxpool (+8 -> 43, S8); fire5-8 (+16 each -> 107); maxpool (+16 -> 123,
    # S16); fire9 (+32 -> 155). Padding: fires add S each: 3*4 + 4*8 + 16 = 60.
    ("squeezenet1_0", "features", {}, 155, 16, 60),
    # convnext_tiny: stem conv4/s4 (4, S4); stage blocks are depthwise 7x7/p3 (+6S, P += 3S),
    # downsamples conv2/s2 (+S): 4 + 3*24 + 4 + 3*48 + 8 + 9*96 + 16 + 3*192 = 1688, S32;
    # P = 3*3*4 + 3*3*8 + 9*3*16 + 3*3*32 = 828. LayerNorm runs channels-last (permute):
    # per position, not global.
    ("convnext_tiny", "features", {}, 1688, 32, 828),
]


@pytest.mark.parametrize("name,layer,kw,size,stride,padding", HAND, ids=[n for n, *_ in HAND])
def test_hand_computed(name, layer, kw, size, stride, padding):
    r = rfprobe.verify(model(name, **kw), layer=layer)
    check_routes(r)
    assert (r.size, r.stride, r.padding) == ((size,) * 2, (stride,) * 2, (padding,) * 2)


ZOO = [
    ("mobilenet_v2", "features", {}),
    ("densenet121", "features", {}),
    ("regnet_x_400mf", "trunk_output", {}),
    ("shufflenet_v2_x0_5", "conv5", {}),
    ("mnasnet0_5", "layers", {}),
    # transform_input: per-channel affine via x[:, 0], unsqueeze and cat on channels
    ("googlenet", "inception5b", {"aux_logits": False, "init_weights": False, "transform_input": True}),
    ("inception_v3", "Mixed_7c", {"aux_logits": False, "init_weights": False, "transform_input": True}),
]


@pytest.mark.parametrize("name,layer,kw", ZOO, ids=[n for n, *_ in ZOO])
def test_zoo_routes_agree(name, layer, kw):
    kw = dict(kw)
    """Route against route only (no number copied from rfprobe): closed form box == exact box,
    exact set == probe, and the effective stride is the trunk's total downsampling (16 or 32)."""
    r = rfprobe.verify(getattr(tv, name)(weights=None, **kw).eval(), layer=layer)
    check_routes(r)
    s = r.stride[0]
    assert s & (s - 1) == 0 and s in (16, 32)


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenet_v3_small"])
def test_squeeze_excitation_is_global_by_name(name):
    """The SE gate (global average pool -> 1x1 convs -> sigmoid -> multiply) couples every
    position; the diagnosis names squeeze-excitation, the module class and its path."""
    m = model(name)
    a = rfprobe.analyze(m, layer="features")
    assert a.status == "global" and a.size is None and a.stride is None
    first = a.global_causes[0]
    assert "squeeze-excitation" in first and "SqueezeExcitation" in first
    assert "adaptive_avg_pool2d" in first and "'features.1." in first
    assert "RF global" in str(a) and "squeeze-excitation" in str(a)
    r = rfprobe.verify(m, layer="features")
    assert r.ok
    e = r.probe
    assert all(lo == 0 and hi == n - 1 for (lo, hi), n in zip(e.box, e.input_shape[1:]))
    assert any("global coupling" in d and "squeeze-excitation" in d for d in r.diagnoses)


def test_resnet_fc_is_global_and_layer_selection():
    """The classifier's output is global (avgpool to 1x1, then Linear); a wrong layer name
    suggests the nearest one."""
    m = model("resnet18")
    with pytest.raises(rfprobe.RFProbeError, match="without spatial axes|layer="):
        rfprobe.analyze(m)
    with pytest.raises(rfprobe.RFProbeError, match="Did you mean 'layer4'"):
        rfprobe.analyze(m, layer="layr4")
    a = rfprobe.analyze(m, layer="avgpool")
    assert a.status == "global" and "adaptive_avg_pool2d" in a.global_causes[0]


def test_cli_verify_resnet50_layer4(capsys):
    """`rfprobe verify torchvision.models:resnet50 --layer layer4` exits 0 and prints the RF."""
    from rfprobe.cli import main
    code = main(["verify", "torchvision.models:resnet50", "--layer", "layer4", "--expect-size", "427"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "427x427" in out and "OK" in out
    code = main(["verify", "torchvision.models:resnet18", "--layer", "layer4", "--expect-size", "400"])
    assert code == 1
    code = main(["verify", "torchvision.models:resnet18", "--layer", "layer9"])
    err = capsys.readouterr().err
    assert code == 2 and "layer4" in err


VIDEO = [
    # r3d_18: stem (3,7,7) at stride (1,2,2); layer1: four 3x3x3 convs; layer2: four more, the
    # first at stride 2 on every axis. time 3 + 4*2 = 11, + 2 = 13 at stride 2, + 3*2*2 = 25;
    # space 7 + 4*2*2 = 23, + 2*2 = 27 at stride 4, + 3*2*4 = 51
    ("r3d_18", "layer2", (25, 51, 51), (2, 4, 4)),
    # mc3_18: the same stem and layer1; layer2 convs are (1,3,3), the first at stride (1,2,2):
    # time stays 11; space 51 as above
    ("mc3_18", "layer2", (11, 51, 51), (1, 4, 4)),
    # r2plus1d_18: stem (1,7,7) at stride (1,2,2) then (3,1,1); layer1: four (2+1)D convs, each
    # (1,3,3) then (3,1,1). time 1 + 2 + 4*2 = 11; space 7 + 4*2*2 = 23
    ("r2plus1d_18", "layer1", (11, 23, 23), (1, 2, 2)),
]


@pytest.mark.parametrize("name,layer,size,stride", VIDEO, ids=[n for n, *_ in VIDEO])
def test_video_models_3d(name, layer, size, stride):
    """torchvision's video ResNets (3D, (2+1)D and mixed convolutions; the input's rank and
    channels inferred from the first Conv3d): sizes and strides derived above by hand, and the
    routes agree."""
    torch.manual_seed(0)
    r = rfprobe.verify(getattr(tv.video, name)(weights=None).eval(), layer=layer)
    check_routes(r)
    assert r.size == size and r.stride == stride, str(r)


def test_dilated_segmentation_backbone():
    """fcn_resnet50's backbone: ResNet-50 with layer3 and layer4 dilated instead of strided
    (dilation 2 and 4). The effective stride stays 8, the RF grows as with strides; every
    route agrees, and the closed form's stride is the backbone's output stride."""
    seg = pytest.importorskip("torchvision.models.segmentation")
    torch.manual_seed(0)
    backbone = seg.fcn_resnet50(weights=None, weights_backbone=None).backbone.eval()
    r = rfprobe.verify(backbone, layer="layer4")
    check_routes(r)
    assert r.stride == (8, 8)
    dilations = {m.dilation for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)}
    assert {(2, 2), (4, 4)} <= dilations     # the case this test is for


def test_swin_features_channels_last_and_global():
    """swin_t's trunk ends channels-last, (N, H, W, C): it is probed where its axes sit. Its
    windows are flattened into one axis before attention, which rfprobe treats as global; the
    probe (an independent route) sees the whole input too."""
    torch.manual_seed(0)
    r = rfprobe.verify(tv.swin_t(weights=None).eval().features)
    a = r.analysis
    assert a.output_shape[-1] == 768 and a.output_shape[1] != 768
    assert a.status == "global" and "attention" in a.global_causes[0], a.global_causes
    assert r.ok, str(r)
    assert all(lo == 0 and hi == n - 1 for (lo, hi), n in zip(r.probe.box, r.probe.input_shape[1:]))
