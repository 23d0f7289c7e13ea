"""The gradient probe: the empirical receptive field, exact by construction.

It runs the model's own code on a private copy and backpropagates a one-hot gradient from one
output unit. Structural mode (the default) makes a zero gradient mean "outside the RF" and a
nonzero one "inside", with no exceptions:

* every weight is positive and every op's forward output is replaced by positive values, so
  no sum cancels and every ReLU-like gate is open;
* max-pooling (which routes gradient to one element of a window) runs as a surrogate with the
  same geometry that passes gradient to the whole window;
* after every op the gradient is replaced by positive random values on its support (its
  support depends only on the support downstream), so nothing underflows at any depth;
* convolutions run with direct algorithms (no Winograd/FFT leakage);
* dropout is off; normalisation layers keep the model's train/eval flags, so a BatchNorm in
  training mode shows up as the global coupling it is.

Actual mode (``mode="actual"``) uses the model's real weights and an input of yours instead:
"what does this trained model really use".

>>> import rfprobe
>>> e = probe(rfprobe.build("conv3 relu conv3"))
>>> e.size, e.box, e.truncated
((5, 5), ((2, 6), (2, 6)), False)
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._pytree import tree_flatten, tree_map

from .analytic import Analysis, analysis_of, as_model, choose_input, normalize_unit, propagate
from .errors import ArgumentError, ModelError, RFProbeError
from .graph import Graph, _run, _Tracer, private_copy, select
from .measure import remember, box_of, coverage_of


@dataclass(frozen=True, eq=False)
class ProbeResult:
    """The empirical RF of one output unit."""

    mask: np.ndarray                    # bool, the input's spatial shape: True = in the RF
    grad: np.ndarray                    # |input gradient| summed over channels
    box: tuple[tuple[int, int], ...]    # per axis (first, last) index of the mask
    size: tuple[int, ...]
    coverage: float                     # fraction of the box inside the RF (holes show here)
    truncated: bool                     # the full RF does not fit in the input
    input_shape: tuple[int, ...]        # (C, *spatial) actually used
    unit: tuple[int, ...]
    units_probed: tuple[tuple[int, ...], ...]
    target: str
    mode: str
    output_shape: tuple[int, ...] = ()
    analysis: Analysis | None = field(default=None, repr=False)

    def __post_init__(self):
        remember(self, "size")                        # so pytest can show the result on failure

    @property
    def axis_coverage(self) -> tuple[float, ...]:
        """Per axis, the fraction of the box's span the RF touches along that axis."""
        out = []
        for a, (lo, hi) in enumerate(self.box):
            proj = self.mask.any(axis=tuple(b for b in range(self.mask.ndim) if b != a))
            out.append(float(proj[lo:hi + 1].mean()))
        return tuple(out)

    def __str__(self) -> str:
        from .render import probe_text
        return probe_text(self)

    def _repr_html_(self) -> str:
        from .render import probe_html
        return probe_html(self)

    def plot(self, **kw):
        from .render import plot
        return plot(self, **kw)


class _Support(torch.autograd.Function):
    """Forward: positive values in [1, 2). Backward: positive values in [1, 2) exactly where
    the incoming gradient is nonzero. Keeps gates open and magnitudes bounded at any depth."""

    @staticmethod
    def forward(ctx, x):
        return torch.rand_like(x).add_(1.0)

    @staticmethod
    def backward(ctx, g):
        return (g != 0).to(g.dtype) * torch.rand_like(g).add_(1.0)


def _maxpool_surrogate(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                       return_indices=False, dims=2):
    """A pool with max-pool's exact geometry that passes gradient to the whole window:
    a depthwise conv with a ones kernel, padded on the right as ceil_mode would."""
    def t(v):
        return tuple(v) if isinstance(v, (list, tuple)) else (v,) * dims
    k, d, p = t(kernel_size), t(dilation), t(padding)
    s = k if stride is None or stride == [] or stride == () else t(stride)
    ref = [torch.nn.functional.max_pool1d, torch.nn.functional.max_pool2d,
           torch.nn.functional.max_pool3d][dims - 1]
    with torch.no_grad():
        out_shape = ref(torch.empty(x.shape, device="meta"), k, s, p, d, ceil_mode).shape
    pads = []
    for a in reversed(range(dims)):
        n = x.shape[2 + a]
        need = (out_shape[2 + a] - 1) * s[a] + d[a] * (k[a] - 1) + 1  # span the outputs read
        right = max(need - n - p[a], 0)
        pads += [p[a], right]
    y = torch.nn.functional.pad(x, pads)
    c = x.shape[1]
    w = torch.ones((c, 1, *k), dtype=x.dtype, device=x.device)
    conv = [torch.nn.functional.conv1d, torch.nn.functional.conv2d, torch.nn.functional.conv3d][dims - 1]
    out = conv(y, w, None, s, 0, d, c)
    out = out[(slice(None), slice(None)) + tuple(slice(0, m) for m in out_shape[2:])]
    return (out, torch.zeros(out.shape, dtype=torch.long, device=x.device)) if return_indices else out


_DROPOUT = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout"}


class _ProbeMode(_Tracer):
    """The tracer (same node names as the analytic routes) plus the structural substitutions."""

    def __init__(self, dims: int, structural: bool):
        super().__init__(dims)
        self.structural = structural
        self.tolerant = True

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if self.structural and name in _DROPOUT:
            return args[0] if args else kwargs["input"]
        if self.structural and name.startswith("max_pool") and name[8:9].isdigit():
            dims = int(name[8])

            def func(*a, _d=dims, **kw):  # noqa: F811 - swap in the surrogate, same signature
                return _maxpool_surrogate(*a, dims=_d, **kw)
            func.__name__ = name
        if self.structural and name.startswith("adaptive_max_pool"):
            dims = int(name[17])
            avg = [F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d][dims - 1]
            with_idx = kwargs.get("return_indices", len(args) > 2 and args[2]) or name.endswith("indices")

            def func(x, output_size, return_indices=False, _avg=avg, _w=with_idx):  # noqa: F811
                y = _avg(x, output_size)
                return (y, torch.zeros(y.shape, dtype=torch.long, device=y.device)) if _w else y
            func.__name__ = name
        return super().__torch_function__(func, types, args, kwargs)

    def post(self, out):
        if not self.structural:
            return out
        return tree_map(lambda t: _Support.apply(t) if isinstance(t, torch.Tensor)
                        and t.is_floating_point() and t.requires_grad else t, out)

    def _rule(self, func, name, args, kwargs, tensors, data, layouts, out, site):
        try:
            return super()._rule(func, name, args, kwargs, tensors, data, layouts, out, site)
        except RFProbeError:
            return None, None  # the probe needs no rule: it measures


def _structural_weights(twin: nn.Module, generator: torch.Generator) -> None:
    """Positive weights everywhere; normalisation statistics neutral (mean 0, var 1)."""
    with torch.no_grad():
        for name, p in twin.named_parameters():
            if p.is_floating_point():
                p.copy_(torch.rand(p.shape, generator=generator, dtype=p.dtype).add_(0.5))
        for name, b in twin.named_buffers():
            if name.endswith("running_mean"):
                b.zero_()
            elif name.endswith("running_var"):
                b.fill_(1.0)


@contextlib.contextmanager
def direct_algorithms(device: torch.device):
    """Direct convolution algorithms only (transform-based ones leak tiny nonzeros)."""
    with contextlib.ExitStack() as stack:
        if device.type == "cuda":
            stack.enter_context(torch.backends.cudnn.flags(enabled=False))
        was = torch._C._get_mkldnn_enabled()
        torch._C._set_mkldnn_enabled(False)
        stack.callback(torch._C._set_mkldnn_enabled, was)
        yield


def probe(model, unit=None, input_shape=None, *, layer: str | None = None, output: Any = None,
          channel: int | None = None, mode: str = "structural", inputs: torch.Tensor | None = None,
          device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
          seed: int = 0) -> ProbeResult:
    """Backpropagate from one output unit and return the input positions with nonzero gradient.

    ``unit``: spatial index of the output unit (default: the centre; negative counts from the
    end). ``input_shape``: (C, *spatial) without batch; ``None`` entries (or ``None``) are
    chosen so the unit's whole RF fits. ``channel``: one output channel (default: all).

    >>> import rfprobe
    >>> e = probe(rfprobe.build("conv3/d4"))
    >>> e.size, round(e.coverage, 4), e.axis_coverage
    ((9, 9), 0.1111, (0.3333333333333333, 0.3333333333333333))
    """
    if mode not in ("structural", "actual"):
        raise ArgumentError(f"mode={mode!r} must be 'structural' or 'actual'")
    model = as_model(model)
    if inputs is not None:
        if mode != "actual":
            raise ArgumentError("inputs= is for mode='actual'; structural mode chooses its own input")
        input_shape = tuple(inputs.shape[1:]) if inputs.dim() >= 3 else tuple(inputs.shape)
    graph = choose_input(model, input_shape, layer, output, unit)
    analysis = analysis_of(graph, layer, output)
    target = graph.node(analysis.target)
    u = analysis.centre_unit if unit is None else normalize_unit(unit, target.spatial)
    if channel is not None and not 0 <= channel < target.shape[1]:
        raise ArgumentError(f"channel={channel} is out of range: the output has {target.shape[1]} channels")
    dev = torch.device(device) if device is not None else _model_device(model)
    structural = mode == "structural"
    mask, grad = _gradient(model, graph, target.id, u, channel, structural, inputs, dev, dtype, seed)
    box = box_of(mask)
    truncated = _truncated(analysis, u, mask)
    return ProbeResult(mask, grad, box, tuple(b - a + 1 for a, b in box), coverage_of(mask, box),
                       truncated, graph.input_shape, u, (u,), target.name, mode, target.shape, analysis)


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def _truncated(analysis: Analysis, unit, mask) -> bool:
    if analysis.status == "global":
        return False
    try:
        box = analysis.region(unit, bounded=False).box
    except RFProbeError:
        return bool(mask.any() and any(mask.take(0, axis=a).any() or mask.take(-1, axis=a).any()
                                       for a in range(mask.ndim)))
    return any(lo < 0 or hi >= n for (lo, hi), n in zip(box, mask.shape))


def _gradient(model, graph: Graph, target_id: int, unit, channel, structural, inputs, device, dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    twin = private_copy(model, device)
    if structural:
        twin = twin.to(dtype)
        _structural_weights(twin, generator)
        for m in twin.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.eval()
    if inputs is None:
        x = torch.rand((1, *graph.input_shape), generator=generator, dtype=dtype).add_(1.0).to(device)
    else:
        x = inputs.detach().clone().to(device)
        if x.dim() == len(graph.input_shape):
            x = x.unsqueeze(0)
        x = x[:1]
    x.requires_grad_(True)
    tracer = _ProbeMode(graph.dims, structural)
    try:
        with torch.enable_grad(), direct_algorithms(device):
            _run(twin, x, tracer)
            if target_id >= len(tracer.keep) or tracer.nodes[target_id].shape != graph.nodes[target_id].shape:
                raise ModelError("the model ran differently under the probe than under the trace "
                                 "(data-dependent control flow?); pass input_shape= to fix the input")
            y = tracer.keep[target_id]
            seed_grad = torch.zeros_like(y)
            index = (0, slice(None) if channel is None else channel) + tuple(unit)
            seed_grad[index] = 1.0
            if not y.requires_grad:
                g = torch.zeros_like(x)
            else:
                (g,) = torch.autograd.grad(y, x, seed_grad, allow_unused=True)
                g = torch.zeros_like(x) if g is None else g
    except RFProbeError:
        raise
    except Exception as e:
        done = [n.name for n in tracer.nodes[-3:]]
        raise ModelError(f"the model raised {type(e).__name__} during the probe on input shape "
                         f"{tuple(x.shape)}: {e}. It had run up to {done}.") from e
    g = g.detach()[0].abs().sum(0).to(torch.float64).cpu().numpy()
    return g != 0, g
