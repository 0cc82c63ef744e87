"""Ship a host function (a handler or task) to a managed box, with the standard library only.

BoxLite uses cloudpickle; here a function becomes its marshalled code object plus what it needs
(defaults, closure values, the globals its code names: modules by name, functions recursively,
anything else pickled). The box's ``boxlite_runtime`` rebuilds it, so both sides must run the
same Python minor version. Values are pickled host -> box only: the host never unpickles
anything a box sends (box -> host is JSON).
"""

from __future__ import annotations

import base64
import marshal
import pickle
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import ConfigError


def _names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


def encode(value: Any, memo: dict[int, int]) -> tuple[Any, ...]:
    if isinstance(value, types.ModuleType):
        return ("module", value.__name__)
    if isinstance(value, types.FunctionType):
        if id(value) in memo:
            return ("ref", memo[id(value)])
        key = memo[id(value)] = len(memo)
        glb = {}
        for name in sorted(set(_names(value.__code__))):
            if name in value.__globals__:
                glb[name] = encode(value.__globals__[name], memo)
        cells = [_cell(c, memo) for c in value.__closure__ or ()]
        defaults = None if value.__defaults__ is None else [encode(d, memo) for d in value.__defaults__]
        kwdefaults = (
            None if value.__kwdefaults__ is None else {k: encode(v, memo) for k, v in value.__kwdefaults__.items()}
        )
        return ("fn", key, marshal.dumps(value.__code__), value.__name__, defaults, kwdefaults, glb, cells)
    if id(value) in memo:  # the same object in two places stays one object in the box
        return ("ref", memo[id(value)])
    try:
        data = pickle.dumps(value, protocol=4)
        key = memo[id(value)] = len(memo)
        return ("pickle", key, data)
    except Exception as e:
        raise ConfigError(f"cannot ship {type(value).__name__} value {value!r:.80} to a box: {e}") from e


def _cell(cell: types.CellType, memo: dict[int, int]) -> tuple[Any, ...]:
    """A closure cell, shared by every function closing over the same variable."""
    if id(cell) in memo:
        return ("ref", memo[id(cell)])
    key = memo[id(cell)] = len(memo)
    try:
        contents = encode(cell.cell_contents, memo)
    except ValueError:  # an empty cell (a variable not assigned yet)
        return ("cell", key, None)
    return ("cell", key, contents)


def encode_payload(
    task: Callable[..., Any] | None,
    message_handlers: list[Callable[..., Any]],
    event_handlers: dict[str, list[Callable[..., Any]]],
) -> bytes:
    """The base64 payload ``boxlite_runtime._main`` loads in the box."""
    memo: dict[int, int] = {}
    for fn in [task, *message_handlers, *(h for hs in event_handlers.values() for h in hs)]:
        if fn is not None and not isinstance(fn, types.FunctionType):
            raise ConfigError(f"handlers and tasks must be plain functions, not {type(fn).__name__}")
    payload = {
        "python": list(sys.version_info[:2]),
        "task": None if task is None else encode(task, memo),
        "message_handlers": [encode(h, memo) for h in message_handlers],
        "event_handlers": {str(e): [encode(h, memo) for h in hs] for e, hs in event_handlers.items()},
    }
    return base64.b64encode(pickle.dumps(payload, protocol=4))
