"""Everything rfprobe shows, apart from the results it shows: text tables (``text``), HTML
for Jupyter (``html``), JSON-ready dicts (``data``), plots (``plot``) and every sentence of
notes, diagnoses and errors (``messages``).

Each view is an ordinary function that reads a result's attributes (``text.analysis_text(a)``);
the result classes in :mod:`rfprobe.results` call them from ``__str__``, ``_repr_html_``,
``to_dict`` and ``plot``. Nothing here imports the results, the routes, verify or the tracer
at run time, so the dependency runs one way: routes -> results -> render.

The names other modules call (``render.hooks_note(...)``, ``render.to_json``,
``render.plot``) are re-exported here. ``render.plot`` is the function: it shadows the
submodule's name in this namespace; import the module's other names with
``from rfprobe.render.plot import ...``.

>>> import rfprobe
>>> print(rfprobe.analyze(rfprobe.build("conv3 conv3/s2")))
layer  op      output        size  stride  padding
0      conv2d  (1, 1, 3, 3)  3x3   1x1     0x0
1      conv2d  (1, 1, 1, 1)  5x5   2x2     0x0
RF 5x5, stride 2x2, padding 0x0 (input (1, 5, 5), output '1')
"""
from __future__ import annotations

from . import data, html, messages, text
from .data import analysis_dict, erf_dict, jsonable, probe_dict, report_dict, to_json
from .html import analysis_html, comparison_html, erf_html, probe_html, report_html
from .messages import (CLI_ARG_HELP, CLI_DESCRIPTION, CLI_HELP, assertion_differs, assertion_disagree, axes_order_note,
                       assertion_global, bad_ints, cli_error, cli_message, cli_version, copy_failed, collapse_refusal,
                       closed_too_small, rule_skips,
                       compare_text,
                       demo_text, expectation_count, expectation_failed, module_not_found, module_raised,
                       no_attribute, no_rule, not_a_model, usage_error, user_rule_raised, fallback_note,
                       global_coupling, layer_advice, no_spatial_output,
                       gradient_stops, holes, hooks_note, hull, internal_backward, internal_error, possible_causes, probe_saw_local,
                       progress_line, routes_differ, selection, trace_memory, truncated, untraced_property, values_through_python,
                       lost_view, user_rules_suspect, values_note, varies,
                       not_trailing, rule_refused, write_through_view)
from .text import (analysis_text, comparison_text, cost_text, erf_text, probe_text, report_text,
                   report_verdict, summary)
from .plot import plot      # the function (see above); last, so nothing rebinds the name

__all__ = [
    "data", "html", "messages", "text", "plot",
    "analysis_text", "probe_text", "report_text", "report_verdict", "summary", "erf_text",
    "comparison_text", "cost_text",
    "analysis_html", "probe_html", "report_html", "erf_html", "comparison_html",
    "analysis_dict", "probe_dict", "report_dict", "erf_dict", "jsonable", "to_json",
    "CLI_ARG_HELP", "CLI_DESCRIPTION", "CLI_HELP", "assertion_differs", "assertion_disagree", "assertion_global",
    "bad_ints", "cli_error", "cli_message", "cli_version", "collapse_refusal", "compare_text", "demo_text",
    "expectation_count", "expectation_failed", "module_not_found", "module_raised", "no_attribute", "no_rule",
    "not_a_model", "usage_error", "fallback_note", "global_coupling", "layer_advice",
    "no_spatial_output", "gradient_stops", "holes",
    "hooks_note", "hull", "internal_backward", "internal_error", "copy_failed", "user_rule_raised",
    "possible_causes", "probe_saw_local", "progress_line", "routes_differ",
    "trace_memory", "truncated", "user_rules_suspect", "values_note", "varies",
    "selection", "untraced_property", "values_through_python", "lost_view", "closed_too_small", "rule_skips",
]
