"""Stored logins of the CLI: ``<home>/credentials.toml`` (``~/.boxlite/credentials.toml`` by default).

BoxLite's file: one ``[profiles.NAME]`` table per login, with ``url`` and ``api_key`` (BoxLite's
CLI may add ``path_prefix``, OIDC tokens and more; those fields are kept when we rewrite the
file). ``boxlite auth login`` writes it; every verb then works on that server unless ``--url`` or
``--ray`` says otherwise.

The file holds a secret that every later command sends, and its URL decides where a command's
boxes, files and environment go: it is only read when it is a regular file of this user that
nobody else can write (not a symbolic link), at most ``MAX_FILE`` bytes; it is written 0600
through a new file renamed into place, in a directory created 0700.
"""

from __future__ import annotations

import os
import re
import stat
from datetime import date, datetime, time
from typing import Any

from ..errors import ConfigError
from .homepath import home_root

FILE_NAME = "credentials.toml"
DEFAULT_PROFILE = "default"
MAX_FILE = 1 << 20
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


home_dir = home_root
"""The home the CLI uses (cli/homepath.py)."""


def path(home: str | None) -> str:
    return os.path.join(home_dir(home), FILE_NAME)


def exists(home: str | None) -> bool:
    """Whether a credentials file is there at all (one ``lstat``: the lean paths' test)."""
    return os.path.lexists(path(home))


def check_name(name: str) -> str:
    if not _BARE_KEY.fullmatch(name):
        raise ConfigError(f"profile names are 1-64 letters, digits, '-' or '_', got {name!r}")
    return name


def load_all(home: str | None) -> dict[str, dict[str, Any]]:
    """Every profile of the file ({} when there is none); ConfigError for a file that is unsafe
    to trust or not what BoxLite writes (it is never treated as "no login")."""
    file = path(home)
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError(f"cannot read the credentials file {file}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"the credentials file {file} is not a regular file")
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise ConfigError(
                f"the credentials file {file} is not trusted: it must belong to this user and be writable by "
                "nobody else (chmod 600)"
            )
        raw = os.read(fd, MAX_FILE + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE:
        raise ConfigError(f"the credentials file {file} is larger than {MAX_FILE} bytes")
    import tomllib

    try:
        data = tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"the credentials file {file} is not valid TOML: {e}") from None
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict) or not all(isinstance(p, dict) for p in profiles.values()):
        raise ConfigError(f"the credentials file {file} has no [profiles.NAME] tables")
    for name, profile in profiles.items():
        if not isinstance(profile.get("url"), str) or not profile["url"]:
            raise ConfigError(f"profile {name!r} of the credentials file {file} has no url")
    return profiles


def load(home: str | None, name: str) -> dict[str, Any] | None:
    return load_all(home).get(check_name(name))


def save(home: str | None, name: str, profile: dict[str, Any]) -> str:
    """Store ``profile`` as ``name`` (other profiles kept); returns the file's path."""
    profiles = load_all(home)
    profiles[check_name(name)] = profile
    _write(home, profiles)
    return path(home)


def delete(home: str | None, name: str) -> bool:
    """Remove the profile ``name``; the file goes with its last profile. False when absent."""
    profiles = load_all(home)
    if profiles.pop(check_name(name), None) is None:
        return False
    if profiles:
        _write(home, profiles)
    else:
        os.unlink(path(home))
    return True


def bearer(profile: dict[str, Any]) -> str | None:
    """The token a profile authenticates with: its API key, or an OIDC access token (BoxLite's
    CLI refreshes those; we do not: an expired one is refused by the server)."""
    token = profile.get("access_token" if profile.get("auth_method") == "oidc" else "api_key")
    return token if isinstance(token, str) and token else None


def dumps(profiles: dict[str, dict[str, Any]]) -> str:
    """The file's TOML: one ``[profiles.NAME]`` table each, keys in their order."""
    out: list[str] = []
    for name, profile in profiles.items():
        out.append(f"[profiles.{_key(name)}]")
        out.extend(f"{_key(k)} = {_value(v, k)}" for k, v in profile.items())
        out.append("")
    return "\n".join(out)


def _write(home: str | None, profiles: dict[str, dict[str, Any]]) -> None:
    text = dumps(profiles).encode()
    root = home_dir(home)
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create {root}: {e.strerror}") from None
    tmp = os.path.join(root, f".{FILE_NAME}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            view = memoryview(text)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path(home))  # replaces a symbolic link there, never writes through it
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ConfigError(f"cannot write the credentials file {path(home)}: {e.strerror}") from None


def _key(key: str) -> str:
    if _BARE_KEY.fullmatch(key):
        return key
    return _string(key)


def _string(text: str) -> str:
    escaped = []
    for ch in text:
        if ch in ('"', "\\"):
            escaped.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            escaped.append(f"\\u{ord(ch):04X}")
        else:
            escaped.append(ch)
    return '"' + "".join(escaped) + '"'


def _value(value: object, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_value(v, key) for v in value) + "]"
    raise ConfigError(f"cannot rewrite the credentials file: field {key!r} holds a {type(value).__name__}")
