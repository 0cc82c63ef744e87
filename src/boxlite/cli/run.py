"""``run``, ``create`` and ``exec``: make boxes and run commands in them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, cast

import click

from ..api.advanced import ContainerCapabilities
from ..api.box import Box
from ..api.logs import RotatingLog, capped_log
from ..api.options import AdvancedBoxOptions, BoxOptions
from ..api.runtime import Boxlite
from ..errors import BoxliteError, ImageError
from . import compat
from .attach import Attachment, stdin_is_tty, terminal_size
from .common import box_layout, complete_box, env_pairs, find_box, is_local, parse_memory, with_runtime
from .errors import EXIT_RUNTIME, fail, print_error
from .images import ensure_image

COMMAND_SETTINGS = {"allow_interspersed_args": False, "ignore_unknown_options": False}
WATCH_MAIN = 0.5
"""Seconds ``run -d`` watches the main process, so that one failing at once is reported."""
STOP_WAIT = 30.0
"""Seconds ``run -d`` then waits for such a box to have stopped."""
FOREGROUND_GRACE = 2.0
"""Seconds a foreground ``run`` interrupted before its command ended gives the box to stop."""


def exec_options(fn: click.decorators.FC) -> click.decorators.FC:
    """Options shared by ``run`` and ``exec``."""
    for decorator in reversed(
        [
            click.option("-i", "--interactive", is_flag=True, help="Keep stdin open and forward it."),
            click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-terminal."),
            click.option("-e", "--env", "env", multiple=True, metavar="KEY=VAL", help="Set an environment variable."),
            click.option("-w", "--workdir", metavar="DIR", help="Working directory inside the box."),
            click.option("-u", "--user", metavar="USER[:GROUP]", help="User name or uid to run as."),
        ]
    ):
        fn = decorator(fn)
    return fn


def box_options(fn: click.decorators.FC) -> click.decorators.FC:
    """Options shared by ``run`` and ``create``."""
    for decorator in reversed(
        [
            click.option("--rootfs", metavar="DIR", help="Use a root filesystem directory instead of an image."),
            click.option("--name", help="Name the box."),
            click.option("--rm", "remove", is_flag=True, help="Remove the box when it stops."),
            click.option("--cpus", type=float, help="CPU limit (e.g. 0.5, 2)."),
            click.option("-m", "--memory", metavar="SIZE", help="Memory limit (e.g. 512m, 2g; plain number = MiB)."),
            click.option("--disk-size", "disk_size", type=float, metavar="GB", help="Writable disk size, GiB."),
            click.option("-v", "--volume", "volumes", multiple=True, metavar="HOST:BOX[:ro]", help="Bind mount."),
            click.option("-p", "--publish", "ports", multiple=True, metavar="HOST:BOX", help="Publish a port."),
            click.option("--engine", type=click.Choice(["auto", "namespace", "vm"]), help="Isolation engine."),
            click.option("--entrypoint", metavar="CMD", help="Override the image's entrypoint."),
            click.option("--hostname", metavar="NAME", help="Hostname inside the box."),
            click.option(
                "--network",
                type=click.Choice(["enabled", "disabled", "none"]),
                help="Outbound network (default: enabled; 'none' = 'disabled': loopback only).",
            ),
            click.option("--cap-add", "cap_add", multiple=True, metavar="CAP", help="Add a capability to box root."),
            click.option("--cap-drop", "cap_drop", multiple=True, metavar="CAP", help="Drop one (ALL: every one)."),
        ]
    ):
        fn = decorator(fn)
    return fn


def _drop_dashdash(args: Sequence[str]) -> list[str]:
    """``BOX -- CMD``: click stops parsing options at BOX, so the ``--`` reaches us."""
    return list(args[1:]) if list(args[:1]) == ["--"] else list(args)


def _split_image(rootfs: str | None, args: Sequence[str]) -> tuple[str | None, list[str]]:
    args = _drop_dashdash(args)
    if rootfs is not None:
        return None, args
    if not args:
        raise fail("give an IMAGE or --rootfs DIR (see 'boxlite run --help')")
    return args[0], _drop_dashdash(args[1:])


def _box_options(
    image: str | None, rootfs: str | None, *, env: Sequence[str], workdir: str | None, user: str | None,
    cpus: float | None, memory: str | None, volumes: Sequence[str], ports: Sequence[str], engine: str | None,
    hostname: str | None, detach: bool, remove: bool, network: str | None = None,
    cap_add: Sequence[str] = (), cap_drop: Sequence[str] = (), disk_size: float | None = None,
) -> BoxOptions:  # fmt: skip
    caps = ContainerCapabilities(add=list(cap_add), drop=list(cap_drop)) if cap_add or cap_drop else None
    return BoxOptions(
        image=image,
        rootfs_path=rootfs,
        env=env_pairs(env),
        working_dir=workdir,
        user=user,
        cpus=cpus,
        memory_mib=parse_memory(memory),
        disk_size_gb=disk_size,
        volumes=list(volumes),
        ports=list(ports),
        engine=engine,
        hostname=hostname,
        network="disabled" if network == "none" else network,
        # BoxOptions refuses remove-on-stop with detach (as BoxLite); docker's `-d --rm` stays:
        # such a box is created attached and detached by its start (start_detached).
        detach=detach and not remove,
        auto_remove=remove,
        advanced=AdvancedBoxOptions(capabilities=caps) if caps else None,
    )


def _entrypoint(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if value else []


@contextlib.contextmanager
def _naming_image(image: str | None) -> Iterator[None]:
    """Image errors say which image they are about."""
    try:
        yield
    except ImageError as e:
        if image is None or image in str(e):
            raise
        raise ImageError(f"cannot get image {image}: {e}") from e


async def _create(rt: Boxlite, opts: BoxOptions, name: str | None) -> Box:
    with _naming_image(opts.image):
        if opts.image is not None and opts.rootfs_path is None:
            await ensure_image(rt, opts.image)
        return await rt.create(opts, name)


async def exec_attached(
    box: Box, argv: list[str], *, tty: bool, interactive: bool, env: Sequence[str] = (),
    workdir: str | None = None, user: str | None = None, log: BinaryIO | None = None,
) -> int:  # fmt: skip
    """Run ``argv`` in ``box`` connected to this terminal; returns the exit code for the CLI."""
    if tty and interactive and not stdin_is_tty():
        raise fail("the input device is not a TTY (drop -t, or run from a terminal)")
    rows, cols = terminal_size() if tty else (24, 80)
    pairs = env_pairs(env)
    if tty and "TERM" in os.environ and not any(k == "TERM" for k, _ in pairs):
        pairs.insert(0, ("TERM", os.environ["TERM"]))
    execution = await box.exec(
        argv[0], argv[1:], env=pairs or None, tty=tty, user=user, cwd=workdir,
        stdin=interactive, rows=rows, cols=cols,
    )  # fmt: skip
    status = await Attachment(execution, tty=tty, stdin=interactive, log=log).run()
    if status.exit_code < 0:
        raise fail(status.error_message or "the box died while the command was running")
    if status.oom_killed and status.error_message:
        print_error(status.error_message)
    return status.exit_code


@click.command(context_settings=COMMAND_SETTINGS)
@box_options
@exec_options
@click.option("-d", "--detach", is_flag=True, help="Run in the background and print the box id.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="(IMAGE | --rootfs DIR) [CMD]...")
@with_runtime
async def run(
    rt: Boxlite, args: tuple[str, ...], rootfs: str | None, name: str | None, remove: bool, cpus: float | None,
    memory: str | None, volumes: tuple[str, ...], ports: tuple[str, ...], engine: str | None,
    entrypoint: str | None, hostname: str | None, network: str | None, interactive: bool, tty: bool,
    env: tuple[str, ...], workdir: str | None, user: str | None, detach: bool, cap_add: tuple[str, ...],
    cap_drop: tuple[str, ...], disk_size: float | None = None,
) -> int:  # fmt: skip
    """Create a box and run a command in it.

    Without -d the command is attached to this terminal and its exit code becomes boxlite's;
    the box is then stopped (removed with --rm). With -d the box keeps running in the
    background; CMD (default: the image's) is its main process and `boxlite logs` shows its output.
    """
    image, cmd = _split_image(rootfs, args)
    if detach and (interactive or tty):
        raise fail("-d cannot be combined with -i/-t (use 'boxlite exec -it BOX CMD' on the running box)")
    opts = _box_options(
        image, rootfs, env=env, workdir=workdir, user=user, cpus=cpus, memory=memory, volumes=volumes,
        ports=ports, engine=engine, hostname=hostname, detach=detach, remove=remove, network=network,
        cap_add=cap_add, cap_drop=cap_drop, disk_size=disk_size,
    )  # fmt: skip
    if detach:
        await _set_main(rt, opts, image, _entrypoint(entrypoint), cmd)
        box = await _create(rt, opts, name)
        await start_detached(box)
        code = await _watch_main(rt, box)
        click.echo(box.id)
        if code:
            tail = _last_line(box_layout(rt, box.id).main_log) if is_local(rt) else ""
            if remove:
                with contextlib.suppress(BoxliteError):
                    await rt.remove(box.id, force=True)
            raise fail(f"the main process exited at once with status {code}" + (f": {tail}" if tail else ""), code)
        return 0
    box = await _create(rt, opts, name)
    ended = False
    try:
        argv = compat.default_command(box, _entrypoint(entrypoint), cmd)
        if not argv:
            raise fail(f"no command given and {image or rootfs} has no default command")
        record = not remove and is_local(rt)  # the output a later `boxlite logs` shows (a local home's)
        log_path = box_layout(rt, box.id).cli_console_log if record else None
        if log_path is not None:
            log_path.parent.mkdir(exist_ok=True)
        with contextlib.closing(_console(log_path)) if log_path is not None else contextlib.nullcontext() as log:
            code = await exec_attached(box, argv, tty=tty, interactive=interactive, log=cast("BinaryIO | None", log))
        ended = True
        return code
    finally:
        with contextlib.suppress(BoxliteError):
            # the command ended: what it left running is killed at once, as docker's container
            # ends with its PID 1; interrupted (^C, an error), it gets FOREGROUND_GRACE to exit
            await box.stop(timeout=0 if ended else FOREGROUND_GRACE)


def _console(path: Path) -> RotatingLog:
    """The recorded output of a foreground run: capped and rotated like a main process's log."""
    return capped_log(path)


async def _set_main(
    rt: Boxlite, opts: BoxOptions, image: str | None, entrypoint: list[str] | None, cmd: list[str]
) -> None:
    """The main process of a background box: docker's ENTRYPOINT + CMD rules (the SDK runs it
    on every start; with neither given it runs nothing, so spell out the image's command)."""
    if cmd or entrypoint is not None:
        opts.entrypoint, opts.cmd = entrypoint, cmd or None
    elif image is not None:
        with _naming_image(image):
            await ensure_image(rt, image)
            opts.cmd = await compat.image_command(rt, image) or None
        opts.entrypoint = [] if opts.cmd else None


async def _watch_main(rt: Boxlite, box: Box) -> int | None:
    """The main process's status if it ended within WATCH_MAIN seconds (after the box stopped),
    else None (still running, or no main process)."""
    if not is_local(rt):
        return await _watch_remote(rt, box)
    core = rt._core
    deadline = time.monotonic() + WATCH_MAIN
    while core.main_exit(box.id) is None:
        if time.monotonic() >= deadline or not box.info().state.running:
            return None
        await asyncio.sleep(0.02)
    deadline = time.monotonic() + STOP_WAIT
    while box.info().state.running and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    ended = core.main_exit(box.id)
    return None if ended is None else ended.exit_code


async def _watch_remote(rt: Boxlite, box: Box) -> int | None:
    """``_watch_main`` through a server or a cluster: the box's state, which says "exited (N)"
    once the main process ended and the box stopped."""
    deadline = time.monotonic() + WATCH_MAIN
    while time.monotonic() < deadline:
        info = await rt.get_info(box.id)
        if info is None or not info.state.running:
            return None if info is None else info.state.exit_code
        await asyncio.sleep(0.05)
    return None


def _last_line(path: Path, limit: int = 4096) -> str:
    """The last non-empty line of a log the box wrote (a regular file only; its tail only)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return ""
        data = os.pread(fd, limit, max(0, st.st_size - limit))
    except OSError:
        return ""
    finally:
        os.close(fd)
    lines = [line.strip() for line in data.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


async def start_detached(box: Box) -> None:
    """Start ``box`` so that it outlives this process (its main process, if any, starts too).
    If the main process cannot start, the box is stopped again (removed if --rm)."""
    try:
        await compat.start_detached(box)
    except BoxliteError:
        with contextlib.suppress(BoxliteError):
            await box.stop(timeout=1)
        raise


@click.command(context_settings=COMMAND_SETTINGS)
@box_options
@click.option("-e", "--env", "env", multiple=True, metavar="KEY=VAL", help="Set an environment variable.")
@click.option("-w", "--workdir", metavar="DIR", help="Default working directory.")
@click.option("-u", "--user", metavar="USER[:GROUP]", help="Default user.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="(IMAGE | --rootfs DIR) [CMD]...")
@with_runtime
async def create(
    rt: Boxlite, args: tuple[str, ...], rootfs: str | None, name: str | None, remove: bool, cpus: float | None,
    memory: str | None, volumes: tuple[str, ...], ports: tuple[str, ...], engine: str | None,
    entrypoint: str | None, hostname: str | None, network: str | None, env: tuple[str, ...], workdir: str | None,
    user: str | None, cap_add: tuple[str, ...], cap_drop: tuple[str, ...], disk_size: float | None = None,
) -> int:  # fmt: skip
    """Create a box without starting it; prints its id. `boxlite start` runs CMD (default: the
    image's) as the box's main process."""
    image, cmd = _split_image(rootfs, args)
    opts = _box_options(
        image, rootfs, env=env, workdir=workdir, user=user, cpus=cpus, memory=memory, volumes=volumes,
        ports=ports, engine=engine, hostname=hostname, detach=True, remove=remove, network=network,
        cap_add=cap_add, cap_drop=cap_drop, disk_size=disk_size,
    )  # fmt: skip
    await _set_main(rt, opts, image, _entrypoint(entrypoint), cmd)
    box = await _create(rt, opts, name)
    click.echo(box.id)
    return 0


@click.command("exec", context_settings=COMMAND_SETTINGS)
@exec_options
@click.option("-d", "--detach", is_flag=True, help="Leave the command running in the box and return at once "
              "(its output goes to the box's exec.log).")  # fmt: skip
@click.argument("box_ref", metavar="BOX", shell_complete=complete_box)
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED, metavar="CMD...")
@with_runtime
async def exec_(
    rt: Boxlite, box_ref: str, cmd: tuple[str, ...], interactive: bool, tty: bool, env: tuple[str, ...],
    workdir: str | None, user: str | None, detach: bool = False,
) -> int:  # fmt: skip
    """Run a command in a running box (exit status is the command's)."""
    if detach and (interactive or tty):
        raise fail("-d cannot be combined with -i/-t")
    box = await find_box(rt, box_ref)
    info = box.info()
    if info.state.status == "paused" and not info.auto_resume:
        raise fail(f"box {box_ref} is paused (resume it with 'boxlite resume {box_ref}')", EXIT_RUNTIME)
    if not info.state.running and info.state.status != "paused":
        raise fail(f"box {box_ref} is not running (start it with 'boxlite start {box_ref}')", EXIT_RUNTIME)
    argv = _drop_dashdash(cmd)
    if not argv:
        raise fail("no command given (usage: boxlite exec BOX [--] CMD...)")
    if detach:
        await box.exec_detached(argv[0], argv[1:], env_pairs(env) or None, user, workdir)
        return 0
    return await exec_attached(box, argv, tty=tty, interactive=interactive, env=env, workdir=workdir, user=user)
