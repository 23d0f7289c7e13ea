"""Plain-text views: the tables and lines ``str()`` of a result shows.

Every function takes a result (read through its attributes only) and returns a string, or the
rows of a table as strings that :mod:`rfprobe.render.html` draws too.

>>> import rfprobe
>>> print(analysis_text(rfprobe.analyze("conv3 conv3/s2")))
layer  op      output        size  stride  padding
0      conv2d  (1, 1, 3, 3)  3x3   1x1     0x0
1      conv2d  (1, 1, 1, 1)  5x5   2x2     0x0
RF 5x5, stride 2x2, padding 0x0 (input (1, 5, 5), output '1')
"""
from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:                     # the result classes, for readers and type checkers only
    from ..results import ERF, Analysis, Comparison, Cost, ProbeResult, Report


def joined(t) -> str:
    """Per-axis values joined by ``x``; ``-`` for None.

    >>> joined((5, 3)), joined(None)
    ('5x3', '-')
    """
    return "-" if t is None else "x".join(str(v) for v in t)


def floats(v, digits: int = 4) -> str:
    """Per-axis floats to ``digits`` significant digits, joined by ``x``; ``-`` for None.

    >>> floats((2.0, 1.23456)), floats((0.12345,), 3), floats(None)
    ('2x1.235', '0.123', '-')
    """
    return "-" if v is None else "x".join(f"{x:.{digits}g}" for x in v)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns two spaces apart, no trailing blanks.

    >>> print(table(["a", "bb"], [["xyz", "1"]]))
    a    bb
    xyz  1
    """
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


LAYER_HEAD = ["layer", "op", "output", "size", "stride", "padding"]


def layer_rows(a: Analysis) -> list[list[str]]:
    """The per-layer table's rows (a layer without a closed form shows its status).

    >>> import rfprobe
    >>> layer_rows(rfprobe.analyze("conv3"))
    [['0', 'conv2d', '(1, 1, 1, 1)', '3x3', '1x1', '0x0']]
    """
    rows = []
    for r in a.layers:
        if r.status == "ok":
            rows.append([r.name, r.op, str(r.shape), joined(r.size), joined(r.stride), joined(r.padding)])
        else:
            rows.append([r.name, r.op, str(r.shape), r.status, "", ""])
    return rows


def layer_option(name: str, cli: bool = False) -> str:
    """How a layer is selected, in the Python API's words or the command line's (``cli``).

    >>> layer_option("layer4"), layer_option("layer4", cli=True), layer_option("up:interpolate#1", cli=True)
    ("layer='layer4'", '--layer layer4', "--layer 'up:interpolate#1'")
    """
    return f"--layer {shlex.quote(name)}" if cli else f"layer={name!r}"


def advice(a: Analysis, cli: bool = False) -> list[str]:
    """The lines that tell what to try next: for a global RF, the layer whose local RF the user
    may have wanted (``a.suggested_layer``), in the API's words or the command line's.

    >>> from types import SimpleNamespace as A
    >>> advice(A(status="global", suggested_layer="layer4"), cli=True)
    ['advice: for a local RF select an earlier output with --layer layer4 (the last module whose output has a local RF)']
    """
    if a.status != "global" or a.suggested_layer is None:
        return []
    return [f"advice: for a local RF select an earlier output with {layer_option(a.suggested_layer, cli)} "
            "(the last module whose output has a local RF)"]


def summary(a: Analysis) -> str:
    """The analysis in one line: the RF, or why there is no fixed one.

    >>> import rfprobe
    >>> summary(rfprobe.analyze("conv3"))
    "RF 3x3, stride 1x1, padding 0x0 (input (1, 3, 3), output '0')"
    """
    where = f"(input {a.input_shape}, output {a.target!r}{f' = {a.selection}' if a.selection else ''})"
    if a.status == "global":
        return f"RF global: {global_summary(a.global_causes)} {where}"
    if a.status == "varies":
        return (f"RF varies with position: size {joined(a.size_min)} to {joined(a.size)} {where}")
    return f"RF {joined(a.size)}, stride {joined(a.stride)}, padding {joined(a.padding)} {where}"


def global_summary(causes: Sequence[str]) -> str:
    """The global ops on the path in a few words: the one cause, or how many and the first
    (:func:`global_lines` lists them all).

    >>> global_summary(["'p': mean over spatial dims"])
    "'p': mean over spatial dims"
    >>> global_summary(["'p': mean over spatial dims", "'q': flatten"])
    "2 global ops on the path, the first 'p': mean over spatial dims"
    """
    if len(causes) == 1:
        return causes[0]
    return f"{len(causes)} global ops on the path, the first {causes[0]}"


def global_lines(a: Analysis) -> list[str]:
    """One line per global op on the path, where there are several (one is in the summary).

    >>> import rfprobe
    >>> global_lines(rfprobe.analyze("conv3"))
    []
    """
    if a.status != "global" or len(a.global_causes) < 2:
        return []
    return [f"global op {i}/{len(a.global_causes)}: {c}" for i, c in enumerate(a.global_causes, 1)]


def analysis_text(a: Analysis, cli: bool = False) -> str:
    """``str(analysis)``: the per-layer table, the summary line, every global op where there
    are several, the advice and the notes (module example); ``cli``: advice in the command
    line's words."""
    body = table(LAYER_HEAD, layer_rows(a))
    lines = [body, summary(a)] + global_lines(a) + advice(a, cli)
    lines += [f"note: {n}" for n in a.notes]
    return "\n".join(lines)


def coverage_text(e: ProbeResult) -> str:
    """Coverage, or why it is unknown (slab mode measures per-axis projections only).

    >>> import rfprobe
    >>> coverage_text(rfprobe.probe("conv3/d2"))
    '0.36'
    """
    if e.coverage is None:
        return "unknown (slab mode: thin inputs " + ", ".join(map(str, e.slab or ())) + "; full=True maps it)"
    return f"{e.coverage:.3g}"


def probe_text(e: ProbeResult) -> str:
    """``str(probe_result)``: one line.

    >>> import rfprobe
    >>> probe_text(rfprobe.probe("conv3"))
    "probe of '0' unit (0, 0): RF 3x3 box ((0, 2), (0, 2)), coverage 1; input (1, 3, 3), mode structural"
    """
    trunc = " (truncated by the input border)" if e.truncated else ""
    return (f"probe of {e.target!r} unit {e.unit}: RF {joined(e.size)} box {e.box}, "
            f"coverage {coverage_text(e)}{trunc}; input {e.input_shape}, mode {e.mode}")


def report_verdict(r: Report, failed: Sequence[str] = ()) -> str:
    """The report's last line: OK or FAIL, and the RF. ``failed``: what the caller expected and
    did not get (an ``--expect-*`` option, an assertion); then the line is a FAIL that says so
    first, and never "OK", even where the routes agree.

    >>> import rfprobe
    >>> report_verdict(rfprobe.verify("conv3"))
    'OK: all routes agree, RF 3x3'
    >>> report_verdict(rfprobe.verify("conv3"), ["expected size 5x5, got 3x3"])
    'FAIL: expected size 5x5, got 3x3 (the routes agree, RF 3x3)'
    """
    mask = r.probe.mask
    if r.ok and r.analysis.status == "global" and mask is not None and not mask.all():
        # the mixed tensors read part of the input (pooled keys that skip positions)
        agree = (f"all routes agree: the RF is global, {int(mask.sum())} of the {mask.size} positions of the "
                 f"{joined(r.probe.input_shape[1:])} input (box {r.exact_clipped_box})")
    elif r.ok and r.analysis.status == "global":     # no local RF: never print the input size as one
        agree = f"all routes agree: the RF is global (every position of the {joined(r.probe.input_shape[1:])} input)"
    elif r.ok:
        agree = "all routes agree" + (f", RF {joined(r.size)}" if r.size is not None else "")
    else:
        agree = "the routes disagree"
    if failed:
        return f"FAIL: {'; '.join(failed)} ({agree.replace('all routes', 'the routes')})"
    return ("OK: " if r.ok else "FAIL: ") + agree


def report_text(r: Report, failed: Sequence[str] = (), cli: bool = False) -> str:
    """``str(report)``: the analysis, the unit's box by each route, diagnoses, mismatches and
    the verdict (see :func:`report_verdict` for ``failed``); ``cli``: the analysis's advice in
    the command line's words.

    >>> import rfprobe
    >>> print(report_text(rfprobe.verify("conv3")).splitlines()[-2])
    unit (0, 0): closed form ((0, 2), (0, 2)), exact ((0, 2), (0, 2)), exact within input ((0, 2), (0, 2)), probe ((0, 2), (0, 2))
    """
    parts = [analysis_text(r.analysis, cli), "",
             f"unit {r.probe.unit}: closed form {r.closed_box}, exact {r.exact_box}, "
             f"exact within input {r.exact_clipped_box}, probe {r.probe_box}"]
    parts += [f"diagnosis: {d}" for d in r.diagnoses]
    parts += [f"MISMATCH: {m}" for m in r.mismatches]
    parts.append(report_verdict(r, failed))
    return "\n".join(parts)


def erf_rows(f: ERF) -> list[list[str]]:
    """The ERF's metrics as (metric, value) rows.

    >>> import rfprobe
    >>> erf_rows(rfprobe.ERF.from_gradient([0, 1, 2, 1, 0]))[4:6]
    [['centre of mass', '2'], ['std per axis', '0.7071']]
    """
    g = f.gaussian
    rows = [["output, unit", f"{f.target} {f.unit}"], ["inputs averaged", f"{f.n} (mean {f.statistic})"],
            ["input", str(f.input_shape)], ["theoretical RF", joined(f.theoretical)],
            ["centre of mass", floats(f.center)], ["std per axis", floats(f.std)],
            ["ratio (4 std / RF)", floats(f.ratio, 3)],
            ["gaussian fit", f"centre {floats(g.center)}, sigma {floats(g.sigma)}, r2 {g.r2:.3g}"]]
    rows += [[f"radius holding {p:.0%}", f"{f.radius(p):.4g}"] for p in (0.5, 0.95)]
    rows += [[f"area ratio t={t:g}", f"{f.area_ratio(t):.4g}"] for t in (0.2, 0.3, 0.5, 0.99)]
    return rows


def erf_text(f: ERF) -> str:
    """The ERF's metrics, one per line.

    >>> import rfprobe
    >>> print(erf_text(rfprobe.ERF.from_gradient([0, 1, 2, 1, 0])).splitlines()[1])
    metric              value
    """
    return "effective RF\n" + table(["metric", "value"], erf_rows(f))


COMPARE_HEAD = ["stack", "RF", "stride", "params", "weights", "MACs/position", "MACs"]


def comparison_rows(rows) -> list[list[str]]:
    """One table row per design of ``rfprobe.compare`` (``-`` for what is unknown).

    >>> import rfprobe
    >>> comparison_rows(rfprobe.compare("conv3"))
    [['conv3', '3x3', '1x1', '10', '9', '9', '-']]
    """
    out = []
    for r in rows:
        macs = getattr(r, "macs", None)
        out.append([r.spec, joined(r.size), joined(getattr(r, "stride", None)), str(r.params),
                    str(r.params_no_bias), str(r.macs_per_position), "-" if macs is None else str(macs)])
    return out


def comparison_text(c: Comparison) -> str:
    """The side-by-side table of ``rfprobe.compare``.

    >>> import rfprobe
    >>> print(comparison_text(rfprobe.compare("conv3")))
    stack  RF   stride  params  weights  MACs/position  MACs
    conv3  3x3  1x1     10      9        9              -
    channels 1; MACs/position: per output position of every conv, summed
    """
    lines = [table(COMPARE_HEAD, comparison_rows(c.rows))]
    if c.input_shape is not None:
        lines.append(f"channels {c.channels}; MACs for an input of {c.input_shape}")
    else:
        lines.append(f"channels {c.channels}; MACs/position: per output position of every conv, summed")
    return "\n".join(lines)


def cost_text(c: Cost) -> str:
    """``str(cost)``: parameters and MACs in one line.

    >>> import rfprobe
    >>> cost_text(rfprobe.cost("conv3"))
    '10 parameters (9 without biases), 9 MACs per output position'
    """
    macs = "" if c.macs is None else f", {c.macs} MACs for input {c.input_shape}"
    return (f"{c.params} parameters ({c.params_no_bias} without biases), "
            f"{c.macs_per_position} MACs per output position{macs}")
