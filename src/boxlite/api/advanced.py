"""``AdvancedBoxOptions`` parts (BoxLite's names) and what each one does to a box's config.

Rule: an option is either honoured for real or refused with ``UnsupportedOptionError``; nothing
is accepted and ignored. Options asking for *less* confinement than ours (seccomp or the jailer
off, fds left open) leave the box as confined as always: that difference is on purpose
(docs/security.md) and listed in docs/compat.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..runtime import capabilities
from ..runtime.config import RLIMIT_MAX
from ..runtime.health import HealthCheckConfig

if TYPE_CHECKING:
    from ..runtime.config import BoxConfig

MIB = 1024 * 1024


@dataclass
class HealthCheckOptions:
    """BoxLite's periodic health check (seconds; fractions allowed). Run by the process that
    starts the box; the outcome is ``BoxInfo.health_status`` (runtime/health.py)."""

    interval: float = 30
    timeout: float = 10
    retries: int = 3
    start_period: float = 60
    command: list[str] | None = None
    """Ours: argv run in the box each ``interval`` (exit 0 passes, like Docker's HEALTHCHECK CMD).
    None, as in BoxLite: the check pings the box's agent."""


@dataclass
class ContainerCapabilities:
    """Capabilities to add to / drop from the box root's default set (names like "NET_ADMIN")."""

    add: list[str] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)


# BoxLite's SecurityOptions rlimits -> the per-process limits every box process gets
# (open files, file size in bytes, CPU seconds: RLIMIT_NOFILE, RLIMIT_FSIZE, RLIMIT_CPU).
_RLIMIT_FIELDS = {"max_open_files": "nofile", "max_file_size": "fsize", "max_cpu_time": "cpu"}


def advanced_overrides(advanced: Any, memory_mib: int | None, pids_limit: int | None) -> dict[str, Any]:
    """Config values ``advanced`` (an ``AdvancedBoxOptions`` or None) changes: ``pids_limit``,
    ``memory_mib``, ``network`` (False only), ``capabilities`` (add, drop) and ``rlimits``. Raises
    UnsupportedOptionError for what this runtime cannot do, so a caller relying on it learns it
    at create time."""
    if advanced is None:
        return {}
    out: dict[str, Any] = {}
    if getattr(advanced, "health_check", None) is not None:
        out["health_check"] = HealthCheckConfig.from_options(advanced.health_check)
    add, drop = capabilities.from_options(getattr(advanced, "capabilities", None))
    if add or drop:
        out["capabilities"] = (add, drop)
    sec = getattr(advanced, "security", None)
    if sec is None:
        return out
    limits = {}
    for name, key in _RLIMIT_FIELDS.items():
        if getattr(sec, name, None) is not None:
            value = _positive(getattr(sec, name), f"advanced.security.{name}")
            if value > RLIMIT_MAX[key]:
                raise ConfigError(f"advanced.security.{name} must be at most {RLIMIT_MAX[key]}, got {value!r}")
            limits[key] = value
    if limits:
        out["rlimits"] = tuple(sorted(limits.items()))
    max_processes = getattr(sec, "max_processes", None)
    if max_processes is not None:
        limit = _positive(max_processes, "advanced.security.max_processes")
        out["pids_limit"] = limit if pids_limit is None else min(limit, int(pids_limit))
    max_memory = getattr(sec, "max_memory", None)
    if max_memory is not None:
        mib = max(1, -(-_positive(max_memory, "advanced.security.max_memory") // MIB))  # bytes, rounded up
        out["memory_mib"] = mib if memory_mib is None else min(mib, int(memory_mib))
    if getattr(sec, "network_enabled", True) is False:
        out["network"] = False
    return out


def security_from_rlimits(limits: dict[str, int]) -> Any:
    """The ``SecurityOptions`` asking for ``limits`` (``nofile``/``fsize``/``cpu``: a REST request);
    ConfigError for an unknown name."""
    from .options import SecurityOptions

    names = {key: name for name, key in _RLIMIT_FIELDS.items()}
    unknown = sorted(set(limits) - set(names))
    if unknown:
        raise ConfigError(f"unknown rlimit(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    fields: dict[str, Any] = {names[key]: value for key, value in limits.items()}
    return SecurityOptions(**fields)


def apply_advanced(config: BoxConfig, advanced: Any) -> BoxConfig:
    """``config`` with what ``advanced`` changes (re-validated by BoxConfig)."""
    overrides = advanced_overrides(advanced, config.memory_mib, config.pids_limit)
    return replace(config, **overrides) if overrides else config


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


__all__ = ["ContainerCapabilities", "HealthCheckOptions", "advanced_overrides", "apply_advanced"]
