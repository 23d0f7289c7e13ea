"""Activation checkpointing (``torch.utils.checkpoint`` inside a forward, timm's
``set_grad_checkpointing()``) gives the answers of the same model without it.

Checkpointing recomputes a segment in the backward, outside the probe's tracing mode, where
its surrogates (a max pool's gradient to the whole window) and per-op rescaling would not run;
``use_reentrant=True`` also runs the segment under ``no_grad`` and refuses ``autograd.grad``.
Each answer here is checked against the same model (same weights) without checkpointing, the
perturbation oracle (``tests/oracle.py``) or, for the effective RF, a plain autograd gradient;
``verify`` agrees, and the user's model and torch's globals are as they were.
"""
from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.utils.checkpoint as ck

import rfprobe
from oracle import perturbation_rf
from snapshot import assert_settings_unchanged, assert_unchanged, global_settings, snapshot

SHAPE = (1, 32, 32)
UNIT = (5, 5)
# checkpoint(use_reentrant=True) under the oracle's no_grad warns that no input needs a gradient
pytestmark = pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad")


class Checkpointed(nn.Module):
    """conv3, then conv3, maxpool2, relu, conv3 under ``torch.utils.checkpoint`` (none when
    ``use_reentrant`` is None), then conv3. By hand: RF 3 -> 5 -> 6 (stride 2) -> 10 -> 14,
    so unit (5, 5) reads rows and columns 10..23."""

    def __init__(self, use_reentrant: bool | None):
        super().__init__()
        self.use_reentrant = use_reentrant
        self.stem = nn.Conv2d(1, 4, 3)
        self.seg = nn.Sequential(nn.Conv2d(4, 4, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(4, 4, 3))
        self.head = nn.Conv2d(4, 2, 3)

    def forward(self, x):
        x = self.stem(x)
        if self.use_reentrant is None:
            x = self.seg(x)
        else:
            x = ck.checkpoint(self.seg, x, use_reentrant=self.use_reentrant)
        return self.head(x)


def pair(use_reentrant: bool) -> tuple[nn.Module, nn.Module]:
    """The checkpointed model and the same model, same weights, without checkpointing."""
    torch.manual_seed(0)
    net = Checkpointed(use_reentrant)
    plain = copy.deepcopy(net)
    plain.use_reentrant = None
    return net, plain


def torch_names() -> tuple:
    return ck.CheckpointFunction, ck._checkpoint_hook


class _Reached(Exception):
    """Raised by a hook on the selected layer, carrying its output: the oracle's copy stops there."""

    def __init__(self, output):
        super().__init__()
        self.output = output


def _stop(module, inputs, output):
    raise _Reached(output)


class UpTo(nn.Module):
    """``model`` run up to ``layer``, whose output it returns (the rest of the model never runs)."""

    def __init__(self, model: nn.Module, layer: str):
        super().__init__()
        self.model = copy.deepcopy(model)
        self.model.get_submodule(layer).register_forward_hook(_stop)

    def forward(self, x):
        try:
            self.model(x)
        except _Reached as reached:
            return reached.output
        raise AssertionError("the layer did not run")


def oracle_at(model: nn.Module, shape, unit, layer: str | None = None, output=None, seeds=(0, 1)):
    """The perturbation oracle's mask of ``unit`` in ``layer``'s output or in the model's
    ``output``."""
    if layer is not None:
        return perturbation_rf(UpTo(model, layer), shape, unit, hooks=True, seeds=seeds)
    pick = None if output is None else (lambda y: y[output])
    return perturbation_rf(model, shape, unit, pick=pick, seeds=seeds)


def probe_mask(model, shape, unit, **kw) -> np.ndarray:
    return rfprobe.probe(model, shape, unit=unit, full=True, **kw).mask


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_analyze_probe_and_verify_are_those_without_checkpointing(use_reentrant):
    net, plain = pair(use_reentrant)
    before, settings, names = snapshot(net), global_settings(), torch_names()
    oracle = oracle_at(net, SHAPE, UNIT)
    assert oracle.box == ((10, 23), (10, 23))        # by hand (the class's docstring)
    assert rfprobe.analyze(net, SHAPE).box(UNIT) == rfprobe.analyze(plain, SHAPE).box(UNIT) == oracle.box
    mask = probe_mask(net, SHAPE, UNIT)
    assert np.array_equal(mask, probe_mask(plain, SHAPE, UNIT))
    assert np.array_equal(mask, oracle.mask)
    actual = probe_mask(net, SHAPE, UNIT, mode="actual")
    assert np.array_equal(actual, probe_mask(plain, SHAPE, UNIT, mode="actual"))
    assert not (actual & ~oracle.mask).any()
    report = rfprobe.verify(net, SHAPE, unit=UNIT)
    assert report.ok, str(report)
    assert rfprobe.verify(net).ok
    assert_unchanged(net, before)
    assert_settings_unchanged(settings)
    assert torch_names() == names


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_a_layer_inside_the_checkpointed_segment(use_reentrant):
    # seg.1 (the max pool) runs inside the segment: with use_reentrant=True under no_grad
    net, plain = pair(use_reentrant)
    before = snapshot(net)
    unit = (3, 4)
    oracle = oracle_at(net, SHAPE, unit, layer="seg.1")
    assert oracle.box == ((6, 11), (8, 13))          # 2u..2u+5: the pool's 2, then two 3x3 convs
    assert rfprobe.analyze(net, SHAPE, layer="seg.1").box(unit) == oracle.box
    mask = probe_mask(net, SHAPE, unit, layer="seg.1")
    assert np.array_equal(mask, probe_mask(plain, SHAPE, unit, layer="seg.1"))
    assert np.array_equal(mask, oracle.mask)
    assert rfprobe.verify(net, SHAPE, layer="seg.1", unit=unit).ok
    assert_unchanged(net, before)


def hand_erf(model: nn.Module, x: torch.Tensor, unit) -> np.ndarray:
    """Mean |d y[unit] / dx| (output channels summed, input channels summed), normalised to
    sum 1: the effective RF by plain autograd, on a model without checkpointing."""
    x = x.clone().requires_grad_(True)
    y = copy.deepcopy(model)(x)
    seed = torch.zeros_like(y)
    seed[(slice(None), slice(None)) + tuple(unit)] = 1.0
    (g,) = torch.autograd.grad(y, x, seed)
    m = g.abs().sum(1).sum(0).to(torch.float64).numpy()
    return m / m.sum()


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_erf_is_the_gradient_without_checkpointing(use_reentrant):
    net, plain = pair(use_reentrant)
    before = snapshot(net)
    x = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(1))
    f = rfprobe.erf(net, inputs=x, unit=UNIT)
    assert np.array_equal(f.map, rfprobe.erf(plain, inputs=x, unit=UNIT).map)
    assert np.allclose(f.map, hand_erf(plain, x, UNIT), rtol=1e-5, atol=1e-9)
    assert not ((f.map > 0) & ~oracle_at(plain, SHAPE, UNIT).mask).any()
    assert_unchanged(net, before)


def recomputes(use_reentrant: bool) -> int:
    """How often a checkpointed function runs in one forward and backward: twice when torch
    checkpoints (once more in the backward), once when it runs plainly."""
    calls = []

    def f(x):
        calls.append(1)
        return x.sin()

    x = torch.ones(3, requires_grad=True)
    ck.checkpoint(f, x, use_reentrant=use_reentrant).sum().backward()
    return len(calls)


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_checkpoint_off_is_for_this_thread_and_this_block(use_reentrant):
    from rfprobe.trace.model_copy import checkpoint_off
    names = torch_names()
    assert recomputes(use_reentrant) == 2
    elsewhere = []
    with checkpoint_off():
        assert recomputes(use_reentrant) == 1
        other = threading.Thread(target=lambda: elsewhere.append(recomputes(use_reentrant)))
        other.start()
        other.join()
        with checkpoint_off():          # nested, as verify runs the probe
            assert recomputes(use_reentrant) == 1
        assert recomputes(use_reentrant) == 1
    assert elsewhere == [2]
    assert recomputes(use_reentrant) == 2
    assert torch_names() == names
    with pytest.raises(ZeroDivisionError), checkpoint_off():
        1 / 0
    assert torch_names() == names


# --------------------------------------------------------------------------- timm
TIMM_CASES = [
    # features_only checkpoints each module alone but the first and last: the stem's max pool too
    pytest.param("resnet18", dict(features_only=True, out_indices=(1,)), None, 0, id="resnet18-features"),
    # checkpoint_seq over the blocks; the selected block runs inside a segment
    pytest.param("resnet18", dict(num_classes=0, global_pool=""), "layer1.0", None, id="resnet18-layer1.0"),
    pytest.param("convnext_atto", dict(num_classes=0, global_pool=""), "stages.0.blocks.0", None,
                 id="convnext_atto-stage0-block0"),
]


@pytest.fixture(params=[True, False], ids=["reentrant", "non-reentrant"])
def timm_reentrant(request):
    """timm's choice of use_reentrant for its checkpoints (a global of timm's), put back after."""
    import timm.layers
    before = timm.layers.use_reentrant_ckpt()
    timm.layers.set_reentrant_ckpt(request.param)
    yield request.param
    timm.layers.set_reentrant_ckpt(before)


@pytest.mark.slow
@pytest.mark.parametrize("name, kwargs, layer, output", TIMM_CASES)
def test_timm_set_grad_checkpointing(timm_reentrant, name, kwargs, layer, output):
    import timm
    torch.manual_seed(0)
    plain = timm.create_model(name, pretrained=False, **kwargs).eval()
    net = copy.deepcopy(plain)
    net.set_grad_checkpointing(True)
    before, settings = snapshot(net), global_settings()
    shape, unit, at = (3, 32, 32), (0, 0), dict(layer=layer, output=output)
    # one seed: the oracle can only miss positions, and its mask must equal the probe's
    oracle = oracle_at(net, shape, unit, layer=layer, output=output, seeds=(0,))
    assert rfprobe.analyze(net, shape, **at).box(unit) == rfprobe.analyze(plain, shape, **at).box(unit)
    mask = probe_mask(net, shape, unit, **at)
    assert np.array_equal(mask, probe_mask(plain, shape, unit, **at))
    assert np.array_equal(mask, oracle.mask)
    report = rfprobe.verify(net, **at)
    assert report.ok, str(report)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    assert np.array_equal(rfprobe.erf(net, inputs=x, unit=unit, **at).map,
                          rfprobe.erf(plain, inputs=x, unit=unit, **at).map)
    assert_unchanged(net, before)
    assert_settings_unchanged(settings)
