"""JSON through CPython's ``_json`` C module, without importing the ``json`` package.

``json.decoder`` imports ``re``, which imports ``enum``, ``functools`` and ``collections``: ~9 ms
of a whole ``boxlite exec`` process (~40 ms) spent before a byte is sent. The agent protocol's
bodies and the box records need only the C scanner and encoder that ``json`` itself uses, so
this module builds them directly. Output equals ``json.dumps(obj, separators=(",", ":"))`` and
input is read as ``json.loads`` reads text; a Python without ``_json`` gets the ``json`` package.
Errors are ``ValueError`` (bad text, nesting too deep included) or ``TypeError`` (a value JSON
cannot hold).
Stdlib only.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not imported from typing: this module exists to stay small
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_SPACE = " \t\n\r"
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


def _unserializable(obj: object) -> object:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


class _ScanContext:
    """The attributes ``_json.make_scanner`` reads from a ``json.JSONDecoder``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


try:
    import _json
except ImportError:  # pragma: no cover - every CPython we support has it
    _json = None  # type: ignore[assignment]

if _json is not None:
    _scan: Callable[[str, int], tuple[Any, int]] = _json.make_scanner(_ScanContext())  # type: ignore[arg-type]  # duck-typed JSONDecoder

    def dumps(obj: Any) -> str:
        """``json.dumps(obj, separators=(",", ":"))``: ASCII, compact."""
        encoder = _json.make_encoder(
            {}, _unserializable, _json.encode_basestring_ascii, None, ":", ",", False, False, True
        )
        return "".join(encoder(obj, 0))

    def loads(data: str | bytes | bytearray) -> Any:
        """``json.loads(data)`` for UTF-8 (or ASCII) input."""
        text = data if isinstance(data, str) else bytes(data).decode("utf-8")
        start = len(text) - len(text.lstrip(_SPACE))
        try:
            value, end = _scan(text, start)
        except StopIteration as e:
            raise ValueError(f"Expecting value: char {e.value}") from None
        except RecursionError:  # json.loads lets it escape: a peer's "[[[[..." is bad text like any other
            raise ValueError("JSON nested too deeply") from None
        except SystemError:  # a malformed object or string: the scanner raises json.decoder.JSONDecodeError,
            raise ValueError(f"Invalid JSON: {text[start : start + 40]!r}...") from None  # only if json is loaded
        if text[end:].strip(_SPACE):
            raise ValueError(f"Extra data: char {end}")
        return value

else:  # pragma: no cover
    import json as _full

    def dumps(obj: Any) -> str:
        return _full.dumps(obj, separators=(",", ":"))

    def loads(data: str | bytes | bytearray) -> Any:
        return _full.loads(data)
