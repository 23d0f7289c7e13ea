"""HTML views for Jupyter (``_repr_html_``): the text tables as HTML tables, with the verdict
coloured green (ok), amber (varies, truncated) or red (global, mismatch).

>>> import rfprobe
>>> analysis_html(rfprobe.analyze("conv3")).endswith('<p style="color:#1a7f37;font-weight:bold">'
...     "RF 3x3, stride 1x1, padding 0x0 (input (1, 3, 3), output &#x27;0&#x27;)</p>")
True
"""
from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from .text import (COMPARE_HEAD, LAYER_HEAD, advice, comparison_rows, coverage_text, erf_rows, global_lines, joined,
                   layer_rows, probe_text, report_verdict, summary)

if TYPE_CHECKING:                     # the result classes, for readers and type checkers only
    from ..results import ERF, Analysis, Comparison, ProbeResult, Report

GREEN, AMBER, RED = "#1a7f37", "#9a6700", "#cf222e"
_CSS = ("border-collapse:collapse;font-family:monospace;font-size:12px", "padding:2px 8px;text-align:left")


def html_table(headers, rows) -> str:
    """A compact monospace table; every cell escaped.

    >>> html_table(["a"], [["<b>"]])
    '<table style="border-collapse:collapse;font-family:monospace;font-size:12px"><thead><tr><th style="padding:2px 8px;text-align:left">a</th></tr></thead><tbody><tr><td style="padding:2px 8px;text-align:left">&lt;b&gt;</td></tr></tbody></table>'
    """
    th, td = _CSS[1], _CSS[1]
    head = "".join(f'<th style="{th}">{escape(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f'<td style="{td}">{escape(str(c))}</td>' for c in r) + "</tr>"
                   for r in rows)
    return f'<table style="{_CSS[0]}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def verdict_html(text: str, colour: str) -> str:
    """A bold line in ``colour``.

    >>> verdict_html("OK", GREEN)
    '<p style="color:#1a7f37;font-weight:bold">OK</p>'
    """
    return f'<p style="color:{colour};font-weight:bold">{escape(text)}</p>'


def analysis_html(a: Analysis) -> str:
    """The per-layer table and the summary line, coloured by status (ok, varies, global), with the
    advice and the notes."""
    colour = {"ok": GREEN, "varies": AMBER, "global": RED}.get(a.status, AMBER)
    notes = "".join(f"<li>{escape(n)}</li>" for n in global_lines(a) + advice(a) + list(a.notes))
    return (html_table(LAYER_HEAD, layer_rows(a))
            + (f"<ul>{notes}</ul>" if notes else "") + verdict_html(summary(a), colour))


def _probe_rows(e: ProbeResult) -> list[list[str]]:
    return [["output", e.target], ["unit", str(e.unit)], ["RF size", joined(e.size)], ["box", str(e.box)],
            ["coverage", coverage_text(e)], ["truncated", "yes" if e.truncated else "no"],
            ["input", str(e.input_shape)], ["mode", e.mode]]


def probe_html(e: ProbeResult) -> str:
    """The probe's numbers as a table; amber when the RF is truncated by the input border.

    >>> import rfprobe
    >>> "#9a6700" in probe_html(rfprobe.probe("conv3/p1", unit=(0, 0), input_shape=(1, 4, 4)))
    True
    """
    colour = AMBER if e.truncated else GREEN
    return html_table(["probe", "value"], _probe_rows(e)) + verdict_html(probe_text(e), colour)


def report_html(r: Report) -> str:
    """Per-layer table, the unit's box by each route, diagnoses and the coloured verdict.

    >>> import rfprobe
    >>> report_html(rfprobe.verify("conv3")).endswith(verdict_html("OK: all routes agree, RF 3x3", GREEN))
    True
    """
    routes = [["closed form (hull)", str(r.closed_box)], ["exact propagation", str(r.exact_box)],
              ["exact within input", str(r.exact_clipped_box)], ["gradient probe", str(r.probe_box)]]
    items = "".join(f"<li>diagnosis: {escape(d)}</li>" for d in r.diagnoses)
    items += "".join(f'<li style="color:{RED}">MISMATCH: {escape(m)}</li>' for m in r.mismatches)
    return (analysis_html(r.analysis)
            + f"<p>unit {escape(str(r.probe.unit))} of {escape(r.probe.target)}:</p>"
            + html_table(["route", "box (first, last) per axis"], routes)
            + (f"<ul>{items}</ul>" if items else "")
            + verdict_html(report_verdict(r), GREEN if r.ok else RED))


def erf_html(f: ERF) -> str:
    """The ERF's metrics as an HTML table.

    >>> import rfprobe
    >>> "<td style=\\"padding:2px 8px;text-align:left\\">centre of mass</td>" in erf_html(
    ...     rfprobe.ERF.from_gradient([0, 1, 2, 1, 0]))
    True
    """
    return html_table(["effective RF", "value"], erf_rows(f))


def comparison_html(c: Comparison) -> str:
    """The table of ``rfprobe.compare`` in HTML.

    >>> import rfprobe
    >>> comparison_html(rfprobe.compare("conv3")).count("<tr>")
    2
    """
    return html_table(COMPARE_HEAD, comparison_rows(c.rows))
