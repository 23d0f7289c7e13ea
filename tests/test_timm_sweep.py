"""A sweep of timm's model zoo: one small model per architecture module, random weights.

timm is pinned in the ``test`` extra (pyproject.toml), so the list below is a fixed set of
models. For each: ``timm.create_model(name, pretrained=False, features_only=True)`` (nothing is
downloaded), the smallest square input it runs on (``img_size=`` where the model takes one, so
a ViT runs on 64 pixels instead of 224), then

- ``verify`` on every feature level: the three routes (closed form, exact set, gradient probe)
  agree, a local level's stride equals ``feature_info.reduction()`` (an independent number,
  timm's own bookkeeping), a global level names its cause;
- on one level, the first with a local RF (else level 0), the probe against the perturbation
  oracle (``tests/oracle.py``, which shares no code with rfprobe), on a thinner input and a
  model built only up to that level (``out_indices``): the oracle can only miss positions, never
  add them, so its set must lie inside the probe's, and equal it on a local level unless the
  case says why the oracle misses there;
- no call (verify, probe, erf) changes the model (weights, buffers, modes, hooks, attributes:
  ``tests/snapshot.py``).

Models that rfprobe cannot follow yet are strict expected failures naming the construct (and
the issue that covers it), typed by how they fail: an rfprobe error, or a result whose routes
verify finds disagreeing. ``LEFT_OUT`` lists the architecture modules that are not swept, each
with its reason (its cost on a 2-core CI machine), so that a module a new timm adds shows up
here (``test_every_timm_module_is_swept_or_left_out_with_a_reason``).
"""
from __future__ import annotations

import dataclasses

import pytest
import timm          # in the test extra; a missing timm fails loudly rather than skipping the sweep
import torch

import rfprobe
from tests.oracle import perturbation_rf
from tests.snapshot import assert_unchanged, snapshot

pytestmark = pytest.mark.slow

TIMM = "1.0.31"


@dataclasses.dataclass(frozen=True)
class Case:
    module: str              # timm's architecture module (timm.list_modules())
    model: str               # the model built from it
    side: int                # verify's input is (3, side, side)
    oracle_side: int         # the probe and the oracle compare on (3, oracle_side, oracle_side)
    kwargs: tuple = ()       # extra create_model arguments, e.g. (("img_size", 64),)
    error: str | None = None  # why rfprobe raises on it (a strict expected failure: RFProbeError)
    wrong: str | None = None  # why verify finds its routes disagreeing (strict: AssertionError)
    oracle_misses: str | None = None  # why the oracle can miss positions here (then only inside)


IMG = "img_size"



def _c(module, model, side, oracle_side=None, kwargs=(), error=None, wrong=None, oracle_misses=None):
    return Case(module, model, side, oracle_side or side, tuple(kwargs), error, wrong, oracle_misses)


SWEEP = [
    # convolutional trunks (and hybrids taking any size): the oracle runs on a thinner input
    _c("byobnet", "test_byobnet", 64, 32),
    _c("convmixer", "convmixer_768_32", 32, 16),
    _c("convnext", "test_convnext", 64, 32),
    _c("cpubone", "cpubone_b0_bfrobust", 64, 32),
    _c("csatv2", "csatv2", 128, 64),
    _c("cspnet", "cs3darknet_focus_s", 64, 32),
    _c("cspnext", "cspnext_tiny", 64, 32),
    _c("densenet", "densenet121", 64, 32),
    _c("dla", "dla46_c", 64, 32),
    _c("dpn", "dpn48b", 64, 32),
    _c("edgenext", "edgenext_xx_small", 64, 32),
    _c("efficientnet", "test_efficientnet", 64, 32),
    _c("efficientvim", "efficientvim_m1", 96, 32),
    _c("efficientvit_mit", "efficientvit_b0", 64, 32),
    _c("fasternet", "fasternet_t0", 64, 32),
    _c("fastvit", "fastvit_t8", 64, 32),
    _c("focalnet", "focalnet_tiny_srf", 64, 32),
    _c("ghostnet", "ghostnet_050", 64, 32),
    _c("hardcorenas", "hardcorenas_a", 64, 32),
    _c("hgnet", "hgnetv2_b0", 64, 32),
    _c("hrnet", "hrnet_w18_small", 64, 32),
    _c("iformer", "iformer_t", 64, 32),
    _c("inception_next", "inception_next_atto", 64, 32),
    _c("inception_resnet_v2", "inception_resnet_v2", 128, 96),
    _c("inception_v3", "inception_v3", 128, 96),
    _c("inception_v4", "inception_v4", 128, 96),
    _c("lcnetv2", "lcnetv2_small", 64, 32),
    _c("lowformer", "lowformer_b0", 64, 32),
    _c("mambaout", "test_mambaout", 64, 32),
    _c("metaformer", "poolformer_s12", 64, 32),
    _c("mobilenetv3", "mobilenetv3_small_050", 64, 32),
    _c("mobilenetv5", "mobilenetv5_300m", 64, 32),
    _c("nasnet", "nasnetalarge", 64, 16),
    _c("nextvit", "nextvit_small", 64, 32),
    _c("nfnet", "test_nfnet", 64, 32),
    _c("pnasnet", "pnasnet5large", 64, 16),
    _c("pvt_v2", "pvt_v2_b0", 64, 32),
    _c("rdnet", "rdnet_tiny", 64, 32),
    _c("regnet", "regnetx_002", 64, 32),
    _c("repghost", "repghostnet_050", 64, 32),
    _c("res2net", "res2net50_14w_8s", 64, 32),
    _c("resnest", "resnest14d", 64, 32),
    _c("resnet", "test_resnet", 64, 32),
    _c("resnetv2", "resnetv2_18", 64, 32),
    _c("rexnet", "rexnet_100", 64, 64, oracle_misses="ReLU6 clips the oracle's huge values, so a "
       "perturbation can leave the unit unchanged"),
    _c("selecsls", "selecsls42", 64, 32),
    _c("senet", "legacy_seresnet18", 64, 32),
    _c("shvit", "shvit_s1", 96, 32),
    _c("sknet", "skresnet18", 64, 32),
    _c("starnet", "starnet_s050", 64, 64, oracle_misses="ReLU6 clips the oracle's huge values, so a "
       "perturbation can leave the unit unchanged"),
    _c("tiny_vit", "tiny_vit_5m_224", 64, 32),
    _c("tresnet", "tresnet_m", 64, 32),
    _c("vgg", "vgg11", 64, 32),
    _c("vovnet", "ese_vovnet19b_slim_dw", 64, 32),
    _c("xception", "legacy_xception", 64, 32),
    _c("xception_aligned", "xception41", 64, 32),
    # fixed input size (img_size=): transformers and hybrids, on the smallest size they take
    _c("beit", "beit_base_patch16_224", 32, kwargs=[(IMG, 32)]),
    _c("cait", "cait_xxs24_224", 32, kwargs=[(IMG, 32)]),
    _c("coat", "coat_lite_tiny", 32, kwargs=[(IMG, 32)]),
    _c("convit", "convit_tiny", 32, kwargs=[(IMG, 32)]),
    _c("davit", "davit_tiny", 64, 32),
    _c("deit", "deit_tiny_patch16_224", 32, kwargs=[(IMG, 32)]),
    _c("efficientformer_v2", "efficientformerv2_s0", 64, kwargs=[(IMG, 64)]),
    _c("efficientvit_msra", "efficientvit_m0", 96, kwargs=[(IMG, 96)]),
    _c("eva", "eva02_tiny_patch14_224", 28, kwargs=[(IMG, 28)]),
    _c("levit", "levit_128s", 64, kwargs=[(IMG, 64)]),
    _c("maxxvit", "test_coatnet", 64, kwargs=[(IMG, 64)]),
    _c("mlp_mixer", "mixer_s16_224", 32, kwargs=[(IMG, 32)]),
    _c("mobilevit", "mobilevit_xxs", 64, 32, kwargs=[(IMG, 64)]),
    _c("naflexvit", "naflexvit_base_patch16_gap", 32, kwargs=[(IMG, 32)]),
    _c("pit", "pit_ti_224", 32, kwargs=[(IMG, 32)]),
    _c("qwen3_vit", "qwen3_vit_88m", 32, kwargs=[(IMG, 32)]),
    _c("repvit", "repvit_m0_9", 64, 32, kwargs=[(IMG, 64)]),
    _c("swiftformer", "swiftformer_xs", 64, 32, kwargs=[(IMG, 64)]),
    _c("swin_transformer_v2", "swinv2_tiny_window8_256", 64, 32, kwargs=[(IMG, 64)]),
    _c("twins", "twins_svt_small", 64, 32, kwargs=[(IMG, 64)]),
    _c("visformer", "visformer_tiny", 32, kwargs=[(IMG, 32)]),
    _c("vision_transformer", "test_vit", 32, kwargs=[(IMG, 32)]),
    _c("vision_transformer_hybrid", "vit_tiny_r_s16_p8_224", 32, kwargs=[(IMG, 32)]),
    _c("vision_transformer_relpos", "test_vit_relpos", 32, kwargs=[(IMG, 32)]),
    _c("vitamin", "vitamin_small_224", 64, kwargs=[(IMG, 64)], oracle_misses="LayerNorm bounds the "
       "oracle's huge values while its positive weights grow the activations to about 1e8, so a "
       "perturbation moves the unit less than the oracle's relative threshold"),
    _c("xcit", "xcit_nano_12_p16_224", 32, kwargs=[(IMG, 32)]),
    # positions that move between dims: windows, halos, mask units, pooled keys, rows, im2col
    _c("byoanet", "halonet26t", 256, kwargs=[(IMG, 256)]),
    _c("gcvit", "gcvit_xxtiny", 64, 32, kwargs=[(IMG, 64)]),
    _c("hiera", "hiera_tiny_224", 64, 32, kwargs=[(IMG, 64)]),
    _c("hieradet_sam2", "sam2_hiera_tiny", 64),
    _c("mvitv2", "mvitv2_tiny", 64, 32, kwargs=[(IMG, 64)]),
    _c("nest", "nest_tiny", 64, kwargs=[(IMG, 64)]),
    _c("sequencer", "sequencer2d_s", 32, kwargs=[(IMG, 64)]),
    _c("swin_transformer", "swin_tiny_patch4_window7_224", 64, 32, kwargs=[(IMG, 64)]),
    _c("swin_transformer_v2_cr", "swinv2_cr_tiny_224", 64, kwargs=[(IMG, 64)]),
    _c("tnt", "tnt_s_patch16_224", 64, 32, kwargs=[(IMG, 64)]),
    _c("volo", "volo_d1_224", 64, 32, kwargs=[(IMG, 64)]),
]

LEFT_OUT = {
    "crossvit": "two branches at 240 and 224 pixels: the oracle alone needs tens of GiB",
    "deepseek_vit": "412M parameters: too large for the CI budget",
    "efficientformer": "efficientformer_l1 (its smallest) takes only 224 pixels: the oracle "
                       "alone costs about 100 s",
    "vision_transformer_sam": "ViT-Base size with windowed and global attention: the oracle's "
                              "float64 batches alone take about 170 s",
    "gemma4_vit": "167M parameters: the oracle's float64 batches alone take about half a minute "
                  "(verify is right on it: tests/test_honest.py holds the bug it showed)",
}


def _create(case: Case, **kwargs):
    """``case.model`` with random weights (seeded), as a feature extractor; ``kwargs`` replace
    the case's own create_model arguments."""
    torch.manual_seed(0)
    return timm.create_model(case.model, pretrained=False, features_only=True,
                             **{**dict(case.kwargs), **kwargs}).eval()


def _params():
    def marks(c):
        if c.error:
            return [pytest.mark.xfail(reason=c.error, strict=True, raises=rfprobe.RFProbeError)]
        if c.wrong:
            return [pytest.mark.xfail(reason=c.wrong, strict=True, raises=AssertionError)]
        return []
    return [pytest.param(c, id=f"{c.module}-{c.model}", marks=marks(c)) for c in SWEEP]


def test_the_pinned_timm_is_installed():
    assert timm.__version__ == TIMM, "the sweep's table is for the pinned timm; update both together"


def test_every_timm_module_is_swept_or_left_out_with_a_reason():
    swept = [c.module for c in SWEEP]
    assert len(swept) == len(set(swept)), "one model per module"
    assert set(swept).isdisjoint(LEFT_OUT)
    assert set(swept) | set(LEFT_OUT) == set(timm.list_modules())
    for c in SWEEP:
        assert c.model in timm.list_models(module=c.module), c


def test_the_sweep_covers_forty_modules_nine_in_ten_with_a_result():
    """The issue's bar: at least 40 modules, at least 90% of them give a result that is not an
    error. The expected failures are strict and say how they fail (an rfprobe error, or a result
    whose routes disagree), so these counts are what the runs show. A result that verify finds
    wrong is not an error, but it is not counted as right either: the second count."""
    results = sum(c.error is None for c in SWEEP)
    right = sum(c.error is None and c.wrong is None for c in SWEEP)
    assert len(SWEEP) >= 40
    assert results >= 0.9 * len(SWEEP), (results, len(SWEEP))
    assert right >= 0.85 * len(SWEEP), (right, len(SWEEP))


@pytest.mark.parametrize("case", _params())
def test_timm_model(case: Case):
    model = _create(case)
    before = snapshot(model)
    shape = (3, case.side, case.side)
    reductions = model.feature_info.reduction()
    first_local = None
    for level, reduction in enumerate(reductions):
        r = rfprobe.verify(model, shape, output=level)
        a = r.analysis
        assert r.ok, f"level {level}:\n{r}"
        if a.status == "global":
            assert a.global_causes, f"level {level}: global without a cause"
        elif a.status == "ok":      # ("varies": the RF depends on the unit, each one checked by verify)
            assert a.stride == (reduction, reduction), (level, a.stride, reduction)
            if first_local is None:
                first_local = level
    assert_unchanged(model, before, "verify")

    # the oracle, on the first level with a local RF (else level 0), on a thinner input
    level = 0 if first_local is None else first_local
    oshape = (3, case.oracle_side, case.oracle_side)
    kwargs = dict(case.kwargs)
    if kwargs.get(IMG, case.oracle_side) != case.oracle_side:   # built for one size: the same architecture at the thin size
        kwargs[IMG] = case.oracle_side
        model = _create(case, **kwargs)
        before = snapshot(model)
    p = rfprobe.probe(model, oshape, output=level)
    assert_unchanged(model, before, "probe")
    try:        # the real (random) weights: a unit can be dead for the inputs drawn, and summed over
        # channels a LayerNorm's output (uniform weight at init) does not depend on its input at
        # all (pvt_v2, swinv2); erf says so, and even then must leave the model as it was
        rfprobe.erf(model, oshape, output=level, n=2, batch_size=2, progress=False)
    except rfprobe.RFProbeError as e:
        assert type(e) is rfprobe.RFProbeError and "gradient is zero" in str(e), e
    assert_unchanged(model, before, "erf")
    short = _create(case, **kwargs, out_indices=(model.feature_info.out_indices[level],))
    # where every level is global and the probe's set is the whole input, no position lies
    # outside it, so of the checks below only "the oracle saw something move" can fail: the
    # oracle stops at its first hit (a ViT's 1024 float64 forwards cost most of the sweep)
    whole = first_local is None and bool(p.mask.all())
    o = perturbation_rf(short, oshape, p.unit, pick=_nchw(model), seeds=(0,), hooks=True, first_hit=whole)
    assert o.mask.any() or case.oracle_misses, "the oracle saw nothing move"
    assert not (o.mask & ~p.mask).any(), f"level {level}: the oracle moved the unit from outside the probe's set"
    if first_local is not None and case.oracle_misses is None:
        assert (o.mask == p.mask).all(), (level, o.box, p.box)


def _nchw(model):
    """The oracle indexes (N, C, *spatial): timm says which levels are channels-last."""
    if "NHWC" in str(getattr(model, "output_fmt", "NCHW")):
        return lambda ys: ys[0].permute(0, 3, 1, 2)
    return lambda ys: ys[0]
