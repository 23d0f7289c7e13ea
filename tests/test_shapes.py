"""rfprobe.ops.meta_result against torch's own meta kernels (the independent route).

Each family draws configurations, valid and invalid (too small inputs, wrong channels, bad
groups, mismatched broadcasts and cat dims, ceil_mode edges, 'same' with stride > 1, bad pads,
non-contiguous inputs, mixed dtypes, requires_grad and grad mode on and off), runs torch's call
on meta with no mode and asserts:
- torch raises -> meta_result is None;
- torch succeeds -> meta_result is None or equal in type, shape, dtype, device, strides,
  contiguity, requires_grad and leafness (the same object for in-place ops);
- and, so that a stub answering None always would fail: an ordinary valid call (every tensor
  contiguous, one float dtype, no exotic argument) is answered.
"""
from __future__ import annotations

import collections
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.overrides import TorchFunctionMode

from rfprobe.ops import OPS, meta_result

SETTINGS = settings(max_examples=250, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RAISED = object()


def props(t):
    """Everything rule 2 compares, taken at one moment (an in-place op run by torch later
    may change its input's autograd state: the answer is judged as it was given)."""
    if isinstance(t, tuple):
        return tuple(props(x) for x in t)
    return {"type": type(t), "shape": tuple(t.shape), "dtype": t.dtype, "device": t.device,
            "stride": t.stride(), "contiguous": t.is_contiguous(),
            "requires_grad": t.requires_grad, "is_leaf": t.is_leaf, "inference": t.is_inference()}


def same(a, b) -> None:
    """Rule 2: the answer (or its props taken before torch ran) looks exactly like torch's."""
    a = a if isinstance(a, dict) or isinstance(a, tuple) and a and isinstance(a[0], dict) else props(a)
    b = props(b)
    assert a == b, (a, b)


def check(name: str, fn, args: tuple, kwargs: dict, grad: bool, ordinary: bool) -> str:
    """Answer first (meta_result must not change anything), then let torch run the same call
    on meta without any mode; compare. Returns 'raised', 'answered' or 'none'."""
    mode = torch.inference_mode() if grad == "inference" else torch.set_grad_enabled(grad)
    with mode, warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torch's deprecation notes for odd ranks
        got = meta_result(name, args, kwargs)
        before = None if got is None else props(got)
        try:
            ref = fn(*args, **kwargs)
        except Exception:
            ref = RAISED
    if ref is RAISED:
        assert got is None, f"{name}: torch raised but meta_result answered {got!r}"
        return "raised"
    if got is None:
        assert not ordinary, f"{name}{args, kwargs} is ordinary and valid but was not answered"
        return "none"
    same(before, ref)
    if ref is args[0] or got is args[0]:
        assert got is ref, f"{name}: in place/identity differs"
    return "answered"


# ---------------------------------------------------------------- inputs
KINDS = ["plain"] * 6 + ["leaf_grad", "nonleaf_grad", "noncontig", "view", "view_of_leaf_grad"]


def tensor(shape, dtype=torch.float32, kind="plain"):
    """A meta tensor of one of the kinds the rules distinguish."""
    shape = tuple(shape)
    if kind == "noncontig" and len(shape) >= 2 and shape[-1] > 1 and shape[-2] > 1:
        return torch.empty(shape[:-2] + (shape[-1], shape[-2]), device="meta", dtype=dtype).transpose(-1, -2)
    if kind == "noncontig" and shape and shape[-1] > 1:
        return torch.empty(shape + (2,), device="meta", dtype=dtype)[..., 0]
    if kind == "view":
        return torch.empty((2,) + shape, device="meta", dtype=dtype)[1]
    if kind == "view_of_leaf_grad" and dtype.is_floating_point:
        with torch.enable_grad():   # in place on it raises under grad mode
            return torch.empty((2,) + shape, device="meta", dtype=dtype, requires_grad=True)[1]
    if kind in ("leaf_grad", "nonleaf_grad") and dtype.is_floating_point:
        t = torch.empty(shape, device="meta", dtype=dtype, requires_grad=True)
        return t.clone() if kind == "nonleaf_grad" else t
    return torch.empty(shape, device="meta", dtype=dtype)


kinds = st.sampled_from(KINDS)
sizes = st.sampled_from([3, 4, 5, 6, 7, 8, 9] * 2 + [1, 2])   # mostly large enough, some tiny
dtypes = st.sampled_from([torch.float32] * 6 + [torch.float64, torch.float16, torch.int64])


class Draw:
    """Wraps hypothesis' data.draw, remembering whether anything exotic was drawn."""

    def __init__(self, data):
        self.data, self.ordinary = data, True

    def __call__(self, strategy, normal=None):
        v = self.data.draw(strategy)
        if normal is not None and not normal(v):
            self.ordinary = False
        return v

    def t(self, shape, dtype=torch.float32):
        """A tensor; anything but a plain float32 one makes the call exotic."""
        kind = self(kinds)
        if kind != "plain" or dtype != torch.float32:
            if kind in ("noncontig", "view", "view_of_leaf_grad"):
                self.ordinary = False
            if dtype != torch.float32:
                self.ordinary = False
        return tensor(shape, dtype, kind)

    def dtype(self):
        return self(dtypes, lambda d: d == torch.float32)

    def grad(self):
        """Grad mode on or off, or inference mode."""
        return self(st.sampled_from([False, True, True, False, "inference"]))


# ---------------------------------------------------------------- families
@SETTINGS
@given(st.data())
def test_conv(data):
    d = Draw(data)
    n = d(st.integers(1, 3))
    groups = d(st.sampled_from([1, 1, 1, 2, 3, 1, 2, 0]), lambda g: g > 0)
    cin = groups * d(st.integers(1, 3)) if groups else 2
    cin_x = d(st.sampled_from([cin] * 8 + [cin + 1]), lambda c: c == cin)
    cout = max(groups, 1) * d(st.integers(1, 3)) + d(st.sampled_from([0] * 8 + [1]), lambda e: e == 0)
    k = [d(st.integers(1, 4)) for _ in range(n)]
    size = [d(sizes) for _ in range(n)]
    dt = d.dtype()
    x = d.t((d(st.integers(1, 2)), cin_x, *size), dt)
    w = d.t((cout, max(cin // max(groups, 1), 1), *k), d(st.sampled_from([dt] * 8 + [torch.float64]), lambda v: v == dt))
    bias = d(st.sampled_from(["none", "ok", "ok", "bad"]), lambda b: b != "bad")
    b = None if bias == "none" else d.t((cout if bias == "ok" else cout + 1,), dt)
    stride = d(st.sampled_from([1, 1, 2, 3, (1,) * n, (2,) * n, 0, (1,) * (n + 1)]), lambda s: s != 0 and s != (1,) * (n + 1))
    padding = d(st.sampled_from([0, 1, 2, "same", "valid", (1,) * n, 0, 1, -1, "full"]), lambda p: p not in (-1, "full"))
    dilation = d(st.sampled_from([1, 1, 2, (2,) * n, 0]), lambda v: v != 0)
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    if d(st.booleans()):
        args, kwargs = (x, w, b, stride, padding, dilation, groups), {}
    else:
        args, kwargs = (x, w), {"bias": b, "stride": stride, "padding": padding,
                                "dilation": dilation, "groups": groups}
    check(f"conv{n}d", fn, args, kwargs, d.grad(), d.ordinary)


@SETTINGS
@given(st.data())
def test_batch_norm(data):
    d = Draw(data)
    c = d(st.integers(1, 4))
    rank = d(st.sampled_from([2, 3, 4, 4, 5, 1]), lambda r: r >= 2)
    shape = [d(st.integers(1, 3)) for _ in range(rank)]
    if rank >= 2:
        shape[1] = c
    dt = d.dtype()
    x = d.t(shape, dt)

    def vec():
        v = d(st.sampled_from(["ok"] * 8 + ["none", "bad"]), lambda v: v != "bad")
        return None if v == "none" else d.t((c if v == "ok" else c + 1,), dt)
    w, b = vec(), vec()
    stats = d(st.sampled_from(["both"] * 4 + ["none", "mean", "var"]))
    rm = tensor((c,), dt) if stats in ("both", "mean") else None
    rv = tensor((c,), dt) if stats in ("both", "var") else None
    training = d(st.booleans())
    if d(st.booleans()):
        name, fn = "batch_norm", F.batch_norm
        args, kwargs = (x, rm, rv), {"weight": w, "bias": b, "training": training, "momentum": 0.1, "eps": 1e-5}
    else:
        name, fn = "batch_norm", torch.batch_norm
        args, kwargs = (x, w, b, rm, rv, training, 0.1, 1e-5, False), {}
    # one value per channel in training is left to torch (F raises, torch.batch_norm divides
    # by n - 1 when it updates running stats)
    ordinary = (d.ordinary and (rm is not None) == (rv is not None) and (training or rm is not None)
                and not (training and x.numel() == c))
    check(name, fn, args, kwargs, d.grad(), ordinary)


@SETTINGS
@given(st.data())
def test_layer_group_instance_norm(data):
    d = Draw(data)
    rank = d(st.integers(1, 4), lambda r: r >= 3)
    shape = [d(st.integers(1, 4)) for _ in range(rank)]
    dt = d.dtype()
    x = d.t(shape, dt)
    which = d(st.sampled_from(["layer", "group", "instance"]))
    if which == "layer":
        m = d(st.integers(1, rank))
        ns = tuple(shape[rank - m:])
        ns = d(st.sampled_from([ns] * 6 + [ns[:-1] + (ns[-1] + 1,), list(ns)]), lambda v: v == ns or v == list(ns))
        w = d.t(tuple(ns), dt) if d(st.booleans()) else None
        b = d.t(tuple(ns) if d(st.booleans(), bool) else (sum(ns) + 1,), dt) if d(st.booleans()) else None
        check("layer_norm", F.layer_norm, (x, ns), {"weight": w, "bias": b, "eps": 1e-5}, d.grad(), d.ordinary)
    elif which == "group":
        c = shape[1] if rank >= 2 else 1
        g = d(st.sampled_from([1, c, 2, 3]), lambda g: c % g == 0)
        w = d.t((c,), dt) if d(st.booleans()) else None
        b = d.t((c if d(st.booleans(), bool) else c + 1,), dt) if d(st.booleans()) else None
        ordinary = d.ordinary and rank >= 2 and x.numel() // g > 1
        check("group_norm", F.group_norm, (x, g, w, b), {}, d.grad(), ordinary)
    else:
        c = shape[1] if rank >= 2 else 1
        w = d.t((c,), dt) if d(st.booleans()) else None
        ordinary = d.ordinary and rank >= 3 and x.numel() // (shape[0] * c) > 1
        check("instance_norm", F.instance_norm, (x,), {"weight": w, "bias": w}, d.grad(), ordinary)


@SETTINGS
@given(st.data())
def test_linear(data):
    d = Draw(data)
    rank = d(st.integers(1, 4))
    shape = [d(st.integers(1, 4)) for _ in range(rank)]
    dt = d.dtype()
    x = d.t(shape, dt)
    out = d(st.integers(1, 4))
    inn = d(st.sampled_from([shape[-1]] * 6 + [shape[-1] + 1]), lambda v: v == shape[-1])
    w = d.t((out, inn), d(st.sampled_from([dt] * 6 + [torch.float64]), lambda v: v == dt))
    b = d.t((d(st.sampled_from([out] * 4 + [out + 1])),), dt) if d(st.booleans()) else None
    ordinary = d.ordinary and (b is None or b.shape[0] == out)
    check("linear", F.linear, (x, w, b), {}, d.grad(), ordinary)


BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
    "__add__": torch.Tensor.__add__, "__radd__": torch.Tensor.__radd__,
    "__mul__": torch.Tensor.__mul__, "__rmul__": torch.Tensor.__rmul__,
    "__sub__": torch.Tensor.__sub__, "__truediv__": torch.Tensor.__truediv__,
    "add_": torch.Tensor.add_, "sub_": torch.Tensor.sub_, "mul_": torch.Tensor.mul_,
    "div_": torch.Tensor.div_, "__iadd__": torch.Tensor.__iadd__, "__isub__": torch.Tensor.__isub__,
    "__imul__": torch.Tensor.__imul__, "__itruediv__": torch.Tensor.__itruediv__,
}


@settings(SETTINGS, max_examples=400)
@given(st.data())
def test_binary(data):
    d = Draw(data)
    name = d(st.sampled_from(sorted(BINARY)))
    rank = d(st.integers(0, 4))
    a_shape = [d(st.integers(1, 3)) for _ in range(rank)]
    # the other operand: a broadcastable (sometimes not) shape, or a Python number
    kind = d(st.sampled_from(["tensor"] * 4 + ["int", "float", "bool"]), lambda k: k != "bool")
    if kind == "tensor":
        b_rank = d(st.integers(0, rank + 1))
        b_shape = [d(st.sampled_from([s, s, 1, 2])) if i < rank else 1 for i, s in enumerate(reversed(a_shape))][:b_rank]
        b_shape += [1] * (b_rank - len(b_shape))
        b_shape = list(reversed(b_shape))
        other = d.t(b_shape, d.dtype())
    else:
        other = {"int": 2, "float": 0.5, "bool": True}[kind]
    a = d.t(a_shape, d.dtype())
    kwargs = {}
    if name.startswith(("add", "sub")) and d(st.booleans()):
        kwargs["alpha"] = d(st.sampled_from([2, 0.5, True]), lambda v: v is not True)
    grad = d.grad()
    ordinary = d.ordinary
    if _is_inplace(name):
        # rule 4: an in-place op that would make `a` require grad is left to torch
        other_grad = isinstance(other, torch.Tensor) and other.requires_grad
        ordinary = ordinary and not a.requires_grad and not (grad is True and other_grad)
    check(name, BINARY[name], (a, other), kwargs, grad, ordinary)


def _is_inplace(name: str) -> bool:
    return name.endswith("_") and not name.startswith("__") or name.startswith("__i")


@pytest.mark.parametrize("name", [n for n in BINARY if _is_inplace(n)]
                         + ["relu", "relu_", "hardswish", "sigmoid_", "dropout"])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("self_kind,other_kind", [
    ("plain", "plain"), ("plain", "leaf_grad"), ("plain", "nonleaf_grad"), ("leaf_grad", "plain"),
    ("nonleaf_grad", "plain"), ("nonleaf_grad", "leaf_grad"), ("view_of_leaf_grad", "plain"),
    ("view", "plain")])
def test_inplace_autograd_rules(name, grad, self_kind, other_kind):
    """Rule 4 on every combination: same object back when torch succeeds without changing
    self's requires_grad; None when torch raises (a leaf or a view of one requiring grad,
    under grad mode) or when self would start requiring grad."""
    a = tensor((2, 3), kind=self_kind)
    if name in BINARY:
        args, kwargs, fn = (a, tensor((2, 3), kind=other_kind)), {}, BINARY[name]
    else:
        fn = {"relu": F.relu, "hardswish": F.hardswish, "dropout": F.dropout}.get(name) or UNARY[name]
        args, kwargs = (a,), ({} if name.endswith("_") else {"inplace": True})
    changes_grad = grad and not a.requires_grad and any(t.requires_grad for t in args[1:])
    outcome = check(name, fn, args, kwargs, grad, ordinary=False)
    if self_kind in ("plain", "nonleaf_grad") and not (other_kind != "plain" and grad and self_kind == "plain"):
        assert outcome == "answered", (outcome, name)
    if changes_grad:
        assert outcome != "answered"


UNARY = {
    "relu": F.relu, "relu6": F.relu6, "hardtanh": F.hardtanh, "silu": F.silu, "gelu": F.gelu,
    "sigmoid": torch.sigmoid, "tanh": torch.tanh, "hardswish": F.hardswish,
    "hardsigmoid": F.hardsigmoid, "leaky_relu": F.leaky_relu, "elu": F.elu, "mish": F.mish,
    "softplus": F.softplus, "relu_": torch.relu_, "sigmoid_": torch.sigmoid_,
    "tanh_": torch.tanh_, "elu_": F.elu_, "leaky_relu_": F.leaky_relu_, "hardtanh_": F.hardtanh_,
}
HAS_INPLACE = {"relu", "relu6", "hardtanh", "silu", "hardswish", "hardsigmoid", "leaky_relu", "elu", "mish"}


@settings(SETTINGS, max_examples=400)
@given(st.data())
def test_unary(data):
    d = Draw(data)
    name = d(st.sampled_from(sorted(UNARY)))
    shape = [d(st.integers(1, 3)) for _ in range(d(st.integers(0, 4)))]
    x = d.t(shape, d.dtype())
    kwargs = {}
    if name in HAS_INPLACE and d(st.booleans()):
        kwargs["inplace"] = d(st.booleans())
    if name == "gelu":
        kwargs["approximate"] = d(st.sampled_from(["none", "tanh", "bogus"]), lambda v: v != "bogus")
    if name.startswith("hardtanh"):
        kwargs["min_val"], kwargs["max_val"] = d(st.sampled_from([(-1.0, 1.0), (0.0, 6.0), (2.0, 1.0)]),
                                                 lambda v: v[0] <= v[1])
    ordinary = d.ordinary and not ((kwargs.get("inplace") or name.endswith("_")) and x.requires_grad)
    check(name, UNARY[name], (x,), kwargs, d.grad(), ordinary)


@SETTINGS
@given(st.data())
def test_dropout_softmax(data):
    d = Draw(data)
    name = d(st.sampled_from(["dropout", "dropout1d", "dropout2d", "dropout3d", "softmax", "log_softmax"]))
    want = {"dropout1d": 3, "dropout2d": 4, "dropout3d": 5}.get(name)
    rank = d(st.sampled_from([want] * 4 + [0, 1, 2, 3, 4, 5])) if want else d(st.integers(0, 5))
    x = d.t([d(st.integers(1, 3)) for _ in range(rank)], d.dtype())
    if name.startswith("dropout"):
        want = want or rank
        p = d(st.sampled_from([0.5, 0.0, 1.0, 1.5]), lambda p: p == 0.5)
        training = d(st.booleans(), lambda t: t or name == "dropout")
        inplace = d(st.booleans(), lambda v: not v or not x.requires_grad)
        ordinary = d.ordinary and rank == want
        check(name, getattr(F, name), (x,), {"p": p, "training": training, "inplace": inplace}, d.grad(), ordinary)
    else:
        dim = d(st.integers(-rank - 1, rank), lambda v: -max(rank, 1) <= v < max(rank, 1))
        kwargs = {"dtype": torch.float64} if d(st.integers(0, 9)) == 0 else {}
        ordinary = d.ordinary and not kwargs
        check(name, getattr(F, name), (x, dim), kwargs, d.grad(), ordinary)


@SETTINGS
@given(st.data())
def test_cat(data):
    d = Draw(data)
    rank = d(st.integers(1, 4))
    dim = d(st.integers(-rank - 1, rank), lambda v: -rank <= v < rank)
    base = [d(st.integers(1, 3)) for _ in range(rank)]
    ts = []
    for _ in range(d(st.integers(1, 3))):
        s = list(base)
        s[dim % rank if -rank <= dim < rank else 0] = d(st.integers(1, 3))
        j = d(st.integers(0, rank - 1))
        s[j] += d(st.sampled_from([0] * 8 + [1]), lambda e: e == 0)   # mismatch off dim sometimes
        ts.append(d.t(s, d.dtype()))
    if d(st.integers(0, 9)) == 0:
        ts.append(tensor((0,)))
        d.ordinary = False
    name = d(st.sampled_from(["cat", "concat"]))
    check(name, getattr(torch, name), (ts,), {"dim": dim}, d.grad(), d.ordinary)


@SETTINGS
@given(st.data())
def test_mean(data):
    d = Draw(data)
    rank = d(st.integers(0, 4), lambda r: r > 0)
    x = d.t([d(st.integers(1, 3)) for _ in range(rank)], d.dtype())
    form = d(st.sampled_from(["list", "int", "none", "tuple", "empty", "dup"]),
             lambda f: f not in ("empty", "dup"))
    n = max(rank, 1)
    some = [d(st.integers(-n - 1, n), lambda v: -rank <= v < rank) for _ in range(d(st.integers(1, 3)))]
    if form in ("list", "tuple") and len({v % n for v in some}) != len(some):
        d.ordinary = False    # a repeated dim: torch raises
    dim = {"list": some, "tuple": tuple(some), "int": some[0], "none": None, "empty": [],
           "dup": [some[0], some[0]]}[form]
    args = (x,) if form == "none" and d(st.booleans()) else (x, dim)
    kwargs = {}
    if d(st.booleans()):
        kwargs["keepdim"] = d(st.sampled_from([True, False, 1]), lambda v: type(v) is bool)
    if d(st.integers(0, 9)) == 0:
        kwargs["dtype"] = torch.float64
        d.ordinary = False
    check("mean", torch.mean, args, kwargs, d.grad(), d.ordinary)


@settings(SETTINGS, max_examples=400)
@given(st.data())
def test_pools(data):
    d = Draw(data)
    n = d(st.integers(1, 3))
    kind = d(st.sampled_from(["max", "avg", "adaptive"]))
    batched = d(st.booleans())
    shape = ([d(st.integers(1, 2))] if batched else []) + [d(st.integers(1, 3))] + [d(sizes) for _ in range(n)]
    x = d.t(shape, d.dtype())
    if kind == "adaptive":
        out = d(st.sampled_from([1, 2, 3, (2,) * n, (None,) * n, 0]), lambda v: v != 0 and (n > 1 or v != (None,)))
        fn = getattr(F, f"adaptive_avg_pool{n}d")
        check(fn.__name__, fn, (x, out), {}, d.grad(), d.ordinary)
        return
    k = d(st.sampled_from([1, 2, 3, 4, (3,) * n, 0]), lambda v: v != 0)
    kwargs = {"stride": d(st.sampled_from([None, 1, 2, 3, None, 2, 0]), lambda v: v != 0),
              "padding": d(st.sampled_from([0, 1, 0, 1, 2, -1]), lambda v: v >= 0),
              "ceil_mode": d(st.booleans())}
    kk = k if isinstance(k, int) else k[0]
    if kwargs["padding"] * 2 > kk:
        d.ordinary = False
    if kind == "max":
        kwargs["dilation"] = d(st.sampled_from([1, 1, 2]))
        kwargs["return_indices"] = d(st.sampled_from([False] * 6 + [True]), lambda v: not v)
        fn = getattr(F, f"max_pool{n}d")
    else:
        kwargs["count_include_pad"] = d(st.booleans())
        if n > 1 and d(st.booleans()):
            kwargs["divisor_override"] = d(st.sampled_from([2, 0]), lambda v: v != 0)
        fn = getattr(F, f"avg_pool{n}d")
    check(f"{kind}_pool{n}d", fn, (x, k), kwargs, d.grad(), d.ordinary)


@SETTINGS
@given(st.data())
def test_pad(data):
    d = Draw(data)
    rank = d(st.integers(1, 5))
    shape = [d(st.integers(1, 4)) for _ in range(rank)]
    x = d.t(shape, d.dtype())
    mode = d(st.sampled_from(["constant", "constant", "reflect", "replicate", "circular", "wrap"]), lambda m: m != "wrap")
    m = d(st.integers(1, 3))
    pad = tuple(d(st.integers(-2, 3), lambda v: v >= 0) for _ in range(2 * m))
    kwargs = {"mode": mode}
    if d(st.integers(0, 4)) == 0:
        kwargs["value"] = 1.0
        if mode != "constant":
            d.ordinary = False
    ordinary = d.ordinary and m <= rank
    if mode in ("reflect", "replicate", "circular"):
        sizes = shape[rank - m:][::-1] if m <= rank else []
        ordinary = ordinary and rank in (m + 1, m + 2) and all(
            max(pad[2 * j], pad[2 * j + 1]) < sizes[j] for j in range(m))
    check("pad", F.pad, (x, pad), kwargs, d.grad(), ordinary)


def test_unknown_names_and_odd_arguments_are_none():
    x = torch.empty(1, 2, 4, 4, device="meta")
    w = torch.empty(3, 2, 3, 3, device="meta")
    assert meta_result("frobnicate", (x,), {}) is None
    assert meta_result("conv2d", (x, w), {"out": x}) is None                 # unknown keyword
    assert meta_result("conv2d", (torch.empty(1, 2, 4, 4), w), {}) is None  # not on meta
    assert meta_result("add", (x, 1j), {}) is None                           # complex scalar
    assert meta_result("softmax", (x, 1, torch.float64), {}) is None         # torch.softmax's dtype
    assert meta_result("relu", (x, "yes"), {}) is None


# ---------------------------------------------------------------- real models
def _tensors(args, kwargs):
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            yield from (t for t in a if isinstance(t, torch.Tensor))


class Compare(TorchFunctionMode):
    """At every call meta_result answers, run the real op too and compare (rule 2)."""

    def __init__(self):
        super().__init__()
        self.answered = collections.Counter()
        self.seen = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        got = meta_result(name, args, kwargs)
        before = None if got is None else props(got)
        if name in OPS and OPS[name].meta is not None and all(t.is_contiguous() for t in _tensors(args, kwargs)):
            self.seen[name] += 1   # rule 3: only calls on contiguous tensors must be answered
        out = func(*args, **kwargs)
        if got is not None:
            self.answered[name] += 1
            same(before, out)
            if got is args[0] or out is args[0]:
                assert got is out, name
        return out


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small", "densenet121", "convnext_tiny", "efficientnet_b0",
                                  "mnasnet0_5"])
@pytest.mark.parametrize("grad", [False, True])
def test_torchvision_models(arch, grad):
    torchvision = pytest.importorskip("torchvision")
    from rfprobe.trace import private_copy
    model = getattr(torchvision.models, arch)()
    if arch == "densenet121":
        model = model.features
    model = private_copy(model, "meta").eval()
    mode = Compare()
    x = torch.empty(1, 3, 64, 64, device="meta", requires_grad=grad)
    with torch.set_grad_enabled(grad), mode:
        model(x)
    assert mode.seen, "the model ran none of the table's ops"
    # convnext permutes to channels-last and back: its mul/add_/pool see non-contiguous
    # tensors only, which rule 3 leaves to torch
    missed = sorted(set(mode.seen) - set(mode.answered))
    assert not missed, f"{arch}: never answered {missed} ({dict(mode.seen)})"
