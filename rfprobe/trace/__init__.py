"""Tracing a model into a graph: the data (:mod:`.graph`), the tracing mode and its policy
(:mod:`.tracer`), private copies (:mod:`.model_copy`), replays at another size (:mod:`.replay`) and
the pass that names global causes (:mod:`.diagnose`).

>>> import torch.nn as nn
>>> g = trace(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), (1, 8, 8))
>>> [n.op for n in g.nodes], select(g).name
(['input', 'conv2d', 'relu'], '1')
"""
from .closures import stranded_hooks
from .model_copy import infer_channels, infer_dims, input_dtype, one_meta_copy, parameter_dtype, private_copy
from .graph import Graph, Node, PerGraph, Unknown, ancestors, axes_lost_at, own_global, select, unknown_ancestor
from .replay import replay
from .tracer import EXACT, RECORDINGS, Policy, Tracer, depends_on_input, run, trace

__all__ = ["Graph", "Node", "PerGraph", "RECORDINGS", "Unknown", "ancestors", "own_global", "axes_lost_at", "select", "unknown_ancestor", "trace", "replay", "run", "depends_on_input",
           "Tracer", "Policy", "EXACT", "private_copy", "one_meta_copy", "infer_dims", "infer_channels",
           "input_dtype", "parameter_dtype", "stranded_hooks"]
