"""Results of common ops on ``meta`` tensors, built without running torch's meta kernels.

Tracing a model on ``meta`` costs almost only torch's own meta kernels, most of them Python
decompositions (``torch/_refs``, ``torch/_meta_registrations.py``) that take 100-1700 us per
call. The shape, dtype and autograd state of the result of a conv, a norm, a pointwise op, a
pool, a cat, a pad or a mean follow from a few integer formulas, and an empty tensor on meta costs
about 2 us. Each function here answers one op family's calls directly; an op's record
(:class:`rfprobe.ops.Op`, field ``meta``) names its answer, and :func:`rfprobe.ops.meta_result`
asks it.

The contract is "never wrong, only sometimes None": an answer is given only when every
condition torch checks on that path was checked here too (ranks, channels, groups, kernel and
padding validity, output size >= 1, broadcasting, dtypes), so torch's own errors (the
"Calculated output size ... too small" that rfprobe's size search catches, channel
mismatches) still come from torch: for anything unusual (non-contiguous or non-meta tensors,
empty tensors, mixed dtypes, unknown keywords, ``out=``) the answer is None and the caller
runs the op itself.

>>> import torch
>>> x = torch.empty(1, 3, 8, 8, device="meta")
>>> w = torch.empty(4, 3, 3, 3, device="meta")
>>> conv(2)((x, w), {"stride": 2}).shape      # (8 - 3) // 2 + 1 = 3
torch.Size([1, 4, 3, 3])
>>> conv(2)((x, w), {"padding": 1}).shape
torch.Size([1, 4, 8, 8])
>>> conv(2)((torch.empty(1, 3, 2, 2, device="meta"), w), {}) is None   # too small: torch raises
True
>>> binary("add", True)((x, x), {}) is x       # in place: the same object
True
"""
from __future__ import annotations

import torch


_Tensor = torch.Tensor
_Parameter = torch.nn.Parameter
_TENSOR_TYPES = (_Tensor, _Parameter)     # exact types: a subclass may override anything
_FLOATS = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})
# dtypes the elementwise arithmetic answers for (bool and complex have their own rules: None)
_ARITH = _FLOATS | {torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8}
_empty = torch.empty
_grad_on = torch.is_grad_enabled
_result_type = torch.result_type
_can_cast = torch.can_cast


def _ok(t) -> bool:
    """A plain tensor on meta, contiguous, not empty, not an inference tensor (whose in-place
    and autograd rules differ): the only inputs answered."""
    return (type(t) in _TENSOR_TYPES and t.is_meta and t.is_contiguous()
            and t.numel() > 0 and not t.is_inference())


def _ok_any_layout(t) -> bool:
    """As _ok, but any strides: for ops that make their input contiguous first."""
    return (type(t) in _TENSOR_TYPES and t.is_meta and t.numel() > 0 and not t.is_inference())


def _new(shape, dtype, grad: bool):
    """An output like torch's: contiguous on meta; a non-leaf requiring grad when autograd
    records the op (any differentiable input requires grad under grad mode)."""
    if grad:
        return _empty(shape, device="meta", dtype=dtype, requires_grad=True).clone()
    return _empty(shape, device="meta", dtype=dtype)


def _grad(*ts) -> bool:
    """Whether autograd would record an op with these (tensor or None) inputs."""
    if not _grad_on():
        return False
    for t in ts:
        if t is not None and t.requires_grad:
            return True
    return False


def _inplace_ok(self, *others) -> bool:
    """Whether an in-place op on ``self`` succeeds without changing its autograd state:
    torch raises on a leaf (or a view of one) that requires grad under grad mode, and an op
    that makes ``self`` start requiring grad is left to torch. Views are left to torch."""
    if self._base is not None:
        return False
    for o in others:
        if type(o) in _TENSOR_TYPES and o._base is not None:   # may overlap self's memory
            return False
    if not _grad_on():
        return True
    if self.requires_grad:
        return not self.is_leaf
    for o in others:
        if type(o) in _TENSOR_TYPES and o.requires_grad:
            return False
    return True


def _bind(args: tuple, kwargs: dict, names: tuple, defaults: tuple):
    """Arguments by name for a signature (names, defaults for the trailing ones); None when a
    keyword is unknown or given twice, or too few/many positional arguments."""
    n = len(names)
    if not kwargs and len(args) == n:
        return args   # the common fully positional call: nothing to fill in
    if len(args) > n:
        return None
    out = list(args) + [_MISSING] * (n - len(args))
    for k, v in kwargs.items():
        try:
            i = names.index(k)
        except ValueError:
            return None
        if i < len(args):
            return None
        out[i] = v
    first_default = n - len(defaults)
    for i in range(n):
        if out[i] is _MISSING:
            if i < first_default:
                return None
            out[i] = defaults[i - first_default]
    return out


_MISSING = object()


def _ints(v, n: int):
    """An int or a sequence of n ints (bools excluded) as a tuple of n ints, else None."""
    if type(v) is int:
        return (v,) * n
    if type(v) in (tuple, list) and len(v) == n:
        for x in v:
            if type(x) is not int:
                return None
        return tuple(v)
    if type(v) in (tuple, list) and len(v) == 1 and type(v[0]) is int:   # torch expands [k]
        return (v[0],) * n
    return None


# ---------------------------------------------------------------- convolution
_CONV_NAMES = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_DEFAULTS = (None, 1, 0, 1, 1)


def conv(n: int):
    """conv1d/2d/3d (batched input only): out = (in + 2p - d(k-1) - 1) // s + 1 per axis, which
    must be >= 1; channels = groups * weight.shape[1]; 'same' needs stride 1; 'valid' = 0."""
    def conv(args, kwargs):
        b = _bind(args, kwargs, _CONV_NAMES, _CONV_DEFAULTS)
        if b is None:
            return None
        x, w, bias, stride, padding, dilation, groups = b
        if not (_ok(x) and _ok(w)) or x.dim() != n + 2 or w.dim() != n + 2:
            return None
        dt = x.dtype
        if dt not in _FLOATS or w.dtype is not dt:
            return None
        if bias is not None and not (_ok(bias) and bias.dim() == 1 and bias.dtype is dt
                                     and bias.shape[0] == w.shape[0]):
            return None
        if type(groups) is not int or groups < 1:
            return None
        xs, ws = x.shape, w.shape
        if xs[1] != ws[1] * groups or ws[0] % groups:
            return None
        stride, dilation = _ints(stride, n), _ints(dilation, n)
        if stride is None or dilation is None or min(stride) < 1 or min(dilation) < 1:
            return None
        if padding == "same":
            if max(stride) != 1:
                return None   # torch: padding='same' is not supported for strided convolutions
            out = xs[2:]
        else:
            pad = (0,) * n if padding == "valid" else _ints(padding, n)
            if pad is None or min(pad) < 0:
                return None
            out = []
            for i in range(n):
                o = (xs[2 + i] + 2 * pad[i] - dilation[i] * (ws[2 + i] - 1) - 1) // stride[i] + 1
                if o < 1:
                    return None   # torch: "Kernel size can't be greater than actual input size"
                out.append(o)
        return _new((xs[0], ws[0], *out), dt, _grad(x, w, bias))
    return conv


# ---------------------------------------------------------------- normalisation
def _vec(t, c: int, dt) -> bool:
    """None, or a 1-D contiguous meta tensor of c elements of dtype dt."""
    return t is None or (_ok(t) and t.dim() == 1 and t.shape[0] == c and t.dtype is dt)


def _norm_ok(x, w, bias, rm, rv, batch_stats, momentum, eps, min_rank: int) -> bool:
    """The checks batch_norm and instance_norm share: flags and numbers of the right types; a
    float input of rank >= ``min_rank``; weight, bias and running stats None or one value per
    channel; stats both or neither, required when the batch's own are not used, and not
    requiring grad (updated in place, not differentiable: left to torch)."""
    if type(batch_stats) is not bool or type(eps) not in (float, int) or type(momentum) not in (float, int):
        return False
    if not _ok(x) or x.dim() < min_rank or x.dtype not in _FLOATS:
        return False
    c, dt = x.shape[1], x.dtype
    if not (_vec(w, c, dt) and _vec(bias, c, dt) and _vec(rm, c, dt) and _vec(rv, c, dt)):
        return False
    if (rm is None) != (rv is None) or (not batch_stats and rm is None):
        return False
    return not ((rm is not None and rm.requires_grad) or (rv is not None and rv.requires_grad))


_BN_F = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
_BN_T = ("input", "weight", "bias", "running_mean", "running_var", "training", "momentum", "eps",
         "cudnn_enabled")


def batch_norm(args, kwargs):
    """F.batch_norm and torch.batch_norm (told apart by cudnn_enabled, which only the latter
    has and requires): output like input; running stats required in eval mode; F's training
    mode needs more than one value per channel (N * prod(spatial) > 1)."""
    if len(args) >= 9 or "cudnn_enabled" in kwargs:
        b = _bind(args, kwargs, _BN_T, ())
        if b is None:
            return None
        x, w, bias, rm, rv, training, momentum, eps, cudnn = b
        if type(cudnn) is not bool:
            return None
    else:
        b = _bind(args, kwargs, _BN_F, (None, None, False, 0.1, 1e-5))
        if b is None:
            return None
        x, rm, rv, w, bias, training, momentum, eps = b
    if not _norm_ok(x, w, bias, rm, rv, training, momentum, eps, 2):
        return None
    dt, s = x.dtype, x.shape
    c = s[1]
    if training and x.numel() // c == 1:
        # F.batch_norm: "Expected more than 1 value per channel when training"; torch.batch_norm
        # divides by n - 1 updating the running variance
        return None
    return _new(s, dt, _grad(x, w, bias))


def layer_norm(args, kwargs):
    """layer_norm: the last len(normalized_shape) sizes equal normalized_shape; weight and
    bias have exactly that shape; output of the input's shape, contiguous."""
    b = _bind(args, kwargs, ("input", "normalized_shape", "weight", "bias", "eps"),
              (None, None, 1e-5))
    if b is None:
        return None
    x, ns, w, bias, eps = b
    if type(ns) is int:
        ns = (ns,)
    if type(ns) not in (tuple, list, torch.Size) or not ns or type(eps) not in (float, int):
        return None
    # any input layout: torch's native_layer_norm starts with input.contiguous(), so the
    # output is contiguous (convnext normalises permuted, channels-last tensors)
    if not _ok_any_layout(x) or x.dtype not in _FLOATS or x.dim() < len(ns):
        return None
    ns = tuple(ns)
    if tuple(x.shape[x.dim() - len(ns):]) != ns:
        return None
    dt = x.dtype
    for t in (w, bias):
        if t is not None and not (_ok(t) and t.dtype is dt and tuple(t.shape) == ns):
            return None
    return _new(x.shape, dt, _grad(x, w, bias))


def group_norm(args, kwargs):
    """F.group_norm: C divisible by num_groups; weight and bias of C elements; F's check that
    there is more than one value per group (N*C//G * prod(spatial) > 1)."""
    b = _bind(args, kwargs, ("input", "num_groups", "weight", "bias", "eps"), (None, None, 1e-5))
    if b is None:
        return None
    x, g, w, bias, eps = b
    if type(g) is not int or g < 1 or type(eps) not in (float, int):
        return None
    if not _ok(x) or x.dim() < 2 or x.dtype not in _FLOATS:
        return None
    s, dt = x.shape, x.dtype
    c = s[1]
    if c % g or not (_vec(w, c, dt) and _vec(bias, c, dt)):
        return None
    if x.numel() // g == 1:
        return None   # "Expected more than 1 value per channel when training"
    return _new(s, dt, _grad(x, w, bias))


def instance_norm(args, kwargs):
    """F.instance_norm (not torch.instance_norm: cudnn_enabled -> None): input of rank >= 3
    with more than one spatial position when using input statistics."""
    if len(args) >= 9 or "cudnn_enabled" in kwargs:
        return None
    b = _bind(args, kwargs, ("input", "running_mean", "running_var", "weight", "bias",
                             "use_input_stats", "momentum", "eps"),
              (None, None, None, None, True, 0.1, 1e-5))
    if b is None:
        return None
    x, rm, rv, w, bias, use, momentum, eps = b
    if not _norm_ok(x, w, bias, rm, rv, use, momentum, eps, 3):
        return None
    s, dt = x.shape, x.dtype
    c = s[1]
    if use and x.numel() // (s[0] * c) == 1:
        return None   # "Expected more than 1 spatial element when training"
    return _new(s, dt, _grad(x, w, bias))


def linear(args, kwargs):
    """linear: input (..., in) @ weight (out, in).T + bias (out,) -> (..., out)."""
    b = _bind(args, kwargs, ("input", "weight", "bias"), (None,))
    if b is None:
        return None
    x, w, bias = b
    if not (_ok(x) and _ok(w)) or w.dim() != 2 or x.dim() < 1 or x.dtype not in _FLOATS:
        return None
    dt = x.dtype
    if w.dtype is not dt or x.shape[-1] != w.shape[1]:
        return None
    if bias is not None and not (_ok(bias) and bias.dim() == 1 and bias.dtype is dt
                                 and bias.shape[0] == w.shape[0]):
        return None
    return _new((*x.shape[:-1], w.shape[0]), dt, _grad(x, w, bias))


# ---------------------------------------------------------------- elementwise arithmetic
def _broadcast(a, b):
    """torch's broadcast of two shapes in Python (torch.broadcast_shapes costs ~14 us);
    None when incompatible."""
    la, lb = len(a), len(b)
    if la < lb:
        a, b, la, lb = b, a, lb, la
    out = list(a)
    off = la - lb
    for i in range(lb):
        x, y = a[off + i], b[i]
        if x != y:
            if x == 1:
                out[off + i] = y
            elif y != 1:
                return None
    return out


def binary(kind: str, inplace: bool):
    """add/sub/mul/div with a tensor or Python-number operand, torch.result_type promotion
    (true division makes integers floating), alpha= for add/sub; in place the result must
    broadcast to self's shape and cast to self's dtype, and self is returned."""
    has_alpha = kind in ("add", "sub")

    def binary(args, kwargs):
        if len(args) != 2:
            return None
        alpha = 1
        if kwargs:
            if not has_alpha or len(kwargs) != 1 or "alpha" not in kwargs:
                return None
            alpha = kwargs["alpha"]
            if type(alpha) not in (int, float):
                return None
        a, o = args
        if not _ok(a):
            return None
        ot = type(o)
        if ot in _TENSOR_TYPES:
            if not _ok(o):
                return None
            shape = _broadcast(a.shape, o.shape)
            if shape is None:
                return None
        elif ot is int or ot is float:
            shape = a.shape
        else:
            return None   # bool, complex, other objects: torch's own rules
        dt = _result_type(a, o)
        if dt not in _ARITH:
            return None
        if kind == "div" and dt not in _FLOATS:
            dt = torch.get_default_dtype()
        if type(alpha) is float and dt not in _FLOATS:
            return None   # "For integral input tensors, argument alpha must not be a floating point number."
        if inplace:
            if list(shape) != list(a.shape) or not _can_cast(dt, a.dtype) or not _inplace_ok(a, o):
                return None
            return a
        return _new(shape, dt, _grad(a, o if ot in _TENSOR_TYPES else None))
    return binary


# ---------------------------------------------------------------- unary pointwise
def _num(v) -> bool:
    return type(v) is int or type(v) is float


def unary(names: tuple, defaults: tuple, always_inplace: bool = False, check=None):
    """A pointwise op that keeps shape and dtype (floating inputs only). ``names`` after the
    input are its extra arguments (with defaults); 'inplace' among them, or a trailing '_' in
    the op's name, makes it in place: the input itself is returned."""
    full = ("input",) + names

    def unary(args, kwargs):
        b = _bind(args, kwargs, full, defaults)
        if b is None:
            return None
        x = b[0]
        if not _ok(x) or x.dtype not in _FLOATS:
            return None
        inplace = always_inplace
        for name, v in zip(names, b[1:]):
            if name == "inplace":
                if type(v) is not bool:
                    return None
                inplace = inplace or v
            elif name == "approximate":
                if v not in ("none", "tanh"):
                    return None
            elif not _num(v):
                return None
        if check is not None and not check(*b[1:]):
            return None
        if inplace:
            return x if _inplace_ok(x) else None
        return _new(x.shape, x.dtype, _grad(x))
    return unary


def dropout(rank: int | None):
    """F.dropout/dropout1d/2d/3d: p in [0, 1]; the ranked forms need a batched input of that
    rank. Outside training (or p == 0) torch returns the input itself, as in place does."""
    def dropout(args, kwargs):
        b = _bind(args, kwargs, ("input", "p", "training", "inplace"), (0.5, True, False))
        if b is None:
            return None
        x, p, training, inplace = b
        if not _num(p) or not 0.0 <= p <= 1.0 or type(training) is not bool or type(inplace) is not bool:
            return None
        if rank is None and (not training or p == 0):
            # torch returns the input itself, in place or not, whatever its layout or
            # autograd state: nothing is computed (an eval-mode nn.Dropout(inplace=True)
            # after a flatten gets a view)
            if type(x) in _TENSOR_TYPES and x.is_meta and x.dtype in _FLOATS:
                return x
            return None
        if not _ok(x) or x.dtype not in _FLOATS:
            return None
        if rank is not None and (x.dim() != rank or not training or p == 0):
            return None   # wrong ranks warn or raise; the ranked eval paths: left to torch
        if inplace:
            return x if _inplace_ok(x) else None
        return _new(x.shape, x.dtype, _grad(x))
    return dropout


def softmax(args, kwargs):
    """softmax/log_softmax along an explicit dim; dtype= (a cast) and dim=None (deprecated
    implicit dim) are left to torch."""
    b = _bind(args, kwargs, ("input", "dim", "_stacklevel", "dtype"), (None, 3, None))
    if b is None:
        return None
    x, dim, stacklevel, dtype = b
    # torch.softmax's third positional argument is dtype, F.softmax's is _stacklevel
    if dtype is not None or type(stacklevel) is not int or type(dim) is not int or not _ok(x) or x.dtype not in _FLOATS:
        return None
    n = max(x.dim(), 1)
    if not -n <= dim < n:
        return None
    return _new(x.shape, x.dtype, _grad(x))


# ---------------------------------------------------------------- cat
def cat(args, kwargs):
    """cat/concat: one dtype, equal ranks, all sizes but dim's equal; the sum along dim.
    Empty tensors (torch's legacy 1-D rule) and mixed dtypes are left to torch."""
    b = _bind(args, kwargs, ("tensors", "dim"), (0,))
    if b is None:
        return None
    ts, dim = b
    if type(ts) not in (list, tuple) or not ts or type(dim) is not int:
        return None
    t0 = ts[0]
    if not _ok(t0):
        return None
    nd, dt = t0.dim(), t0.dtype
    if nd == 0 or not -nd <= dim < nd:
        return None
    if dim < 0:
        dim += nd
    shape = list(t0.shape)
    total = 0
    grad = False
    for t in ts:
        if not _ok(t) or t.dtype is not dt or t.dim() != nd:
            return None
        s = t.shape
        for i in range(nd):
            if i != dim and s[i] != shape[i]:
                return None
        total += s[dim]
        grad = grad or t.requires_grad
    shape[dim] = total
    return _new(shape, dt, grad and _grad_on())


# ---------------------------------------------------------------- pooling
def _pool_out(size: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    """torch's pooling_output_shape: floor (or ceil) division, and with ceil_mode the last
    window must start inside the input or the left padding."""
    o = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
    if ceil and (o - 1) * s >= size + p:
        o -= 1
    return o


def _pool_geometry(x, n, kernel, stride, padding, dilation, ceil):
    """Output shape of an n-D pool over a batched or unbatched input, or None when torch
    would refuse (kernel/stride/dilation < 1, padding > kernel // 2, output < 1)."""
    if not _ok(x) or x.dtype not in _FLOATS or x.dim() not in (n + 1, n + 2) or type(ceil) is not bool:
        return None
    k = _ints(kernel, n)
    s = k if stride is None or (type(stride) in (tuple, list) and len(stride) == 0) else _ints(stride, n)
    p, d = _ints(padding, n), _ints(dilation, n)
    if k is None or s is None or p is None or d is None:
        return None
    if min(k) < 1 or min(s) < 1 or min(d) < 1 or min(p) < 0:
        return None
    shape = list(x.shape)
    lead = len(shape) - n
    for i in range(n):
        if 2 * p[i] > k[i]:
            return None   # "pad should be smaller than or equal to half of kernel size"
        o = _pool_out(shape[lead + i], k[i], s[i], p[i], d[i], ceil)
        if o < 1:
            return None   # "Output size is too small"
        shape[lead + i] = o
    return shape


def max_pool(n: int):
    """max_pool1d/2d/3d; return_indices=True (a tuple) is left to torch."""
    def max_pool(args, kwargs):
        b = _bind(args, kwargs, ("input", "kernel_size", "stride", "padding", "dilation",
                                 "ceil_mode", "return_indices"), (None, 0, 1, False, False))
        if b is None:
            return None
        x, k, s, p, d, ceil, ri = b
        if ri is not False:
            return None
        shape = _pool_geometry(x, n, k, s, p, d, ceil)
        return None if shape is None else _new(shape, x.dtype, _grad(x))
    return max_pool


def avg_pool(n: int):
    """avg_pool1d/2d/3d; divisor_override (2d/3d only) must be a nonzero int."""
    names = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")
    defaults = (None, 0, False, True)
    if n > 1:
        names, defaults = names + ("divisor_override",), defaults + (None,)

    def avg_pool(args, kwargs):
        b = _bind(args, kwargs, names, defaults)
        if b is None:
            return None
        x, k, s, p, ceil, cip = b[:6]
        if type(cip) is not bool:
            return None
        if n > 1 and b[6] is not None and (type(b[6]) is not int or b[6] == 0):
            return None
        shape = _pool_geometry(x, n, k, s, p, 1, ceil)
        if shape is None:
            return None
        if n == 3:   # avg_pool3d alone also wants the unpadded input >= kernel
            kk = _ints(k, 3)
            if any(x.shape[x.dim() - 3 + i] < kk[i] for i in range(3)):
                return None   # "input image ... smaller than kernel size"
        return _new(shape, x.dtype, _grad(x))
    return avg_pool


def adaptive_avg_pool(n: int):
    """adaptive_avg_pool1d/2d/3d: output_size an int or n entries (None keeps the input's
    size, as F's 2d/3d wrappers do); every size >= 1."""
    def adaptive(args, kwargs):
        b = _bind(args, kwargs, ("input", "output_size"), ())
        if b is None:
            return None
        x, size = b
        if not _ok(x) or x.dtype not in _FLOATS or x.dim() not in (n + 1, n + 2):
            return None
        shape = list(x.shape)
        lead = len(shape) - n
        if type(size) is int:
            size = (size,) * n
        if type(size) not in (tuple, list) or len(size) != n:
            return None
        for i, v in enumerate(size):
            if v is None and n > 1:
                continue
            if type(v) is not int or v < 1:
                return None
            shape[lead + i] = v
        return _new(shape, x.dtype, _grad(x))
    return adaptive


# ---------------------------------------------------------------- mean
def mean(args, kwargs):
    """mean over ``dim`` (an int, a non-empty list of distinct in-range dims, or None for all)
    of a floating input, keepdim a bool; dtype= and an empty dim list are left to torch.
    (torch's meta kernel for it is a Python reference, ~0.4 ms a call: the head of every
    trunk that ends in ``x.mean([2, 3])``.)"""
    if len(args) < 2 and "dim" not in kwargs and kwargs:
        return None   # torch.mean(x, keepdim=...) without a dim: torch's signature refuses it
    b = _bind(args, kwargs, ("input", "dim", "keepdim"), (None, False))
    if b is None:
        return None
    x, dim, keepdim = b
    if not _ok(x) or x.dtype not in _FLOATS or type(keepdim) is not bool:
        return None
    nd = x.dim()
    if nd == 0:
        return None
    if dim is None:
        dims = range(nd)
    else:
        dims = _ints(dim, 1) if type(dim) is int else (tuple(dim) if type(dim) in (tuple, list) else None)
        if not dims or any(type(d) is not int or not -nd <= d < nd for d in dims):
            return None
        dims = [d % nd for d in dims]
        if len(set(dims)) != len(dims):
            return None   # "dim ... appears multiple times in the list of dims"
    shape = list(x.shape)
    for d in sorted(dims, reverse=True):
        if keepdim:
            shape[d] = 1
        else:
            del shape[d]
    return _new(shape, x.dtype, _grad(x))


# ---------------------------------------------------------------- pad
def pad(args, kwargs):
    """F.pad: pairs (left, right) from the last axis backwards, all >= 0. constant: any
    rank; reflect (pad < size), replicate, circular (pad <= size): non-negative pads on
    the last 1-3 axes of a batched or unbatched input, no value=."""
    b = _bind(args, kwargs, ("input", "pad", "mode", "value"), ("constant", None))
    if b is None:
        return None
    x, pad, mode, value = b
    if not _ok(x) or x.dtype not in _FLOATS or type(pad) not in (tuple, list) or len(pad) % 2:
        return None
    for v in pad:
        if type(v) is not int:
            return None
    m = len(pad) // 2
    nd = x.dim()
    if m > nd or m == 0:
        return None
    shape = list(x.shape)
    if mode == "constant":
        if value is not None and not _num(value) or min(pad) < 0:
            return None   # negative pads return narrowed views (or their clones): left to torch
    elif mode in ("reflect", "replicate", "circular"):
        if value is not None or m > 3 or nd not in (m + 1, m + 2) or min(pad) < 0:
            return None
    else:
        return None
    for j in range(m):
        i = nd - 1 - j
        lo, hi = pad[2 * j], pad[2 * j + 1]
        if mode == "reflect" and (lo >= shape[i] or hi >= shape[i]):
            return None   # "Padding size should be less than the corresponding input dimension"
        if mode == "circular" and (lo > shape[i] or hi > shape[i]):
            return None   # "Padding value causes wrapping around more than once"
        shape[i] += lo + hi
        if shape[i] < 1:
            return None
    return _new(shape, x.dtype, _grad(x))


# ---------------------------------------------------------------- the table
def activation(names: tuple, defaults: tuple, check=None):
    """The answers for an activation ``f(x, *names)`` and its explicit in-place form ``f_``
    (``relu_``, ``F.elu_``, ``torch.sigmoid_``), which takes no ``inplace`` argument.

    >>> relu, relu_ = activation(("inplace",), (False,))
    >>> x = torch.empty(1, 2, 3, 3, device="meta")
    >>> relu((x,), {}).shape, relu_((x,), {}) is x
    (torch.Size([1, 2, 3, 3]), True)
    """
    names2 = tuple(x for x in names if x != "inplace")
    defaults2 = tuple(d for x, d in zip(names[len(names) - len(defaults):], defaults) if x != "inplace")
    check2 = (lambda lo, hi: lo <= hi) if check else None
    return unary(names, defaults, check=check), unary(names2, defaults2, always_inplace=True, check=check2)
