"""Names of the files a box keeps in its run directory, with no import at all: the VM shim and
relay (separate Python processes on the path of every VM start) name them without paying for
:mod:`boxlite.layout`'s ``dataclasses`` and ``pathlib``."""

MAIN_LOG_NAME = "main.log"
"""The main process's log, as the agent names it inside the run directory."""
EXEC_LOG_NAME = "exec.log"
"""Output of the detached executions of ``boxlite exec -d`` (capped and rotated as ``main.log``)."""
AGENT_SOCKET_NAME = "agent.sock"
CONSOLE_LOG_NAME = "console.log"
# Files a VM shim keeps in its run directory (a box's ``run/``, or a snapshot template's work dir).
VM_CONF_NAME = "vm.json"
QEMU_PID_NAME = "qemu.pid"
SHIM_PID_NAME = "shim.pid"
SHIM_LOG_NAME = "shim.log"
BOOT_JSON_NAME = "boot.json"
