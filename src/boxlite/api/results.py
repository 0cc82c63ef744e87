"""Result and information objects returned by the API."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

STATES = ("unknown", "configured", "running", "stopping", "stopped", "exited", "paused", "failed")
"""``exited``: stopped because its main process (``entrypoint``/``cmd``) ended; see ``exit_code``."""

SECRET_KEY = re.compile(r"SECRET|TOKEN|PASS|KEY|CREDENTIAL|AUTH|PRIVATE|COOKIE|SESSION", re.IGNORECASE)
"""Environment variable names whose values ``BoxInfo.env`` (and ``boxlite inspect``) masks: docker
shows them, but agents paste inspect output into chats and logs, and a server sends it to clients."""
MASK = "******"


def masked_env(pairs: Iterable[tuple[str, str]] | Mapping[str, str]) -> dict[str, str]:
    """``KEY -> value`` with the values of secret-looking names replaced by ``MASK``."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    return {k: MASK if SECRET_KEY.search(k) else v for k, v in items}


@dataclass
class ExecResult:
    """Outcome of ``SimpleBox.exec``: exit code (128+N for signal N) and decoded output."""

    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool = False
    error_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


@dataclass
class ExecStatus:
    """What ``Execution.wait()`` returns."""

    exit_code: int
    signal: int | None = None
    timed_out: bool = False
    error_message: str | None = None
    duration_ms: float | None = None
    oom_killed: bool = False
    """Killed by the kernel because the box ran out of memory (``exit_code`` 137)."""


@dataclass
class BoxStateInfo:
    status: str
    running: bool
    pid: int | None = None
    exit_code: int | None = None
    """The main process's status when ``status`` is "exited" (128+N for signal N), else None."""
    finished_at: str | None = None

    def __str__(self) -> str:
        return self.status if self.exit_code is None else f"{self.status} ({self.exit_code})"


@dataclass
class PublishedPort:
    """A port of the box reachable on the host (``host_ip:host_port`` -> ``guest_port``)."""

    guest_port: int
    host_ip: str
    host_port: int
    protocol: str = "tcp"


@dataclass
class NetworkInfo:
    """A box's network: ``mode`` "enabled" (outbound NAT) or "disabled" (loopback only)."""

    mode: str
    allow_net: list[str] = field(default_factory=list)
    published_ports: list[PublishedPort] | None = None
    public_only: bool = False
    """Outbound flows reach public addresses only (no private, CGNAT or unique-local network)."""

    def __post_init__(self) -> None:  # from JSON (REST): nested dicts become objects
        if self.published_ports is not None:
            self.published_ports = [PublishedPort(**p) if isinstance(p, dict) else p for p in self.published_ports]


HEALTH_STATES = ("none", "starting", "healthy", "unhealthy")


@dataclass(frozen=True)
class HealthState:
    """A box's health: "none" unless a health check is configured (see ``HealthCheckOptions``)."""

    value: str = "none"

    @staticmethod
    def none() -> HealthState:
        return HealthState("none")

    @staticmethod
    def starting() -> HealthState:
        return HealthState("starting")

    @staticmethod
    def healthy() -> HealthState:
        return HealthState("healthy")

    @staticmethod
    def unhealthy() -> HealthState:
        return HealthState("unhealthy")

    def is_none(self) -> bool:
        return self.value == "none"

    def is_starting(self) -> bool:
        return self.value == "starting"

    def is_healthy(self) -> bool:
        return self.value == "healthy"

    def is_unhealthy(self) -> bool:
        return self.value == "unhealthy"

    def __str__(self) -> str:
        return self.value


@dataclass
class HealthCheckResult:
    """One probe of a box's health check (Docker's health log entry); ``exit_code`` -1: the probe
    could not run (agent unreachable, host deadline). ``output``: its first 4 KiB, decoded."""

    start: str
    end: str
    exit_code: int
    timed_out: bool = False
    output: str = ""


@dataclass
class HealthStatus:
    """A box's health (BoxLite's fields, then ours: ``checking``, ``log``)."""

    state: HealthState = field(default_factory=HealthState)
    failures: int = 0
    """Probes failed in a row (not counting those within ``start_period``)."""
    last_check: str | None = None
    checking: bool = False
    """A live process is probing the box (False: not configured, stopped, or the process that
    started the box is gone; the status shown is then the last one it wrote)."""
    log: list[HealthCheckResult] = field(default_factory=list)
    """The last few probe results, oldest first."""

    def __post_init__(self) -> None:
        if isinstance(self.state, dict):
            self.state = HealthState(**self.state)
        elif isinstance(self.state, str):
            self.state = HealthState(self.state)
        self.log = [HealthCheckResult(**r) if isinstance(r, dict) else r for r in self.log]


@dataclass
class BoxInfo:
    """A snapshot of one box's configuration and state."""

    id: str
    name: str | None
    state: BoxStateInfo
    created_at: str
    started_at: str | None
    image: str
    cpus: float | None
    memory_mib: int | None
    engine: str
    detach: bool
    auto_remove: bool
    image_config: dict[str, Any] = field(default_factory=dict)
    """The image's entrypoint, cmd, env, working_dir and user (defaults of the box's commands)."""
    network: NetworkInfo | None = None
    health_status: HealthStatus = field(default_factory=HealthStatus)
    """State "none" unless ``advanced.health_check`` is configured (runtime/health.py)."""
    auto_pause: int = 0
    """Idle seconds before pausing (BoxLite); always 0: boxes are not paused (snapshot issue)."""
    auto_delete: int = 0
    """BoxLite's remove-on-stop: > 0 the box is removed when it stops (at once), 0 it is kept."""
    auto_resume: bool = False
    command: list[str] | None = None
    """The box's main process (options' entrypoint + cmd, image defaults filling the part not
    given); None when it has none (it idles for exec)."""
    env: dict[str, str] | None = None
    """The box's environment (the image's, then its options'), values of secret-looking names
    masked (``SECRET_KEY``); the values of ``secrets`` never appear (the box sees placeholders)."""

    def __post_init__(self) -> None:  # from JSON (REST): nested dicts become objects
        if isinstance(self.network, dict):
            self.network = NetworkInfo(**self.network)
        if isinstance(self.health_status, dict):
            self.health_status = HealthStatus(**self.health_status)

    @property
    def status(self) -> str:
        return self.state.status

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __await__(self):  # type: ignore[no-untyped-def]
        """``await box.info()`` works too (the reference SDK is inconsistent about it)."""

        async def _self() -> BoxInfo:
            return self

        return _self().__await__()


@dataclass
class BoxMetrics:
    commands_executed_total: int = 0
    exec_errors_total: int = 0
    bytes_sent_total: int = 0
    bytes_received_total: int = 0
    total_create_duration_ms: float | None = None
    guest_boot_duration_ms: float | None = None
    cpu_percent: float | None = None
    cpu_time_ms: float | None = None
    memory_bytes: int | None = None
    memory_peak_bytes: int | None = None
    pids: int | None = None
    extra: dict[str, float] = field(default_factory=dict)
    network_bytes_sent: int | None = None
    """Network counters and stage timings are BoxLite's names; None: not measured by this runtime."""
    network_bytes_received: int | None = None
    network_tcp_connections: int | None = None
    network_tcp_errors: int | None = None
    network_packets_sent: int | None = None
    network_packets_received: int | None = None
    network_connections_refused: int | None = None
    """Flows the box's allow-list refused (packets its nftables chain rejected; docs/network.md)."""
    network_dns_refused: int | None = None
    """Names its DNS proxy answered NXDOMAIN because no allow-list entry allows them."""
    stage_filesystem_setup_ms: float | None = None
    stage_image_prepare_ms: float | None = None
    stage_guest_rootfs_ms: float | None = None
    stage_box_config_ms: float | None = None
    stage_box_spawn_ms: float | None = None
    stage_container_init_ms: float | None = None


@dataclass
class SnapshotInfo:
    """A named disk snapshot of a box (``*_bytes``: what its frozen layer occupies)."""

    id: str
    box_id: str
    name: str
    created_at: int
    container_disk_bytes: int = 0
    size_bytes: int = 0
    guest_disk_bytes: int = 0


@dataclass
class RuntimeMetrics:
    boxes_created_total: int = 0
    boxes_failed_total: int = 0
    num_running_boxes: int = 0
    total_commands_executed: int = 0
    total_exec_errors: int = 0


def oom_message(limit_mib: int | None) -> str:
    """What a command killed for the box's lack of memory reports."""
    return f"killed: out of memory (limit {limit_mib} MiB)" if limit_mib else "killed: out of memory"


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()
