"""rfprobe: exact receptive fields of PyTorch models, checked three ways.

>>> import rfprobe
>>> rfprobe.verify("conv3 relu conv3").size
(5, 5)
"""
from .routes.analyze import analyze
from .cost import Comparison, Cost, collapse, compare, cost
from .routes.erf import erf
from .errors import RFProbeError
from .routes.probe import probe, probe_many
from .results import ERF, Analysis, ProbeResult, Region
from .rules import register_rule
from .spec import build, parse
from .verify import Report, verify
from .render import plot

__all__ = ["build", "parse", "analyze", "probe", "probe_many", "verify", "cost", "compare", "plot", "register_rule",
           "erf", "collapse", "ERF", "Comparison",
           "Analysis", "ProbeResult", "Report", "Region", "Cost", "RFProbeError"]
__version__ = "0.1.0"
