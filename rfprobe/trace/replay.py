"""Replaying a recorded trace at another input size without running the model's code again.

>>> import torch.nn as nn
>>> from rfprobe.trace import trace
>>> g = trace(nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU()), (1, 8, 8), record=True)
>>> replay(g, (1, 12, 12)).nodes[-1].shape
(1, 1, 10, 10)
"""
from __future__ import annotations

import torch
from torch.utils._pytree import tree_flatten

from .diagnose import name_global_causes
from .graph import Graph, name_outputs
from .tracer import EXACT, RECORDINGS, Tracer


def replay(graph: Graph, input_shape: tuple[int, ...]) -> Graph | None:
    """The graph ``trace`` would give at ``input_shape``, from the ops ``graph``'s trace
    recorded, without running the model's code again; None when that cannot be vouched for.

    A model whose own code never read a spatial size (``x.shape``, ``x.size(-1)``...) and never
    read a value (no real-valued fallback) makes the same calls with the same arguments at any
    input size: only the tensors differ. So each recorded op runs again on the new tensors,
    through the same tracer code (results, rules, names): what changes with the size (output
    shapes, the maps' extents, a size-1 axis broadcasting or not) is recomputed, nothing is
    copied. Any difference in what an op returns (another number of outputs), any error, or
    a different node sequence gives None, and the caller traces the model for real.
    """
    recording = RECORDINGS.get(graph)
    if recording is None:
        return None
    old, x_old = recording
    # recording, so the result can be replayed in turn; private_args: swap() below builds new
    # lists, tuples and dicts
    tracer = Tracer(graph.dims, EXACT, meta=True, record=True, private_args=True, module_types=old.module_types)
    x = torch.empty((1, *input_shape), device="meta", dtype=x_old.dtype)
    new = {id(x_old): x}

    def swap(v):
        if isinstance(v, torch.Tensor):
            return new.get(id(v), v)
        if type(v) is list or type(v) is tuple:
            return type(v)(swap(a) for a in v)
        if type(v) is dict:
            return {k: swap(a) for k, a in v.items()}
        return v

    try:
        tracer.add("input", (), None, x, tuple(range(-graph.dims, 0)))
        with torch.random.fork_rng(devices=[]):
            for func, name, args, kwargs, module, out in old.calls:
                got = tracer.call_in(module, func, swap(args), swap(kwargs))
                before = [out] if isinstance(out, torch.Tensor) else tree_flatten(out)[0]
                after = [got] if isinstance(got, torch.Tensor) else tree_flatten(got)[0]
                if len(before) != len(after):
                    return None
                for a, b in zip(before, after):
                    if isinstance(a, torch.Tensor) != isinstance(b, torch.Tensor):
                        return None
                    if isinstance(a, torch.Tensor):
                        new[id(a)] = b
    except Exception:     # the model would raise at this size, or behave otherwise: trace it
        return None
    name_outputs(tracer.nodes, graph.module_outputs, old.module_types)
    if [(n.name, n.op, n.inputs) for n in tracer.nodes] != [(n.name, n.op, n.inputs) for n in graph.nodes]:
        return None
    for mine, theirs in zip(tracer.nodes, graph.nodes):
        mine.site = theirs.site     # the user's call site, which the replay does not run
    name_global_causes(tracer.nodes, tracer.module_types)
    result = Graph(tracer.nodes, graph.dims, tuple(input_shape), graph.outputs, graph.module_outputs,
                   list(graph.notes), dict(graph.module_types), module_containers=graph.module_containers)
    RECORDINGS.put(result, (tracer, x))
    return result
