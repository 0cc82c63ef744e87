"""The typed, validated configuration of one box, as the runtime stores and uses it.

The public API converts user options (:class:`boxlite.BoxOptions`, REST bodies) into a
:class:`BoxConfig` once; from there on every layer reads typed fields. A config validates
itself on construction (ConfigError), also when read back from ``state.db``: a hand-edited or
corrupted row cannot smuggle values past the checks a new box gets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..engines.net import allowlist
from ..errors import ConfigError
from .capabilities import check_addable, parse_names
from .health import HealthCheckConfig

CONFIG_VERSION = 1
"""Version of :meth:`BoxConfig.to_json`'s format (rows without one hold the older options dict)."""
ENGINES = ("auto", "namespace", "vm")
MAX_CONFIG_BYTES = 512 * 1024
"""A box's config is stored with it (state.db): its JSON form (env, cmd, volumes...) is capped."""
MAX_MEMORY_MIB = 1 << 22
RLIMIT_MAX = {"nofile": 1 << 20, "fsize": 1 << 62, "cpu": 1 << 32}
"""Per-process limits of box processes (SecurityOptions rlimits) and their largest values:
open files (the kernel's default nr_open), file size in bytes, CPU seconds."""
MIN_DISK_GB = 1 / 64
"""disk_size_gb (GiB, as the VM disk): at least 16 MiB (ext4's own metadata takes a few)."""
MAX_DISK_GB = 8192.0
"""At most 8 TiB: the box disk is one sparse file on the host (ext4 files stop at 16 TiB)."""


MAX_SECRETS = 16
MAX_HOSTNAME_BYTES = 64
"""HOST_NAME_MAX: a longer name makes sethostname fail when the box starts."""
MAX_SECRET_BYTES = 8192
_SECRET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
VOLUME_PREFIX = "vol-"
VOLUME_ID = re.compile(r"vol-[0-9a-f]{16}")
"""A named volume's id (runtime/volumes.py): server-assigned, exactly this form, never a path."""


@dataclass(frozen=True)
class SecretRule:
    """A secret placeholder (engines/net/secretproxy.py): the box sees ``placeholder`` (and
    ``BOXLITE_SECRET_<NAME>``); the host-side proxy puts ``value`` in its place in HTTP(S)
    requests to ``hosts`` (names or ``*.domain``, no ports). ``value`` stays on the host."""

    name: str
    value: str = field(repr=False)
    hosts: tuple[str, ...]
    placeholder: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _SECRET_NAME.match(self.name):
            raise ConfigError(f"secret name must be 1-64 letters, digits, '_', '-' or '.', got {self.name!r}")
        for what, text in (("value", self.value), ("placeholder", self.placeholder)):
            # CR/LF/NUL would let a substituted value split a header (request smuggling).
            if not isinstance(text, str) or not text or len(text.encode()) > MAX_SECRET_BYTES:
                raise ConfigError(f"secret {self.name}: {what} must be a non-empty string of at most 8 KiB")
            if any(c in text for c in "\r\n\0"):
                raise ConfigError(f"secret {self.name}: {what} must not contain CR, LF or NUL")
        if len(self.placeholder) < 8 or self.placeholder in self.value:
            raise ConfigError(f"secret {self.name}: placeholder must be at least 8 characters, not part of the value")
        if not self.hosts or len(self.hosts) > allowlist.MAX_ENTRIES:
            raise ConfigError(f"secret {self.name}: hosts must list 1-{allowlist.MAX_ENTRIES} host names")
        hosts = []
        for h in self.hosts:
            entry = allowlist.parse_entry(h)
            if entry.kind == "net" or entry.port is not None:
                raise ConfigError(f"secret {self.name}: hosts are names or *.domain (no address, no port), got {h!r}")
            hosts.append(entry.spec())
        object.__setattr__(self, "hosts", tuple(dict.fromkeys(hosts)))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "hosts": list(self.hosts), "placeholder": self.placeholder}


@dataclass(frozen=True)
class VolumeMount:
    """A host path bound into the box."""

    host_path: str
    """Absolute path on the host."""
    guest_path: str
    """Absolute path in the box."""
    read_only: bool = False
    volume_id: str | None = None
    """A named volume (runtime/volumes.py): ``host_path`` is its data directory, set by the
    local runtime when the box is created ("" until then)."""

    def __post_init__(self) -> None:
        if self.volume_id is not None and not VOLUME_ID.fullmatch(self.volume_id):
            raise ConfigError(f"invalid volume id {self.volume_id!r}")
        if self.volume_id is not None and not self.host_path and self.guest_path.startswith("/"):
            return
        if not self.host_path.startswith("/") or not self.guest_path.startswith("/"):
            raise ConfigError(
                f"volume {self.host_path}:{self.guest_path}: host path and an absolute box path are required"
            )
        if "\0" in self.host_path + self.guest_path:
            raise ConfigError("volume paths cannot contain NUL bytes")


@dataclass(frozen=True)
class PortMapping:
    """A published port: ``host_ip:host_port`` on the host reaches ``guest_port`` in the box."""

    host_ip: str
    host_port: int
    guest_port: int
    protocol: str = "tcp"

    def __post_init__(self) -> None:
        spec = f"{self.host_ip}:{self.host_port}:{self.guest_port}/{self.protocol}"
        if not (0 < self.host_port < 65536 and 0 < self.guest_port < 65536):
            raise ConfigError(f"port {spec}: ports must be between 1 and 65535")
        if self.protocol not in ("tcp", "udp"):
            raise ConfigError(f"port {spec}: protocol must be tcp or udp")

    @property
    def ipv6(self) -> bool:
        return ":" in self.host_ip


@dataclass(frozen=True)
class ImageDefaults:
    """What the box's image says about its commands (defaults under the box's own config)."""

    env: tuple[str, ...] = ()
    """``KEY=VALUE`` strings, as in the image config."""
    working_dir: str | None = None
    user: str | None = None
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "env": list(self.env),
            "working_dir": self.working_dir,
            "user": self.user,
            "entrypoint": _list_or_none(self.entrypoint),
            "cmd": _list_or_none(self.cmd),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageDefaults:
        return cls(
            env=tuple(str(e) for e in data.get("env") or ()),
            working_dir=data.get("working_dir") or None,
            user=data.get("user") or None,
            entrypoint=parse_strings(data.get("entrypoint"), "image entrypoint"),
            cmd=parse_strings(data.get("cmd"), "image cmd"),
        )


@dataclass(frozen=True)
class BoxConfig:
    """Everything a box was created with. Frozen: a box's config never changes after creation
    (``detach`` of a stopped box is replaced as a whole, see :meth:`with_detach`)."""

    image: str | None = None
    """Image reference; None with ``rootfs_path`` or for the default image."""
    rootfs_path: str | None = None
    engine: str | None = None
    """The engine asked for (None: the runtime's default); the chosen one is the record's."""
    cpus: float | None = None
    memory_mib: int | None = None
    disk_size_gb: float | None = None
    pids_limit: int | None = None
    rlimits: tuple[tuple[str, int], ...] = ()
    """(name, value) pairs of RLIMIT_MAX names, set on every box process (agent/rlimit.py)."""
    working_dir: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    user: str | None = None
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    hostname: str | None = None
    ready_timeout: float | None = None
    health_check: HealthCheckConfig | None = None
    """BoxLite's ``advanced.health_check`` (runtime/health.py); None: the box is not checked."""
    volumes: tuple[VolumeMount, ...] = ()
    network: bool = False
    """Outbound network (published ports need it)."""
    allow_net: tuple[str, ...] = ()
    """Egress allow-list, normalised (engines/net/allowlist.py); empty: unrestricted."""
    public_only: bool = False
    """Outbound flows to public addresses only: no private, CGNAT or unique-local network (the
    host guard, engines/net/hostguard.py); forced for a REST server's TCP clients."""
    secrets: tuple[SecretRule, ...] = ()
    """Secret placeholders (engines/net/secretproxy.py); their values are kept on the host only."""
    ports: tuple[PortMapping, ...] = ()
    detach: bool = False
    auto_remove: bool = True
    auto_pause: int = 0
    """Idle seconds after which the owning process pauses the box (memory kept); 0: never."""
    auto_resume: bool = False
    """An exec or file copy on the paused box resumes it (else InvalidStateError)."""
    capabilities: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
    """(add, drop) of ``advanced.capabilities`` as canonical names (runtime/capabilities.py);
    ``((), ())``: Docker's default set (configs stored before the field have that too)."""

    def __post_init__(self) -> None:
        if self.cpus is not None and not (0 < self.cpus <= 512):
            raise ConfigError(f"cpus must be > 0, got {self.cpus!r}")
        if self.memory_mib is not None and not (16 <= self.memory_mib <= MAX_MEMORY_MIB):
            raise ConfigError(f"memory_mib must be between 16 and {MAX_MEMORY_MIB}, got {self.memory_mib!r}")
        if self.disk_size_gb is not None and not (MIN_DISK_GB <= self.disk_size_gb <= MAX_DISK_GB):
            raise ConfigError(
                f"disk_size_gb must be between {MIN_DISK_GB} and {MAX_DISK_GB} (GiB), got {self.disk_size_gb!r}"
            )
        if self.pids_limit is not None and self.pids_limit < 1:
            raise ConfigError(f"pids_limit must be >= 1, got {self.pids_limit!r}")
        for name, value in self.rlimits:
            if name not in RLIMIT_MAX or isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"invalid rlimit {name}={value!r}")
            if not 1 <= value <= RLIMIT_MAX[name]:
                raise ConfigError(f"rlimit {name} must be between 1 and {RLIMIT_MAX[name]}, got {value!r}")
        if self.engine is not None and self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.ready_timeout is not None and self.ready_timeout <= 0:
            raise ConfigError(f"ready_timeout must be > 0, got {self.ready_timeout!r}")
        if self.hostname is not None and not (0 < len(self.hostname.encode()) <= MAX_HOSTNAME_BYTES):
            raise ConfigError(
                f"hostname must be 1 to {MAX_HOSTNAME_BYTES} bytes (the kernel's limit), got {self.hostname!r}"
            )
        if self.hostname is not None and "\0" in self.hostname:
            raise ConfigError("hostname cannot contain a NUL byte")
        if self.working_dir is not None and not self.working_dir.startswith("/"):
            raise ConfigError(f"working_dir must be an absolute path, got {self.working_dir!r}")
        env_to_dict(self.env, "env")
        if self.ports and not self.network:
            raise ConfigError("ports cannot be published with network disabled")
        if self.public_only and not self.network:
            raise ConfigError("public_only needs network mode 'enabled'")
        if self.allow_net:
            if not self.network:
                raise ConfigError("allow_net needs network mode 'enabled'")
            object.__setattr__(self, "allow_net", tuple(e.spec() for e in allowlist.parse(list(self.allow_net))))
        if self.secrets:
            if not self.network:
                raise ConfigError("secrets need network mode 'enabled'")
            if len(self.secrets) > MAX_SECRETS:
                raise ConfigError(f"at most {MAX_SECRETS} secrets per box, got {len(self.secrets)}")
            if len({s.name for s in self.secrets}) != len(self.secrets):
                raise ConfigError("secret names must be unique")
        size = len(json.dumps(self.to_json()))
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"box options take {size} bytes as JSON, more than the {MAX_CONFIG_BYTES} allowed")

    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    def with_detach(self, detach: bool) -> BoxConfig:
        return replace(self, detach=detach)

    # --- stored form ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """A JSON object (``version``-tagged) that :meth:`from_json` turns back into an equal config."""
        out: dict[str, Any] = {"version": CONFIG_VERSION}
        for f in fields(self):
            out[f.name] = getattr(self, f.name)
        out["env"] = [list(pair) for pair in self.env]
        out["entrypoint"], out["cmd"] = _list_or_none(self.entrypoint), _list_or_none(self.cmd)
        out["volumes"] = [
            [v.host_path, v.guest_path, v.read_only, *([v.volume_id] if v.volume_id else [])] for v in self.volumes
        ]
        out["ports"] = [[p.host_ip, p.host_port, p.guest_port, p.protocol] for p in self.ports]
        out["health_check"] = None if self.health_check is None else self.health_check.to_json()
        out["allow_net"] = list(self.allow_net)
        out["public_only"] = self.public_only
        out["secrets"] = [s.to_json() for s in self.secrets]
        out["capabilities"] = {"add": list(self.capabilities[0]), "drop": list(self.capabilities[1])}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BoxConfig:
        """Read a stored config; raises ConfigError for an unknown version or invalid values."""
        if not isinstance(data, Mapping):
            raise ConfigError("box config: expected a JSON object")
        version = data.get("version")
        if version != CONFIG_VERSION:
            raise ConfigError(f"box config version {version!r} is not supported (this runtime reads {CONFIG_VERSION})")
        return cls._build(data)

    @classmethod
    def from_legacy(cls, options: Mapping[str, Any], detach: bool, auto_remove: bool) -> BoxConfig:
        """A config from a record written before configs were versioned: its untyped ``options``
        dict and the record's own ``detach``/``auto_remove`` flags."""
        data = dict(options)
        env = data.get("env") or {}
        data["env"] = list(env.items()) if isinstance(env, Mapping) else env
        data["network"] = bool(data.get("network"))
        return cls._build({**data, "detach": detach, "auto_remove": auto_remove})

    @classmethod
    def _build(cls, data: Mapping[str, Any]) -> BoxConfig:
        try:
            return cls(
                image=_str_or_none(data.get("image")),
                rootfs_path=_str_or_none(data.get("rootfs_path")),
                engine=_str_or_none(data.get("engine")),
                cpus=parse_number(data.get("cpus"), float, "cpus"),
                memory_mib=parse_number(data.get("memory_mib"), int, "memory_mib"),
                disk_size_gb=parse_number(data.get("disk_size_gb"), float, "disk_size_gb"),
                pids_limit=parse_number(data.get("pids_limit"), int, "pids_limit"),
                rlimits=tuple((str(name), value) for name, value in data.get("rlimits") or ()),
                working_dir=_str_or_none(data.get("working_dir")),
                env=tuple(env_to_dict(data.get("env") or (), "env").items()),
                user=_str_or_none(data.get("user")),
                entrypoint=parse_strings(data.get("entrypoint"), "entrypoint"),
                cmd=parse_strings(data.get("cmd"), "cmd"),
                hostname=_str_or_none(data.get("hostname")),
                ready_timeout=parse_number(data.get("ready_timeout"), float, "ready_timeout"),
                health_check=HealthCheckConfig.from_json(data.get("health_check")),
                volumes=tuple(_volume(v) for v in data.get("volumes") or ()),
                network=bool(data.get("network")),
                allow_net=tuple(str(e) for e in data.get("allow_net") or ()),
                public_only=bool(data.get("public_only")),
                secrets=tuple(
                    SecretRule(
                        str(s["name"]), str(s["value"]), tuple(str(h) for h in s["hosts"]), str(s["placeholder"])
                    )
                    for s in data.get("secrets") or ()
                ),
                ports=tuple(
                    PortMapping(str(ip), int(hp), int(gp), str(pr)) for ip, hp, gp, pr in data.get("ports") or ()
                ),
                detach=bool(data.get("detach", False)),
                auto_remove=bool(data.get("auto_remove", True)),
                auto_pause=parse_number(data.get("auto_pause"), int, "auto_pause") or 0,
                auto_resume=bool(data.get("auto_resume", False)),
                capabilities=_capabilities(data.get("capabilities")),
            )
        except (TypeError, ValueError, KeyError) as e:  # a malformed stored row
            raise ConfigError(f"box config: {e}") from None


def _capabilities(value: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A stored ``{"add": [...], "drop": [...]}`` re-validated (a row is not trusted)."""
    if value is None:
        return (), ()
    if not isinstance(value, Mapping):
        raise ConfigError(f"box config: capabilities must be an object, got {value!r}")
    add = parse_names(value.get("add"), "capabilities.add")
    check_addable(add)
    return add, parse_names(value.get("drop"), "capabilities.drop")


def check_stop_timeout(timeout: Any) -> None:
    """A stop's grace: None or a number of seconds, not NaN (else ConfigError)."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ConfigError(f"stop timeout must be a number of seconds or None, got {timeout!r}")
    if timeout != timeout:
        raise ConfigError("stop timeout must be a number of seconds (negative: no limit), not NaN")


def check_argv(argv: Sequence[Any]) -> list[str]:
    """A command line as the box will run it: strings without NUL bytes (else ConfigError)."""
    for arg in argv:
        if not isinstance(arg, str):
            raise ConfigError(f"command: arguments must be strings, got {type(arg).__name__} {arg!r}")
        if "\0" in arg:
            raise ConfigError("command: an argument contains a NUL byte (it would end the argument early)")
    return list(argv)


def env_to_dict(env: Any, what: str) -> dict[str, str]:
    """Accept a mapping, a list of (key, value) pairs or a list of "KEY=VALUE" strings."""
    if env is None:
        return {}
    if isinstance(env, Mapping):
        items = list(env.items())
    elif isinstance(env, (str, bytes)) or not isinstance(env, Iterable):
        raise ConfigError(f"{what}: expected a mapping or a list of KEY=VALUE strings, got {type(env).__name__}")
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


def parse_number(value: Any, kind: type[int] | type[float], name: str) -> Any:
    """``value`` as ``kind`` (None stays None); anything else is a ConfigError naming the option."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return int(number) if kind is int else number


def _volume(entry: Any) -> VolumeMount:
    """A stored volume: [host, guest, read_only] or, for a named volume, [host, guest, read_only, id]."""
    if not isinstance(entry, (list, tuple)) or len(entry) not in (3, 4):
        raise ConfigError(f"box config: invalid volume {entry!r}")
    return VolumeMount(str(entry[0]), str(entry[1]), bool(entry[2]), None if len(entry) == 3 else str(entry[3]))


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def parse_strings(value: Any, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError(f"{name} must be a list of strings, got {value!r}")
    items = tuple(value)
    if not all(isinstance(v, str) for v in items):
        raise ConfigError(f"{name} must be a list of strings, got {value!r}")
    return items


def _list_or_none(value: tuple[str, ...] | None) -> list[str] | None:
    return None if value is None else list(value)
