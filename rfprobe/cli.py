"""The ``rfprobe`` command: thin; parse, call the public API, print, exit 0/1/2.

    rfprobe                                   the seed demo: 3x3 stacks against 5x5 and 7x7
    rfprobe verify SPEC|module:attr [--input 3,224,224] [--layer NAME] [--unit I,J] [--json]
            [--expect-size N[,N]]
    rfprobe table SPEC|module:attr ...
    rfprobe compare SPEC SPEC ... [--channels C]
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys

import torch.nn as nn

from .errors import RFProbeError

DEMO = [("conv5", "conv3 relu conv3"), ("conv7", "conv3 relu conv3 relu conv3"),
        ("conv7", "conv3/s2 relu conv3")]


def _ints(text: str | None):
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise RFProbeError(f"expected numbers like 3,224,224, not {text!r}") from None


def load(target: str, in_channels: int | None = None, dims: int = 2):
    """A spec string, or ``module:attr`` naming a model (called if it is a class or function)."""
    if ":" in target and "/" not in target.split(":")[0] and " " not in target:
        mod, _, attr = target.partition(":")
        try:
            obj = importlib.import_module(mod)
        except ImportError as e:
            raise RFProbeError(f"cannot import {mod!r} from {target!r}: {e}") from None
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise RFProbeError(f"{mod!r} has no attribute {attr!r}")
            obj = getattr(obj, part)
        model = obj if isinstance(obj, nn.Module) else obj()
        if not isinstance(model, nn.Module):
            raise RFProbeError(f"{target!r} is not an nn.Module (nor makes one)")
        return model.eval()
    from .spec import build
    return build(target, in_channels=in_channels or 1, dims=dims)


def _demo() -> int:
    from .cost import cost
    from .verify import verify
    print("Receptive fields of small stacks, verified three ways (closed form, exact, gradient)\n")
    print(f"{'stack':34} {'RF':>6} {'weights/ch pair':>16} {'routes':>8}")
    for one, stack in DEMO:
        for spec in (one, stack):
            r = verify(spec)
            c = cost(spec)
            print(f"{spec:34} {r.size[0]:>4}x{r.size[1]:<2} {c.params_no_bias:>16} "
                  f"{'agree' if r.ok else 'DIFFER':>8}")
        print()
    print("Two 3x3 see 5x5 with 18 weights instead of 25; three see 7x7 with 27 instead of 49.")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="rfprobe", description="Exact receptive fields of PyTorch models.")
    sub = parser.add_subparsers(dest="cmd")
    for name in ("verify", "table"):
        p = sub.add_parser(name)
        p.add_argument("model", help="a spec like 'conv3 relu conv3' or module:attr")
        p.add_argument("--input", help="input shape C,H,W (no batch)")
        p.add_argument("--layer")
        p.add_argument("--unit", help="output unit I,J")
        p.add_argument("--in-channels", type=int)
        p.add_argument("--dims", type=int, default=2)
        p.add_argument("--json", action="store_true")
        if name == "verify":
            p.add_argument("--expect-size", help="N or N,N")
            p.add_argument("--expect-stride")
    p = sub.add_parser("compare")
    p.add_argument("specs", nargs="+")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--json", action="store_true")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return 2 if e.code else 0
    try:
        if args.cmd is None:
            return _demo()
        if args.cmd == "compare":
            from .cost import compare
            rows = compare(*args.specs, channels=args.channels)
            if args.json:
                print(json.dumps([r.__dict__ for r in rows], indent=2, default=list))
            else:
                from .render import compare_text
                print(compare_text(rows))
            return 0
        model = load(args.model, args.in_channels, args.dims)
        if args.cmd == "table":
            from .analytic import analyze
            a = analyze(model, _ints(args.input), layer=args.layer)
            print(json.dumps(a.to_dict(), indent=2, default=list) if args.json else a)
            return 0
        from .verify import verify
        r = verify(model, _ints(args.unit), _ints(args.input), layer=args.layer)
        ok = r.ok
        n = len(r.probe.size)
        for what, want in (("size", args.expect_size), ("stride", args.expect_stride)):
            want = _ints(want)
            if want is not None:
                want = want * n if len(want) == 1 else want
                got = getattr(r, what)
                if tuple(got or ()) != want:
                    ok = False
                    print(f"expected {what} {want}, got {got}", file=sys.stderr)
        if args.json:
            d = r.to_dict()
            d["ok"] = ok
            print(json.dumps(d, indent=2))
        else:
            print(r)
        return 0 if ok else 1
    except RFProbeError as e:
        print(f"rfprobe: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
