"""The ``rfprobe`` command: thin; parse, call the public API, print, exit 0/1/2.

    rfprobe                                   the seed demo: 3x3 stacks against 5x5 and 7x7
    rfprobe verify SPEC|module:attr [--input 3,224,224] [--layer NAME] [--unit I,J] [--json]
            [--expect-size N[,N]] [--expect-stride N[,N]] [--expect-padding N[,N]]
    rfprobe table SPEC|module:attr [--input ...] [--layer NAME] [--json]
    rfprobe compare SPEC SPEC ... [--channels C] [--json]

Exit codes: 0 when every route agrees (and every ``--expect-*`` holds), 1 when they disagree or
an expectation fails, 2 on bad input (a spec typo, a bad option, a model that cannot run).

>>> main(["verify", "conv3 relu conv3", "--expect-size", "5"])   # doctest: +ELLIPSIS
layer  op ...
OK: all routes agree, RF 5x5
0
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import os
import sys

import torch.nn as nn

from . import render
from .errors import ArgumentError, RFProbeError

DEMO = [("conv5", "conv3 relu conv3"), ("conv7", "conv3 relu conv3 relu conv3"),
        ("conv7", "conv3/s2 relu conv3")]


def _ints(text: str | None, arg: str):
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise ArgumentError(f"{arg} {text!r}: expected whole numbers separated by commas, "
                            f"like 3,224,224 or 7") from None


def load(target: str, in_channels: int | None = None, dims: int = 2) -> nn.Module:
    """A spec string, or ``module:attr`` naming a model (called if it is a class or function).

    >>> type(load("conv3 relu")).__name__, type(load("torch.nn:Identity")).__name__
    ('Sequential', 'Identity')
    """
    if ":" in target and "/" not in target.split(":")[0] and " " not in target:
        mod, _, attr = target.partition(":")
        try:
            obj = importlib.import_module(mod)
        except ImportError as e:
            raise ArgumentError(f"cannot import {mod!r} from {target!r}: {e}") from None
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise ArgumentError(f"{mod!r} has no attribute {attr!r}")
            obj = getattr(obj, part)
        if isinstance(obj, nn.Module):
            model = copy.deepcopy(obj)  # the user's own object: eval() a copy, never their model
        else:
            try:
                model = obj()
            except Exception as e:
                raise ArgumentError(f"{target!r} is not an nn.Module and calling it with no "
                                    f"arguments raised {type(e).__name__}: {e}") from None
        if not isinstance(model, nn.Module):
            raise ArgumentError(f"{target!r} is not an nn.Module (nor makes one)")
        return model.eval()
    from .spec import build
    return build(target, in_channels=1 if in_channels is None else in_channels, dims=dims).eval()


def _demo() -> int:
    from .cost import cost
    from .verify import verify
    groups = [[(spec, verify(spec), cost(spec)) for spec in pair] for pair in DEMO]
    print(render.demo_text(groups))
    return 0 if all(r.ok for g in groups for _, r, _ in g) else 1


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr, as every other error here (its
    own prints the usage block first)."""

    def error(self, message):
        print(f"{self.prog}: error: {message} (see {self.prog.split()[0]} --help)", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rfprobe", description=render.CLI_DESCRIPTION)
    sub = parser.add_subparsers(dest="cmd")
    for name in ("verify", "table"):
        p = sub.add_parser(name, help=render.CLI_HELP[name])
        p.add_argument("model", help="a spec like 'conv3 relu conv3' or module:attr")
        p.add_argument("--input", help="input shape C,H,W (no batch)")
        p.add_argument("--layer", help="module or node name of the output to analyse")
        p.add_argument("--in-channels", type=int, help="input channels of a spec (default 1)")
        p.add_argument("--dims", type=int, default=2, help="spatial axes of a spec: 1, 2 or 3")
        p.add_argument("--json", action="store_true", help="print JSON")
        if name == "verify":
            p.add_argument("--unit", help="output unit I,J (default: the centre)")
            for what in ("size", "stride", "padding"):
                p.add_argument(f"--expect-{what}", metavar="N[,N]",
                               help=f"exit 1 unless the RF {what} is this (one number: every axis)")
    p = sub.add_parser("compare", help=render.CLI_HELP["compare"])
    p.add_argument("specs", nargs="+")
    p.add_argument("--channels", type=int, default=1, help="width of every conv")
    p.add_argument("--dims", type=int, default=2)
    p.add_argument("--json", action="store_true")
    return parser


def main(argv=None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 mismatch, 2 bad input)."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # `rfprobe ... | head`: the reader left early; that is not an error of ours. Point
        # stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv=None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:          # argparse: --help exits 0, a bad option 2
        return 0 if not e.code else 2
    try:
        if args.cmd is None:
            return _demo()
        if args.cmd == "compare":
            return _compare(args)
        model = load(args.model, args.in_channels, args.dims)
        if args.cmd == "table":
            from .routes.analyze import analyze
            a = analyze(model, _ints(args.input, "--input"), layer=args.layer)
            print(render.to_json(a.to_dict()) if args.json else a)
            return 0
        return _verify(model, args)
    except RFProbeError as e:
        print(render.cli_error(e), file=sys.stderr)
        return 2


def _compare(args) -> int:
    from .cost import compare
    rows = compare(*args.specs, channels=args.channels, dims=args.dims)
    if args.json:
        print(render.to_json([dataclasses.asdict(r) for r in rows]))
    else:
        print(rows)
    return 0 if all(getattr(r, "ok", True) for r in rows) else 1


def _verify(model, args) -> int:
    from .validate import check_expectation
    from .verify import verify
    for what in ("size", "stride", "padding"):    # bad expectations are bad input (2), before any work
        want = _ints(getattr(args, f"expect_{what}"), f"--expect-{what}")
        try:
            check_expectation(what, want, None)
        except ArgumentError as e:
            raise ArgumentError(f"--expect-{what}: {e}") from None
    r = verify(model, _ints(args.input, "--input"), unit=_ints(args.unit, "--unit"), layer=args.layer)
    n = len(r.probe.size)
    failed = []
    for what in ("size", "stride", "padding"):
        want = _ints(getattr(args, f"expect_{what}"), f"--expect-{what}")
        if want is None:
            continue
        if len(want) not in (1, n):
            raise ArgumentError(f"--expect-{what} {want} has {len(want)} numbers; give 1 or {n}")
        want = want * n if len(want) == 1 else want
        got = None if r.analysis.status == "global" else getattr(r, what)
        if got is None or tuple(got) != want:
            failed.append(render.expectation_failed(what, want, got, r.analysis.status))
    if args.json:
        d = r.to_dict()
        d["expectations_failed"] = failed
        d["ok"] = r.ok and not failed
        print(render.to_json(d))
    else:
        print(r)
    for line in failed:
        print(line, file=sys.stderr)
    return 0 if r.ok and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
