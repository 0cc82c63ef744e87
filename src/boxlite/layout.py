"""Every path inside one box's directory, named once.

The runtime, the engines and the CLI reach a box's files only through :class:`BoxLayout`, so
a file moves by changing one line here. Stdlib only and free of boxlite imports: engines sit
below the runtime and still need it. (The guest agent cannot import it: the paths it needs are
passed to it.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .filenames import (
    AGENT_SOCKET_NAME,
    BOOT_JSON_NAME,
    CONSOLE_LOG_NAME,
    EXEC_LOG_NAME,
    MAIN_LOG_NAME,
    QEMU_PID_NAME,
    SHIM_LOG_NAME,
    SHIM_PID_NAME,
    VM_CONF_NAME,
)


@dataclass(frozen=True)
class BoxLayout:
    """The files of the box whose directory is ``root`` (``<home>/boxes/<id>``)."""

    root: Path

    # --- shared by the runtime and every engine -------------------------------------------
    @property
    def lock(self) -> Path:
        """flock'ed while the box changes state (start, stop, remove)."""
        return self.root / "lock"

    @property
    def run_dir(self) -> Path:
        """Runtime files of the running box: agent socket, logs, main exit status, pid files."""
        return self.root / "run"

    @property
    def agent_socket(self) -> Path:
        return self.run_dir / AGENT_SOCKET_NAME

    @property
    def main_log(self) -> Path:
        """Output of the box's main process (capped and rotated to ``main.log.1`` by the agent)."""
        return self.run_dir / MAIN_LOG_NAME

    @property
    def exec_log(self) -> Path:
        """Output of the box's detached executions (``boxlite exec -d``), capped and rotated."""
        return self.run_dir / EXEC_LOG_NAME

    @property
    def boot_log(self) -> Path:
        return self.root / "boot.log"

    def system_logs(self) -> list[Path]:
        """Diagnostic logs (boot, agent, shim...): everything but the main process's log."""
        return [
            p for p in [self.boot_log, *sorted(self.run_dir.glob("*.log"))] if p not in (self.main_log, self.exec_log)
        ]

    @property
    def cli_console_log(self) -> Path:
        """Output of a foreground ``boxlite run`` (kept for ``boxlite logs`` unless ``--rm``)."""
        return self.root / "cli" / "console.log"

    # --- namespace engine -----------------------------------------------------------------
    @property
    def cgroups_file(self) -> Path:
        return self.root / "cgroups.json"

    @property
    def upper(self) -> Path:
        """The box's writable overlay layer (owned by the box's root uid)."""
        return self.root / "upper"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def disk_image(self) -> Path:
        """With ``disk_size_gb``: the ext4 image holding the writable layer (upper and work)."""
        return self.root / "disk.ext4"

    @property
    def disk_mount(self) -> Path:
        """Where the disk image is mounted, in the box's mount namespace only."""
        return self.root / "disk"

    @property
    def sup(self) -> Path:
        return self.root / "sup"

    @property
    def layer_links(self) -> Path:
        """Symlinks 0..n-1 to the image layers (short overlay mount options)."""
        return self.root / "layers"

    @property
    def pasta_pid(self) -> Path:
        return self.root / "pasta.pid"

    @property
    def pasta_fifo(self) -> Path:
        """pasta writes its pid here once it configured the box's network (read by the keeper)."""
        return self.root / "pasta.fifo"

    @property
    def keeper_lock(self) -> Path:
        """flock'ed by the box's keeper while it lives; holds its pid."""
        return self.root / "keeper.pid"

    @property
    def resolv_conf(self) -> Path:
        return self.run_dir / "resolv.conf"

    # --- VM engine ------------------------------------------------------------------------
    @property
    def console_log(self) -> Path:
        """The VM's serial console (size-capped)."""
        return self.root / CONSOLE_LOG_NAME

    @property
    def console_log_prev(self) -> Path:
        return self.root / "console.log.1"

    @property
    def console_restore_failed(self) -> Path:
        return self.root / "console.restore-failed.log"

    @property
    def vm_disk(self) -> Path:
        """The box's own ext4 disk (its writable layer)."""
        return self.root / "vm" / "disk.ext4"

    @property
    def vm_conf(self) -> Path:
        """The shim's configuration."""
        return self.run_dir / VM_CONF_NAME

    @property
    def qemu_pid(self) -> Path:
        return self.run_dir / QEMU_PID_NAME

    @property
    def shim_pid(self) -> Path:
        return self.run_dir / SHIM_PID_NAME

    @property
    def shim_log(self) -> Path:
        return self.run_dir / SHIM_LOG_NAME

    @property
    def boot_json(self) -> Path:
        """Boot timings of the running VM."""
        return self.run_dir / BOOT_JSON_NAME
