"""The ``rfprobe`` command: thin; parse, call the public API, print, exit 0/1/2.

    rfprobe                                   the seed demo: 3x3 stacks against 5x5 and 7x7
    rfprobe verify SPEC|module:attr [--input 3,224,224] [--layer NAME] [--output KEY] [--unit I,J] [--device DEV]
            [--json] [--expect-size N[,N]] [--expect-stride N[,N]] [--expect-padding N[,N]]
    rfprobe table SPEC|module:attr [--input ...] [--layer NAME] [--output KEY] [--json]
    rfprobe compare SPEC SPEC ... [--channels C] [--input [C,]H,W] [--json]
    rfprobe --version                         python -m rfprobe ... runs the same command

Exit codes: 0 when every route agrees (and every ``--expect-*`` holds), 1 when they disagree or
an expectation fails, 2 on bad input (a spec typo, a bad option, a model that cannot be
imported or run). ``module:attr`` is imported from the current directory first, as
``python -m`` would. With ``--json`` every outcome, errors included, is one JSON object on
stdout with ``ok`` and ``exit``. Advice is in the command line's words (``--layer NAME``, where
the Python API says ``layer=...``).

>>> main(["verify", "conv3 relu conv3", "--expect-size", "5"])   # doctest: +ELLIPSIS
layer  op ...
OK: all routes agree, RF 5x5
0
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import importlib
import io
import os
import re
import sys
import traceback

import torch.nn as nn

from . import __version__, render
from .errors import ArgumentError, ModelError, RFProbeError, did_you_mean

DEMO = [("conv5", "conv3 relu conv3"), ("conv7", "conv3 relu conv3 relu conv3"),
        ("conv7", "conv3/s2 relu conv3")]
HELP = render.CLI_ARG_HELP


def _ints(text: str | None, arg: str):
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise ArgumentError(render.bad_ints(arg, text)) from None


def _unit(text: str | None):
    """``--unit 3`` is index 3 on every axis, as the API's ``unit=3``; ``--unit 3,4`` one per axis."""
    unit = _ints(text, "--unit")
    return unit[0] if unit is not None and len(unit) == 1 else unit


# ----------------------------------------------------------------------------- module:attr
def load(target: str, in_channels: int | None = None, dims: int = 2) -> nn.Module:
    """A spec string, or ``module:attr`` naming a model (called if it is a class or function).
    The module is looked up in the current directory first, as ``python -m`` would.

    >>> type(load("conv3 relu")).__name__, type(load("torch.nn:Identity")).__name__
    ('Sequential', 'Identity')
    >>> load("torch.nn:Indentity")
    Traceback (most recent call last):
    ...
    rfprobe.errors.ArgumentError: 'torch.nn' has no attribute 'Indentity'. Did you mean 'Identity'?
    """
    if ":" in target and "/" not in target.split(":")[0] and " " not in target:
        with _cwd_first():
            return _load_attr(target)
    from .spec import build
    return build(target, in_channels=1 if in_channels is None else in_channels, dims=dims).eval()


@contextlib.contextmanager
def _cwd_first():
    """The current directory first on ``sys.path`` while the user's model is imported and made
    (the ``rfprobe`` script's own folder is first otherwise); then exactly that entry leaves
    again, whatever the imported code did to ``sys.path`` meanwhile."""
    entry = os.getcwd()                  # a new string object: removed below by identity
    sys.path.insert(0, entry)
    importlib.invalidate_caches()
    try:
        yield
    finally:
        for i, p in enumerate(sys.path):
            if p is entry:
                del sys.path[i]
                break


def _import(module: str, target: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:     # the module itself (or its package) is not there
        if e.name is not None and (module == e.name or module.startswith(e.name + ".")):
            raise ArgumentError(render.module_not_found(module, target, e, os.getcwd())) from None
        raise ModelError(render.module_raised(module, target, e)) from e
    except Exception as e:               # found, but its own code raised (a typo, a missing dependency)
        raise ModelError(render.module_raised(module, target, e)) from e


def _load_attr(target: str) -> nn.Module:
    module, _, attr = target.partition(":")
    obj, owner = _import(module, target), module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            raise ArgumentError(render.no_attribute(owner, part, did_you_mean(part, names)))
        obj, owner = getattr(obj, part), f"{owner}.{part}"
    if isinstance(obj, nn.Module):
        model = copy.deepcopy(obj)  # the user's own object: eval() a copy, never their model
    else:
        try:
            model = obj()
        except Exception as e:
            raise ArgumentError(render.not_a_model(target, e)) from None
    if not isinstance(model, nn.Module):
        raise ArgumentError(render.not_a_model(target))
    return model.eval()


# ----------------------------------------------------------------------------- the parser
class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is an ``ArgumentError`` like every other bad input: one
    line on stderr (its own prints the usage block first), or one JSON object with ``--json``."""

    def error(self, message):
        raise ArgumentError(render.usage_error(message, self.prog))


def make_parser() -> argparse.ArgumentParser:
    """The command line's parser; every argument of every subcommand has its help text."""
    parser = _Parser(prog="rfprobe", description=render.CLI_DESCRIPTION)
    parser.add_argument("--version", action="version", version=render.cli_version(__version__),
                        help=HELP["version"])
    sub = parser.add_subparsers(dest="cmd")
    for name in ("verify", "table"):
        p = sub.add_parser(name, help=render.CLI_HELP[name], description=render.CLI_HELP[name])
        p.add_argument("model", help=HELP["model"])
        p.add_argument("--input", metavar="C,H,W", help=HELP["input"])
        p.add_argument("--layer", metavar="NAME", help=HELP["layer"])
        p.add_argument("--output", metavar="KEY", help=HELP["output"])
        p.add_argument("--in-channels", type=int, metavar="C", help=HELP["in-channels"])
        p.add_argument("--dims", type=int, default=2, help=HELP["dims"])
        p.add_argument("--json", action="store_true", help=HELP["json"])
        if name == "verify":
            p.add_argument("--unit", metavar="I[,J]", help=HELP["unit"])
            p.add_argument("--device", metavar="DEV", help=HELP["device"])
            for what in ("size", "stride", "padding"):
                p.add_argument(f"--expect-{what}", metavar="N[,N]", help=HELP["expect"].format(what=what))
    p = sub.add_parser("compare", help=render.CLI_HELP["compare"], description=render.CLI_HELP["compare"])
    p.add_argument("specs", nargs="+", metavar="SPEC", help=HELP["specs"])
    p.add_argument("--channels", type=int, default=1, help=HELP["channels"])
    p.add_argument("--input", metavar="[C,]H,W", help=HELP["compare-input"])
    p.add_argument("--dims", type=int, default=2, help=HELP["dims"])
    p.add_argument("--json", action="store_true", help=HELP["json"])
    return parser


def _wants_json(argv: list[str]) -> bool:
    """``--json`` (or a prefix argparse would take for it) among the options, before any ``--``."""
    for a in argv:
        if a == "--":
            return False
        if len(a) > 2 and "--json".startswith(a):
            return True
    return False


# ----------------------------------------------------------------------------- running
def main(argv=None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 mismatch, 2 bad input)."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # `rfprobe ... | head`: the reader left early; that is not an error of ours. Point
        # stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _key(text: str | None):
    """``--output``'s key: an index where it is an integer (a tuple's), else the text (a dict's
    key, or a dotted key into nested containers).

    >>> _key("1"), _key("-1"), _key("out"), _key("0.boxes"), _key(None)
    (1, -1, 'out', '0.boxes', None)
    """
    return int(text) if text is not None and re.fullmatch(r"-?\d+", text) else text


def _negative_units(argv: list[str]) -> list[str]:
    """``--unit -1,-1`` as ``--unit=-1,-1``: argparse reads a value that starts with '-' and is
    not one number as an option.

    >>> _negative_units(["verify", "conv3", "--unit", "-1,-1"])
    ['verify', 'conv3', '--unit=-1,-1']
    """
    out: list[str] = []
    for a in argv:
        if out and out[-1] == "--unit" and re.fullmatch(r"-\d+(,-?\d+)*", a):
            out[-1] = f"--unit={a}"
        else:
            out.append(a)
    return out


def _emit(d: dict, out) -> None:
    print(render.to_json(d), file=out)


def _main(argv=None, as_json: bool | None = None) -> int:
    """``main`` without the guard for a reader that left (tests/test_edges.py calls it)."""
    argv = _negative_units(sys.argv[1:] if argv is None else list(argv))
    as_json = _wants_json(argv) if as_json is None else as_json
    out = sys.stdout          # with --json only the one object goes here; what else prints goes to stderr
    try:
        try:
            with contextlib.redirect_stdout(io.StringIO()) if as_json else contextlib.nullcontext() as said:
                args = make_parser().parse_args(argv)
        except SystemExit as e:          # --help and --version print, then exit 0
            code = 0 if not e.code else 2
            if as_json:
                _emit({"ok": code == 0, "output": said.getvalue(), "exit": code}, out)
            return code
        args.out = out
        with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
            return _run(args)
    except RFProbeError as e:
        if as_json:
            _emit({"ok": False, "error": {"type": type(e).__name__, "message": render.cli_message(e)}, "exit": 2}, out)
        else:
            print(render.cli_error(e), file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise                            # the reader left: main() handles it, there is no one to tell
    except Exception as e:               # a bug of rfprobe's: the traceback, and still one JSON object
        if not as_json:
            raise
        traceback.print_exc()
        _emit({"ok": False, "error": {"type": type(e).__name__, "message": str(e)}, "exit": 1}, out)
        return 1


def _run(args) -> int:
    if args.cmd is None:
        return _demo()
    if args.cmd == "compare":
        return _compare(args)
    model = load(args.model, args.in_channels, args.dims)
    if args.cmd == "table":
        return _table(model, args)
    return _verify(model, args)


def _demo() -> int:
    from .cost import cost
    from .verify import verify
    groups = [[(spec, verify(spec), cost(spec)) for spec in pair] for pair in DEMO]
    print(render.demo_text(groups))
    return 0 if all(r.ok for g in groups for _, r, _ in g) else 1


def _table(model, args) -> int:
    from .routes.analyze import analyze
    a = analyze(model, input_shape=_ints(args.input, "--input"), layer=args.layer, output=_key(args.output))
    if args.json:
        _emit({**a.to_dict(), "ok": True, "exit": 0}, args.out)
    else:
        print(render.analysis_text(a, cli=True))
    return 0


def _compare(args) -> int:
    from .cost import compare
    rows = compare(*args.specs, channels=args.channels, dims=args.dims, input_shape=_ints(args.input, "--input"))
    code = 0 if all(getattr(r, "ok", True) for r in rows) else 1
    if args.json:
        _emit({"ok": code == 0, "rows": [dataclasses.asdict(r) for r in rows], "exit": code}, args.out)
    else:
        print(rows)
    return code


def _verify(model, args) -> int:
    from .validate import check_expectation
    from .verify import verify
    expected = {}
    for what in ("size", "stride", "padding"):    # bad expectations are bad input (2), before any work
        want = _ints(getattr(args, f"expect_{what}"), f"--expect-{what}")
        try:
            check_expectation(what, want, None)
        except ArgumentError as e:
            raise ArgumentError(f"--expect-{what}: {e}") from None
        expected[what] = want
    r = verify(model, _ints(args.input, "--input"), unit=_unit(args.unit), layer=args.layer,
               output=_key(args.output), device=args.device)
    n = len(r.probe.size)
    failed = []
    for what, want in expected.items():
        if want is None:
            continue
        if len(want) not in (1, n):
            raise ArgumentError(render.expectation_count(f"--expect-{what}", want, n))
        want = want * n if len(want) == 1 else want
        got = None if r.analysis.status == "global" else getattr(r, what)
        if got is None or tuple(got) != want:
            failed.append(render.expectation_failed(what, want, got, r.analysis.status))
    code = 0 if r.ok and not failed else 1
    if args.json:
        _emit({**r.to_dict(), "ok": code == 0, "expectations_failed": failed, "exit": code}, args.out)
    elif failed:                      # what failed leads; then the table, whose verdict says FAIL
        print("\n".join(failed + ["", render.report_text(r, failed, cli=True)]))
    else:
        print(render.report_text(r, cli=True))
    return code


if __name__ == "__main__":
    sys.exit(main())
