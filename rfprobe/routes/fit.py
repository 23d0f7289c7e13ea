"""Choosing the input: the smallest input (per axis) in which the unit's whole RF fits, so
the probe sees it without border truncation, or the user's own input checked.

Sizes are tried from 32 up until the model runs and the selected output has spatial axes;
then the closed form predicts the smallest fitting size and one more trace confirms it (the
exact route grows the input where the closed form cannot say). A trace at a new size is
replayed from the previous trace's recording when the model's code never read a size.

>>> import rfprobe
>>> choose_input(rfprobe.build("conv3 conv3/s2 conv3"), None).input_shape   # a 9x9 RF: 9x9
(1, 9, 9)
"""
from __future__ import annotations

import contextlib
import functools
import gc
import re

import torch.nn as nn

from ..defaults import resolve_input_shape
from ..errors import ArgumentError, ModelError, RFProbeError, UnknownOpError, model_raised, raised_text
from ..measure import closed_form_box, closed_form_span
from ..ops.maps import each_axis
from ..trace import (RECORDINGS, Graph, Node, axes_lost_at, depends_on_input, one_meta_copy, replay, select,
                     stranded_hooks, trace)
from ..validate import check_target, check_unit, normalize_unit
from .closed import closed_forms, suggest_layer
from .exact import propagate


def choose_input(model: nn.Module, input_shape, layer=None, output=None, unit=None) -> Graph:
    """Trace at the input the user gave, or at the smallest input (per axis) in which the
    centre unit's whole RF fits, so the probe sees it without border truncation."""
    with one_meta_copy(model), _no_gc():
        graph = _choose_input(model, input_shape, layer, output, unit)
    RECORDINGS.drop(graph)    # what a replay needs keeps the meta copy alive: not past this call
    return graph


def _trace_at(model, g: Graph, shape) -> Graph:
    """``model`` traced at ``shape``, replayed from ``g``'s recording where that is sound."""
    return replay(g, shape) or trace(model, shape, g.dims, record=True)


@contextlib.contextmanager
def _no_gc():
    """No cyclic garbage collection while tracing: a trace allocates thousands of small objects,
    and a full collection they trigger (tens of ms with torch loaded) cost more than the trace.
    Reference counting still frees everything; the collector's previous state is restored."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _choose_input(model: nn.Module, input_shape, layer=None, output=None, unit=None) -> Graph:
    check_unit(unit)
    shape, channels, dims = resolve_input_shape(model, input_shape, check_channels=False)
    fixed = [None] * dims if shape is None else list(shape[1:])
    if all(f is not None for f in fixed):
        return _users_input(model, input_shape, (channels, *fixed), layer, output, unit)
    g = _first_size_that_runs(model, input_shape, fixed, channels, dims, layer, output)
    predicted = _shrink(model, g, fixed, layer, output, unit, channels, dims, upto=1 << 16)
    if predicted is not g:
        return predicted  # the closed form's smallest fitting size, confirmed by one trace
    return _grow(model, g, fixed, layer, output, unit, channels, dims)


def _users_input(model: nn.Module, input_shape, shape, layer, output, unit) -> Graph:
    """The trace at the input the user fixed, whose output must hold the unit."""
    try:
        g = trace(model, shape, len(shape) - 1)
    except ModelError as e:
        err = _diagnose(model, input_shape, len(shape) - 1, e)
        raise err from (e.__cause__ if err is e else None)
    with _hooks_explained(model):
        target = select(g, layer, output, functools.partial(depends_on_input, model, shape, layer, output))
    check_target(target, shape, _suggestion(model, g, layer, output) if target.spatial is None else None,
                 axes_lost_at(g, target))
    _not_constant(model, g, target, shape, layer, output)
    if unit is not None:       # the input is the user's: the unit must exist in its output
        normalize_unit(unit, select(g, layer, output).spatial)
    return g


def _not_constant(model: nn.Module, g: Graph, target: Node, shape, layer, output) -> None:
    """Where the trace says the selected output reads no input position (built from constants),
    a run with another input must agree: an output that moves then was reached by a path the
    trace lost (``z.set_(y)`` swaps a constant's storage for traced data out of the tracer's
    sight), and "does not depend on the model input" would be false."""
    if closed_forms(g)[0][target.id].status == "constant" and depends_on_input(model, shape, layer, output):
        raise UnknownOpError(f"the selected output {target.name!r} changes with the model input, but rfprobe "
                             "traced it as built from constants only: an op it does not see (x.set_(y), "
                             "values read into Python, an op run outside torch) cut the path from the input")


@contextlib.contextmanager
def _hooks_explained(model: nn.Module):
    """An output rfprobe cannot find (not in the model's output, or not computed from the
    input), where a forward hook of the user's reaches the model by a route the private copy
    cannot point at its own objects (``trace/closures.py``): the error names the hook and says
    what to change, as the copy's forward returned what the hook never wrote."""
    try:
        yield
    except ArgumentError as e:
        stranded = stranded_hooks(model)
        if not stranded:
            raise
        module, hook, kind, var = stranded[0]
        route = f"the global {var!r}" if kind == "global" else f"the container {var!r} in its closure"
        more = f" (so do {len(stranded) - 1} more)" if len(stranded) > 1 else ""
        raise ArgumentError(
            f"{str(e).rstrip('.')}. The forward hook {hook!r} on module {module or '<model>'!r}{more} reaches an "
            f"object of your model (the model, a module, or a dict or list one holds) through {route}, which "
            "rfprobe cannot point at its private copy of the model: the copy's forward returns the copy's objects, "
            "which such a hook never fills. Pass the hook that object as a closure variable "
            "(def make_hook(feats): return lambda m, i, o: feats.update(x=o)) or make it a method of the model"
        ) from None


def _first_size_that_runs(model: nn.Module, input_shape, fixed, channels, dims, layer, output) -> Graph:
    """The first trace, at a size the model runs at and whose selected output has spatial
    axes; the model's first error is passed on (diagnosed) when no size works."""
    first_error = None
    # 32 first: most trunks need it (a failed trace at 8 or 16 costs as much as one that works),
    # and the closed form shrinks the input afterwards anyway; 224 (and its multiples) for the
    # models that split their maps into 7x7 windows (maxvit)
    for n in (32, 64, 128, 224, 256, 448, 512, 896, 1024, 2048, 4096, 16, 8):
        size = tuple(f if f is not None else n for f in fixed)
        try:
            g = trace(model, (channels, *size), dims, record=True)
            with _hooks_explained(model):
                target = select(g, layer, output, functools.partial(depends_on_input, model, (channels, *size),
                                                                       layer, output))
            if target.spatial is None:      # flattened or pooled away: no input size helps
                check_target(target, (channels, *size), _suggestion(model, g, layer, output), axes_lost_at(g, target))
            if all(s >= 1 for s in target.spatial):
                _not_constant(model, g, target, (channels, *size), layer, output)
                return g
        except RFProbeError as e:
            if not isinstance(e, ModelError):
                raise
            if (input_shape is None or input_shape[0] is None) and _CHANNELS.search(raised_text(e)):
                raise _guessed_channels(model, channels, e) from None   # no size fixes a channel count
            first_error = first_error or e
    if first_error is not None:
        err = _diagnose(model, input_shape, dims, first_error, retry=False)
        raise err from (first_error.__cause__ if err is first_error else None)
    raise ArgumentError("no input size up to 4096 gives this model a spatial output")


def _suggestion(model: nn.Module, g: Graph, layer, output) -> str | None:
    """The ``layer=`` to suggest where the selected output has no spatial axes: the last module
    whose output has a local RF (:func:`~rfprobe.routes.closed.suggest_layer`), read from a trace
    at four times the input size where the model runs there. At the small sizes an input search
    starts from, a trunk's last map can be 1x1, and an adaptive pool to 1x1 of it is the identity
    (a resnet's ``avgpool`` would be suggested instead of ``layer4``)."""
    bigger = (g.input_shape[0], *(4 * s for s in g.input_shape[1:]))
    try:
        g = _trace_at(model, g, bigger)
    except RFProbeError:
        pass
    return suggest_layer(g, select(g, layer, output))


# torch's message for a conv given the wrong number of channels
_CHANNELS = re.compile(r"to have \d+ channels, but got \d+ channels")


def _guessed_channels(model: nn.Module, channels: int, error: ModelError) -> ArgumentError:
    """The channel count rfprobe guessed from the model's first conv is wrong (the model starts
    with something else, a space-to-depth, a stem that changes channels): refused at once, as
    no input size can fix it."""
    conv = next((f"{n!r} ({type(m).__name__})" for n, m in model.named_modules()
                 if isinstance(m, nn.modules.conv._ConvNd)), "?")
    return ArgumentError(f"input_shape is needed: rfprobe guessed {channels} input channels from the model's "
                         f"first conv {conv}, but {model_raised(error)} (the model runs something else "
                         "before it, e.g. a space-to-depth). No input size fixes a channel count: pass "
                         "input_shape=(C, H, W) with the channels the model takes")


def _grow(model: nn.Module, g: Graph, fixed, layer, output, unit, channels, dims) -> Graph:
    """Grow the input until the exact route says the unit's RF fits (where the closed form
    cannot say), then shrink it to the closed form's smallest fitting size."""
    previous = None
    for _ in range(40):
        target = select(g, layer, output)
        size = list(g.input_shape[1:])
        if target.spatial is None:
            return g
        if closed_forms(g)[0][target.id].status == "global":
            return g   # no size holds a global RF (the exact route would walk the graph to say so)
        u = tuple(m // 2 for m in target.spatial) if unit is None else tuple(
            (x % m) for x, m in zip(each_axis(unit, dims), target.spatial))
        reg = propagate(g, target, u, bounded=False)
        if reg.global_cause is not None:
            return g
        deficit = [(max(-lo, 0), max(hi - cur + 1, 0)) for (lo, hi), cur in zip(reg.box, size)]
        if unit is not None and deficit == previous:
            return g  # growing does not help: this unit's RF reaches into the padding anywhere
        previous = deficit
        need = []
        for a, ((lo, hi), cur) in enumerate(zip(reg.box, size)):
            if fixed[a] is not None or (lo >= 0 and hi < cur):
                need.append(cur)
            else:
                # the centre unit moves as the input grows: add twice the deficit, then shrink
                need.append(max(cur + 2 * (max(-lo, 0) + max(hi - cur + 1, 0)), hi - lo + 1))
        if need == size:
            return _shrink(model, g, fixed, layer, output, unit, channels, dims)
        g = _trace_at(model, g, (channels, *need))
    return g


def _fitting_size(r: int, S: int, P: int, unit, upto: int) -> int | None:
    """Smallest n < ``upto`` whose output (a chain of floor-mode ops: floor((n + 2P - r) / S)
    + 1 units) holds the unit (the centre when None) with its whole RF [u*S - P, u*S - P + r - 1]
    inside [0, n - 1]; None if there is none."""
    for n in range(max(r - 2 * P, 1), upto):
        out = (n + 2 * P - r) // S + 1
        if out < 1:
            continue
        u = out // 2 if unit is None else unit % out if unit < 0 else unit
        if u >= out:
            continue
        first, last = closed_form_span(u, r, S, P)
        if first >= 0 and last <= n - 1:
            return n
    return None


def _shrink(model, g: Graph, fixed, layer, output, unit, channels, dims, upto: int | None = None) -> Graph:
    """The closed form predicts the smallest size per axis below ``upto`` (default: the current
    size, which the growth search can overshoot), and one more trace confirms that the unit's
    whole RF fits in it; otherwise ``g`` is returned unchanged."""
    target = select(g, layer, output)
    c = closed_forms(g)[0][target.id]
    if c.status != "ok":
        return g
    units = each_axis(unit, dims)
    size = list(g.input_shape[1:])
    want = []
    for a, ((r, S, P), cur) in enumerate(zip(c.rsp, size)):
        n = None if fixed[a] is not None else _fitting_size(r, S, P, units[a], upto or cur)
        want.append(cur if n is None else n)
    if want == size:
        return g
    try:
        small = _trace_at(model, g, (channels, *want))
        t = select(small, layer, output)
        if t.spatial is None or any(m < 1 for m in t.spatial):
            return g
        u = tuple(m // 2 if v is None else v % m for v, m in zip(units, t.spatial))
        if unit is not None and any(v is not None and not -m <= v < m for v, m in zip(units, t.spatial)):
            return g
        box = _closed_box(small, t, u)
        if box is None:    # not translation-invariant at this size: ask the exact route
            reg = propagate(small, t, u, bounded=False)
            box = None if reg.global_cause is not None else reg.box
    except RFProbeError:
        return g
    if box is None or any(lo < 0 or hi >= n for (lo, hi), n in zip(box, want)):
        return g
    return small


def _closed_box(graph: Graph, target: Node, unit) -> tuple[tuple[int, int], ...] | None:
    """Per axis (first, last) input index that ``unit`` reads, from the closed form (None when
    its status is not 'ok'): unit ``u`` reads [u*S - P, u*S - P + r - 1]."""
    c = closed_forms(graph)[0][target.id]
    if c.status != "ok":
        return None
    return closed_form_box(unit, c.size, c.stride, c.padding)


def _diagnose(model: nn.Module, input_shape, dims: int, error: RFProbeError, retry: bool = True) -> RFProbeError:
    """The user's input_shape made the model raise: say which argument is wrong if we can tell
    (channels, too small), else pass the model's own error on."""
    try:
        resolve_input_shape(model, input_shape)      # the channel mismatch, if any
    except ArgumentError as bad:
        return ArgumentError(f"{bad} ({model_raised(error)})")
    if not retry:
        return error
    try:
        bigger = choose_input(model, (input_shape[0],) + (None,) * dims)
    except RFProbeError:
        return error
    return ArgumentError(f"input_shape={tuple(input_shape)!r} is too small for this model (it raised: "
                         f"{raised_text(error)}); an input of {bigger.input_shape} works. "
                         "Pass a larger input_shape, or None entries to let rfprobe choose.")
