"""The op records (rfprobe.ops): one table, each name once, and the reductions that the old
tables listed without a rule (prod, nansum, nanmean, norm) checked against a perturbation."""
from __future__ import annotations

import pytest
import torch

import rfprobe
from rfprobe.ops import FAMILIES, OPS, QUERY, REDUCTION
from tests.models import ConvThen
from tests.oracle import perturbed


def test_every_record_has_one_home():
    """Each op name is recorded by exactly one family, and OPS is exactly their union."""
    names = [op.name for fam in FAMILIES for op in fam.RECORDS]
    assert len(names) == len(set(names))
    assert set(names) <= set(OPS)


def test_records_keep_the_roles_the_tracer_relies_on():
    assert OPS["conv2d"].fixed_layout and OPS["conv2d"].meta is not None
    assert OPS["max_pool2d"].surrogate is not None and OPS["avg_pool2d"].surrogate is None
    assert OPS["size"].kind == QUERY and OPS["size"].reads_size and not OPS["dim"].reads_size
    assert not OPS["detach"].gradient and not OPS["gt"].gradient and OPS["masked_fill"].gradient
    assert OPS["softmax"].mixer and OPS["log_softmax"].mixer is None


_REDUCE = {
    "prod": lambda y, dim, keep: torch.prod(y, dim, keepdim=keep),
    "nansum": lambda y, dim, keep: torch.nansum(y, dim, keepdim=keep),
    "nanmean": lambda y, dim, keep: torch.nanmean(y, dim, keepdim=keep),
    "norm": lambda y, dim, keep: y.norm(2, dim, keep),
}


@pytest.mark.parametrize("op", sorted(_REDUCE))
@pytest.mark.parametrize("over", ["channels", "one spatial axis", "space"])
def test_reductions_without_a_rule_before_match_a_perturbation(op, over):
    """prod, nansum, nanmean and norm (listed as reductions, with no rule: unknown before)
    read what their siblings sum and mean read: over channels each position its own 3x3,
    over one spatial axis with keepdim that whole axis (a strip), over space everything."""
    f = _REDUCE[op]
    if over == "channels":
        net = ConvThen(lambda y: f(y, 1, True), cout=3)
    elif over == "one spatial axis":
        net = ConvThen(lambda y: y + f(y, 2, True), cout=2)
    else:
        # torch.prod takes one dim: without one it reduces the whole tensor
        net = ConvThen(lambda y: y * (f(y, (2, 3), True) if op != "prod" else torch.prod(y)), cout=2)
    shape = (1, 8, 8)
    a = rfprobe.analyze(net, input_shape=shape)
    assert OPS[op].kind == REDUCTION and a.graph.nodes[2].op == op
    moved = perturbed(net, shape)
    if over == "space":
        assert a.status == "global" and op in a.global_causes[0], a.global_causes
        assert moved[(2, 3)].all()
        return
    assert a.status != "global"
    for unit in [(0, 0), (2, 3), (5, 5)]:
        assert (a.region(unit, bounded=True).input_mask() == moved[unit]).all(), unit


_EXTREMES = {
    "amax over a strip": lambda y: y + y.amax(2, keepdim=True),
    "amin over space": lambda y: y * y.amin((2, 3), keepdim=True),
    "max with indices": lambda y: y + y.max(3, keepdim=True).values,
    "min of everything": lambda y: y * y.min(),
    "max of two tensors": lambda y: torch.max(y, y.flip(3)),
    "min of two tensors": lambda y: y.min(other=y.flip(2)),
    "maximum": lambda y: torch.maximum(y, y.flip(3)),
    "minimum": lambda y: torch.minimum(y.flip(2), y),
}


@pytest.mark.parametrize("name", sorted(_EXTREMES))
def test_max_and_min_read_what_a_perturbation_moves_and_the_probe_sees_it(name):
    """A max over an axis reads the whole axis (any element can become the max), but its
    gradient reaches only the winner: the structural probe sums instead (the record's
    surrogate). max(x, y) of two tensors is elementwise (it was read as a reduction over a
    'dim' that was a tensor, and blamed on the model); its gradient, like maximum's, reaches
    only the larger of the two, so the probe adds them."""
    net = ConvThen(_EXTREMES[name], cout=2)
    shape = (1, 8, 8)
    a = rfprobe.analyze(net, input_shape=shape)
    moved = perturbed(net, shape)
    for unit in [(0, 0), (2, 5), (5, 5)]:
        assert (a.region(unit, bounded=True).input_mask() == moved[unit]).all(), unit
        r = rfprobe.verify(net, shape, unit=unit)
        assert r.ok, str(r)
