"""What the CLI imports before it does anything: counted, with a budget (docs/performance.md).

Each case imports a set of modules in a fresh interpreter of this venv under ``-X importtime``
and counts the modules it loaded. Counts, not milliseconds: they do not depend on the machine's
load, and every module is paid for by every ``boxlite`` process (interpreter start + imports
are most of a ``boxlite run --rm``). The speed itself is measured by bench/bench_core.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import boxlite
from boxlite.engines.namespace.zygote import AGENT_PARENT as ZYGOTE_PARENT

DENY = (
    "httpx",  # the registry client's HTTP stack: only `pull` (or a run of an image not stored yet)
    "rich",
    "fastapi",
    "starlette",
    "uvicorn",
    "pydantic",
    "cryptography",
    "boxlite.server",  # `boxlite serve`
    "boxlite.remote",  # REST-backed runtimes
    "boxlite.images.client",  # registry client
    "boxlite.engines.vm.engine",  # the VM engine (engine="auto" only reads the cached KVM verdict)
    "boxlite.engines.vm.shim",
    "ctypes",  # the agent's and the proxies' syscall wrappers: the host's start path has no use for them
    "boxlite.engines.net.secretproxy",  # a process of its own; the engine reads its counters file only
    "boxlite.images.unpack",  # layer decompressors (zstandard, isal): a rootfs directory needs none
    "zstandard",
    "boxlite.fsutil.extract",  # copy_out's extractor (CopyOptions' defaults live in fsutil.copylimits)
    "boxlite.images.layout",  # OCI layouts and archives (tarfile, manifests): not a rootfs directory
    "boxlite.engines.net.netcounters",  # a box's nft and DNS proxy counters: metrics only
)
"""Packages no verb below may import (a prefix matches the package and its submodules)."""

RUN_PATH = (
    "boxlite.cli.main",
    "boxlite.cli.warm",
    "boxlite.api.prestart",
    "boxlite.cli.run",
    "boxlite.backends.local",
    "boxlite.runtime.engines",
    "boxlite.engines.namespace.engine",
    "boxlite.images.rootfs",  # resolve(rootfs_path=...): a directory imported as one cached layer
)
"""What `boxlite run --rm --rootfs R CMD` loads on the namespace engine: the CLI, the verb's
module, and what the runtime imports when it opens, resolves the rootfs and starts a box
(`boxlite exec` loads a subset: no rootfs import, no pre-start)."""

CASES = {
    # `boxlite --help` / `--version`: click and the CLI's shell, no runtime at all
    "cli shell": (("boxlite.cli.main",), 95),
    # a namespace box from the CLI: asyncio, the runtime, the state DB, the engine
    "run path": (RUN_PATH, 256),  # 256: no ctypes, no layer decompressors, no OCI layout reader, no net counters
}


def imported_modules(modules: tuple[str, ...], flags: tuple[str, ...] = (), prelude: str = "") -> list[str]:
    """Modules a fresh interpreter loads for ``import <modules>`` (beyond its own start-up)."""
    code = prelude + "; ".join(f"import {m}" for m in modules)
    argv = [sys.executable, *flags, "-X", "importtime", "-c"]
    out = subprocess.run([*argv, code], capture_output=True, text=True, timeout=120, check=True)
    base = subprocess.run([*argv, "pass"], capture_output=True, text=True, timeout=120, check=True)

    def names(stderr: str) -> list[str]:
        rows = [line.split("|")[2].strip() for line in stderr.splitlines() if line.startswith("import time:")]
        return [r for r in rows if r and r != "package"]  # the header row's third column is "package"

    startup = set(names(base.stderr))
    return [m for m in names(out.stderr) if m not in startup]


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_imports_stay_under_budget(case: str) -> None:
    modules, budget = CASES[case]
    loaded = imported_modules(modules)
    denied = sorted(m for m in loaded if any(m == d or m.startswith(d + ".") for d in DENY))
    assert not denied, f"{case}: imports {denied}"
    assert len(loaded) < budget, f"{case}: {len(loaded)} modules (budget {budget}): {sorted(loaded)}"


ZYGOTE_DENY = ("typing", "dataclasses", "inspect", "ast", "traceback", "linecache", "platform", "re")
"""Modules the namespace engine's zygote must not load: every box process is forked from it, so
each module it holds makes every fork and its copy-on-write faults dearer (without them the
library's start + exec + remove cycle took 10 % less, bench_ab), and the zygote's own start is
paid by a process's first box. ``traceback`` is imported where an error is printed."""


def test_the_zygote_that_forks_every_box_stays_lean() -> None:
    prelude = f"import sys; sys.path.insert(0, {str(ZYGOTE_PARENT)!r}); "
    loaded = imported_modules(("agent.zygote",), flags=("-I", "-S"), prelude=prelude)  # as the engine runs it
    assert "agent.nsboot" in loaded and "agent.server" in loaded  # the counter sees the agent
    assert not sorted(set(loaded) & set(ZYGOTE_DENY)), sorted(set(loaded) & set(ZYGOTE_DENY))
    assert len(loaded) < 70, f"{len(loaded)} modules: {sorted(loaded)}"
    # loaded before the box root hides the host's stdlib: os.get_exec_path imports warnings lazily
    # (every PATH search after the spawner's chroot), socket.recv_fds imports array
    assert {"warnings", "array"} <= set(loaded)


def test_the_vm_relay_starts_lean() -> None:
    """The shim execs the relay once a VM is loaded, and the relay then says the box's first
    ``hello``: its imports are on the path of every VM start, restore and fork."""
    prelude = f"import sys; sys.path.insert(0, {str(Path(boxlite.__file__).parents[1])!r}); "
    loaded = set(imported_modules(("boxlite.engines.vm.relayd",), flags=("-I", "-S"), prelude=prelude))
    assert "boxlite.engines.vm.relay" in loaded
    heavy = {"json", "re", "dataclasses", "inspect", "pathlib", "typing", "asyncio", "boxlite.layout"}
    assert not (loaded & heavy), sorted(loaded & heavy)


def test_the_vm_shim_runs_without_asyncio() -> None:
    """The shim starts QEMU and drives it over QMP on every VM start, restore and fork while the
    guest needs the host's two cores: with asyncio and qemu.qmp it used ~125 ms of CPU, ~45
    without. Neither is imported, at the top or in a function."""
    import ast

    import boxlite.engines.vm.shim as shim

    prelude = f"import sys; sys.path.insert(0, {str(Path(boxlite.__file__).parents[1])!r}); "
    loaded = set(imported_modules(("boxlite.engines.vm.shim",), flags=("-I", "-S"), prelude=prelude))
    assert "boxlite.engines.vm.vmcontrol" in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("asyncio", "qemu")}
    tree = ast.parse(Path(shim.__file__).read_text())
    absolute = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    absolute |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    relative = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0}
    assert not {n for n in absolute if n.split(".")[0] in ("asyncio", "qemu")}, absolute
    assert "aio" not in relative, relative  # boxlite.aio: asyncio helpers


def test_shell_loads_no_runtime() -> None:
    """`boxlite --help`, `--version` and a usage error must not pay for the runtime or asyncio."""
    loaded = set(imported_modules(("boxlite.cli.main",)))
    heavy = {"asyncio", "sqlite3", "boxlite.api.runtime", "boxlite.backends.local", "boxlite.images.manager"}
    assert not (loaded & heavy), sorted(loaded & heavy)


def test_budget_counter_sees_a_heavy_import() -> None:
    """The counter is not blind: importing the REST server trips the deny list."""
    loaded = imported_modules(("boxlite.cli.main", "boxlite.server.app"))
    assert any(m == "fastapi" or m.startswith("fastapi.") for m in loaded)
    assert len(loaded) > CASES["cli shell"][1]


def test_pull_without_bars_does_not_load_rich() -> None:
    """`boxlite pull --quiet`, `--json` or not on a terminal draws no bars, so it pays no rich
    import (~40 ms of a busybox pull's ~0.3 s); the layers are still counted for its summary."""
    code = (
        "import sys; from boxlite.cli.images import LayerBars; from boxlite.images import PullProgress; "
        "bars = LayerBars(enabled=False); "
        "[bars(PullProgress(f'sha256:{i}', 5, 10, d)) for i in 'ab' for d in (False, True)]; "
        "print(len(bars.tasks), 'rich' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["2", "False"]


@pytest.mark.parametrize("module", ["boxlite.images.client", "boxlite.backends.rest.transport"])
def test_httpx_users_do_not_load_its_command_line_client(module: str) -> None:
    """httpx imports its own CLI (click, rich, pygments: ~30 ms) whenever they are installed, as
    they are with boxlite's CLI; a pull or a REST call must not pay for it (boxlite.httpx_lean)."""
    loaded = imported_modules((module,))
    assert "httpx" in loaded
    toolkit = sorted(m for m in loaded if m.split(".")[0] in ("click", "rich", "pygments"))
    assert not toolkit, f"{module} imports {toolkit}"


def test_a_rootfs_directory_loads_no_image_archive_reader(tmp_path: Path) -> None:
    """`run --rootfs DIR` resolves a plain directory without the OCI layout / archive reader
    (tarfile, the manifest parsers): it is only loaded for a directory that is a layout."""
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "bin" / "true").write_text("")
    code = (
        "import asyncio, sys; from pathlib import Path; from boxlite.images.manager import ImageManager; "
        f"m = ImageManager(Path({str(tmp_path / 'home')!r})); "
        f"p = asyncio.run(m.resolve(rootfs_path={str(rootfs)!r})); "
        "print(p.image_id.startswith('rootfs:'), sorted(x for x in ('tarfile', 'boxlite.images.layout', "
        "'boxlite.images.catalog') if x in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split(maxsplit=1) == ["True", "[]\n"], out.stdout + out.stderr
