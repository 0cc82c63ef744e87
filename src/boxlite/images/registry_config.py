"""Registry settings: the ``ImageRegistry`` dataclass, BoxLite config and docker credentials."""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .reference import DOCKER_HUB


@dataclass(frozen=True)
class ImageRegistry:
    """How to reach one registry host.

    ``transport`` is ``"https"`` (default) or ``"http"`` (plain HTTP is never used unless
    declared here). Registries with ``search=True`` are tried, in order, for unqualified names
    such as ``alpine`` before Docker Hub (mirrors, private registries).
    """

    host: str
    transport: str = "https"
    skip_verify: bool = False
    username: str | None = None
    password: str | None = None
    bearer_token: str | None = None
    search: bool = False

    def __repr__(self) -> str:
        """Secrets masked: options end up in logs and tracebacks."""
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("password", "bearer_token"):
            if shown[key] is not None:
                shown[key] = "***"
        return f"ImageRegistry({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def __post_init__(self) -> None:
        if not self.host or "/" in self.host or self.host != self.host.strip():
            raise ConfigError(f"invalid registry host {self.host!r}")
        if self.transport not in ("https", "http"):
            raise ConfigError(f"registry transport must be 'https' or 'http', not {self.transport!r}")
        if (self.username is None) != (self.password is None):
            raise ConfigError(f"registry {self.host}: username and password go together")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageRegistry:
        """Build from a JSON object (unknown keys are an error). Also BoxLite's shape: ``auth``
        as ``{"type": "anonymous" | "basic" (username, password) | "bearer" (token)}``, and its
        documented ``protocol`` for ``transport``."""
        if not isinstance(data, dict) or "host" not in data:
            raise ConfigError(f"image registry entry needs a 'host': {_masked(data)!r}")
        data = dict(data)
        if "protocol" in data:
            if "transport" in data:
                raise ConfigError(f"registry {data['host']}: give 'transport' or 'protocol', not both")
            data["transport"] = data.pop("protocol")
        if "auth" in data:
            data.update(_auth_fields(data.pop("auth"), data["host"], data))
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown image registry keys: {sorted(unknown)}")
        for key in ("host", "transport", "username", "password", "bearer_token"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ConfigError(f"registry {data['host']!r}: {key} must be a string")
        for key in ("skip_verify", "search"):
            if key in data and not isinstance(data[key], bool):
                raise ConfigError(f"registry {data['host']!r}: {key} must be true or false")
        return cls(**data)


def _masked(data: object) -> object:
    """``data`` with its secrets replaced, for error messages."""
    if not isinstance(data, dict):
        return type(data).__name__
    return {k: "***" if k in ("password", "bearer_token", "token", "auth") else v for k, v in data.items()}


def _auth_fields(auth: object, host: object, data: dict[str, Any]) -> dict[str, Any]:
    """Our flat fields for BoxLite's tagged ``auth`` object."""
    if any(k in data for k in ("username", "password", "bearer_token")):
        raise ConfigError(f"registry {host!r}: give 'auth' or username/password/bearer_token, not both")
    kind = auth.get("type") if isinstance(auth, dict) else None
    expected = {"anonymous": set(), "basic": {"username", "password"}, "bearer": {"token"}}
    if not isinstance(auth, dict) or kind not in expected or set(auth) - {"type"} != expected[kind]:
        raise ConfigError(
            f'registry {host!r}: \'auth\' must be {{"type": "anonymous"}}, {{"type": "basic", '
            f'"username": ..., "password": ...}} or {{"type": "bearer", "token": ...}}'
        )
    if kind == "basic":
        return {"username": auth["username"], "password": auth["password"]}
    if kind == "bearer":
        return {"bearer_token": auth["token"]}
    return {}


def load_registries_from_config(home: Path) -> list[ImageRegistry]:
    """Read ``image_registries`` from ``<home>/config.json`` (missing file → empty list)."""
    path = Path(home) / "config.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from e
    entries = doc.get("image_registries", []) if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: 'image_registries' must be a list")
    return [ImageRegistry.from_dict(e) for e in entries]


def _docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io")


def docker_credentials(host: str, path: Path | None = None) -> tuple[str, str] | None:
    """(username, password) for ``host`` from the docker client config ``auths``, if any."""
    path = path or _docker_config_path()
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    auths = doc.get("auths") if isinstance(doc, dict) else None
    if not isinstance(auths, dict):
        return None
    wanted = {host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"}
    if host == DOCKER_HUB:
        wanted.update(_HUB_KEYS)
    for key, entry in auths.items():
        if key.rstrip("/") not in {w.rstrip("/") for w in wanted} or not isinstance(entry, dict):
            continue
        if entry.get("username") and entry.get("password"):
            return str(entry["username"]), str(entry["password"])
        auth = entry.get("auth")
        if isinstance(auth, str) and auth:
            try:
                user, _, pw = base64.b64decode(auth).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                continue
            if user:
                return user, pw
    return None
