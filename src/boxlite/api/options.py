"""Runtime and box options (names and defaults follow the public BoxLite SDK)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError, UnsupportedOptionError
from ..fsutil.copylimits import DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, DEFAULT_TIMEOUT
from ..images.registry_config import ImageRegistry
from ..runtime.config import (
    VOLUME_ID,
    VOLUME_PREFIX,
    BoxConfig,
    PortMapping,
    SecretRule,
    VolumeMount,
    env_to_dict,
    parse_number,
    parse_strings,
)
from .advanced import apply_advanced

DEFAULT_MEMORY_MIB = 512  # a box's memory limit when none is asked for (BoxLite's default too)
DEFAULT_CPUS = 1
"""CPUs of a box asking for none (BoxLite's default): 1 vCPU on the VM engine, a cgroup quota of
one CPU on the namespace engine (one box cannot take every host CPU unless asked to)."""
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
    """``mode``: "enabled" or "disabled"; ``allow_net``: outbound host allow-list;
    ``public_only``: outbound flows to public addresses only (not the host's LAN: private, CGNAT
    and unique-local networks are refused; an extension of ours, docs/network.md)."""

    mode: str = "enabled"
    allow_net: list[str] = field(default_factory=list)
    public_only: bool = False


SECRET_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
"""Where a box with secrets finds the image's CA bundle plus its own CA (its proxy's TLS)."""


def parse_secret(entry: Any) -> SecretRule:
    """A ``Secret`` (api/later.py), or a dict with its fields (REST, CLI), as the runtime's rule."""
    if isinstance(entry, Mapping):
        name, value, hosts, placeholder = (entry.get(k) for k in ("name", "value", "hosts", "placeholder"))
    elif all(hasattr(entry, k) for k in ("name", "value", "hosts")):
        name, value, hosts, placeholder = entry.name, entry.value, entry.hosts, getattr(entry, "placeholder", None)
    else:
        raise ConfigError(f"secrets: expected Secret(name, value, hosts=[...]), got {type(entry).__name__}")
    if isinstance(hosts, str) or not isinstance(hosts, (list, tuple)):
        raise ConfigError(f"secret {name!r}: hosts must be a list of host names")
    if not isinstance(name, str):
        raise ConfigError(f"secret name must be a string, got {name!r}")
    return SecretRule(
        name, value if isinstance(value, str) else "", tuple(hosts), placeholder or f"<BOXLITE_SECRET:{name}>"
    )


def secret_env(rules: tuple[SecretRule, ...]) -> dict[str, str]:
    """What a box with secrets gets in its env: the placeholders, and the bundle holding its CA."""
    env = {"BOXLITE_SECRET_" + "".join(c if c.isalnum() else "_" for c in r.name).upper(): r.placeholder for r in rules}
    if rules:
        env.update(
            SSL_CERT_FILE=SECRET_CA_BUNDLE, REQUESTS_CA_BUNDLE=SECRET_CA_BUNDLE, NODE_EXTRA_CA_CERTS=SECRET_CA_BUNDLE
        )
    return env


@dataclass
class SecurityOptions:
    """Per-box hardening (BoxLite's names). The rlimits (``max_open_files``, ``max_file_size`` in
    bytes, ``max_cpu_time`` in seconds) apply to every box process; ``max_processes`` and
    ``max_memory`` (bytes) tighten the box's cgroup; ``network_enabled=False`` cuts its network.
    Seccomp, no_new_privs and closed fds are always on: asking for less changes nothing."""

    jailer_enabled: bool = False
    seccomp_enabled: bool = False
    max_open_files: int | None = None
    max_file_size: int | None = None
    max_processes: int | None = None
    max_memory: int | None = None
    max_cpu_time: int | None = None
    network_enabled: bool = True
    close_fds: bool = True

    # BoxLite's presets. Ours never confine less than always (seccomp, no_new_privs, fds closed);
    # what a preset adds beyond that is honoured or refused (api/advanced.py).
    @staticmethod
    def development() -> SecurityOptions:
        return SecurityOptions(close_fds=False)

    @staticmethod
    def standard() -> SecurityOptions:
        return SecurityOptions(jailer_enabled=True, seccomp_enabled=True)

    @staticmethod
    def maximum() -> SecurityOptions:
        return SecurityOptions(jailer_enabled=True, seccomp_enabled=True, max_open_files=1024,
                               max_file_size=1024 * 1024 * 1024, max_processes=100)  # fmt: skip


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
class SnapshotOptions:
    """Options of ``box.snapshot.create`` (none, as in BoxLite)."""


@dataclass
class ExportOptions:
    """Options of ``box.export``: ``include_image=False`` leaves the image out (the importing
    runtime pulls it by reference); ``compression``: "none" or "gzip"; ``max_bytes``: the
    largest archive to write (``ResourceExhaustedError`` beyond it, nothing left at ``dest``;
    through a server, checked against the size it announces and counted as it arrives)."""

    include_image: bool = True
    compression: str = "none"
    max_bytes: int | None = None

    def check(self) -> ExportOptions:
        value = self.max_bytes
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ConfigError(f"ExportOptions.max_bytes must be a positive integer or None, not {value!r}")
        return self


@dataclass
class CloneOptions:
    """Options of ``box.clone_box`` (none, as in BoxLite)."""


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
    auto_remove: bool | None = None
    """Remove the box when it stops. None: True, except for a detached box (BoxLite rejects
    the combination; only an explicit ``auto_remove=True`` with ``detach=True`` is an error here)."""
    detach: bool | None = False
    auto_delete: int | None = None
    """BoxLite's successor of ``auto_remove``: 0 keeps the box after stop, > 0 removes it (a
    local runtime has no sweeper, so at once). Takes precedence over ``auto_remove``."""
    auto_pause: int | None = None
    """Idle seconds (no exec running or started, no file copy) after which the process using the
    box pauses it, memory kept (0/None: never). BoxLite's cloud runtime stops it instead."""
    auto_resume: bool | None = None
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

    def removes_on_stop(self) -> bool:
        """The effective remove-on-stop policy (``auto_delete`` first, then ``auto_remove``)."""
        if self.auto_delete is not None:
            if isinstance(self.auto_delete, bool) or not isinstance(self.auto_delete, int) or self.auto_delete < 0:
                raise ConfigError(f"auto_delete must be a non-negative integer, got {self.auto_delete!r}")
            return self.auto_delete > 0
        if self.auto_remove is None:
            return not self.detach
        return bool(self.auto_remove)

    def _auto_pause(self) -> int:
        """Idle seconds before the box is paused (0/None: never)."""
        value = self.auto_pause
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"auto_pause must be a non-negative integer (seconds), got {value!r}")
        return value

    def network_enabled(self) -> bool:
        """Outbound network on? Default: on (outbound NAT), as in BoxLite; the host guard still
        keeps the box off the host's loopback and addresses. ``"disabled"``: loopback only."""
        mode = self.network.mode if isinstance(self.network, NetworkSpec) else self.network
        if mode is None or mode is True:
            return True
        if mode is False:
            mode = "disabled"
        if mode in ("enabled", "on", "outbound"):
            return True
        if mode in ("disabled", "none", "loopback", "off"):
            if self.ports:
                raise ConfigError("ports cannot be published with network disabled")
            return False
        raise ConfigError(f"network mode must be 'enabled' or 'disabled', got {mode!r}")

    def env_dict(self) -> dict[str, str]:
        return env_to_dict(self.env, "env")

    def to_config(self) -> BoxConfig:
        """The runtime's typed config for these options: the one place user input (strings,
        tuples, dicts) is parsed. Raises ConfigError / UnsupportedOptionError for values this
        runtime cannot honour."""
        size = len(json.dumps(asdict(self), default=str))
        if size > MAX_OPTIONS_BYTES:
            raise ConfigError(f"box options take {size} bytes as JSON, more than the {MAX_OPTIONS_BYTES} allowed")
        secrets = tuple(parse_secret(s) for s in self.secrets or ())
        network = self.network_enabled()
        auto_remove = self.removes_on_stop()
        if auto_remove and self.detach:
            raise ConfigError(
                "auto_remove/auto_delete cannot remove a detached box on stop: "
                "pass auto_remove=False (or auto_delete=0) with detach=True"
            )
        config = BoxConfig(
            image=self.image,
            rootfs_path=None if self.rootfs_path is None else host_path(self.rootfs_path, "rootfs_path"),
            engine=self.engine,
            cpus=float(DEFAULT_CPUS) if self.cpus is None else parse_number(self.cpus, float, "cpus"),
            memory_mib=parse_number(self.memory_mib, int, "memory_mib"),
            disk_size_gb=parse_number(self.disk_size_gb, float, "disk_size_gb"),
            pids_limit=parse_number(self.pids_limit, int, "pids_limit"),
            working_dir=None if self.working_dir is None else str(self.working_dir),
            env=tuple({**secret_env(secrets), **self.env_dict()}.items()),
            user=self.user,
            entrypoint=parse_strings(self.entrypoint, "entrypoint"),
            cmd=parse_strings(self.cmd, "cmd"),
            hostname=None if self.hostname is None else str(self.hostname),
            ready_timeout=parse_number(self.ready_timeout, float, "ready_timeout"),
            volumes=tuple(parse_volume(v) for v in self.volumes),
            network=network,
            allow_net=tuple(self.network.allow_net or ()) if isinstance(self.network, NetworkSpec) else (),
            public_only=isinstance(self.network, NetworkSpec) and bool(self.network.public_only),
            secrets=secrets,
            ports=tuple(parse_port(p) for p in self.ports),
            detach=bool(self.detach),
            auto_remove=auto_remove,
            auto_pause=self._auto_pause(),
            auto_resume=bool(self.auto_resume),
        )
        return apply_advanced(config, self.advanced)  # SecurityOptions etc.: honoured or refused

    def validate(self) -> None:
        """Raise ConfigError / UnsupportedOptionError for values this runtime cannot honour."""
        self.to_config()


def host_path(value: Any, what: str) -> str:
    """A host path given as ``str`` or ``os.PathLike`` (e.g. ``pathlib.Path``); anything else is
    a ConfigError naming the option (not the TypeError of the first os call that meets it)."""
    try:
        path = os.fspath(value)
    except TypeError:
        raise ConfigError(f"{what}: expected a path (str or os.PathLike), got {type(value).__name__}") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if "\0" in path:
        raise ConfigError(f"{what}: a path cannot contain a NUL byte")
    return path


def parse_volume(entry: Any) -> VolumeMount:
    """A volume as (host, guest[, ro]) tuple, dict, or "host:guest[:ro|rw]" string. A named
    volume's id (``vol-`` + 16 hex digits) stands in place of the host path, or a dict
    ``{"volume_id": id, "mount_path": ...}``; any other host path starting with ``vol-`` is refused
    (write ``./vol-…`` for a relative host path), so an id is never mistaken for one."""
    mode: Any
    if isinstance(entry, Mapping) and ("volume_id" in entry or "volumeId" in entry):
        return _named_volume(entry)
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
    if host.startswith(VOLUME_PREFIX):
        if not VOLUME_ID.fullmatch(host):
            raise ConfigError(f"volume {entry!r}: {host!r} is not a volume id (for a relative host path: ./{host})")
        return VolumeMount("", os.path.normpath(guest), readonly, host)
    # The host path must exist when the box starts (checked then, as BoxLite does), not now.
    return VolumeMount(os.path.abspath(os.path.expanduser(host)), os.path.normpath(guest), readonly)


def _named_volume(entry: Mapping[str, Any]) -> VolumeMount:
    """``{"volume_id"|"volumeId": id, "mount_path"|"mountPath"|"guest_path": path, "read_only": bool}``."""
    volume_id = entry.get("volume_id", entry.get("volumeId"))
    guest = entry.get("mount_path", entry.get("mountPath", entry.get("guest_path")))
    readonly = entry.get("read_only", entry.get("readOnly", False))
    if entry.get("subpath") or entry.get("sub_path"):
        raise UnsupportedOptionError("volume subpath", "a named volume is mounted whole")
    if not isinstance(volume_id, str) or not VOLUME_ID.fullmatch(volume_id):
        raise ConfigError(f"volume {dict(entry)!r}: invalid volume id {volume_id!r}")
    if not isinstance(guest, str) or not guest.startswith("/") or not isinstance(readonly, bool):
        raise ConfigError(f"volume {dict(entry)!r}: an absolute mount_path (and a bool read_only) is required")
    return VolumeMount("", os.path.normpath(guest), readonly, volume_id)


def parse_port(entry: Any) -> PortMapping:
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
        host = entry.get("host_port", entry.get("host"))  # none: the OS picks one (as BoxLite)
        protocol = entry.get("protocol") or "tcp"
        host_ip = entry.get("host_ip") or host_ip
    elif isinstance(entry, (tuple, list)) and 2 <= len(entry) <= 4:
        host, guest = entry[0], entry[1]
        protocol = (entry[2] if len(entry) > 2 else None) or "tcp"
        host_ip = (entry[3] if len(entry) > 3 else None) or host_ip
    else:
        raise ConfigError(f"port {entry!r}: expected (host_port, guest_port[, protocol[, host_ip]])")
    protocol = str(protocol).lower()
    if protocol not in ("tcp", "udp"):
        raise ConfigError(f"port {entry!r}: protocol must be tcp or udp")
    try:
        guest_port = int(guest)
        host_port = _free_port(str(host_ip), protocol) if host is None else int(host)
    except (TypeError, ValueError):
        raise ConfigError(f"port {entry!r}: ports must be integers") from None
    if not (0 < host_port < 65536 and 0 < guest_port < 65536):
        raise ConfigError(f"port {entry!r}: ports must be between 1 and 65535")
    return PortMapping(str(host_ip), host_port, guest_port, protocol)


def _free_port(host_ip: str, protocol: str) -> int:
    """A port the OS considers free on ``host_ip`` now; it is stored in the box's config, so the
    box keeps it across restarts (another process may take it meanwhile: start then fails)."""
    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    try:
        with socket.socket(family, kind) as s:
            s.bind((host_ip, 0))
            return int(s.getsockname()[1])
    except OSError as e:
        raise ConfigError(f"no free {protocol} port on {host_ip}: {e}") from None
