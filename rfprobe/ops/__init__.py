"""Everything rfprobe knows about each op, one record per op name, grouped by family.

An op's record (:class:`Op`) holds its receptive-field rule, its layout role, its answer on
meta tensors, the structural probe's surrogate, whether gradients pass it and how it is named
when it mixes positions. The tracer, the shape answers, the probe and verify read the records;
nothing else keeps a list of op names. The families:

* :mod:`rfprobe.ops.window`: convolutions, pooling, transposed convolutions, unpooling;
* :mod:`rfprobe.ops.pointwise`: activations, arithmetic, dropout, casts, masks, constants;
* :mod:`rfprobe.ops.resample`: interpolation, pixel (un)shuffle, padding, flips, rolls;
* :mod:`rfprobe.ops.layout`: reshapes, permutes, pieces, indexing, cat, shape queries;
* :mod:`rfprobe.ops.reduce`: reductions, norms, softmax, Linear, attention, einsum;
* :mod:`rfprobe.ops.scan`: running ops along an axis (cumsum, cumprod, cummax, cummin, diff);
* :mod:`rfprobe.ops.recurrent`: recurrent layers along a sequence dim (nn.LSTM, nn.GRU, nn.RNN);
* :mod:`rfprobe.ops.spectral`: complex parts and views, conjugates, the ``torch.fft`` family.

Adding an op is one record in its family's ``RECORDS`` (and one test); a user declares one
with :func:`register_rule`.

>>> OPS["conv2d"].rule is window.conv, OPS["conv2d"].fixed_layout
(True, True)
>>> OPS["argmax"].gradient, OPS["size"].kind
(False, 'query')
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator

import torch

from ..errors import ArgumentError, UnknownOpError, did_you_mean
from . import layout, pointwise, recurrent, reduce, resample, scan, spectral, window
from .maps import (INDEX, LAYOUT, QUERY, REDUCTION, VALUE, WRITE, Affine, AxisMap, Broadcast, Call, Global,
                   InputDep, LayoutRule, Mapped, Op, Rule, ValuesNeeded, global_rule, identity, per_axis,
                   whole_axis)
from .pointwise import channel_only, elementwise
from .layout import setitem, setitem_pieces
from .reduce import reduced_layout

__all__ = ["OPS", "Op", "Rule", "LayoutRule", "Call", "InputDep", "Global", "Affine", "Mapped", "Broadcast",
           "AxisMap", "ValuesNeeded", "identity", "whole_axis", "per_axis", "global_rule", "elementwise", "channel_only",
           "register_rule", "unregister_rule", "registered_rule", "removed_records", "user_rules", "meta_result", "gradient_stops", "setitem", "setitem_pieces", "reduced_layout",
           "VALUE", "LAYOUT", "INDEX", "WRITE", "REDUCTION", "QUERY"]

FAMILIES = (window, pointwise, resample, layout, reduce, scan, recurrent, spectral)


def _collect() -> dict[str, Op]:
    table: dict[str, Op] = {}
    for family in FAMILIES:
        for op in family.RECORDS:
            if op.name in table:
                raise RuntimeError(f"op {op.name!r} has two records ({family.__name__} and another family)")
            table[op.name] = op
    return table


# name -> record: the one table; a traced call finds its op with one lookup
OPS: dict[str, Op] = _collect()
_BUILT_IN: dict[str, Op] = dict(OPS)     # the records as shipped, to restore after a user's rule


def register_rule(name: str, rule: Rule | str, *, override: bool = False) -> None:
    """Declare a rule for an op rfprobe does not know, by the name its unknown-op error shows.

    ``rule`` is a function ``Call -> list[InputDep] | Global`` (see :class:`Call`,
    :class:`InputDep`, :class:`Affine`, :class:`Mapped`, :class:`Broadcast`, :class:`Global`,
    all exported by ``rfprobe``) or one of the words ``"pointwise"`` (each output position
    reads only its own input position), ``"channel"`` (moves channels only) or ``"global"``
    (every position reads every position: always safe, never exact). Replacing one of
    rfprobe's own rules needs ``override=True``; :func:`unregister_rule` undoes it, and
    :func:`registered_rule` registers for one block only. The op's other knowledge (its meta
    answer, surrogate...) is kept where it has a record.

    >>> register_rule("my_gate", "pointwise")
    >>> OPS["my_gate"].rule is elementwise, "my_gate" in user_rules()
    (True, True)
    >>> unregister_rule("my_gate")
    >>> "my_gate" in OPS
    False
    >>> register_rule("conv2d", "global")
    Traceback (most recent call last):
    ...
    rfprobe.errors.ArgumentError: register_rule('conv2d', ...) would replace rfprobe's own rule for 'conv2d'; pass override=True if you mean it (rfprobe.unregister_rule('conv2d') puts it back)
    """
    rule = _as_rule(rule)
    if not isinstance(name, str) or not name:
        raise ArgumentError(f"register_rule: name={name!r} must be the op's name as the unknown-op error "
                            "shows it, e.g. 'my_op'")
    builtin = _BUILT_IN.get(name)
    if builtin is not None and (builtin.rule is not None or builtin.layout_rule is not None) and not override:
        raise ArgumentError(f"register_rule({name!r}, ...) would replace rfprobe's own rule for {name!r}; "
                            f"pass override=True if you mean it (rfprobe.unregister_rule({name!r}) puts it back)")
    old = OPS.get(name)
    # a record keeps its other knowledge; layout ops and queries keep their role (the rule
    # of an op whose output moves dims comes from that role)
    OPS[name] = Op(name, rule) if old is None else dataclasses.replace(old, rule=rule)


def _as_rule(rule: Rule | str) -> Rule:
    if isinstance(rule, str):
        words = {"pointwise": elementwise, "channel": channel_only,
                 "global": global_rule("{name} (declared global)")}
        if rule not in words:
            raise UnknownOpError(f"register_rule: rule {rule!r} is not one of {sorted(words)}; "
                                 "or pass a function Call -> list[InputDep] | Global")
        return words[rule]
    if not callable(rule):
        raise UnknownOpError(f"register_rule: rule must be callable or a word, not {rule!r}")
    return rule


def unregister_rule(name: str) -> None:
    """Remove a rule :func:`register_rule` declared: rfprobe's own record comes back where
    there was one, else the op is unknown again.

    >>> register_rule("my_gate", "global"); unregister_rule("my_gate"); "my_gate" in OPS
    False
    """
    if name not in user_rules():
        raise ArgumentError(f"unregister_rule({name!r}): no rule was registered for {name!r}"
                            + did_you_mean(name, sorted(user_rules())))
    if name in _BUILT_IN:
        OPS[name] = _BUILT_IN[name]
    else:
        del OPS[name]


@contextlib.contextmanager
def registered_rule(name: str, rule: Rule | str, *, override: bool = False) -> Iterator[None]:
    """:func:`register_rule` for the block only; whatever was there before comes back after.

    >>> with registered_rule("my_gate", "global"):
    ...     "my_gate" in OPS
    True
    >>> "my_gate" in OPS
    False
    """
    before = OPS.get(name)
    register_rule(name, rule, override=override)
    try:
        yield
    finally:
        if before is None:
            OPS.pop(name, None)
        else:
            OPS[name] = before


@contextlib.contextmanager
def removed_records(*names: str) -> Iterator[None]:
    """The block runs as if rfprobe had no record for ``names``: ops it does not know, for tests
    of what happens then to a real op (a test that needs just some op without a record calls
    the tests' own, ``rfprobe_test_op`` in tests/models.py, which never gets one). A name
    without a record is already unknown. The records come back after, also after an exception.

    >>> with removed_records("fft_fft2"):
    ...     "fft_fft2" in OPS
    False
    >>> "fft_fft2" in OPS
    True
    """
    before = {n: OPS.pop(n) for n in names if n in OPS}
    shipped = {n: _BUILT_IN.pop(n) for n in names if n in _BUILT_IN}   # so a rule for it needs no override
    try:
        yield
    finally:
        for n in names:
            OPS.pop(n, None)        # a rule registered in the block goes with it
        OPS.update(before)
        _BUILT_IN.update(shipped)


def user_rules() -> frozenset[str]:
    """The op names whose rule a user declared (not rfprobe's own): verify names them when
    the routes disagree.

    >>> "conv2d" in user_rules()
    False
    """
    return frozenset(name for name, op in OPS.items() if _BUILT_IN.get(name) is not op)


_autocast = torch._C._is_any_autocast_enabled


def meta_result(name: str, args: tuple, kwargs: dict) -> Any | None:
    """The result torch would return for op ``name`` (the ``__name__`` a TorchFunctionMode
    sees) called with ``args``/``kwargs`` on meta tensors, built without running its meta
    kernel (the op's record names the answer, :mod:`rfprobe.ops.meta`); None when unsure, so
    the caller runs the op and torch raises its own errors.

    A new tensor has torch's shape, dtype, contiguity and autograd state (a non-leaf that
    requires grad when autograd would record the op); an in-place op returns ``args[0]``.

    >>> x = torch.empty(2, 8, 5, 5, device="meta")
    >>> meta_result("max_pool2d", (x, 3), {"stride": 2, "ceil_mode": True}).shape   # ceil(2/2)+1 = 2
    torch.Size([2, 8, 2, 2])
    >>> meta_result("cat", ([x, x],), {"dim": 1}).shape
    torch.Size([2, 16, 5, 5])
    >>> meta_result("add", (x, torch.empty(3, 1, 1, device="meta")), {}) is None   # 8 vs 3: torch raises
    True
    >>> meta_result("frobnicate", (x,), {}) is None             # no record
    True
    """
    op = OPS.get(name)
    return None if op is None else answer(op, args, kwargs)


def answer(op: Op, args: tuple, kwargs: dict) -> Any | None:
    """:func:`meta_result` for a record already looked up (the tracer's path)."""
    f = op.meta
    if f is None or _autocast():
        return None   # autocast changes dtypes (it leaves meta alone today: not relied on)
    try:
        return f(args, kwargs)
    except Exception:   # an argument of a type no check foresaw: torch decides
        return None


def gradient_stops() -> frozenset[str]:
    """Ops whose result passes values on but no gradient (a detach, a comparison's mask,
    argmax's indices): the exact route follows them, the probe stops there.

    >>> {"detach", "gt", "argmax"} <= gradient_stops(), "masked_fill" in gradient_stops()
    (True, False)
    """
    return frozenset(name for name, op in OPS.items() if not op.gradient)
