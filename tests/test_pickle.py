"""Results pickle: ``pickle.loads(pickle.dumps(r))`` gives a result with equal fields, which
answers what it answers lazily (``region``, ``box``, the closed forms rebuilt from its graph)
as the original does, and a result holds data only: no model, tracer or tensor is reachable
from it.

Equal fields are checked field by field, recursively, against the original (an independent
route: the original's own values). Maps of position-dependent ops are functions, so they are
read out on every index of their axis, bounded and not, rather than compared as objects.

The fast part runs small models that build every kind of position-dependent map rfprobe has
(resampling, padding, transposed windows, moves, writes, frames); the slow part runs every
real model of the suite's zoo tests (torchvision in ``tests/test_zoo.py``, timm in
``tests/test_timm_sweep.py``) and its hand-written functional models.
"""
from __future__ import annotations

import dataclasses
import functools
import gc
import json
import math
import pickle
import types
import weakref

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import rfprobe
from rfprobe.measure import RFTuple
from rfprobe.ops import Global, Mapped
from rfprobe.routes.closed import closed_forms
from rfprobe.trace import Node, Tracer, replay, trace
from tests.models import ConvThen, SpaceToDepthStem


def roundtrip(x):
    return pickle.loads(pickle.dumps(x))


# ----------------------------------------------------------------------------- equal fields
def readout(node: Node):
    """A node's maps as what they answer: per data input, per output axis, the indices each
    output index reads, bounded and not (``Affine`` and ``Broadcast`` maps are plain data)."""
    if node.deps is None or isinstance(node.deps, Global):
        return node.deps
    rows = []
    for dep in node.deps:
        if isinstance(dep.axes, Global):
            rows.append((dep.tensor, dep.axes, dep.perm))
            continue
        axes = [m if not isinstance(m, Mapped) else
                (m.n_in, [m.deps(np.array([j]), b).tolist() for j in range(n) for b in (False, True)])
                for m, n in zip(dep.axes, node.spatial or node.pieces.extents())]
        rows.append((dep.tensor, axes, dep.perm))
    return rows


def kind(x) -> type:
    """A per-axis tuple that points back at its result (see ``assert_remembered``) is a tuple."""
    return tuple if isinstance(x, RFTuple) else type(x)


def assert_same(a, b, where: str = "result") -> None:
    """``b`` (unpickled) has the type and the values of ``a``, at every depth."""
    assert kind(a) is kind(b), f"{where}: {type(a).__name__} became {type(b).__name__}"
    if isinstance(a, Node):
        for name in Node.__slots__:
            assert_same(getattr(a, name) if name != "deps" else readout(a),
                        getattr(b, name) if name != "deps" else readout(b), f"{where}.{name}")
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, functools.partial):
        assert a.func is b.func, where
        assert_same((a.args, a.keywords), (b.args, b.keywords), f"{where}.args")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), where
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    else:
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), f"{where}: {a!r} != {b!r}"


def assert_remembered(a, b) -> None:
    """Where ``a``'s per-axis tuples point back at ``a`` (so a failed assert shows its table),
    ``b``'s point at ``b``."""
    for name in ("size", "stride", "padding"):
        value = getattr(a, name, None)
        if isinstance(value, RFTuple) and value.rfprobe_result is a:
            assert getattr(getattr(b, name), "rfprobe_result", None) is b, f"{name} no longer points at its result"


def units_of(analysis) -> list[tuple[int, ...]]:
    """The corners and the centre of the selected output."""
    spatial = analysis.output_spatial
    return sorted({tuple(n - 1 if c else 0 for n, c in zip(spatial, corner)) for corner in
                   np.ndindex(*(2,) * len(spatial))} | {analysis.centre_unit})


def assert_analysis_roundtrips(a) -> None:
    """Equal fields, the same lazy answers (exact regions, boxes, the closed forms rebuilt from
    the unpickled graph) and the same views."""
    b = roundtrip(a)
    assert_same(a, b)
    assert_remembered(a, b)
    for unit in units_of(a):
        for bounded in (False, True):
            assert_same(a.region(unit, bounded), b.region(unit, bounded), f"region{unit}")
    if a.status == "ok":
        assert b.box() == a.box()
    assert closed_forms(b.graph) == closed_forms(a.graph)
    assert str(b) == str(a) and json.dumps(b.to_dict()) == json.dumps(a.to_dict())


# ----------------------------------------------------------------------------- data only
def reachable(root):
    """Every object reachable from ``root`` through references, except code (modules, classes,
    functions, which pickle by name)."""
    seen, todo = set(), [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, (types.ModuleType, type, types.FunctionType,
                                               types.BuiltinFunctionType)):
            continue
        seen.add(id(obj))
        yield obj
        todo.extend(gc.get_referents(obj))


def assert_data_only(result) -> None:
    live = [type(o).__name__ for o in reachable(result) if isinstance(o, (nn.Module, Tracer, torch.Tensor))]
    assert not live, f"a result reaches {sorted(set(live))}"


# ----------------------------------------------------------------------------- small models
class Resampled(nn.Module):
    """Every resampling map: reflect padding, a transposed conv, interpolation in each mode
    (antialiased too), adaptive pooling that does not divide, pixel shuffle."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3, padding=1)
        self.t = nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1)

    def forward(self, x):
        y = self.t(F.pad(self.c(x), (2, 1, 1, 2), mode="reflect"))
        y = F.interpolate(y, scale_factor=1.5, mode="nearest")
        y = F.interpolate(y, size=(17, 15), mode="bilinear", align_corners=False)
        y = F.interpolate(y, size=(19, 16), mode="bicubic", align_corners=True)
        y = F.interpolate(y, size=(13, 11), mode="area")
        y = F.interpolate(y, size=(9, 8), mode="bilinear", antialias=True)
        return F.pixel_shuffle(F.adaptive_avg_pool2d(y, (7, 6)), 2)


class Moved(nn.Module):
    """Every map that moves positions: flip, roll, fftshift, a write into a channel slice, a cat
    of pieces, a spatial axis where a channel dim is (channel shuffle, group norm, a grouped
    conv), repeat, index_select by a constant index."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3, padding=1)
        self.d = nn.Conv2d(4, 2, 5, padding=2)
        self.rows = nn.Conv1d(12, 12, 3, padding=1, groups=2)

    def forward(self, x):
        y = torch.fft.fftshift(torch.roll(torch.flip(self.c(x), dims=[3]), 2, dims=2), dim=-1)
        z = y.clone()
        z[:, :2] = self.d(y)
        z = torch.cat([z[..., :3], z[..., 3:] * 2], dim=-1)
        h = z[:, 0]                     # (N, H, W): H sits where a channel dim is
        z = (F.channel_shuffle(h, 3) + F.group_norm(h, 2) + self.rows(h))[:, None] + z
        return torch.index_select(z.repeat(1, 1, 1, 2), 3, torch.tensor([0, 3, 5, 6, 9, 11, 13, 17]))


class Signal(nn.Module):
    """1-D maps: stft frames, istft's overlap-add, diff with a prepend from the input, running
    maxima."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv1d(1, 1, 3, padding=1)

    def forward(self, x):
        y = self.c(x)[:, 0]
        window = torch.hann_window(8).to(y)
        z = torch.stft(y, 8, hop_length=2, window=window, return_complex=True)
        w = torch.istft(z, 8, hop_length=2, window=window, length=y.shape[-1])
        return (torch.diff(w, prepend=y[:, :1]) + torch.cummax(w, -1).values)[:, None]


SMALL = [(Resampled, (1, 12, 12)), (Moved, (1, 12, 12)), (Signal, (1, 40))]


@pytest.mark.parametrize("make,shape", SMALL, ids=[m.__name__ for m, _ in SMALL])
def test_analysis_of_position_dependent_maps_roundtrips(make, shape):
    a = rfprobe.analyze(make(), shape)
    assert any(isinstance(m, Mapped) for n in a.graph.nodes if isinstance(n.deps, tuple)
               for d in n.deps if isinstance(d.axes, tuple) for m in d.axes)     # the case this test is for
    assert_analysis_roundtrips(a)
    assert_data_only(a)


def test_report_probe_and_erf_roundtrip():
    """verify's Report (with its Analysis and ProbeResult), probe's result and an ERF."""
    model, shape = Moved(), (1, 12, 12)
    r = rfprobe.verify(model, shape)
    for result in (r, rfprobe.probe(model, shape),
                   rfprobe.erf(model, shape, n=2, batch_size=2, progress=False)):
        back = roundtrip(result)
        assert_same(result, back)
        assert_remembered(result, back)
        assert str(back) == str(result) and json.dumps(back.to_dict()) == json.dumps(result.to_dict())
        assert_data_only(result)
    assert_analysis_roundtrips(r.analysis)


def test_a_result_keeps_no_model_alive():
    model = Moved()
    gone = weakref.ref(model)
    results = [rfprobe.analyze(model, (1, 12, 12)), rfprobe.verify(model, (1, 12, 12))]
    del model
    gc.collect()
    assert gone() is None and all(r is not None for r in results)


def test_a_graph_holds_data_only():
    """Even a trace that records what a replay needs: the tracer (and the model's meta copy it
    keeps alive) sits beside the graph, not in it."""
    g = trace(rfprobe.build("conv3 up2/bilinear conv3"), (1, 12, 12), record=True)
    assert replay(g, (1, 13, 12)) is not None        # it recorded what a replay needs: the case this test is for
    assert_data_only(g)
    closed_forms(g)                                           # computed and kept beside it
    assert_data_only(g)
    assert_same(g, roundtrip(g), "graph")


# ----------------------------------------------------------------------------- the suite's models
def _functional_models():
    from tests.test_functional import FPN, UNet, Padded, ScaleUp, Shuffler, _SegNetish, _Windows
    from tests.test_paths import Part, Spectral
    return [(UNet(), (1, 16, 16)), (FPN("bilinear", False, (13, 11)), (1, 16, 16)), (Padded("reflect"), (1, 12, 12)),
            (ScaleUp(1.7, "bicubic", True), (1, 9, 9)), (Shuffler(), (1, 6, 6)), (_SegNetish(2, 2, 0), (1, 12, 12)),
            (_Windows(3, 2), (1, 12, 12)), (Spectral(), (1, 16, 16)), (Part("view_as_complex"), (1, 12, 12)),
            (ConvThen(lambda y: F.interpolate(y, scale_factor=2.5)), (1, 8, 8)), (SpaceToDepthStem(), (3, 16, 16))]


def test_the_suites_functional_models_roundtrip():
    for model, shape in _functional_models():
        a = rfprobe.analyze(model.eval(), shape)
        assert_analysis_roundtrips(a)
        assert_data_only(a)


def _torchvision_cases():
    """Every (model, layer) of tests/test_zoo.py, built as it builds them."""
    from tests import test_zoo as zoo
    cases = [(n, layer, {}) for n, layer, *_ in zoo.PUBLIC + zoo.HAND] + [(n, l, kw) for n, l, kw in zoo.ZOO]
    cases += [("efficientnet_b0", "features", {}), ("mobilenet_v3_small", "features", {}), ("resnet18", "avgpool", {})]
    cases += [(f"video.{n}", layer, {}) for n, layer, *_ in zoo.VIDEO]
    cases += [("segmentation.fcn_resnet50", "backbone.layer4", {"weights_backbone": None}), ("swin_t", "features", {})]
    return list({(n, l): (n, l, kw) for n, l, kw in cases}.values())


def _torchvision(name: str, kw: dict):
    tv = pytest.importorskip("torchvision.models")
    space, _, name = name.rpartition(".")
    torch.manual_seed(0)
    return getattr(getattr(tv, space) if space else tv, name)(weights=None, **kw).eval()


@pytest.mark.slow
@pytest.mark.parametrize("name,layer,kw", _torchvision_cases(), ids=[f"{n}-{l}" for n, l, _ in _torchvision_cases()])
def test_torchvision_zoo_analyses_roundtrip(name, layer, kw):
    model = _torchvision(name, kw)
    a = rfprobe.analyze(model, layer=layer)
    assert_analysis_roundtrips(a)
    assert_data_only(a)


def _timm_cases():
    from tests.test_timm_sweep import SWEEP
    return [pytest.param(c, id=c.model) for c in SWEEP if c.error is None]


@pytest.mark.slow
@pytest.mark.parametrize("case", _timm_cases())
def test_timm_sweep_analyses_roundtrip(case):
    """Every model of the timm sweep that gives a result (those it expects wrong too: the
    result still pickles), at the sweep's input, its first feature level."""
    from tests.test_timm_sweep import _create
    a = rfprobe.analyze(_create(case), (3, case.side, case.side), output=0)
    assert_analysis_roundtrips(a)
    assert_data_only(a)
