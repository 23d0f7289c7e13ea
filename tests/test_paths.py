"""No silent wrong answer: every path from the input to the selected output is followed or
refused, and the selection (``layer=`` with ``output=``) is the one the user asked for.

Each number here comes from a route that shares no code with rfprobe: a hand computation in
the docstring, plain autograd on the user's own model, or the perturbation oracle
(``tests/oracle.py``).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import rfprobe
from rfprobe.ops import removed_records

from oracle import perturbation_rf


class Spectral(nn.Module):
    """An FFC / GFNet-style low-pass through ``torch.fft`` beside a 3x3 conv: every output
    reads every input position through the spectral branch."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 1, 3, padding=1)
        self.s = nn.Conv2d(1, 1, 1)

    def forward(self, x):
        f = torch.fft.fft2(self.s(x))
        keep = torch.zeros(f.shape[-2:])
        keep[:3, :3] = 1
        return self.c(x) + torch.fft.ifft2(f * keep).real


def autograd_support(model: nn.Module, shape, unit) -> np.ndarray:
    """Where the gradient of output ``unit`` (summed over channels) with respect to the input is
    nonzero, with the model's own random float64 weights: plain autograd, no rfprobe."""
    torch.manual_seed(0)
    m = model.double()
    x = torch.rand((1, *shape), dtype=torch.float64, requires_grad=True)
    y = m(x)
    y[(0, slice(None), *unit)].sum().backward()
    return (x.grad[0] != 0).any(0).numpy()


def test_spectral_model_is_global_with_the_fft_named_and_verify_agrees():
    m = Spectral().eval()
    a = rfprobe.analyze(m, (1, 16, 16))
    assert a.status == "global"
    assert any("fft_fft2" in c for c in a.global_causes), a.global_causes
    # plain autograd: the spectral branch reaches all but a few positions of the 16x16 input
    assert autograd_support(Spectral().eval(), (1, 16, 16), (8, 8)).sum() > 200
    assert rfprobe.verify(m, (1, 16, 16)).ok


def test_without_the_fft_records_the_spectral_model_is_refused_naming_the_op():
    with removed_records("fft_fft2"):
        with pytest.raises(rfprobe.UnknownOpError, match="fft_fft2"):
            rfprobe.analyze(Spectral().eval(), (1, 16, 16))
    assert rfprobe.analyze(Spectral().eval(), (1, 16, 16)).status == "global"   # the record is back


class Part(nn.Module):
    """conv3 (padding 1), then a complex round trip ``how`` that keeps each position."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.c = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        y = self.c(x)
        if self.how == "real":
            return y.to(torch.complex64).real
        if self.how == "imag":
            return (y * 1j).imag
        if self.how == "torch.real":
            return torch.real(torch.complex(y, y))
        if self.how == "conj":
            return torch.view_as_real(y.to(torch.complex128).conj().resolve_conj())[..., 0]
        if self.how == "view_as_complex":
            z = torch.view_as_complex(torch.stack([y, y], -1))
            return torch.view_as_real(z).sum(-1)
        if self.how == "fft over channels":
            return torch.fft.fft(y, dim=1).abs()
        raise ValueError(self.how)


@pytest.mark.parametrize("how", ["real", "imag", "torch.real", "conj", "view_as_complex", "fft over channels"])
def test_complex_parts_and_views_keep_each_position(how):
    """Unit (4, 5) of a conv3 with padding 1 reads rows 3..5 and columns 4..6, by hand; the
    complex round trip reads each position alone. Plain autograd agrees."""
    a = rfprobe.analyze(Part(how), (1, 12, 12))
    assert a.status == "ok" and a.size == (3, 3)
    assert a.box((4, 5)) == ((3, 5), (4, 6))
    support = autograd_support(Part(how), (1, 12, 12), (4, 5))
    rows, cols = np.nonzero(support)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (3, 5, 4, 6)


class Strip(nn.Module):
    """conv3 (padding 1), a Fourier transform along the width only, and an fftshift of the
    height: unit (i, j) reads rows (i - 8) mod 16 - 1 .. + 1 and every column."""

    def __init__(self, transform):
        super().__init__()
        self.transform = transform
        self.c = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        y = self.transform(self.c(x))
        return torch.fft.fftshift(y.real if y.is_complex() else y, dim=-2)


@pytest.mark.parametrize("transform", [
    lambda y: torch.fft.ifft(torch.fft.fft(y, dim=-1), dim=-1),
    lambda y: torch.fft.irfft(torch.fft.rfft(y), n=y.shape[-1]),
    lambda y: torch.fft.fftn(y, dim=(3,)),
], ids=["fft", "rfft", "fftn"])
def test_a_fourier_transform_along_one_axis_reads_that_axis_whole(transform):
    r = rfprobe.verify(Strip(transform), (1, 16, 16), unit=(3, 5))
    assert r.ok, r
    # row 3 after the shift is row (3 - 8) mod 16 = 11 of the conv, which reads rows 10..12
    assert r.exact_clipped_box == ((10, 12), (0, 15)) == r.probe_box


def test_a_cut_path_through_python_values_is_refused_naming_both_ops():
    class Cut(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return torch.tensor(self.c(x).tolist())

    with pytest.raises(rfprobe.UnknownOpError, match=r"'tensor' .*tolist"):
        rfprobe.analyze(Cut(), (1, 8, 8))


def test_a_path_the_tracer_cannot_see_is_never_no_dependence():
    """``from_numpy`` is not a torch function a mode sees: the trace loses the path, and only
    a run with another input tells that the output depends on it."""
    class Lost(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return torch.from_numpy(self.c(x).detach().numpy().copy())

    with pytest.raises(rfprobe.UnknownOpError, match="lost the path"):
        rfprobe.analyze(Lost(), (1, 8, 8))


def test_a_model_that_really_ignores_its_input_is_still_told_so():
    class Ignores(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return self.c(torch.ones(1, 1, 8, 8))

    with pytest.raises(rfprobe.ArgumentError, match="does not depend on the model input"):
        rfprobe.analyze(Ignores(), (1, 8, 8))


class Swap(nn.Module):
    """A 3x3 conv (padding 1) whose two halves along the width are swapped: unit (i, j) reads
    rows i-1..i+1 and columns j+8-1..j+8+1 in the left half, j-8-1..j-8+1 in the right."""

    def __init__(self, order=-1):
        super().__init__()
        self.order = order
        self.c = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        return torch.cat(self.c(x).chunk(2, -1)[::self.order], -1)


def test_halves_swapped_by_a_cat_vary_with_the_unit():
    a = rfprobe.analyze(Swap(), (1, 16, 16))
    assert a.status == "varies" and a.stride is None
    assert a.box((3, 3)) == ((2, 4), (10, 12))
    assert a.box((3, 12)) == ((2, 4), (3, 5))
    for unit in ((3, 3), (3, 12), (5, 8)):
        o = perturbation_rf(Swap(), (1, 16, 16), unit, seeds=(0,))
        assert o.box == a.box(unit, bounded=True), unit
    assert rfprobe.verify(Swap(), (1, 16, 16), unit=(3, 3)).ok


def test_halves_joined_in_their_own_order_stay_one_conv():
    a = rfprobe.analyze(Swap(order=1), (1, 16, 16))
    assert (a.status, a.size, a.stride) == ("ok", (3, 3), (1, 1))
    assert not any("not aligned" in n for n in a.notes)


# ----------------------------------------------------------------------------- output= within layer=
@dataclasses.dataclass
class Pair:
    small: torch.Tensor
    big: torch.Tensor


class Heads(nn.Module):
    """Returns its conv3 and conv3+conv5 maps in the container ``kind``; by hand the keys hold
    RFs of 3 and 7."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.a = nn.Conv2d(1, 1, 3, padding=1)
        self.b = nn.Conv2d(1, 1, 5, padding=2)

    def forward(self, x):
        y = self.a(x)
        z = self.b(y)
        return {"tuple": lambda: (y, z), "list": lambda: [y, z], "dict": lambda: {"small": y, "big": z},
                "nested": lambda: {"small": y, "more": [z, (y, z)]},
                "dataclass": lambda: Pair(y, z)}[self.kind]()


class Model(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.heads = Heads(kind)
        self.out = nn.Conv2d(1, 1, 1)

    def forward(self, x):
        h = self.heads(x)
        first = h.small if isinstance(h, Pair) else h["small"] if isinstance(h, dict) else h[0]
        return self.out(first)


KEYS = {"tuple": [0, 1, -1], "list": [0, 1], "dict": ["small", "big"],
        "nested": ["small", ("more", 0), "more.1.0", "more.1.1", ("more", 1, 1)],
        "dataclass": ["small", "big"]}


def _value(out, key):
    """The tensor at ``key`` (a tuple or dotted key walks nested containers), read from the
    module's own output: the oracle's pick."""
    keys = key.split(".") if isinstance(key, str) and "." in key else key if isinstance(key, tuple) else [key]
    for k in keys:
        out = getattr(out, k) if isinstance(out, Pair) else out[int(k) if isinstance(out, (list, tuple)) else k]
    return out


@pytest.mark.parametrize("kind", list(KEYS))
def test_output_selects_within_what_layer_returns(kind):
    model = Model(kind)
    for key in KEYS[kind]:
        a = rfprobe.analyze(model, (1, 16, 16), layer="heads", output=key)
        o = perturbation_rf(model.heads, (1, 16, 16), (8, 8), seeds=(0,), pick=lambda out, key=key: _value(out, key))
        assert a.box((8, 8)) == o.box, (kind, key)
        assert repr(key) in str(a).splitlines()[-1 - len(a.notes)], str(a)   # the key shows in its name


def test_an_output_not_in_the_layers_container_lists_the_keys():
    with pytest.raises(rfprobe.ArgumentError, match=r"output='smal' is not in module 'heads'; choose one of "
                                                    r"\['small', 'big'\]\. Did you mean 'small'"):
        rfprobe.analyze(Model("dict"), (1, 16, 16), layer="heads", output="smal")
    with pytest.raises(rfprobe.ArgumentError, match="returns a single tensor"):
        rfprobe.analyze(Model("dict"), (1, 16, 16), layer="heads.a", output=0)


def _last_row_read(module, key, shape, unit) -> int:
    """The last input row that moves ``module(x)[key]``'s unit, by bisection on perturbing
    every row from ``t`` on (the oracle's private copy: float64, positive weights, neutral
    BatchNorm statistics, so a huge value there always moves a unit that reads it)."""
    from oracle import HUGE, _moved, _private
    twin = _private(module, 0)
    g = torch.Generator().manual_seed(0)
    base = torch.rand((1, *shape), generator=g, dtype=torch.float64) + 1.0

    def moved(t: int) -> bool:
        x = base.clone()
        x[..., t:, :] = HUGE
        with torch.no_grad():
            return bool(_moved(twin(x)[key][:, :, unit[0], unit[1]], twin(base)[key][:, :, unit[0], unit[1]])[0])
    lo, hi = 0, shape[1] - 1            # moved(lo) holds; find the largest t with moved(t)
    if moved(hi):
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if moved(mid) else (lo, mid)
    return lo


@pytest.mark.slow
def test_fcn_backbone_outputs_are_selected_by_key():
    """torchvision's FCN backbone returns {'out': layer4, 'aux': layer3} (dilated, stride 8):
    each key against the backbone analysed on its own and against the closed form by hand
    (layer3 of a ResNet-50 is 267 at stride 16 undilated; FCN dilates layer4 instead of
    striding, so layer4 adds 2 * (3 - 1) * 8 * (1 + 2 + 2) ... = 427 at stride 8)."""
    tv = pytest.importorskip("torchvision")
    m = tv.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None, aux_loss=True).eval()
    for key, size in (("out", 427), ("aux", 267)):
        a = rfprobe.analyze(m, (3, 224, 224), layer="backbone", output=key)
        alone = rfprobe.analyze(m.backbone, (3, 224, 224), output=key)
        assert (a.size, a.stride) == ((size, size), (8, 8)) == (alone.size, alone.stride)
        assert a.box((10, 10)) == alone.box((10, 10))
        # the perturbation oracle, on a 160-pixel input: unit (0, 0)'s last row, where the two
        # keys' RFs (427 and 267, padding 213 and 133) still differ inside the input
        b = rfprobe.analyze(m, (3, 160, 160), layer="backbone", output=key)
        assert b.box((0, 0), bounded=True)[0][1] == _last_row_read(m.backbone, key, (3, 160, 160), (0, 0))


def test_verify_reports_a_closed_form_that_under_states_the_exact_box(monkeypatch):
    """A closed form that is too small for a unit is a mismatch, not a note: a hand-broken
    formula (every conv's kernel read as 1 wide) under a 3x3 conv."""
    import rfprobe.routes.closed as closed
    monkeypatch.setattr(closed, "compose_size", lambda r, S, k: r)
    r = rfprobe.verify(nn.Conv2d(1, 1, 3), (1, 8, 8), unit=(2, 2))
    assert not r.ok and any("does not hold the exact box" in m for m in r.mismatches), r


def test_a_module_that_never_runs_is_named_as_such():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 1, 3)
            self.spare = nn.Conv2d(1, 1, 5)

        def forward(self, x):
            return self.c(x)

    with pytest.raises(rfprobe.ArgumentError, match="'spare' is a module of this model, but its forward did not run"):
        rfprobe.analyze(Unused(), (1, 8, 8), layer="spare")


class Trimmed(nn.Module):
    """conv3 (padding 1), then a Fourier transform whose ``n``/``s`` keeps the leading part of
    the width (``transform``)."""

    def __init__(self, transform):
        super().__init__()
        self.transform = transform
        self.c = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        return self.transform(self.c(x))


@pytest.mark.parametrize("transform, columns", [
    # rfft(n=6) reads columns 0..5 of the conv, which read input columns 0..6
    (lambda y: torch.fft.irfft(torch.fft.rfft(y, n=6, dim=-1), n=12, dim=-1), (0, 6)),
    # hfft(n=12) reads 12 // 2 + 1 = 7 columns of its input: conv columns 0..6, input 0..7
    (lambda y: torch.fft.hfft(y, n=12), (0, 7)),
    # irfft(n=8) reads 8 // 2 + 1 = 5: conv columns 0..4, input 0..5
    (lambda y: torch.fft.irfft(y, n=8).repeat(1, 1, 1, 2)[..., :12], (0, 5)),
], ids=["rfft-n", "hfft-n", "irfft-n"])
def test_a_fourier_transform_trimmed_by_n_reads_only_what_it_keeps(transform, columns):
    a = rfprobe.analyze(Trimmed(transform), (1, 12, 12))
    assert a.box((3, 3), bounded=True) == ((2, 4), columns)
    support = autograd_support(Trimmed(transform), (1, 12, 12), (3, 3))
    rows, cols = np.nonzero(support)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (2, 4, *columns)
    assert rfprobe.verify(Trimmed(transform), (1, 12, 12), unit=(3, 3)).ok


def test_a_2d_transform_trimmed_by_s_is_not_global():
    """fft2(s=(6, 6)) reads conv rows and columns 0..5 (input 0..6) for every output."""
    m = Trimmed(lambda y: torch.fft.fft2(y, s=(6, 6)).abs().repeat(1, 1, 2, 2))
    a = rfprobe.analyze(m, (1, 12, 12))
    assert a.status != "global" and a.box((3, 3), bounded=True) == ((0, 6), (0, 6))
    assert rfprobe.verify(m, (1, 12, 12), unit=(3, 3)).ok


# ----------------------------------------------------------------------------- parameters from the input
class DynamicFilter(nn.Module):
    """CondConv-style: the second conv's kernel is computed from the global mean of the first
    conv's map, so every output reads every input position."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.k = nn.Linear(4, 144)

    def forward(self, x):
        y = self.a(x)
        return F.conv2d(y, self.k(y.mean((2, 3))).view(4, 4, 3, 3), padding=1)


class CrossCorrelation(nn.Module):
    """SiamFC-style: a 5x5 template cut from the input at rows and columns 4..8 is the kernel
    run over the whole map, so unit (i, j) reads i..i+4 x j..j+4 and the template's 4..8."""

    def __init__(self):
        super().__init__()
        self.f = nn.Conv2d(1, 2, 1)

    def forward(self, x):
        return F.conv2d(self.f(x), self.f(x[:, :, 4:9, 4:9]))


class AdaLN(nn.Module):
    """A channels-last LayerNorm whose scale and shift are computed from a pooled vector."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3, padding=1)
        self.g = nn.Linear(4, 4)

    def forward(self, x):
        y = self.c(x)
        cond = self.g(y.mean((2, 3)))[0]
        return F.layer_norm(y.permute(0, 2, 3, 1), (4,), weight=cond, bias=cond).permute(0, 3, 1, 2)


@pytest.mark.parametrize("model", [DynamicFilter, AdaLN], ids=["dynamic-filter", "adaln"])
def test_a_parameter_computed_from_a_global_mean_makes_the_rf_global(model):
    a = rfprobe.analyze(model(), (1, 12, 12))
    assert a.status == "global"
    assert autograd_support(model(), (1, 12, 12), (3, 3)).all()     # every position, by autograd
    assert rfprobe.verify(model(), (1, 12, 12), unit=(3, 3)).ok


def test_a_template_cut_from_the_input_adds_its_positions_to_every_unit():
    a = rfprobe.analyze(CrossCorrelation(), (1, 12, 12))
    assert a.box((0, 0), bounded=True) == ((0, 8), (0, 8))     # 0..4 and the template's 4..8
    assert a.box((3, 1), bounded=True) == ((3, 8), (1, 8))
    for unit in ((0, 0), (6, 7), (3, 1)):
        assert a.box(unit, bounded=True) == perturbation_rf(CrossCorrelation(), (1, 12, 12), unit, seeds=(0,)).box
    assert rfprobe.verify(CrossCorrelation(), (1, 12, 12), unit=(6, 7)).ok


class Mix(nn.Module):
    """conv3 (padding 1), then a fixed 12x12 matrix on the left (mixes rows) or on the right
    (mixes columns)."""

    def __init__(self, side):
        super().__init__()
        self.side = side
        self.c = nn.Conv2d(1, 2, 3, padding=1)
        self.P = nn.Parameter(torch.rand(12, 12))

    def forward(self, x):
        y = self.c(x)
        if self.side == "vector":
            return (self.P[0] @ y)[:, :, None, :].expand(-1, -1, 12, -1)
        return self.P @ y if self.side == "left" else y @ self.P


@pytest.mark.parametrize("side, box", [("left", ((0, 11), (4, 6))), ("right", ((2, 4), (0, 11)))])
def test_a_matrix_product_mixes_the_axis_its_operand_loses(side, box):
    """Unit (3, 5): ``P @ y`` reads every row of y and columns 4..6; ``y @ P`` rows 2..4 and
    every column."""
    a = rfprobe.analyze(Mix(side), (1, 12, 12))
    assert a.box((3, 5), bounded=True) == box == perturbation_rf(Mix(side), (1, 12, 12), (3, 5), seeds=(0,)).box
    assert rfprobe.verify(Mix(side), (1, 12, 12), unit=(3, 5)).ok


def test_a_vector_product_that_drops_a_spatial_axis_is_refused():
    with pytest.raises(rfprobe.UnknownOpError, match="matmul with a 1-D operand"):
        rfprobe.analyze(Mix("vector"), (1, 12, 12))


def test_a_roll_that_names_a_dim_twice_adds_the_shifts():
    """roll(y, (1, 2), (3, 3)) rolls the width by 3: unit (1, 1) reads conv column 10, which
    reads input columns 9..11; rows 0..2."""
    class Rolled(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return torch.roll(self.c(x), (1, 2), (3, 3))

    a = rfprobe.analyze(Rolled(), (1, 12, 12))
    assert a.box((1, 1), bounded=True) == ((0, 2), (9, 11)) == perturbation_rf(Rolled(), (1, 12, 12), (1, 1), seeds=(0,)).box


def test_a_rule_that_forgets_a_data_input_is_refused_not_followed_in_part():
    """A rule (here a user's, for add) that gives deps for the first of two data inputs only
    would drop the second branch's positions: the node is unknown and the path refused."""
    from rfprobe.ops import InputDep, identity, registered_rule

    def first_only(call):
        k = call.data[0]
        return [InputDep(k, tuple(identity(n) for n in call.spatial_in(k)))]

    class TwoBranches(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 1, 3, padding=1)
            self.b = nn.Conv2d(1, 1, 5, padding=2)

        def forward(self, x):
            return torch.add(self.a(x), self.b(x))

    with registered_rule("add", first_only, override=True):
        with pytest.raises(rfprobe.UnknownOpError, match=r"'add' .*says nothing of argument\(s\) \[1\]"):
            rfprobe.analyze(TwoBranches(), (1, 12, 12))
    assert rfprobe.analyze(TwoBranches(), (1, 12, 12)).size == (5, 5)     # the built-in rule: the union


def test_an_output_traced_as_constant_that_moves_with_the_input_is_refused():
    """``z.set_(y)`` gives a constant the traced map's storage without a torch function the
    tracer sees: the trace says 'built from constants', a run with another input says it moves."""
    class SetStorage(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            y = self.c(x)
            z = torch.zeros_like(y)
            z.set_(y.flip(3))
            return z + 0

    with pytest.raises(rfprobe.UnknownOpError, match="traced it as built from constants only"):
        rfprobe.analyze(SetStorage(), (1, 8, 8))
