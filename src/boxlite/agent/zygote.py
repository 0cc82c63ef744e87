"""Fork server for the namespace engine: starts boxes without paying interpreter start-up.

The host runs one zygote per runtime (``python3 -I -S -c <bootstrap> zygote <fd>``); it has the
agent imported already. Each message on its SOCK_SEQPACKET socket is a box config (JSON) with
the box's status pipe, boot log and, optionally, lifeline fds attached (SCM_RIGHTS). The next
box's boot process (:func:`nsboot.boot`) is forked *ahead* of it, with its keeper: a "spare"
that waits on a socket of its own for the config and fds (:func:`_assign`), so the two forks
(~1 ms each, more under load) and the spare's new network, IPC and UTS namespaces
(``nsboot.AHEAD``) are not on the box's start path; the zygote forks the next spare
once it has handed this one its box. A spare that cannot be used (gone, fork failed) means the
zygote forks the boot process at once, as it did before spares. The zygote exits when the
socket closes, killing its spare (whose keeper then sees its socket close and exits too).
Stdlib only.
"""

from __future__ import annotations

import os
import signal
import socket
import sys

from . import keeper, leanjson, linux, nsboot

FD_KEYS = ("status_fd", "log_fd", "lifeline_fd", "idmap_fd")
"""Config entries that are fds: sent to a spare as SCM_RIGHTS, not as numbers."""
SPARE_MESSAGE = 1 << 17
"""Bytes of a spare's assignment (the zygote reads configs of at most 64 KiB)."""

TYPE_CHECKING = False  # not from typing (~2 ms to import into every box's agent)
if TYPE_CHECKING:
    from typing import Any

    Spare = tuple[int, socket.socket]  # its pid, the zygote's end of its socket


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # boot processes are reaped automatically
    idmaps: dict[tuple[int, int], int] = {}  # uid range -> id-mapping user namespace fd
    spare = _fork_spare(sock)
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 16, 4)
        except OSError:
            msg = b""
        if not msg:  # the runtime is gone: nothing to clean up (no interpreter teardown, ~10 ms)
            _kill(spare)
            os._exit(0)
        config = leanjson.loads(msg)
        names = ["status_fd", "log_fd", "lifeline_fd"][: len(fds)]
        config.update(zip(names, fds, strict=False))
        nsboot.reuse_idmap(config, idmaps)
        if not _assign(spare, config):
            _fork_boot(sock, config)
        for fd in fds:  # before the next spare is forked: it must not hold this box's pipes
            os.close(fd)
        spare = _fork_spare(sock)


def _fork_boot(sock: socket.socket, config: dict[str, Any]) -> None:
    """Fork the box's boot process now (no usable spare)."""
    if os.fork() == 0:
        sock.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _boot(config, None)


def _boot(config: dict[str, Any], spare_keeper: socket.socket | None, unshared: int = 0) -> None:
    try:
        nsboot.boot(config, spare_keeper, unshared)
    except BaseException:
        import traceback

        traceback.print_exc()  # lands in the box's boot log (or agent log, once serving)
        sys.stderr.flush()
    finally:
        os._exit(1)


def _fork_spare(sock: socket.socket) -> Spare | None:
    """Fork the next box's boot process (and, in it, its keeper) ahead of its config."""
    try:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except OSError:
        return None
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        return None
    if pid == 0:
        config, unshared = None, 0
        try:
            sock.close()
            ours.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            spare_keeper = keeper.fork_spare(theirs)  # first: it stays in the host's namespaces
            try:
                linux.unshare(nsboot.AHEAD)
                unshared = nsboot.AHEAD
            except OSError:
                pass  # A tries again, and reports why on its status pipe
            config = _await_box(theirs)
        finally:
            if config is None:  # the zygote is gone (or this spare broke): nothing was started
                os._exit(0)
        _boot(config, spare_keeper, unshared)
    theirs.close()
    return pid, ours


def _assign(spare: Spare | None, config: dict[str, Any]) -> bool:
    """Hand the spare its box: the config, its fds attached. False: boot it another way."""
    if spare is None:
        return False
    chan = spare[1]
    names = [key for key in FD_KEYS if config.get(key) is not None]
    data = leanjson.dumps([names, {k: v for k, v in config.items() if k not in names}]).encode()
    try:
        if len(data) <= SPARE_MESSAGE:
            socket.send_fds(chan, [data], [int(config[key]) for key in names])
            return True
    except OSError:
        pass
    finally:
        chan.close()
    _kill(spare)  # gone, or unable to take this config: it must not take a later one either
    return False


def _await_box(chan: socket.socket) -> dict[str, Any] | None:
    """In a spare: the box's config with its fds in place, or None if the zygote is gone."""
    try:
        msg, fds, flags, _ = socket.recv_fds(chan, SPARE_MESSAGE, len(FD_KEYS))
    except OSError:
        return None
    finally:
        chan.close()
    try:
        names, config = leanjson.loads(msg) if msg and not flags & socket.MSG_CTRUNC else (None, None)
        if isinstance(names, list) and isinstance(config, dict) and len(names) == len(fds):
            config.update(zip(names, fds, strict=True))
            return config
    except ValueError:
        pass
    for fd in fds:
        os.close(fd)
    return None


def _kill(spare: Spare | None) -> None:
    if spare is not None:
        try:
            os.kill(spare[0], signal.SIGKILL)
        except OSError:
            pass
        spare[1].close()


if __name__ == "__main__":
    main()
