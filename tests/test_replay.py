"""``graph.replay``: the graph at another input size, from one trace's recorded ops, must be
exactly what tracing the model at that size gives (the independent route: the model's own code
run again), or None. Node by node: name, op, shape, layout, inputs, and the rule's maps, read
out on every output index (maps of position-dependent ops are functions)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rfprobe
from rfprobe.errors import RFProbeError
from rfprobe.trace import RECORDINGS, one_meta_copy, replay, trace
from rfprobe.ops import Affine, Broadcast, Global


def _axis(m, n_out: int):
    if isinstance(m, Affine):
        return ("affine", m.taps, m.stride, m.padding, m.n_in)
    if isinstance(m, Broadcast):
        return ("broadcast", m.n_in)
    idx = np.arange(n_out)
    return ("mapped", m.n_in, tuple(tuple(m.deps(idx[j:j + 1], b).tolist()) for j in range(n_out) for b in (0, 1)))


def signature(graph) -> list:
    rows = []
    for n in graph.nodes:
        if isinstance(n.deps, Global) or n.deps is None:
            deps = repr(n.deps)
        else:
            spatial = n.spatial or ()
            deps = [(d.tensor, d.axes.why if isinstance(d.axes, Global)
                     else tuple(_axis(m, k) for m, k in zip(d.axes, spatial))) for d in n.deps]
        rows.append((n.name, n.op, n.shape, n.layout, n.inputs, deps, n.site))
    return [rows, graph.module_outputs, graph.outputs, graph.notes]


def check(model: nn.Module, first, second) -> bool:
    """Replay from a trace at ``first`` to ``second``: equal to the trace at ``second``, or None
    where that trace fails. Returns whether a replay was given."""
    with one_meta_copy(model):
        g = trace(model, first, record=True)
        r = replay(g, second)
        try:
            t = trace(model, second)
        except RFProbeError:
            assert r is None
            return False
    if r is not None:
        assert signature(r) == signature(t)
    return r is not None


@st.composite
def stacks(draw):
    layers = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["conv", "conv", "maxpool", "avgpool", "up", "convT", "pointwise"]))
        if kind == "pointwise":
            layers.append(draw(st.sampled_from(["relu", "bn", "gelu", "id"])))
            continue
        k, s = draw(st.integers(1, 5)), draw(st.integers(1, 3))
        if kind == "up":
            layers.append(f"up{s}/{draw(st.sampled_from(['nearest', 'bilinear', 'bicubic']))}")
        elif kind == "convT":
            layers.append(f"convT{k}/s{s}/p{draw(st.integers(0, k - 1))}")
        elif kind == "conv":
            layers.append(f"conv{k}/s{s}/p{draw(st.integers(0, k))}/d{draw(st.integers(1, 2))}")
        else:
            layers.append(f"{kind}{k}/s{s}/p{draw(st.integers(0, k // 2))}" + ("/ceil" if draw(st.booleans()) else ""))
    return " ".join(layers), draw(st.integers(4, 40)), draw(st.integers(4, 40))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=stacks())
def test_replay_of_random_stacks_is_the_trace(case):
    spec, a, b = case
    model = rfprobe.build(spec, in_channels=2).eval()
    try:
        check(model, (2, a, a + 3), (2, b, b + 1))
    except RFProbeError:     # the first size is too small for this stack: nothing to replay
        pass


class _Dense(nn.Module):
    """Appends to the list it passed to ``cat`` (as densenet does): the recorded arguments must
    be the list as it was."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(2 * (i + 1), 2, 3, padding=1) for i in range(3))

    def forward(self, x):
        features = [x]
        for conv in self.convs:
            features.append(F.relu(conv(torch.cat(features, 1))))
        return torch.cat(features, 1)


class _Head(nn.Module):
    """A padded 3x3 conv and a head that each subclass writes (``tail``)."""

    channels = 1

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, self.channels, 3, padding=1)

    def forward(self, x):
        return self.tail(self.conv(x))


class _Split(_Head):
    """The number of pieces depends on the width, without reading it: the replay must notice."""

    def tail(self, y):
        return torch.cat([p * 2 for p in torch.split(y, 4, dim=-1)], -1)


class _ReadsShape(_Head):
    def tail(self, y):
        return y[..., : y.shape[-1] // 2]   # the crop depends on the size it read


class _CountsElements(_Head):
    """Reads a size through something that is not a shape query (its storage's size)."""

    def tail(self, y):
        return y[..., : int((y.untyped_storage().nbytes() // 4) ** 0.5) // 2]


class _ReadsChannels(_Head):
    channels = 4

    def tail(self, y):
        return y[:, : y.size(1) // 2]       # a channel count: not a spatial size


def test_a_list_the_model_appends_to_after_passing_it():
    assert check(_Dense(), (2, 9, 9), (2, 20, 13))


def test_a_size_dependent_number_of_outputs_is_not_replayed():
    with one_meta_copy(m := _Split()):
        g = trace(m, (1, 8, 8), record=True)
        assert replay(g, (1, 8, 12)) is None        # 2 pieces, then 3
        assert check(m, (1, 8, 8), (1, 16, 8))       # the same 2 pieces: replayed, and equal


def test_a_model_that_reads_a_spatial_size_is_traced_again():
    for model in (_ReadsShape(), _CountsElements()):
        g = trace(model, (1, 8, 8), record=True)
        assert RECORDINGS.get(g) is None and replay(g, (1, 8, 12)) is None
    assert RECORDINGS.get(trace(_ReadsChannels(), (1, 8, 8), record=True)) is not None
    assert check(_ReadsChannels(), (1, 8, 8), (1, 11, 5))


def test_analyze_gives_the_same_analysis_with_and_without_replay(monkeypatch):
    net = rfprobe.build("conv3/c4 relu maxpool2 conv3/d2 relu conv5/s2 up2/bilinear conv3", in_channels=1)
    with_replay = rfprobe.analyze(net)
    monkeypatch.setattr(rfprobe.routes.fit, "replay", lambda g, shape: None)
    without = rfprobe.analyze(net)
    assert signature(with_replay.graph) == signature(without.graph)
    assert (with_replay.size, with_replay.stride, with_replay.padding, with_replay.input_shape) == \
        (without.size, without.stride, without.padding, without.input_shape)
    assert RECORDINGS.get(with_replay.graph) is None      # not kept past the call


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "densenet121", "mobilenet_v2", "googlenet", "convnext_tiny"])
def test_torchvision_replays_are_the_traces(name):
    tv = pytest.importorskip("torchvision.models")
    kw = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    model = getattr(tv, name)(weights=None, **kw).eval()
    assert check(model, (3, 64, 64), (3, 203, 171))
