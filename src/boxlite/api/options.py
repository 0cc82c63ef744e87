"""Runtime and box options (names and defaults follow the public BoxLite SDK)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError, UnsupportedOptionError
from ..fsutil.extract import DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, DEFAULT_TIMEOUT
from ..images.registry_config import ImageRegistry

ENGINES = ("auto", "namespace", "vm")
DEFAULT_MEMORY_MIB = 512  # a box's memory limit when none is asked for (BoxLite's default too)
MAX_OPTIONS_BYTES = 512 * 1024
"""A box's options are stored with it (state.db): their JSON form (env, cmd, volumes...) is capped."""


@dataclass
class Options:
    """Runtime options: where the home is and which registries to use."""

    home_dir: str | None = None
    image_registries: list[ImageRegistry] = field(default_factory=list)
    engine: str | None = None
    """Default engine for boxes that do not name one ("auto", "namespace" or "vm")."""


@dataclass
class NetworkSpec:
    """``mode``: "enabled" or "disabled"; ``allow_net``: outbound host allow-list."""

    mode: str = "enabled"
    allow_net: list[str] = field(default_factory=list)


@dataclass
class SecurityOptions:
    """Per-box hardening knobs (accepted for compatibility; boxes are always confined)."""

    jailer_enabled: bool = False
    seccomp_enabled: bool = False
    max_open_files: int | None = None
    max_file_size: int | None = None
    max_processes: int | None = None
    max_memory: int | None = None
    max_cpu_time: int | None = None
    network_enabled: bool = True
    close_fds: bool = True


@dataclass
class AdvancedBoxOptions:
    security: SecurityOptions | None = None
    health_check: Any = None
    capabilities: Any = None


@dataclass
class CopyOptions:
    recursive: bool = True
    overwrite: bool = True
    follow_symlinks: bool = False
    include_parent: bool = True
    # copy_out limits (what a box may make the host write; exceeding one raises a BoxliteError)
    max_bytes: int = DEFAULT_MAX_BYTES  # tar bytes received from the box
    max_entries: int = DEFAULT_MAX_ENTRIES  # files, directories and links
    timeout: float | None = DEFAULT_TIMEOUT  # seconds; None: no deadline


@dataclass
class BoxOptions:
    """How to build and run one box."""

    image: str | None = None
    rootfs_path: str | None = None
    cpus: float | None = None
    memory_mib: int | None = None
    disk_size_gb: float | None = None
    working_dir: str | None = None
    env: Sequence[tuple[str, str]] | Mapping[str, str] = field(default_factory=list)
    volumes: list[Any] = field(default_factory=list)
    network: NetworkSpec | str | None = None
    ports: list[Any] = field(default_factory=list)
    auto_remove: bool | None = True
    detach: bool | None = False
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    user: str | None = None
    advanced: AdvancedBoxOptions | None = None
    secrets: list[Any] = field(default_factory=list)
    engine: str | None = None
    pids_limit: int | None = None
    hostname: str | None = None
    ready_timeout: float | None = None

    def __post_init__(self) -> None:
        # No box runs without a memory limit: its tmpfs mounts are sized from it, and one box
        # must not be able to take the host's memory. None (also from the CLI and REST) means
        # the default.
        if self.memory_mib is None:
            self.memory_mib = DEFAULT_MEMORY_MIB

    def network_enabled(self) -> bool:
        """Outbound network on? Default: loopback only, unless ports are published."""
        mode = self.network.mode if isinstance(self.network, NetworkSpec) else self.network
        if mode is None:
            return bool(self.ports)
        if mode in ("enabled", "on", "outbound"):
            return True
        if mode in ("disabled", "none", "loopback", "off"):
            if self.ports:
                raise ConfigError("ports cannot be published with network disabled")
            return False
        raise ConfigError(f"network mode must be 'enabled' or 'disabled', got {mode!r}")

    def port_specs(self) -> list[tuple[str, int, int, str]]:
        """``ports`` as (host ip, host port, box port, protocol); host ip defaults to 127.0.0.1."""
        return [parse_port(p) for p in self.ports]

    def volume_specs(self) -> list[tuple[str, str, bool]]:
        """``volumes`` as (absolute host path, box path, read-only); raises ConfigError."""
        return [parse_volume(v) for v in self.volumes]

    def env_dict(self) -> dict[str, str]:
        return env_to_dict(self.env, "env")

    def validate(self) -> None:
        """Raise ConfigError / UnsupportedOptionError for values this runtime cannot honour."""
        if self.cpus is not None and not (0 < float(self.cpus) <= 512):
            raise ConfigError(f"cpus must be > 0, got {self.cpus!r}")
        if self.memory_mib is not None and not (16 <= int(self.memory_mib) <= 1 << 22):
            raise ConfigError(f"memory_mib must be between 16 and 4194304, got {self.memory_mib!r}")
        if self.disk_size_gb is not None and float(self.disk_size_gb) <= 0:
            raise ConfigError(f"disk_size_gb must be > 0, got {self.disk_size_gb!r}")
        if self.pids_limit is not None and int(self.pids_limit) < 1:
            raise ConfigError(f"pids_limit must be >= 1, got {self.pids_limit!r}")
        if self.engine is not None and self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.ready_timeout is not None and float(self.ready_timeout) <= 0:
            raise ConfigError(f"ready_timeout must be > 0, got {self.ready_timeout!r}")
        if self.working_dir is not None and not str(self.working_dir).startswith("/"):
            raise ConfigError(f"working_dir must be an absolute path, got {self.working_dir!r}")
        self.env_dict()
        size = len(json.dumps(asdict(self), default=str))
        if size > MAX_OPTIONS_BYTES:
            raise ConfigError(f"box options take {size} bytes as JSON, more than the {MAX_OPTIONS_BYTES} allowed")
        for name in ("entrypoint", "cmd"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, str) or not all(isinstance(v, str) for v in value)
            ):
                raise ConfigError(f"{name} must be a list of strings, got {value!r}")
        self.volume_specs()
        self.port_specs()
        if self.secrets:
            raise UnsupportedOptionError("secrets")
        self.network_enabled()
        if isinstance(self.network, NetworkSpec) and self.network.allow_net:
            raise UnsupportedOptionError("network.allow_net", "outbound allow-lists are not implemented yet")


def env_to_dict(env: Any, what: str) -> dict[str, str]:
    """Accept a mapping, a list of (key, value) pairs or a list of "KEY=VALUE" strings."""
    if env is None:
        return {}
    if isinstance(env, Mapping):
        items = list(env.items())
    else:
        items = []
        for entry in env:
            if isinstance(entry, str):
                key, sep, value = entry.partition("=")
                if not sep:
                    raise ConfigError(f"{what}: {entry!r} is not KEY=VALUE")
                items.append((key, value))
            elif isinstance(entry, (tuple, list)) and len(entry) == 2:
                items.append((entry[0], entry[1]))
            else:
                raise ConfigError(f"{what}: {entry!r} is not a (key, value) pair")
    out: dict[str, str] = {}
    for key, value in items:
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise ConfigError(f"{what}: invalid variable name {key!r}")
        if "\0" in str(value):
            raise ConfigError(f"{what}: value of {key} contains a NUL byte")
        out[key] = str(value)
    return out


def parse_volume(entry: Any) -> tuple[str, str, bool]:
    """A volume as (host, guest[, ro]) tuple, dict, or "host:guest[:ro|rw]" string."""
    mode: Any
    if isinstance(entry, str):
        parts = entry.split(":")
        if len(parts) not in (2, 3):
            raise ConfigError(f"volume {entry!r} is not HOST:GUEST[:ro|rw]")
        host, guest, mode = parts[0], parts[1], parts[2] if len(parts) == 3 else "rw"
    elif isinstance(entry, Mapping):
        host = entry.get("host_path", entry.get("host"))
        guest = entry.get("guest_path", entry.get("guest"))
        mode = entry.get("read_only", entry.get("ro", False))
    elif isinstance(entry, (tuple, list)) and len(entry) in (2, 3):
        host, guest = entry[0], entry[1]
        mode = entry[2] if len(entry) == 3 else False
    else:
        raise ConfigError(f"volume {entry!r}: expected (host, guest[, read_only]), a dict or 'host:guest[:ro]'")
    if mode in ("ro", "rw"):
        readonly = mode == "ro"
    elif isinstance(mode, bool):
        readonly = mode
    else:
        raise ConfigError(f"volume {entry!r}: mode must be 'ro', 'rw' or a bool")
    if not isinstance(host, str) or not isinstance(guest, str) or not host or not guest.startswith("/"):
        raise ConfigError(f"volume {entry!r}: host path and an absolute box path are required")
    path = os.path.abspath(os.path.expanduser(host))
    if not os.path.exists(path):
        raise ConfigError(f"volume {entry!r}: host path {path} does not exist")
    return path, os.path.normpath(guest), readonly


def parse_port(entry: Any) -> tuple[str, int, int, str]:
    """A port as (host, guest[, proto[, host_ip]]) tuple, dict, or "[ip:]host:guest[/proto]"."""
    host_ip, protocol = "127.0.0.1", "tcp"
    if isinstance(entry, str):
        spec, _, proto = entry.partition("/")
        parts = spec.rsplit(":", 2)
        if len(parts) == 3:
            host_ip, host, guest = parts
        elif len(parts) == 2:
            host, guest = parts
        else:
            host = guest = parts[0]
        protocol = proto or "tcp"
    elif isinstance(entry, Mapping):
        guest = entry.get("guest_port", entry.get("guest"))
        host = entry.get("host_port", entry.get("host")) or guest
        protocol = entry.get("protocol") or "tcp"
        host_ip = entry.get("host_ip") or host_ip
    elif isinstance(entry, (tuple, list)) and 2 <= len(entry) <= 4:
        host, guest = entry[0], entry[1]
        protocol = (entry[2] if len(entry) > 2 else None) or "tcp"
        host_ip = (entry[3] if len(entry) > 3 else None) or host_ip
    else:
        raise ConfigError(f"port {entry!r}: expected (host_port, guest_port[, protocol[, host_ip]])")
    try:
        host_port, guest_port = int(host), int(guest)
    except (TypeError, ValueError):
        raise ConfigError(f"port {entry!r}: ports must be integers") from None
    if not (0 < host_port < 65536 and 0 < guest_port < 65536):
        raise ConfigError(f"port {entry!r}: ports must be between 1 and 65535")
    protocol = str(protocol).lower()
    if protocol not in ("tcp", "udp"):
        raise ConfigError(f"port {entry!r}: protocol must be tcp or udp")
    return str(host_ip), host_port, guest_port, protocol
