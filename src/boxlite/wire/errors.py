"""Errors on the wire: the JSON form of a ``BoxliteError`` and the HTTP status it travels with.

Errors travel as ``{"error": {"type": <BoxliteError subclass name>, "message": ...}}`` so a REST
client raises the same typed errors as a local runtime.
"""

from __future__ import annotations

from typing import Any

from .. import errors

_STATUS: list[tuple[type[errors.BoxliteError], int]] = [
    (errors.NotFoundError, 404),
    (errors.AlreadyExistsError, 409),
    (errors.InvalidStateError, 409),
    (errors.UnsupportedOptionError, 400),
    (errors.ConfigError, 400),
    (errors.ParseError, 400),
    (errors.UnsafeArchiveError, 400),  # an uploaded archive (import, copy_in) the client got wrong
    (errors.ExecError, 400),
    (errors.PermissionDeniedError, 403),
    (errors.TimeoutError, 504),
    (errors.RequestTooLargeError, 413),
    (errors.StoppedError, 503),
    (errors.RegistryError, 502),
]


def http_status(exc: BaseException) -> int:
    """The HTTP status the server answers ``exc`` with."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def encode_error(exc: BaseException) -> dict[str, Any]:
    """JSON form of an exception (non-BoxLite exceptions become ``InternalError``)."""
    name = "InternalError"
    if isinstance(exc, errors.BoxliteError):  # the nearest public class (the client rebuilds it)
        name = next(c.__name__ for c in type(exc).__mro__ if getattr(errors, c.__name__, None) is c)
    body: dict[str, Any] = {"type": name, "message": str(exc)}
    if isinstance(exc, errors.ExecError):
        body.update(command=exc.command, exit_code=exc.exit_code, stderr=exc.stderr)
    if isinstance(exc, errors.RegistryError):
        body["status"] = exc.status
    if isinstance(exc, errors.UnsupportedOptionError):
        body["option"] = exc.option
    return body


def decode_error(body: Any, status: int | None = None) -> errors.BoxliteError:
    """Rebuild the typed error the server reported (``str(err)`` is the server's message)."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return errors.BoxliteError(f"server error {status}: {body!r}")
    cls = getattr(errors, str(err.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.BoxliteError)):
        cls = errors.BoxliteError
    exc = cls.__new__(cls)
    Exception.__init__(exc, str(err.get("message", "")))
    for key in ("command", "exit_code", "stderr", "status", "option"):
        if key in err:
            setattr(exc, key, err[key])
    return exc
