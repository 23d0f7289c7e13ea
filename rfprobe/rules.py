"""The types a custom receptive-field rule uses, and :func:`register_rule`: an alias of
:mod:`rfprobe.ops`, where every op's rule and the rest of its knowledge live.

>>> def causal(call):      # output j of the last axis reads 0..j (a cumulative sum)
...     k = call.data[0]
...     h, w = call.spatial_in(k)
...     return [InputDep(k, (identity(h), Mapped(lambda j, bounded: range(j + 1), w)))]
>>> register_rule("my_cumsum", causal)
>>> from rfprobe.ops import OPS
>>> OPS["my_cumsum"].rule is causal
True
>>> unregister_rule("my_cumsum")
"""
from .ops import (Affine, AxisMap, Broadcast, Call, Global, InputDep, Mapped, Rule, channel_only, elementwise,
                  global_rule, identity, register_rule, registered_rule, unregister_rule, whole_axis)

__all__ = ["Affine", "AxisMap", "Broadcast", "Call", "Global", "InputDep", "Mapped", "Rule", "channel_only",
           "elementwise", "global_rule", "identity", "register_rule", "registered_rule", "unregister_rule",
           "whole_axis"]
