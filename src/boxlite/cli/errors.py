"""Exit codes and one-line error reporting (docker conventions)."""

from __future__ import annotations

import functools

import click

from ..errors import BoxliteError, ExecError

EXIT_RUNTIME = 125  # boxlite itself failed (bad option, box/image not found, engine error)
EXIT_CANNOT_EXEC = 126  # the command exists but cannot be run (permissions, bad user/cwd)
EXIT_NOT_FOUND = 127  # the command was not found in the box
EXIT_INTERRUPTED = 130


class CliError(click.ClickException):
    """An error the CLI reports as one line, with an exit code.

    click declares ``exit_code`` a class variable (``ClassVar[int]`` since 8.2), so each exit code
    is a subclass (:func:`fail` picks it) rather than an instance attribute."""

    exit_code = EXIT_RUNTIME

    def show(self, file: object = None) -> None:
        print_error(self.message)


@functools.cache
def _error_class(exit_code: int) -> type[CliError]:
    """The CliError subclass whose class-level ``exit_code`` is ``exit_code`` (one per code)."""
    if exit_code == CliError.exit_code:
        return CliError
    return type(f"CliError{exit_code}", (CliError,), {"exit_code": exit_code, "__module__": __name__})


def print_error(message: str) -> None:
    line = " ".join(str(message).split("\n")[0].split()) if message else "unknown error"
    click.echo(f"boxlite: error: {line}", err=True)


def describe(exc: BaseException) -> tuple[str, int]:
    """(one-line message, exit code) for an exception raised by the SDK."""
    if isinstance(exc, ExecError):
        detail = exc.stderr.strip() or str(exc)
        code = exc.exit_code if exc.exit_code in (EXIT_CANNOT_EXEC, EXIT_NOT_FOUND) else EXIT_CANNOT_EXEC
        return detail, code
    if isinstance(exc, BoxliteError):
        return str(exc) or type(exc).__name__, EXIT_RUNTIME
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), EXIT_RUNTIME
    return f"{type(exc).__name__}: {exc}", EXIT_RUNTIME


def fail(message: str, exit_code: int = EXIT_RUNTIME) -> CliError:
    return _error_class(exit_code)(message)
