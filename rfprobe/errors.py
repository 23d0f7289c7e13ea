"""The one error family rfprobe raises for mistakes a user can make.

Every message names the argument at fault, shows the bad value and says what to do instead.
docs/errors.md catalogues each bad input with its class, message and fix (one test per row in
tests/test_bad_inputs.py). Only ``ModelError`` chains another exception: the user's own.

>>> from rfprobe.errors import RFProbeError, nearest
>>> issubclass(RFProbeError, ValueError)
True
>>> nearest("cnov3", ["conv", "relu", "maxpool"], strip_digits=True)
'conv'
"""
from __future__ import annotations

import difflib
import re
from typing import Iterable


class RFProbeError(ValueError):
    """Base class: a call to rfprobe that cannot give an exact answer, and why."""


class SpecError(RFProbeError):
    """A stack spec (string, token list or dicts) that does not parse."""


class ArgumentError(RFProbeError):
    """A bad argument: wrong type, shape, rank, range or name."""


class ModelError(RFProbeError):
    """The user's model raised while rfprobe ran it; the original error is chained."""


class UnknownOpError(RFProbeError):
    """An op with no receptive-field rule; declare one with ``rfprobe.register_rule``."""


class GlobalOpError(RFProbeError):
    """A local receptive field was asked for, but an op couples every position."""


class ResourceError(RFProbeError):
    """The probe would need more memory than is sensible; the message says how to shrink it."""


def nearest(word: str, choices: Iterable[str], *, strip_digits: bool = False) -> str | None:
    """The closest valid word to ``word`` (for "did you mean" hints), or None."""
    key = re.sub(r"[\d/].*$", "", word) if strip_digits else word
    found = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.4)
    return found[0] if found else None


def did_you_mean(word: str, choices: Iterable[str], **kw) -> str:
    hit = nearest(word, choices, **kw)
    return f" Did you mean {hit!r}?" if hit else ""
