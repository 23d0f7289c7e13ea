"""The exact route walks the graph once per (output, unit, bounded) of a trace: one ``verify``
asks for its unit bounded and unbounded, the probe asks again, and a position-dependent RF's
sizes walk the centre unit once per axis. Each test counts the real walks
(``routes.exact._walk``) with a counting wrapper; a broken cache walks again and fails the
count, whatever the timing."""
from __future__ import annotations

import collections
import importlib
import pickle

import numpy as np
import pytest

import rfprobe
from rfprobe.routes import exact
from rfprobe.trace import select

verify_module = importlib.import_module("rfprobe.verify")


@pytest.fixture
def walks(monkeypatch):
    """Counter of (graph id, output node id, unit, bounded) -> walks, filled while the test runs."""
    seen: collections.Counter = collections.Counter()
    walk = exact._walk

    def counting(graph, target, unit, bounded):
        seen[(id(graph), target.id, tuple(unit), bounded)] += 1
        return walk(graph, target, unit, bounded)

    monkeypatch.setattr(exact, "_walk", counting)
    return seen


@pytest.mark.parametrize("model, kw, status, slab", [
    ("conv3/s2 conv3 conv3/s2 conv3", {}, "ok", False),
    ("conv3 up2 conv3", {}, "varies", False),        # position-dependent: the sizes walk too
    ("conv3/p1 " * 4 + "conv3/s2/p1 conv3/d2/p2", {"input_shape": (1, 600, 600)}, "ok", True),
])
def test_one_verify_walks_each_unit_once(walks, model, kw, status, slab):
    r = verify_module.verify(model, **kw)
    assert r.ok and r.analysis.status == status and (r.probe.slab is not None) == slab
    graph = r.analysis.graph
    target = graph.node(r.analysis.target).id
    unit = tuple(r.probe.unit)
    # the verified unit, bounded (the probe's border, verify's mask) and unbounded (verify's box,
    # the probe's truncation check, the varying sizes' centre), is walked once each
    assert walks[(id(graph), target, unit, True)] == 1
    assert walks[(id(graph), target, unit, False)] == 1
    assert max(walks.values()) == 1, [k[1:] for k, n in walks.items() if n > 1]


def test_an_analysis_walks_a_unit_once_however_often_asked(walks):
    a = rfprobe.analyze("conv3/p1 conv3/s2/p1 conv3", input_shape=(1, 12, 12))
    assert not walks                     # a closed form 'ok' analysis walks nothing up front
    for _ in range(3):
        a.region((1, 2)), a.box((1, 2)), a.region((1, -2), bounded=True), a.box((1, 2), bounded=True)
        a.region(), a.box()              # the centre unit: (2, 2) of a 4x4 output
    graph, target = id(a.graph), a.graph.node(a.target).id
    assert dict(walks) == {(graph, target, (1, 2), False): 1, (graph, target, (1, 2), True): 1,
                           (graph, target, (2, 2), False): 1}


def test_the_cache_answers_what_a_fresh_walk_answers():
    # the unit and bounded count (and two traces are two caches); asked in a mixed order, each
    # answer equals an uncached walk of the same question (zero padding: bounded and unbounded differ)
    a = rfprobe.analyze("conv3/p1 conv3/s2/p1 conv3/d2/p2", input_shape=(1, 11, 11), layer="1")
    b = rfprobe.analyze("conv3/p1 conv3/s2/p1 conv3/d2/p2", input_shape=(1, 11, 11))
    assert a.graph is not b.graph
    questions = [(x, u, bounded) for x in (a, b) for u in [(0, 0), (5, 1), (2, 4), (0, 0)]
                 for bounded in (False, True) if all(i < n for i, n in zip(u, x.output_spatial))]
    rng = np.random.default_rng(0)
    answers = [(x, u, bounded, x.region(u, bounded)) for x, u, bounded in
               (questions[i] for i in rng.permutation(len(questions)))]
    differ = 0
    for x, u, bounded, reg in answers:
        fresh = exact._walk(x.graph, x.graph.node(x.target), u, bounded)
        assert reg.box == fresh.box and np.array_equal(reg.input_mask(), fresh.input_mask())
        assert reg.global_cause == fresh.global_cause
        differ += x.region(u, not bounded).box != reg.box
    assert differ    # the questions include units whose bounded and unbounded answers differ


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_two_outputs_of_one_trace_are_kept_apart(order):
    # the output counts too: one graph, one unit, a layer's output and the model's
    g = rfprobe.analyze("conv3/p1 conv3/s2/p1 conv3/d2/p2", input_shape=(1, 11, 11)).graph
    outputs = [select(g, layer="1"), select(g)]
    answers = {i: exact.propagate(g, outputs[i], (0, 0), False) for i in order}
    # by hand: unit 0 of layer 1 reads inputs -2..2, of the model -6..6 (dilation 2 on top)
    assert [answers[i].box for i in (0, 1)] == [((-2, 2), (-2, 2)), ((-6, 6), (-6, 6))]


def test_the_cache_is_plain_data():
    # ints and tuples to frozen Regions: it pickles, closures and tracers would not
    a = rfprobe.analyze("conv3 up2 conv3")
    a.region(bounded=True)
    regions = exact.REGIONS.get(a.graph)
    assert regions and all(type(t) is int and type(b) is bool and all(type(i) is int for i in u)
                           for t, u, b in regions)
    back = pickle.loads(pickle.dumps(regions))
    assert back.keys() == regions.keys()
    assert all(back[k].box == regions[k].box for k in regions)
