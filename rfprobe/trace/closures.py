"""The user's forward hooks that are closures, pointed at a private copy's objects, and those
that reach the model by a route no copy can redirect.

A hook written as ``def hook(m, i, o): feats[name] = o`` (or ``self.feats[name] = o`` inside
``__init__``, or ``model.cache = o``) keeps the user's objects in its closure cells, and
``copy.deepcopy`` shares functions: run on the copy it would write into the user's dict while
the copy's forward returns the copy's. :func:`over_copies` gives the copy a new function with
the same code whose cells that held an object of the model (the model, a module, a dict or list
a module holds) hold the copy's counterpart; the other cells are the user's own, so a counter
the hook keeps with ``nonlocal`` counts as in a plain forward. The user's hook is not changed.
"""
from __future__ import annotations

import dis
import functools
import types
from typing import Any

import torch.nn as nn


def over_copies(hook: Any, memo: dict[int, Any], done: dict[int, Any]) -> Any:
    """``hook`` with every closure cell (and default) that holds an object ``memo`` copied
    holding its copy instead, through ``functools.partial`` and into functions held in cells;
    ``hook`` itself where nothing changes. ``done``: the functions already rebuilt, by id (a
    closure that refers to itself is rebuilt once).

    >>> def make_hook(feats):
    ...     return lambda m, i, o: feats.update(o=o)
    >>> feats, mine = {}, {}                      # the user's dict, and the copy's
    >>> hook = make_hook(feats)
    >>> new = over_copies(hook, {id(feats): mine}, {})
    >>> new is hook, new.__closure__[0].cell_contents is mine, hook.__closure__[0].cell_contents is feats
    (False, True, True)
    """
    if isinstance(hook, functools.partial):
        func = over_copies(hook.func, memo, done)
        return hook if func is hook.func else functools.partial(func, *hook.args, **hook.keywords)
    if isinstance(hook, types.FunctionType):
        return _rebuilt(hook, memo, done)
    return hook


def _copied(v: Any, memo: dict[int, Any]) -> Any:
    """The copy of ``v`` (``v`` itself where the copy did not copy it)."""
    return memo.get(id(v), v)


def _reaches(f: types.FunctionType, memo: dict[int, Any], seen: set[int]) -> bool:
    """Whether a cell or default of ``f``, or of a function in its cells, holds a copied object."""
    if id(f) in seen:
        return False
    seen.add(id(f))
    values = [*_cells(f), *(f.__defaults__ or ()), *(f.__kwdefaults__ or {}).values()]
    return any(_copied(v, memo) is not v or (isinstance(v, types.FunctionType) and _reaches(v, memo, seen))
               for v in values)


def _rebuilt(f: types.FunctionType, memo: dict[int, Any], done: dict[int, Any]) -> types.FunctionType:
    """``f`` over the copy's objects: the same code and globals, new cells only where the
    content changes (registered in ``done`` before the cells are filled, for closures that
    hold themselves)."""
    if id(f) in done:
        return done[id(f)]
    if not _reaches(f, memo, set()):
        done[id(f)] = f
        return f
    old = f.__closure__ or ()
    changing = [_copied(v, memo) is not v or (isinstance(v, types.FunctionType) and _reaches(v, memo, set()))
                for v in _cells(f)]
    cells = tuple(types.CellType() if c else cell for c, cell in zip(changing, old))
    defaults = None if f.__defaults__ is None else tuple(_copied(v, memo) for v in f.__defaults__)
    new = types.FunctionType(f.__code__, f.__globals__, f.__name__, defaults, cells or None)
    kw = f.__kwdefaults__
    new.__kwdefaults__ = None if kw is None else {k: _copied(v, memo) for k, v in kw.items()}
    new.__qualname__, new.__module__, new.__doc__ = f.__qualname__, f.__module__, f.__doc__
    new.__dict__.update(f.__dict__)
    done[id(f)] = new
    for c, cell, mine in zip(changing, old, cells):
        if c:
            v = cell.cell_contents
            mine.cell_contents = over_copies(v, memo, done) if isinstance(v, types.FunctionType) else _copied(v, memo)
    return new


def stranded_hooks(model: nn.Module) -> list[tuple[str, str, str, str]]:
    """The forward hooks of ``model`` that reach one of its objects (the model, a module, a dict
    or list a module holds) by a route a private copy cannot point at its own: a global the hook
    (or a global function it calls) reads, or a container in its closure that holds the object.
    Each is ``(module name, hook name, "global" | "closure", the variable's name)``.

    >>> net = nn.Sequential(nn.Conv2d(1, 1, 1))
    >>> def hook(m, i, o):
    ...     net.out = o               # net: a global of this example
    >>> def make_hook(box):
    ...     return lambda m, i, o: setattr(box[0], "out", o)
    >>> _ = net[0].register_forward_hook(hook)
    >>> _ = net[0].register_forward_hook(make_hook([net]))
    >>> stranded_hooks(net)
    [('0', 'hook', 'global', 'net'), ('0', 'make_hook.<locals>.<lambda>', 'closure', 'box')]
    """
    held = _held_ids(model)
    found = []
    for name, m in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks"):
            for hook in (m.__dict__.get(attr) or {}).values():
                f = _function_of(hook)
                if f is not None:
                    found += [(name, f.__qualname__, kind, var) for kind, var in _stranded(f, held, set())]
    return list(dict.fromkeys(found))


def _function_of(hook: Any) -> types.FunctionType | None:
    while isinstance(hook, functools.partial):
        hook = hook.func
    hook = getattr(hook, "__func__", hook)      # a bound method: its globals are read as a function's
    return hook if isinstance(hook, types.FunctionType) else None


def _held_ids(model: nn.Module) -> set[int]:
    """Ids of what a private copy copies and a hook could write into: the modules and the
    mutable values they hold as attributes."""
    held = set()
    for m in model.modules():
        held.add(id(m))
        held.update(id(v) for v in m.__dict__.values() if not isinstance(v, (bool, int, float, str, bytes, type(None))))
    return held


def _holds(v: Any, held: set[int]) -> bool:
    items = v.values() if isinstance(v, dict) else v if isinstance(v, (list, tuple, set)) else ()
    return any(id(x) in held for x in items)


def _stranded(f: types.FunctionType, held: set[int], seen: set[int], through: str | None = None):
    """(kind, name) for each route by which ``f`` reaches a held object that no copy redirects;
    ``through``: the global name by which the hook reached ``f`` (then all of ``f``'s routes are)."""
    if id(f) in seen:
        return
    seen.add(id(f))
    for name in sorted(_globals_read(f.__code__)):
        v = f.__globals__.get(name)
        if id(v) in held or _holds(v, held):
            yield "global", through or name
        elif isinstance(v, types.FunctionType):
            yield from _stranded(v, held, seen, through or name)
    for var, v in zip(f.__code__.co_freevars, _cells(f)):
        if through is not None and id(v) in held:
            yield "global", through
        elif _holds(v, held):
            yield ("global", through) if through else ("closure", var)
        elif isinstance(v, types.FunctionType):
            yield from _stranded(v, held, seen, through)


def _cells(f: types.FunctionType) -> list[Any]:
    """What each closure cell of ``f`` holds (None for a cell not yet filled: a name assigned
    after the def)."""
    out = []
    for cell in f.__closure__ or ():
        try:
            out.append(cell.cell_contents)
        except ValueError:
            out.append(None)
    return out


def _globals_read(code: types.CodeType) -> set[str]:
    """The global names ``code`` (and the code nested in it: lambdas, comprehensions) loads or
    stores; not its attribute names, which ``co_names`` mixes in."""
    names = {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "STORE_GLOBAL")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _globals_read(const)
    return names

