"""Every sentence rfprobe builds for notes, diagnoses and errors, the command line's texts and
the progress bar: one function per sentence, so the wording lives in one place (docs and
tests pin it).

>>> holes(0.25)
'holes: only 0.25 of the box is in the RF (dilation or stride gridding)'
"""
from __future__ import annotations

from ..hints import Status
from .text import global_summary, joined, layer_option, table


# ----------------------------------------------------------------------------- graph notes, limits
def fallback_note(error_type: str, error: str) -> str:
    """The note a graph carries when the model had to be traced with real values.

    >>> fallback_note("RuntimeError", "no meta")[:72]
    'traced on the CPU with real values, because on meta tensors the model ra'
    """
    return (f"traced on the CPU with real values, because on meta tensors the model raised "
            f"{error_type}: {error[:160]}. The model reads tensor values (data-dependent control "
            "flow): the graph is the path this random input took; other inputs may take other "
            "branches, whose ops rfprobe has not seen")


def values_note(why: str) -> str:
    """The note a graph carries when an op's rule needed the values of a constant argument,
    which rfprobe's meta copy does not hold.

    >>> values_note("index_select's index is on the meta device")[:62]
    'traced on the CPU with real values: an op needs the values of '
    """
    return (f"traced on the CPU with real values: an op needs the values of a constant it reads ({why}), "
            "which rfprobe's copy on the meta device does not hold")


def axes_order_note(layout: tuple[int, ...], rank: int) -> str:
    """The note an analysis carries when its output holds the input's spatial axes in another
    order than the input's: a unit is given in the input's order, not the output's dims'.

    >>> axes_order_note((-1, -2), 4)
    "the output holds the input's spatial axes in other dims: axis 0 in dim 3, axis 1 in dim 2; a unit is one index per input axis, in the input's order (unit (i, j) is the output's element at dim 3 = i, dim 2 = j)"
    """
    at = ", ".join(f"axis {a} in dim {d + rank}" for a, d in enumerate(layout))
    names = "ijklm"[:len(layout)]
    where = ", ".join(f"dim {d + rank} = {n}" for n, d in zip(names, layout))
    return (f"the output holds the input's spatial axes in other dims: {at}; a unit is one index per input "
            f"axis, in the input's order (unit ({', '.join(names)}) is the output's element at {where})")


def hooks_note(where: list[str]) -> str:
    """The note a graph carries when the user's model has backward hooks, which rfprobe's
    private copies run without (forward hooks run).

    >>> hooks_note(["a", "b", "c", "d", "e"])[:46]
    'backward hooks on a, b, c, d and 1 more are no'
    """
    shown = ", ".join(where[:4]) + (f" and {len(where) - 4} more" if len(where) > 4 else "")
    return (f"backward hooks on {shown} are not run: the gradient probe and erf run a private copy "
            "without backward hooks, which could change the gradient they measure (forward hooks "
            "run, as in a plain forward)")


def trace_memory(spent: int, budget: int, input_shape: tuple[int, ...]) -> str:
    """Why a trace with real values was stopped.

    >>> trace_memory(3 * 2 ** 30, 2 ** 29, (3, 64, 64))[:120]
    'tracing the model with real values on an input of shape (3, 64, 64) (it cannot run on meta tensors) kept 3.00 GiB, above'
    """
    return (f"tracing the model with real values on an input of shape {input_shape} (it cannot run on "
            f"meta tensors) kept {_bytes(spent)}, above half the free memory ({_bytes(budget)}), so "
            "rfprobe stopped it. Pass a smaller input_shape=(C, H, W) that the model accepts")


def _bytes(n: float) -> str:
    return f"{n / 2 ** 30:.2f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.1f} MiB"


# ----------------------------------------------------------------------------- verify's findings
def global_coupling(cause: str) -> str:
    """An op that couples every position.

    >>> global_coupling("'1': adaptive_avg_pool2d to 1x1")
    "global coupling: '1': adaptive_avg_pool2d to 1x1"
    """
    return f"global coupling: {cause}"


def not_aligned(node: str, axis: int, paths) -> str:
    """Paths joined at ``node`` (an add, a concat) that share neither their centre nor their last
    index on ``axis``; ``paths``: (name, first, last) of each path's box for unit 0 (unbounded).

    >>> not_aligned("add#1", 0, [("c", 0, 1), ("crop", 0, 0)])
    "add#1: paths are not aligned on axis 0: unit 0 reads 0..1 through c (centre 0.5), 0..0 through crop (centre 0); they share neither their centre (as 'same' padding aligns paths) nor their last index (as causal padding does)"
    """
    detail = ", ".join(f"{first}..{last} through {name} (centre {(first + last) / 2:g})" for name, first, last in paths)
    return (f"{node}: paths are not aligned on axis {axis}: unit 0 reads {detail}; they share neither their "
            "centre (as 'same' padding aligns paths) nor their last index (as causal padding does)")


def strides_differ(node: str, axis: int, paths) -> str:
    """Paths joined at ``node`` with different effective strides on ``axis``: no closed form;
    ``paths``: (name, stride) of each.

    >>> strides_differ("add#2", 1, [("a", 2), ("b", 4)])
    'add#2: paths are not aligned: strides 2 (a) vs 4 (b) on axis 1'
    """
    detail = " vs ".join(f"{stride} ({name})" for name, stride in paths)
    return f"{node}: paths are not aligned: strides {detail} on axis {axis}"


def hull(closed_box, exact_box) -> str:
    """The closed form's box is larger than the exact set's.

    >>> hull(((0, 4),), ((1, 4),))[:60]
    'closed-form box ((0, 4),) is the hull; the exact set spans ('
    """
    return (f"closed-form box {closed_box} is the hull; the exact set spans {exact_box}: "
            "a strided dilated kernel or a pad/crop leaves the formula's edge indices unread")


def closed_too_small(closed_box, exact_box) -> str:
    """The exact set reaches outside the closed form's box: the closed form is wrong there.

    >>> closed_too_small(((0, 4),), ((0, 6),))
    'closed-form box ((0, 4),) does not hold the exact box ((0, 6),): the closed form is wrong for this unit (please report it)'
    """
    return (f"closed-form box {closed_box} does not hold the exact box {exact_box}: the closed form is wrong "
            "for this unit (please report it)")


def varies(size_min, size) -> str:
    """The RF's size changes with the unit's position.

    >>> varies((2,), (3,))
    'the RF varies with position: sizes (2,) to (3,) per axis (the closed form needs a fixed stride and offset)'
    """
    return (f"the RF varies with position: sizes {size_min} to {size} "
            "per axis (the closed form needs a fixed stride and offset)")


def holes(coverage: float) -> str:
    """The box has positions outside the RF.

    >>> holes(0.5)
    'holes: only 0.5 of the box is in the RF (dilation or stride gridding)'
    """
    return f"holes: only {coverage:.3g} of the box is in the RF (dilation or stride gridding)"


def routes_differ(extra: int, missing: int, axis: int | None = None) -> str:
    """How the exact set and the probe's differ (per axis in slab mode).

    >>> routes_differ(2, 0)
    'exact propagation and gradient probe differ: the probe has 2 positions the exact route lacks and misses 0'
    """
    if axis is None:
        return (f"exact propagation and gradient probe differ: the probe has {extra} "
                f"positions the exact route lacks and misses {missing}")
    return (f"exact propagation and gradient probe differ on axis {axis} (slab mode): the "
            f"probe has {extra} indices the exact route lacks and misses {missing}")


def truncated(exact_box, spatial) -> str:
    """The unit's RF reaches past the input's border.

    >>> truncated(((-1, 3),), (4,))
    "border truncation: the unit's RF ((-1, 3),) does not fit in the input (4,); the probed box is clipped"
    """
    return (f"border truncation: the unit's RF {exact_box} does not fit in the input "
            f"{spatial}; the probed box is clipped")


def probe_saw_local() -> str:
    """The analysis says global, the probe saw a local RF.

    >>> probe_saw_local()[:40]
    'the analytic route says global but the p'
    """
    return ("the analytic route says global but the probe saw a local RF: the global op "
            "may not reach the probed output")


def gradient_stops(stops) -> str:
    """``stops``: the nodes (a detach, a bool mask, argmax) the gradient cannot pass, first ones first.

    >>> from types import SimpleNamespace as N
    >>> gradient_stops([N(name="3", op="detach")])[:40]
    "the path through '3' (detach) carries va"
    """
    names = ", ".join(f"{n.name!r} ({n.op})" for n in stops[:3]) + (
        f" and {len(stops) - 3} more" if len(stops) > 3 else "")
    return (f"the path through {names} carries values but no gradient (a detach, a bool mask "
            "from a comparison, or argmax indices): the unit does depend on the positions behind it (the "
            "exact route follows the values); the gradient probe cannot see past it")


def internal_error(name: str, site: str, module: str, error: BaseException) -> str:
    """rfprobe's own code failed on an op the model ran: whose fault it is, and what to do.

    >>> internal_error("expand_as", "net.py:8", "gate", TypeError("boom"))[:80]
    "rfprobe failed on op 'expand_as' at net.py:8 (module 'gate'): TypeError: boom. T"
    """
    return _rfprobe_failed(f"on op {name!r} at {site} (module {module or '<model>'!r})", error,
                           "rfprobe's own code raised while following the op", "this message and the op's line")


def internal_backward(during: str, error: BaseException) -> str:
    """rfprobe's own code failed in the backward pass (the probe's positive surrogate gradients).

    >>> internal_backward("the probe", KeyError("k"))[:63]
    "rfprobe failed in the backward pass of the probe: KeyError: 'k'"
    """
    return _rfprobe_failed(f"in the backward pass of {during}", error, "rfprobe's own backward code raised",
                           "this message")


def _rfprobe_failed(where: str, error: BaseException, what: str, report: str) -> str:
    return (f"rfprobe failed {where}: {type(error).__name__}: {error}. This is a limitation of rfprobe, "
            f"not a fault of your model ({what}): please report it with {report}; rfprobe's traceback "
            "is chained (error.__cause__)")


def user_rule_raised(name: str, site: str, module: str, error: BaseException) -> str:
    """The rule a user registered for an op raised: theirs to fix (it is chained).

    >>> user_rule_raised("cumsum", "net.py:8", "", ZeroDivisionError("division by zero"))[:72]
    "the rule registered for op 'cumsum' (rfprobe.register_rule) raised ZeroD"
    """
    return (f"the rule registered for op {name!r} (rfprobe.register_rule) raised {type(error).__name__}: "
            f"{error}, on the op at {site} (module {module or '<model>'!r}). Fix the rule (its exception is "
            "chained); it receives an rfprobe.Call and returns InputDeps or a Global")


def copy_failed(error: BaseException) -> str:
    """The model could not be copied (rfprobe never runs the user's own object).

    >>> copy_failed(RuntimeError("no copies"))[:63]
    'rfprobe could not make its private copy of the model (as copy.d'
    """
    return (f"rfprobe could not make its private copy of the model (as copy.deepcopy makes one; rfprobe "
            f"never runs your own object): {type(error).__name__}: {str(error)[:160]}. Make the model "
            "copyable (its __deepcopy__ or __getstate__ raised)")


def no_rule(name: str, site: str, module: str) -> str:
    """An op rfprobe has no rule for: how to declare one, and where the rule types are.

    >>> no_rule("cumsum", "net.py:12", "")[:56]
    "op 'cumsum' at net.py:12 (module '<model>') has no recep"
    """
    return (f"op {name!r} at {site} (module {module or '<model>'!r}) has no receptive-field rule. Declare "
            f"one: rfprobe.register_rule({name!r}, 'pointwise' | 'channel' | 'global' | function): "
            "'pointwise' only if each output position reads just its own input position, 'global' is "
            "always safe (it reports every position). A function receives an rfprobe.Call and returns "
            "one rfprobe.InputDep per data input, of per-axis maps (rfprobe.Affine, rfprobe.Mapped, "
            "rfprobe.Broadcast, rfprobe.identity), or an rfprobe.Global: help(rfprobe.register_rule), "
            "docs/rules.md.")


def user_rules_suspect(nodes) -> str:
    """The routes disagree where a user's own rule is used: name it first.

    >>> from types import SimpleNamespace as N
    >>> user_rules_suspect([N(op="cumsum", name="tail:cumsum#0")])[:62]
    "likely cause: the rule you registered for 'cumsum' (node 'tail"
    """
    ops = list(dict.fromkeys(n.op for n in nodes))
    where = ", ".join(f"{n.name!r}" for n in nodes[:3]) + (" ..." if len(nodes) > 3 else "")
    return (f"likely cause: the rule you registered for {', '.join(repr(o) for o in ops)} (node {where}): "
            "the exact route follows your rule while the probe measures what the op really reads; "
            "a 'global' rule reports every position (safe, but never exact), a 'pointwise' one only "
            "the unit's own. Declare what the op reads (a function returning InputDep maps: "
            "help(rfprobe.register_rule), docs/rules.md), or rfprobe.unregister_rule to undo it")


def possible_causes() -> str:
    """Why the probe may miss positions the exact route finds.

    >>> possible_causes()[:40]
    'possible causes: an op whose gradient is'
    """
    return ("possible causes: an op whose gradient is zero where its output still depends on "
            "the input (integer ops, argmax routing), or a rule that does not match the op")


# ----------------------------------------------------------------------------- choosing a layer
def layer_advice(suggested: str | None, cli: bool = False) -> str:
    """How to select a layer, in the Python API's words or the command line's (``cli``), with
    ``suggested`` (the last module whose output has a local RF) as the example.

    >>> layer_advice("layer4")
    "layer=... (e.g. layer='layer4', the last module whose output has a local RF)"
    >>> layer_advice("layer4", cli=True)
    '--layer NAME (e.g. --layer layer4, the last module whose output has a local RF)'
    >>> layer_advice(None, cli=True)
    '--layer NAME (a module of the trunk)'
    """
    how = "--layer NAME" if cli else "layer=..."
    if suggested is None:
        return f"{how} (a module of the trunk)"
    return f"{how} (e.g. {layer_option(suggested, cli)}, the last module whose output has a local RF)"


def no_spatial_output(name: str, shape, suggested: str | None, cli: bool = False, lost_op: str | None = None,
                      lost_node: str = "", why: str = "") -> str:
    """The selected output has no spatial axes (a classifier's logits): the op that lost them
    (``lost_op`` at node ``lost_node``, ``why``), and which layer to pick.

    >>> no_spatial_output("fc", (1, 1000), "layer4", cli=True)
    "the selected output 'fc' has shape (1, 1000) without spatial axes; choose a conv feature map with --layer NAME (e.g. --layer layer4, the last module whose output has a local RF)"
    >>> no_spatial_output("fc", (1, 10), None, False, "flatten", "flatten#0")[:96]
    "the selected output 'fc' has shape (1, 10) without spatial axes: op 'flatten' (node 'flatten#0')"
    """
    lost = "" if lost_op is None else f": op {lost_op!r} (node {lost_node!r}) lost them" + (f" ({why})" if why else "")
    return (f"the selected output {name!r} has shape {tuple(shape)} without spatial axes{lost}; choose a conv "
            f"feature map with {layer_advice(suggested, cli)}")


# ----------------------------------------------------------------------------- cost
def collapse_refusal(index: int, module, why: str) -> str:
    """Why ``rfprobe.collapse`` cannot fold the stack, naming the layer.

    >>> import torch.nn as nn
    >>> collapse_refusal(1, nn.ReLU(), "is not linear")
    'cannot collapse the stack: layer 1 (ReLU) is not linear'
    """
    token = getattr(module, "rfprobe_token", None)
    name = f"layer {index} ({type(module).__name__}{', ' + repr(token) if token else ''})"
    return f"cannot collapse the stack: {name} {why}"


def compare_text(rows) -> str:
    """RF, parameters and MACs of designs, one row each (``rfprobe.compare``'s rows).

    >>> import rfprobe
    >>> print(compare_text(rfprobe.compare("conv3").rows))
    stack  RF   params  weights  MACs/position
    conv3  3x3  10      9        9
    """
    return table(["stack", "RF", "params", "weights", "MACs/position"],
                 [[r.spec, joined(r.size), str(r.params), str(r.params_no_bias), str(r.macs_per_position)]
                  for r in rows])


# ----------------------------------------------------------------------------- erf
def progress_line(label: str, done: int, total: int, seconds: float, width: int = 24) -> str:
    """One line of the progress bar (no newline).

    >>> progress_line("erf", 8, 32, 1.0)
    'erf    8/32  [######                  ] 1.0s'
    """
    fill = int(width * min(done, total) / total) if total else width
    return f"{label} {done:4d}/{total}  [{'#' * fill}{' ' * (width - fill)}] {seconds:.1f}s"


# ----------------------------------------------------------------------------- command line
CLI_DESCRIPTION = ("Exact receptive fields of PyTorch models, computed three ways (closed form, "
                   "exact propagation, gradient probe) and checked against each other. "
                   "Without a command: the seed demo. Exit 0 ok, 1 mismatch, 2 bad input.")
CLI_HELP = {"verify": "all routes for one unit, compared (exit 1 when they disagree)",
            "table": "the per-layer closed-form table",
            "compare": "RF, parameters and MACs of stacks side by side"}
CLI_ARG_HELP = {
    "version": "print 'rfprobe <version>' and exit",
    "model": ("a spec like 'conv3 relu conv3', or module:attr naming an nn.Module, a class or a "
              "function that makes one (the module is imported from the current directory first, "
              "as python -m would)"),
    "input": "input shape C,H,W without the batch (default: the smallest that holds the unit's RF)",
    "layer": "module or node name of the output to analyse, as in the table's 'layer' column",
    "output": "key or index of the output within what the model (or --layer) returns: out, 0, or a dotted "
              "key such as 0.boxes (default: the first tensor)",
    "in-channels": "input channels of a spec (default 1)",
    "dims": "spatial axes of a spec: 1, 2 or 3 (default 2)",
    "json": "print one JSON object on stdout, errors included (the exit code is unchanged)",
    "unit": "output unit I,J, one index per axis, or one index for every axis; negative counts from "
            "the end (default: the centre)",
    "device": "where the gradient probe runs: cpu, cuda, cuda:1, mps (default: the model's own device)",
    "compare-input": "input shape H,W (or C,H,W, C being --channels) without the batch: adds each stack's "
                     "total MACs for that input",
    "expect": "exit 1 unless the RF {what} is this (one number: every axis)",
    "specs": "two or more specs to set side by side, each one argument (quote it)",
    "channels": "width of every conv (default 1)",
}


def bad_ints(arg: str, text: str) -> str:
    """An option that wants whole numbers got something else.

    >>> bad_ints("--input", "3,x")
    "--input '3,x': expected whole numbers separated by commas, like 3,224,224 or 7"
    """
    return f"{arg} {text!r}: expected whole numbers separated by commas, like 3,224,224 or 7"


def usage_error(message: str, prog: str) -> str:
    """A command line argparse refuses (missing or unknown arguments), in one line.

    >>> usage_error("the following arguments are required: model", "rfprobe verify")
    'the following arguments are required: model (see rfprobe verify --help)'
    """
    return f"{message} (see {prog} --help)"


def module_not_found(module: str, target: str, error: BaseException, cwd: str) -> str:
    """``module:attr`` whose module is nowhere to be found.

    >>> module_not_found("models", "models:UNet", ModuleNotFoundError("No module named 'models'"), "/home/me")
    "cannot import 'models' from 'models:UNet': No module named 'models' (looked in the current directory /home/me, then on sys.path)"
    """
    return (f"cannot import {module!r} from {target!r}: {error} (looked in the current directory "
            f"{cwd}, then on sys.path)")


def module_raised(module: str, target: str, error: BaseException) -> str:
    """``module:attr`` whose module was found but raised while it was imported.

    >>> module_raised("models", "models:UNet", NameError("name 'nn' is not defined"))
    "importing 'models' (for 'models:UNet') raised NameError: name 'nn' is not defined"
    """
    return f"importing {module!r} (for {target!r}) raised {type(error).__name__}: {error}"


def no_attribute(owner: str, name: str, hint: str) -> str:
    """``module:attr`` whose attribute does not exist; ``hint`` is a did-you-mean (or '').

    >>> no_attribute("torchvision.models", "resnet5O", " Did you mean 'resnet50'?")
    "'torchvision.models' has no attribute 'resnet5O'. Did you mean 'resnet50'?"
    """
    return f"{owner!r} has no attribute {name!r}.{hint}"


def not_a_model(target: str, error: BaseException | None = None) -> str:
    """``module:attr`` that is not an ``nn.Module`` and does not make one.

    >>> not_a_model("torch.nn:Conv2d", TypeError("missing 'in_channels'"))
    "'torch.nn:Conv2d' is not an nn.Module and calling it with no arguments raised TypeError: missing 'in_channels'"
    >>> not_a_model("math:pi")
    "'math:pi' is not an nn.Module (nor makes one)"
    """
    if error is None:
        return f"{target!r} is not an nn.Module (nor makes one)"
    return (f"{target!r} is not an nn.Module and calling it with no arguments raised "
            f"{type(error).__name__}: {error}")


def expectation_count(option: str, want, n: int) -> str:
    """An ``--expect-*`` option with the wrong number of values for this output.

    >>> expectation_count("--expect-size", (3, 3, 3), 2)
    '--expect-size (3, 3, 3) has 3 numbers; give 1 or 2'
    """
    return f"{option} {want} has {len(want)} numbers; give 1 or {n}"


def cli_version(version: str) -> str:
    """What ``rfprobe --version`` prints.

    >>> cli_version("0.1.0")
    'rfprobe 0.1.0'
    """
    return f"rfprobe {version}"


def demo_text(groups) -> str:
    """The seed demo: groups of (spec, Report, Cost), a big kernel against a stack of 3x3.

    >>> import rfprobe
    >>> print(demo_text([[("conv3", rfprobe.verify("conv3"), rfprobe.cost("conv3"))]]).splitlines()[3])
    conv3                                 3x3                9    agree
    """
    lines = ["Receptive fields of small stacks, verified three ways (closed form, exact, gradient)", "",
             f"{'stack':34} {'RF':>6} {'weights/ch pair':>16} {'routes':>8}"]
    for group in groups:
        for spec, r, c in group:
            lines.append(f"{spec:34} {joined(r.size):>6} {c.params_no_bias:>16} "
                         f"{'agree' if r.ok else 'DIFFER':>8}")
        lines.append("")
    lines.append("Two 3x3 see 5x5 with 18 weights instead of 25; three see 7x7 with 27 instead of 49.")
    return "\n".join(lines)


def expectation_failed(what: str, want, got, status: Status = "ok") -> str:
    """An ``--expect-*`` option that does not hold.

    >>> expectation_failed("size", (5, 5), (3, 3))
    'expected size 5x5, got 3x3'
    """
    if status == "global":
        return f"expected {what} {joined(want)}, but the receptive field is global (see the diagnosis)"
    return f"expected {what} {joined(want)}, got {joined(got)}"


def assertion_differs(what: str, want, got) -> str:
    """One line of a failed ``assert_receptive_field``: what was expected and what came.

    >>> assertion_differs("size", (7, 7), (5, 5))
    'expected size (7, 7), got (5, 5)'
    """
    return f"expected {what} {tuple(want)}, got {None if got is None else tuple(got)}"


def assertion_global(causes) -> str:
    """A failed ``assert_receptive_field`` on a model whose RF is global.

    >>> assertion_global(["'1': adaptive_avg_pool2d to 1x1"])
    "the receptive field is global: '1': adaptive_avg_pool2d to 1x1"
    """
    return "the receptive field is global: " + global_summary(causes)


def assertion_disagree(mismatches) -> str:
    """A failed ``assert_receptive_field`` whose routes disagree.

    >>> assertion_disagree(["the probe sees 2 positions the exact route does not"])
    'the routes disagree: the probe sees 2 positions the exact route does not'
    """
    return "the routes disagree: " + "; ".join(mismatches)


def cli_error(e: Exception) -> str:
    """An error, as the command line prints it (in its own words where an rfprobe error has them).

    >>> cli_error(ValueError("bad spec"))
    'rfprobe: error: bad spec'
    """
    return f"rfprobe: error: {cli_message(e)}"


def cli_message(e: Exception) -> str:
    """An error's message in the command line's words: its ``cli`` wording where it has one.

    >>> from rfprobe.errors import ArgumentError
    >>> cli_message(ArgumentError("pick layer=...", cli="pick --layer NAME")), cli_message(KeyError("k"))
    ('pick --layer NAME', "'k'")
    """
    return getattr(e, "cli", None) or str(e)


def selection(layer, output) -> str:
    """How the user selected an output within a container, as they wrote it ('' without
    ``output=``: the output's own name says which it is).

    >>> selection("backbone", "out"), selection(None, 1), selection("layer3", None)
    ("layer='backbone', output='out'", 'output=1', '')
    """
    if output is None:
        return ""
    return ", ".join(f"{k}={v!r}" for k, v in (("layer", layer), ("output", output)) if v is not None)


def _at(site: str, module: str) -> str:
    """Where an op ran, as the refusals say it.

    >>> _at("m.py:3", "")
    "at m.py:3 (module '<model>')"
    """
    return f"at {site} (module {module or '<model>'!r})"


def untraced_property(prop: str, site: str, module: str) -> str:
    """A property of a traced tensor that returned a new tensor rfprobe does not follow.

    >>> untraced_property("grad", "m.py:3", "")
    "property '.grad' at m.py:3 (module '<model>') returns a tensor rfprobe does not follow; compute it with a torch function instead"
    """
    return (f"property '.{prop}' {_at(site, module)} returns a tensor rfprobe does not "
            "follow; compute it with a torch function instead")


def values_through_python(name: str, site: str, module: str, reads: list[str]) -> str:
    """A tensor built from Python values after the model read traced values into Python.

    >>> values_through_python("tensor", "m.py:7", "", ["'c' by tolist at m.py:6"])
    "op 'tensor' at m.py:7 (module '<model>') builds a tensor from Python values after the model read traced values into Python ('c' by tolist at m.py:6); rfprobe cannot follow values through Python: compute them with torch functions"
    """
    return (f"op {name!r} {_at(site, module)} builds a tensor from Python values after the "
            f"model read traced values into Python ({'; '.join(reads[-3:])}); rfprobe cannot follow values "
            "through Python: compute them with torch functions")


def lost_view(base: str, site: str, module: str) -> str:
    """A view of a traced tensor that no traced op made, used by an op.

    >>> lost_view("conv", "m.py:4", "")
    "a view of 'conv' used at m.py:4 (module '<model>') was made by an op rfprobe does not see, so it cannot say which positions it holds"
    """
    return (f"a view of {base!r} used {_at(site, module)} was made by an op rfprobe does "
            "not see, so it cannot say which positions it holds")


def rule_skips(name: str, site: str, module: str, args: list[int]) -> str:
    """An op's rule says nothing of some of its arguments that are computed from the input.

    >>> rule_skips("my_op", "m.py:3", "", [1])
    "op 'my_op' at m.py:3 (module '<model>'): its rule says nothing of argument(s) [1], which are computed from the model input; rfprobe cannot tell which positions they add (give the op a rule that returns an InputDep for each)"
    """
    return (f"op {name!r} {_at(site, module)}: its rule says nothing of argument(s) {args}, "
            "which are computed from the model input; rfprobe cannot tell which positions they add (give the op a "
            "rule that returns an InputDep for each)")


def rule_refused(name: str, site: str, module: str, error: BaseException | str) -> str:
    """An op whose rule refused this use of it (the rule's own words follow).

    >>> rule_refused("roll", "m.py:3", "", "shifts computed from the input")
    "op 'roll' at m.py:3 (module '<model>'): shifts computed from the input"
    """
    return f"op {name!r} {_at(site, module)}: {error}"


def not_trailing(name: str, site: str, dims_at, shape, dims: int) -> str:
    """An op that needs the spatial axes last, run on a tensor that holds them elsewhere.

    >>> not_trailing("conv1d", "m.py:3", (-3,), (1, 8, 4, 6), 1)
    "op 'conv1d' at m.py:3 runs on a tensor whose spatial axes are dims (-3,) of shape (1, 8, 4, 6), not the trailing 1; rfprobe has no rule for that (a spatial axis folded into the batch, e.g. a Conv1d run along each row: an nn.Conv2d with a (1, k) kernel computes the same and is followed)"
    """
    return (f"op {name!r} at {site} runs on a tensor whose spatial axes are dims {dims_at} of shape {shape}, "
            f"not the trailing {dims}; rfprobe has no rule for that (a spatial axis folded into the batch, e.g. a "
            "Conv1d run along each row: an nn.Conv2d with a (1, k) kernel computes the same and is followed)")


def write_through_view(name: str, site: str, base: str) -> str:
    """An in-place op on a view that no indexing made (rfprobe follows writes through ``x[...]``).

    >>> write_through_view("add_", "m.py:3", "conv")
    "op 'add_' at m.py:3 writes in place into a view of 'conv' made by an op other than indexing; rfprobe follows in-place writes through x[...] views only"
    """
    return (f"op {name!r} at {site} writes in place into a view of {base!r} made by an op other than indexing; "
            "rfprobe follows in-place writes through x[...] views only")
