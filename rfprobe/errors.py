"""The one error family rfprobe raises for mistakes a user can make.

Every message names the argument at fault, shows the bad value and says what to do instead.
docs/errors.md catalogues each bad input with its class, message and fix (one test per row in
tests/test_bad_inputs.py). Only ``ModelError`` chains another exception, the user's own, and
``InternalError`` rfprobe's own (for the report it asks for); an ``ArgumentError`` for a rule
the user registered that raised chains the rule's exception.

>>> from rfprobe.errors import RFProbeError, nearest
>>> issubclass(RFProbeError, ValueError)
True
>>> nearest("cnov3", ["conv", "relu", "maxpool"], strip_digits=True)
'conv'
>>> model_raised(RuntimeError("boom"), (3, 8, 8), done=["conv"])
"the model raised RuntimeError on an input of shape (1, 3, 8, 8) (input_shape=(3, 8, 8)): boom. rfprobe had traced up to ['conv']."
"""
from __future__ import annotations

import difflib
import re
from typing import Iterable


class RFProbeError(ValueError):
    """Base class: a call to rfprobe that cannot give an exact answer, and why. ``cli``: the
    same message in the command line's words where they differ (``--layer NAME`` where the
    Python API says ``layer=...``); the ``rfprobe`` command prints it instead.

    >>> e = RFProbeError("choose layer=...", cli="choose --layer NAME")
    >>> str(e), e.cli
    ('choose layer=...', 'choose --layer NAME')
    """

    def __init__(self, *args, cli: str | None = None):
        super().__init__(*args)
        self.cli = cli


class SpecError(RFProbeError):
    """A stack spec (string, token list or dicts) that does not parse."""


class ArgumentError(RFProbeError):
    """A bad argument: wrong type, shape, rank, range or name."""


class ModelError(RFProbeError):
    """The user's model raised while rfprobe ran it; the original error is chained."""


class InternalError(RFProbeError):
    """rfprobe's own code failed on an op the model ran (the model is not at fault): the message
    names the op and its call site and asks for a report; rfprobe's exception is chained."""


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


def model_raised(error: BaseException, input_shape=None, *, during: str | None = None,
                 done: list[str] | None = None) -> str:
    """What the user's model raised, in the one wording every route uses: the one place that
    writes "the model raised". Wrap it in ``ModelError(...)`` chained ``from error``.

    ``input_shape``: the (C, *spatial) rfprobe gave the model, batch 1 added in the message; with
    ``during`` (what rfprobe was running, e.g. ``'the probe'``) it is the tensor's whole shape.
    ``done``: the last ops that ran (names), said after the model's message. Neither shape nor
    ``during``: the short form a refusal of an argument quotes, the first 160 characters of the
    user's own error (``error.__cause__`` when ``error`` is rfprobe's ``ModelError``)."""
    if input_shape is None and during is None:
        return f"the model raised: {raised_text(error)}"
    if during is None:
        where = f"on an input of shape {(1, *input_shape)} (input_shape={tuple(input_shape)})"
        ran = "rfprobe had traced up to"
    else:
        where = f"during {during} on input shape {tuple(input_shape)}"
        ran = "It had run up to"
    text = f"the model raised {type(error).__name__} {where}: {error}"
    return text if done is None else f"{text}. {ran} {done}."


def raised_text(error: BaseException) -> str:
    """The first 160 characters of the user's error behind ``error`` (a ``ModelError`` chains it)."""
    return str(error.__cause__ or error)[:160]
