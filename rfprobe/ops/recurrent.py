"""Recurrent layers over a sequence dim: ``torch.lstm``, ``torch.gru``, ``torch.rnn_tanh`` and
``torch.rnn_relu``, the ops ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` call.

Each takes ``input`` as (N, L, C) with ``batch_first``, else (L, N, C), and returns the output
sequence (the same dims, C replaced by the hidden size times the directions) and the final
states ``h_n`` (and the LSTM's ``c_n``), each (directions * layers, N, H). The rule speaks of
the dim the layer scans along and of the others, wherever a spatial axis sits:

* along the sequence dim, output ``j`` of a one-directional layer reads inputs ``0..j`` (a
  prefix, however many layers are stacked); a bidirectional layer reads the whole axis;
* along the batch dim (the rows of a map folded into the batch, as Sequencer does), each
  output reads its own index;
* along the feature dim, every output reads every input;
* the final states have no sequence dim: where a spatial axis runs along it they read all of
  it and are global; otherwise they keep the batch dim's axes in their own batch dim.

An initial state computed from the model input is read whole by each output of its batch
index. Packed sequences (``nn.utils.rnn.pack_padded_sequence``) are refused.

>>> import torch
>>> x, h0 = torch.empty(4, 6, 3), torch.empty(1, 4, 5)    # rows 0..3 folded into the batch
>>> call = Call("gru", (x, h0, [], True, 1, 0.0, False, False, True), {}, (0,), (x, h0),
...             ((-3, -2), None), (4, 6, 5), 2)
>>> layout, deps = recurrent(call)
>>> layout, deps[0].axes[0], list(deps[0].axes[1].fn(2, True))
((-3, -2), Affine(taps=(0,), stride=1, padding=0, n_in=4), [0, 1, 2])
"""
from __future__ import annotations

import torch

from ..errors import UnknownOpError
from .maps import Call, Global, InputDep, Mapped, Op, from_input, identity, whole_axis

_NAMES = ("input", "hx", "params", "has_biases", "num_layers", "dropout", "train", "bidirectional",
          "batch_first")


def _reads_prefix(j: int, bounded: bool) -> range:
    return range(j + 1)


def _packed(args: tuple, kwargs: dict) -> bool:
    """The packed form, ``lstm(data, batch_sizes, hx, params, ...)``: its second argument is an
    integer tensor of batch sizes where the padded form has the initial state."""
    sizes = kwargs.get("batch_sizes", args[1] if len(args) > 1 else None)
    return isinstance(sizes, torch.Tensor) and not sizes.is_floating_point()


def _position(call: Call, t) -> int | None:
    return next((k for k in call.data if call.tensors[k] is t), None)


def recurrent(call: Call):
    """``lstm``/``gru``/``rnn_tanh``/``rnn_relu(input, hx, params, has_biases, num_layers,
    dropout, train, bidirectional, batch_first)``: the output's layout and deps (see the
    module's docstring). ``call.index`` 0 is the output sequence, 1 and 2 the final states."""
    if _packed(call.args, call.kwargs):
        raise UnknownOpError(f"{call.name} over a packed sequence (nn.utils.rnn.pack_padded_sequence): "
                             "rfprobe follows recurrent layers over padded tensors only; pass the padded "
                             "tensor, or declare a rule for it")
    x = call.arg(0, "input")
    k = _position(call, x)
    if k is None:
        raise UnknownOpError(f"{call.name} reads the model's data only through its initial state or "
                             f"weights; rfprobe follows {call.name} of the data itself (declare a rule)")
    if x.dim() != 3:
        raise UnknownOpError(f"{call.name} of a {x.dim()}-dim input; rfprobe follows (N, L, C) or "
                             "(L, N, C) inputs, as nn.LSTM, nn.GRU and nn.RNN pass them")
    batch_first = bool(call.arg(8, "batch_first", False))
    seq, batch = (-2, -3) if batch_first else (-3, -2)
    layout = call.in_layouts[k]
    final = call.index > 0
    if final and seq in layout:
        return None, Global(f"{call.name}'s final state reads the whole sequence along a spatial axis")
    both = bool(call.arg(7, "bidirectional", False))
    maps = tuple(identity(n) if d == batch else Mapped(_reads_prefix, n) if d == seq and not both
                 else whole_axis(n) for d, n in zip(layout, call.spatial_in(k)))
    if all(d != batch and (d != seq or both) for d in layout):
        why = "bidirectional " if both and seq in layout else ""
        return None if final else layout, Global(f"{why}{call.name} reads every position of its input")
    out = tuple(-2 if d == batch else -1 for d in layout) if final else layout
    return out, [InputDep(k, maps), *_states(call, layout, batch),
                 *(d for d in from_input(call, k) if d.tensor not in _state_positions(call))]


def _state_positions(call: Call) -> set[int]:
    hx = call.arg(1, "hx")
    states = hx if isinstance(hx, (list, tuple)) else (hx,)
    return {k for k in (_position(call, h) for h in states) if k is not None}


def _states(call: Call, layout: tuple[int, ...], batch: int) -> list[InputDep]:
    """Deps on initial states computed from the model input, each (layers * directions, N, H):
    every output reads all of its batch index's state, so an axis the input holds in its batch
    dim must sit in the state's batch dim (read at its own index), and any other axis outside
    it (read whole)."""
    deps = []
    for k in sorted(_state_positions(call)):
        own = call.in_layouts[k]
        if own is None:
            deps.append(InputDep(k, Global(f"{call.name} starts from a state computed from the model "
                                           "input without spatial axes")))
            continue
        if any((d == batch) != (e == -2) for d, e in zip(layout, own)):
            raise UnknownOpError(f"{call.name}'s initial state holds a spatial axis in another dim than "
                                 f"its input does (input {layout}, state {own}); declare a rule for it")
        deps.append(InputDep(k, tuple(identity(n) if e == -2 else whole_axis(n)
                                      for e, n in zip(own, call.spatial_in(k)))))
    return deps


# ----------------------------------------------------------------------------- surrogate
def recurrent_surrogate(func, args, kwargs):
    """The structural probe's recurrent layers: a linear scan with the same dependence
    structure and no gates. The probe's positive weights saturate the gates and the state's
    tanh, which then pass no gradient back: through an LSTM it saw about the last dozen steps
    of the prefix a unit reads (tests/test_recurrent.py).
    Each layer and direction averages its input's features and runs a cumulative mean along
    the sequence (reversed for the backward direction), plus the mean of its initial states
    and of the weights; the results have the op's shapes. Packed sequences run as they are.

    >>> x = torch.ones(1, 3, 2)
    >>> fn, a, k = recurrent_surrogate(torch.gru, (x, torch.zeros(2, 1, 4), [], True, 1, 0.0, False,
    ...                                            True, True), {})
    >>> out, h_n = fn(*a, **k)
    >>> tuple(out.shape), tuple(h_n.shape), (3 * out[0, :, 0]).tolist(), (3 * out[0, :, 4]).tolist()
    ((1, 3, 8), (2, 1, 4), [1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    """
    if _packed(args, kwargs):
        return func, args, kwargs
    return _linear_scan, args, kwargs


def _linear_scan(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first=False):
    states = tuple(hx) if isinstance(hx, (list, tuple)) else (hx,)
    seq = 1 if batch_first else 0
    directions = 2 if bidirectional else 1
    weights = sum((p.mean() for p in params), input.new_zeros(()))
    start = sum(h.mean(-1) for h in states).unsqueeze(seq + 1).unsqueeze(-1)   # per layer, as a run
    length = input.shape[seq]
    inp, last, runs = input, [], []
    for layer in range(num_layers):
        runs = []
        for d in range(directions):
            p = inp.mean(-1, keepdim=True)
            run = (p.flip(seq).cumsum(seq).flip(seq) if d else p.cumsum(seq)) / length
            runs.append(run + start[layer * directions + d] + weights)
            last.append(runs[-1].select(seq, 0 if d else -1))
        inp = torch.cat(runs, -1)
    width = states[0].shape[-1]
    out = torch.cat([r.expand(*r.shape[:-1], width) for r in runs], -1)
    final = torch.stack(last)
    return (out, *(final.expand(*final.shape[:-1], h.shape[-1]).contiguous() for h in states))


RECORDS = [Op(name, layout_rule=recurrent, surrogate=recurrent_surrogate)
           for name in ("lstm", "gru", "rnn_tanh", "rnn_relu")]
