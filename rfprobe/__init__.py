"""rfprobe: exact receptive fields of PyTorch models, checked three ways.

>>> import rfprobe
>>> rfprobe.verify("conv3 relu conv3").size
(5, 5)
"""
from .cost import Comparison, Cost, collapse, compare, cost
from .errors import (ArgumentError, GlobalOpError, InternalError, ModelError, ResourceError, RFProbeError, SpecError,
                     UnknownOpError)
from .ops import Affine, Broadcast, Call, Global, InputDep, Mapped, identity, whole_axis
from .render import plot
from .results import ERF, Analysis, ProbeResult, Region
from .routes.analyze import analyze
from .routes.erf import erf
from .routes.probe import probe, probe_many
from .rules import register_rule, registered_rule, unregister_rule
from .spec import build, parse
from .verify import Report, verify

__all__ = ["build", "parse", "analyze", "probe", "probe_many", "verify", "cost", "compare", "plot", "register_rule",
           "unregister_rule", "registered_rule",
           "erf", "collapse", "ERF", "Comparison",
           "Analysis", "ProbeResult", "Report", "Region", "Cost", "RFProbeError",
           # the error classes, each an RFProbeError
           "SpecError", "ArgumentError", "ModelError", "UnknownOpError", "GlobalOpError", "ResourceError",
           "InternalError",
           # what a custom rule receives and returns (see rfprobe.register_rule)
           "Call", "InputDep", "Affine", "Mapped", "Broadcast", "Global", "identity", "whole_axis"]
__version__ = "0.2.0"
