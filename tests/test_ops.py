"""The op records (rfprobe.ops): one table, each name once, and the reductions that the old
tables listed without a rule (prod, nansum, nanmean, norm) checked against a perturbation."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import rfprobe
from rfprobe.ops import FAMILIES, OPS, QUERY, REDUCTION
from tests.models import UNKNOWN_OP, ConvThen, rfprobe_test_op
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
    "min with indices": lambda y: y * torch.min(y, dim=2, keepdim=True).values,
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


def _uses_of_ops_with_a_surrogate() -> list:
    """Calls of every op whose record has a surrogate, in the forms models use (a tensor, or
    values and indices; methods and functions), as the tracer sees them: (name, func, args,
    kwargs), recorded by a TorchFunctionMode of the test's own."""
    from torch.overrides import TorchFunctionMode

    class Recorder(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.calls = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", None)
            if name in OPS and OPS[name].surrogate is not None:
                self.calls.append((name, func, args, kwargs or {}))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    x1, x2, x3 = torch.randn(1, 2, 8), torch.randn(1, 2, 8, 8), torch.randn(1, 2, 4, 4, 4)
    attention = nn.MultiheadAttention(4, 2, batch_first=True)
    recurrent = (nn.LSTM(2, 3, num_layers=2, bidirectional=True, proj_size=2), nn.GRU(2, 3, batch_first=True),
                 nn.RNN(2, 3, num_layers=2), nn.RNN(2, 3, nonlinearity="relu", bidirectional=True))
    q = torch.randn(1, 2, 5, 4)
    with Recorder() as rec:
        for d, x in ((1, x1), (2, x2), (3, x3)):
            pool, adaptive = getattr(F, f"max_pool{d}d"), getattr(F, f"adaptive_max_pool{d}d")
            pool(x, 2), adaptive(x, 2), adaptive(x, 2, return_indices=True)
            getattr(F, f"max_unpool{d}d")(*pool(x, 2, return_indices=True), 2)
            getattr(F, f"dropout{d}d")(x, 0.5)
        torch.maximum(x2, x2.flip(3)), torch.minimum(x2, x2.flip(2))
        F.dropout(x2, 0.5), F.alpha_dropout(x2, 0.5, True), F.feature_alpha_dropout(x2, 0.5, True)
        x2.amax((2, 3), keepdim=True), torch.amin(x2, 2), torch.amax(x2)
        torch.max(x2, 2), x2.max(), torch.max(x2, x2.flip(3)), x2.max(dim=3, keepdim=True)
        torch.min(x2, dim=3, keepdim=True), x2.min(2), torch.min(x2), x2.min(other=x2.flip(2))
        torch.linalg.vector_norm(x2, float("inf"), 1), F.scaled_dot_product_attention(q, q, q)
        attention(q[0], q[0], q[0])
        torch.cumprod(x2, 2), torch.cummax(x2, 3), x2.cummin(dim=2), torch.cummin(x2, 3), torch.diff(x2, n=2, dim=3)
        torch.angle(x2)
        for rnn in recurrent:
            rnn(x1.permute(0, 2, 1) if rnn.batch_first else x1.permute(2, 0, 1))
        for rank, s in ((1, {"n": 6}), (2, {"s": (6, 5)}), ("n", {"s": (6, 5)})):
            for base in "fft ifft rfft irfft hfft ihfft".split():
                f = getattr(torch.fft, base + ("" if rank == 1 else str(rank)))
                f(x2), f(x2, **s)
    return rec.calls


def _structure(out):
    """A result's form: a tensor's shape and dtype, or a tuple's (with the fields of torch's
    named results, ``values`` and ``indices``) of its parts' forms."""
    if isinstance(out, torch.Tensor):
        return tuple(out.shape), out.dtype
    fields = tuple(f for f in ("values", "indices") if hasattr(out, f))
    return fields, tuple(_structure(part) for part in out)


def test_each_surrogate_returns_what_its_op_returns():
    """The probe runs a surrogate in place of the op, on the model's own code: where the op
    returns values and indices (``max(x, dim)``, ``cummin``, a max pool with indices), the
    surrogate must too, or ``.values`` fails, or ``[0]`` picks a batch. What each record binds
    (``indices=True``, the transform's rank) decides it; the op itself, run by torch, is the
    reference. Every record with a surrogate is called here."""
    calls = _uses_of_ops_with_a_surrogate()
    assert {name for name, *_ in calls} == {name for name, op in OPS.items() if op.surrogate is not None}
    wrong = []
    for name, func, args, kwargs in calls:
        fn, a, k = OPS[name].surrogate(func, args, kwargs)
        with torch.no_grad():
            got, want = _structure(fn(*a, **k)), _structure(func(*args, **kwargs))
        if got != want:
            wrong.append(f"{name}{tuple(type(v).__name__ for v in args)} {kwargs}: {got} != {want}")
    assert wrong == [], "\n".join(wrong)


_RUNNING = {
    "cumsum along the width": (lambda y: torch.cumsum(y, 3), 1),
    "cumsum along the height, a method": (lambda y: y.cumsum(dim=-2), 1),
    "cumsum over channels": (lambda y: y.cumsum(1), 2),
    "cumprod along the height": (lambda y: torch.cumprod(y, dim=2), 1),
    "cummax along the width": (lambda y: torch.cummax(y, 3).values, 1),
    "cummin along the height": (lambda y: y.cummin(2)[0], 1),
    "cummax over channels": (lambda y: y.cummax(dim=1).values, 2),
    "diff along the width": (lambda y: torch.diff(y, dim=3), 1),
    "diff twice along the height": (lambda y: torch.diff(y, n=2, dim=2), 1),
    "diff over channels": (lambda y: y.diff(dim=1), 3),
    "diff with a constant prepend": (lambda y: torch.diff(y, dim=-1, prepend=torch.zeros(y.shape[:-1] + (2,), dtype=y.dtype)), 1),
    "diff with a prepend and append from the data":
        (lambda y: torch.diff(y, n=2, dim=3, prepend=y[..., 4:], append=y[..., :1]), 1),
    "vector_norm over channels": (lambda y: torch.linalg.vector_norm(y, 2, 1, True), 3),
    "vector_norm over a strip": (lambda y: y + torch.linalg.vector_norm(y, ord=2, dim=(2,), keepdim=True), 2),
    "vector_norm inf over a strip": (lambda y: y * torch.linalg.vector_norm(y, float("inf"), 3, True), 2),
    "vector_norm channels-last, over a strip":
        (lambda y: y + torch.linalg.vector_norm(y.permute(0, 2, 3, 1), dim=1, keepdim=True).permute(0, 3, 1, 2), 2),
    "normalize over channels": (lambda y: F.normalize(y, p=2, dim=1), 3),
    "normalize along the width": (lambda y: F.normalize(y, dim=3), 2),
    "normalize along the height, keyword p=1": (lambda y: F.normalize(y, p=1.0, dim=-2), 2),
}


@pytest.mark.parametrize("name", sorted(_RUNNING))
def test_running_ops_norms_and_diff_read_what_a_perturbation_moves_and_the_probe_sees_it(name):
    """cumsum/cumprod/cummax/cummin along a spatial axis: output j reads the prefix 0..j of
    that axis (every other axis its own index); diff(n) reads j..j+n (a prepend of length p
    shifts x by p; a prepend or append from the data is read where the window falls on it);
    vector_norm and F.normalize over channels are pointwise, over an axis they read the whole
    axis. Each is checked against a perturbation of the input (a route that shares no code with
    rfprobe), on several units, and by verify (the probe: cummax, cummin and the inf-norm pass
    gradient to one element only, so the structural probe runs a cumsum or a sum instead)."""
    f, cout = _RUNNING[name]
    net = ConvThen(f, cout=cout)
    shape = (1, 8, 8)
    a = rfprobe.analyze(net, input_shape=shape)
    assert a.status != "global", a.global_causes
    moved = perturbed(net, shape)
    out = moved.shape[:2]
    units = {(0, 0), (2, 3), (out[0] - 1, out[1] - 1), (out[0] // 2, 0)}
    for unit in sorted(units):
        assert (a.region(unit, bounded=True).input_mask() == moved[unit]).all(), unit
        r = rfprobe.verify(net, shape, unit=unit)
        assert r.ok, str(r)


@pytest.mark.parametrize("tail", [
    lambda y: y * torch.linalg.vector_norm(y, dim=(2, 3), keepdim=True),    # global response norm
    lambda y: y * torch.linalg.vector_norm(y),
    lambda y: F.normalize(y, dim=(2, 3)),
])
def test_norms_over_all_of_space_are_global_and_named(tail):
    net = ConvThen(tail, cout=2)
    a = rfprobe.analyze(net, input_shape=(1, 8, 8))
    moved = perturbed(net, (1, 8, 8))
    assert a.status == "global" and a.graph.nodes[2].op in a.global_causes[0], a.global_causes
    assert moved.all()


def test_a_prefix_is_closed_by_hand():
    """cumsum along the width after a 3x3 conv: unit (2, 3) reads conv outputs (2, 0..3),
    which read rows 2..4 and columns 0..5 (by hand)."""
    r = rfprobe.verify(ConvThen(lambda y: torch.cumsum(y, dim=3)), (1, 8, 8), unit=(2, 3))
    assert r.ok and r.exact_clipped_box == ((2, 4), (0, 5)) == r.probe_box, str(r)


def test_the_tests_own_op_has_no_record_and_reads_a_prefix():
    """The tests of unknown ops and of user rules (test_rules.py, test_custom_rules.py,
    test_bad_inputs.py, test_honest.py) and the worked example of docs/design.md call
    ``rfprobe_test_op`` (tests/models.py) as an op rfprobe does not know: a record for it would
    make them check nothing of the sort, so there is none. The rule they declare by hand
    (output j along the op's axis reads inputs 0..j, every other position its own) is what
    autograd says, a route that shares no code with rfprobe."""
    assert UNKNOWN_OP not in OPS and all(op.name != UNKNOWN_OP for family in FAMILIES for op in family.RECORDS)
    x = torch.randn(3, 5, requires_grad=True)
    y = rfprobe_test_op(x, 1)
    for j in range(5):
        (g,) = torch.autograd.grad(y[1, j], x, retain_graph=True)
        assert (g != 0).nonzero().tolist() == [[1, i] for i in range(j + 1)], j


class _LendsDtype(nn.Module):
    """A 3x3 branch scaled by ones that take a 7x7 branch's dtype and device (``.to(g)``,
    ``.type_as(g)``): only the 3x3 is read (a perturbation of the 7x7's extra positions moves
    nothing)."""

    def __init__(self):
        super().__init__()
        self.big, self.small = nn.Conv2d(1, 1, 7, padding=3), nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        g = self.big(x)
        return self.small(x) * torch.ones(1, 1, 12, 12).to(g) + self.small(x).type_as(g).cpu()


def test_to_and_type_as_read_the_values_not_the_tensor_that_lends_its_dtype():
    net = _LendsDtype()
    a = rfprobe.analyze(net, input_shape=(1, 12, 12))
    assert (a.size, a.stride, a.padding) == ((3, 3), (1, 1), (1, 1))     # the 3x3, padding 1, by hand
    moved = perturbed(net, (1, 12, 12))
    for unit in [(0, 0), (5, 6)]:
        assert (a.region(unit, bounded=True).input_mask() == moved[unit]).all(), unit
    assert rfprobe.verify(net, (1, 12, 12)).ok


def test_an_output_built_from_constants_is_refused_and_a_constant_term_adds_nothing():
    const = ConvThen(lambda y: y)
    const.forward = lambda x: const.c(torch.ones_like(x))      # the conv reads x's shape only
    with pytest.raises(rfprobe.ArgumentError, match="does not depend on the model input"):
        rfprobe.analyze(const, input_shape=(1, 10, 10))
    plus = ConvThen(lambda y: y + torch.zeros_like(y).exp())
    assert rfprobe.verify(plus, (1, 10, 10)).size == (3, 3)
