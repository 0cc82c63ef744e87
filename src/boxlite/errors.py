"""Typed errors raised by BoxLite. Every public failure is a ``BoxliteError``."""

from __future__ import annotations

import builtins


class BoxliteError(RuntimeError):
    """Base class of every error BoxLite raises on purpose.

    It subclasses ``RuntimeError`` because the reference SDK's native layer raised plain
    ``RuntimeError``: code catching either keeps working.
    """


class ConfigError(BoxliteError, ValueError):
    """An option or argument has a wrong value."""


class UnsupportedOptionError(BoxliteError, NotImplementedError):
    """An option that this version does not implement was given a value."""

    def __init__(self, option: str, detail: str = "") -> None:
        self.option = option
        msg = f"option {option!r} is not supported yet"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class ParseError(BoxliteError, ValueError):
    """Input text (an image reference, a port or volume spec, a manifest) is malformed."""


class NotFoundError(BoxliteError, LookupError):
    """No box, image or file with that name or id."""


class AlreadyExistsError(BoxliteError):
    """A box with that name exists already."""


class InvalidStateError(BoxliteError):
    """The box is not in a state that allows the operation (e.g. exec on a stopped box)."""


class ExecError(BoxliteError):
    """A command could not be started in the box, or failed where success was required."""

    def __init__(self, command: str, exit_code: int = 127, stderr: str = "") -> None:
        self.command = command
        self.exit_code = exit_code
        self.stderr = stderr
        super().__init__(f"Command '{command}' failed with exit code {exit_code}: {stderr}")


class TimeoutError(BoxliteError, builtins.TimeoutError):
    """An operation did not finish in time."""


class EngineError(BoxliteError):
    """The isolation engine failed to start or control a box."""


class BoxDiedError(EngineError):
    """The box's supervisor (agent, VM) died while an operation was running."""


class ImageError(BoxliteError):
    """An image could not be pulled, verified, unpacked or found."""


class RegistryError(ImageError):
    """A registry answered with an error or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthenticationError(RegistryError):
    """The registry refused our credentials (401/403)."""


class DigestMismatchError(ImageError):
    """A downloaded blob's digest or size does not match what the manifest promised."""


class UnsafeLayerError(ImageError):
    """A layer tries to write outside its own directory (path traversal, link escape)."""


class RpcError(BoxliteError):
    """The agent sent something that is not valid protocol."""


class AgentProtocolError(BoxDiedError, RpcError):
    """The box's agent broke the protocol (a frame too large, output beyond the credit it was
    granted): a broken or hostile guest. The connection was dropped; calls on it fail with this."""


class AgentTimeoutError(TimeoutError):
    """The box's agent did not accept the connection or answer a request within its deadline."""


class UnauthorizedError(BoxliteError):
    """A BoxLite server refused the API key (HTTP 401)."""


class PermissionDeniedError(BoxliteError):
    """The caller may not do this here (HTTP 403): e.g. a REST client naming a server host path
    outside the server's ``--allow-host-path`` directories."""


class StoppedError(BoxliteError):
    """The runtime was shut down; it accepts no new operations."""


class StorageError(BoxliteError):
    """The runtime home (state database, box files) could not be read or written."""


class DatabaseError(StorageError):
    """The SQLite state database failed."""


class NetworkError(BoxliteError):
    """Box networking (ports, NIC) could not be set up."""


class ResourceExhaustedError(BoxliteError):
    """A resource limit of the host or the box was hit."""


class RequestTooLargeError(ResourceExhaustedError):
    """A request body is larger than the server accepts (HTTP 413)."""


class InternalError(BoxliteError):
    """A bug in BoxLite: please report it."""


# Names of the reference SDK kept as aliases.
ProtocolError = RpcError
StateError = InvalidStateError
ExecutionError = ExecError
InvalidArgumentError = ConfigError
PortalError = RpcError


class ImageNotFoundError(RegistryError, NotFoundError):
    """The registry (or local store) has no such image, tag or blob."""


class ImageTooLargeError(ImageError, ResourceExhaustedError):
    """An image goes past a configured limit (layer expansion, entry count, manifest or config size)."""


class RegistryTimeoutError(RegistryError, TimeoutError):
    """A registry transfer missed the pull deadline or stalled below the minimum speed."""


class UnsafeArchiveError(BoxliteError):
    """A copy archive from a box is malformed or tries to write outside its destination
    (absolute or ``..`` names, paths through symlinks, links out, paths too deep or long)."""
