"""Every string rfprobe shows: text tables, JSON-ready dicts, HTML for Jupyter, and plots.

>>> import rfprobe
>>> print(rfprobe.analyze(rfprobe.build("conv3 conv3/s2")))
layer  op      output        size  stride  padding
0      conv2d  (1, 1, 6, 6)  3x3   1x1     0x0
1      conv2d  (1, 1, 2, 2)  5x5   2x2     0x0
RF 5x5, stride 2x2, padding 0x0 (input (1, 8, 8), output '1')
"""
from __future__ import annotations

import html
import json
from typing import Any


def _x(t) -> str:
    return "-" if t is None else "x".join(str(v) for v in t)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _rows(a) -> list[list[str]]:
    rows = []
    for r in a.layers:
        if r.status == "ok":
            rows.append([r.name, r.op, str(r.shape), _x(r.size), _x(r.stride), _x(r.padding)])
        else:
            rows.append([r.name, r.op, str(r.shape), r.status, "", ""])
    return rows


def summary(a) -> str:
    where = f"(input {a.input_shape}, output {a.target!r})"
    if a.status == "global":
        return f"RF global: {'; '.join(a.global_causes)} {where}"
    if a.status == "varies":
        return (f"RF varies with position: size {_x(a.size_min)} to {_x(a.size)} {where}")
    return f"RF {_x(a.size)}, stride {_x(a.stride)}, padding {_x(a.padding)} {where}"


def analysis_text(a) -> str:
    body = _table(["layer", "op", "output", "size", "stride", "padding"], _rows(a))
    lines = [body, summary(a)]
    lines += [f"note: {n}" for n in a.notes]
    return "\n".join(lines)


def analysis_dict(a) -> dict:
    return {
        "status": a.status, "size": a.size, "size_min": a.size_min, "stride": a.stride,
        "padding": a.padding, "global_causes": list(a.global_causes), "notes": list(a.notes),
        "input_shape": a.input_shape, "output_shape": a.output_shape, "target": a.target,
        "layers": [{"name": r.name, "op": r.op, "shape": r.shape, "size": r.size, "stride": r.stride,
                    "padding": r.padding, "status": r.status, "why": r.why} for r in a.layers],
    }


def probe_text(e) -> str:
    trunc = " (truncated by the input border)" if e.truncated else ""
    return (f"probe of {e.target!r} unit {e.unit}: RF {_x(e.size)} box {e.box}, "
            f"coverage {e.coverage:.3g}{trunc}; input {e.input_shape}, mode {e.mode}")


def report_text(r) -> str:
    parts = [analysis_text(r.analysis), "",
             f"unit {r.probe.unit}: closed form {r.closed_box}, exact {r.exact_box}, "
             f"exact within input {r.exact_clipped_box}, probe {r.probe_box}"]
    parts += [f"diagnosis: {d}" for d in r.diagnoses]
    parts += [f"MISMATCH: {m}" for m in r.mismatches]
    verdict = "OK: all routes agree" if r.ok else "FAIL: the routes disagree"
    if r.size is not None and r.ok:
        verdict += f", RF {_x(r.size)}"
    parts.append(verdict)
    return "\n".join(parts)


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if hasattr(v, "item"):
        return v.item()
    return v


def report_dict(r) -> dict:
    return _jsonable({
        "ok": r.ok, "size": r.size, "stride": r.stride, "padding": r.padding,
        "unit": r.probe.unit, "closed_box": r.closed_box, "exact_box": r.exact_box,
        "exact_clipped_box": r.exact_clipped_box, "probe_box": r.probe_box,
        "coverage": r.probe.coverage, "truncated": r.probe.truncated,
        "mismatches": list(r.mismatches), "diagnoses": list(r.diagnoses),
        "analysis": analysis_dict(r.analysis),
    })


def to_json(d: dict) -> str:
    return json.dumps(_jsonable(d), indent=2)


def _html_table(headers, rows) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def analysis_html(a) -> str:
    colour = {"ok": "#1a7f37", "varies": "#9a6700", "global": "#cf222e"}[a.status]
    return (_html_table(["layer", "op", "output", "size", "stride", "padding"], _rows(a))
            + f'<p style="color:{colour}"><b>{html.escape(summary(a))}</b></p>')


def probe_html(e) -> str:
    return f"<p>{html.escape(probe_text(e))}</p>"


def report_html(r) -> str:
    colour = "#1a7f37" if r.ok else "#cf222e"
    verdict = "all routes agree" if r.ok else "the routes disagree"
    items = "".join(f"<li>{html.escape(d)}</li>" for d in r.diagnoses + r.mismatches)
    return (analysis_html(r.analysis) + f"<p>{html.escape(probe_text(r.probe))}</p>"
            + (f"<ul>{items}</ul>" if items else "")
            + f'<p style="color:{colour}"><b>{verdict}</b></p>')


def plot(result, path: str | None = None, ax=None, log: bool = False):
    """Plot a probe or verify result's gradient map with its boxes (matplotlib optional)."""
    try:
        import matplotlib
        if path is not None and ax is None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        from .errors import RFProbeError
        raise RFProbeError("plotting needs matplotlib: pip install 'rfprobe[plot]'") from None
    import numpy as np
    e = getattr(result, "probe", result)
    g = e.grad
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 4))
    else:
        fig = ax.figure
    if g.ndim == 1:
        ax.plot(np.log10(g + 1e-300) if log else g)
        lo, hi = e.box[0]
        ax.axvspan(lo, hi, alpha=0.15, color="tab:orange")
    else:
        img = g if g.ndim == 2 else g[g.shape[0] // 2]
        box = e.box if g.ndim == 2 else e.box[1:]
        ax.imshow(np.log10(img + 1e-300) if log else img, cmap="viridis")
        (r0, r1), (c0, c1) = box
        ax.add_patch(plt.Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False,
                                   edgecolor="tab:orange", lw=1.5))
    ax.set_title(f"RF of {e.target} unit {e.unit}: {_x(e.size)}")
    if path is not None:
        fig.savefig(path)
    return fig


def compare_text(rows) -> str:
    return _table(["stack", "RF", "params", "weights", "MACs/position"],
                  [[r.spec, _x(r.size), str(r.params), str(r.params_no_bias), str(r.macs_per_position)]
                   for r in rows])
