"""Request and response bodies of the REST API (they define the OpenAPI document)."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..api.advanced import ContainerCapabilities, HealthCheckOptions, security_from_rlimits
from ..api.options import AdvancedBoxOptions, BoxOptions, NetworkSpec


class NetworkModel(BaseModel):
    mode: str = "enabled"
    allow_net: list[str] = Field(default_factory=list)
    public_only: bool = Field(
        False, description="outbound flows to public addresses only (always, for a TCP client of a server "
        "without --allow-box-lan)",
    )  # fmt: skip


class HealthCheckModel(BaseModel):
    """``advanced.health_check`` (seconds); ``command`` None: the check pings the box's agent."""

    model_config = ConfigDict(extra="forbid")

    interval: float = 30
    timeout: float = 10
    retries: int = 3
    start_period: float = 60
    command: list[str] | None = None


class CapabilitiesModel(BaseModel):
    """``advanced.capabilities``: names as BoxLite takes them ("NET_RAW", "CAP_CHOWN", "ALL")."""

    model_config = ConfigDict(extra="forbid")

    add: list[str] = Field(default_factory=list, max_length=64)
    drop: list[str] = Field(default_factory=list, max_length=64)


class BoxOptionsModel(BaseModel):
    """``BoxOptions`` as JSON. ``rootfs_path`` is a path on the server's host."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = None
    rootfs_path: str | None = None
    cpus: float | None = None
    memory_mib: int | None = None
    disk_size_gb: float | None = None
    working_dir: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    volumes: list[Any] = Field(default_factory=list)
    network: NetworkModel | str | None = None
    ports: list[Any] = Field(default_factory=list)
    auto_remove: bool | None = None
    detach: bool | None = False
    auto_delete: int | None = None
    auto_pause: int | None = None
    auto_resume: bool | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    user: str | None = None
    secrets: list[Any] = Field(default_factory=list)
    engine: str | None = None
    pids_limit: int | None = None
    hostname: str | None = None
    ready_timeout: float | None = None
    health_check: HealthCheckModel | None = None
    rlimits: dict[str, int] | None = None
    """``advanced.security``'s per-process limits as the runtime names them (nofile, fsize, cpu)."""
    capabilities: CapabilitiesModel | None = None

    def to_options(self) -> BoxOptions:
        fields = self.model_dump(exclude={"network", "health_check", "rlimits", "capabilities"})
        net = self.network
        network = NetworkSpec(net.mode, list(net.allow_net), net.public_only) if isinstance(net, NetworkModel) else net
        options = BoxOptions(network=network, **fields)
        if self.health_check is not None:
            options.advanced = AdvancedBoxOptions(health_check=HealthCheckOptions(**self.health_check.model_dump()))
        if self.rlimits:
            options.advanced = options.advanced or AdvancedBoxOptions()
            options.advanced.security = security_from_rlimits(self.rlimits)
        if self.capabilities is not None:
            options.advanced = options.advanced or AdvancedBoxOptions()
            caps = self.capabilities
            options.advanced.capabilities = ContainerCapabilities(list(caps.add), list(caps.drop))
        return options


class CreateBoxRequest(BaseModel):
    options: BoxOptionsModel
    name: str | None = None


class BoxStateModel(BaseModel):
    status: str
    running: bool
    pid: int | None = None
    exit_code: int | None = None
    """Status "exited": how the box's main process ended (128+N for signal N)."""
    finished_at: str | None = None


class PublishedPortModel(BaseModel):
    guest_port: int
    host_ip: str
    host_port: int
    protocol: str = "tcp"


class NetworkInfoModel(BaseModel):
    mode: str
    allow_net: list[str] = Field(default_factory=list)
    published_ports: list[PublishedPortModel] | None = None
    public_only: bool = False


class HealthStateModel(BaseModel):
    value: str = "none"


class HealthCheckResultModel(BaseModel):
    start: str
    end: str
    exit_code: int
    timed_out: bool = False
    output: str = ""


class HealthStatusModel(BaseModel):
    state: HealthStateModel = Field(default_factory=HealthStateModel)
    failures: int = 0
    last_check: str | None = None
    checking: bool = False
    log: list[HealthCheckResultModel] = Field(default_factory=list)


class BoxInfoModel(BaseModel):
    id: str
    name: str | None
    state: BoxStateModel
    created_at: str
    started_at: str | None
    image: str
    cpus: float | None
    memory_mib: int | None
    engine: str
    detach: bool
    auto_remove: bool
    network: NetworkInfoModel | None = None
    health_status: HealthStatusModel = Field(default_factory=HealthStatusModel)
    auto_pause: int = 0
    auto_delete: int = 0
    auto_resume: bool = False
    command: list[str] | None = None
    """The box's main process (entrypoint + cmd); null when it has none."""
    env: dict[str, str] | None = None
    """The box's environment; values of secret-looking names (``*KEY*``, ``*TOKEN*``...) are ``******``."""


class SignalRequest(BaseModel):
    """``POST /v1/boxes/{id}/signal``: a signal for the box's main process."""

    model_config = ConfigDict(extra="forbid")

    signal: int = Field(ge=1, le=64, strict=True, description="signal number (10 = SIGUSR1 on Linux)")


class DetachedExecRequest(BaseModel):
    """``POST /v1/boxes/{id}/exec-detached``: a command left running, its output to the box's
    ``exec.log`` (``boxlite exec -d``)."""

    model_config = ConfigDict(extra="forbid")

    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] | None = None
    user: str | None = None
    cwd: str | None = None


class DetachedExecModel(BaseModel):
    pid: int = Field(description="the process id in the box")


class BoxMetricsModel(BaseModel):
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
    extra: dict[str, float] = Field(default_factory=dict)
    network_bytes_sent: int | None = None
    network_bytes_received: int | None = None
    network_tcp_connections: int | None = None
    network_tcp_errors: int | None = None
    network_packets_sent: int | None = None
    network_packets_received: int | None = None
    network_connections_refused: int | None = None
    network_dns_refused: int | None = None
    stage_filesystem_setup_ms: float | None = None
    stage_image_prepare_ms: float | None = None
    stage_guest_rootfs_ms: float | None = None
    stage_box_config_ms: float | None = None
    stage_box_spawn_ms: float | None = None
    stage_container_init_ms: float | None = None


class RuntimeMetricsModel(BaseModel):
    boxes_created_total: int = 0
    boxes_failed_total: int = 0
    num_running_boxes: int = 0
    total_commands_executed: int = 0
    total_exec_errors: int = 0


class ImageInfoModel(BaseModel):
    reference: str
    digest: str
    image_id: str
    size: int
    created: str | None


class PullRequest(BaseModel):
    reference: str


class GcResult(BaseModel):
    removed: int


class VolumeInfoModel(BaseModel):
    id: str = Field(description="server-assigned: vol- and 16 hex digits")
    created_at: str = Field(description="RFC 3339")
    size_bytes: int | None = Field(description="allocated bytes of its data; null when too many files to count")


class HealthModel(BaseModel):
    status: str
    version: str


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    message: str


class ErrorModel(BaseModel):
    error: ErrorDetail


class ExecStart(BaseModel):
    """First message on the exec WebSocket (``{"type": "start", ...}``)."""

    type: str = "start"
    command: str
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] | None = None
    tty: bool = False
    user: str | None = None
    timeout_secs: float | None = None
    cwd: str | None = None
    stdin: bool = True
    rows: int = 24
    cols: int = 80
    window: int = Field(default=1 << 20, ge=1024, le=64 << 20)


def dump(obj: Any) -> Any:
    """A dataclass (or list of them) as JSON-ready data."""
    if isinstance(obj, list):
        return [dump(o) for o in obj]
    return asdict(obj) if is_dataclass(obj) and not isinstance(obj, type) else obj
